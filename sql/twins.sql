-- pg_mseg Variant Twins: partners and what they hold (controller side), registered controllers
-- and the pooled twins (trusted-party side). The logic is in src/export.rs and src/import.rs.

CREATE TABLE mseg.partners (
    name              pg_catalog.text PRIMARY KEY CHECK (name OPERATOR(pg_catalog.~) '^[a-z][a-z0-9_-]{0,62}$'),
    purposes          pg_catalog.text[] NOT NULL,
    k                 pg_catalog.int4 NOT NULL CHECK (k OPERATOR(pg_catalog.>=) 2),
    suppression_limit pg_catalog.float8 NOT NULL DEFAULT 0.01
                      CHECK (suppression_limit OPERATOR(pg_catalog.>=) 0 AND suppression_limit OPERATOR(pg_catalog.<=) 1),
    last_sequence     pg_catalog.int8 NOT NULL DEFAULT 0,
    created_at        pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE mseg.partners IS 'pg_mseg: trusted partners, each its own pseudonymisation domain (partner.<name>)';

-- What each partner holds: one row per subject ever sent to it (for deltas, tombstones and
-- resolve). A held twin is in a cohort; a twin sent as a tombstone has none. A subject released
-- again after its tombstone gets the next generation, i.e. a new pseudonym (src/export.rs).
-- No foreign key to mseg.partners: a first export writes a row per twin, and the per-row check
-- cost a third of it. The export locks its partner's row before it writes (a partner removed
-- meanwhile fails it), and remove_partner deletes the partner's rows itself.
CREATE TABLE mseg.partner_twins (
    partner      pg_catalog.text NOT NULL,
    subject_key  pg_catalog.int8 NOT NULL,
    pseudonym    pg_catalog.text COLLATE "C" NOT NULL,
    sequence     pg_catalog.int8 NOT NULL,
    tombstoned_at pg_catalog.timestamptz,   -- sent as a tombstone then; resolve refuses it
    -- (generation and cohort last: added by the 0.1.0 -> 0.2.0 upgrade)
    generation   pg_catalog.int4 NOT NULL DEFAULT 0,
    cohort       pg_catalog.int8,             -- NULL once sent as a tombstone
    PRIMARY KEY (partner, subject_key),
    CHECK ((cohort IS NULL) OPERATOR(pg_catalog.<>) (tombstoned_at IS NULL))
);
CREATE UNIQUE INDEX partner_twins_pseudonym ON mseg.partner_twins (partner, pseudonym);

-- The cohorts a partner holds: groups of at least k twins released in the same dump with the
-- same record (every field of a twin line but its pseudonym) that have changed together since,
-- so the partner sees one history for all of them across every dump (docs/architecture.md).
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

CREATE TABLE mseg.partner_exports (
    partner    pg_catalog.text NOT NULL REFERENCES mseg.partners(name) ON DELETE CASCADE,
    sequence   pg_catalog.int8 NOT NULL,
    mode       pg_catalog.text NOT NULL,
    manifest   pg_catalog.jsonb NOT NULL,
    sha256     pg_catalog.text,           -- of the whole dump; NULL until its trailer was written
    created_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (partner, sequence)
);

-- Which copy of the database makes the exports (src/instance.rs): recorded by the first export,
-- compared by every later one; kept by pg_dump so a restored copy is recognised as one.
CREATE TABLE mseg.instance_identity (
    only_row          pg_catalog.bool PRIMARY KEY DEFAULT true CHECK (only_row),
    system_identifier pg_catalog.text NOT NULL,
    timeline          pg_catalog.int4 NOT NULL,
    database_oid      pg_catalog.oid NOT NULL,
    recorded_at       pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);
SELECT pg_catalog.pg_extension_config_dump('mseg.instance_identity', '');

-- Trusted-party side.
CREATE TABLE mseg.controllers (
    id            pg_catalog.text PRIMARY KEY,
    public_key    pg_catalog.text NOT NULL,
    last_sequence pg_catalog.int8 NOT NULL DEFAULT 0,
    registered_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- The audit anchors controllers' dumps carried (signed heads of their audit chains): kept here,
-- outside the controller, so the controller's auditor can check its log against them
-- (mseg.verify_audit_log(anchor) at the controller).
CREATE TABLE mseg.controller_anchors (
    controller    pg_catalog.text NOT NULL,
    dump_sequence pg_catalog.int8 NOT NULL,
    anchor        pg_catalog.jsonb NOT NULL,
    received_at   pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (controller, dump_sequence)
);
SELECT pg_catalog.pg_extension_config_dump('mseg.controller_anchors', '');

-- Keys in the "C" collation (pseudonyms are base64url, controller ids ASCII): byte comparisons in
-- the primary key, not the database's locale. No foreign key to mseg.controllers: every import
-- checks the controller before it writes, and a per-row check cost a third of an import.
CREATE TABLE mseg.pool_twins (
    controller  pg_catalog.text COLLATE "C" NOT NULL,
    pseudonym   pg_catalog.text COLLATE "C" NOT NULL,
    quasi       pg_catalog.jsonb NOT NULL,
    segments    pg_catalog.text[] NOT NULL,
    legal_basis pg_catalog.jsonb NOT NULL,
    policy      pg_catalog.jsonb NOT NULL,
    expires_at  pg_catalog.timestamptz,
    sequence    pg_catalog.int8 NOT NULL,
    pool_segments pg_catalog.text[] NOT NULL DEFAULT '{}',  -- pool segments it is in (src/pool.rs)
    PRIMARY KEY (controller, pseudonym)
);
COMMENT ON TABLE mseg.pool_twins IS 'pg_mseg: Variant Twins imported from controllers, keyed by (controller, pseudonym)';

-- Pool segments: predicates over pooled twins (alias t) across controllers, bound to a purpose the
-- twins' policies must allow. Membership is kept in pool_twins.pool_segments by every import;
-- person-level ones (level 'person', sql/pool_persons.sql) in pool_persons.person_segments.
CREATE TABLE mseg.pool_segments (
    name        pg_catalog.text PRIMARY KEY CHECK (name OPERATOR(pg_catalog.~) '^[a-z][a-z0-9_]{0,62}$'),
    purpose     pg_catalog.text NOT NULL CHECK (purpose OPERATOR(pg_catalog.~) '^[a-z][a-z0-9_]{0,62}$'),
    predicate   pg_catalog.text NOT NULL,   -- as written
    canonical   pg_catalog.text NOT NULL,   -- as PostgreSQL deparsed it, every name qualified
    description pg_catalog.text,
    created_at  pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- over a twin (alias t, mseg.pool_twins) or a person (alias p, mseg.pool_persons); one namespace
    level       pg_catalog.text NOT NULL DEFAULT 'twin' CHECK (level OPERATOR(pg_catalog.=) ANY (ARRAY['twin', 'person']))
);
COMMENT ON TABLE mseg.pool_segments IS 'pg_mseg: cross-controller segments over the pooled Variant Twins (trusted party)';

SELECT pg_catalog.pg_extension_config_dump('mseg.pool_segments', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.partners', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.partner_twins', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.partner_cohorts', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.partner_exports', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.controllers', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.pool_twins', '');

-- mseg.pool_segment_sizes shows published sizes only: see sql/sizes.sql.

-- Members of a pool segment now (privileged: whoever prepares an offer at the trusted party).
CREATE FUNCTION mseg.pool_segment_members(segment pg_catalog.text)
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

CREATE FUNCTION mseg.purge_expired_twins()
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
