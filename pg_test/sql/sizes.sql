-- Published segment sizes: all that application roles learn of how many subjects a segment holds.
-- mseg.publish_segment_sizes() (also run at the end of refresh_segments and of every import)
-- counts members as its transaction sees them, adds two-sided geometric noise (mseg.size_epsilon),
-- suppresses below mseg.min_group_size after the noise, and writes the result; the views read
-- only that. So no probe inside an application's own transaction moves them, and one subject's
-- change is hidden in the noise.
SET client_min_messages = warning;
-- k = 30 in this file: a segment of 0 members is then suppressed whatever the noise (P(noise >= 30)
-- is 2e-7 at epsilon 0.5), so the output does not depend on the key
SET mseg.min_group_size = 30;

-- ten segments over 400 new customers, one per bit of sz_bits, and one nobody is in
ALTER TABLE customers ADD COLUMN sz_bits int;
INSERT INTO customers (customer_id, email, loyalty, sz_bits)
SELECT 100000 + g, 'sz' || g || '@example.com', 0, (g * 7919) % 1024 FROM generate_series(1, 400) g;
SELECT count(*) FILTER (WHERE mseg.define_segment('sz_bit' || j, 'direct_marketing', format('(s.sz_bits >> %s) & 1 = 1', j)) > 100) AS big_segments
FROM generate_series(0, 9) j;
SELECT mseg.define_segment('sz_rare', 'direct_marketing', $$s.sz_bits = 5000$$) AS rare_members;
CREATE VIEW exact_sizes AS
SELECT s.name AS segment, count(u.seg) AS exact
FROM mseg.segments s LEFT JOIN (SELECT unnest(m.segments) AS seg FROM mseg.memberships m) u ON u.seg = s.segment_id
GROUP BY s.name;

-- a segment defined since the last publication shows no size yet
SELECT segment, subjects, suppressed, published_at IS NULL AS unpublished FROM mseg.segment_sizes WHERE segment IN ('sz_bit0', 'sz_rare') ORDER BY 1;
SELECT mseg.publish_segment_sizes() > 0 AS published;
SELECT p.segment, p.suppressed, abs(p.subjects - e.exact) <= 30 AS within_noise, p.min_group_size, p.epsilon, p.published_at IS NOT NULL AS published
FROM mseg.segment_sizes p JOIN exact_sizes e USING (segment) WHERE p.segment LIKE 'sz%' ORDER BY 1;
-- the publication log: what a DPO adds up
SELECT epsilon, min_group_size, segment_sizes >= 11 AS sizes_released FROM mseg.size_publications ORDER BY epoch DESC LIMIT 1;
SELECT action FROM mseg.audit_log ORDER BY seq DESC LIMIT 1;

-- repeating a publication over the same data (a rolled-back publish run again) gives the same
-- values: no fresh noise to average; a new publication (a new epoch) draws fresh noise
BEGIN;
SELECT mseg.publish_segment_sizes() AS epoch_a \gset
SELECT string_agg(segment || '=' || coalesce(subjects::text, '-'), ',' ORDER BY segment) AS sizes_a FROM mseg.segment_sizes \gset
ROLLBACK;
BEGIN;
SELECT mseg.publish_segment_sizes() = :epoch_a AS same_epoch;
SELECT string_agg(segment || '=' || coalesce(subjects::text, '-'), ',' ORDER BY segment) = :'sizes_a' AS same_values FROM mseg.segment_sizes;
COMMIT;
SELECT mseg.publish_segment_sizes() = :epoch_a + 1 AS next_epoch;
SELECT string_agg(segment || '=' || coalesce(subjects::text, '-'), ',' ORDER BY segment) <> :'sizes_a' AS fresh_values FROM mseg.segment_sizes;

-- the probes of the measurement, as an application role that may restrict subjects and insert
-- customers. What the probes change inside the transaction (as an administrator sees it):
BEGIN;
SELECT exact AS members_before FROM exact_sizes WHERE segment = 'sz_bit0';
SELECT mseg.restrict(100001) IS NOT NULL AS restricted;
SELECT exact AS members_during FROM exact_sizes WHERE segment = 'sz_bit0';
ROLLBACK;
GRANT INSERT (sz_bits) ON customers TO mseg_app;
\c - regress_app
CREATE TEMP TABLE seen AS SELECT * FROM mseg.segment_sizes;
-- asking again returns the same
SELECT count(*) AS changed_on_second_read FROM (SELECT * FROM mseg.segment_sizes EXCEPT SELECT * FROM seen) d;
-- 1. BEGIN; restrict(S); read the sizes; ROLLBACK: nothing moves, nothing of S's segments shows
BEGIN;
SELECT mseg.restrict(100001) IS NOT NULL AS restricted;
SELECT count(*) AS changed_by_restrict FROM (SELECT * FROM mseg.segment_sizes EXCEPT SELECT * FROM seen) d;
ROLLBACK;
-- 2. k dummy customers matching a suppressed segment, inside a transaction rolled back
BEGIN;
INSERT INTO customers (customer_id, email, loyalty, sz_bits)
SELECT 200000 + g, 'dummy' || g || '@example.com', 0, 5000 FROM generate_series(1, 30) g;
SELECT segment, subjects, suppressed FROM mseg.segment_sizes WHERE segment = 'sz_rare';
SELECT count(*) AS changed_by_dummies FROM (SELECT * FROM mseg.segment_sizes EXCEPT SELECT * FROM seen) d;
ROLLBACK;
-- an application role cannot publish, read the publication tables or change the parameters
SELECT * FROM try($$SELECT mseg.publish_segment_sizes()$$);
SELECT * FROM try($$SELECT * FROM mseg.published_sizes$$);
SELECT * FROM try($$SELECT * FROM mseg.size_publications$$);
SELECT * FROM try($$SET mseg.size_epsilon = 10$$);
SELECT * FROM try($$SET mseg.min_group_size = 2$$);
\c - postgres
SET client_min_messages = warning;
SET mseg.min_group_size = 30;

-- 3. before and after one signup: over 100 signups with known segments (1000 guesses), the best
-- guess from the difference of two publications ("joined if it grew") is right little more often
-- than a coin; differential privacy bounds it by e^epsilon / (1 + e^epsilon) = 0.62 at epsilon
-- 0.5 (without noise it would be 1.0, and the exact difference always right). The noise has
-- the standard deviation of the two-sided geometric distribution, sqrt(2a) / (1 - a) = 2.80 for
-- a = exp(-0.5).
CREATE FUNCTION pg_temp.signup_trials(n int)
RETURNS TABLE (guesses int, guessed_right float8, exact_difference float8, noise_sd float8)
LANGUAGE plpgsql AS $$
DECLARE
    t int; j int; b int; truth int; d bigint; before jsonb; after jsonb;
    right_guesses int := 0; exact int := 0; total int := 0; sq float8 := 0; samples int := 0;
BEGIN
    FOR t IN 1 .. n LOOP
        PERFORM mseg.publish_segment_sizes();
        SELECT jsonb_object_agg(segment, subjects) INTO before FROM mseg.segment_sizes WHERE segment LIKE 'sz\_bit%';
        b := ((t::bigint * 2654435761) % 1024)::int;
        INSERT INTO customers (customer_id, email, loyalty, sz_bits) VALUES (300000 + t, 'signup' || t || '@example.com', 0, b);
        PERFORM mseg.publish_segment_sizes();
        SELECT jsonb_object_agg(segment, subjects) INTO after FROM mseg.segment_sizes WHERE segment LIKE 'sz\_bit%';
        FOR j IN 0 .. 9 LOOP
            truth := (b >> j) & 1;
            d := (after->>('sz_bit' || j))::bigint - (before->>('sz_bit' || j))::bigint;
            IF (d >= 1)::int = truth THEN right_guesses := right_guesses + 1; END IF;
            IF d = truth THEN exact := exact + 1; END IF;
            total := total + 1;
        END LOOP;
        SELECT sq + sum((p.subjects - e.exact)::float8 ^ 2), samples + count(*) INTO sq, samples
        FROM mseg.segment_sizes p JOIN exact_sizes e USING (segment) WHERE p.segment LIKE 'sz\_bit%';
    END LOOP;
    RETURN QUERY SELECT total, right_guesses::float8 / total, exact::float8 / total, sqrt(sq / samples);
END $$;
SELECT guesses, guessed_right <= 0.70 AS guess_bounded, exact_difference <= 0.30 AS difference_hidden,
       noise_sd BETWEEN 2.3 AND 3.3 AS noise_as_stated,
       round((exp(0.5) / (1 + exp(0.5)))::numeric, 3) AS dp_bound
FROM pg_temp.signup_trials(100);

-- refresh_segments publishes at its end
SELECT max(epoch) AS epoch_before FROM mseg.size_publications \gset
SELECT mseg.refresh_segments() >= 0 AS refreshed;
SELECT max(epoch) = :epoch_before + 1 AS refresh_published FROM mseg.size_publications;

-- pooled sizes at a trusted party: the same mechanism (twins written here directly, as an import would)
INSERT INTO mseg.controllers (id, public_key) VALUES ('c_one', 'k1'), ('c_two', 'k2');
INSERT INTO mseg.pool_twins (controller, pseudonym, quasi, segments, legal_basis, policy, sequence)
SELECT CASE WHEN g % 2 = 0 THEN 'c_one' ELSE 'c_two' END, 'p' || g, '{}',
       CASE WHEN g % 3 = 0 THEN '{runners}'::text[] ELSE '{cyclists}'::text[] END, '{}', '{"purposes": ["direct_marketing"]}', 1
FROM generate_series(1, 600) g;
SELECT mseg.define_pool_segment('pool_runners', 'direct_marketing', $$'runners' = ANY (t.segments)$$) AS pool_members;
SELECT mseg.publish_segment_sizes() > 0 AS published;
CREATE VIEW exact_pool AS
SELECT t.controller, s.kind, s.segment, count(*) AS exact FROM mseg.pool_twins t
CROSS JOIN LATERAL (SELECT 'controller' AS kind, c AS segment FROM unnest(t.segments) c
                    UNION ALL SELECT 'pool', p FROM unnest(t.pool_segments) p) s
GROUP BY GROUPING SETS ((t.controller, s.kind, s.segment), (s.kind, s.segment));
SELECT p.controller, p.kind, p.segment, p.suppressed, abs(p.twins - e.exact) <= 30 AS within_noise
FROM mseg.pool_segment_sizes p
LEFT JOIN exact_pool e ON e.controller IS NOT DISTINCT FROM p.controller AND e.kind = p.kind AND e.segment = p.segment
ORDER BY p.kind, p.segment, p.controller NULLS LAST;
-- a size that falls to 0 stays published, suppressed, instead of disappearing
DELETE FROM mseg.pool_twins WHERE controller = 'c_one' AND 'runners' = ANY (segments);
SELECT mseg.publish_segment_sizes() > 0 AS published;
SELECT p.controller, p.kind, p.segment, p.twins, p.suppressed
FROM mseg.pool_segment_sizes p WHERE p.controller = 'c_one' AND p.segment IN ('runners', 'pool_runners') ORDER BY 2, 3;
\c - regress_app
SELECT count(*) > 0 AS app_reads_pool_sizes FROM mseg.pool_segment_sizes;
SELECT * FROM try($$SELECT * FROM mseg.published_pool_sizes$$);
\c - postgres
SELECT mseg.drop_pool_segment('pool_runners');
DELETE FROM mseg.pool_twins;
DELETE FROM mseg.controllers;
SELECT mseg.publish_segment_sizes() > 0 AS published;
SELECT count(*) AS pool_sizes_left FROM mseg.pool_segment_sizes;
DROP VIEW exact_pool;
DROP VIEW exact_sizes;
