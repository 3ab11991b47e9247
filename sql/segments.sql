-- pg_mseg microsegments: definitions, source tables, memberships and their events.
-- Membership upkeep is in Rust (src/segments.rs): statement-level triggers with transition
-- tables, plans prepared once per backend, one row per subject holding its set of segments.

CREATE TABLE mseg.sources (
    relid         pg_catalog.regclass PRIMARY KEY,
    key_column    pg_catalog.name NOT NULL,
    registered_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE mseg.sources IS 'pg_mseg: tables keyed by the subject that segment predicates may read';

CREATE SEQUENCE mseg.segment_id_seq;
CREATE TABLE mseg.segments (
    segment_id      pg_catalog.int4 PRIMARY KEY DEFAULT pg_catalog.nextval('mseg.segment_id_seq'::pg_catalog.regclass)::pg_catalog.int4,
    name            pg_catalog.text NOT NULL UNIQUE CHECK (name OPERATOR(pg_catalog.~) '^[a-z][a-z0-9_]{0,62}$'),
    purpose         pg_catalog.text NOT NULL REFERENCES mseg.purposes(name),
    predicate       pg_catalog.text NOT NULL,          -- as written by the DBA
    canonical       pg_catalog.text NOT NULL,          -- as PostgreSQL deparsed it, every name qualified
    sources         pg_catalog.regclass[] NOT NULL DEFAULT '{}',
    time_dependent  pg_catalog.bool NOT NULL DEFAULT false,
    reads_sensitive pg_catalog.bool NOT NULL DEFAULT false,
    subject_columns pg_catalog.name[] NOT NULL DEFAULT '{}',  -- columns of the subject row it reads
    description     pg_catalog.text,
    created_at      pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE mseg.segments IS 'pg_mseg: microsegment definitions (boolean predicates over the subject row and its sources)';

-- One row per subject id the upkeep has seen (a subject, or a key named by source rows): the set
-- of segment ids it belongs to now, empty for keys without a subject. The row is also the key's
-- lock in the upkeep's protocol, so it is emptied, never deleted (docs/architecture.md).
CREATE TABLE mseg.memberships (
    subject_key pg_catalog.int8 PRIMARY KEY,
    segments    pg_catalog.int4[] NOT NULL DEFAULT '{}',
    updated_at  pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
) WITH (fillfactor = 80);
COMMENT ON TABLE mseg.memberships IS 'pg_mseg: current segment set of each subject, kept exact by triggers';

-- The locks of non-integer subject keys that may have no id yet (source rows before their
-- subject, an erased key): one row per bucket of hashtext(key) & 65535, never a key.
CREATE TABLE mseg.key_locks (
    bucket pg_catalog.int4 PRIMARY KEY
);
COMMENT ON TABLE mseg.key_locks IS 'pg_mseg: lock rows of non-integer subject keys by hash bucket (no key stored)';

CREATE SEQUENCE mseg.membership_event_seq;
CREATE TABLE mseg.membership_events (
    event_id      pg_catalog.int8 PRIMARY KEY DEFAULT pg_catalog.nextval('mseg.membership_event_seq'::pg_catalog.regclass),
    subject_key   pg_catalog.int8 NOT NULL,
    joined        pg_catalog.int4[] NOT NULL,
    left_segments pg_catalog.int4[] NOT NULL,
    at            pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    xid           pg_catalog.xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id()
);
CREATE INDEX membership_events_subject ON mseg.membership_events (subject_key, event_id);
COMMENT ON TABLE mseg.membership_events IS 'pg_mseg: every change of a subject''s segment set (joined / left), with time and transaction';

-- Partitions (and inheritance children) of maintained tables the extension has taken in: for
-- kind 'segments' they carry the segment triggers and their rows are in the memberships; for
-- 'pseudonyms' their pseudonym columns were computed. The event trigger mseg_partitions compares
-- it with the catalog after DDL (attach, detach, create, drop). OIDs: not kept by pg_dump.
CREATE TABLE mseg.known_partitions (
    relid pg_catalog.oid NOT NULL,
    kind  pg_catalog.text NOT NULL CHECK (kind OPERATOR(pg_catalog.=) ANY ('{segments,pseudonyms}'::pg_catalog.text[])),
    root  pg_catalog.oid NOT NULL,
    PRIMARY KEY (relid, kind)
);

SELECT pg_catalog.pg_extension_config_dump('mseg.sources', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.segments', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.segment_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.memberships', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.membership_events', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.membership_event_seq', '');

-- Members of one segment (privileged: administration and export).
CREATE FUNCTION mseg.segment_members(segment pg_catalog.text)
RETURNS SETOF pg_catalog.int8 LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id pg_catalog.int4;
BEGIN
    PERFORM mseg._require(segment, 'segment');
    SELECT s.segment_id INTO v_id FROM mseg.segments s WHERE s.name OPERATOR(pg_catalog.=) segment;
    IF v_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MS051', MESSAGE = pg_catalog.format('segment "%s" does not exist', segment),
            HINT = 'mseg.segments lists the segments.';
    END IF;
    RETURN QUERY SELECT m.subject_key FROM mseg.memberships m
                 WHERE v_id OPERATOR(pg_catalog.=) ANY (m.segments) ORDER BY m.subject_key;
END
$$;
