-- Tokens: reversible, deterministic, bound to domain and key; every refusal.
SELECT mseg.create_domain('t_one');
SELECT mseg.create_domain('t_two');
SELECT mseg.token('carol@example.com', 't_one') AS tok \gset
SELECT :'tok' ~ '^[A-Za-z0-9_-]+$' AS base64url, length(:'tok') AS len;
SELECT mseg.token('carol@example.com', 't_one') = :'tok' AS deterministic;
SELECT mseg.token('carol@example.com', 't_two') <> :'tok' AS domains_differ;
SELECT mseg.detoken(:'tok', 't_one') AS detokenised;
SELECT mseg.token(NULL, 't_one') IS NULL AS null_token, mseg.detoken(NULL, 't_one') IS NULL AS null_value;
SELECT mseg.detoken(mseg.token('', 't_one'), 't_one') = '' AS empty_roundtrip;
SELECT mseg.detoken(mseg.token('ünïcødé ✓', 't_one'), 't_one') AS unicode_roundtrip;

-- refusals: another domain, tampering anywhere, truncation, garbage, bad domain
SELECT * FROM try(format($$SELECT mseg.detoken(%L, 't_two')$$, :'tok'));
SELECT * FROM try(format($$SELECT mseg.detoken(%L, 't_one')$$,
    overlay(:'tok' placing (CASE WHEN substr(:'tok', 30, 1) = 'A' THEN 'B' ELSE 'A' END) from 30 for 1)));
SELECT * FROM try(format($$SELECT mseg.detoken(%L, 't_one')$$,
    overlay(:'tok' placing (CASE WHEN substr(:'tok', 5, 1) = 'A' THEN 'B' ELSE 'A' END) from 5 for 1)));
SELECT * FROM try(format($$SELECT mseg.detoken(%L, 't_one')$$, left(:'tok', length(:'tok') - 4)));
SELECT * FROM try($$SELECT mseg.detoken('AQAB', 't_one')$$);
SELECT * FROM try($$SELECT mseg.detoken('not a token!', 't_one')$$);
SELECT * FROM try($$SELECT mseg.detoken('AgABAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', 't_one')$$);
SELECT * FROM try($$SELECT mseg.detoken('AQBjAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', 't_one')$$);
SELECT * FROM try(format($$SELECT mseg.detoken(%L, 'no_such')$$, :'tok'));
SELECT * FROM try(format($$SELECT mseg.detoken(%L, NULL)$$, :'tok'));
SELECT * FROM try($$SELECT mseg.token('x', NULL)$$);
SELECT * FROM try($$SELECT mseg.token('x', 'no_such')$$);

-- after rotation new tokens differ, old tokens still reverse (the version travels in the token)
SELECT mseg.rotate_domain('t_one');
SELECT mseg.token('carol@example.com', 't_one') <> :'tok' AS new_token_differs;
SELECT mseg.detoken(:'tok', 't_one') AS old_token_still_reverses;
SELECT mseg.detoken(mseg.token('carol@example.com', 't_one'), 't_one') AS new_token_reverses;
