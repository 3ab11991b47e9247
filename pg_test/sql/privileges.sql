-- The privilege model: who may execute what, and what each role can actually do.
CREATE ROLE regress_admin LOGIN IN ROLE mseg_admin;
CREATE ROLE regress_app LOGIN IN ROLE mseg_app;
CREATE ROLE regress_export LOGIN IN ROLE mseg_export;
CREATE ROLE regress_dpo LOGIN IN ROLE mseg_reidentify;
CREATE ROLE regress_nobody LOGIN;

-- EXECUTE per function and role
SELECT p.oid::regprocedure AS function,
       has_function_privilege('regress_admin', p.oid, 'EXECUTE') AS admin,
       has_function_privilege('regress_app', p.oid, 'EXECUTE') AS app,
       has_function_privilege('regress_export', p.oid, 'EXECUTE') AS export,
       has_function_privilege('regress_dpo', p.oid, 'EXECUTE') AS dpo,
       has_function_privilege('regress_nobody', p.oid, 'EXECUTE') AS nobody
FROM pg_proc p WHERE p.pronamespace = 'mseg'::regnamespace ORDER BY p.oid::regprocedure::text;

-- SELECT / INSERT / UPDATE / DELETE per table or view and role
SELECT c.oid::regclass AS relation, r.rolname,
       has_table_privilege(r.rolname, c.oid, 'SELECT') AS sel,
       has_table_privilege(r.rolname, c.oid, 'INSERT') AS ins,
       has_table_privilege(r.rolname, c.oid, 'UPDATE') AS upd,
       has_table_privilege(r.rolname, c.oid, 'DELETE') AS del
FROM pg_class c, (VALUES ('regress_admin'), ('regress_app'), ('regress_export'), ('regress_dpo'), ('regress_nobody')) r(rolname)
WHERE c.relnamespace = 'mseg'::regnamespace AND c.relkind IN ('r', 'v')
ORDER BY c.relname, r.rolname;

-- schema usage
SELECT r.rolname, has_schema_privilege(r.rolname, 'mseg', 'USAGE') AS usage, has_schema_privilege(r.rolname, 'mseg', 'CREATE') AS "create"
FROM (VALUES ('regress_admin'), ('regress_app'), ('regress_dpo'), ('regress_nobody')) r(rolname) ORDER BY 1;

-- The admin role administers, on tables it owns.
CREATE TABLE admin_owned (id int, email text);
ALTER TABLE admin_owned OWNER TO regress_admin;
INSERT INTO admin_owned VALUES (1, 'a@example.com');
SET ROLE regress_admin;
SELECT mseg.create_domain('admin_domain');
SELECT mseg.add_pseudonym_column('admin_owned', 'email', 'admin_domain');
SELECT email_pseudonym = mseg.pseudonym(email, 'admin_domain') AS filled FROM admin_owned;
SELECT mseg.key_fingerprint() ~ '^mseg1:' AS fingerprint_visible;
SELECT count(*) >= 1 AS domains_visible FROM mseg.domains;
-- ... but not on tables it does not own, and it cannot reverse tokens
SELECT * FROM try($$SELECT mseg.add_pseudonym_column('customers', 'phone', 'admin_domain')$$);
SELECT * FROM try($$SELECT mseg.drop_pseudonym_column('customers', 'email_pseudonym')$$);
SELECT * FROM try($$SELECT mseg.detoken(mseg.token('x', 'admin_domain'), 'admin_domain')$$);
-- nor write the configuration tables directly
SELECT * FROM try($$DELETE FROM mseg.pseudonym_columns$$);
SELECT * FROM try($$UPDATE mseg.domains SET key_version = 1$$);
RESET ROLE;
SELECT count(*) AS still_configured FROM mseg.pseudonym_columns WHERE relid = 'customers'::regclass;

-- The re-identification role reverses tokens and does nothing else.
SELECT mseg.token('dana@example.com', 'admin_domain') AS tok \gset
SET ROLE regress_dpo;
SELECT mseg.detoken(:'tok', 'admin_domain') AS reidentified;
SELECT * FROM try($$SELECT mseg.token('dana@example.com', 'admin_domain')$$);
SELECT * FROM try($$SELECT mseg.pseudonym('dana@example.com', 'admin_domain')$$);
SELECT * FROM try($$SELECT * FROM mseg.domains$$);
RESET ROLE;

-- An application role writes customers; the trigger (running as that role) fills the pseudonym.
GRANT SELECT (customer_id, loyalty), INSERT (customer_id, email, phone, loyalty) ON customers TO mseg_app;
SET ROLE regress_app;
INSERT INTO customers (customer_id, email, loyalty) VALUES (70001, 'app@example.com', 5);
SELECT customer_id, loyalty FROM customers WHERE customer_id = 70001;
RESET ROLE;
SELECT email_pseudonym = mseg.pseudonym('app@example.com', 'analytics') AS app_insert_pseudonymised
FROM customers WHERE customer_id = 70001;
