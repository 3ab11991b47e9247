-- Linkage (OPRF, RFC 9497 ristretto255): two controllers (acme, gymco) and a trusted party
-- (trustco), each a database of its own; files travel through /tmp/pg_mseg_regress. The happy
-- path, every refusal a DBA can meet, persons in the pooled sizes, and what each role can read.
-- (One cluster, so one master key: the OPRF outputs and signatures change with it, none is shown.)
CREATE DATABASE link_acme;
ALTER DATABASE link_acme SET mseg.controller_id = 'acme';
CREATE DATABASE link_gym;
ALTER DATABASE link_gym SET mseg.controller_id = 'gymco';
CREATE DATABASE link_trust;
ALTER DATABASE link_trust SET mseg.controller_id = 'trustco';

-- ---------------------------------------------------------------- controllers
\c link_acme
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
CREATE ROLE regress_link_app LOGIN IN ROLE mseg_app;
CREATE ROLE regress_link_admin LOGIN IN ROLE mseg_admin;
CREATE ROLE regress_link_export LOGIN IN ROLE mseg_export;
CREATE ROLE regress_link_reader LOGIN IN ROLE mseg_linkage;
\i sql/include/try.sql
-- people 1..60; gymco has 31..70: 30 shared people, written differently (case, blanks)
CREATE TABLE customers (id bigint PRIMARY KEY, email text, sex text NOT NULL, sport text NOT NULL);
INSERT INTO customers SELECT g, 'person' || g || '@example.org', (ARRAY['f', 'm'])[1 + g % 2],
       (ARRAY['running', 'cycling'])[1 + g % 2] FROM generate_series(1, 60) g;
SELECT mseg.register_subjects('customers', 'id');
SELECT mseg.classify('customers', 'email', 'direct');
SELECT mseg.classify('customers', 'sex', 'quasi');
SELECT mseg.classify('customers', 'sport', 'attribute');
SELECT mseg.define_purpose('direct_marketing', '{legitimate_interest}', '2 years');
SELECT mseg.define_segment('runners', 'direct_marketing', $$ s.sport = 'running' $$);
SELECT mseg.add_partner('trustco', '{direct_marketing}', k => 5);
SELECT mseg.add_partner('emptyco', '{direct_marketing}', k => 5);
COPY (SELECT mseg.export_variant_twins('trustco')) TO '/tmp/pg_mseg_regress/link-acme-twins.jsonl'
    WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT count(*) AS held FROM mseg.partner_twins WHERE cohort IS NOT NULL;

-- refusals of linkage_request
SELECT * FROM try($$SELECT mseg.linkage_request(NULL, 'email')$$);
SELECT * FROM try($$SELECT mseg.linkage_request('trustco', NULL)$$);
SELECT * FROM try($$SELECT mseg.linkage_request('nobody', 'email')$$);
SELECT * FROM try($$SELECT mseg.linkage_request('trustco', 'no_such_column')$$);
SELECT * FROM try($$SELECT mseg.linkage_request('trustco', 'sex')$$);
SELECT * FROM try($$SELECT mseg.linkage_request('emptyco', 'email')$$);
-- an application role may not ask (it would be an oracle of the blinds' outputs)
\c - regress_link_app
SELECT * FROM try($$SELECT mseg.linkage_request('trustco', 'email')$$);
\c - postgres

-- the request: blinded elements only, nothing of an identifier; the blinds stay here
CREATE TABLE req AS SELECT n, l FROM mseg.linkage_request('trustco', 'email') WITH ORDINALITY x(l, n);
SELECT jsonb_pretty(l::jsonb) AS manifest FROM req WHERE n = 1;
SELECT count(*) FILTER (WHERE l::jsonb->>'type' = 'blinded') AS blinded,
       count(DISTINCT l::jsonb->>'element') AS distinct_elements,
       count(*) FILTER (WHERE l ILIKE '%person%' OR l LIKE '%@%') AS with_identifier,
       min(length(l)) FILTER (WHERE l::jsonb->>'type' = 'blinded') AS line_length
FROM req;
SELECT (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(l::jsonb) k) AS trailer_keys FROM req WHERE n = (SELECT max(n) FROM req);
SELECT partner, sequence, identifier, subjects, finalized_at IS NULL AS open FROM mseg.link_requests;
SELECT count(*) AS blinds, count(DISTINCT blind) AS distinct_blinds FROM mseg.link_blinds;
COPY (SELECT l FROM req ORDER BY n) TO '/tmp/pg_mseg_regress/link-acme-req.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
-- who reads what at a controller: blinds nobody, requests the administrator
\c - regress_link_app
SELECT * FROM try($$SELECT count(*) FROM mseg.link_blinds$$);
SELECT * FROM try($$SELECT count(*) FROM mseg.link_requests$$);
\c - regress_link_admin
SELECT * FROM try($$SELECT count(*) FROM mseg.link_blinds$$);
SELECT * FROM try($$SELECT count(*) FROM mseg.link_requests$$);
\c - regress_link_export
SELECT * FROM try($$SELECT count(*) FROM mseg.link_blinds$$);
\c - postgres

\c link_gym
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
CREATE TABLE customers (id bigint PRIMARY KEY, email text, sex text NOT NULL, sport text NOT NULL);
INSERT INTO customers SELECT g, '  Person' || g || '@Example.ORG ', (ARRAY['f', 'm'])[1 + g % 2],
       (ARRAY['gym', 'yoga'])[1 + g % 2] FROM generate_series(31, 70) g;
-- a customer without an e-mail address: its twin stays unlinked (one person of its own)
INSERT INTO customers VALUES (71, NULL, 'f', 'gym');
SELECT mseg.register_subjects('customers', 'id');
SELECT mseg.classify('customers', 'email', 'direct');
SELECT mseg.classify('customers', 'sex', 'quasi');
SELECT mseg.classify('customers', 'sport', 'attribute');
SELECT mseg.define_purpose('direct_marketing', '{legitimate_interest}', '2 years');
SELECT mseg.define_segment('members', 'direct_marketing', $$ s.sport = 'gym' $$);
SELECT mseg.add_partner('trustco', '{direct_marketing}', k => 5);
COPY (SELECT mseg.export_variant_twins('trustco')) TO '/tmp/pg_mseg_regress/link-gym-twins.jsonl'
    WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT count(*) AS held FROM mseg.partner_twins WHERE cohort IS NOT NULL;
COPY (SELECT mseg.linkage_request('trustco', 'email')) TO '/tmp/pg_mseg_regress/link-gym-req.jsonl'
    WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT subjects FROM mseg.link_requests;

-- ---------------------------------------------------------------- trusted party: evaluate
\c link_trust
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
\i sql/include/try.sql
CREATE TABLE s_acme (n bigserial, line text);
COPY s_acme(line) FROM '/tmp/pg_mseg_regress/link-acme-req.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
CREATE TABLE s_gym (n bigserial, line text);
COPY s_gym(line) FROM '/tmp/pg_mseg_regress/link-gym-req.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
-- a request from a controller not registered yet
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_evaluate('s_acme')$$);
SELECT mseg.register_controller('acme', mseg.controller_public_key());
SELECT mseg.register_controller('gymco', mseg.controller_public_key());
SELECT mseg.import_variant_twins('/tmp/pg_mseg_regress/link-acme-twins.jsonl') AS acme_twins;
SELECT mseg.import_variant_twins('/tmp/pg_mseg_regress/link-gym-twins.jsonl') AS gym_twins;
-- refusals of linkage_evaluate: NULL, not a staging table, tampered, truncated, empty, a twin dump
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_evaluate(NULL)$$);
CREATE TABLE not_staging (x int);
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_evaluate('not_staging')$$);
CREATE TABLE t (n bigserial, line text);
INSERT INTO t(line) SELECT line FROM s_acme ORDER BY n;
UPDATE t SET line = replace(line, '"type":"blinded"', '"type":"blinded","x":1') WHERE n = 3;
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_evaluate('t')$$);
TRUNCATE t RESTART IDENTITY; INSERT INTO t(line) SELECT line FROM s_acme WHERE n <> 5 ORDER BY n;
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_evaluate('t')$$);
TRUNCATE t RESTART IDENTITY; INSERT INTO t(line) SELECT line FROM s_acme WHERE n < 10 ORDER BY n;
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_evaluate('t')$$);
TRUNCATE t RESTART IDENTITY;
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_evaluate('t')$$);
TRUNCATE t RESTART IDENTITY; INSERT INTO t(line) SELECT l FROM pg_catalog.regexp_split_to_table(
    pg_catalog.pg_read_file('/tmp/pg_mseg_regress/link-acme-twins.jsonl'), E'\n') l WHERE l <> '';
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_evaluate('t')$$);
-- the evaluation: one element per element, signed by the trusted party, naming the request's digest
\c - regress_link_app
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_evaluate('s_acme')$$);
\c - postgres
CREATE TABLE resp_acme AS SELECT n, l FROM mseg.linkage_evaluate('s_acme') WITH ORDINALITY x(l, n);
SELECT jsonb_pretty(l::jsonb - 'request_sha256') AS manifest, length(l::jsonb->>'request_sha256') AS digest_length
FROM resp_acme WHERE n = 1;
SELECT count(*) FILTER (WHERE l::jsonb->>'type' = 'evaluated') AS evaluated,
       count(*) FILTER (WHERE r.line = l) AS lines_echoed
FROM resp_acme LEFT JOIN s_acme r ON r.line = resp_acme.l;
COPY (SELECT l FROM resp_acme ORDER BY n) TO '/tmp/pg_mseg_regress/link-acme-resp.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
COPY (SELECT mseg.linkage_evaluate('s_gym')) TO '/tmp/pg_mseg_regress/link-gym-resp.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
-- a request evaluated once only
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_evaluate('s_acme')$$);
SELECT controller, last_evaluated, last_imported FROM mseg.link_sequences ORDER BY 1;
-- a request made for another party (gymco's request, evaluated at a party calling itself otherco)
SET mseg.controller_id = 'otherco';
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_evaluate('s_gym')$$);
RESET mseg.controller_id;

-- ---------------------------------------------------------------- controllers: finalise
\c link_acme
CREATE TABLE resp (n bigserial, line text);
COPY resp(line) FROM '/tmp/pg_mseg_regress/link-acme-resp.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
-- no partner key registered yet
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_finalize('trustco', 'resp')$$);
SELECT * FROM try($$SELECT mseg.set_partner_public_key('trustco', 'not a key')$$);
SELECT * FROM try($$SELECT mseg.set_partner_public_key('nobody', mseg.controller_public_key())$$);
SELECT * FROM try($$SELECT mseg.set_partner_public_key(NULL, mseg.controller_public_key())$$);
SELECT mseg.set_partner_public_key('trustco', mseg.controller_public_key());
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_finalize(NULL, 'resp')$$);
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_finalize('nobody', 'resp')$$);
-- a response from another partner (its key, registered for emptyco, is the same in this cluster)
SELECT mseg.set_partner_public_key('emptyco', mseg.controller_public_key());
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_finalize('emptyco', 'resp')$$);
-- tampered: an element changed
CREATE TABLE t (n bigserial, line text);
INSERT INTO t(line) SELECT line FROM resp ORDER BY n;
UPDATE t SET line = (SELECT line FROM resp WHERE n = 3) WHERE n = 2;
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_finalize('trustco', 't')$$);
-- the request (not a response)
TRUNCATE t RESTART IDENTITY; INSERT INTO t(line) SELECT l FROM req ORDER BY n;
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_finalize('trustco', 't')$$);
-- the response to another controller's request
TRUNCATE t RESTART IDENTITY; INSERT INTO t(line) SELECT l FROM pg_catalog.regexp_split_to_table(
    pg_catalog.pg_read_file('/tmp/pg_mseg_regress/link-gym-resp.jsonl'), E'\n') l WHERE l <> '';
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_finalize('trustco', 't')$$);
\c - regress_link_app
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_finalize('trustco', 'resp')$$);
\c - postgres
-- finalised: one link per held twin with an identifier, the blinds gone
CREATE TABLE linkage AS SELECT n, l FROM mseg.linkage_finalize('trustco', 'resp') WITH ORDINALITY x(l, n);
SELECT jsonb_pretty(l::jsonb) AS manifest FROM linkage WHERE n = 1;
SELECT count(*) FILTER (WHERE l::jsonb->>'type' = 'link') AS links,
       count(DISTINCT l::jsonb->>'link') AS distinct_links,
       count(*) FILTER (WHERE l ILIKE '%person%' OR l LIKE '%@%') AS with_identifier,
       count(*) FILTER (WHERE l::jsonb->>'type' = 'link' AND NOT EXISTS
           (SELECT 1 FROM mseg.partner_twins p WHERE p.pseudonym = l::jsonb->>'pseudonym' AND p.cohort IS NOT NULL)) AS not_held
FROM linkage;
SELECT count(*) AS blinds_left FROM mseg.link_blinds;
SELECT sequence, finalized_at IS NOT NULL AS finalized FROM mseg.link_requests;
SELECT * FROM try($$SELECT count(*) FROM mseg.linkage_finalize('trustco', 'resp')$$);
COPY (SELECT l FROM linkage ORDER BY n) TO '/tmp/pg_mseg_regress/link-acme-links.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT action, object, details - 'sha256' - 'public_key' AS details FROM mseg.audit_log WHERE action LIKE 'linkage.%' ORDER BY seq;
SELECT ok FROM mseg.verify_audit_log();

\c link_gym
SELECT mseg.set_partner_public_key('trustco', mseg.controller_public_key());
CREATE TABLE resp (n bigserial, line text);
COPY resp(line) FROM '/tmp/pg_mseg_regress/link-gym-resp.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
COPY (SELECT mseg.linkage_finalize('trustco', 'resp')) TO '/tmp/pg_mseg_regress/link-gym-links.jsonl'
    WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT count(*) AS blinds_left FROM mseg.link_blinds;

-- ---------------------------------------------------------------- trusted party: import, persons
\c link_trust
CREATE TABLE l_acme (n bigserial, line text);
COPY l_acme(line) FROM '/tmp/pg_mseg_regress/link-acme-links.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
CREATE TABLE l_gym (n bigserial, line text);
COPY l_gym(line) FROM '/tmp/pg_mseg_regress/link-gym-links.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT * FROM try($$SELECT mseg.import_linkage(NULL)$$);
-- tampered: a link moved to another pseudonym
TRUNCATE t RESTART IDENTITY; INSERT INTO t(line) SELECT line FROM l_acme ORDER BY n;
UPDATE t SET line = (SELECT line FROM l_acme WHERE n = 3) WHERE n = 2;
SELECT * FROM try($$SELECT mseg.import_linkage('t')$$);
-- a response is not a linkage file
TRUNCATE t RESTART IDENTITY; INSERT INTO t(line) SELECT l FROM resp_acme ORDER BY n;
SELECT * FROM try($$SELECT mseg.import_linkage('t')$$);
\c - regress_link_app
SELECT * FROM try($$SELECT mseg.import_linkage('l_acme')$$);
\c - postgres
SELECT mseg.import_linkage('l_acme') AS acme_links;
SELECT * FROM try($$SELECT mseg.import_linkage('l_acme')$$);
SELECT mseg.import_linkage('l_gym') AS gym_links;
SELECT controller, last_evaluated, last_imported FROM mseg.link_sequences ORDER BY 1;
-- persons: 60 at acme, 40 + 1 without e-mail at gymco, 30 shared: 71 persons in 101 twins
SELECT count(*) AS twins, count(l.person) AS linked,
       count(DISTINCT COALESCE(l.person, t.controller || t.pseudonym)) AS persons,
       (SELECT count(*) FROM (SELECT person FROM mseg.pool_links GROUP BY person HAVING count(DISTINCT controller) = 2) x) AS shared
FROM mseg.pool_twins t LEFT JOIN mseg.pool_links l USING (controller, pseudonym);
-- published: persons per controller and across, within the noise; k is checked on persons
SELECT mseg.define_pool_segment('anyone', 'direct_marketing', $$true$$) AS anyone;
SELECT mseg.publish_segment_sizes() > 0 AS published;
SELECT controller, kind, segment, suppressed,
       abs(persons - CASE WHEN controller = 'acme' THEN 60 WHEN controller = 'gymco' THEN 41 ELSE 71 END) <= 30 AS persons_within_noise,
       abs(twins - CASE WHEN controller = 'acme' THEN 60 WHEN controller = 'gymco' THEN 41 ELSE 101 END) <= 30 AS twins_within_noise
FROM mseg.pool_segment_sizes WHERE kind = 'pool' ORDER BY controller NULLS LAST;
-- who reads the links: the linkage role only (not the administrator, not applications)
\c - regress_link_reader
SELECT count(*) AS links_read_by_linkage_role FROM mseg.pool_links;
SELECT * FROM try($$SELECT count(*) FROM mseg.pool_twins$$);
\c - regress_link_admin
SELECT * FROM try($$SELECT count(*) FROM mseg.pool_links$$);
SELECT count(*) AS sequences_read_by_admin FROM mseg.link_sequences;
\c - regress_link_app
SELECT * FROM try($$SELECT count(*) FROM mseg.pool_links$$);
SELECT * FROM try($$SELECT count(*) FROM mseg.link_sequences$$);
SELECT count(*) > 0 AS app_reads_published_sizes FROM mseg.pool_segment_sizes;
\c - postgres
SELECT action, object, details - 'sha256' - 'public_key' AS details FROM mseg.audit_log WHERE action LIKE 'linkage.%' ORDER BY seq;
SELECT ok FROM mseg.verify_audit_log();

\c mseg_regress
DROP DATABASE link_acme;
DROP DATABASE link_gym;
DROP DATABASE link_trust;
DROP ROLE regress_link_app, regress_link_admin, regress_link_export, regress_link_reader;
