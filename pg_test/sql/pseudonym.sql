-- mseg.pseudonym: keyed, deterministic within a domain, unrelated across domains.
SELECT mseg.create_domain('p_one');
SELECT mseg.create_domain('p_two');

SELECT length(mseg.pseudonym('alice@example.com', 'p_one')) AS len,
       mseg.pseudonym('alice@example.com', 'p_one') ~ '^[A-Za-z0-9_-]{43}$' AS base64url;
SELECT mseg.pseudonym('alice@example.com', 'p_one') = mseg.pseudonym('alice@example.com', 'p_one') AS deterministic;
SELECT mseg.pseudonym('alice@example.com', 'p_one') <> mseg.pseudonym('alice@example.com', 'p_two') AS domains_differ;
SELECT mseg.pseudonym('alice@example.com', 'p_one') <> mseg.pseudonym('Alice@example.com', 'p_one') AS case_sensitive;
SELECT mseg.pseudonym(NULL, 'p_one') IS NULL AS null_in_null_out;
SELECT mseg.pseudonym('', 'p_one') IS NOT NULL AS empty_string_ok;

-- not an unkeyed hash: differs from sha256 of the value in every common encoding
SELECT mseg.pseudonym('alice@example.com', 'p_one') NOT IN (
    encode(sha256('alice@example.com'), 'hex'),
    rtrim(translate(encode(sha256('alice@example.com'), 'base64'), '+/', '-_'), '=')
) AS not_plain_sha256;

-- no collisions on 100000 distinct inputs
SELECT count(DISTINCT mseg.pseudonym('user' || g || '@example.com', 'p_one')) AS distinct_pseudonyms
FROM generate_series(1, 100000) g;

-- errors
SELECT * FROM try($$SELECT mseg.pseudonym('x', 'no_such_domain')$$);
SELECT * FROM try($$SELECT mseg.pseudonym('x', NULL)$$);
SELECT * FROM try($$SELECT mseg.pseudonym('x', 'BAD NAME')$$);
