-- pg_mseg k-views: what each view made by mseg.create_kanon_view shows, and the function that
-- computes its rows (src/kview.rs). A k-view is `SELECT … FROM mseg.kanon_view_rows(<view_id>)`;
-- the k-checked query runs inside the function, so no reader's condition reaches below the
-- k-check and no plan node a reader sees counts a suppressed row.

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

-- The rows of k-view view_id, for a role that may SELECT from that view: computed with the
-- view owner's rights (never a superuser's), k-checked, before any condition of the reader.
CREATE FUNCTION mseg.kanon_view_rows(view_id pg_catalog.int4) RETURNS SETOF pg_catalog.record
    LANGUAGE c STABLE STRICT PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'mseg_kanon_view_rows';
COMMENT ON FUNCTION mseg.kanon_view_rows(pg_catalog.int4) IS 'pg_mseg: the k-checked rows of a k-view (called by the views mseg.create_kanon_view makes)';
