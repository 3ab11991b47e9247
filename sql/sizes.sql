-- pg_mseg published sizes: what application roles see of segment and pool segment sizes.
-- Written only by mseg.publish_segment_sizes() (src/sizes.rs): noisy, k-suppressed, from the
-- publishing transaction's data; the views below read nothing else, so no reader ever sees a
-- size computed from its own uncommitted changes.

-- One row per publication (epoch): the privacy parameters it used and how many sizes it released.
-- Its row count is the number of releases a DPO adds up for the privacy budget.
CREATE TABLE mseg.size_publications (
    epoch          pg_catalog.int8 PRIMARY KEY,
    published_at   pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    epsilon        pg_catalog.float8 NOT NULL,
    min_group_size pg_catalog.int4 NOT NULL,
    segment_sizes  pg_catalog.int4 NOT NULL,
    pool_sizes     pg_catalog.int4 NOT NULL
);
COMMENT ON TABLE mseg.size_publications IS 'pg_mseg: every publication of segment sizes (epoch, epsilon, k, sizes released)';

-- The last publication of each local segment's size (NULL when suppressed).
CREATE TABLE mseg.published_sizes (
    segment_id pg_catalog.int4 PRIMARY KEY REFERENCES mseg.segments(segment_id) ON DELETE CASCADE,
    epoch      pg_catalog.int8 NOT NULL,
    subjects   pg_catalog.int8,
    suppressed pg_catalog.bool NOT NULL
);
COMMENT ON TABLE mseg.published_sizes IS 'pg_mseg: last published (noisy, k-suppressed) size of each segment';

-- The last publication of each pooled size (trusted party): per controller, and across
-- controllers (controller NULL); kind controller (a controller's exported segment) or pool.
CREATE TABLE mseg.published_pool_sizes (
    controller pg_catalog.text COLLATE "C",
    kind       pg_catalog.text NOT NULL,
    segment    pg_catalog.text NOT NULL,
    epoch      pg_catalog.int8 NOT NULL,
    twins      pg_catalog.int8,
    suppressed pg_catalog.bool NOT NULL,
    persons    pg_catalog.int8             -- distinct linked persons (an unlinked twin is one); k is checked on it
);
CREATE UNIQUE INDEX published_pool_sizes_key ON mseg.published_pool_sizes (kind, segment, controller) NULLS NOT DISTINCT;
COMMENT ON TABLE mseg.published_pool_sizes IS 'pg_mseg: last published (noisy, k-suppressed) pooled segment sizes';

SELECT pg_catalog.pg_extension_config_dump('mseg.size_publications', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.published_sizes', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.published_pool_sizes', '');

-- Segment sizes for application roles, as last published: distinct subjects plus two-sided
-- geometric noise of parameter exp(-epsilon), NULL (suppressed) when the noisy size is below
-- min_group_size. A segment defined since the last publication shows no size yet.
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

-- Pooled segment sizes (trusted party), as last published: twins and persons per (controller,
-- segment) and across controllers (controller NULL), for the controllers' exported segments (kind
-- controller) and the trusted party's own pool segments (kind pool); expired twins never count.
-- Persons are distinct linked persons (mseg.pool_links; an unlinked twin counts as one); the k
-- check (suppression) is made on persons.
CREATE VIEW mseg.pool_segment_sizes AS
SELECT p.controller, p.segment, p.twins, p.suppressed, p.kind, e.published_at, p.persons
FROM mseg.published_pool_sizes p
JOIN mseg.size_publications e ON e.epoch OPERATOR(pg_catalog.=) p.epoch;
COMMENT ON VIEW mseg.pool_segment_sizes IS 'pg_mseg: published pooled segment sizes in twins and persons (controller NULL = across controllers; kind controller or pool), noisy, k-suppressed on persons';
