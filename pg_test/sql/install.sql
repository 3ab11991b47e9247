-- Installation: objects, privileges, roles, configuration dump registration, hijack guard.
CREATE EXTENSION pg_mseg;

-- Test helper used by every file: run a statement, report SQLSTATE, message, detail, hint.
CREATE FUNCTION public.try(stmt text)
RETURNS TABLE (sqlstate text, message text, detail text, hint text)
LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
    EXECUTE stmt;
    RETURN QUERY SELECT 'ok'::text, NULL::text, NULL::text, NULL::text;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
    RETURN QUERY SELECT s, m, NULLIF(d, ''), NULLIF(h, '');
END $$;
GRANT EXECUTE ON FUNCTION public.try(text) TO PUBLIC;

-- Every function of the extension, whether SECURITY DEFINER, and who may execute it (never PUBLIC).
SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args,
       p.prosecdef AS secdef, p.provolatile AS vol, p.proacl
FROM pg_proc p WHERE p.pronamespace = 'mseg'::regnamespace ORDER BY 1, 2;

-- Every SECURITY DEFINER function pins search_path (and no C function is SECURITY DEFINER).
SELECT p.oid::regprocedure AS unpinned FROM pg_proc p
WHERE p.pronamespace = 'mseg'::regnamespace AND p.prosecdef
  AND (p.proconfig IS NULL OR NOT p.proconfig @> '{"search_path=pg_catalog, pg_temp"}' OR p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'c'));
SELECT count(*) AS definer_functions FROM pg_proc p WHERE p.pronamespace = 'mseg'::regnamespace AND p.prosecdef;
-- ... and so does every other SQL or PL/pgSQL function of the extension
SELECT p.oid::regprocedure AS unpinned FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
WHERE p.pronamespace = 'mseg'::regnamespace AND l.lanname IN ('sql', 'plpgsql')
  AND (p.proconfig IS NULL OR NOT p.proconfig @> '{"search_path=pg_catalog, pg_temp"}');

-- Tables and views: nothing for PUBLIC. (PostgreSQL 17 added MAINTAIN, m, to all rights on a
-- table: shown here as on 15 and 16.)
SELECT c.relname, c.relkind, replace(c.relacl::text, '=arwdDxtm/', '=arwdDxt/') AS relacl FROM pg_class c
WHERE c.relnamespace = 'mseg'::regnamespace AND c.relkind IN ('r', 'v') ORDER BY 1;

SELECT nspacl FROM pg_namespace WHERE nspname = 'mseg';

-- Configuration tables are registered so pg_dump keeps their rows.
SELECT extconfig::regclass[] FROM pg_extension WHERE extname = 'pg_mseg';

-- The four roles, NOLOGIN.
SELECT rolname, rolcanlogin, rolsuper, rolinherit FROM pg_roles WHERE rolname LIKE 'mseg\_%' ORDER BY 1;

-- Reinstalling works although the roles already exist (they are cluster-wide).
DROP EXTENSION pg_mseg;
CREATE EXTENSION pg_mseg;
DROP EXTENSION pg_mseg;

-- DROP EXTENSION leaves the (empty) schema behind; planted objects in it are refused.
CREATE FUNCTION mseg.pseudonym(text, text) RETURNS text LANGUAGE sql AS 'SELECT $1';
SELECT * FROM try('CREATE EXTENSION pg_mseg');
DROP FUNCTION mseg.pseudonym(text, text);
-- so is a schema mseg owned by another role
CREATE ROLE regress_squatter;
ALTER SCHEMA mseg OWNER TO regress_squatter;
SELECT * FROM try('CREATE EXTENSION pg_mseg');
ALTER SCHEMA mseg OWNER TO postgres;
DROP ROLE regress_squatter;
CREATE EXTENSION pg_mseg;
SELECT extversion FROM pg_extension WHERE extname = 'pg_mseg';
