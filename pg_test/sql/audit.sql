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
