-- Attack class 3: segment and pool-segment predicates that run the definer's code.
-- Predicates are written by mseg_admin and evaluated by pg_mseg whenever membership is
-- maintained: at definition, on refresh, in the triggers fired by the application's writes, on
-- consent changes, and (pool segments) on every import. Whatever a predicate can reach is
-- evaluated in those contexts, so a predicate must not be able to run any code but pg_mseg's
-- allowlist: no user function behind a domain CHECK, a cast, an I/O conversion into a user type,
-- a cast to json, a view read by table_to_xml & co., and no setting such as mseg.key_file.
-- Each attempt (P1…) is followed by atk_check(), which must return no row.
\getenv abs_srcdir PG_ABS_SRCDIR
\set atkdb atk_predicates
\set setup :abs_srcdir '/sql/attack_setup.inc'
\i :setup

-- A source table of the administrator's, registered.
CREATE TABLE public.orders (order_id int PRIMARY KEY, customer_id bigint, category text, note text);
INSERT INTO public.orders SELECT i, i % 8 + 1, 'running', 'n' FROM generate_series(1, 16) i;
ALTER TABLE public.orders OWNER TO atk_admin;

\c - atk_admin
SELECT mseg.register_source('public.orders', 'customer_id');
-- The trusted-party side in the same database: this controller registers itself and imports its
-- own dump, so that pooled twins exist for pool segment predicates to be evaluated over.
SELECT mseg.register_controller('acme-retail', mseg.controller_public_key());
SELECT mseg.add_partner('acme-retail', '{mkt}', 2);
CREATE TABLE atk_admin.staging (n bigserial, line text);
INSERT INTO atk_admin.staging (line) SELECT * FROM mseg.export_variant_twins('acme-retail');
SELECT mseg.import_variant_twins_from('atk_admin.staging') > 0 AS twins_imported;
-- The administrator's tools.
CREATE DOMAIN atk_admin.code AS text CHECK (atk_admin.pwn('domain check') IS NOT NULL);
CREATE TYPE atk_admin.wrap AS (v atk_admin.code);
CREATE TYPE atk_admin.mood AS ENUM ('f', 'm');
CREATE FUNCTION atk_admin.mood_json(atk_admin.mood) RETURNS json LANGUAGE plpgsql AS $$
BEGIN PERFORM atk_admin.pwn('cast to json'); RETURN to_json($1::text); END $$;
CREATE CAST (atk_admin.mood AS json) WITH FUNCTION atk_admin.mood_json(atk_admin.mood);
CREATE VIEW atk_admin.keyview AS
    SELECT encode(pg_read_binary_file(current_setting('mseg.key_file')), 'hex') AS k, atk_admin.pwn('table_to_xml view') AS p;
CREATE FUNCTION atk_admin.texteq(text, text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM atk_admin.pwn('operator'); RETURN $1 = $2; END $$;
CREATE OPERATOR atk_admin.=== (LEFTARG = text, RIGHTARG = text, FUNCTION = atk_admin.texteq);

-- P1 (issue): a cast to a domain whose CHECK calls the administrator's function
-- (CoerceToDomain is not a function call the checker sees).
SELECT * FROM atk($$SELECT mseg.define_segment('p1', 'mkt', $p$ (s.postcode::atk_admin.code) IS NOT NULL $p$) IS NOT NULL$$);
SELECT * FROM atk_check();
-- P2 (issue): table_to_xml (a pg_catalog function) over a view reading the key file: one key
-- byte decides which customer is the member (checked as superuser below).
SELECT * FROM atk($$SELECT mseg.define_segment('p2', 'mkt', $p$
    s.customer_id OPERATOR(pg_catalog.=) pg_catalog.get_byte(pg_catalog.decode(pg_catalog.substring(
        pg_catalog.table_to_xml('atk_admin.keyview'::pg_catalog.regclass, true, false, '')::pg_catalog.text,
        '<k>([0-9a-f]+)</k>'), 'hex'), 0) % 8 + 1 $p$) IS NOT NULL$$);
SELECT * FROM atk_check();
-- P3 (issue): the key file's setting is accepted in a predicate.
SELECT * FROM atk($$SELECT mseg.define_segment('p3', 'mkt', $p$ pg_catalog.current_setting('mseg.key_file') LIKE '/%' $p$) IS NOT NULL$$);
SELECT * FROM atk_check();
-- P4 (invented): schema_to_xml reads every table and view of a schema, the payload's view included.
SELECT * FROM atk($$SELECT mseg.define_segment('p4', 'mkt', $p$
    pg_catalog.length(pg_catalog.schema_to_xml('atk_admin', true, false, '')::pg_catalog.text) > 0 $p$) IS NOT NULL$$);
SELECT * FROM atk_check();
-- P5 (invented): database_to_xml reads every table of the database, pg_mseg's and others'.
SELECT * FROM atk($$SELECT mseg.define_segment('p5', 'mkt', $p$
    pg_catalog.strpos(pg_catalog.database_to_xml(true, false, '')::pg_catalog.text, 'secret') > 0 $p$) IS NOT NULL$$);
SELECT * FROM atk_check();
-- P6 (invented): an I/O conversion into a composite type whose field is the domain (CoerceViaIO:
-- record_in runs the domain's CHECK).
SELECT * FROM atk($$SELECT mseg.define_segment('p6', 'mkt', $p$ ('(' || s.postcode || ')')::atk_admin.wrap IS NOT NULL $p$) IS NOT NULL$$);
SELECT * FROM atk_check();
-- P7 (invented): an array coerced to an array of the domain (ArrayCoerceExpr).
SELECT * FROM atk($$SELECT mseg.define_segment('p7', 'mkt', $p$ ARRAY[s.postcode]::atk_admin.code[] IS NOT NULL $p$) IS NOT NULL$$);
SELECT * FROM atk_check();
-- P8 (invented): to_jsonb (pg_catalog) of an enum of the administrator's with a cast to json:
-- to_jsonb calls the cast function itself.
SELECT * FROM atk($$SELECT mseg.define_segment('p8', 'mkt', $p$ pg_catalog.to_jsonb(s.sex::atk_admin.mood) IS NOT NULL $p$) IS NOT NULL$$);
SELECT * FROM atk_check();
-- P8b (invented): P8 after the administrator lets everyone use its schema (which it may).
GRANT USAGE ON SCHEMA atk_admin TO PUBLIC;
SELECT * FROM atk($$SELECT mseg.define_segment('p8b', 'mkt', $p$ pg_catalog.to_jsonb(s.sex::atk_admin.mood) IS NOT NULL $p$) IS NOT NULL$$);
SELECT * FROM atk_check();
REVOKE USAGE ON SCHEMA atk_admin FROM PUBLIC;
-- P9 (invented): the domain cast inside a subquery over the registered source.
SELECT * FROM atk($$SELECT mseg.define_segment('p9', 'mkt', $p$
    EXISTS (SELECT 1 FROM public.orders o WHERE o.customer_id = s.customer_id AND o.note::atk_admin.code IS NOT NULL) $p$) IS NOT NULL$$);
SELECT * FROM atk_check();
-- P10 (control): a user-defined operator (refused today; must stay refused).
SELECT * FROM atk($$SELECT mseg.define_segment('p10', 'mkt', $p$ s.postcode OPERATOR(atk_admin.===) '10110' $p$) IS NOT NULL$$);
-- P11 (control): a view of the administrator's read directly (refused: not a registered source).
SELECT * FROM atk($$SELECT mseg.define_segment('p11', 'mkt', $p$ EXISTS (SELECT 1 FROM atk_admin.keyview) $p$) IS NOT NULL$$);
SELECT * FROM atk_check();

-- Segments accepted above keep running their predicate as pg_mseg maintains them:
-- P12 (invented): the administrator's refresh.
SELECT * FROM atk($$SELECT mseg.refresh_segments() IS NOT NULL$$);
SELECT * FROM atk_check();

-- ... and in the application's statements, where the payload makes the application superuser.
\c - atk_app
-- P13 (invented): an INSERT into the subject table (statement trigger).
SELECT * FROM atk($$INSERT INTO public.customers (customer_id, email, birth_date, postcode, sex) VALUES (9, 'c9@example.com', '1980-01-01', '10110', 'f')$$);
SELECT * FROM atk_check();
-- P14 (invented): an UPDATE of a column a row-only predicate reads (the in-process form).
SELECT * FROM atk($$UPDATE public.customers SET postcode = '10111' WHERE customer_id = 2$$);
SELECT * FROM atk_check();
-- P15 (invented): a consent change (SECURITY DEFINER, recomputes the subject).
SELECT * FROM atk($$SELECT mseg.object(9, 'mkt') IS NOT NULL$$);
SELECT * FROM atk_check();
-- P16 (control): the application cannot define segments at all.
SELECT * FROM atk($$SELECT mseg.define_segment('p16', 'mkt', 'true')$$);
\c - atk_export
SELECT * FROM atk($$SELECT mseg.define_segment('p16', 'mkt', 'true')$$);
SELECT * FROM atk($$SELECT mseg.define_pool_segment('p16', 'mkt', 'true')$$);
SELECT * FROM atk_check();

-- Pool segments share the checker and run on every import.
\c - atk_admin
-- P17 (issue): a pool segment predicate with the domain cast.
SELECT * FROM atk($$SELECT mseg.define_pool_segment('pp1', 'mkt', $p$ (t.quasi OPERATOR(pg_catalog.->>) 'sex')::atk_admin.code IS NOT NULL $p$) IS NOT NULL$$);
SELECT * FROM atk_check();
-- P18 (invented): a pool segment predicate reading the key-file view through table_to_xml.
SELECT * FROM atk($$SELECT mseg.define_pool_segment('pp2', 'mkt', $p$
    pg_catalog.length(pg_catalog.table_to_xml('atk_admin.keyview'::pg_catalog.regclass, true, false, '')::pg_catalog.text) > 0 $p$) IS NOT NULL$$);
SELECT * FROM atk_check();
-- P19 (invented): a pool segment predicate with the cast to json.
SELECT * FROM atk($$SELECT mseg.define_pool_segment('pp3', 'mkt', $p$
    pg_catalog.to_jsonb('f'::atk_admin.mood) IS NOT NULL $p$) IS NOT NULL$$);
SELECT * FROM atk_check();
-- P20 (invented): the next import re-evaluates every pool segment over the new twins.
TRUNCATE atk_admin.staging;
INSERT INTO atk_admin.staging (line) SELECT * FROM mseg.export_variant_twins('acme-retail', 'delta');
SELECT * FROM atk($$SELECT mseg.import_variant_twins_from('atk_admin.staging') IS NOT NULL$$);
SELECT * FROM atk_check();

-- Checks as superuser -------------------------------------------------------------------------
\c - postgres
SELECT * FROM atk_check();
-- which predicates were accepted (none of p1…p9, pp1…pp3 may be)
SELECT name FROM mseg.segments ORDER BY name;
SELECT name FROM mseg.pool_segments ORDER BY name;
-- P2's membership equals a byte of the key: the key left through a membership
SELECT CASE WHEN EXISTS (SELECT 1 FROM mseg.segments WHERE name = 'p2')
            THEN (SELECT array_agg(m ORDER BY m) FROM mseg.segment_members('p2') m) = ARRAY[(get_byte(atk_key(), 0) % 8 + 1)::bigint]
            ELSE false END AS key_byte_in_memberships;

\c mseg_regress postgres
DROP DATABASE atk_predicates WITH (FORCE);
DROP ROLE atk_app, atk_export, atk_admin, atk_dpo;
