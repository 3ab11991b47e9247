-- Attack class 6: tampering with the audit chain, the ledger and the legal-basis state.
-- The hash chain alone cannot catch a superuser, who can edit an entry and recompute every hash
-- after it, cut the tail and move the head back, or wipe everything. What catches them is an
-- anchor signed with the controller's Ed25519 key (derived from the master key, which SQL never
-- sees) and kept outside the database (e.g. carried in every dump manifest):
--     mseg.audit_anchor() → jsonb                 a signed (seq, hash) of the chain's head
--     mseg.verify_audit_log(anchor jsonb)         the chain still leads to the anchored entry
-- (the names are the ones the fix is expected to use; atk_anchor/atk_verify below report
-- 'no anchor API' while they do not exist). Each tamper (A1…) runs as superuser in a transaction
-- that is rolled back, and must be reported by verify_audit_log() or by the anchor check.
\getenv abs_srcdir PG_ABS_SRCDIR
\set atkdb atk_audit_tamper
\set setup :abs_srcdir '/sql/attack_setup.inc'
\i :setup

CREATE FUNCTION public.atk_anchor() RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE a jsonb;
BEGIN
    EXECUTE 'SELECT mseg.audit_anchor()' INTO a;
    RETURN a;
EXCEPTION WHEN undefined_function THEN RETURN NULL;
END $$;
CREATE FUNCTION public.atk_verify(anchor jsonb) RETURNS TABLE (ok boolean, problem text) LANGUAGE plpgsql AS $$
BEGIN
    IF anchor IS NULL THEN
        RETURN QUERY SELECT NULL::boolean, 'no anchor API'::text;
        RETURN;
    END IF;
    RETURN QUERY EXECUTE 'SELECT v.ok, v.problem FROM mseg.verify_audit_log($1) v' USING anchor;
EXCEPTION WHEN OTHERS THEN
    RETURN QUERY SELECT false, 'refused: ' || SQLERRM;
END $$;
-- Recompute every hash from entry n on and move the head, as _audit would have written them.
CREATE FUNCTION public.atk_rehash(n bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r record; prev bytea;
BEGIN
    SELECT l.hash INTO prev FROM mseg.audit_log l WHERE l.seq = n - 1;
    prev := COALESCE(prev, '\x'::bytea);
    FOR r IN SELECT * FROM mseg.audit_log l WHERE l.seq >= n ORDER BY l.seq LOOP
        UPDATE mseg.audit_log l SET prev_hash = prev,
               hash = sha256(prev || mseg._audit_content(r.seq, r.at, r.actor, r.action, r.object, r.details))
         WHERE l.seq = r.seq RETURNING l.hash INTO prev;
    END LOOP;
    UPDATE mseg.audit_head SET seq = COALESCE((SELECT max(seq) FROM mseg.audit_log), 0), hash = prev;
END $$;
CREATE TABLE public.atk_anchors (tag text PRIMARY KEY, anchor jsonb);

-- History: choices, an erasure, an export whose manifest carries the anchor.
\c - atk_app
SELECT mseg.grant_consent(1, 'mkt', 'v1', 'web') IS NOT NULL AS granted;
SELECT mseg.withdraw_consent(1, 'mkt') IS NOT NULL AS withdrawn;
SELECT mseg.object(2, 'mkt') IS NOT NULL AS objected;
\c - atk_admin
SELECT mseg.forget(3)->>'mode' AS erased;
SELECT mseg.add_partner('p1', '{mkt}', 2);
CREATE TABLE atk_admin.dump (n bigserial, line text);
INSERT INTO atk_admin.dump (line) SELECT * FROM mseg.export_variant_twins('p1');
SELECT mseg.grant_consent(4, 'mkt') IS NOT NULL AS granted_after_export;

\c - postgres
INSERT INTO atk_anchors VALUES ('now', atk_anchor());
INSERT INTO atk_anchors SELECT 'manifest', (line::jsonb)->'audit_anchor' FROM atk_admin.dump WHERE n = 1;
SELECT count(*) AS entries, max(seq) AS last_seq FROM mseg.audit_log;
SELECT max(seq) AS chain_length FROM mseg.audit_log \gset
-- the untouched chain verifies, with and without either anchor
SELECT ok, problem FROM mseg.verify_audit_log();
SELECT * FROM atk_verify((SELECT anchor FROM atk_anchors WHERE tag = 'now'));
SELECT * FROM atk_verify((SELECT anchor FROM atk_anchors WHERE tag = 'manifest'));

-- A1 (issue): edit an entry, recompute the chain after it, move the head.
BEGIN;
SET LOCAL session_replication_role = replica;   -- the append-only triggers do not fire
UPDATE mseg.audit_log SET details = details || '{"forged": true}' WHERE seq = 5;
SELECT atk_rehash(5);
SELECT 'A1' AS tamper, ok, problem FROM mseg.verify_audit_log();
SELECT 'A1' AS tamper, * FROM atk_verify((SELECT anchor FROM atk_anchors WHERE tag = 'now'));
SELECT 'A1' AS tamper, * FROM atk_verify((SELECT anchor FROM atk_anchors WHERE tag = 'manifest'));
ROLLBACK;
-- A2 (issue): delete the last 3 entries and move the head back.
BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM mseg.audit_log WHERE seq > (SELECT max(seq) - 3 FROM mseg.audit_log);
UPDATE mseg.audit_head SET seq = l.seq, hash = l.hash FROM (SELECT seq, hash FROM mseg.audit_log ORDER BY seq DESC LIMIT 1) l;
SELECT 'A2' AS tamper, ok, problem FROM mseg.verify_audit_log();
SELECT 'A2' AS tamper, * FROM atk_verify((SELECT anchor FROM atk_anchors WHERE tag = 'now'));
ROLLBACK;
-- A3 (issue): wipe the log and the head.
BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM mseg.audit_log;
DELETE FROM mseg.audit_head;
SELECT 'A3' AS tamper, ok, problem FROM mseg.verify_audit_log();
SELECT 'A3' AS tamper, * FROM atk_verify((SELECT anchor FROM atk_anchors WHERE tag = 'now'));
ROLLBACK;
-- A4 (issue): edit the ledger: subject 1's withdrawal becomes a grant.
BEGIN;
SET LOCAL session_replication_role = replica;
UPDATE mseg.consent_events SET event = 'grant' WHERE event = 'withdraw';
SELECT 'A4' AS tamper, ok, problem FROM mseg.verify_audit_log();
SELECT 'A4' AS tamper, * FROM atk_verify((SELECT anchor FROM atk_anchors WHERE tag = 'now'));
ROLLBACK;
-- A5 (issue): edit the current state: subject 2's objection disappears, subject 1 is granted again.
BEGIN;
UPDATE mseg.legal_basis_state SET objected_at = NULL WHERE subject_key = 2;
UPDATE mseg.legal_basis_state SET consent_basis = 'consent', withdrawn_at = NULL, granted_at = now() WHERE subject_key = 1;
SELECT 'A5' AS tamper, ok, problem FROM mseg.verify_audit_log();
SELECT 'A5' AS tamper, * FROM atk_verify((SELECT anchor FROM atk_anchors WHERE tag = 'now'));
ROLLBACK;
-- A6 (invented): delete a ledger event (the objection) with the append-only trigger off.
BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM mseg.consent_events WHERE event = 'object';
SELECT 'A6' AS tamper, ok, problem FROM mseg.verify_audit_log();
SELECT 'A6' AS tamper, * FROM atk_verify((SELECT anchor FROM atk_anchors WHERE tag = 'now'));
ROLLBACK;
-- A7 (invented): erase the proof of an erasure (mseg.erasures and the subject's state).
BEGIN;
DELETE FROM mseg.erasures;
SELECT 'A7' AS tamper, ok, problem FROM mseg.verify_audit_log();
SELECT 'A7' AS tamper, * FROM atk_verify((SELECT anchor FROM atk_anchors WHERE tag = 'now'));
ROLLBACK;
-- A8 (invented): rebuild a whole new chain of the same length (wipe, then append through _audit).
BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM mseg.audit_log;
DELETE FROM mseg.audit_head;
SELECT count(mseg._audit('forged', NULL, '{}')) AS forged_entries FROM generate_series(1, :chain_length);
SELECT 'A8' AS tamper, ok, problem FROM mseg.verify_audit_log();
SELECT 'A8' AS tamper, * FROM atk_verify((SELECT anchor FROM atk_anchors WHERE tag = 'now'));
ROLLBACK;
-- A9 (invented): an anchor edited to point at another entry or hash, or with another signature.
SELECT 'A9 seq' AS tamper, * FROM atk_verify((SELECT anchor || jsonb_build_object('seq', (anchor->>'seq')::int - 1) FROM atk_anchors WHERE tag = 'now'));
SELECT 'A9 hash' AS tamper, * FROM atk_verify((SELECT anchor || jsonb_build_object('hash', repeat('0', 64)) FROM atk_anchors WHERE tag = 'now'));
SELECT 'A9 signature' AS tamper, * FROM atk_verify((SELECT anchor || jsonb_build_object('signature', encode(decode(repeat('00', 64), 'hex'), 'base64')) FROM atk_anchors WHERE tag = 'now'));
SELECT 'A9 garbage' AS tamper, * FROM atk_verify('{"seq": "x"}');
-- A10 (invented): the anchor carried in the dump's manifest catches an edit and re-hash made
-- after the export.
BEGIN;
SET LOCAL session_replication_role = replica;
UPDATE mseg.audit_log SET actor = 'someone_else' WHERE seq = 2;
SELECT atk_rehash(2);
SELECT 'A10' AS tamper, ok, problem FROM mseg.verify_audit_log();
SELECT 'A10' AS tamper, * FROM atk_verify((SELECT anchor FROM atk_anchors WHERE tag = 'manifest'));
ROLLBACK;
-- A11 (limit, documented): an entry appended after the last anchor with a correct hash is not
-- caught by that anchor (it could be a real later entry); the next anchor signs it. Expected ok.
BEGIN;
SELECT mseg._audit('forged.append', NULL, '{}') IS NOT NULL AS appended;
SELECT 'A11' AS tamper, ok, problem FROM mseg.verify_audit_log();
SELECT 'A11' AS tamper, * FROM atk_verify((SELECT anchor FROM atk_anchors WHERE tag = 'now'));
ROLLBACK;

-- A12 (control): no other role writes the audit tables, the ledger or the state, or appends to
-- the chain or signs an anchor.
\c - atk_admin
SELECT * FROM atk($$UPDATE mseg.audit_log SET actor = 'x'$$);
SELECT * FROM atk($$DELETE FROM mseg.audit_head$$);
SELECT * FROM atk($$UPDATE mseg.consent_events SET event = 'grant'$$);
SELECT * FROM atk($$DELETE FROM mseg.legal_basis_state$$);
SELECT * FROM atk($$SELECT mseg._audit('forged', NULL, '{}')$$);
SELECT * FROM atk($$SELECT mseg._audit_content(1, now(), 'x', 'y', NULL, '{}') IS NOT NULL$$);
\c - atk_app
SELECT * FROM atk($$SELECT * FROM mseg.audit_log$$);
SELECT * FROM atk($$SELECT mseg._audit('forged', NULL, '{}')$$);
SELECT * FROM atk($$SELECT mseg.audit_anchor() IS NOT NULL$$);
\c - atk_export
SELECT * FROM atk($$SELECT mseg._audit('forged', NULL, '{}')$$);
SELECT * FROM atk($$SELECT mseg.audit_anchor() IS NOT NULL$$);
SELECT * FROM atk_check();

-- After every rollback the chain is intact.
\c - postgres
SELECT ok, problem FROM mseg.verify_audit_log();
SELECT * FROM atk_verify((SELECT anchor FROM atk_anchors WHERE tag = 'now'));
SELECT * FROM atk_check();

\c mseg_regress postgres
DROP DATABASE atk_audit_tamper WITH (FORCE);
DROP ROLE atk_app, atk_export, atk_admin, atk_dpo;
