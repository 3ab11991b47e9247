-- Person-level pool segments: two controllers (acme, gymco) and a trusted party (trustco), each a
-- database of its own, as in linkage.sql. A segment over persons ("runs at acme AND is a gym member
-- at gymco") kept exact through imports, linkage, a delta, a tombstone, a purge and a re-linkage:
-- after each step compared with the test's own computation from the pooled twins and links.
-- Then every refusal, the person segments reading twin-level pool segments, sizes and privileges.
CREATE DATABASE pp_acme;
ALTER DATABASE pp_acme SET mseg.controller_id = 'acme';
CREATE DATABASE pp_gym;
ALTER DATABASE pp_gym SET mseg.controller_id = 'gymco';
CREATE DATABASE pp_trust;
ALTER DATABASE pp_trust SET mseg.controller_id = 'trustco';
CREATE ROLE regress_pp_app LOGIN IN ROLE mseg_app;
CREATE ROLE regress_pp_admin LOGIN IN ROLE mseg_admin;
CREATE ROLE regress_pp_linkage LOGIN IN ROLE mseg_linkage;

-- ---------------------------------------------------------------- controllers
-- acme: people 1..100, half of them runners; gymco: people 41..140 (41..100 shared, e-mail written
-- differently), half of them gym members, and 141 without an e-mail address (never linked)
\c pp_acme
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
CREATE TABLE customers (id bigint PRIMARY KEY, email text, sex text NOT NULL, sport text NOT NULL);
INSERT INTO customers SELECT g, 'person' || g || '@example.org', (ARRAY['f', 'm'])[1 + g % 2],
       (ARRAY['running', 'cycling'])[1 + (g / 2) % 2] FROM generate_series(1, 100) g;
SELECT mseg.register_subjects('customers', 'id');
SELECT mseg.classify('customers', 'email', 'direct');
SELECT mseg.classify('customers', 'sex', 'quasi');
SELECT mseg.classify('customers', 'sport', 'attribute');
SELECT mseg.define_purpose('direct_marketing', '{legitimate_interest}', '2 years');
SELECT mseg.define_segment('runners', 'direct_marketing', $$ s.sport = 'running' $$);
SELECT mseg.add_partner('trustco', '{direct_marketing}', k => 5);
SELECT mseg.set_partner_public_key('trustco', mseg.controller_public_key());
CREATE TABLE staging (n bigserial, line text);
COPY (SELECT mseg.export_variant_twins('trustco')) TO '/tmp/pg_mseg_regress/pp-acme-1.jsonl'
    WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
COPY (SELECT mseg.linkage_request('trustco', 'email')) TO '/tmp/pg_mseg_regress/pp-acme-req-1.jsonl'
    WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');

\c pp_gym
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
CREATE TABLE customers (id bigint PRIMARY KEY, email text, sex text NOT NULL, sport text NOT NULL);
INSERT INTO customers SELECT g, '  Person' || g || '@Example.ORG ', (ARRAY['f', 'm'])[1 + g % 2],
       (ARRAY['gym', 'yoga'])[1 + (g / 3) % 2] FROM generate_series(41, 140) g;
INSERT INTO customers VALUES (141, NULL, 'f', 'gym');
SELECT mseg.register_subjects('customers', 'id');
SELECT mseg.classify('customers', 'email', 'direct');
SELECT mseg.classify('customers', 'sex', 'quasi');
SELECT mseg.classify('customers', 'sport', 'attribute');
SELECT mseg.define_purpose('direct_marketing', '{legitimate_interest}', '2 years');
SELECT mseg.define_segment('members', 'direct_marketing', $$ s.sport = 'gym' $$);
SELECT mseg.add_partner('trustco', '{direct_marketing}', k => 5);
SELECT mseg.set_partner_public_key('trustco', mseg.controller_public_key());
CREATE TABLE staging (n bigserial, line text);
COPY (SELECT mseg.export_variant_twins('trustco')) TO '/tmp/pg_mseg_regress/pp-gym-1.jsonl'
    WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
COPY (SELECT mseg.linkage_request('trustco', 'email')) TO '/tmp/pg_mseg_regress/pp-gym-req-1.jsonl'
    WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');

-- ---------------------------------------------------------------- trusted party
\c pp_trust
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
\i sql/include/try.sql
CREATE TABLE staging (n bigserial, line text);
GRANT ALL ON staging, staging_n_seq TO PUBLIC;
SELECT mseg.register_controller('acme', mseg.controller_public_key());
SELECT mseg.register_controller('gymco', mseg.controller_public_key());
SELECT mseg.import_variant_twins('/tmp/pg_mseg_regress/pp-acme-1.jsonl') AS acme_twins;
SELECT mseg.import_variant_twins('/tmp/pg_mseg_regress/pp-gym-1.jsonl') AS gym_twins;
-- the test's own view of the pool: persons from pool_twins and pool_links, and who should be a
-- member of "runs at acme and is a gym member at gymco" (every twin allowing the purpose, none expired)
CREATE VIEW own_persons AS
SELECT coalesce(l.person, 'twin:' || t.controller || ':' || t.pseudonym) AS person, t.*
FROM mseg.pool_twins t LEFT JOIN mseg.pool_links l USING (controller, pseudonym);
CREATE VIEW own_members AS
SELECT person FROM own_persons GROUP BY person
HAVING bool_or(controller = 'acme' AND 'runners' = ANY (segments))
   AND bool_or(controller = 'gymco' AND 'members' = ANY (segments))
   AND bool_and(policy->'purposes' ? 'direct_marketing')
   AND bool_and(expires_at IS NULL OR expires_at > now());
-- expected vs found: members (persons and their twins), and the persons table itself
CREATE VIEW exactness AS
SELECT (SELECT count(*) FROM own_members) AS expected,
       (SELECT count(*) FROM mseg.pool_segment_persons('runner_members')) AS members,
       (SELECT count(*) FROM (SELECT person FROM own_members EXCEPT SELECT m FROM mseg.pool_segment_persons('runner_members') m) x)
     + (SELECT count(*) FROM (SELECT m FROM mseg.pool_segment_persons('runner_members') m EXCEPT SELECT person FROM own_members) x) AS differ,
       (SELECT count(*) FROM mseg.pool_segment_members('runner_members')) AS member_twins,
       (SELECT count(*) FROM (SELECT controller, pseudonym FROM own_persons WHERE person IN (SELECT person FROM own_members)
                              EXCEPT SELECT * FROM mseg.pool_segment_members('runner_members')) x)
     + (SELECT count(*) FROM (SELECT * FROM mseg.pool_segment_members('runner_members')
                              EXCEPT SELECT controller, pseudonym FROM own_persons WHERE person IN (SELECT person FROM own_members)) x) AS twins_differ,
       (SELECT count(DISTINCT person) FROM own_persons) AS persons,
       (SELECT count(*) FROM (
           (SELECT person, array_agg(DISTINCT controller::text ORDER BY controller::text), count(*)::int,
                   array(SELECT DISTINCT o2.controller || ':' || s FROM own_persons o2, unnest(o2.segments) s WHERE o2.person = o.person ORDER BY 1)
            FROM own_persons o GROUP BY person
            EXCEPT SELECT person, controllers, twins, segments FROM mseg.pool_persons)
           UNION ALL
           (SELECT person, controllers, twins, segments FROM mseg.pool_persons
            EXCEPT SELECT person, array_agg(DISTINCT controller::text ORDER BY controller::text), count(*)::int,
                   array(SELECT DISTINCT o2.controller || ':' || s FROM own_persons o2, unnest(o2.segments) s WHERE o2.person = o.person ORDER BY 1)
            FROM own_persons o GROUP BY person)) x) AS persons_differ;

-- the person segment, defined by the linkage role (before any link: no person has twins at both)
\c - regress_pp_linkage
SELECT mseg.define_person_segment('runner_members', 'direct_marketing',
    $$'acme:runners' = ANY (p.segments) AND 'gymco:members' = ANY (p.segments)$$,
    'runs at acme and is a gym member at gymco') AS members_now;
\c - postgres
SELECT name, purpose, level, canonical, description FROM mseg.pool_segments;
SELECT 'after the first imports' AS step, * FROM exactness;

-- ---------------------------------------------------------------- linkage round 1 (acme, then gymco)
TRUNCATE staging RESTART IDENTITY;
COPY staging(line) FROM '/tmp/pg_mseg_regress/pp-acme-req-1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
COPY (SELECT mseg.linkage_evaluate('staging')) TO '/tmp/pg_mseg_regress/pp-acme-resp-1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
TRUNCATE staging RESTART IDENTITY;
COPY staging(line) FROM '/tmp/pg_mseg_regress/pp-gym-req-1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
COPY (SELECT mseg.linkage_evaluate('staging')) TO '/tmp/pg_mseg_regress/pp-gym-resp-1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
\c pp_acme
COPY staging(line) FROM '/tmp/pg_mseg_regress/pp-acme-resp-1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
COPY (SELECT mseg.linkage_finalize('trustco', 'staging')) TO '/tmp/pg_mseg_regress/pp-acme-links-1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
\c pp_gym
COPY staging(line) FROM '/tmp/pg_mseg_regress/pp-gym-resp-1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
COPY (SELECT mseg.linkage_finalize('trustco', 'staging')) TO '/tmp/pg_mseg_regress/pp-gym-links-1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
\c pp_trust
TRUNCATE staging RESTART IDENTITY;
COPY staging(line) FROM '/tmp/pg_mseg_regress/pp-acme-links-1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT mseg.import_linkage('staging') AS acme_links;
SELECT 'acme linked, gymco not yet' AS step, * FROM exactness;
TRUNCATE staging RESTART IDENTITY;
COPY staging(line) FROM '/tmp/pg_mseg_regress/pp-gym-links-1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT mseg.import_linkage('staging') AS gym_links;
SELECT 'both linked' AS step, * FROM exactness;
-- what a person looks like (the 60 shared people are persons of two twins)
SELECT twins, controllers, purposes, person_segments, count(*) AS persons
FROM mseg.pool_persons GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 4;
SELECT count(*) AS unlinked_persons FROM mseg.pool_persons WHERE person LIKE 'twin:%';

-- ---------------------------------------------------------------- a delta: some shared runners stop running at acme
-- (a segment left makes their cohort's record untrue: it is regrouped over its members, the parts
-- sent again with their pseudonyms and their new segments; a segment joined changes nothing)
\c pp_acme
UPDATE customers SET sport = 'cycling' WHERE id BETWEEN 41 AND 80 AND sport = 'running' AND sex = 'f';
COPY (SELECT mseg.export_variant_twins('trustco', mode => 'delta')) TO '/tmp/pg_mseg_regress/pp-acme-2.jsonl'
    WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
\c pp_trust
SELECT mseg.import_variant_twins('/tmp/pg_mseg_regress/pp-acme-2.jsonl') AS acme_delta_twins;
SELECT 'after a delta changing segments' AS step, * FROM exactness;

-- ---------------------------------------------------------------- a tombstone: a member objects at gymco
\c pp_gym
SELECT mseg.object(min(id), 'direct_marketing') FROM customers WHERE id BETWEEN 81 AND 100 AND sport = 'gym';
COPY (SELECT mseg.export_variant_twins('trustco', mode => 'delta')) TO '/tmp/pg_mseg_regress/pp-gym-2.jsonl'
    WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
\c pp_trust
SELECT mseg.import_variant_twins('/tmp/pg_mseg_regress/pp-gym-2.jsonl') AS gym_delta_twins;
SELECT 'after a tombstone' AS step, * FROM exactness;

-- ---------------------------------------------------------------- an expired twin, then the purge
-- (the retention of one member's acme twin ends: its expiry is moved into the past here, and the
-- persons rebuilt as an import with that expiry would; the person is no member from then on)
UPDATE mseg.pool_twins SET expires_at = now() - interval '1 day'
WHERE (controller, pseudonym) = (SELECT * FROM mseg.pool_segment_members('runner_members') WHERE controller = 'acme' LIMIT 1);
SELECT mseg._refresh_pool_persons() AS persons_rebuilt;
SELECT 'a twin expired' AS step, * FROM exactness;
SELECT mseg.purge_expired_twins() AS purged;
SELECT 'after the purge' AS step, * FROM exactness;

-- ---------------------------------------------------------------- linkage round 2 at gymco: links replaced
-- (the objection ended the member's cohort: the others were sent again under new pseudonyms,
-- unlinked until this round)
\c pp_gym
COPY (SELECT mseg.linkage_request('trustco', 'email')) TO '/tmp/pg_mseg_regress/pp-gym-req-2.jsonl'
    WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
\c pp_trust
TRUNCATE staging RESTART IDENTITY;
COPY staging(line) FROM '/tmp/pg_mseg_regress/pp-gym-req-2.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
COPY (SELECT mseg.linkage_evaluate('staging')) TO '/tmp/pg_mseg_regress/pp-gym-resp-2.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
\c pp_gym
TRUNCATE staging RESTART IDENTITY;
COPY staging(line) FROM '/tmp/pg_mseg_regress/pp-gym-resp-2.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
COPY (SELECT mseg.linkage_finalize('trustco', 'staging')) TO '/tmp/pg_mseg_regress/pp-gym-links-2.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
\c pp_trust
TRUNCATE staging RESTART IDENTITY;
COPY staging(line) FROM '/tmp/pg_mseg_regress/pp-gym-links-2.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT mseg.import_linkage('staging') AS gym_links;
SELECT 'after re-linkage' AS step, * FROM exactness;

-- ---------------------------------------------------------------- person segments over twin-level pool segments
SELECT mseg.define_pool_segment('pool_runners', 'direct_marketing', $$'runners' = ANY (t.segments)$$) AS pool_runners;
SELECT mseg.define_person_segment('runners_at_gyms', 'direct_marketing',
    $$'pool_runners' = ANY (p.pool_segments) AND 'gymco' = ANY (p.controllers)$$) AS runners_at_gyms;
SELECT (SELECT count(*) FROM mseg.pool_segment_persons('runners_at_gyms')) AS members,
       (SELECT count(*) FROM (SELECT person FROM own_persons GROUP BY person
                              HAVING bool_or('pool_runners' = ANY (pool_segments)) AND bool_or(controller = 'gymco')
                                 AND bool_and(expires_at IS NULL OR expires_at > now())) x) AS expected;
-- the twin-level segment's persons: each person of a member twin once
SELECT (SELECT count(*) FROM mseg.pool_segment_persons('pool_runners')) AS persons,
       (SELECT count(DISTINCT person) FROM own_persons WHERE 'pool_runners' = ANY (pool_segments)) AS expected;
-- dropping the twin-level segment empties the person segment that reads it
SELECT mseg.drop_pool_segment('pool_runners');
SELECT count(*) AS members_left FROM mseg.pool_segment_persons('runners_at_gyms');
SELECT mseg.drop_pool_segment('runners_at_gyms');
SELECT count(*) AS persons_in_a_dropped_segment FROM mseg.pool_persons WHERE 'runners_at_gyms' = ANY (person_segments);

-- ---------------------------------------------------------------- refusals
SELECT * FROM try($$SELECT mseg.define_person_segment(NULL, 'direct_marketing', 'true')$$);
SELECT * FROM try($$SELECT mseg.define_person_segment('x', NULL, 'true')$$);
SELECT * FROM try($$SELECT mseg.define_person_segment('x', 'direct_marketing', NULL)$$);
SELECT * FROM try($$SELECT mseg.define_person_segment('Bad Name', 'direct_marketing', 'true')$$);
SELECT * FROM try($$SELECT mseg.define_person_segment('x', 'Direct Marketing', 'true')$$);
SELECT * FROM try($$SELECT mseg.define_person_segment('runner_members', 'direct_marketing', 'true')$$);
SELECT mseg.define_pool_segment('anyone', 'direct_marketing', 'true') AS anyone;
SELECT * FROM try($$SELECT mseg.define_person_segment('anyone', 'direct_marketing', 'true')$$);
SELECT * FROM try($$SELECT mseg.define_pool_segment('runner_members', 'direct_marketing', 'true')$$);
SELECT * FROM try($$SELECT mseg.define_person_segment('x', 'direct_marketing', '')$$);
SELECT * FROM try($$SELECT mseg.define_person_segment('x', 'direct_marketing', 'p.twins')$$);
SELECT * FROM try($$SELECT mseg.define_person_segment('x', 'direct_marketing',
    'EXISTS (SELECT 1 FROM mseg.pool_links l WHERE l.person = p.person)')$$);
SELECT * FROM try($$SELECT mseg.define_person_segment('x', 'direct_marketing', 'p.expires_at < now() + interval ''1 month''')$$);
SELECT * FROM try($$SELECT mseg.define_person_segment('x', 'direct_marketing', $p$'acme:runners' = ANY (t.segments)$p$)$$);
SELECT * FROM try($$SELECT mseg.define_person_segment('x', 'direct_marketing', $p$'acme' = p.controller$p$)$$);
SELECT * FROM try($$SELECT mseg.define_person_segment('x', 'direct_marketing', $p$'runner_members' = ANY (p.person_segments)$p$)$$);
SELECT * FROM try($$SELECT mseg.pool_segment_persons('nothing')$$);
SELECT * FROM try($$SELECT mseg.pool_segment_members('nothing')$$);
SELECT * FROM try($$SELECT mseg.drop_pool_segment('nothing')$$);
SELECT count(*) AS no_half_written_segment FROM mseg.pool_segments WHERE name = 'x';

-- ---------------------------------------------------------------- sizes: person segments published too
SELECT mseg.publish_segment_sizes() > 0 AS published;
SELECT controller, kind,
       suppressed OR abs(persons - (SELECT count(*) FROM own_members)) <= 30 AS persons_within_noise_unless_suppressed
FROM mseg.pool_segment_sizes WHERE segment = 'runner_members' AND controller IS NULL;
SELECT count(*) AS size_rows FROM mseg.pool_segment_sizes WHERE segment = 'runner_members';

-- ---------------------------------------------------------------- who reads persons
\c - regress_pp_app
SELECT * FROM try($$SELECT count(*) FROM mseg.pool_persons$$);
SELECT * FROM try($$SELECT count(*) FROM mseg.pool_segment_persons('runner_members')$$);
SELECT * FROM try($$SELECT mseg.define_person_segment('y', 'direct_marketing', 'true')$$);
SELECT * FROM try($$SELECT count(*) FROM mseg.pool_twin_persons$$);
\c - regress_pp_admin
SELECT * FROM try($$SELECT count(*) FROM mseg.pool_persons$$);
SELECT * FROM try($$SELECT count(*) FROM mseg.pool_segment_persons('runner_members')$$);
SELECT * FROM try($$SELECT mseg.define_person_segment('y', 'direct_marketing', 'true')$$);
SELECT * FROM try($$SELECT count(*) FROM mseg.pool_twin_persons$$);
SELECT count(*) > 0 AS admin_reads_member_twins FROM mseg.pool_segment_members('runner_members');
\c - regress_pp_linkage
SELECT count(*) > 0 AS linkage_reads_persons FROM mseg.pool_persons;
SELECT count(*) > 0 AS linkage_reads_member_persons FROM mseg.pool_segment_persons('runner_members');
SELECT * FROM try($$SELECT count(*) FROM mseg.pool_twins$$);
SELECT * FROM try($$SELECT count(*) FROM mseg.pool_twin_persons$$);
\c - postgres
SELECT action, object, details - 'predicate' AS details FROM mseg.audit_log
WHERE action LIKE 'pool_segment.%' OR action = 'pool.purge' ORDER BY seq;
SELECT ok FROM mseg.verify_audit_log();

-- the persons table is kept while a person segment exists: the last one's drop empties it, the
-- next definition builds it whole again (and exactly)
SELECT mseg.drop_pool_segment('runner_members');
SELECT count(*) AS persons_without_person_segments FROM mseg.pool_persons;
SELECT mseg.define_person_segment('runner_members', 'direct_marketing',
    $$'acme:runners' = ANY (p.segments) AND 'gymco:members' = ANY (p.segments)$$) AS members_again;
SELECT 'defined again' AS step, * FROM exactness;

\c mseg_regress
DROP DATABASE pp_acme;
DROP DATABASE pp_gym;
DROP DATABASE pp_trust;
DROP ROLE regress_pp_app, regress_pp_admin, regress_pp_linkage;
