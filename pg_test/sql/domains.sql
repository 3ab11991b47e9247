-- Pseudonymisation domains: create, drop, naming rules, errors.
SELECT mseg.create_domain('analytics', 'internal analytics');
SELECT mseg.create_domain('crm');
SELECT name, key_version, description, rotated_at IS NULL AS never_rotated FROM mseg.domains ORDER BY 1;

SELECT * FROM try($$SELECT mseg.create_domain('analytics')$$);
SELECT * FROM try($$SELECT mseg.create_domain(NULL)$$);
SELECT * FROM try($$SELECT mseg.create_domain('')$$);
SELECT * FROM try($$SELECT mseg.create_domain('Analytics')$$);
SELECT * FROM try($$SELECT mseg.create_domain('1st')$$);
SELECT * FROM try($$SELECT mseg.create_domain('a b')$$);
SELECT * FROM try($$SELECT mseg.create_domain('x'' OR 1=1 --')$$);
SELECT * FROM try($$SELECT mseg.create_domain(repeat('a', 64))$$);
SELECT mseg.create_domain(repeat('a', 63)) = repeat('a', 63) AS longest_name_ok;
SELECT mseg.drop_domain(repeat('a', 63));

SELECT * FROM try($$SELECT mseg.drop_domain('no_such')$$);
SELECT * FROM try($$SELECT mseg.drop_domain(NULL)$$);
SELECT * FROM try($$SELECT mseg.rotate_domain('no_such')$$);
SELECT * FROM try($$SELECT mseg.rotate_domain(NULL)$$);

-- rotation bumps the version and changes pseudonyms
SELECT mseg.pseudonym('bob', 'crm') AS before_p \gset
SELECT mseg.rotate_domain('crm');
SELECT mseg.pseudonym('bob', 'crm') <> :'before_p' AS changed;
SELECT name, key_version, rotated_at IS NOT NULL AS rotated FROM mseg.domains ORDER BY 1;
SELECT mseg.drop_domain('crm');

-- partners' domains (partner.<name>, made by add_partner) and the extension's own (mseg.*) are
-- nobody's: their pseudonyms are mapped back only by resolve, or never
SELECT * FROM try($$SELECT mseg.create_domain('partner.trustco')$$);
SELECT * FROM try($$SELECT mseg.pseudonym('42', 'partner.trustco')$$);
SELECT * FROM try($$SELECT mseg.token('42', 'partner.trustco')$$);
SELECT * FROM try($$SELECT mseg.pseudonym('42', 'mseg.subjects')$$);
SELECT * FROM try($$SELECT mseg.rotate_domain('mseg.subjects')$$);
