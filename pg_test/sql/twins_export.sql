-- Variant Twin export as a DBA sees it: refusals, the manifest, line order, k over every field,
-- cohorts, tombstones without a reason, new customers that wait, a refresh. A database of its own
-- (its own subject table and controller id). Pseudonyms depend on the cluster's key: none is shown.
CREATE DATABASE twins_regress;
ALTER DATABASE twins_regress SET mseg.controller_id = 'acme';
\c twins_regress
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
\i sql/include/try.sql

CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, age int NOT NULL, zip text NOT NULL, sex text NOT NULL,
                        sport text NOT NULL);
INSERT INTO customers SELECT g, 'c' || g || '@example.org', 20 + (g * 7) % 50, lpad((10100 + (g * 13) % 300)::text, 5, '0'),
       (ARRAY['f', 'm'])[1 + g % 2], (ARRAY['running', 'cycling', 'yoga'])[1 + (g / 2) % 3]
FROM generate_series(1, 300) g;
SELECT mseg.register_subjects('customers', 'id');
SELECT mseg.classify('customers', 'email', 'direct');
SELECT mseg.classify('customers', 'age', 'quasi', hierarchy => 'integer');
SELECT mseg.classify('customers', 'zip', 'quasi', hierarchy => 'prefix');
SELECT mseg.classify('customers', 'sex', 'quasi');
SELECT mseg.classify('customers', 'sport', 'attribute');
-- legitimate interest only: no grant, so no expiry that would depend on today's date
SELECT mseg.define_purpose('direct_marketing', '{legitimate_interest}', '2 years');
SELECT mseg.define_segment('runners', 'direct_marketing', $$ s.sport = 'running' $$);
SELECT mseg.add_partner('trustco', '{direct_marketing}', k => 5);

-- refusals
SELECT * FROM try($$SELECT count(*) FROM mseg.export_variant_twins('nobody')$$);
SELECT * FROM try($$SELECT count(*) FROM mseg.export_variant_twins(NULL)$$);
SELECT * FROM try($$SELECT count(*) FROM mseg.export_variant_twins('trustco', mode => 'everything')$$);
SELECT last_sequence FROM mseg.partners WHERE name = 'trustco';

-- the first dump (full)
CREATE TABLE d1 AS SELECT n, l::jsonb AS j FROM mseg.export_variant_twins('trustco') WITH ORDINALITY x(l, n);
SELECT jsonb_pretty(j - 'created_at' - 'public_key' - 'audit_anchor') AS manifest FROM d1 WHERE n = 1;
-- twins in pseudonym order (a keyed hash), not in key order
SELECT bool_and(p < nextp) AS pseudonym_order FROM
    (SELECT j->>'pseudonym' AS p, lead(j->>'pseudonym') OVER (ORDER BY n) AS nextp FROM d1 WHERE j->>'type' = 'twin') x
WHERE nextp IS NOT NULL;
-- every group of twins equal in every field but the pseudonym: at least k
SELECT count(*) AS records, min(c) AS smallest, sum(c) AS twins FROM
    (SELECT count(*) AS c FROM d1 WHERE j->>'type' = 'twin' GROUP BY j - 'pseudonym') g;
SELECT j - 'pseudonym' AS record, count(*) AS twins FROM d1 WHERE j->>'type' = 'twin'
GROUP BY 1 ORDER BY 1::text LIMIT 3;
-- the controller's state: cohorts of at least k, every held twin in one
SELECT count(*) AS cohorts, min(members) AS smallest, sum(members) AS held FROM mseg.partner_cohorts;
SELECT count(*) FILTER (WHERE cohort IS NOT NULL) AS held, count(*) FILTER (WHERE tombstoned_at IS NOT NULL) AS ended,
       count(DISTINCT cohort) AS cohorts FROM mseg.partner_twins;

-- nothing changed: the delta is empty
CREATE TABLE d2 AS SELECT n, l::jsonb AS j FROM mseg.export_variant_twins('trustco', 'delta') WITH ORDINALITY x(l, n);
SELECT j->'counts' AS counts, j->'ended_by_reason' AS ended FROM d2 WHERE n = 1;

-- one new customer: it waits until k can be grouped
INSERT INTO customers VALUES (1001, 'new1@example.org', 33, '10150', 'f', 'running');
CREATE TABLE d3 AS SELECT n, l::jsonb AS j FROM mseg.export_variant_twins('trustco', 'delta') WITH ORDINALITY x(l, n);
SELECT j->'counts'->>'twins' AS twins, j->'counts'->>'pending' AS pending FROM d3 WHERE n = 1;

-- an objection ends the customer's whole cohort; tombstones say nothing but the pseudonym
SELECT mseg.object(7, 'direct_marketing') > 0 AS objected;
CREATE TABLE d4 AS SELECT n, l::jsonb AS j FROM mseg.export_variant_twins('trustco', 'delta') WITH ORDINALITY x(l, n);
SELECT (j->'counts'->>'tombstones')::int >= 5 AS tombstones_at_least_k, j->'ended_by_reason'->>'objected' AS objected,
       (j->'counts'->>'tombstones')::int = 1 + coalesce((j->'ended_by_reason'->>'regrouped')::int, 0) AS rest_regrouped,
       j->>'k_reached_in_dump' AS k_in_dump, j->>'k_history' AS k_history
FROM d4 WHERE n = 1;
SELECT DISTINCT (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(j) k) AS tombstone_keys FROM d4 WHERE j->>'type' = 'tombstone';
SELECT bool_and(p < nextp) AS tombstones_in_pseudonym_order FROM
    (SELECT j->>'pseudonym' AS p, lead(j->>'pseudonym') OVER (ORDER BY n) AS nextp FROM d4 WHERE j->>'type' = 'tombstone') x
WHERE nextp IS NOT NULL;
SELECT t.tombstoned_at IS NOT NULL AS tombstoned, t.cohort IS NULL AS in_no_cohort,
       EXISTS (SELECT 1 FROM d4 WHERE j->>'pseudonym' = t.pseudonym AND j->>'type' = 'tombstone') AS in_the_delta
FROM mseg.partner_twins t WHERE t.subject_key = 7;
SELECT status FROM mseg.resolve('trustco', ARRAY[(SELECT pseudonym FROM mseg.partner_twins WHERE subject_key = 7)], 'direct_marketing');
-- the cohort's other members came back under new pseudonyms (the next generation), in groups of k
SELECT count(*) FILTER (WHERE generation = 1) >= 4 AS regrouped_members_renamed,
       count(*) FILTER (WHERE generation > 1) AS beyond_generation_1 FROM mseg.partner_twins;

-- a full dump restates what the partner holds: no tombstones
CREATE TABLE d5 AS SELECT n, l::jsonb AS j FROM mseg.export_variant_twins('trustco', 'full') WITH ORDINALITY x(l, n);
SELECT count(*) FILTER (WHERE j->>'type' = 'tombstone') AS tombstones, count(*) FILTER (WHERE j->>'type' = 'twin') =
       (SELECT count(*) FROM mseg.partner_twins WHERE cohort IS NOT NULL) AS every_held_twin FROM d5;

-- a refresh: every twin grouped afresh under a new pseudonym
CREATE TABLE d6 AS SELECT n, l::jsonb AS j FROM mseg.export_variant_twins('trustco', 'refresh') WITH ORDINALITY x(l, n);
SELECT j->>'mode' AS mode, j->>'refresh' AS refresh, j->'counts'->>'tombstones' AS tombstones, j->>'k_reached' AS k_reached
FROM d6 WHERE n = 1;
SELECT count(*) AS pseudonyms_kept FROM d6 a JOIN d5 b ON a.j->>'pseudonym' = b.j->>'pseudonym' WHERE a.j->>'type' = 'twin';
SELECT sequence, mode, manifest->>'refresh' AS refresh, sha256 IS NOT NULL AS signed FROM mseg.partner_exports ORDER BY sequence;
SELECT ok FROM mseg.verify_audit_log();

\c mseg_regress
DROP DATABASE twins_regress;
