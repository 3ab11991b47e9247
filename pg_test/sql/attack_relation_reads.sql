-- Attack class 1 and 2: relations named by the caller and read by pg_mseg.
-- A function that takes a relation (a category mapping in a hierarchy specification, the
-- relation of k_anonymity / equivalence_classes / l_diversity / anonymize* / create_kanon_view,
-- a staging table) must read it with the caller's privileges: never as a superuser, which would
-- run the caller's view, function or cast as that superuser and read tables the caller may not.
-- Each attempt (R1…) is followed by atk_check(), which must return no row: no role became
-- superuser or gained a role, no key bytes were copied. key_leaked must be false everywhere.
\getenv abs_srcdir PG_ABS_SRCDIR
\set atkdb atk_relation_reads
\set setup :abs_srcdir '/sql/attack_setup.inc'
\i :setup

-- A mapping table nobody but postgres may read.
CREATE TABLE public.private_map (child text, parent text);
INSERT INTO public.private_map VALUES ('secret-child', 'SECRET-PARENT'), ('SECRET-PARENT', 'root');

-- ---------------------------------------------------------------------------------------------
-- mseg_app
-- ---------------------------------------------------------------------------------------------
\c - atk_app
-- R1 (issue): a temporary view over the key file as a category mapping: child = parent = the
-- key, a cycle, whose error message printed the key (and wrote it to the server log).
CREATE TEMP VIEW keymap AS
    SELECT encode(pg_read_binary_file(current_setting('mseg.key_file')), 'hex') AS child,
           encode(pg_read_binary_file(current_setting('mseg.key_file')), 'hex') AS parent;
SELECT * FROM atk($$SELECT mseg.generalize('x', 'category:pg_temp.keymap', 1)$$);
SELECT * FROM atk_check();
-- R2: the same view named without a schema (it resolves through the search_path the read runs
-- under, which has pg_temp in it).
SELECT * FROM atk($$SELECT mseg.generalize('x', 'category:keymap', 1)$$);
SELECT * FROM atk_check();
-- R3 (issue): a temporary view calling a pg_temp plpgsql function that runs ALTER ROLE … SUPERUSER.
CREATE FUNCTION pg_temp.escalate(tag text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER ROLE %I SUPERUSER', session_user);
    RAISE NOTICE '%: ALTER ROLE % SUPERUSER succeeded as %', tag, session_user, current_user;
    RETURN 'child';
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE '%: ALTER ROLE refused for %', tag, current_user;
    RETURN 'child';
END $$;
CREATE TEMP VIEW escmap AS SELECT pg_temp.escalate('R3') AS child, 'root'::text AS parent;
SELECT * FROM atk($$SELECT mseg.generalize('child', 'category:pg_temp.escmap', 1)$$);
SELECT * FROM atk_check();
-- R4: a table the application may not read (no grant) used as the mapping: generalize
-- answered with its rows.
SELECT * FROM atk($$SELECT mseg.generalize('secret-child', 'category:public.private_map', 1)$$);
SELECT * FROM atk_check();
-- R5 (invented): a security_invoker view (PostgreSQL 15) over pg_authid: its table is then read
-- with the reader's rights, which were a superuser's.
CREATE TEMP VIEW authmap WITH (security_invoker = true) AS
    SELECT c.child, c.parent FROM (SELECT 'pg_authid has ' || count(*) || ' postgres' AS n FROM pg_authid WHERE rolname = 'postgres') a,
           LATERAL (VALUES ('leaf', a.n), (a.n, 'root')) c(child, parent);
SELECT * FROM atk($$SELECT mseg.generalize('leaf', 'category:pg_temp.authmap', 1)$$);
SELECT * FROM atk_check();
-- R6 (invented): SQL injection through the mapping name of a hierarchy specification.
SELECT * FROM atk($$SELECT mseg.generalize('x', 'category:public.private_map; ALTER ROLE atk_app SUPERUSER', 1)$$);
SELECT * FROM atk($$SELECT mseg.generalize('x', 'category:public.private_map) x; ALTER ROLE atk_app SUPERUSER; --', 1)$$);
SELECT * FROM atk_check();
-- R7 (invented): the k functions are not the application's (must stay refused).
SELECT * FROM atk($$SELECT mseg.k_anonymity('pg_authid', ARRAY['rolsuper'], key_column => 'oid')$$);
SELECT * FROM atk($$SELECT count(*) FROM mseg.anonymize('pg_temp.escmap', 2, key_column => 'child')$$);
SELECT * FROM atk_check();

-- ---------------------------------------------------------------------------------------------
-- mseg_export
-- ---------------------------------------------------------------------------------------------
\c - atk_export
-- R8 (issue): the export role's own view (in its schema) as a category mapping, calling its payload.
CREATE VIEW atk_export.pwnmap AS SELECT 'child'::text AS child, 'root'::text AS parent FROM (SELECT atk_export.pwn('R8')) p;
SELECT * FROM atk($$SELECT mseg.generalize('child', 'category:atk_export.pwnmap', 1)$$);
SELECT * FROM atk_check();
-- R9 (issue): the key-file view as the export role, through generalize.
CREATE TEMP VIEW keymap AS
    SELECT encode(pg_read_binary_file(current_setting('mseg.key_file')), 'base64') AS child,
           encode(pg_read_binary_file(current_setting('mseg.key_file')), 'base64') AS parent;
SELECT * FROM atk($$SELECT mseg.generalize('x', 'category:pg_temp.keymap', 1)$$);
SELECT * FROM atk_check();
-- R10 (issue): anonymize over pg_catalog.pg_authid.
SELECT * FROM atk($$SELECT count(*) > 0 AS read_pg_authid FROM mseg.anonymize('pg_authid', 2, ARRAY['rolname'], key_column => 'oid')$$);
SELECT * FROM atk_check();
-- R11 (issue): anonymize_report of the subject table, on which the export role has no grant.
SELECT * FROM atk($$SELECT r->>'records' AS records_read FROM mseg.anonymize_report('public.customers', 2) r$$);
SELECT * FROM atk($$SELECT count(*) AS rows_read FROM mseg.anonymize('public.customers', 2)$$);
SELECT * FROM atk_check();
-- R12 (issue): anonymize over a temporary view whose pg_temp function runs ALTER ROLE … SUPERUSER.
CREATE FUNCTION pg_temp.escalate(tag text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER ROLE %I SUPERUSER', session_user);
    RAISE NOTICE '%: ALTER ROLE % SUPERUSER succeeded as %', tag, session_user, current_user;
    RETURN 'q';
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE '%: ALTER ROLE refused for %', tag, current_user;
    RETURN 'q';
END $$;
CREATE TEMP VIEW esc AS SELECT i::bigint AS id, x.q FROM generate_series(1, 2) i, (SELECT pg_temp.escalate('R12') AS q OFFSET 0) x;
SELECT * FROM atk($$SELECT count(*) FROM mseg.anonymize('pg_temp.esc', 2, ARRAY['q'], key_column => 'id')$$);
SELECT * FROM atk_check();
-- R13 (invented): a table of the export role's own whose quasi column has a type with a cast to
-- text of its own: the k functions cast quasi values with ::text, running the cast function.
CREATE TYPE atk_export.mood AS ENUM ('f', 'm');
CREATE FUNCTION atk_export.mood_text(atk_export.mood) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM atk_export.pwn('R13'); RETURN $1::name::text; END $$;
CREATE CAST (atk_export.mood AS text) WITH FUNCTION atk_export.mood_text(atk_export.mood);
CREATE TABLE atk_export.people (id bigint PRIMARY KEY, mood atk_export.mood);
INSERT INTO atk_export.people VALUES (1, 'f'), (2, 'f');
SELECT * FROM atk($$SELECT count(*) FROM mseg.anonymize('atk_export.people', 2, ARRAY['mood'], key_column => 'id')$$);
SELECT * FROM atk_check();
-- R14 (invented): injection through sensitive_column and key_column.
CREATE TABLE atk_export.plain (id bigint PRIMARY KEY, q text);
INSERT INTO atk_export.plain VALUES (1, 'a'), (2, 'a');
SELECT * FROM atk($$SELECT count(*) FROM mseg.anonymize('atk_export.plain', 2, ARRAY['q'], l => 1,
    sensitive_column => 'q::text || atk_export.pwn(''R14'')::text', key_column => 'id')$$);
SELECT * FROM atk($$SELECT count(*) FROM mseg.anonymize('atk_export.plain', 2, ARRAY['q'],
    key_column => 'id" FROM pg_authid r, LATERAL (SELECT atk_export.pwn(''R14'')) x --')$$);
SELECT * FROM atk_check();

-- ---------------------------------------------------------------------------------------------
-- mseg_admin
-- ---------------------------------------------------------------------------------------------
\c - atk_admin
-- R15 (issue): the administrator's own view as a category mapping, through generalize and
-- through classify (SECURITY DEFINER; it checks the hierarchy by loading it).
CREATE VIEW atk_admin.pwnmap AS SELECT 'child'::text AS child, 'root'::text AS parent FROM (SELECT atk_admin.pwn('R15')) p;
SELECT * FROM atk($$SELECT mseg.generalize('child', 'category:atk_admin.pwnmap', 1)$$);
SELECT * FROM atk_check();
CREATE VIEW atk_admin.pwnmap2 AS SELECT 'child'::text AS child, 'root'::text AS parent FROM (SELECT atk_admin.pwn('R15b')) p;
SELECT * FROM atk($$SELECT mseg.classify('public.customers', 'postcode', 'quasi', 'category:atk_admin.pwnmap2')$$);
SELECT * FROM atk_check();
-- R16 (brief): k_anonymity and equivalence_classes over pg_authid.
SELECT * FROM atk($$SELECT mseg.k_anonymity('pg_authid', ARRAY['rolsuper'], key_column => 'oid') > 0 AS read_pg_authid$$);
SELECT * FROM atk($$SELECT count(*) > 0 AS read_pg_authid FROM mseg.equivalence_classes('pg_authid', ARRAY['rolname', 'rolpassword'], key_column => 'oid')$$);
SELECT * FROM atk_check();
-- R17 (invented): every relation-taking k function over a view of the administrator's that
-- calls its payload.
CREATE VIEW atk_admin.src AS SELECT i::bigint AS id, 'q'::text AS q, 's'::text AS sens
    FROM generate_series(1, 2) i, (SELECT atk_admin.pwn('R17') OFFSET 0) p;
SELECT * FROM atk($$SELECT mseg.k_anonymity('atk_admin.src', ARRAY['q'], key_column => 'id')$$);
SELECT * FROM atk_check();
SELECT * FROM atk($$SELECT count(*) FROM mseg.equivalence_classes('atk_admin.src', ARRAY['q'], key_column => 'id')$$);
SELECT * FROM atk_check();
SELECT * FROM atk($$SELECT mseg.l_diversity('atk_admin.src', 'sens', ARRAY['q'], key_column => 'id')$$);
SELECT * FROM atk_check();
SELECT * FROM atk($$SELECT mseg.anonymize_report('atk_admin.src', 2, ARRAY['q'], key_column => 'id')->>'records'$$);
SELECT * FROM atk_check();
-- create_kanon_view without levels chooses them by reading the source
SELECT * FROM atk($$SELECT mseg.create_kanon_view('atk_admin.src_k', 'atk_admin.src', 2, columns => ARRAY['q'], attributes => ARRAY[]::text[], key_column => 'id')$$);
SELECT * FROM atk_check();
-- R18 (invented): a view name built to break out of the generated CREATE VIEW.
SELECT * FROM atk($$SELECT mseg.create_kanon_view('atk_admin."v" AS SELECT 1; ALTER ROLE atk_admin SUPERUSER; --', 'public.customers', 2, levels => ARRAY[0, 0, 1])$$);
SELECT * FROM atk_check();
-- R19 (invented): a staging "table" that is a view calling the payload (import reads it).
CREATE TEMP VIEW staging AS SELECT 1::bigint AS n, '{}'::text AS line FROM (SELECT atk_admin.pwn('R19') OFFSET 0) p;
SELECT * FROM atk($$SELECT mseg.import_variant_twins_from('pg_temp.staging')$$);
SELECT * FROM atk_check();

-- Checks as superuser -------------------------------------------------------------------------
\c - postgres
SELECT * FROM atk_check();
-- classify did not take the view as postcode's hierarchy
SELECT hierarchy FROM mseg.column_classes WHERE relid = 'public.customers'::regclass AND column_name = 'postcode';

\c mseg_regress postgres
DROP DATABASE atk_relation_reads WITH (FORCE);
DROP ROLE atk_app, atk_export, atk_admin, atk_dpo;
