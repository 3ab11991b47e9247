-- Pseudonym columns: added, backfilled in batches, kept right by the trigger on INSERT,
-- UPDATE and COPY, undone by drop_pseudonym_column; every refusal.
CREATE TABLE customers (
    customer_id bigint PRIMARY KEY,
    email text,
    phone varchar(20),
    loyalty int
);
INSERT INTO customers
SELECT g, 'user' || g || '@example.com', '+49' || g, g % 100 FROM generate_series(1, 20000) g;

SET mseg.backfill_batch_blocks = 10;
SELECT mseg.add_pseudonym_column('public.customers', 'email', 'analytics');
SELECT mseg.add_pseudonym_column('customers', 'phone', 'crm', column_name => 'phone_crm');
SELECT mseg.add_pseudonym_column('customers', 'customer_id', 'crm', column_name => 'id_crm');
RESET mseg.backfill_batch_blocks;

SELECT relid, source_column, target_column, domain FROM mseg.pseudonym_columns ORDER BY 1, 3;
SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'customers'::regclass AND NOT tgisinternal;

-- the backfill is complete and exact
SELECT count(*) AS rows,
       count(*) FILTER (WHERE email_pseudonym = mseg.pseudonym(email, 'analytics')) AS email_ok,
       count(*) FILTER (WHERE phone_crm = mseg.pseudonym(phone, 'crm')) AS phone_ok,
       count(*) FILTER (WHERE id_crm = mseg.pseudonym(customer_id::text, 'crm')) AS id_ok
FROM customers;
-- nothing left in progress once committed
SELECT count(*) AS in_progress FROM mseg.progress;

-- INSERT, INSERT ... SELECT, UPDATE of the source, NULL source, forged pseudonym, COPY
INSERT INTO customers VALUES (30001, 'new@example.com', '+4930001', 1);
INSERT INTO customers SELECT g, 'bulk' || g || '@example.com', NULL, 0 FROM generate_series(30002, 30100) g;
UPDATE customers SET email = 'renamed@example.com' WHERE customer_id = 1;
UPDATE customers SET email = NULL WHERE customer_id = 2;
UPDATE customers SET email_pseudonym = 'forged', phone_crm = 'forged' WHERE customer_id = 3;
INSERT INTO customers (customer_id, email, email_pseudonym) VALUES (30200, 'x@example.com', 'chosen');
COPY customers (customer_id, email, phone) FROM stdin;
40001	copy1@example.com	+4940001
40002	copy2@example.com	\N
\.
SELECT count(*) AS wrong
FROM customers
WHERE email_pseudonym IS DISTINCT FROM mseg.pseudonym(email, 'analytics')
   OR phone_crm IS DISTINCT FROM mseg.pseudonym(phone, 'crm')
   OR id_crm IS DISTINCT FROM mseg.pseudonym(customer_id::text, 'crm');
SELECT customer_id, email, email_pseudonym IS NULL AS pseudonym_null FROM customers WHERE customer_id = 2;

-- an UPDATE that does not touch a watched column leaves the pseudonyms alone
UPDATE customers SET loyalty = loyalty + 1 WHERE customer_id = 4;

-- the trigger sees the final source value written by earlier BEFORE triggers
CREATE FUNCTION lower_email() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.email := lower(NEW.email); RETURN NEW; END $$;
CREATE TRIGGER normalise_email BEFORE INSERT OR UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION lower_email();
INSERT INTO customers VALUES (50001, 'MiXeD@Example.COM', NULL, 0);
SELECT email, email_pseudonym = mseg.pseudonym('mixed@example.com', 'analytics') AS matches_final_value
FROM customers WHERE customer_id = 50001;
DROP TRIGGER normalise_email ON customers;

-- errors
CREATE VIEW customers_v AS SELECT * FROM customers;
CREATE TABLE parted (id int, email text) PARTITION BY RANGE (id);
SELECT * FROM try($$SELECT mseg.add_pseudonym_column(NULL, 'email', 'analytics')$$);
SELECT * FROM try($$SELECT mseg.add_pseudonym_column('customers', NULL, 'analytics')$$);
SELECT * FROM try($$SELECT mseg.add_pseudonym_column('customers', 'email', NULL)$$);
SELECT * FROM try($$SELECT mseg.add_pseudonym_column('no_such_table', 'email', 'analytics')$$);
SELECT * FROM try($$SELECT mseg.add_pseudonym_column('customers', 'no_such_column', 'analytics')$$);
SELECT * FROM try($$SELECT mseg.add_pseudonym_column('customers', 'email', 'analytics')$$);
SELECT * FROM try($$SELECT mseg.add_pseudonym_column('customers', 'email', 'analytics', column_name => 'phone')$$);
SELECT * FROM try($$SELECT mseg.add_pseudonym_column('customers', 'email', 'analytics', column_name => repeat('c', 64))$$);
SELECT * FROM try($$SELECT mseg.add_pseudonym_column('customers', 'email', 'Bad Domain', column_name => 'e2')$$);
SELECT * FROM try($$SELECT mseg.add_pseudonym_column('customers_v', 'email', 'analytics', column_name => 'e2')$$);
SELECT * FROM try($$SELECT mseg.add_pseudonym_column('parted', 'email', 'analytics')$$);
SELECT * FROM try($$SELECT mseg.drop_pseudonym_column('customers', 'email')$$);
SELECT * FROM try($$SELECT mseg.drop_pseudonym_column('customers', NULL)$$);
SELECT * FROM try($$SELECT mseg.drop_pseudonym_column(NULL, 'email_pseudonym')$$);
SELECT * FROM try($$SELECT mseg.drop_domain('analytics')$$);
-- a failed call leaves nothing behind
SELECT count(*) AS columns_configured FROM mseg.pseudonym_columns;
SELECT count(*) AS e2_columns FROM pg_attribute WHERE attrelid = 'customers'::regclass AND attname = 'e2';

-- rotating a domain rewrites its columns (and only those)
CREATE TEMP TABLE before AS SELECT customer_id, email_pseudonym, phone_crm FROM customers;
SELECT mseg.rotate_domain('crm');
SELECT count(*) FILTER (WHERE c.phone_crm = b.phone_crm) AS phone_unchanged,
       count(*) FILTER (WHERE c.email_pseudonym = b.email_pseudonym) AS email_unchanged,
       count(*) FILTER (WHERE c.phone_crm IS DISTINCT FROM mseg.pseudonym(c.phone, 'crm')) AS phone_wrong
FROM customers c JOIN before b USING (customer_id);

-- a drop that PostgreSQL refuses (a view depends on the column) changes nothing
SELECT * FROM try($$SELECT mseg.drop_pseudonym_column('customers', 'id_crm')$$);
SELECT count(*) AS columns_configured FROM mseg.pseudonym_columns;
DROP VIEW customers_v;
-- dropping a column removes it from the trigger; dropping the last removes the trigger
SELECT mseg.drop_pseudonym_column('customers', 'id_crm');
SELECT mseg.drop_pseudonym_column('customers', 'phone_crm');
SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'customers'::regclass AND NOT tgisinternal;
SELECT mseg.drop_pseudonym_column('customers', 'email_pseudonym');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'customers'::regclass AND NOT tgisinternal;
SELECT count(*) AS columns_configured FROM mseg.pseudonym_columns;

-- a trigger attached by hand to an unconfigured table refuses to run
CREATE TABLE rogue (email text, p text);
CREATE TRIGGER rogue BEFORE INSERT ON rogue FOR EACH ROW EXECUTE FUNCTION mseg.pseudonym_trigger();
SELECT * FROM try($$INSERT INTO rogue VALUES ('chosen@example.com', NULL)$$);
CREATE TRIGGER rogue_after AFTER INSERT ON customers FOR EACH STATEMENT EXECUTE FUNCTION mseg.pseudonym_trigger();
SELECT * FROM try($$INSERT INTO customers (customer_id) VALUES (60000)$$);
DROP TABLE rogue;
DROP TRIGGER rogue_after ON customers;

-- set up again for the privilege and security files
SELECT mseg.add_pseudonym_column('customers', 'email', 'analytics');
