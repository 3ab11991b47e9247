-- pg_mseg consent: the subject table, column classes, purposes, the legal-basis ledger, the
-- current state derived from it, and the data-subject rights.
--
-- Every function here that writes is SECURITY DEFINER with search_path pinned to
-- pg_catalog, pg_temp, every name and operator qualified, and EXECUTE granted per role in
-- finalize.sql. Writers lock the audit chain head before they read the current state, so
-- concurrent choices serialise and the last to commit is the state.

-- ---------------------------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------------------------

CREATE TABLE mseg.subject_tables (
    only_row      pg_catalog.bool PRIMARY KEY DEFAULT true CHECK (only_row),
    relid         pg_catalog.regclass NOT NULL,
    key_column    pg_catalog.name NOT NULL,
    registered_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE mseg.subject_tables IS 'pg_mseg: the registered subject table (one per database)';

CREATE TABLE mseg.column_classes (
    relid         pg_catalog.regclass NOT NULL,
    column_name   pg_catalog.name NOT NULL,
    class         pg_catalog.text NOT NULL
                  CHECK (class OPERATOR(pg_catalog.=) ANY ('{direct,quasi,sensitive,attribute}'::pg_catalog.text[])),
    hierarchy     pg_catalog.text,
    classified_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (relid, column_name)
);
COMMENT ON TABLE mseg.column_classes IS 'pg_mseg: direct / quasi / sensitive / attribute class of each column';

CREATE TABLE mseg.purposes (
    name        pg_catalog.text PRIMARY KEY CHECK (name OPERATOR(pg_catalog.~) '^[a-z][a-z0-9_]{0,62}$'),
    legal_bases pg_catalog.text[] NOT NULL
                CHECK (pg_catalog.cardinality(legal_bases) OPERATOR(pg_catalog.>=) 1
                       AND legal_bases OPERATOR(pg_catalog.<@) '{consent,legitimate_interest,contract}'::pg_catalog.text[]),
    retention   pg_catalog.interval NOT NULL CHECK (retention OPERATOR(pg_catalog.>) '0'::pg_catalog.interval),
    description pg_catalog.text,
    created_at  pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at  pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE mseg.purposes IS 'pg_mseg: processing purposes, the legal bases they accept, retention of a grant';

CREATE SEQUENCE mseg.consent_event_seq;

-- The ledger: what each subject chose, when, how, and on what evidence. Append-only. Subjects
-- appear by a keyed pseudonym of their key (domain mseg.subjects), so that after an erasure the
-- ledger still proves what happened without naming anyone.
CREATE TABLE mseg.consent_events (
    event_id       pg_catalog.int8 PRIMARY KEY DEFAULT pg_catalog.nextval('mseg.consent_event_seq'::pg_catalog.regclass),
    subject_ref    pg_catalog.text NOT NULL,
    purpose        pg_catalog.text REFERENCES mseg.purposes(name),
    event          pg_catalog.text NOT NULL CHECK (event OPERATOR(pg_catalog.=) ANY
                   ('{grant,withdraw,object,lift_objection,restrict,lift_restriction,erase}'::pg_catalog.text[])),
    legal_basis    pg_catalog.text CHECK (legal_basis OPERATOR(pg_catalog.=) ANY ('{consent,legitimate_interest,contract}'::pg_catalog.text[])),
    notice_version pg_catalog.text,
    source         pg_catalog.text,
    evidence       pg_catalog.jsonb,
    actor          pg_catalog.text NOT NULL,
    recorded_at    pg_catalog.timestamptz NOT NULL
);
CREATE INDEX consent_events_subject ON mseg.consent_events (subject_ref, event_id);
COMMENT ON TABLE mseg.consent_events IS 'pg_mseg: append-only ledger of consent, objection, restriction and erasure events';
CREATE TRIGGER mseg_append_only BEFORE UPDATE OR DELETE ON mseg.consent_events
    FOR EACH ROW EXECUTE FUNCTION mseg._refuse_change();
CREATE TRIGGER mseg_append_only_truncate BEFORE TRUNCATE ON mseg.consent_events
    FOR EACH STATEMENT EXECUTE FUNCTION mseg._refuse_change();

-- Current state per (subject, purpose): one index probe answers "may S be processed for P now?".
CREATE TABLE mseg.legal_basis_state (
    subject_key       pg_catalog.int8 NOT NULL,
    purpose           pg_catalog.text NOT NULL REFERENCES mseg.purposes(name),
    consent_basis     pg_catalog.text,              -- 'consent' or 'contract' while granted
    granted_at        pg_catalog.timestamptz,
    notice_version    pg_catalog.text,
    withdrawn_at      pg_catalog.timestamptz,
    objected_at       pg_catalog.timestamptz,       -- set while an objection stands
    last_event_id     pg_catalog.int8 NOT NULL,
    updated_at        pg_catalog.timestamptz NOT NULL,
    PRIMARY KEY (subject_key, purpose)
);
COMMENT ON TABLE mseg.legal_basis_state IS 'pg_mseg: current legal basis per subject and purpose, derived from the ledger';

-- Current state per subject: restriction (Art. 18).
CREATE TABLE mseg.subject_state (
    subject_key   pg_catalog.int8 PRIMARY KEY,
    restricted_at pg_catalog.timestamptz,
    erased_at     pg_catalog.timestamptz,          -- set when erased in mode nullify (the row stays)
    last_event_id pg_catalog.int8 NOT NULL,
    updated_at    pg_catalog.timestamptz NOT NULL
);

-- Minimal pseudonymous proof of each erasure (Art. 17).
CREATE TABLE mseg.erasures (
    subject_ref pg_catalog.text PRIMARY KEY,
    erased_at   pg_catalog.timestamptz NOT NULL,
    mode        pg_catalog.text NOT NULL,
    actor       pg_catalog.text NOT NULL,
    event_id    pg_catalog.int8 NOT NULL,
    subject_id  pg_catalog.int8                    -- non-integer keys only: the id the mapping gave it
                                                   -- (last: added by the 0.1.0 -> 0.2.0 upgrade)
);

-- Subject ids of a subject table whose key is not an integer (uuid, text…): the extension's own
-- tables (memberships, consent state, events, partner state) key subjects by a compact integer id;
-- an integer key is its own id and needs no row here. Erasure removes the row.
CREATE SEQUENCE mseg.subject_id_seq;
CREATE TABLE mseg.subject_ids (
    subject_id  pg_catalog.int8 PRIMARY KEY DEFAULT pg_catalog.nextval('mseg.subject_id_seq'::pg_catalog.regclass),
    subject_key pg_catalog.text COLLATE "C" NOT NULL UNIQUE
);
COMMENT ON TABLE mseg.subject_ids IS 'pg_mseg: subject ids of non-integer subject keys (the key''s text form)';

SELECT pg_catalog.pg_extension_config_dump('mseg.subject_tables', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.subject_ids', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.subject_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.column_classes', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.purposes', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.consent_events', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.consent_event_seq', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.legal_basis_state', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.subject_state', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.erasures', '');

-- ---------------------------------------------------------------------------------------------
-- Internal helpers
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION mseg._require(p_value anyelement, p_name pg_catalog.text)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MS023',
            MESSAGE = pg_catalog.format('argument "%s" must not be NULL', p_name),
            HINT = pg_catalog.format('Pass a value for "%s".', p_name);
    END IF;
END
$$;

CREATE FUNCTION mseg._subject_table(OUT relid pg_catalog.regclass, OUT key_column pg_catalog.name)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT t.relid, t.key_column INTO relid, key_column FROM mseg.subject_tables t;
    IF relid IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MS045',
            MESSAGE = 'no subject table is registered',
            HINT = 'Register it first: SELECT mseg.register_subjects(''public.customers'', key_column => ''customer_id'').';
    END IF;
END
$$;

-- mseg._subject_exists(subject) is in Rust (src/consent.rs): it reads the subject table as
-- mseg_upkeep, never as the owner of these SECURITY DEFINER functions.

CREATE FUNCTION mseg._purpose(p_purpose pg_catalog.text)
RETURNS mseg.purposes LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p mseg.purposes;
BEGIN
    PERFORM mseg._require(p_purpose, 'purpose');
    SELECT * INTO p FROM mseg.purposes WHERE name OPERATOR(pg_catalog.=) p_purpose;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'MS041',
            MESSAGE = pg_catalog.format('purpose "%s" does not exist', p_purpose),
            HINT = 'Define it with mseg.define_purpose(name, legal_bases, retention); mseg.purposes lists the purposes.';
    END IF;
    RETURN p;
END
$$;

-- Lock one subject for the rest of the transaction, check it exists and is not erased; returns
-- its ledger reference.
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

-- The canonical content of a ledger event, whose SHA-256 its audit entry carries: the ledger is
-- inside the hash chain (verify_audit_log checks every event against its entry, and the current
-- state against a replay of the ledger).
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

CREATE FUNCTION mseg._record(p_ref pg_catalog.text, p_purpose pg_catalog.text, p_event pg_catalog.text,
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

CREATE FUNCTION mseg._noop(p_message pg_catalog.text)
RETURNS pg_catalog.int8 LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE NOTICE '%', p_message USING HINT = 'Nothing was recorded.';
    RETURN NULL;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Configuration: subject table, column classes, purposes
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION mseg.register_subjects("table" pg_catalog.regclass, key_column pg_catalog.text)
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

-- mseg.classify(table, column, class, hierarchy) is in Rust (src/consent.rs): a category
-- hierarchy's mapping table is read with the caller's own privileges.

-- Columns of a table that have no class yet (pseudonym columns are derived and not listed).
CREATE FUNCTION mseg.unclassified_columns("table" pg_catalog.regclass)
RETURNS SETOF pg_catalog.name LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.attname FROM pg_catalog.pg_attribute a
    WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
      AND NOT EXISTS (SELECT 1 FROM mseg.column_classes c
                      WHERE c.relid OPERATOR(pg_catalog.=) $1 AND c.column_name OPERATOR(pg_catalog.=) a.attname)
      AND NOT EXISTS (SELECT 1 FROM mseg.pseudonym_columns p
                      WHERE p.relid OPERATOR(pg_catalog.=) $1 AND p.target_column OPERATOR(pg_catalog.=) a.attname)
      AND NOT EXISTS (SELECT 1 FROM mseg.subject_tables s
                      WHERE s.relid OPERATOR(pg_catalog.=) $1 AND s.key_column OPERATOR(pg_catalog.=) a.attname)
    ORDER BY a.attnum
$$;

CREATE FUNCTION mseg._check_purpose_definition(p_bases pg_catalog.text[], p_retention pg_catalog.interval)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_bases IS NOT NULL AND (pg_catalog.cardinality(p_bases) OPERATOR(pg_catalog.=) 0
        OR NOT p_bases OPERATOR(pg_catalog.<@) '{consent,legitimate_interest,contract}'::pg_catalog.text[]
        OR pg_catalog.array_position(p_bases, NULL) IS NOT NULL) THEN
        RAISE EXCEPTION USING ERRCODE = 'MS048',
            MESSAGE = pg_catalog.format('invalid legal bases %s', p_bases),
            HINT = 'Give one or more of consent, legitimate_interest, contract.';
    END IF;
    IF p_retention IS NOT NULL AND p_retention OPERATOR(pg_catalog.<=) '0'::pg_catalog.interval THEN
        RAISE EXCEPTION USING ERRCODE = 'MS048',
            MESSAGE = pg_catalog.format('retention must be positive, not %s', p_retention),
            HINT = 'Retention is how long a grant stays valid, e.g. interval ''2 years''.';
    END IF;
END
$$;

CREATE FUNCTION mseg.define_purpose(name pg_catalog.text, legal_bases pg_catalog.text[], retention pg_catalog.interval,
                                    description pg_catalog.text DEFAULT NULL)
RETURNS pg_catalog.text LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM mseg._require(name, 'name');
    PERFORM mseg._require(legal_bases, 'legal_bases');
    PERFORM mseg._require(retention, 'retention');
    IF name OPERATOR(pg_catalog.!~) '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION USING ERRCODE = 'MS048', MESSAGE = pg_catalog.format('invalid purpose name "%s"', name),
            HINT = 'A purpose name starts with a lower-case letter and has at most 63 characters from a-z, 0-9, _.';
    END IF;
    PERFORM mseg._check_purpose_definition(legal_bases, retention);
    IF EXISTS (SELECT 1 FROM mseg.purposes p WHERE p.name OPERATOR(pg_catalog.=) define_purpose.name) THEN
        RAISE EXCEPTION USING ERRCODE = 'MS021', MESSAGE = pg_catalog.format('purpose "%s" already exists', name),
            HINT = 'Change it with mseg.alter_purpose.';
    END IF;
    INSERT INTO mseg.purposes (name, legal_bases, retention, description)
    VALUES (name, ARRAY(SELECT DISTINCT b FROM pg_catalog.unnest(legal_bases) b ORDER BY b), retention, description);
    PERFORM mseg._audit('purpose.define', name, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'legal_bases', legal_bases, 'retention', retention::pg_catalog.text, 'description', description)));
    RETURN name;
END
$$;

CREATE FUNCTION mseg.alter_purpose(name pg_catalog.text, legal_bases pg_catalog.text[] DEFAULT NULL,
                                   retention pg_catalog.interval DEFAULT NULL, description pg_catalog.text DEFAULT NULL)
RETURNS pg_catalog.text LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM mseg._purpose(name);
    IF legal_bases IS NULL AND retention IS NULL AND description IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MS023', MESSAGE = 'nothing to change',
            HINT = 'Pass legal_bases, retention or description.';
    END IF;
    PERFORM mseg._check_purpose_definition(legal_bases, retention);
    UPDATE mseg.purposes p SET
        legal_bases = CASE WHEN alter_purpose.legal_bases IS NULL THEN p.legal_bases
                           ELSE ARRAY(SELECT DISTINCT b FROM pg_catalog.unnest(alter_purpose.legal_bases) b ORDER BY b) END,
        retention = COALESCE(alter_purpose.retention, p.retention),
        description = COALESCE(alter_purpose.description, p.description),
        updated_at = pg_catalog.now()
    WHERE p.name OPERATOR(pg_catalog.=) alter_purpose.name;
    PERFORM mseg._audit('purpose.alter', name, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'legal_bases', legal_bases, 'retention', retention::pg_catalog.text, 'description', description)));
    RETURN name;
END
$$;

CREATE FUNCTION mseg.drop_purpose(name pg_catalog.text)
RETURNS pg_catalog.bool LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_events pg_catalog.int8;
    v_users pg_catalog.text;
BEGIN
    PERFORM mseg._purpose(name);
    SELECT pg_catalog.string_agg(g.name, ', ' ORDER BY g.name) INTO v_users FROM mseg.segments g
    WHERE g.purpose OPERATOR(pg_catalog.=) drop_purpose.name;
    IF v_users IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MS047',
            MESSAGE = pg_catalog.format('purpose "%s" is in use', name),
            DETAIL = pg_catalog.format('Segments bound to it: %s.', v_users),
            HINT = 'Drop those segments or bind them to another purpose with mseg.alter_segment.';
    END IF;
    SELECT pg_catalog.count(*) INTO v_events FROM mseg.consent_events e WHERE e.purpose OPERATOR(pg_catalog.=) drop_purpose.name;
    IF v_events OPERATOR(pg_catalog.>) 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'MS047',
            MESSAGE = pg_catalog.format('purpose "%s" is in use', name),
            DETAIL = pg_catalog.format('The ledger holds %s recorded choices for it; they are evidence and stay.', v_events),
            HINT = 'Keep the purpose; stop using it in segments and partners instead.';
    END IF;
    DELETE FROM mseg.legal_basis_state s WHERE s.purpose OPERATOR(pg_catalog.=) drop_purpose.name;
    DELETE FROM mseg.purposes p WHERE p.name OPERATOR(pg_catalog.=) drop_purpose.name;
    PERFORM mseg._audit('purpose.drop', name, '{}');
    RETURN true;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- "May subject S be processed for purpose P now?"
-- ---------------------------------------------------------------------------------------------

-- The rule, on one state row (NULL when the subject never chose anything for P):
--   no restriction, no standing objection, and
--   a consent (or contract) grant within the purpose's retention, if the purpose accepts that basis,
--   or legitimate interest, if the purpose accepts it and no sensitive column is read.
CREATE FUNCTION mseg._processable(p_state mseg.legal_basis_state, p_restricted pg_catalog.bool,
                                  p_purpose mseg.purposes, p_sensitive pg_catalog.bool, p_now pg_catalog.timestamptz)
RETURNS pg_catalog.bool LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT NOT COALESCE(p_restricted, false)
       AND p_state.objected_at IS NULL
       AND (
            (p_state.consent_basis IS NOT NULL
             AND p_state.consent_basis OPERATOR(pg_catalog.=) ANY (p_purpose.legal_bases)
             AND (NOT p_sensitive OR p_state.consent_basis OPERATOR(pg_catalog.=) 'consent')
             AND p_state.granted_at OPERATOR(pg_catalog.+) p_purpose.retention OPERATOR(pg_catalog.>) p_now)
         OR ('legitimate_interest' OPERATOR(pg_catalog.=) ANY (p_purpose.legal_bases) AND NOT p_sensitive)
       )
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

-- ---------------------------------------------------------------------------------------------
-- Recording choices (application code)
-- ---------------------------------------------------------------------------------------------

-- The six choices share one skeleton: check the purpose (and basis), lock the subject and the
-- audit chain, read the current state, refuse or do nothing if the choice changes nothing, append
-- the ledger event, write the state it implies, recompute the subject's memberships. Only the
-- state transition differs (the same transitions mseg._state_problem replays, src/audit.rs).
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

-- The public choices: application code records them (EXECUTE granted in finalize.sql). A subject
-- is given by its key, of whatever type the subject table uses (integer, uuid, text…).
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

-- Art. 21: objection. For direct marketing it is absolute: it stops processing for the purpose
-- whatever the basis, until lifted or superseded by a new explicit grant.
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

-- Art. 18: restriction stops all processing of the subject, for every purpose.
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

-- ---------------------------------------------------------------------------------------------
-- Data-subject rights (DBA / DPO)
-- ---------------------------------------------------------------------------------------------

-- Art. 17. mode 'delete' deletes the subject row; 'nullify' keeps it and sets every column
-- classified direct or sensitive to NULL (its pseudonym columns follow through their trigger).
-- Either way the subject's current legal-basis state goes, the ledger keeps its pseudonymous
-- events, and mseg.erasures keeps a minimal proof. Later Variant Twin deltas send a tombstone.
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

-- Art. 15 / 20: everything held about one subject, as jsonb.
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
