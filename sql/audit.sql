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

-- Check the whole chain; returns the first problem, or ok.
CREATE FUNCTION mseg.verify_audit_log(
    OUT ok pg_catalog.bool, OUT entries pg_catalog.int8, OUT first_bad_seq pg_catalog.int8, OUT problem pg_catalog.text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_head mseg.audit_head;
    v_last mseg.audit_log;
BEGIN
    SELECT pg_catalog.count(*) INTO entries FROM mseg.audit_log;
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
    ok := first_bad_seq IS NULL;
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
