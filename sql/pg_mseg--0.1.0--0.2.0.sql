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
-- Changes from 0.1.0 to 0.2.0, in the order they landed:
-- (none to the schema yet: 0.2.0 so far adds PostgreSQL 16 and 18 builds, which change no SQL object)

-- trusted party: OPRF linkage and persons (issue 15)
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
