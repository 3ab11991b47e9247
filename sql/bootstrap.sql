-- pg_mseg bootstrap: runs before the generated function definitions.
-- Everything here is qualified; CREATE EXTENSION runs with search_path = mseg.

DO $bootstrap$
DECLARE
    role_name pg_catalog.text;
BEGIN
    -- A schema "mseg" that existed before CREATE EXTENSION could hold objects planted to hijack
    -- our names; refuse unless it belongs to the installing superuser and is empty.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n
               WHERE n.nspname OPERATOR(pg_catalog.=) 'mseg'
                 AND (n.nspowner OPERATOR(pg_catalog.<>) (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER)
                      OR EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.relnamespace OPERATOR(pg_catalog.=) n.oid)
                      OR EXISTS (SELECT 1 FROM pg_catalog.pg_proc p WHERE p.pronamespace OPERATOR(pg_catalog.=) n.oid)
                      OR EXISTS (SELECT 1 FROM pg_catalog.pg_operator o WHERE o.oprnamespace OPERATOR(pg_catalog.=) n.oid))) THEN
        RAISE EXCEPTION USING ERRCODE = 'MS020',
            MESSAGE = 'schema mseg already exists and is not empty or not owned by the installing role',
            HINT = 'Drop or rename the existing schema mseg before CREATE EXTENSION pg_mseg.';
    END IF;

    -- Roles are cluster-wide: create them once, NOLOGIN; a DBA grants them to login roles.
    FOREACH role_name IN ARRAY ARRAY['mseg_admin', 'mseg_app', 'mseg_export', 'mseg_reidentify', 'mseg_linkage', 'mseg_delivery'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) role_name) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', role_name);
        END IF;
    END LOOP;

    -- mseg_upkeep reads the registered subject table and sources for upkeep and exports (see
    -- src/catalog.rs): no superuser, no login, no members, ever; BYPASSRLS so row security
    -- policies neither hide rows from the upkeep nor run their expressions as it.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'mseg_upkeep') THEN
        CREATE ROLE mseg_upkeep NOLOGIN NOINHERIT BYPASSRLS;
    ELSIF EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) m.roleid
                  WHERE r.rolname OPERATOR(pg_catalog.=) 'mseg_upkeep')
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) 'mseg_upkeep'
                  AND (r.rolsuper OR r.rolcanlogin)) THEN
        RAISE EXCEPTION USING ERRCODE = 'MS020',
            MESSAGE = 'role mseg_upkeep exists with members, a login or superuser rights',
            DETAIL = 'pg_mseg reads user tables as mseg_upkeep; nobody may act as it.',
            HINT = 'Revoke mseg_upkeep from every role and make it NOLOGIN NOSUPERUSER (or drop it) before CREATE EXTENSION.';
    ELSE
        ALTER ROLE mseg_upkeep NOLOGIN NOINHERIT NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS;
    END IF;
END
$bootstrap$;

-- Pseudonymisation domains: one per internal use and one per partner.
CREATE TABLE mseg.domains (
    name        pg_catalog.text PRIMARY KEY
                CHECK (name OPERATOR(pg_catalog.~) '^[a-z][a-z0-9_.:-]{0,62}$'),
    key_version pg_catalog.int4 NOT NULL DEFAULT 1
                CHECK (key_version OPERATOR(pg_catalog.>=) 1 AND key_version OPERATOR(pg_catalog.<=) 65535),
    description pg_catalog.text,
    created_at  pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    rotated_at  pg_catalog.timestamptz
);
COMMENT ON TABLE mseg.domains IS 'pg_mseg pseudonymisation domains and their current key version';

-- Internal domain: keyed references to subjects in the consent ledger and the audit log.
INSERT INTO mseg.domains (name, description) VALUES ('mseg.subjects', 'internal: subject references in ledger and audit log');

-- Pseudonym columns the extension's trigger maintains.
CREATE TABLE mseg.pseudonym_columns (
    relid         pg_catalog.regclass NOT NULL,
    source_column pg_catalog.name NOT NULL,
    target_column pg_catalog.name NOT NULL,
    domain        pg_catalog.text NOT NULL REFERENCES mseg.domains(name),
    created_at    pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (relid, target_column)
);
COMMENT ON TABLE mseg.pseudonym_columns IS 'pg_mseg pseudonym columns kept up to date by trigger zz_mseg_pseudonym';

-- pg_dump / pg_restore keep the configuration rows.
-- internal domains (name mseg.*) are created by this script, not restored from a dump
SELECT pg_catalog.pg_extension_config_dump('mseg.domains', 'WHERE name OPERATOR(pg_catalog.!~) ''^mseg[.]''');
SELECT pg_catalog.pg_extension_config_dump('mseg.pseudonym_columns', '');
