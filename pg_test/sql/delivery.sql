-- The last mile at the trusted party: participants, deliver, responses, and rights notices both
-- ways. Two controllers (acme, gymco) and a trusted party (trustco), each a database of its own;
-- files travel through /tmp/pg_mseg_regress. (One cluster, one master key: person keys,
-- pseudonyms and signatures change with it; none is shown.)
CREATE DATABASE dl_acme;
ALTER DATABASE dl_acme SET mseg.controller_id = 'acme';
CREATE DATABASE dl_gym;
ALTER DATABASE dl_gym SET mseg.controller_id = 'gymco';
CREATE DATABASE dl_trust;
ALTER DATABASE dl_trust SET mseg.controller_id = 'trustco';
CREATE ROLE regress_dl_app LOGIN IN ROLE mseg_app;
CREATE ROLE regress_dl_admin LOGIN IN ROLE mseg_admin;
CREATE ROLE regress_dl_delivery LOGIN IN ROLE mseg_delivery;

-- ---------------------------------------------------------------- controllers: twins, linkage request
\c dl_acme
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
\i sql/include/try.sql
-- acme: people 1..20; gymco: 11..30 (10 shared, written differently)
CREATE TABLE customers (id bigint PRIMARY KEY, email text, sex text NOT NULL);
INSERT INTO customers SELECT g, 'person' || g || '@example.org', (ARRAY['f', 'm'])[1 + g % 2] FROM generate_series(1, 20) g;
SELECT mseg.register_subjects('customers', 'id');
SELECT mseg.classify('customers', 'email', 'direct');
SELECT mseg.classify('customers', 'sex', 'quasi');
SELECT mseg.define_purpose('direct_marketing', '{legitimate_interest}', '2 years');
SELECT mseg.add_partner('trustco', '{direct_marketing}', k => 3);
SELECT mseg.set_partner_public_key('trustco', mseg.controller_public_key());
COPY (SELECT mseg.export_variant_twins('trustco')) TO '/tmp/pg_mseg_regress/dl-acme-1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
COPY (SELECT mseg.linkage_request('trustco', 'email')) TO '/tmp/pg_mseg_regress/dl-acme-req1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');

\c dl_gym
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
CREATE TABLE customers (id bigint PRIMARY KEY, email text, sex text NOT NULL);
INSERT INTO customers SELECT g, '  Person' || g || '@Example.ORG ', (ARRAY['f', 'm'])[1 + g % 2] FROM generate_series(11, 30) g;
SELECT mseg.register_subjects('customers', 'id');
SELECT mseg.classify('customers', 'email', 'direct');
SELECT mseg.classify('customers', 'sex', 'quasi');
SELECT mseg.define_purpose('direct_marketing', '{legitimate_interest}', '2 years');
SELECT mseg.add_partner('trustco', '{direct_marketing}', k => 3);
SELECT mseg.set_partner_public_key('trustco', mseg.controller_public_key());
COPY (SELECT mseg.export_variant_twins('trustco')) TO '/tmp/pg_mseg_regress/dl-gym-1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
COPY (SELECT mseg.linkage_request('trustco', 'email')) TO '/tmp/pg_mseg_regress/dl-gym-req1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');

-- ---------------------------------------------------------------- trusted party: pool and linkage
\c dl_trust
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
\i sql/include/try.sql
-- one staging table per file: load(file) empties it and loads the file
CREATE TABLE st (n bigserial, line text);
GRANT SELECT ON st TO PUBLIC;
CREATE FUNCTION load(file text) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE st RESTART IDENTITY;
    INSERT INTO st(line) SELECT l FROM pg_catalog.regexp_split_to_table(pg_catalog.pg_read_file('/tmp/pg_mseg_regress/' || file), E'\n') l WHERE l <> '';
    RETURN (SELECT count(*) FROM st);
END $$;
SELECT mseg.register_controller('acme', mseg.controller_public_key());
SELECT mseg.register_controller('gymco', mseg.controller_public_key());
SELECT mseg.import_variant_twins('/tmp/pg_mseg_regress/dl-acme-1.jsonl') AS acme_twins;
SELECT mseg.import_variant_twins('/tmp/pg_mseg_regress/dl-gym-1.jsonl') AS gym_twins;
SELECT load('dl-acme-req1.jsonl') > 0 AS loaded;
COPY (SELECT mseg.linkage_evaluate('st')) TO '/tmp/pg_mseg_regress/dl-acme-resp1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT load('dl-gym-req1.jsonl') > 0 AS loaded;
COPY (SELECT mseg.linkage_evaluate('st')) TO '/tmp/pg_mseg_regress/dl-gym-resp1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');

\c dl_acme
CREATE TABLE st (n bigserial, line text);
COPY st(line) FROM '/tmp/pg_mseg_regress/dl-acme-resp1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
COPY (SELECT mseg.linkage_finalize('trustco', 'st')) TO '/tmp/pg_mseg_regress/dl-acme-links1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
\c dl_gym
CREATE TABLE st (n bigserial, line text);
COPY st(line) FROM '/tmp/pg_mseg_regress/dl-gym-resp1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
COPY (SELECT mseg.linkage_finalize('trustco', 'st')) TO '/tmp/pg_mseg_regress/dl-gym-links1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');

\c dl_trust
SET client_min_messages = warning;
SELECT load('dl-acme-links1.jsonl') > 0 AS loaded, mseg.import_linkage('st') AS acme_links;
SELECT load('dl-gym-links1.jsonl') > 0 AS loaded, mseg.import_linkage('st') AS gym_links;
SELECT mseg.define_purpose('direct_marketing', '{consent}', '1 year');
SELECT mseg.define_purpose('research', '{consent}', '1 year');
SELECT mseg.define_pool_segment('everyone', 'direct_marketing', $$true$$);
SELECT mseg.define_pool_segment('gym_members', 'direct_marketing', $$t.controller = 'gymco'$$);

-- ---------------------------------------------------------------- participants
-- participants register with the trusted party: 5 (acme only), 15, 16, 17, 18 (both), 25 (gymco
-- only), 40 (a customer of neither), and 115, a second registration of person 15 (other spelling)
CREATE TABLE participants (id bigint PRIMARY KEY, email text, phone text);
INSERT INTO participants VALUES (5, 'person5@example.org', '+1-5'), (15, 'person15@example.org', '+1-15'),
    (16, 'person16@example.org', '+1-16'), (17, 'person17@example.org', '+1-17'), (18, 'person18@example.org', '+1-18'),
    (25, 'person25@example.org', '+1-25'), (40, 'person40@example.org', '+1-40'), (115, ' PERSON15@example.org', '+1-115');
-- before any set-up
SELECT * FROM try($$SELECT * FROM mseg.deliver('everyone', 'spring', 'direct_marketing')$$);
SELECT * FROM try($$SELECT mseg.set_participant_columns('email', 'email')$$);
SELECT mseg.register_subjects('participants', 'id');
SELECT mseg.classify('participants', 'email', 'direct');
SELECT * FROM try($$SELECT mseg.set_participant_columns(NULL, 'email')$$);
SELECT * FROM try($$SELECT mseg.set_participant_columns('email', NULL)$$);
SELECT * FROM try($$SELECT mseg.set_participant_columns('email', 'no_such_column')$$);
SELECT * FROM try($$SELECT mseg.set_participant_columns('phone', 'email')$$);
SELECT mseg.set_participant_columns('email', 'email') AS participants_with_person;
-- the person of a participant is the link a controller's linkage gives for the same address
SELECT count(*) AS participants_linked_to_twins,
       count(DISTINCT pp.person) AS persons
FROM mseg.participant_persons pp WHERE EXISTS (SELECT 1 FROM mseg.pool_links l WHERE l.person = pp.person);
SELECT p.id, count(l.*) AS twins FROM participants p JOIN mseg.participant_persons pp ON pp.subject_key = p.id
LEFT JOIN mseg.pool_links l ON l.person = pp.person GROUP BY p.id ORDER BY p.id;
-- the trigger keeps the persons exact: a new participant, a changed address, a deletion
INSERT INTO participants VALUES (99, 'person99@example.org', NULL);
UPDATE participants SET email = 'person19@example.org' WHERE id = 99;
SELECT count(*) AS twins_of_99 FROM mseg.participant_persons pp JOIN mseg.pool_links l USING (person) WHERE pp.subject_key = 99;
DELETE FROM participants WHERE id = 99;
SELECT count(*) AS persons_of_99 FROM mseg.participant_persons WHERE subject_key = 99;
-- consent at the trusted party: everyone but 16
SELECT count(mseg.grant_consent(id, 'direct_marketing', source => 'signup')) AS grants FROM participants WHERE id <> 16;

-- ---------------------------------------------------------------- deliver
SELECT * FROM mseg.deliver('everyone', 'spring', 'direct_marketing') ORDER BY participant::bigint;
-- the same, computed independently: participants with consent here whose address (normalised)
-- is a customer's of acme (1..20) or gymco (11..30), one per address
CREATE VIEW expected AS
SELECT min(p.id)::text AS participant FROM participants p
WHERE mseg.is_processable(p.id, 'direct_marketing')
  AND substring(lower(trim(p.email)) FROM '^person([0-9]+)@example\.org$')::int BETWEEN 1 AND 30
GROUP BY lower(trim(p.email));
SELECT (SELECT count(*) FROM expected) AS expected,
       (SELECT count(*) FROM (SELECT participant FROM expected EXCEPT SELECT d.subject_key::text FROM mseg.deliveries d WHERE d.campaign = 'spring') x) AS missing,
       (SELECT count(*) FROM (SELECT d.subject_key::text FROM mseg.deliveries d WHERE d.campaign = 'spring' EXCEPT SELECT participant FROM expected) x) AS extra;
-- the campaign again: nobody reached twice
SELECT count(*) AS delivered_again FROM mseg.deliver('everyone', 'spring', 'direct_marketing');
-- a twin that does not allow the purpose (its controller's policy) keeps its person out
UPDATE mseg.pool_twins t SET policy = jsonb_set(policy, '{purposes}', '[]') FROM mseg.participant_persons pp
JOIN mseg.pool_links l USING (person) WHERE pp.subject_key = 17 AND l.controller = 'gymco' AND t.controller = l.controller AND t.pseudonym = l.pseudonym;
SELECT participant FROM mseg.deliver('everyone', 'summer', 'direct_marketing') ORDER BY participant::bigint;
UPDATE mseg.pool_twins t SET policy = jsonb_set(policy, '{purposes}', '["direct_marketing"]') WHERE policy->'purposes' = '[]';
-- a withdrawal at the trusted party takes effect at the next delivery
SELECT mseg.withdraw_consent(5, 'direct_marketing') > 0 AS withdrawn;
SELECT participant FROM mseg.deliver('everyone', 'autumn', 'direct_marketing') ORDER BY participant::bigint;
SELECT participant FROM mseg.deliver('gym_members', 'gym-1', 'direct_marketing') ORDER BY participant::bigint;
-- refusals
SELECT * FROM try($$SELECT * FROM mseg.deliver(NULL, 'x', 'direct_marketing')$$);
SELECT * FROM try($$SELECT * FROM mseg.deliver('everyone', NULL, 'direct_marketing')$$);
SELECT * FROM try($$SELECT * FROM mseg.deliver('everyone', 'x', NULL)$$);
SELECT * FROM try($$SELECT * FROM mseg.deliver('nobody', 'x', 'direct_marketing')$$);
SELECT * FROM try($$SELECT * FROM mseg.deliver('everyone', 'x', 'no_purpose')$$);
SELECT * FROM try($$SELECT * FROM mseg.deliver('everyone', 'x', 'research')$$);
SELECT * FROM try($$SELECT * FROM mseg.deliver('everyone', 'Bad Name', 'direct_marketing')$$);

-- ---------------------------------------------------------------- responses
SELECT mseg.record_response('spring', 15) AS recorded;
SELECT mseg.record_response('spring', 15) AS recorded_again;
SELECT mseg.record_response('spring', '17'::text, 'unsubscribe') AS recorded;
SELECT * FROM try($$SELECT mseg.record_response('spring', 16)$$);
SELECT * FROM try($$SELECT mseg.record_response('spring', 999)$$);
SELECT * FROM try($$SELECT mseg.record_response('winter', 15)$$);
SELECT * FROM try($$SELECT mseg.record_response(NULL, 15)$$);
SELECT * FROM try($$SELECT mseg.record_response('spring', NULL::int)$$);
SELECT * FROM try($$SELECT mseg.record_response('spring', 15, 'Loud!')$$);
SELECT campaign, subject_key, response FROM mseg.responses ORDER BY 1, 2, 3;
SELECT campaign, count(*) AS reached FROM mseg.deliveries GROUP BY 1 ORDER BY 1;
-- every call audited with counts only
SELECT action, object, details FROM mseg.audit_log WHERE action IN ('deliver', 'response', 'participants.columns') ORDER BY seq;

-- who may call what, and who reads what
\c - regress_dl_app
SELECT * FROM try($$SELECT * FROM mseg.deliver('everyone', 'x', 'direct_marketing')$$);
SELECT * FROM try($$SELECT mseg.record_response('spring', 15)$$);
SELECT * FROM try($$SELECT count(*) FROM mseg.participant_persons$$);
SELECT * FROM try($$SELECT count(*) FROM mseg.deliveries$$);
SELECT * FROM try($$SELECT count(*) FROM mseg.rights_notices('acme')$$);
\c - regress_dl_admin
SELECT * FROM try($$SELECT * FROM mseg.deliver('everyone', 'x', 'direct_marketing')$$);
SELECT * FROM try($$SELECT count(*) FROM mseg.participant_persons$$);
SELECT * FROM try($$SELECT count(*) FROM mseg.rights_notice_queue$$);
SELECT count(*) AS deliveries_read_by_admin FROM mseg.deliveries;
\c - regress_dl_delivery
SELECT participant FROM mseg.deliver('everyone', 'by-role', 'direct_marketing') ORDER BY participant::bigint;
SELECT mseg.record_response('by-role', 15) AS recorded_by_role;
SELECT * FROM try($$SELECT count(*) FROM mseg.participant_persons$$);
SELECT * FROM try($$SELECT count(*) FROM mseg.pool_links$$);
SELECT * FROM try($$SELECT count(*) FROM participants$$);
\c - postgres

-- ---------------------------------------------------------------- an objection at a controller
\c dl_gym
SELECT mseg.object(25, 'direct_marketing') > 0 AS objected;
COPY (SELECT mseg.export_variant_twins('trustco', mode => 'delta')) TO '/tmp/pg_mseg_regress/dl-gym-2.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
\c dl_trust
SET client_min_messages = warning;
SELECT mseg.import_variant_twins('/tmp/pg_mseg_regress/dl-gym-2.jsonl') >= 0 AS imported;
-- 25 is gone (its twin tombstoned); gymco's other twins of that cohort came back under new
-- pseudonyms, unlinked until the next linkage
SELECT participant FROM mseg.deliver('gym_members', 'gym-2', 'direct_marketing') ORDER BY participant::bigint;
\c dl_gym
COPY (SELECT mseg.linkage_request('trustco', 'email')) TO '/tmp/pg_mseg_regress/dl-gym-req2.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
\c dl_trust
SELECT load('dl-gym-req2.jsonl') > 0 AS loaded;
COPY (SELECT mseg.linkage_evaluate('st')) TO '/tmp/pg_mseg_regress/dl-gym-resp2.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
\c dl_gym
TRUNCATE st RESTART IDENTITY;
COPY st(line) FROM '/tmp/pg_mseg_regress/dl-gym-resp2.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
COPY (SELECT mseg.linkage_finalize('trustco', 'st')) TO '/tmp/pg_mseg_regress/dl-gym-links2.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
\c dl_trust
SET client_min_messages = warning;
SELECT load('dl-gym-links2.jsonl') > 0 AS loaded, mseg.import_linkage('st') AS gym_links;
SELECT participant FROM mseg.deliver('gym_members', 'gym-3', 'direct_marketing') ORDER BY participant::bigint;

-- ---------------------------------------------------------------- rights notices: trusted party
-- participant 15 objects, 18 asks for erasure: one notice per twin linked to their person
SELECT mseg.object(15, 'direct_marketing') > 0 AS objected;
SELECT (mseg.forget(18)->>'mode') AS erased;
SELECT controller, kind, purpose, count(*) FROM mseg.rights_notice_queue GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
-- the erased participant's person is gone; its deliveries and responses too
SELECT count(*) AS persons_of_18 FROM mseg.participant_persons WHERE subject_key = 18;
SELECT count(*) AS deliveries_of_18 FROM mseg.deliveries WHERE subject_key = 18;
SELECT * FROM try($$SELECT count(*) FROM mseg.rights_notices(NULL)$$);
SELECT * FROM try($$SELECT count(*) FROM mseg.rights_notices('nobody')$$);
CREATE TABLE n_acme AS SELECT n, l FROM mseg.rights_notices('acme') WITH ORDINALITY x(l, n);
CREATE TABLE n_gym AS SELECT n, l FROM mseg.rights_notices('gymco') WITH ORDINALITY x(l, n);
SELECT jsonb_pretty(l::jsonb) AS manifest FROM n_acme WHERE n = 1;
SELECT l::jsonb->>'type' AS type, l::jsonb->>'purpose' AS purpose, length(l::jsonb->>'pseudonym') AS pseudonym_length,
       (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(l::jsonb) k) AS keys
FROM n_acme WHERE n > 1 AND l::jsonb->>'type' <> 'trailer' ORDER BY 1;
SELECT count(*) AS pending_after FROM mseg.rights_notice_queue;
SELECT controller, sequence, objections, erasures FROM mseg.rights_notices_sent ORDER BY 1, 2;
COPY (SELECT l FROM n_acme ORDER BY n) TO '/tmp/pg_mseg_regress/dl-notice-acme-1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
COPY (SELECT l FROM n_gym ORDER BY n) TO '/tmp/pg_mseg_regress/dl-notice-gym-1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
-- two more files for acme: one naming a pseudonym acme does not know, one empty
INSERT INTO mseg.rights_notice_queue (controller, pseudonym, kind) VALUES ('acme', repeat('A', 43), 'erasure');
COPY (SELECT mseg.rights_notices('acme')) TO '/tmp/pg_mseg_regress/dl-notice-acme-2.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
COPY (SELECT mseg.rights_notices('acme')) TO '/tmp/pg_mseg_regress/dl-notice-acme-3.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT action, object, details - 'sha256' AS details FROM mseg.audit_log WHERE action LIKE 'rights.%' ORDER BY seq;

-- ---------------------------------------------------------------- rights notices: controllers
\c dl_acme
SET client_min_messages = warning;
CREATE TABLE t (n bigserial, line text);
SELECT * FROM try($$SELECT mseg.import_rights_notices(NULL)$$);
-- tampered: a line changed
TRUNCATE st RESTART IDENTITY;
COPY st(line) FROM '/tmp/pg_mseg_regress/dl-notice-acme-1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
INSERT INTO t(line) SELECT line FROM st ORDER BY n;
UPDATE t SET line = replace(line, '"purpose":"direct_marketing"', '"purpose":"research"') WHERE line LIKE '%"objection"%';
SELECT * FROM try($$SELECT mseg.import_rights_notices('t')$$);
-- addressed to another controller
TRUNCATE t RESTART IDENTITY;
COPY t(line) FROM '/tmp/pg_mseg_regress/dl-notice-gym-1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT * FROM try($$SELECT mseg.import_rights_notices('t')$$);
-- out of order (file 3 before 1 and 2)
TRUNCATE t RESTART IDENTITY;
COPY t(line) FROM '/tmp/pg_mseg_regress/dl-notice-acme-3.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT * FROM try($$SELECT mseg.import_rights_notices('t')$$);
-- not a notice file (a twin dump)
TRUNCATE t RESTART IDENTITY;
COPY t(line) FROM '/tmp/pg_mseg_regress/dl-acme-1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT * FROM try($$SELECT mseg.import_rights_notices('t')$$);
\c - regress_dl_app
SELECT * FROM try($$SELECT mseg.import_rights_notices('st')$$);
\c - postgres
SET client_min_messages = warning;
-- applied: the objection recorded (source names the partner), the erased participant excluded
SELECT mseg.import_rights_notices('st') AS applied;
SELECT * FROM try($$SELECT mseg.import_rights_notices('st')$$);
SELECT mseg.is_processable(15, 'direct_marketing') AS processable_15, mseg.is_processable(18, 'direct_marketing') AS processable_18;
SELECT event, purpose, source, evidence FROM mseg.consent_events WHERE source LIKE 'rights notice%';
SELECT partner, subject_key, notice_sequence FROM mseg.partner_exclusions;
TRUNCATE t RESTART IDENTITY;
COPY t(line) FROM '/tmp/pg_mseg_regress/dl-notice-acme-2.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT mseg.import_rights_notices('t') AS applied_unknown_pseudonym;
TRUNCATE t RESTART IDENTITY;
COPY t(line) FROM '/tmp/pg_mseg_regress/dl-notice-acme-3.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT mseg.import_rights_notices('t') AS applied_empty;
SELECT partner, sequence, counts FROM mseg.notice_imports ORDER BY sequence;
SELECT action, object, details - 'sha256' AS details FROM mseg.audit_log WHERE action = 'rights.import' ORDER BY seq;
-- the next delta carries both tombstones
COPY (SELECT mseg.export_variant_twins('trustco', mode => 'delta')) TO '/tmp/pg_mseg_regress/dl-acme-2.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT subject_key, cohort IS NULL AS tombstoned FROM mseg.partner_twins WHERE subject_key IN (15, 18) ORDER BY 1;
-- and no later export releases the erased participant again
COPY (SELECT mseg.export_variant_twins('trustco', mode => 'delta')) TO '/tmp/pg_mseg_regress/dl-acme-3.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT subject_key, cohort IS NULL AS tombstoned FROM mseg.partner_twins WHERE subject_key = 18;
SELECT ok FROM mseg.verify_audit_log();

\c dl_gym
SET client_min_messages = warning;
TRUNCATE st RESTART IDENTITY;
COPY st(line) FROM '/tmp/pg_mseg_regress/dl-notice-gym-1.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT mseg.import_rights_notices('st') AS applied;
COPY (SELECT mseg.export_variant_twins('trustco', mode => 'delta')) TO '/tmp/pg_mseg_regress/dl-gym-3.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SELECT subject_key, cohort IS NULL AS tombstoned FROM mseg.partner_twins WHERE subject_key IN (15, 18) ORDER BY 1;

-- ---------------------------------------------------------------- trusted party: the twins and links go
\c dl_trust
SET client_min_messages = warning;
SELECT mseg.import_variant_twins('/tmp/pg_mseg_regress/dl-acme-2.jsonl') >= 0 AS imported;
SELECT mseg.import_variant_twins('/tmp/pg_mseg_regress/dl-acme-3.jsonl') >= 0 AS imported;
SELECT mseg.import_variant_twins('/tmp/pg_mseg_regress/dl-gym-3.jsonl') >= 0 AS imported;
CREATE TABLE noticed AS
SELECT 'acme' AS controller, l::jsonb->>'pseudonym' AS pseudonym FROM n_acme WHERE l::jsonb->>'type' IN ('objection', 'erasure')
UNION ALL SELECT 'gymco', l::jsonb->>'pseudonym' FROM n_gym WHERE l::jsonb->>'type' IN ('objection', 'erasure');
SELECT count(*) AS noticed,
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM mseg.pool_twins t WHERE t.controller = n.controller AND t.pseudonym = n.pseudonym)) AS twins_left,
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM mseg.pool_links l WHERE l.controller = n.controller AND l.pseudonym = n.pseudonym)) AS links_left
FROM noticed n;
SELECT participant FROM mseg.deliver('everyone', 'final', 'direct_marketing') WHERE participant IN ('15', '18', '115');
SELECT ok FROM mseg.verify_audit_log();

\c mseg_regress
DROP DATABASE dl_acme;
DROP DATABASE dl_gym;
DROP DATABASE dl_trust;
DROP ROLE regress_dl_app, regress_dl_admin, regress_dl_delivery;
