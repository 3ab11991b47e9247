-- Security suite: an application role (member of mseg_app, with INSERT on customers and SELECT
-- on its non-identifying columns) tries every way we know to obtain a key, a pseudonym of an
-- input it chooses, or raw data. Every attempt must fail; each is numbered.
CREATE EXTENSION pg_stat_statements;
CREATE SCHEMA app_schema AUTHORIZATION regress_app;
CREATE UNIQUE INDEX customers_email_pseudonym_key ON customers (email_pseudonym);
SELECT mseg.token('victim@example.com', 'analytics') AS victim_token \gset
-- connect as the application role itself (SET ROLE would keep the superuser session user)
\c - regress_app

-- 1-3: the key file setting (PostgreSQL 16 reworded PostgreSQL's own refusals in 1, 2 and 8:
-- their SQLSTATE and the role they name are checked, on every version)
SELECT sqlstate, concat_ws(' ', message, detail) ~ 'pg_read_all_settings' AS names_the_role FROM try('SHOW mseg.key_file');
SELECT sqlstate, concat_ws(' ', message, detail) ~ 'pg_read_all_settings' AS names_the_role FROM try($$SELECT current_setting('mseg.key_file')$$);
SELECT count(*) AS visible_in_pg_settings FROM pg_settings WHERE name = 'mseg.key_file';
-- 4-9: the key file itself, through every file-reading door
SELECT * FROM try($$SELECT pg_read_file('/tmp/pg_mseg_regress/mseg.key')$$);
SELECT * FROM try($$SELECT pg_read_binary_file('/tmp/pg_mseg_regress/mseg.key')$$);
SELECT * FROM try($$SELECT pg_stat_file('/tmp/pg_mseg_regress/mseg.key')$$);
SELECT * FROM try($$SELECT pg_ls_dir('/tmp/pg_mseg_regress')$$);
SELECT sqlstate, concat_ws(' ', message, detail) ~ 'pg_read_server_files' AS names_the_role, hint
FROM try($$CREATE TEMP TABLE k(b text); COPY k FROM '/tmp/pg_mseg_regress/mseg.key'$$);
SELECT * FROM try($$SELECT lo_import('/tmp/pg_mseg_regress/mseg.key')$$);
-- 10-14: the extension's functions as oracles
SELECT * FROM try($$SELECT mseg.pseudonym('chosen@example.com', 'analytics')$$);
SELECT * FROM try($$SELECT mseg.token('chosen@example.com', 'analytics')$$);
SELECT * FROM try(format($$SELECT mseg.detoken(%L, 'analytics')$$, :'victim_token'));
SELECT * FROM try($$SELECT mseg.key_fingerprint()$$);
SELECT * FROM try($$SELECT * FROM mseg.progress_slots()$$);
-- 15-16: the configuration and the mapping
SELECT * FROM try($$SELECT * FROM mseg.domains$$);
SELECT * FROM try($$SELECT * FROM mseg.pseudonym_columns$$);
-- 17: attach the extension's trigger to a table of one's own (a pseudonym oracle)
SELECT * FROM try($$CREATE TABLE app_schema.oracle (email text, email_pseudonym text);
    CREATE TRIGGER t BEFORE INSERT ON app_schema.oracle FOR EACH ROW EXECUTE FUNCTION mseg.pseudonym_trigger()$$);
-- 18-20: write a chosen value into the real table and read its pseudonym back
SELECT * FROM try($$INSERT INTO customers (customer_id, email) VALUES (80001, 'chosen@example.com') RETURNING email_pseudonym$$);
SELECT * FROM try($$SELECT email_pseudonym FROM customers LIMIT 1$$);
SELECT * FROM try($$SELECT email FROM customers LIMIT 1$$);
-- 21: a unique violation on the pseudonym column must not print the pseudonym in DETAIL
INSERT INTO customers (customer_id, email) VALUES (80002, 'chosen2@example.com');
SELECT * FROM try($$INSERT INTO customers (customer_id, email) VALUES (80003, 'chosen2@example.com')$$);
-- 22-25: settings, library, schema, roles
ALTER SYSTEM SET mseg.key_file = '/tmp/attacker.key';
SELECT * FROM try($$SET mseg.controller_id = 'someone-else'$$);
SELECT * FROM try($$LOAD 'pg_mseg'$$);
SELECT * FROM try($$CREATE FUNCTION mseg.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'$$);
SELECT * FROM try($$SET ROLE mseg_admin$$);
SELECT * FROM try($$SET ROLE mseg_reidentify$$);
-- 26: calling the trigger functions directly
SELECT * FROM try($$SELECT mseg.pseudonym_trigger()$$);
SELECT * FROM try($$SELECT mseg.config_changed()$$);
-- 27: reading the trigger function's source: a C symbol, nothing secret
SELECT proname, prosrc, prosecdef FROM pg_proc WHERE proname IN ('pseudonym_trigger', 'pseudonym') ORDER BY 1;
-- 28: search_path hijacking: planted objects shadowing what our internal queries use
CREATE TABLE app_schema.domains (name text, key_version int);
INSERT INTO app_schema.domains VALUES ('analytics', 99);
CREATE TABLE app_schema.pseudonym_columns (relid oid, source_column name, target_column name, domain text);
CREATE FUNCTION app_schema.texteq_evil(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR app_schema.= (LEFTARG = text, RIGHTARG = text, FUNCTION = app_schema.texteq_evil);
CREATE FUNCTION app_schema.pseudonym(text, text) RETURNS text LANGUAGE sql AS 'SELECT $1';
SET search_path = app_schema, pg_catalog, public;
INSERT INTO customers (customer_id, email) VALUES (80010, 'hijack@example.com');
RESET search_path;
-- 29: pg_stat_statements shows other roles' statements to nobody but them
SELECT count(*) FILTER (WHERE query <> '<insufficient privilege>') AS foreign_texts_visible
FROM pg_stat_statements WHERE userid <> 'regress_app'::regrole;
\c - postgres

-- Checks as superuser ---------------------------------------------------------------------
-- the hijack attempt changed nothing: the row got the right pseudonym under the right key
SELECT email_pseudonym = mseg.pseudonym(email, 'analytics') AS hijack_row_correct FROM customers WHERE customer_id = 80010;
SELECT key_version FROM mseg.domains WHERE name = 'analytics';
-- rejected statements wrote nothing
SELECT count(*) AS attacker_rows FROM customers WHERE customer_id IN (80001, 80003);
-- no statement text recorded anywhere holds the key, in hex or base64
SELECT count(*) AS statements_with_key FROM pg_stat_statements s,
       (SELECT pg_read_binary_file('/tmp/pg_mseg_regress/mseg.key') AS k) key
WHERE position(encode(key.k, 'hex') IN s.query) > 0 OR position(encode(key.k, 'base64') IN s.query) > 0;

-- 30: error texts reached by an application role name neither key bytes nor the key path
ALTER SYSTEM SET mseg.key_file = '/tmp/pg_mseg_regress/keys/short.key';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
\c - regress_app
SELECT sqlstate, message, detail, hint,
       concat(message, detail, hint) ~ '(SECRET|/tmp/)' AS leaks
FROM try($$INSERT INTO customers (customer_id, email) VALUES (80020, 'x@example.com')$$);
\c - postgres
ALTER SYSTEM RESET mseg.key_file;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT mseg.pseudonym('back@example.com', 'analytics') IS NOT NULL AS key_back;
