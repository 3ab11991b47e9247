-- The audit log: every change is chained; tampering by anyone, even a superuser, is caught.
SELECT ok, entries > 30 AS many_entries, first_bad_seq, problem FROM mseg.verify_audit_log();
SELECT action, count(*) > 0 AS logged FROM mseg.audit_log GROUP BY action ORDER BY action;
-- entries name subjects by keyed reference only
SELECT count(*) AS entries_with_raw_subject FROM mseg.audit_log WHERE details ? 'subject';
SELECT (SELECT seq FROM mseg.audit_head()) = (SELECT max(seq) FROM mseg.audit_log) AS head_is_last,
       length((SELECT hash FROM mseg.audit_head())) AS hex_length;

-- append-only, for every role including the superuser
SELECT * FROM try($$UPDATE mseg.audit_log SET actor = 'someone' WHERE seq = 1$$);
SELECT * FROM try($$DELETE FROM mseg.audit_log WHERE seq = 1$$);
SELECT * FROM try($$TRUNCATE mseg.audit_log$$);
SELECT * FROM try($$UPDATE mseg.consent_events SET event = 'grant' WHERE event_id = 1$$);
SELECT * FROM try($$DELETE FROM mseg.consent_events$$);
SELECT * FROM try($$TRUNCATE mseg.consent_events$$);

-- a superuser who switches triggers off is still caught
CREATE TEMP TABLE saved AS SELECT * FROM mseg.audit_log WHERE seq IN (5, 6);
SET session_replication_role = replica;
-- 1. an edited entry
UPDATE mseg.audit_log SET details = details || '{"retention": "99 years"}' WHERE seq = 5;
SELECT ok, first_bad_seq, problem FROM mseg.verify_audit_log();
UPDATE mseg.audit_log l SET details = s.details FROM saved s WHERE l.seq = 5 AND s.seq = 5;
SELECT ok, problem FROM mseg.verify_audit_log();
-- 2. a deleted entry
DELETE FROM mseg.audit_log WHERE seq = 6;
SELECT ok, first_bad_seq, problem FROM mseg.verify_audit_log();
INSERT INTO mseg.audit_log SELECT * FROM saved WHERE seq = 6;
-- 3. an entry re-hashed to match its new content: the next link breaks
UPDATE mseg.audit_log SET actor = 'mallory',
       hash = sha256(prev_hash || mseg._audit_content(seq, at, 'mallory', action, object, details)) WHERE seq = 5;
SELECT ok, first_bad_seq, problem FROM mseg.verify_audit_log();
UPDATE mseg.audit_log l SET actor = s.actor, hash = s.hash FROM saved s WHERE l.seq = 5 AND s.seq = 5;
-- 4. entries removed from the end
CREATE TEMP TABLE tail AS SELECT * FROM mseg.audit_log WHERE seq > (SELECT max(seq) - 2 FROM mseg.audit_log);
DELETE FROM mseg.audit_log WHERE seq IN (SELECT seq FROM tail);
SELECT ok, first_bad_seq > 1 AS after_the_start, problem ~ 'entries removed from the end' AS tail_detected FROM mseg.verify_audit_log();
INSERT INTO mseg.audit_log SELECT * FROM tail;
SET session_replication_role = origin;
SELECT ok, problem FROM mseg.verify_audit_log();

-- The ledger and the current state are inside the chain: a superuser's edit of either is caught.
-- (an objection and a restriction to tamper with)
SELECT mseg.object(21, 'direct_marketing') > 0 AS objected, mseg.restrict(22) > 0 AS restricted;
SELECT mseg.audit_anchor() AS anchor \gset
SELECT a->>'format' AS format, (a->>'seq')::int8 = (SELECT max(seq) FROM mseg.audit_log) AS anchors_the_head,
       length(a->>'signature') AS signature_length
FROM (SELECT :'anchor'::jsonb AS a) x;
SELECT ok, problem FROM mseg.verify_audit_log(:'anchor');
SET session_replication_role = replica;
-- 5. a ledger event edited (its audit entry keeps the event's hash)
CREATE TEMP TABLE saved_event AS SELECT * FROM mseg.consent_events ORDER BY event_id LIMIT 1;
UPDATE mseg.consent_events SET source = 'forged' WHERE event_id = (SELECT event_id FROM saved_event);
SELECT ok, problem ~ 'differs from its audit entry' AS ledger_edit_detected FROM mseg.verify_audit_log();
UPDATE mseg.consent_events e SET source = s.source FROM saved_event s WHERE e.event_id = s.event_id;
-- 6. a ledger event deleted, 7. one inserted without its entry
DELETE FROM mseg.consent_events WHERE event_id = (SELECT event_id FROM saved_event);
SELECT ok, problem ~ 'is missing \(deleted\)' AS ledger_delete_detected FROM mseg.verify_audit_log();
INSERT INTO mseg.consent_events SELECT * FROM saved_event;
INSERT INTO mseg.consent_events (event_id, subject_ref, purpose, event, legal_basis, actor, recorded_at)
SELECT 999999, subject_ref, purpose, 'grant', 'consent', 'mallory', now() FROM saved_event;
SELECT ok, problem ~ 'has no audit entry' AS ledger_insert_detected FROM mseg.verify_audit_log();
DELETE FROM mseg.consent_events WHERE event_id = 999999;
SELECT ok, problem FROM mseg.verify_audit_log();
-- 8. the current state edited: an objection quietly lifted, a withdrawal turned back into consent
CREATE TEMP TABLE saved_state AS SELECT * FROM mseg.legal_basis_state;
UPDATE mseg.legal_basis_state SET objected_at = NULL WHERE objected_at IS NOT NULL;
SELECT ok, problem ~ 'differs from its ledger' AS objection_lift_detected FROM mseg.verify_audit_log();
DELETE FROM mseg.legal_basis_state; INSERT INTO mseg.legal_basis_state SELECT * FROM saved_state;
UPDATE mseg.legal_basis_state SET consent_basis = 'consent', withdrawn_at = NULL WHERE withdrawn_at IS NOT NULL;
SELECT ok, problem ~ 'differs from its ledger' AS withdrawal_undone_detected FROM mseg.verify_audit_log();
DELETE FROM mseg.legal_basis_state; INSERT INTO mseg.legal_basis_state SELECT * FROM saved_state;
-- 9. a state row deleted (an objection forgotten): missing
DELETE FROM mseg.legal_basis_state WHERE objected_at IS NOT NULL;
SELECT ok, problem ~ 'is missing \(deleted\)' AS state_delete_detected FROM mseg.verify_audit_log();
DELETE FROM mseg.legal_basis_state; INSERT INTO mseg.legal_basis_state SELECT * FROM saved_state;
-- 10. a restriction lifted in place
CREATE TEMP TABLE saved_subjects AS SELECT * FROM mseg.subject_state;
UPDATE mseg.subject_state SET restricted_at = NULL WHERE restricted_at IS NOT NULL;
SELECT ok, problem ~ 'restriction state' AS restriction_edit_detected FROM mseg.verify_audit_log();
DELETE FROM mseg.subject_state; INSERT INTO mseg.subject_state SELECT * FROM saved_subjects;
SELECT ok, problem FROM mseg.verify_audit_log();

-- Against an anchor someone else keeps, a superuser cannot rewrite history undetected:
CREATE TEMP TABLE whole_log AS SELECT * FROM mseg.audit_log;
CREATE TEMP TABLE whole_head AS SELECT * FROM mseg.audit_head;
-- 11. an edit with the whole chain re-hashed and the head moved: the chain verifies, the anchor does not
DO $$
DECLARE r record; prev bytea := '\x'; h bytea;
BEGIN
    FOR r IN SELECT * FROM mseg.audit_log ORDER BY seq LOOP
        IF r.seq = 2 THEN r.actor := 'mallory'; END IF;
        h := sha256(prev || mseg._audit_content(r.seq, r.at, r.actor, r.action, r.object, r.details));
        UPDATE mseg.audit_log SET actor = r.actor, prev_hash = prev, hash = h WHERE seq = r.seq;
        prev := h;
    END LOOP;
    UPDATE mseg.audit_head SET hash = prev;
END $$;
SELECT ok AS chain_alone_ok FROM mseg.verify_audit_log();
SELECT ok, problem ~ 'differs from the anchor' AS rehash_detected FROM mseg.verify_audit_log(:'anchor');
DELETE FROM mseg.audit_log; INSERT INTO mseg.audit_log SELECT * FROM whole_log;
DELETE FROM mseg.audit_head; INSERT INTO mseg.audit_head SELECT * FROM whole_head;
-- 12. the tail cut back to before the anchor, head moved back with it
DELETE FROM mseg.audit_log WHERE seq > 3;
UPDATE mseg.audit_head SET seq = 3, hash = (SELECT hash FROM mseg.audit_log WHERE seq = 3);
SELECT ok, problem ~ 'no longer holds entry' AS truncation_detected FROM mseg.verify_audit_log(:'anchor');
-- 13. everything wiped
DELETE FROM mseg.audit_log; DELETE FROM mseg.audit_head;
SELECT ok, problem ~ 'no longer holds entry' AS wipe_detected FROM mseg.verify_audit_log(:'anchor');
DELETE FROM mseg.audit_log; INSERT INTO mseg.audit_log SELECT * FROM whole_log;
DELETE FROM mseg.audit_head; INSERT INTO mseg.audit_head SELECT * FROM whole_head;
SET session_replication_role = origin;
-- 14. an anchor that was tampered with, or made up, is refused
SELECT ok, problem FROM mseg.verify_audit_log(jsonb_set(:'anchor'::jsonb, '{seq}', '1'));
SELECT ok, problem FROM mseg.verify_audit_log('{"format": "mseg-audit-anchor/1", "controller": "x", "seq": 1, "hash": "00", "at": "", "signature": "AAAA"}');
SELECT ok, problem FROM mseg.verify_audit_log(:'anchor');
