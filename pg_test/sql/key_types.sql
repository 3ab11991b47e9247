-- Subject keys that are not integers: a uuid key (and a text key at the end). Consent, rights,
-- segments over the subject row and over a source keyed by the same uuid, refresh, verification,
-- and the mapping from the extension's subject ids back to keys. Own database, dropped at the end.
CREATE DATABASE mseg_keys TEMPLATE template0;
\c mseg_keys
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
CREATE FUNCTION try(stmt text) RETURNS TABLE (sqlstate text, message text) LANGUAGE plpgsql AS $$
BEGIN EXECUTE stmt; RETURN QUERY SELECT 'ok'::text, NULL::text;
EXCEPTION WHEN OTHERS THEN RETURN QUERY SELECT SQLSTATE::text, SQLERRM; END $$;
CREATE FUNCTION diffs() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM mseg.verify_segments()';
-- uuids that sort like the numbers they are made of
CREATE FUNCTION u(n int) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$ SELECT lpad(to_hex(n), 32, '0')::uuid $$;

CREATE TABLE customers (id uuid PRIMARY KEY, email text, city text, loyalty int);
INSERT INTO customers SELECT u(g), 'u' || g || '@example.com', CASE WHEN g % 2 = 0 THEN 'Berlin' ELSE 'Bonn' END, g % 100
FROM generate_series(1, 400) g;
CREATE TABLE orders (order_id serial, customer uuid NOT NULL, amount int);
INSERT INTO orders (customer, amount) SELECT u(1 + g % 400), g % 60 FROM generate_series(1, 1200) g;

SELECT mseg.register_subjects('customers', key_column => 'id');
SELECT count(*) AS subject_ids FROM mseg.subject_ids;
SELECT mseg.classify('customers', 'email', 'direct');
SELECT mseg.register_source('orders', 'customer');
CREATE TABLE bad_src (customer int);
SELECT * FROM try($$SELECT mseg.register_source('bad_src', 'customer')$$);
SELECT mseg.define_purpose('dm', '{consent,legitimate_interest}', '1 year');
SELECT mseg.define_segment('loyal_berlin', 'dm', $$s.city = 'Berlin' AND s.loyalty >= 50$$);
SELECT mseg.define_segment('spenders', 'dm', $$EXISTS (SELECT 1 FROM orders o WHERE o.customer = s.id AND o.amount > 55)$$);
SELECT diffs();

-- consent takes the key as it is (a uuid, or its text)
SELECT mseg.grant_consent(u(2), 'dm', 'v1') > 0 AS granted,
       mseg.object('00000000-0000-0000-0000-000000000004', 'dm') > 0 AS objected,
       mseg.restrict(u(6)) > 0 AS restricted;
SELECT mseg.is_processable(u(2), 'dm'), mseg.is_processable(u(4), 'dm'), mseg.is_processable(u(6), 'dm'), mseg.is_processable(u(8), 'dm');
SELECT * FROM try($$SELECT mseg.grant_consent(u(9999), 'dm')$$);
SELECT * FROM try($$SELECT mseg.grant_consent('not-a-key', 'dm')$$);
-- segments: ids inside, keys outside
SELECT count(*) AS members, bool_and(mseg.subject_key(m)::uuid IN (SELECT id FROM customers)) AS keys_map_back
FROM mseg.segment_members('loyal_berlin') m;
SELECT u(4) IN (SELECT mseg.subject_key(m)::uuid FROM mseg.segment_members('loyal_berlin') m) AS objector_member,
       u(60) IN (SELECT mseg.subject_key(m)::uuid FROM mseg.segment_members('loyal_berlin') m) AS sixty_member;
-- rows written by the application: insert, update (row-only path), re-key, delete; source rows
INSERT INTO customers VALUES (u(1000), 'new@example.com', 'Berlin', 99);
UPDATE customers SET loyalty = 1 WHERE id = u(60);
UPDATE customers SET city = 'Bonn' WHERE id IN (u(62), u(64));
UPDATE customers SET id = u(2000) WHERE id = u(66);
DELETE FROM customers WHERE id = u(68);
INSERT INTO orders (customer, amount) VALUES (u(1), 59), (u(3), 58);
DELETE FROM orders WHERE customer = u(5);
SELECT diffs();
SELECT u(1000) IN (SELECT mseg.subject_key(m)::uuid FROM mseg.segment_members('loyal_berlin') m) AS new_member,
       u(2000) IN (SELECT mseg.subject_key(m)::uuid FROM mseg.segment_members('loyal_berlin') m) AS rekeyed_member,
       u(1) IN (SELECT mseg.subject_key(m)::uuid FROM mseg.segment_members('spenders') m) AS new_spender;
-- bulk (a statement over many subjects), a consent withdrawal, refresh
SET mseg.bulk_statement_subjects = 10;
UPDATE customers SET loyalty = loyalty + 1;
INSERT INTO customers SELECT u(g), 'b' || g || '@example.com', 'Berlin', 77 FROM generate_series(3000, 3050) g;
RESET mseg.bulk_statement_subjects;
SELECT mseg.withdraw_consent(u(2), 'dm') > 0 AS withdrawn;
SELECT mseg.refresh_segments() >= 0 AS refreshed;
SELECT diffs();
-- a Variant Twin export: twins are keyed by subject id (pseudonyms of ids, never a key); resolve
-- gives the id back and mseg.subject_key the uuid; an erasure ends the subject's cohort
ALTER DATABASE mseg_keys SET mseg.controller_id = 'acme';
\c mseg_keys
SET client_min_messages = warning;
SELECT mseg.classify('customers', 'city', 'quasi');
SELECT mseg.classify('customers', 'loyalty', 'quasi', hierarchy => 'integer:10,50');
SELECT mseg.add_partner('trustco', '{dm}', k => 5);
CREATE TABLE d1 AS SELECT n, l::jsonb AS j FROM mseg.export_variant_twins('trustco') WITH ORDINALITY x(l, n);
SELECT count(*) FILTER (WHERE j->>'type' = 'twin') AS twins, (SELECT count(*) FROM customers) AS customers,
       max((j->>'k_reached')::int) FILTER (WHERE n = 1) >= 5 AS k_reached
FROM d1;
SELECT count(*) AS lines_naming_a_key FROM d1 JOIN customers c ON strpos(d1.j::text, c.id::text) > 0;
SELECT r.status, r.key::uuid IN (SELECT id FROM customers) AS key_of_a_customer, mseg.subject_key(r.subject_key) = r.key AS id_maps_to_key
FROM mseg.resolve('trustco', ARRAY[(SELECT j->>'pseudonym' FROM d1 WHERE j->>'type' = 'twin' ORDER BY n LIMIT 1)], 'dm') r;
-- rights: the report by key, erasure removes the key's mapping (the id stays, meaning nobody)
SELECT r->>'subject' = u(6)::text AS report_names_key, jsonb_typeof(r->'data') AS data,
       r->'purposes'->0->>'purpose' AS purpose FROM mseg.subject_report(u(6)) r;
SELECT (mseg.forget(u(10))->>'rows')::int AS erased_rows;
SELECT count(*) AS mapping_left FROM mseg.subject_ids WHERE subject_key = u(10)::text;
SELECT * FROM try($$SELECT mseg.is_processable(u(10), 'dm')$$);
SELECT * FROM try($$SELECT mseg.grant_consent(u(10), 'dm')$$);
-- the erased subject's cohort ends in the next delta (tombstones, no reasons)
CREATE TABLE d2 AS SELECT n, l::jsonb AS j FROM mseg.export_variant_twins('trustco', mode => 'delta') WITH ORDINALITY x(l, n);
SELECT count(*) FILTER (WHERE j->>'type' = 'tombstone') >= 5 AS cohort_ended,
       bool_and(j ?| ARRAY['reason', 'subject']) FILTER (WHERE j->>'type' = 'tombstone') IS NOT TRUE AS no_reasons,
       (SELECT (j->'ended_by_reason'->>'erased')::int FROM d2 WHERE n = 1) AS erased
FROM d2;
SELECT ok FROM mseg.verify_audit_log();
SELECT diffs();

-- a text key ('C-000123'), in a second database
\c mseg_regress postgres
DROP DATABASE mseg_keys WITH (FORCE);
CREATE DATABASE mseg_keys TEMPLATE template0;
\c mseg_keys
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
CREATE TABLE members (code text PRIMARY KEY, city text);
INSERT INTO members SELECT 'C-' || lpad(g::text, 6, '0'), CASE WHEN g % 3 = 0 THEN 'Berlin' ELSE 'Bonn' END FROM generate_series(1, 90) g;
SELECT mseg.register_subjects('members', key_column => 'code');
SELECT mseg.define_purpose('dm', '{legitimate_interest}', '1 year');
SELECT mseg.define_segment('berliners', 'dm', $$s.city = 'Berlin'$$);
SELECT mseg.object('C-000003', 'dm') > 0 AS objected;
SELECT count(*) AS members, min(mseg.subject_key(m)) AS first FROM mseg.segment_members('berliners') m;
UPDATE members SET city = 'Berlin' WHERE code = 'C-000001';
SELECT count(*) AS differences FROM mseg.verify_segments();
\c mseg_regress postgres
DROP DATABASE mseg_keys WITH (FORCE);
