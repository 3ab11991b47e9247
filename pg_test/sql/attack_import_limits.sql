-- Attack class 7: Variant Twin import without size limits, echoing input, with standard SQLSTATEs.
-- The import reads a whole dump before it checks the signature, so its size must be bounded
-- before anything else (a validly signed 200 MB twin line made a 2.5 GB backend), no part of the
-- input may be echoed whole into an error (or the server log), and every refusal carries a
-- SQLSTATE of class MS07x. The limits are the superuser-only settings mseg.import_max_line_size,
-- mseg.import_max_dump_size and mseg.import_max_json_depth.
-- Every attempt (L1…) must fail with a short MS07x error; atk_check() must return no row.
\getenv abs_srcdir PG_ABS_SRCDIR
\set atkdb atk_import_limits
\set setup :abs_srcdir '/sql/attack_setup.inc'
\i :setup

-- The controller imports its own dumps (it is also the trusted party here).
\c - atk_admin
SELECT mseg.register_controller('acme-retail', mseg.controller_public_key());
SELECT mseg.add_partner('acme-retail', '{mkt}', 2);
CREATE TABLE atk_admin.staging (n bigserial, line text);
CREATE FUNCTION atk_admin.stage(lines text[]) RETURNS void LANGUAGE sql AS $$
    TRUNCATE atk_admin.staging;
    INSERT INTO atk_admin.staging (line) SELECT l FROM unnest(lines) WITH ORDINALITY u(l, i) ORDER BY i;
$$;

-- L1 (issue): a validly signed dump whose twin lines are 2 MB each (the quasi column sex holds
-- two values of 2,000,000 characters, four subjects each, so k = 2 releases them as they are),
-- refused by the line limit (set to 1 MB here).
\c - postgres
UPDATE public.customers SET sex = repeat(CASE WHEN customer_id % 2 = 0 THEN 'x' ELSE 'y' END, 2000000);
\c - atk_admin
INSERT INTO atk_admin.staging (line) SELECT * FROM mseg.export_variant_twins('acme-retail');
SELECT count(*) AS lines, max(length(line)) > 2000000 AS has_2mb_lines FROM atk_admin.staging;
\c - postgres
SELECT * FROM atk($$SET mseg.import_max_line_size = '1MB'$$);
SET ROLE atk_admin;
SELECT * FROM atk($$SELECT mseg.import_variant_twins_from('atk_admin.staging')$$);
SELECT count(*) AS twins_pooled FROM mseg.pool_twins;
-- ... and the same dump under a limit it fits in is imported (the limit, not the dump, refused it)
RESET ROLE;
SELECT * FROM atk($$SET mseg.import_max_line_size = '8MB'$$);
SET ROLE atk_admin;
SELECT * FROM atk($$SELECT mseg.import_variant_twins_from('atk_admin.staging') > 0$$);
RESET ROLE;
SELECT * FROM atk($$RESET mseg.import_max_line_size$$);
SELECT * FROM atk_check();

\c - atk_admin
-- L2 (issue): an unsigned dump whose manifest's format is 1,000,000 characters: the error
-- echoed it whole (here truncated by atk(), which prints the length).
SELECT atk_admin.stage(ARRAY[json_build_object('type', 'manifest', 'format', repeat('f', 1000000))::text, '{"type":"trailer"}']);
SELECT * FROM atk($$SELECT mseg.import_variant_twins_from('atk_admin.staging')$$);
-- L3 (invented): the same with the controller's name (checked before the signature).
SELECT atk_admin.stage(ARRAY[json_build_object('type', 'manifest', 'format', 'mseg-vt/2', 'controller', repeat('c', 1000000))::text, '{"type":"trailer"}']);
SELECT * FROM atk($$SELECT mseg.import_variant_twins_from('atk_admin.staging')$$);
-- L4 (invented): a manifest nested 100,000 levels deep.
SELECT atk_admin.stage(ARRAY[repeat('[', 100000) || repeat(']', 100000), '{"type":"trailer"}']);
SELECT * FROM atk($$SELECT mseg.import_variant_twins_from('atk_admin.staging')$$);
-- L5 (invented): an unsigned dump of 200,000 lines, refused by the dump size limit (set to 1 MB
-- here) before any line is parsed.
\c - postgres
SELECT * FROM atk($$SET mseg.import_max_dump_size = '1MB'$$);
SET ROLE atk_admin;
SELECT atk_admin.stage(ARRAY['{"type":"manifest","format":"mseg-vt/2","controller":"acme-retail"}']
    || array_fill('{"type":"twin","pseudonym":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}'::text, ARRAY[200000])
    || ARRAY['{"type":"trailer"}']);
SELECT * FROM atk($$SELECT mseg.import_variant_twins_from('atk_admin.staging')$$);
RESET ROLE;
SELECT * FROM atk($$RESET mseg.import_max_dump_size$$);
SELECT * FROM atk_check();

-- L6 (issue): refusals with standard SQLSTATEs (or MS023) instead of MS07x: a staging table the
-- caller may not read, a staging table of the wrong shape, a dump file that does not exist.
\c - postgres
CREATE TABLE public.private_staging (n bigint, line text);
INSERT INTO public.private_staging VALUES (1, 'secret line');
\c - atk_admin
SELECT * FROM atk($$SELECT mseg.import_variant_twins_from('public.private_staging')$$);
CREATE TABLE atk_admin.wrong_shape (line_no int, body text);
SELECT * FROM atk($$SELECT mseg.import_variant_twins_from('atk_admin.wrong_shape')$$);
\c - postgres
GRANT pg_read_server_files TO atk_admin;
INSERT INTO atk_baseline SELECT roleid, member FROM pg_auth_members WHERE member = 'atk_admin'::regrole AND roleid = 'pg_read_server_files'::regrole;
\c - atk_admin
SELECT * FROM atk($$SELECT mseg.import_variant_twins('/tmp/pg_mseg_regress/no_such_dump.jsonl')$$);
-- L7 (invented): the key file itself as a dump (by a role that may read server files): no byte of
-- it in the error.
SELECT * FROM atk($$SELECT mseg.import_variant_twins('/tmp/pg_mseg_regress/mseg.key')$$);
SELECT * FROM atk_check();

-- L8 (control): the application and the export role cannot import.
\c - atk_app
CREATE TEMP TABLE staging (n bigint, line text);
SELECT * FROM atk($$SELECT mseg.import_variant_twins_from('pg_temp.staging')$$);
\c - atk_export
SELECT * FROM atk($$SELECT mseg.import_variant_twins('/tmp/pg_mseg_regress/mseg.key')$$);
SELECT * FROM atk_check();

\c mseg_regress postgres
DROP DATABASE atk_import_limits WITH (FORCE);
DROP ROLE atk_app, atk_export, atk_admin, atk_dpo;
