-- pg_mseg linkage: a person's twins from several controllers linked at the trusted party only,
-- through an oblivious PRF whose key only the trusted party holds (src/linkage.rs,
-- docs/architecture.md "Linkage").

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
