-- pg_mseg person-level pool segments (trusted party): the pooled twins grouped into persons by
-- their links, and segments over persons (src/pool_persons.rs, docs/architecture.md "Person-level
-- pool segments").

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
