-- pg_mseg audit log: append-only, hash-chained.
--
-- Entry n carries hash_n = SHA-256(hash_{n-1} || content_n), where content_n is the canonical
-- JSON text (jsonb output: keys sorted, no whitespace choices) of seq, time in microseconds since
-- the Unix epoch, actor, action, object and details. seq has no gaps (it is assigned under the
-- row lock of mseg.audit_head, not by a sequence), so a deleted entry is a gap, an edited entry a
-- wrong hash, a deleted tail a head that no longer matches. The head lock also makes the chain
-- order the commit order; in REPEATABLE READ/SERIALIZABLE two concurrent audited writes make the
-- second fail with a serialization error, to be retried.

CREATE TABLE mseg.audit_log (
    seq       pg_catalog.int8 PRIMARY KEY,
    at        pg_catalog.timestamptz NOT NULL,
    actor     pg_catalog.text NOT NULL,
    action    pg_catalog.text NOT NULL,
    object    pg_catalog.text,
    details   pg_catalog.jsonb NOT NULL DEFAULT '{}',
    prev_hash pg_catalog.bytea NOT NULL,
    hash      pg_catalog.bytea NOT NULL
);
COMMENT ON TABLE mseg.audit_log IS 'pg_mseg hash-chained audit log; verify with mseg.verify_audit_log()';

CREATE TABLE mseg.audit_head (
    only_row pg_catalog.bool PRIMARY KEY DEFAULT true CHECK (only_row),
    seq      pg_catalog.int8 NOT NULL,
    hash     pg_catalog.bytea NOT NULL
);
-- (its single row is created by the first append, so that pg_restore can bring back the dumped one)

SELECT pg_catalog.pg_extension_config_dump('mseg.audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.audit_head', '');

-- The canonical content of an entry; the same expression appends and verifies.
CREATE FUNCTION mseg._audit_content(p_seq pg_catalog.int8, p_at pg_catalog.timestamptz, p_actor pg_catalog.text,
                                    p_action pg_catalog.text, p_object pg_catalog.text, p_details pg_catalog.jsonb)
RETURNS pg_catalog.bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.convert_to(pg_catalog.jsonb_build_object(
        'seq', p_seq,
        'at_us', (EXTRACT(epoch FROM p_at) OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8,
        'actor', p_actor, 'action', p_action, 'object', p_object, 'details', p_details)::pg_catalog.text, 'UTF8')
$$;

-- Lock the chain head (creating it on first use); every audited writer goes through here.
CREATE FUNCTION mseg._lock_audit_head()
RETURNS mseg.audit_head
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_head mseg.audit_head;
BEGIN
    SELECT * INTO v_head FROM mseg.audit_head FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO mseg.audit_head VALUES (true, 0, '\x'::pg_catalog.bytea) ON CONFLICT DO NOTHING;
        SELECT * INTO STRICT v_head FROM mseg.audit_head FOR UPDATE;
    END IF;
    RETURN v_head;
END
$$;

-- Append one entry. Internal: called by the extension's own functions only.
CREATE FUNCTION mseg._audit(p_action pg_catalog.text, p_object pg_catalog.text, p_details pg_catalog.jsonb)
RETURNS pg_catalog.int8
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_head mseg.audit_head;
    v_at pg_catalog.timestamptz;
    v_details pg_catalog.jsonb := COALESCE(p_details, '{}'::pg_catalog.jsonb);
    v_hash pg_catalog.bytea;
BEGIN
    v_head := mseg._lock_audit_head();
    v_at := pg_catalog.clock_timestamp();
    v_hash := pg_catalog.sha256(v_head.hash OPERATOR(pg_catalog.||)
        mseg._audit_content(v_head.seq OPERATOR(pg_catalog.+) 1, v_at, SESSION_USER::pg_catalog.text, p_action, p_object, v_details));
    INSERT INTO mseg.audit_log (seq, at, actor, action, object, details, prev_hash, hash)
    VALUES (v_head.seq OPERATOR(pg_catalog.+) 1, v_at, SESSION_USER, p_action, p_object, v_details, v_head.hash, v_hash);
    UPDATE mseg.audit_head SET seq = v_head.seq OPERATOR(pg_catalog.+) 1, hash = v_hash;
    RETURN v_head.seq OPERATOR(pg_catalog.+) 1;
END
$$;

-- Append-only: refuse UPDATE, DELETE and TRUNCATE, for every role (a superuser who disables the
-- trigger is still caught by verify_audit_log()).
CREATE FUNCTION mseg._refuse_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'MS046',
        MESSAGE = pg_catalog.format('%s.%s is append-only', TG_TABLE_SCHEMA, TG_TABLE_NAME),
        DETAIL = pg_catalog.format('%s is not allowed on it.', TG_OP),
        HINT = 'Record a new event instead of changing history.';
END
$$;
CREATE TRIGGER mseg_append_only BEFORE UPDATE OR DELETE ON mseg.audit_log
    FOR EACH ROW EXECUTE FUNCTION mseg._refuse_change();
CREATE TRIGGER mseg_append_only_truncate BEFORE TRUNCATE ON mseg.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION mseg._refuse_change();

-- Check the whole chain, the ledger and the current state; with an anchor (mseg.audit_anchor(),
-- as a partner or auditor kept it), also that the log still holds the anchored entry unchanged.
-- Returns the first problem, or ok. What this can and cannot detect: docs/security.md.
CREATE FUNCTION mseg.verify_audit_log(anchor pg_catalog.jsonb DEFAULT NULL,
    OUT ok pg_catalog.bool, OUT entries pg_catalog.int8, OUT first_bad_seq pg_catalog.int8, OUT problem pg_catalog.text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_head mseg.audit_head;
    v_last mseg.audit_log;
    v_claim record;
    v_hash pg_catalog.bytea;
BEGIN
    SELECT pg_catalog.count(*) INTO entries FROM mseg.audit_log;
    -- 1. the chain: no gaps, every link and every entry's content
    SELECT c.seq, c.problem INTO first_bad_seq, problem FROM (
        SELECT l.seq,
               CASE
                 WHEN l.seq OPERATOR(pg_catalog.<>) COALESCE(pg_catalog.lag(l.seq) OVER w OPERATOR(pg_catalog.+) 1, 1)
                   THEN pg_catalog.format('entries %s to %s are missing',
                            COALESCE(pg_catalog.lag(l.seq) OVER w OPERATOR(pg_catalog.+) 1, 1), l.seq OPERATOR(pg_catalog.-) 1)
                 WHEN l.prev_hash OPERATOR(pg_catalog.<>) COALESCE(pg_catalog.lag(l.hash) OVER w, '\x'::pg_catalog.bytea)
                   THEN 'prev_hash does not match the previous entry''s hash'
                 WHEN l.hash OPERATOR(pg_catalog.<>) pg_catalog.sha256(l.prev_hash OPERATOR(pg_catalog.||)
                          mseg._audit_content(l.seq, l.at, l.actor, l.action, l.object, l.details))
                   THEN 'the entry''s content does not match its hash (edited)'
               END AS problem
        FROM mseg.audit_log l
        WINDOW w AS (ORDER BY l.seq)
    ) c WHERE c.problem IS NOT NULL ORDER BY c.seq LIMIT 1;
    -- 2. the tail against the head
    IF first_bad_seq IS NULL THEN
        SELECT * INTO v_head FROM mseg.audit_head;
        v_head.seq := COALESCE(v_head.seq, 0);
        v_head.hash := COALESCE(v_head.hash, '\x'::pg_catalog.bytea);
        SELECT * INTO v_last FROM mseg.audit_log ORDER BY seq DESC LIMIT 1;
        IF COALESCE(v_last.seq, 0) OPERATOR(pg_catalog.<>) v_head.seq
           OR COALESCE(v_last.hash, '\x'::pg_catalog.bytea) OPERATOR(pg_catalog.<>) v_head.hash THEN
            first_bad_seq := COALESCE(v_last.seq, 0) OPERATOR(pg_catalog.+) 1;
            problem := pg_catalog.format('the log ends at entry %s but its head records entry %s (entries removed from the end)',
                                         COALESCE(v_last.seq, 0), v_head.seq);
        END IF;
    END IF;
    -- 3. the anchor someone outside kept: its entry must still be there, unchanged
    IF problem IS NULL AND anchor IS NOT NULL THEN
        SELECT * INTO v_claim FROM mseg._anchor_claim(anchor);
        IF v_claim.problem IS NOT NULL THEN
            problem := v_claim.problem;
        ELSIF v_claim.seq OPERATOR(pg_catalog.>) 0 THEN
            SELECT l.hash INTO v_hash FROM mseg.audit_log l WHERE l.seq OPERATOR(pg_catalog.=) v_claim.seq;
            IF v_hash IS NULL THEN
                first_bad_seq := v_claim.seq;
                problem := pg_catalog.format('the log no longer holds entry %s, which the anchor records (the log was wiped or truncated)', v_claim.seq);
            ELSIF pg_catalog.encode(v_hash, 'hex') OPERATOR(pg_catalog.<>) v_claim.hash THEN
                first_bad_seq := v_claim.seq;
                problem := pg_catalog.format('entry %s differs from the anchor (the chain was rewritten up to it)', v_claim.seq);
            END IF;
        END IF;
    END IF;
    -- 4. the ledger inside the chain: every event has its audit entry, with the same content
    IF problem IS NULL THEN
        SELECT x.seq, x.problem INTO first_bad_seq, problem FROM (
            SELECT l.seq, e.event_id,
                   CASE WHEN l.seq IS NULL
                          THEN pg_catalog.format('ledger event %s has no audit entry (inserted outside pg_mseg)', e.event_id)
                        ELSE pg_catalog.format('ledger event %s differs from its audit entry (edited)', e.event_id) END AS problem
            FROM mseg.consent_events e
            LEFT JOIN mseg.audit_log l
                   ON l.action OPERATOR(pg_catalog.~~) 'consent.%'
                  AND (l.details OPERATOR(pg_catalog.->>) 'event_id')::pg_catalog.int8 OPERATOR(pg_catalog.=) e.event_id
            WHERE l.seq IS NULL
               OR l.action OPERATOR(pg_catalog.<>) ('consent.' OPERATOR(pg_catalog.||) e.event)
               OR l.object IS DISTINCT FROM e.purpose
               OR (l.details OPERATOR(pg_catalog.->>) 'subject_ref') IS DISTINCT FROM e.subject_ref
               OR (l.details OPERATOR(pg_catalog.?) 'event_sha256'
                   AND (l.details OPERATOR(pg_catalog.->>) 'event_sha256')
                       OPERATOR(pg_catalog.<>) pg_catalog.encode(pg_catalog.sha256(mseg._event_content(e)), 'hex'))
            UNION ALL
            SELECT l.seq, (l.details OPERATOR(pg_catalog.->>) 'event_id')::pg_catalog.int8,
                   pg_catalog.format('ledger event %s recorded by entry %s is missing (deleted)', l.details OPERATOR(pg_catalog.->>) 'event_id', l.seq)
            FROM mseg.audit_log l
            WHERE l.action OPERATOR(pg_catalog.~~) 'consent.%'
              AND NOT EXISTS (SELECT 1 FROM mseg.consent_events e
                              WHERE e.event_id OPERATOR(pg_catalog.=) (l.details OPERATOR(pg_catalog.->>) 'event_id')::pg_catalog.int8)
        ) x ORDER BY x.event_id LIMIT 1;
    END IF;
    -- 5. every erasure proof belongs to its ledger event, and every erasure event has its proof
    IF problem IS NULL THEN
        SELECT x.problem INTO problem FROM (
            SELECT e.event_id, pg_catalog.format('the erasure proof of ledger event %s is missing or altered', e.event_id) AS problem
            FROM mseg.consent_events e
            WHERE e.event OPERATOR(pg_catalog.=) 'erase'
              AND NOT EXISTS (SELECT 1 FROM mseg.erasures r
                              WHERE r.event_id OPERATOR(pg_catalog.=) e.event_id AND r.subject_ref OPERATOR(pg_catalog.=) e.subject_ref
                                AND r.mode IS NOT DISTINCT FROM (e.evidence OPERATOR(pg_catalog.->>) 'mode')
                                AND r.erased_at OPERATOR(pg_catalog.=) e.recorded_at)
            UNION ALL
            SELECT r.event_id, pg_catalog.format('the erasure proof citing ledger event %s has no such erasure in the ledger', r.event_id)
            FROM mseg.erasures r
            WHERE NOT EXISTS (SELECT 1 FROM mseg.consent_events e
                              WHERE e.event_id OPERATOR(pg_catalog.=) r.event_id AND e.event OPERATOR(pg_catalog.=) 'erase'
                                AND e.subject_ref OPERATOR(pg_catalog.=) r.subject_ref)
        ) x ORDER BY x.event_id LIMIT 1;
    END IF;
    -- 6. the current state is what the ledger says
    IF problem IS NULL THEN
        problem := mseg._state_problem();
    END IF;
    ok := problem IS NULL;
    IF ok THEN problem := 'OK'; END IF;
END
$$;

-- The latest hash, to anchor outside the database (e.g. in export manifests or a ticket).
CREATE FUNCTION mseg.audit_head(OUT seq pg_catalog.int8, OUT hash pg_catalog.text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(h.seq, 0), pg_catalog.encode(COALESCE(h.hash, '\x'::pg_catalog.bytea), 'hex')
    FROM (SELECT 1) one LEFT JOIN mseg.audit_head h ON true
$$;
