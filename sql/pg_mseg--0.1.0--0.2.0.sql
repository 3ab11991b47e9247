-- pg_mseg 0.1.0 -> 0.2.0 (ALTER EXTENSION pg_mseg UPDATE; runs with search_path = mseg, pg_temp).
-- Not released yet: this script grows with every change to the schema until 0.2.0 is released
-- (scripts/release freeze 0.2.0), and is frozen from then on.
--
-- How to keep it right: tests/upgrade.sh installs 0.1.0 from its tag, makes real state, runs this
-- script and prints the difference between the upgraded extension and a fresh 0.2.0 install, one
-- object fact a line (tests/upgrade/catalog.sql: definitions, columns, constraints, indexes,
-- triggers, policies, privileges, initial privileges, comments, configuration tables; and
-- tests/upgrade/roles.sql: the mseg_* roles). Every "-" line is something a fresh install has
-- and this script does not make yet. Run it alone with
--     tests/upgrade.sh 0.1.0        (as root; inside devns <name> while developing)
-- Write each change the way the fresh install writes it (same names, same qualified SQL): a
-- changed function is CREATE OR REPLACE (its C symbol name included: MODULE_PATHNAME);
-- a new column goes last in the fresh CREATE TABLE too, so both orders agree; new rows of the
-- internal configuration (mseg.* domains) are inserted here as the install scripts insert them;
-- roles are created IF NOT EXISTS, as sql/bootstrap.sql does.
--
-- Changes from 0.1.0 to 0.2.0, in the order they landed (a function changed by several of them is
-- given once, in its 0.2.0 form, under the last; privileges of every new or changed object last,
-- in finalize.sql's order):
--   1. no user table touched with elevated rights: role mseg_upkeep, the ledger inside the audit
--      chain, audit anchors, classify and the subject look-ups in Rust
--   2. Variant Twins in cohorts (mseg-vt/2); the twins partners hold from mseg-vt/1 migrated
--   3. segment sizes only as published, with noise
--   4. k-views computed inside mseg.kanon_view_rows
--   5. replicas and copies: exports refused on an unaccepted copy of the database
--   6. partitioned subject tables and sources: partitions taken in by event triggers
--   7. the six consent choices share one skeleton, mseg._choose
--   8. subject keys of any usual type (uuid, text, varchar) mapped to subject ids
--   9. keys without a subject id are locked by hash bucket
--  10. privileges
--  11. trusted party: OPRF linkage and persons in the pooled sizes (with its own privileges)
--  13. trusted party: participants, delivery, rights notices (with its own privileges)

-- 1. no user table touched with elevated rights: mseg_upkeep, ledger in the chain, anchors, Rust look-ups
DO $upkeep$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'mseg_upkeep') THEN
        CREATE ROLE mseg_upkeep NOLOGIN NOINHERIT BYPASSRLS;
    ELSIF EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) m.roleid
                  WHERE r.rolname OPERATOR(pg_catalog.=) 'mseg_upkeep')
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) 'mseg_upkeep'
                  AND (r.rolsuper OR r.rolcanlogin)) THEN
        RAISE EXCEPTION USING ERRCODE = 'MS020',
            MESSAGE = 'role mseg_upkeep exists with members, a login or superuser rights',
            DETAIL = 'pg_mseg reads user tables as mseg_upkeep; nobody may act as it.',
            HINT = 'Revoke mseg_upkeep from every role and make it NOLOGIN NOSUPERUSER (or drop it) before ALTER EXTENSION pg_mseg UPDATE.';
    ELSE
        ALTER ROLE mseg_upkeep NOLOGIN NOINHERIT NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS;
    END IF;
END
$upkeep$;

CREATE TABLE mseg.controller_anchors (
    controller    pg_catalog.text NOT NULL,
    dump_sequence pg_catalog.int8 NOT NULL,
    anchor        pg_catalog.jsonb NOT NULL,
    received_at   pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (controller, dump_sequence)
);
SELECT pg_catalog.pg_extension_config_dump('mseg.controller_anchors', '');
DROP FUNCTION mseg._check_hierarchy(pg_catalog.text);   -- classify (now in Rust) checks the hierarchy itself
CREATE OR REPLACE FUNCTION mseg.classify(
    "table" regclass,
    "column_name" TEXT,
    "class" TEXT,
    "hierarchy" TEXT DEFAULT NULL
) RETURNS TEXT
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'classify_wrapper';

CREATE FUNCTION mseg._subject_exists(
    "subject" TEXT
) RETURNS bool
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'subject_exists_wrapper';

CREATE FUNCTION mseg._erase_subject_row(
    "subject" TEXT,
    "mode" TEXT,
    "columns" TEXT[] DEFAULT NULL
) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'erase_subject_row_wrapper';

CREATE FUNCTION mseg._event_content(e mseg.consent_events)
RETURNS pg_catalog.bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.convert_to(pg_catalog.jsonb_build_object(
        'event_id', e.event_id, 'subject_ref', e.subject_ref, 'purpose', e.purpose, 'event', e.event,
        'legal_basis', e.legal_basis, 'notice_version', e.notice_version, 'source', e.source,
        'evidence', e.evidence, 'actor', e.actor,
        'recorded_at_us', (EXTRACT(epoch FROM e.recorded_at) OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8)::pg_catalog.text, 'UTF8')
$$;

CREATE OR REPLACE FUNCTION mseg._record(p_ref pg_catalog.text, p_purpose pg_catalog.text, p_event pg_catalog.text,
                             p_basis pg_catalog.text, p_notice pg_catalog.text, p_source pg_catalog.text,
                             p_evidence pg_catalog.jsonb)
RETURNS mseg.consent_events LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e mseg.consent_events;
BEGIN
    INSERT INTO mseg.consent_events (subject_ref, purpose, event, legal_basis, notice_version, source, evidence, actor, recorded_at)
    VALUES (p_ref, p_purpose, p_event, p_basis, p_notice, p_source, p_evidence, SESSION_USER, pg_catalog.clock_timestamp())
    RETURNING * INTO e;
    PERFORM mseg._audit('consent.' OPERATOR(pg_catalog.||) p_event, p_purpose,
        pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('subject_ref', p_ref, 'event_id', e.event_id,
            'legal_basis', p_basis, 'notice_version', p_notice, 'source', p_source,
            'event_sha256', pg_catalog.encode(pg_catalog.sha256(mseg._event_content(e)), 'hex'))));
    RETURN e;
END
$$;

CREATE FUNCTION mseg._anchor_claim(
    "anchor" jsonb
) RETURNS TABLE (
    "seq" bigint,
    "hash" TEXT,
    "problem" TEXT
)
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'anchor_claim_wrapper';

CREATE FUNCTION mseg._state_problem() RETURNS TEXT
STRICT STABLE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'state_problem_sql_wrapper';

CREATE FUNCTION mseg.audit_anchor() RETURNS jsonb
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'audit_anchor_wrapper';

DROP FUNCTION mseg.verify_audit_log();   -- takes an anchor now
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

-- 2. Variant Twins in cohorts (mseg-vt/2), the partner state of mseg-vt/1 migrated
ALTER TABLE mseg.partner_twins ADD COLUMN generation pg_catalog.int4 NOT NULL DEFAULT 0;
ALTER TABLE mseg.partner_twins ADD COLUMN cohort pg_catalog.int8;
-- The twins a partner holds from mseg-vt/1 dumps had records of their own, not a cohort's: they
-- become one cohort, -1 (exports give ids (sequence << 24) + n, never negative), with no stored
-- record. The next export ends that cohort as a whole, in one batch (src/export/build.rs,
-- carry_cohorts), and releases its subjects again in k-cohorts under their next generation, i.e.
-- new pseudonyms: no mseg-vt/1 record can be intersected with an mseg-vt/2 one.
UPDATE mseg.partner_twins SET cohort = -1 WHERE tombstoned_at IS NULL;
ALTER TABLE mseg.partner_twins DROP COLUMN content_hash;
ALTER TABLE mseg.partner_twins ADD CHECK ((cohort IS NULL) OPERATOR(pg_catalog.<>) (tombstoned_at IS NULL));
CREATE TABLE mseg.partner_cohorts (
    partner          pg_catalog.text NOT NULL REFERENCES mseg.partners(name) ON DELETE CASCADE,
    cohort           pg_catalog.int8 NOT NULL,
    record           pg_catalog.jsonb NOT NULL,   -- what its twins say, and the columns, hierarchies, purposes it was made under
    members          pg_catalog.int4 NOT NULL,
    created_sequence pg_catalog.int8 NOT NULL,    -- the dump that first released it
    changed_sequence pg_catalog.int8 NOT NULL,    -- the last dump that changed its record
    PRIMARY KEY (partner, cohort)
);
COMMENT ON TABLE mseg.partner_cohorts IS 'pg_mseg: cohorts of Variant Twins a partner holds (k twins sharing one history)';
SELECT pg_catalog.pg_extension_config_dump('mseg.partner_cohorts', '');

-- 3. segment sizes only as published, with noise
CREATE TABLE mseg.size_publications (
    epoch          pg_catalog.int8 PRIMARY KEY,
    published_at   pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    epsilon        pg_catalog.float8 NOT NULL,
    min_group_size pg_catalog.int4 NOT NULL,
    segment_sizes  pg_catalog.int4 NOT NULL,
    pool_sizes     pg_catalog.int4 NOT NULL
);
COMMENT ON TABLE mseg.size_publications IS 'pg_mseg: every publication of segment sizes (epoch, epsilon, k, sizes released)';
CREATE TABLE mseg.published_sizes (
    segment_id pg_catalog.int4 PRIMARY KEY REFERENCES mseg.segments(segment_id) ON DELETE CASCADE,
    epoch      pg_catalog.int8 NOT NULL,
    subjects   pg_catalog.int8,
    suppressed pg_catalog.bool NOT NULL
);
COMMENT ON TABLE mseg.published_sizes IS 'pg_mseg: last published (noisy, k-suppressed) size of each segment';
CREATE TABLE mseg.published_pool_sizes (
    controller pg_catalog.text COLLATE "C",
    kind       pg_catalog.text NOT NULL,
    segment    pg_catalog.text NOT NULL,
    epoch      pg_catalog.int8 NOT NULL,
    twins      pg_catalog.int8,
    suppressed pg_catalog.bool NOT NULL
);
CREATE UNIQUE INDEX published_pool_sizes_key ON mseg.published_pool_sizes (kind, segment, controller) NULLS NOT DISTINCT;
COMMENT ON TABLE mseg.published_pool_sizes IS 'pg_mseg: last published (noisy, k-suppressed) pooled segment sizes';
SELECT pg_catalog.pg_extension_config_dump('mseg.size_publications', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.published_sizes', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.published_pool_sizes', '');
-- the views now read the last publication (their columns changed: dropped and made again)
DROP VIEW mseg.segment_sizes;
DROP VIEW mseg.pool_segment_sizes;
CREATE VIEW mseg.segment_sizes AS
SELECT s.name AS segment, s.purpose, s.description,
       p.subjects,
       COALESCE(p.suppressed, true) AS suppressed,
       e.min_group_size,
       e.epsilon,
       e.published_at
FROM mseg.segments s
LEFT JOIN mseg.published_sizes p ON p.segment_id OPERATOR(pg_catalog.=) s.segment_id
LEFT JOIN mseg.size_publications e ON e.epoch OPERATOR(pg_catalog.=) p.epoch;
COMMENT ON VIEW mseg.segment_sizes IS 'pg_mseg: published segment sizes (noisy, NULL below mseg.min_group_size); see mseg.publish_segment_sizes()';
CREATE VIEW mseg.pool_segment_sizes AS
SELECT p.controller, p.segment, p.twins, p.suppressed, p.kind, e.published_at
FROM mseg.published_pool_sizes p
JOIN mseg.size_publications e ON e.epoch OPERATOR(pg_catalog.=) p.epoch;
COMMENT ON VIEW mseg.pool_segment_sizes IS 'pg_mseg: published pooled segment sizes (controller NULL = across controllers; kind controller or pool), noisy, k-suppressed';
CREATE FUNCTION mseg.publish_segment_sizes() RETURNS bigint
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'publish_segment_sizes_wrapper';

CREATE OR REPLACE FUNCTION mseg.purge_expired_twins()
RETURNS pg_catalog.int8 LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE n pg_catalog.int8;
BEGIN
    DELETE FROM mseg.pool_twins WHERE expires_at OPERATOR(pg_catalog.<=) pg_catalog.now();
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM mseg.publish_segment_sizes();
    PERFORM mseg._audit('pool.purge', NULL, pg_catalog.jsonb_build_object('twins', n));
    RETURN n;
END $$;

-- 4. k-views: the k-checked rows computed inside mseg.kanon_view_rows
CREATE SEQUENCE mseg.kanon_view_id_seq AS pg_catalog.int4;
CREATE TABLE mseg.kanon_views (
    view_id     pg_catalog.int4 PRIMARY KEY,
    view        pg_catalog.regclass NOT NULL UNIQUE,
    source      pg_catalog.regclass NOT NULL,
    key_column  pg_catalog.name NOT NULL,
    k           pg_catalog.int4 NOT NULL CHECK (k OPERATOR(pg_catalog.>=) 2),
    columns     pg_catalog.name[] NOT NULL,   -- quasi columns, generalised
    hierarchies pg_catalog.text[] NOT NULL,   -- their hierarchies when the view was made (NULL: none)
    levels      pg_catalog.int4[] NOT NULL,
    attributes  pg_catalog.name[] NOT NULL,   -- shown as they are
    created_at  pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE mseg.kanon_views IS 'pg_mseg: k-views (mseg.create_kanon_view) and what each shows';
SELECT pg_catalog.pg_extension_config_dump('mseg.kanon_views', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.kanon_view_id_seq', '');
CREATE FUNCTION mseg.kanon_view_rows(view_id pg_catalog.int4) RETURNS SETOF pg_catalog.record
    LANGUAGE c STABLE STRICT PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'mseg_kanon_view_rows';
COMMENT ON FUNCTION mseg.kanon_view_rows(pg_catalog.int4) IS 'pg_mseg: the k-checked rows of a k-view (called by the views mseg.create_kanon_view makes)';
-- Views made by 0.1.0's create_kanon_view stay as they were (plain security_barrier views over
-- mseg.generalize, owned by their makers, not by the extension): name them, so the DBA makes them
-- again as k-views (DROP VIEW, then mseg.create_kanon_view with the same arguments).
DO $kviews$
DECLARE
    v_views pg_catalog.text;
BEGIN
    SELECT pg_catalog.string_agg(DISTINCT r.ev_class::pg_catalog.regclass::pg_catalog.text, ', ') INTO v_views
    FROM pg_catalog.pg_depend d
    JOIN pg_catalog.pg_rewrite r ON r.oid OPERATOR(pg_catalog.=) d.objid
    JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) d.refobjid
    WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_rewrite'::pg_catalog.regclass
      AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
      AND p.pronamespace OPERATOR(pg_catalog.=) 'mseg'::pg_catalog.regnamespace
      AND p.proname OPERATOR(pg_catalog.=) 'generalize';
    IF v_views IS NOT NULL THEN
        RAISE WARNING 'pg_mseg 0.2.0: views over mseg.generalize (k-views made by 0.1.0 are such views, not 0.2.0 k-views): %', v_views
            USING HINT = 'Make each 0.1.0 k-view again: DROP VIEW, then mseg.create_kanon_view (a 0.2.0 k-view computes its rows below every reader''s condition).';
    END IF;
END
$kviews$;

-- 5. replicas and copies: which copy of the database exports, accepted by mseg.accept_copy()
CREATE TABLE mseg.instance_identity (
    only_row          pg_catalog.bool PRIMARY KEY DEFAULT true CHECK (only_row),
    system_identifier pg_catalog.text NOT NULL,
    timeline          pg_catalog.int4 NOT NULL,
    database_oid      pg_catalog.oid NOT NULL,
    recorded_at       pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);
SELECT pg_catalog.pg_extension_config_dump('mseg.instance_identity', '');
CREATE FUNCTION mseg.accept_copy() RETURNS TEXT
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'accept_copy_wrapper';

-- 6. partitioned subject tables and sources: partitions taken in after DDL by event triggers
CREATE TABLE mseg.known_partitions (
    relid pg_catalog.oid NOT NULL,
    kind  pg_catalog.text NOT NULL CHECK (kind OPERATOR(pg_catalog.=) ANY ('{segments,pseudonyms}'::pg_catalog.text[])),
    root  pg_catalog.oid NOT NULL,
    PRIMARY KEY (relid, kind)
);
CREATE FUNCTION mseg._partitions_changed() RETURNS bool
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'partitions_changed_wrapper';

CREATE FUNCTION mseg._on_partition_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM mseg.subject_tables) AND NOT EXISTS (SELECT 1 FROM mseg.pseudonym_columns) THEN
        RETURN;
    END IF;
    PERFORM mseg._partitions_changed();
END
$$;
CREATE EVENT TRIGGER mseg_partitions ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'CREATE TABLE AS', 'SELECT INTO')
    EXECUTE FUNCTION mseg._on_partition_ddl();
CREATE EVENT TRIGGER mseg_partitions_dropped ON sql_drop
    WHEN TAG IN ('DROP TABLE', 'ALTER TABLE')
    EXECUTE FUNCTION mseg._on_partition_ddl();

-- 7. the six consent choices share one skeleton (mseg._choose; the choices themselves under 8)
CREATE FUNCTION mseg._choose(p_subject pg_catalog.int8, p_key pg_catalog.text, p_event pg_catalog.text, p_purpose pg_catalog.text,
                             p_basis pg_catalog.text, p_notice pg_catalog.text, p_source pg_catalog.text,
                             p_evidence pg_catalog.jsonb)
RETURNS pg_catalog.int8 LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ref pg_catalog.text;
    p mseg.purposes;
    st mseg.legal_basis_state;
    e mseg.consent_events;
    v_restricted pg_catalog.bool;
BEGIN
    IF p_event OPERATOR(pg_catalog.=) 'grant' THEN
        PERFORM mseg._require(p_basis, 'legal_basis');
    END IF;
    IF p_event OPERATOR(pg_catalog.<>) ALL ('{restrict,lift_restriction}'::pg_catalog.text[]) THEN
        p := mseg._purpose(p_purpose);
    END IF;
    IF p_event OPERATOR(pg_catalog.=) 'grant' THEN
        IF p_basis OPERATOR(pg_catalog.<>) ALL ('{consent,contract}'::pg_catalog.text[]) THEN
            RAISE EXCEPTION USING ERRCODE = 'MS042',
                MESSAGE = pg_catalog.format('a grant records consent or contract, not %s', p_basis),
                HINT = 'Legitimate interest needs no grant: it applies until the subject objects (mseg.object).';
        END IF;
        IF p_basis OPERATOR(pg_catalog.<>) ALL (p.legal_bases) THEN
            RAISE EXCEPTION USING ERRCODE = 'MS042',
                MESSAGE = pg_catalog.format('purpose "%s" does not accept legal basis %s', p.name, p_basis),
                DETAIL = pg_catalog.format('It accepts %s.', pg_catalog.array_to_string(p.legal_bases, ', ')),
                HINT = 'Record the choice under a basis the purpose accepts, or change the purpose with mseg.alter_purpose.';
        END IF;
    END IF;
    v_ref := mseg._lock_subject(p_subject, p_key);
    -- the current state (read after the lock: the latest committed one)
    IF p.name IS NOT NULL THEN
        SELECT * INTO st FROM mseg.legal_basis_state s
        WHERE s.subject_key OPERATOR(pg_catalog.=) p_subject AND s.purpose OPERATOR(pg_catalog.=) p.name;
    ELSE
        v_restricted := EXISTS (SELECT 1 FROM mseg.subject_state ss WHERE ss.subject_key OPERATOR(pg_catalog.=) p_subject
                                AND ss.restricted_at IS NOT NULL);
    END IF;
    -- a choice that changes nothing: a notice, or an error where there is nothing to take back
    CASE p_event
    WHEN 'grant' THEN
        IF st.consent_basis OPERATOR(pg_catalog.=) p_basis AND st.objected_at IS NULL
           AND st.notice_version IS NOT DISTINCT FROM p_notice
           AND st.granted_at OPERATOR(pg_catalog.+) p.retention OPERATOR(pg_catalog.>) pg_catalog.now() THEN
            RETURN mseg._noop(pg_catalog.format('subject %s already granted %s for purpose "%s" under this notice version',
                                                p_key, p_basis, p.name));
        END IF;
    WHEN 'withdraw' THEN
        IF st.consent_basis IS NULL THEN
            IF st.withdrawn_at IS NOT NULL THEN
                RETURN mseg._noop(pg_catalog.format('subject %s already withdrew consent for purpose "%s"', p_key, p.name));
            END IF;
            RAISE EXCEPTION USING ERRCODE = 'MS043',
                MESSAGE = pg_catalog.format('subject %s has no consent for purpose "%s" to withdraw', p_key, p.name),
                HINT = 'To stop legitimate-interest processing, record an objection with mseg.object(subject, purpose).';
        END IF;
    WHEN 'object' THEN
        IF st.objected_at IS NOT NULL THEN
            RETURN mseg._noop(pg_catalog.format('subject %s already objected to purpose "%s"', p_key, p.name));
        END IF;
    WHEN 'lift_objection' THEN
        IF st.objected_at IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'MS043',
                MESSAGE = pg_catalog.format('subject %s has no objection to purpose "%s" to lift', p_key, p.name),
                HINT = 'mseg.subject_report(subject) shows the subject''s current choices.';
        END IF;
    WHEN 'restrict' THEN
        IF v_restricted THEN
            RETURN mseg._noop(pg_catalog.format('subject %s is already restricted', p_key));
        END IF;
    WHEN 'lift_restriction' THEN
        IF NOT v_restricted THEN
            RAISE EXCEPTION USING ERRCODE = 'MS043',
                MESSAGE = pg_catalog.format('subject %s is not restricted', p_key),
                HINT = 'mseg.subject_report(subject) shows the subject''s current choices.';
        END IF;
    END CASE;
    -- the ledger event (withdrawals record the basis withdrawn, objections legitimate interest)
    e := mseg._record(v_ref, p.name, p_event,
                      CASE p_event WHEN 'grant' THEN p_basis WHEN 'withdraw' THEN st.consent_basis
                                   WHEN 'object' THEN 'legitimate_interest' WHEN 'lift_objection' THEN 'legitimate_interest' END,
                      CASE WHEN p_event OPERATOR(pg_catalog.=) 'grant' THEN p_notice END, p_source, p_evidence);
    -- the state it implies
    CASE p_event
    WHEN 'grant' THEN
        INSERT INTO mseg.legal_basis_state AS s (subject_key, purpose, consent_basis, granted_at, notice_version,
                                                 withdrawn_at, objected_at, last_event_id, updated_at)
        VALUES (p_subject, p.name, p_basis, e.recorded_at, p_notice, NULL, NULL, e.event_id, e.recorded_at)
        ON CONFLICT (subject_key, purpose) DO UPDATE SET
            consent_basis = EXCLUDED.consent_basis, granted_at = EXCLUDED.granted_at,
            notice_version = EXCLUDED.notice_version, withdrawn_at = NULL, objected_at = NULL,
            last_event_id = EXCLUDED.last_event_id, updated_at = EXCLUDED.updated_at;
    WHEN 'withdraw' THEN
        UPDATE mseg.legal_basis_state s SET consent_basis = NULL, withdrawn_at = e.recorded_at,
            last_event_id = e.event_id, updated_at = e.recorded_at
        WHERE s.subject_key OPERATOR(pg_catalog.=) p_subject AND s.purpose OPERATOR(pg_catalog.=) p.name;
    WHEN 'object' THEN
        INSERT INTO mseg.legal_basis_state AS s (subject_key, purpose, objected_at, last_event_id, updated_at)
        VALUES (p_subject, p.name, e.recorded_at, e.event_id, e.recorded_at)
        ON CONFLICT (subject_key, purpose) DO UPDATE SET
            objected_at = EXCLUDED.objected_at, last_event_id = EXCLUDED.last_event_id, updated_at = EXCLUDED.updated_at;
    WHEN 'lift_objection' THEN
        UPDATE mseg.legal_basis_state s SET objected_at = NULL, last_event_id = e.event_id, updated_at = e.recorded_at
        WHERE s.subject_key OPERATOR(pg_catalog.=) p_subject AND s.purpose OPERATOR(pg_catalog.=) p.name;
    WHEN 'restrict' THEN
        INSERT INTO mseg.subject_state AS ss (subject_key, restricted_at, last_event_id, updated_at)
        VALUES (p_subject, e.recorded_at, e.event_id, e.recorded_at)
        ON CONFLICT (subject_key) DO UPDATE SET restricted_at = EXCLUDED.restricted_at,
            last_event_id = EXCLUDED.last_event_id, updated_at = EXCLUDED.updated_at;
    WHEN 'lift_restriction' THEN
        UPDATE mseg.subject_state ss SET restricted_at = NULL, last_event_id = e.event_id, updated_at = e.recorded_at
        WHERE ss.subject_key OPERATOR(pg_catalog.=) p_subject;
    END CASE;
    PERFORM mseg._segments_refresh_subject(p_subject);   -- memberships follow at once
    RETURN e.event_id;
END
$$;

-- 8. subject keys of any usual type: the choices take the key as anycompatible (int8 before),
-- non-integer keys get ids in mseg.subject_ids, erasure proofs carry the id, resolve the key
CREATE SEQUENCE mseg.subject_id_seq;
CREATE TABLE mseg.subject_ids (
    subject_id  pg_catalog.int8 PRIMARY KEY DEFAULT pg_catalog.nextval('mseg.subject_id_seq'::pg_catalog.regclass),
    subject_key pg_catalog.text COLLATE "C" NOT NULL UNIQUE
);
COMMENT ON TABLE mseg.subject_ids IS 'pg_mseg: subject ids of non-integer subject keys (the key''s text form)';
SELECT pg_catalog.pg_extension_config_dump('mseg.subject_ids', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.subject_id_seq', '');
-- (0.1.0 had integer keys only: they are their own ids, so no row is needed and none is NULL here)
ALTER TABLE mseg.erasures ADD COLUMN subject_id pg_catalog.int8;
DROP FUNCTION mseg.grant_consent(pg_catalog.int8, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.jsonb, pg_catalog.text);
DROP FUNCTION mseg.withdraw_consent(pg_catalog.int8, pg_catalog.text, pg_catalog.text, pg_catalog.jsonb);
DROP FUNCTION mseg.object(pg_catalog.int8, pg_catalog.text, pg_catalog.text, pg_catalog.jsonb);
DROP FUNCTION mseg.lift_objection(pg_catalog.int8, pg_catalog.text, pg_catalog.text, pg_catalog.jsonb);
DROP FUNCTION mseg.restrict(pg_catalog.int8, pg_catalog.text, pg_catalog.jsonb);
DROP FUNCTION mseg.lift_restriction(pg_catalog.int8, pg_catalog.text, pg_catalog.jsonb);
DROP FUNCTION mseg.is_processable(pg_catalog.int8, pg_catalog.text, pg_catalog.bool);
DROP FUNCTION mseg.forget(pg_catalog.int8, pg_catalog.text, pg_catalog.text, pg_catalog.jsonb);
DROP FUNCTION mseg.subject_report(pg_catalog.int8);
DROP FUNCTION mseg._lock_subject(pg_catalog.int8);
DROP FUNCTION mseg._subject_exists(pg_catalog.int8);
DROP FUNCTION mseg._subject_ref(pg_catalog.int8);
DROP FUNCTION mseg.resolve(pg_catalog.text, pg_catalog.text[], pg_catalog.text);   -- returns the key too
CREATE FUNCTION mseg._subject_id(
    "key" TEXT
) RETURNS bigint
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'subject_id_sql_wrapper';

CREATE FUNCTION mseg.subject_key(
    "id" bigint
) RETURNS TEXT
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'subject_key_sql_wrapper';

CREATE FUNCTION mseg._subject_ref(
    "subject" TEXT
) RETURNS TEXT
VOLATILE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'subject_ref_wrapper';

CREATE FUNCTION mseg._subject_row(
    "subject" TEXT
) RETURNS jsonb
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'subject_row_wrapper';

CREATE FUNCTION mseg._map_subjects() RETURNS bigint
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'map_subjects_wrapper';

CREATE FUNCTION mseg.resolve(
    "partner_name" TEXT,
    "pseudonyms" TEXT[],
    "purpose" TEXT
) RETURNS TABLE (
    "pseudonym" TEXT,
    "subject_key" bigint,
    "status" TEXT,
    "key" TEXT
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'resolve_wrapper';

CREATE FUNCTION mseg._lock_subject(p_id pg_catalog.int8, p_key pg_catalog.text)
RETURNS pg_catalog.text LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ref pg_catalog.text;
BEGIN
    PERFORM mseg._require(p_key, 'subject');
    -- Serialise with every other audited write: the audit chain head is locked anyway (it is
    -- appended at the end), so taking it first costs nothing more and makes the state we read
    -- below the latest committed one. One row lock, however many subjects a transaction touches.
    PERFORM mseg._lock_audit_head();
    v_ref := mseg._subject_ref(p_key);
    IF p_id IS NULL OR NOT mseg._subject_exists(p_key) THEN
        -- an erased (deleted) subject looks like one that never existed: the application must
        -- not learn who asked for erasure from the error it gets
        RAISE EXCEPTION USING ERRCODE = 'MS040',
            MESSAGE = pg_catalog.format('subject %s does not exist', p_key),
            HINT = pg_catalog.format('Subjects are the rows of %s.', (mseg._subject_table()).relid);
    END IF;
    IF EXISTS (SELECT 1 FROM mseg.erasures e WHERE e.subject_ref OPERATOR(pg_catalog.=) v_ref) THEN
        -- (erased with mode nullify: the row is still there, its identifying columns empty)
        RAISE EXCEPTION USING ERRCODE = 'MS044',
            MESSAGE = pg_catalog.format('subject %s has been erased', p_key),
            DETAIL = 'An erased subject has no choices left to record.',
            HINT = 'mseg.erasures holds the proof of erasure.';
    END IF;
    RETURN v_ref;
END
$$;

CREATE OR REPLACE FUNCTION mseg.register_subjects("table" pg_catalog.regclass, key_column pg_catalog.text)
RETURNS pg_catalog.regclass LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p_table ALIAS FOR $1;
    v_current mseg.subject_tables;
    v_att pg_attribute;
BEGIN
    PERFORM mseg._require(p_table, 'table');
    PERFORM mseg._require(key_column, 'key_column');
    IF NOT pg_catalog.pg_has_role(SESSION_USER, (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) p_table), 'USAGE') THEN
        RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = pg_catalog.format('must be owner of table %s', p_table);
    END IF;
    IF (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) p_table) OPERATOR(pg_catalog.<>) ALL ('{r,p}'::pg_catalog."char"[]) THEN
        RAISE EXCEPTION USING ERRCODE = 'MS020', MESSAGE = pg_catalog.format('%s is not an ordinary table', p_table),
            HINT = 'The subject table must be an ordinary table with one row per person.';
    END IF;
    SELECT * INTO v_att FROM pg_catalog.pg_attribute a
    WHERE a.attrelid OPERATOR(pg_catalog.=) p_table AND a.attname OPERATOR(pg_catalog.=) key_column
      AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'MS022',
            MESSAGE = pg_catalog.format('column "%s" of %s does not exist', key_column, p_table),
            HINT = 'Name the column that identifies a subject, usually the primary key.';
    END IF;
    IF v_att.atttypid OPERATOR(pg_catalog.<>) ALL ('{int2,int4,int8,uuid,text,varchar}'::pg_catalog.regtype[]) THEN
        RAISE EXCEPTION USING ERRCODE = 'MS045',
            MESSAGE = pg_catalog.format('subject key %s.%I has type %s', p_table, key_column, v_att.atttypid::pg_catalog.regtype),
            DETAIL = 'Subject keys are integers (smallint, integer, bigint), uuid, text or varchar.',
            HINT = 'Register a key column of one of those types (a composite key: add a generated text column that joins its parts, with a unique index).';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                   WHERE i.indrelid OPERATOR(pg_catalog.=) p_table AND i.indisunique AND i.indpred IS NULL
                     AND i.indnkeyatts OPERATOR(pg_catalog.=) 1 AND i.indkey[0] OPERATOR(pg_catalog.=) v_att.attnum) THEN
        RAISE EXCEPTION USING ERRCODE = 'MS045',
            MESSAGE = pg_catalog.format('subject key %s.%I is not unique', p_table, key_column),
            HINT = 'Make it the primary key, or add a unique index on exactly that column.';
    END IF;
    SELECT * INTO v_current FROM mseg.subject_tables;
    IF FOUND THEN
        IF v_current.relid OPERATOR(pg_catalog.=) p_table AND v_current.key_column OPERATOR(pg_catalog.=) key_column THEN
            RETURN p_table;   -- already registered: idempotent
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'MS045',
            MESSAGE = pg_catalog.format('%s is already registered as the subject table', v_current.relid),
            HINT = 'A database has one subject table.';
    END IF;
    INSERT INTO mseg.subject_tables (relid, key_column) VALUES (p_table, key_column);
    -- upkeep and exports read it as mseg_upkeep (no superuser ever reads a user table)
    EXECUTE pg_catalog.format('GRANT SELECT ON %s TO mseg_upkeep', p_table);
    PERFORM mseg._map_subjects();   -- non-integer keys: every existing row gets its subject id
    PERFORM mseg._audit('subjects.register', p_table::pg_catalog.text, pg_catalog.jsonb_build_object('key_column', key_column));
    RETURN p_table;
END
$$;

CREATE FUNCTION mseg.is_processable(subject anycompatible, purpose pg_catalog.text,
                                    sensitive pg_catalog.bool DEFAULT false)
RETURNS pg_catalog.bool LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p mseg.purposes;
    st mseg.legal_basis_state;
    v_key pg_catalog.text := subject::pg_catalog.text;
    v_id pg_catalog.int8;
BEGIN
    PERFORM mseg._require(v_key, 'subject');
    PERFORM mseg._require(sensitive, 'sensitive');
    p := mseg._purpose(purpose);
    v_id := mseg._subject_id(v_key);
    IF v_id IS NULL OR NOT mseg._subject_exists(v_key) THEN
        -- erased or never there: the same answer (no erasure oracle for the application)
        RAISE EXCEPTION USING ERRCODE = 'MS040', MESSAGE = pg_catalog.format('subject %s does not exist', v_key),
            HINT = pg_catalog.format('Subjects are the rows of %s.', (mseg._subject_table()).relid);
    END IF;
    SELECT * INTO st FROM mseg.legal_basis_state s
    WHERE s.subject_key OPERATOR(pg_catalog.=) v_id AND s.purpose OPERATOR(pg_catalog.=) p.name;
    RETURN mseg._processable(st,
        (SELECT ss.restricted_at IS NOT NULL OR ss.erased_at IS NOT NULL FROM mseg.subject_state ss
         WHERE ss.subject_key OPERATOR(pg_catalog.=) v_id),
        p, sensitive, pg_catalog.now());
END
$$;

CREATE FUNCTION mseg.grant_consent(subject anycompatible, purpose pg_catalog.text,
                                   notice_version pg_catalog.text DEFAULT NULL, source pg_catalog.text DEFAULT NULL,
                                   evidence pg_catalog.jsonb DEFAULT NULL, legal_basis pg_catalog.text DEFAULT 'consent')
RETURNS pg_catalog.int8 LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT mseg._choose(mseg._subject_id($1::pg_catalog.text), $1::pg_catalog.text, 'grant', $2, $6, $3, $4, $5) $$;

CREATE FUNCTION mseg.withdraw_consent(subject anycompatible, purpose pg_catalog.text,
                                      source pg_catalog.text DEFAULT NULL, evidence pg_catalog.jsonb DEFAULT NULL)
RETURNS pg_catalog.int8 LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT mseg._choose(mseg._subject_id($1::pg_catalog.text), $1::pg_catalog.text, 'withdraw', $2, NULL, NULL, $3, $4) $$;

CREATE FUNCTION mseg.object(subject anycompatible, purpose pg_catalog.text,
                            source pg_catalog.text DEFAULT NULL, evidence pg_catalog.jsonb DEFAULT NULL)
RETURNS pg_catalog.int8 LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT mseg._choose(mseg._subject_id($1::pg_catalog.text), $1::pg_catalog.text, 'object', $2, NULL, NULL, $3, $4) $$;

CREATE FUNCTION mseg.lift_objection(subject anycompatible, purpose pg_catalog.text,
                                    source pg_catalog.text DEFAULT NULL, evidence pg_catalog.jsonb DEFAULT NULL)
RETURNS pg_catalog.int8 LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT mseg._choose(mseg._subject_id($1::pg_catalog.text), $1::pg_catalog.text, 'lift_objection', $2, NULL, NULL, $3, $4) $$;

CREATE FUNCTION mseg.restrict(subject anycompatible, source pg_catalog.text DEFAULT NULL,
                              evidence pg_catalog.jsonb DEFAULT NULL)
RETURNS pg_catalog.int8 LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT mseg._choose(mseg._subject_id($1::pg_catalog.text), $1::pg_catalog.text, 'restrict', NULL, NULL, NULL, $2, $3) $$;

CREATE FUNCTION mseg.lift_restriction(subject anycompatible, source pg_catalog.text DEFAULT NULL,
                                      evidence pg_catalog.jsonb DEFAULT NULL)
RETURNS pg_catalog.int8 LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT mseg._choose(mseg._subject_id($1::pg_catalog.text), $1::pg_catalog.text, 'lift_restriction', NULL, NULL, NULL, $2, $3) $$;

CREATE FUNCTION mseg.forget(subject anycompatible, mode pg_catalog.text DEFAULT 'delete',
                            source pg_catalog.text DEFAULT NULL, evidence pg_catalog.jsonb DEFAULT NULL)
RETURNS pg_catalog.jsonb LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ref pg_catalog.text;
    t record;
    e mseg.consent_events;
    v_columns pg_catalog.text[];
    v_notnull pg_catalog.text;
    v_states pg_catalog.int8;
    v_rows pg_catalog.int8;
    v_key pg_catalog.text := subject::pg_catalog.text;
    v_id pg_catalog.int8 := mseg._subject_id(subject::pg_catalog.text);
    v_mapped pg_catalog.bool := EXISTS (SELECT 1 FROM mseg.subject_ids i WHERE i.subject_key OPERATOR(pg_catalog.=) subject::pg_catalog.text);
BEGIN
    PERFORM mseg._require(mode, 'mode');
    IF mode OPERATOR(pg_catalog.<>) ALL ('{delete,nullify}'::pg_catalog.text[]) THEN
        RAISE EXCEPTION USING ERRCODE = 'MS023', MESSAGE = pg_catalog.format('unknown erasure mode "%s"', mode),
            HINT = 'mode is delete (remove the subject row) or nullify (keep it, clear direct and sensitive columns).';
    END IF;
    v_ref := mseg._lock_subject(v_id, v_key);
    t := mseg._subject_table();
    -- the row is deleted or cleared by mseg._erase_subject_row as the table's owner, in a
    -- security-restricted context: the table's triggers never run with this function's rights
    IF mode OPERATOR(pg_catalog.=) 'delete' THEN
        BEGIN
            v_rows := mseg._erase_subject_row(v_key, 'delete');
        EXCEPTION WHEN foreign_key_violation THEN
            RAISE EXCEPTION USING ERRCODE = 'MS049',
                MESSAGE = pg_catalog.format('subject %s cannot be deleted: other rows refer to it', v_key),
                DETAIL = SQLERRM,
                HINT = 'Delete or anonymise the referring rows first, declare the foreign key ON DELETE CASCADE, or use mode => ''nullify''.';
        END;
    ELSE
        SELECT pg_catalog.array_agg(c.column_name::pg_catalog.text ORDER BY c.column_name)
        INTO v_columns FROM mseg.column_classes c
        WHERE c.relid OPERATOR(pg_catalog.=) t.relid AND c.class OPERATOR(pg_catalog.=) ANY ('{direct,sensitive}'::pg_catalog.text[]);
        IF v_columns IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'MS049',
                MESSAGE = pg_catalog.format('no column of %s is classified direct or sensitive', t.relid),
                HINT = 'Classify the identifying columns with mseg.classify(table, column, ''direct''), or use mode => ''delete''.';
        END IF;
        SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO v_notnull
        FROM pg_catalog.pg_attribute a JOIN mseg.column_classes c
             ON c.relid OPERATOR(pg_catalog.=) a.attrelid AND c.column_name OPERATOR(pg_catalog.=) a.attname
        WHERE a.attrelid OPERATOR(pg_catalog.=) t.relid AND a.attnotnull
          AND c.class OPERATOR(pg_catalog.=) ANY ('{direct,sensitive}'::pg_catalog.text[]);
        IF v_notnull IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'MS049',
                MESSAGE = pg_catalog.format('subject %s cannot be nullified: %s of %s are NOT NULL', v_key, v_notnull, t.relid),
                DETAIL = 'mode nullify sets every direct and sensitive column to NULL.',
                HINT = 'Drop the NOT NULL constraints on those columns, or use mode => ''delete''.';
        END IF;
        v_rows := mseg._erase_subject_row(v_key, 'nullify', v_columns);
    END IF;
    e := mseg._record(v_ref, NULL, 'erase', NULL, NULL, source,
                      COALESCE(evidence, '{}'::pg_catalog.jsonb) OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('mode', mode));
    DELETE FROM mseg.legal_basis_state s WHERE s.subject_key OPERATOR(pg_catalog.=) v_id;
    GET DIAGNOSTICS v_states = ROW_COUNT;
    IF mode OPERATOR(pg_catalog.=) 'delete' THEN
        -- the row is gone, and its memberships emptied (segment trigger)
        DELETE FROM mseg.subject_state ss WHERE ss.subject_key OPERATOR(pg_catalog.=) v_id;
    ELSE
        -- the row stays: mark it erased so no basis (legitimate interest included) applies again
        INSERT INTO mseg.subject_state AS ss (subject_key, restricted_at, erased_at, last_event_id, updated_at)
        VALUES (v_id, NULL, e.recorded_at, e.event_id, e.recorded_at)
        ON CONFLICT (subject_key) DO UPDATE SET restricted_at = NULL, erased_at = EXCLUDED.erased_at,
            last_event_id = EXCLUDED.last_event_id, updated_at = EXCLUDED.updated_at;
        PERFORM mseg._segments_refresh_subject(v_id);
    END IF;
    INSERT INTO mseg.erasures (subject_ref, subject_id, erased_at, mode, actor, event_id)
    VALUES (v_ref, CASE WHEN v_mapped THEN v_id END, e.recorded_at, mode, SESSION_USER, e.event_id);
    IF v_mapped AND mode OPERATOR(pg_catalog.=) 'delete' THEN
        -- the key itself is identifying: its mapping goes (the id stays, meaning nobody)
        DELETE FROM mseg.subject_ids i WHERE i.subject_id OPERATOR(pg_catalog.=) v_id;
    END IF;
    RETURN pg_catalog.jsonb_build_object('subject_ref', v_ref, 'mode', mode, 'rows', v_rows,
                                         'legal_basis_states_removed', v_states, 'erased_at', e.recorded_at);
END
$$;

CREATE FUNCTION mseg.subject_report(subject anycompatible)
RETURNS pg_catalog.jsonb LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
    v_ref pg_catalog.text;
    v_row pg_catalog.jsonb;
    v_report pg_catalog.jsonb;
    v_restricted pg_catalog.timestamptz;
    v_erased pg_catalog.bool;
    v_key pg_catalog.text := subject::pg_catalog.text;
    v_id pg_catalog.int8;
BEGIN
    PERFORM mseg._require(v_key, 'subject');
    t := mseg._subject_table();
    v_ref := mseg._subject_ref(v_key);
    v_id := mseg._subject_id(v_key);
    v_row := mseg._subject_row(v_key);   -- read as mseg_upkeep (src/consent.rs)
    IF v_row IS NULL AND NOT EXISTS (SELECT 1 FROM mseg.erasures e WHERE e.subject_ref OPERATOR(pg_catalog.=) v_ref) THEN
        RAISE EXCEPTION USING ERRCODE = 'MS040', MESSAGE = pg_catalog.format('subject %s does not exist', v_key),
            HINT = pg_catalog.format('Subjects are the rows of %s.', t.relid);
    END IF;
    SELECT ss.restricted_at, ss.erased_at IS NOT NULL INTO v_restricted, v_erased
    FROM mseg.subject_state ss WHERE ss.subject_key OPERATOR(pg_catalog.=) v_id;
    v_report := pg_catalog.jsonb_build_object(
        'subject', subject,
        'subject_table', t.relid::pg_catalog.text,
        'generated_at', pg_catalog.now(),
        'data', v_row,
        'column_classes', (SELECT pg_catalog.jsonb_object_agg(c.column_name, c.class) FROM mseg.column_classes c
                           WHERE c.relid OPERATOR(pg_catalog.=) t.relid),
        'erasure', (SELECT pg_catalog.jsonb_build_object('erased_at', e.erased_at, 'mode', e.mode)
                    FROM mseg.erasures e WHERE e.subject_ref OPERATOR(pg_catalog.=) v_ref),
        'restricted_since', v_restricted,
        'purposes', (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                            'purpose', p.name,
                            'legal_bases_accepted', p.legal_bases,
                            'processable_now', v_row IS NOT NULL AND NOT COALESCE(v_erased, false)
                                               AND mseg._processable(s, v_restricted IS NOT NULL, p, false, pg_catalog.now()),
                            'consent_basis', s.consent_basis,
                            'granted_at', s.granted_at,
                            'notice_version', s.notice_version,
                            'expires_at', CASE WHEN s.consent_basis IS NOT NULL
                                               THEN s.granted_at OPERATOR(pg_catalog.+) p.retention END,
                            'withdrawn_at', s.withdrawn_at,
                            'objected_at', s.objected_at) ORDER BY p.name)
                     FROM mseg.purposes p
                     LEFT JOIN mseg.legal_basis_state s ON s.purpose OPERATOR(pg_catalog.=) p.name
                          AND s.subject_key OPERATOR(pg_catalog.=) v_id),
        -- an erased subject's ledger stays as pseudonymous evidence; it is not handed out by key
        'history', CASE WHEN EXISTS (SELECT 1 FROM mseg.erasures e WHERE e.subject_ref OPERATOR(pg_catalog.=) v_ref) THEN NULL ELSE
                   (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                            'event_id', e.event_id, 'event', e.event, 'purpose', e.purpose,
                            'legal_basis', e.legal_basis, 'notice_version', e.notice_version, 'source', e.source,
                            'evidence', e.evidence, 'actor', e.actor, 'recorded_at', e.recorded_at)) ORDER BY e.event_id)
                    FROM mseg.consent_events e WHERE e.subject_ref OPERATOR(pg_catalog.=) v_ref) END,
        'segments', COALESCE((SELECT pg_catalog.jsonb_agg(g.name ORDER BY g.name) FROM mseg.memberships m
                              JOIN mseg.segments g ON g.segment_id OPERATOR(pg_catalog.=) ANY (m.segments)
                              WHERE m.subject_key OPERATOR(pg_catalog.=) v_id), '[]'::pg_catalog.jsonb),
        'disclosures', '[]'::pg_catalog.jsonb);
    PERFORM mseg._audit('subject.report', NULL, pg_catalog.jsonb_build_object('subject_ref', v_ref));
    RETURN v_report;
END
$$;

-- 9. keys without a subject id are locked by hash bucket (a lock row per bucket, no key)
CREATE TABLE mseg.key_locks (
    bucket pg_catalog.int4 PRIMARY KEY
);
COMMENT ON TABLE mseg.key_locks IS 'pg_mseg: lock rows of non-integer subject keys by hash bucket (no key stored)';

-- 10. privileges of the new and changed objects, as sql/finalize.sql grants them
-- nothing for PUBLIC (every function made above had EXECUTE for PUBLIC by default)
REVOKE ALL ON ALL TABLES IN SCHEMA mseg FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA mseg FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA mseg FROM PUBLIC;

-- mseg_upkeep: what segment upkeep, refresh, verification and exports read and write. A fresh
-- install grants it first, so the privileges other roles already hold on these objects are
-- taken back here and given again right after, in finalize.sql's order (same rights, same ACL).
REVOKE ALL ON mseg.subject_tables, mseg.sources, mseg.segments, mseg.column_classes, mseg.purposes,
              mseg.legal_basis_state, mseg.subject_state, mseg.memberships, mseg.membership_events,
              mseg.pool_twins, mseg.pool_segments
FROM mseg_app, mseg_admin, mseg_export;
REVOKE ALL ON FUNCTION
    mseg.generalize(pg_catalog.text, pg_catalog.text, pg_catalog.int4),
    mseg.generalize(pg_catalog.date, pg_catalog.text, pg_catalog.int4),
    mseg.generalize(pg_catalog.int8, pg_catalog.text, pg_catalog.int4)
FROM mseg_app, mseg_admin, mseg_export;
GRANT USAGE ON SCHEMA mseg TO mseg_upkeep;
GRANT SELECT ON mseg.subject_tables, mseg.sources, mseg.segments, mseg.column_classes, mseg.purposes,
                mseg.legal_basis_state, mseg.subject_state
TO mseg_upkeep;
GRANT SELECT, INSERT, UPDATE, DELETE ON mseg.memberships TO mseg_upkeep;
GRANT SELECT, INSERT, UPDATE ON mseg.key_locks TO mseg_upkeep;
GRANT INSERT ON mseg.membership_events TO mseg_upkeep;
GRANT USAGE ON SEQUENCE mseg.membership_event_seq TO mseg_upkeep;
GRANT SELECT, INSERT ON mseg.subject_ids TO mseg_upkeep;
GRANT USAGE ON SEQUENCE mseg.subject_id_seq TO mseg_upkeep;
GRANT SELECT, UPDATE (pool_segments) ON mseg.pool_twins TO mseg_upkeep;
GRANT SELECT ON mseg.pool_segments TO mseg_upkeep;
GRANT EXECUTE ON FUNCTION
    mseg._segments_merge(pg_catalog.int4[], pg_catalog.int4[], pg_catalog.int4[]),
    mseg._segments_minus(pg_catalog.int4[], pg_catalog.int4[]),
    mseg.generalize(pg_catalog.text, pg_catalog.text, pg_catalog.int4),
    mseg.generalize(pg_catalog.date, pg_catalog.text, pg_catalog.int4),
    mseg.generalize(pg_catalog.int8, pg_catalog.text, pg_catalog.int4)
TO mseg_upkeep;
GRANT SELECT ON mseg.purposes TO mseg_app, mseg_admin;
GRANT SELECT ON mseg.subject_tables, mseg.column_classes, mseg.legal_basis_state, mseg.subject_state TO mseg_admin;
GRANT SELECT ON mseg.sources, mseg.segments, mseg.memberships, mseg.membership_events TO mseg_admin;
GRANT SELECT ON mseg.segments, mseg.membership_events TO mseg_export;
GRANT EXECUTE ON FUNCTION
    mseg.generalize(pg_catalog.text, pg_catalog.text, pg_catalog.int4),
    mseg.generalize(pg_catalog.date, pg_catalog.text, pg_catalog.int4),
    mseg.generalize(pg_catalog.int8, pg_catalog.text, pg_catalog.int4)
TO mseg_app, mseg_admin, mseg_export;
GRANT SELECT ON mseg.pool_twins, mseg.pool_segments TO mseg_admin;
-- ... and the user tables already registered, as register_subjects, register_source and
-- classify (a category hierarchy's mapping table) grant them
DO $grants$
DECLARE
    v_rel pg_catalog.regclass;
BEGIN
    FOR v_rel IN SELECT t.relid FROM mseg.subject_tables t
                 UNION SELECT s.relid FROM mseg.sources s
                 UNION SELECT pg_catalog.to_regclass(pg_catalog.substr(c.hierarchy, 10)) FROM mseg.column_classes c
                       WHERE c.hierarchy OPERATOR(pg_catalog.~~) 'category:%'
    LOOP
        IF v_rel IS NOT NULL THEN
            EXECUTE pg_catalog.format('GRANT SELECT ON %s TO mseg_upkeep', v_rel);
        END IF;
    END LOOP;
END
$grants$;

-- uuid/text subject keys
GRANT SELECT ON mseg.subject_ids TO mseg_admin;
GRANT EXECUTE ON FUNCTION
    mseg.grant_consent(anycompatible, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.jsonb, pg_catalog.text),
    mseg.withdraw_consent(anycompatible, pg_catalog.text, pg_catalog.text, pg_catalog.jsonb),
    mseg.object(anycompatible, pg_catalog.text, pg_catalog.text, pg_catalog.jsonb),
    mseg.lift_objection(anycompatible, pg_catalog.text, pg_catalog.text, pg_catalog.jsonb),
    mseg.restrict(anycompatible, pg_catalog.text, pg_catalog.jsonb),
    mseg.lift_restriction(anycompatible, pg_catalog.text, pg_catalog.jsonb),
    mseg.is_processable(anycompatible, pg_catalog.text, pg_catalog.bool)
TO mseg_app, mseg_admin;
GRANT EXECUTE ON FUNCTION
    mseg.forget(anycompatible, pg_catalog.text, pg_catalog.text, pg_catalog.jsonb),
    mseg.subject_report(anycompatible)
TO mseg_admin;
GRANT EXECUTE ON FUNCTION mseg.subject_key(pg_catalog.int8) TO mseg_admin, mseg_export;
GRANT EXECUTE ON FUNCTION mseg.resolve(pg_catalog.text, pg_catalog.text[], pg_catalog.text) TO mseg_admin, mseg_export;
-- audit anchors
GRANT EXECUTE ON FUNCTION mseg.verify_audit_log(pg_catalog.jsonb) TO mseg_admin;
GRANT EXECUTE ON FUNCTION mseg.audit_anchor() TO mseg_admin, mseg_export;
GRANT SELECT ON mseg.controller_anchors TO mseg_admin;
-- published sizes
GRANT SELECT ON mseg.segment_sizes TO mseg_app, mseg_admin, mseg_export;
GRANT SELECT ON mseg.pool_segment_sizes TO mseg_app, mseg_admin, mseg_export;
GRANT SELECT ON mseg.size_publications, mseg.published_sizes, mseg.published_pool_sizes TO mseg_admin;
GRANT EXECUTE ON FUNCTION mseg.publish_segment_sizes() TO mseg_admin;
-- k-views
GRANT EXECUTE ON FUNCTION mseg.kanon_view_rows(pg_catalog.int4) TO mseg_app, mseg_admin, mseg_export;
GRANT SELECT ON mseg.kanon_views TO mseg_admin;
-- exports refused on unaccepted copies
GRANT SELECT ON mseg.instance_identity TO mseg_admin;
GRANT EXECUTE ON FUNCTION mseg.accept_copy() TO mseg_admin;

-- 11. trusted party: OPRF linkage and persons (issue 15)
-- (src/linkage.rs, sql/linkage.sql; persons in the pooled sizes, sql/sizes.sql)
DO $linkage_role$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'mseg_linkage') THEN
        CREATE ROLE mseg_linkage NOLOGIN;
    END IF;
END
$linkage_role$;

ALTER TABLE mseg.published_pool_sizes ADD COLUMN persons pg_catalog.int8;
CREATE OR REPLACE VIEW mseg.pool_segment_sizes AS
SELECT p.controller, p.segment, p.twins, p.suppressed, p.kind, e.published_at, p.persons
FROM mseg.published_pool_sizes p
JOIN mseg.size_publications e ON e.epoch OPERATOR(pg_catalog.=) p.epoch;
COMMENT ON VIEW mseg.pool_segment_sizes IS 'pg_mseg: published pooled segment sizes in twins and persons (controller NULL = across controllers; kind controller or pool), noisy, k-suppressed on persons';

-- Controller side: the key each trusted partner signs its linkage responses with.
CREATE TABLE mseg.partner_keys (
    partner    pg_catalog.text PRIMARY KEY REFERENCES mseg.partners(name) ON DELETE CASCADE,
    public_key pg_catalog.text NOT NULL,
    set_at     pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE mseg.partner_keys IS 'pg_mseg: public keys of trusted partners (linkage responses are signed with them)';

-- Controller side: linkage requests sent to a partner (sequence per partner), until finalised.
CREATE TABLE mseg.link_requests (
    partner      pg_catalog.text NOT NULL REFERENCES mseg.partners(name) ON DELETE CASCADE,
    sequence     pg_catalog.int8 NOT NULL,
    identifier   pg_catalog.name NOT NULL,   -- the subject table's column holding the matching identifier
    subjects     pg_catalog.int4 NOT NULL,   -- blinded elements sent
    sha256       pg_catalog.text NOT NULL,   -- of the request's lines: the response must name it
    created_at   pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finalized_at pg_catalog.timestamptz,
    PRIMARY KEY (partner, sequence)
);
COMMENT ON TABLE mseg.link_requests IS 'pg_mseg: OPRF linkage requests sent to trusted partners';

-- Controller side: the blinds of an open request (secret: with the response they give the OPRF
-- output). Nobody but the extension reads them; deleted when the request is finalised; not dumped.
CREATE TABLE mseg.link_blinds (
    partner     pg_catalog.text NOT NULL,
    sequence    pg_catalog.int8 NOT NULL,
    n           pg_catalog.int4 NOT NULL,   -- the line of the request (1 = first element)
    subject_key pg_catalog.int8 NOT NULL,
    pseudonym   pg_catalog.text COLLATE "C" NOT NULL,
    blind       pg_catalog.bytea NOT NULL,
    PRIMARY KEY (partner, sequence, n),
    FOREIGN KEY (partner, sequence) REFERENCES mseg.link_requests (partner, sequence) ON DELETE CASCADE
);
COMMENT ON TABLE mseg.link_blinds IS 'pg_mseg: blinds of open linkage requests (secret; readable by no role)';

-- Trusted-party side: per controller, the last request evaluated and the last linkage imported.
CREATE TABLE mseg.link_sequences (
    controller     pg_catalog.text COLLATE "C" PRIMARY KEY,
    last_evaluated pg_catalog.int8 NOT NULL DEFAULT 0,
    last_imported  pg_catalog.int8 NOT NULL DEFAULT 0
);
COMMENT ON TABLE mseg.link_sequences IS 'pg_mseg: linkage requests evaluated and linkage files imported, per controller';

-- Trusted-party side: the person behind each linked twin (the OPRF output of its matching
-- identifier, base64). Readable by the owner and mseg_linkage only.
CREATE TABLE mseg.pool_links (
    controller pg_catalog.text COLLATE "C" NOT NULL,
    pseudonym  pg_catalog.text COLLATE "C" NOT NULL,
    person     pg_catalog.text COLLATE "C" NOT NULL,
    sequence   pg_catalog.int8 NOT NULL,
    PRIMARY KEY (controller, pseudonym)
);
CREATE INDEX pool_links_person ON mseg.pool_links (person);
COMMENT ON TABLE mseg.pool_links IS 'pg_mseg: person links of pooled twins (OPRF outputs; readable by mseg_linkage only)';

SELECT pg_catalog.pg_extension_config_dump('mseg.partner_keys', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.link_requests', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.link_sequences', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.pool_links', '');

CREATE FUNCTION "set_partner_public_key"(
	"partner" TEXT, /* Option < & str > */
	"public_key" TEXT /* Option < & str > */
) RETURNS TEXT /* String */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_partner_public_key_wrapper';
CREATE FUNCTION "linkage_request"(
	"partner" TEXT, /* Option < & str > */
	"identifier" TEXT /* Option < & str > */
) RETURNS SETOF TEXT /* String */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'linkage_request_wrapper';
CREATE FUNCTION "linkage_evaluate"(
	"request" regclass /* Option < PgRelation > */
) RETURNS SETOF TEXT /* String */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'linkage_evaluate_wrapper';
CREATE FUNCTION "linkage_finalize"(
	"partner" TEXT, /* Option < & str > */
	"response" regclass /* Option < PgRelation > */
) RETURNS SETOF TEXT /* String */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'linkage_finalize_wrapper';
CREATE FUNCTION "import_linkage"(
	"staging" regclass /* Option < PgRelation > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'import_linkage_wrapper';

REVOKE ALL ON mseg.partner_keys, mseg.link_requests, mseg.link_blinds, mseg.link_sequences, mseg.pool_links FROM PUBLIC;
REVOKE ALL ON FUNCTION
    mseg.set_partner_public_key(pg_catalog.text, pg_catalog.text),
    mseg.linkage_request(pg_catalog.text, pg_catalog.text),
    mseg.linkage_evaluate(pg_catalog.regclass),
    mseg.linkage_finalize(pg_catalog.text, pg_catalog.regclass),
    mseg.import_linkage(pg_catalog.regclass)
FROM PUBLIC;
-- linkage (trusted party: OPRF person links; controller: requests and linkage files). The blinds
-- (mseg.link_blinds) are granted to nobody; person links only to mseg_linkage.
GRANT USAGE ON SCHEMA mseg TO mseg_linkage;
GRANT SELECT ON mseg.pool_links TO mseg_linkage;
GRANT SELECT ON mseg.partner_keys, mseg.link_requests, mseg.link_sequences TO mseg_admin;
GRANT EXECUTE ON FUNCTION
    mseg.set_partner_public_key(pg_catalog.text, pg_catalog.text),
    mseg.linkage_evaluate(pg_catalog.regclass),
    mseg.import_linkage(pg_catalog.regclass)
TO mseg_admin;
GRANT EXECUTE ON FUNCTION
    mseg.linkage_request(pg_catalog.text, pg_catalog.text),
    mseg.linkage_finalize(pg_catalog.text, pg_catalog.regclass)
TO mseg_admin, mseg_export;

-- 12. trusted party: person-level pool segments (issue 15)
-- (src/pool_persons.rs, sql/pool_persons.sql: persons of linked twins, segments over them)
ALTER TABLE mseg.pool_segments ADD COLUMN level pg_catalog.text NOT NULL DEFAULT 'twin' CHECK (level OPERATOR(pg_catalog.=) ANY (ARRAY['twin', 'person']));

-- Every pooled twin with the key of its person: the OPRF output of its link, or, unlinked, a key of
-- its own that no OPRF output (base64, no colon) can equal. Readable by the owner only.
CREATE VIEW mseg.pool_twin_persons AS
SELECT t.controller, t.pseudonym,
       COALESCE(l.person, 'twin:' OPERATOR(pg_catalog.||) t.controller OPERATOR(pg_catalog.||) ':'
                          OPERATOR(pg_catalog.||) t.pseudonym) AS person,
       t.segments, t.pool_segments, t.policy, t.expires_at
FROM mseg.pool_twins t
LEFT JOIN mseg.pool_links l ON l.controller OPERATOR(pg_catalog.=) t.controller
                           AND l.pseudonym OPERATOR(pg_catalog.=) t.pseudonym;
COMMENT ON VIEW mseg.pool_twin_persons IS 'pg_mseg: every pooled twin with its person key (the link''s OPRF output, or twin:controller:pseudonym when unlinked)';

-- One row per person: what person-level predicates (alias p) read. Kept exact by every import,
-- linkage import, purge and pool segment definition (src/pool_persons.rs). Readable by the owner
-- and mseg_linkage only: it shows which twins are one person.
CREATE TABLE mseg.pool_persons (
    person          pg_catalog.text COLLATE "C" PRIMARY KEY,  -- OPRF output, or twin:controller:pseudonym
    controllers     pg_catalog.text[] NOT NULL,               -- controllers holding a twin of it
    segments        pg_catalog.text[] NOT NULL,               -- 'controller:segment', every exported segment of any of its twins
    pool_segments   pg_catalog.text[] NOT NULL,               -- twin-level pool segments any of its twins is in
    twins           pg_catalog.int4 NOT NULL,                 -- its pooled twins
    purposes        pg_catalog.text[] NOT NULL,               -- purposes every one of its twins' policies allows
    expires_at      pg_catalog.timestamptz,                   -- the earliest expiry among its twins (NULL: none expires)
    person_segments pg_catalog.text[] NOT NULL DEFAULT '{}'   -- person-level pool segments it is in
);
COMMENT ON TABLE mseg.pool_persons IS 'pg_mseg: pooled twins grouped into persons by their links, with person-level pool segments (readable by mseg_linkage only)';
COMMENT ON COLUMN mseg.pool_persons.segments IS 'controller:segment for every segment any of its twins was exported in, e.g. acme:runners';
COMMENT ON COLUMN mseg.pool_persons.purposes IS 'purposes every one of its twins'' policies allows';
COMMENT ON COLUMN mseg.pool_persons.expires_at IS 'the earliest expiry among its twins; an expired person is in no segment';

-- The persons of a pool segment's members now (privileged: whoever delivers an offer to persons).
CREATE FUNCTION mseg.pool_segment_persons(segment pg_catalog.text)
RETURNS SETOF pg_catalog.text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE v_level pg_catalog.text;
BEGIN
    SELECT s.level INTO v_level FROM mseg.pool_segments s WHERE s.name OPERATOR(pg_catalog.=) segment;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'MS051',
            MESSAGE = pg_catalog.format('pool segment "%s" does not exist', segment),
            HINT = 'mseg.pool_segments lists the pool segments.';
    END IF;
    IF v_level OPERATOR(pg_catalog.=) 'person' THEN
        RETURN QUERY
            SELECT p.person::pg_catalog.text FROM mseg.pool_persons p
            WHERE segment OPERATOR(pg_catalog.=) ANY (p.person_segments)
              AND (p.expires_at IS NULL OR p.expires_at OPERATOR(pg_catalog.>) pg_catalog.now())
            ORDER BY 1;
    ELSE
        RETURN QUERY
            SELECT DISTINCT w.person::pg_catalog.text FROM mseg.pool_twin_persons w
            WHERE segment OPERATOR(pg_catalog.=) ANY (w.pool_segments)
              AND (w.expires_at IS NULL OR w.expires_at OPERATOR(pg_catalog.>) pg_catalog.now())
            ORDER BY 1;
    END IF;
END $$;
COMMENT ON FUNCTION mseg.pool_segment_persons(pg_catalog.text) IS 'pg_mseg: person keys of the members of a pool segment now (person-level: member persons; twin-level: the persons of member twins, each once)';

SELECT pg_catalog.pg_extension_config_dump('mseg.pool_persons', '');

CREATE OR REPLACE FUNCTION mseg.pool_segment_members(segment pg_catalog.text)
RETURNS TABLE (controller pg_catalog.text, pseudonym pg_catalog.text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM mseg.pool_segments s WHERE s.name OPERATOR(pg_catalog.=) segment) THEN
        RAISE EXCEPTION USING ERRCODE = 'MS051',
            MESSAGE = pg_catalog.format('pool segment "%s" does not exist', segment),
            HINT = 'mseg.pool_segments lists the pool segments.';
    END IF;
    IF (SELECT s.level FROM mseg.pool_segments s WHERE s.name OPERATOR(pg_catalog.=) segment) OPERATOR(pg_catalog.=) 'person' THEN
        -- every twin of every member person (a member person has no expired twin)
        RETURN QUERY
            SELECT w.controller::pg_catalog.text, w.pseudonym::pg_catalog.text
            FROM mseg.pool_twin_persons w
            JOIN mseg.pool_persons p ON p.person OPERATOR(pg_catalog.=) w.person
            WHERE segment OPERATOR(pg_catalog.=) ANY (p.person_segments)
              AND (p.expires_at IS NULL OR p.expires_at OPERATOR(pg_catalog.>) pg_catalog.now())
            ORDER BY 1, 2;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT t.controller, t.pseudonym FROM mseg.pool_twins t
        WHERE segment OPERATOR(pg_catalog.=) ANY (t.pool_segments)
          AND (t.expires_at IS NULL OR t.expires_at OPERATOR(pg_catalog.>) pg_catalog.now())
        ORDER BY 1, 2;
END $$;

CREATE OR REPLACE FUNCTION mseg.purge_expired_twins()
RETURNS pg_catalog.int8 LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE n pg_catalog.int8;
BEGIN
    DELETE FROM mseg.pool_twins WHERE expires_at OPERATOR(pg_catalog.<=) pg_catalog.now();
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM mseg._refresh_pool_persons();   -- persons lose their expired twins (src/pool_persons.rs)
    PERFORM mseg.publish_segment_sizes();
    PERFORM mseg._audit('pool.purge', NULL, pg_catalog.jsonb_build_object('twins', n));
    RETURN n;
END $$;

CREATE FUNCTION mseg."define_person_segment"(
	"name" TEXT, /* Option < & str > */
	"purpose" TEXT, /* Option < & str > */
	"predicate" TEXT, /* Option < & str > */
	"description" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'define_person_segment_wrapper';
CREATE FUNCTION mseg."_refresh_pool_persons"() RETURNS bigint /* i64 */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'refresh_pool_persons_wrapper';

REVOKE ALL ON mseg.pool_persons, mseg.pool_twin_persons FROM PUBLIC;
REVOKE ALL ON FUNCTION
    mseg.define_person_segment(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text),
    mseg._refresh_pool_persons(),
    mseg.pool_segment_persons(pg_catalog.text)
FROM PUBLIC;
-- person-level pool segments (trusted party, sql/pool_persons.sql): the persons table shows which
-- twins are one person, so it is read by mseg_linkage only, which also defines person segments
-- (their memberships are computed from the links); their predicates run as mseg_upkeep. The view
-- mseg.pool_twin_persons is the owner's only.
GRANT SELECT, UPDATE (person_segments) ON mseg.pool_persons TO mseg_upkeep;
GRANT SELECT ON mseg.pool_persons, mseg.pool_segments TO mseg_linkage;
GRANT EXECUTE ON FUNCTION
    mseg.define_person_segment(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text),
    mseg.drop_pool_segment(pg_catalog.text),
    mseg.pool_segment_persons(pg_catalog.text)
TO mseg_linkage;
-- the persons of the twins and links already pooled
SELECT mseg._refresh_pool_persons();
-- 13. trusted party: participants, delivery, rights notices (issue 15)
-- (src/participants.rs, src/notices.rs, sql/participants.sql)
DO $delivery_role$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'mseg_delivery') THEN
        CREATE ROLE mseg_delivery NOLOGIN;
    END IF;
END
$delivery_role$;


-- Trusted-party side: which columns of the registered subject table (the participants) give the
-- person (the matching identifier, OPRF-evaluated with this party's key) and the contact handle.
CREATE TABLE mseg.participant_columns (
    only_row   pg_catalog.bool PRIMARY KEY DEFAULT true CHECK (only_row),
    relid      pg_catalog.regclass NOT NULL,
    identifier pg_catalog.name NOT NULL,
    contact    pg_catalog.name NOT NULL,
    set_at     pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE mseg.participant_columns IS 'pg_mseg: the participants'' identifier and contact columns (trusted party)';

-- Trusted-party side: the person of each participant (the OPRF output of its normalised
-- identifier, as in mseg.pool_links), kept exact by the trigger zz_mseg_participant_persons on the
-- participants table. subject_ref (the ledger's reference) finds the person of an objection.
-- Readable by the owner only.
CREATE TABLE mseg.participant_persons (
    subject_key pg_catalog.int8 PRIMARY KEY,
    subject_ref pg_catalog.text COLLATE "C" NOT NULL,
    person      pg_catalog.text COLLATE "C" NOT NULL
);
CREATE INDEX participant_persons_person ON mseg.participant_persons (person);
CREATE INDEX participant_persons_ref ON mseg.participant_persons (subject_ref);
COMMENT ON TABLE mseg.participant_persons IS 'pg_mseg: the person (OPRF output) of each participant (readable by no role)';

-- Trusted-party side: who each campaign reached (a participant once per campaign).
CREATE TABLE mseg.deliveries (
    campaign     pg_catalog.text NOT NULL,
    subject_key  pg_catalog.int8 NOT NULL,
    pool_segment pg_catalog.text NOT NULL,
    purpose      pg_catalog.text NOT NULL,
    delivered_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (campaign, subject_key)
);
COMMENT ON TABLE mseg.deliveries IS 'pg_mseg: participants each campaign reached (trusted party)';

-- Trusted-party side: responses of reached participants ("raise hand").
CREATE TABLE mseg.responses (
    campaign     pg_catalog.text NOT NULL,
    subject_key  pg_catalog.int8 NOT NULL,
    response     pg_catalog.text NOT NULL,
    responded_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (campaign, subject_key, response),
    FOREIGN KEY (campaign, subject_key) REFERENCES mseg.deliveries (campaign, subject_key) ON DELETE CASCADE
);
COMMENT ON TABLE mseg.responses IS 'pg_mseg: responses of participants a campaign reached (trusted party)';

-- Trusted-party side: rights notices not yet sent, one line each: the pseudonym (in the
-- controller's partner domain) of a twin linked to a participant who objected or asked for
-- erasure. Nothing else of the participant is kept for it; sent lines are deleted.
CREATE TABLE mseg.rights_notice_queue (
    controller pg_catalog.text COLLATE "C" NOT NULL,
    pseudonym  pg_catalog.text COLLATE "C" NOT NULL,
    kind       pg_catalog.text NOT NULL CHECK (kind OPERATOR(pg_catalog.=) ANY ('{objection,erasure}'::pg_catalog.text[])),
    purpose    pg_catalog.text,   -- objections only
    queued_at  pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CHECK ((purpose IS NULL) OPERATOR(pg_catalog.=) (kind OPERATOR(pg_catalog.=) 'erasure'))
);
CREATE INDEX rights_notice_queue_controller ON mseg.rights_notice_queue (controller);
COMMENT ON TABLE mseg.rights_notice_queue IS 'pg_mseg: rights notices waiting to be sent to controllers (readable by no role)';

-- Trusted-party side: the notice files sent, per controller (sequence per controller).
CREATE TABLE mseg.rights_notices_sent (
    controller pg_catalog.text COLLATE "C" NOT NULL,
    sequence   pg_catalog.int8 NOT NULL,
    objections pg_catalog.int4 NOT NULL,
    erasures   pg_catalog.int4 NOT NULL,
    sha256     pg_catalog.text NOT NULL,
    sent_at    pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (controller, sequence)
);
COMMENT ON TABLE mseg.rights_notices_sent IS 'pg_mseg: rights notice files sent to controllers (counts only)';

-- Controller side: subjects a partner must never receive again (a participant's erasure there).
CREATE TABLE mseg.partner_exclusions (
    partner         pg_catalog.text NOT NULL REFERENCES mseg.partners(name) ON DELETE CASCADE,
    subject_key     pg_catalog.int8 NOT NULL,
    notice_sequence pg_catalog.int8 NOT NULL,
    excluded_at     pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (partner, subject_key)
);
COMMENT ON TABLE mseg.partner_exclusions IS 'pg_mseg: subjects never sent to a partner again (erasure notices from it)';

-- Controller side: the rights notice files imported, per partner.
CREATE TABLE mseg.notice_imports (
    partner     pg_catalog.text NOT NULL REFERENCES mseg.partners(name) ON DELETE CASCADE,
    sequence    pg_catalog.int8 NOT NULL,
    sha256      pg_catalog.text NOT NULL,
    counts      pg_catalog.jsonb NOT NULL,
    imported_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (partner, sequence)
);
COMMENT ON TABLE mseg.notice_imports IS 'pg_mseg: rights notice files imported from partners (counts only)';

SELECT pg_catalog.pg_extension_config_dump('mseg.participant_columns', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.participant_persons', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.responses', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.rights_notice_queue', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.rights_notices_sent', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.partner_exclusions', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.notice_imports', '');

-- Row trigger on the participants table: keeps mseg.participant_persons exact (insert, change of
-- the identifier or key, delete, truncate). SECURITY DEFINER: whoever writes participants reaches
-- the owner-only table and the OPRF evaluation (mseg._participant_person), never the key; it runs
-- no caller code (only the key and identifier columns are read, by name, as text through their
-- types' output functions: format('%s'), never a cast, which a type's owner could define).
CREATE FUNCTION mseg._participant_persons_sync()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mseg.participant_columns;
    t record;
    v_key pg_catalog.text;
    v_identifier pg_catalog.text;
    v_person pg_catalog.text;
    v_id pg_catalog.int8;
BEGIN
    SELECT * INTO c FROM mseg.participant_columns;
    IF c.relid IS NULL OR c.relid OPERATOR(pg_catalog.<>) TG_RELID THEN
        RETURN NULL;   -- only the participants table
    END IF;
    t := mseg._subject_table();
    IF TG_OP OPERATOR(pg_catalog.=) 'TRUNCATE' THEN
        DELETE FROM mseg.participant_persons;
        RETURN NULL;
    END IF;
    IF TG_OP OPERATOR(pg_catalog.=) ANY ('{UPDATE,DELETE}'::pg_catalog.text[]) THEN
        EXECUTE pg_catalog.format('SELECT pg_catalog.format(''%%s'', ($1).%I)', t.key_column) INTO v_key USING OLD;
        DELETE FROM mseg.participant_persons p WHERE p.subject_key OPERATOR(pg_catalog.=) mseg._subject_id(v_key);
    END IF;
    IF TG_OP OPERATOR(pg_catalog.=) ANY ('{INSERT,UPDATE}'::pg_catalog.text[]) THEN
        EXECUTE pg_catalog.format('SELECT pg_catalog.format(''%%s'', ($1).%I), pg_catalog.format(''%%s'', ($1).%I)', t.key_column, c.identifier)
            INTO v_key, v_identifier USING NEW;
        v_person := mseg._participant_person(v_identifier);
        v_id := mseg._subject_id(v_key);
        IF v_person IS NOT NULL AND v_id IS NOT NULL THEN
            INSERT INTO mseg.participant_persons AS p (subject_key, subject_ref, person)
            VALUES (v_id, mseg._subject_ref(v_key), v_person)
            ON CONFLICT (subject_key) DO UPDATE SET subject_ref = EXCLUDED.subject_ref, person = EXCLUDED.person;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

-- Trigger on the ledger: a participant's objection queues an objection notice for every twin
-- linked to the participant's person (every controller holding one). Erasures are queued by
-- mseg.forget itself (src/notices.rs, before the row goes).
CREATE FUNCTION mseg._queue_objection_notices()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO mseg.rights_notice_queue (controller, pseudonym, kind, purpose)
    SELECT DISTINCT l.controller, l.pseudonym, 'objection', NEW.purpose
    FROM mseg.participant_persons p
    JOIN mseg.pool_links l ON l.person OPERATOR(pg_catalog.=) p.person
    WHERE p.subject_ref OPERATOR(pg_catalog.=) NEW.subject_ref
      AND NOT EXISTS (SELECT 1 FROM mseg.rights_notice_queue q
                      WHERE q.controller OPERATOR(pg_catalog.=) l.controller AND q.pseudonym OPERATOR(pg_catalog.=) l.pseudonym
                        AND q.kind OPERATOR(pg_catalog.=) 'objection' AND q.purpose OPERATOR(pg_catalog.=) NEW.purpose);
    RETURN NULL;
END
$$;
CREATE TRIGGER mseg_rights_notices AFTER INSERT ON mseg.consent_events
    FOR EACH ROW WHEN (NEW.event OPERATOR(pg_catalog.=) 'object' AND NEW.purpose IS NOT NULL)
    EXECUTE FUNCTION mseg._queue_objection_notices();

-- A response of a participant the campaign reached (key of any type, like the consent functions).
CREATE FUNCTION mseg.record_response(campaign pg_catalog.text, participant anycompatible,
                                     response pg_catalog.text DEFAULT 'raise_hand')
RETURNS pg_catalog.bool LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN mseg._record_response($1, $2::pg_catalog.text, $3); END $$;
COMMENT ON FUNCTION mseg.record_response(pg_catalog.text, anycompatible, pg_catalog.text) IS
    'pg_mseg: record a response (default raise_hand) of a participant the campaign reached; false if already recorded';

CREATE FUNCTION "_participant_person"(
	"identifier" TEXT /* Option < & str > */
) RETURNS TEXT /* Option < String > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'participant_person_wrapper';
CREATE FUNCTION "set_participant_columns"(
	"identifier" TEXT, /* Option < & str > */
	"contact" TEXT /* Option < & str > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_participant_columns_wrapper';
CREATE FUNCTION "deliver"(
	"pool_segment" TEXT, /* Option < & str > */
	"campaign" TEXT, /* Option < & str > */
	"purpose" TEXT /* Option < & str > */
) RETURNS TABLE (
	"participant" TEXT,  /* Option < String > */
	"contact" TEXT  /* Option < String > */
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'deliver_wrapper';
CREATE FUNCTION "_record_response"(
	"campaign" TEXT, /* Option < & str > */
	"participant" TEXT, /* Option < & str > */
	"response" TEXT /* Option < & str > */
) RETURNS bool /* bool */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'record_response_wrapper';
CREATE FUNCTION "rights_notices"(
	"controller" TEXT /* Option < & str > */
) RETURNS SETOF TEXT /* String */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rights_notices_wrapper';
CREATE FUNCTION "import_rights_notices"(
	"staging" regclass /* Option < PgRelation > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'import_rights_notices_wrapper';

REVOKE ALL ON mseg.participant_columns, mseg.participant_persons, mseg.deliveries, mseg.responses, mseg.rights_notice_queue,
    mseg.rights_notices_sent, mseg.partner_exclusions, mseg.notice_imports FROM PUBLIC;
REVOKE ALL ON FUNCTION
    mseg._participant_persons_sync(),
    mseg._queue_objection_notices(),
    mseg.record_response(pg_catalog.text, anycompatible, pg_catalog.text),
    mseg._participant_person(pg_catalog.text),
    mseg.set_participant_columns(pg_catalog.text, pg_catalog.text),
    mseg.deliver(pg_catalog.text, pg_catalog.text, pg_catalog.text),
    mseg._record_response(pg_catalog.text, pg_catalog.text, pg_catalog.text),
    mseg.rights_notices(pg_catalog.text),
    mseg.import_rights_notices(pg_catalog.regclass)
FROM PUBLIC;
-- the last mile (trusted party: participants, deliveries, responses, rights notices; controller:
-- notice imports and exclusions). The participants' persons (mseg.participant_persons) and the
-- pending notices are granted to nobody; contact handles reach mseg_delivery only, through deliver.
GRANT USAGE ON SCHEMA mseg TO mseg_delivery;
GRANT SELECT ON mseg.partner_exclusions TO mseg_upkeep;
GRANT SELECT ON mseg.participant_columns, mseg.rights_notices_sent, mseg.partner_exclusions, mseg.notice_imports TO mseg_admin;
GRANT SELECT ON mseg.deliveries, mseg.responses TO mseg_admin, mseg_delivery;
GRANT EXECUTE ON FUNCTION
    mseg.set_participant_columns(pg_catalog.text, pg_catalog.text),
    mseg.rights_notices(pg_catalog.text),
    mseg.import_rights_notices(pg_catalog.regclass)
TO mseg_admin;
GRANT EXECUTE ON FUNCTION
    mseg.deliver(pg_catalog.text, pg_catalog.text, pg_catalog.text),
    mseg.record_response(pg_catalog.text, anycompatible, pg_catalog.text)
TO mseg_delivery;
COMMENT ON FUNCTION mseg.set_participant_columns(pg_catalog.text, pg_catalog.text) IS
    'pg_mseg: the participants'' identifier column (its OPRF output is the person) and contact column (trusted party)';
COMMENT ON FUNCTION mseg.deliver(pg_catalog.text, pg_catalog.text, pg_catalog.text) IS
    'pg_mseg: contact handles of a pool segment''s participants processable for the purpose here and at every controller; each person once per campaign; audited';
COMMENT ON FUNCTION mseg.rights_notices(pg_catalog.text) IS
    'pg_mseg: the pending objection and erasure notices for a controller, as a signed file (trusted party)';
COMMENT ON FUNCTION mseg.import_rights_notices(pg_catalog.regclass) IS
    'pg_mseg: verify and apply a partner''s rights notice file: objections recorded, erased subjects never sent to it again (controller)';

-- 15. the partner state without a per-row foreign key (issue 17): a first export writes one
-- mseg.partner_twins row per twin; the export locks its partner's row instead, and
-- remove_partner deletes the partner's rows itself (sql/twins.sql)
ALTER TABLE mseg.partner_twins DROP CONSTRAINT partner_twins_partner_fkey;
