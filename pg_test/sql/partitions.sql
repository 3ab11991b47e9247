-- Declarative partitioning: a partitioned subject table and a partitioned source; rows routed
-- through the parent and written straight into a partition; pseudonym columns declared once on the
-- parent; partitions created, attached, detached, truncated and dropped. After every step the
-- memberships equal a from-scratch evaluation (verify_segments() is empty).
CREATE DATABASE mseg_parts TEMPLATE template0;
\c mseg_parts
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
CREATE FUNCTION diffs() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM mseg.verify_segments()';

CREATE TABLE customers (customer_id bigint NOT NULL, email text, city text, loyalty int, PRIMARY KEY (customer_id))
    PARTITION BY RANGE (customer_id);
CREATE TABLE customers_a PARTITION OF customers FOR VALUES FROM (1) TO (1000);
CREATE TABLE customers_b PARTITION OF customers FOR VALUES FROM (1000) TO (2000);
INSERT INTO customers SELECT g, 'u' || g || '@example.com', CASE WHEN g % 3 = 0 THEN 'Berlin' ELSE 'Bonn' END, g % 100
FROM generate_series(1, 1500) g;
CREATE TABLE orders (order_id bigint, customer_id bigint NOT NULL, ordered date NOT NULL, amount numeric)
    PARTITION BY RANGE (ordered);
CREATE TABLE orders_2025 PARTITION OF orders FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE orders_2026 PARTITION OF orders FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO orders SELECT g, 1 + g % 1500, date '2025-06-01' + (g % 300), g % 50 FROM generate_series(1, 3000) g;

-- a partitioned subject table and a partitioned source are registered like any table
SELECT mseg.register_subjects('customers', key_column => 'customer_id');
SELECT mseg.classify('customers', 'email', 'direct');
SELECT mseg.classify('customers', 'city', 'quasi');
SELECT mseg.register_source('orders', 'customer_id');
SELECT mseg.define_purpose('dm', '{legitimate_interest}', '2 years');
SELECT mseg.define_segment('loyal_berlin', 'dm', $$s.city = 'Berlin' AND s.loyalty >= 50$$);
SELECT mseg.define_segment('big_2026', 'dm',
    $$EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = s.customer_id AND o.ordered >= date '2026-01-01' AND o.amount > 40)$$);
-- the statement triggers sit on the parents and on every partition (a statement fires the
-- triggers of the table it names)
SELECT c.relname, count(*) AS segment_triggers FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE t.tgname LIKE 'zz_mseg_segments%' GROUP BY 1 ORDER BY 1;
SELECT diffs();

-- a pseudonym column declared once on the partitioned parent: every partition has it, filled
SELECT mseg.create_domain('analytics');
SELECT mseg.add_pseudonym_column('customers', 'email', 'analytics');
SELECT count(*) FILTER (WHERE email_pseudonym = mseg.pseudonym(email, 'analytics')) AS right,
       count(*) AS rows FROM customers;
SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE t.tgname = 'zz_mseg_pseudonym' ORDER BY 1;

-- rows routed through the parent, and written straight into a partition
INSERT INTO customers VALUES (1600, 'new1600@example.com', 'Berlin', 99);
INSERT INTO customers_a VALUES (900, 'x', 'Berlin', 77) ON CONFLICT DO NOTHING;
INSERT INTO customers_b VALUES (1700, 'new1700@example.com', 'Berlin', 60);
SELECT 1600 IN (SELECT mseg.segment_members('loyal_berlin')) AS via_parent,
       1700 IN (SELECT mseg.segment_members('loyal_berlin')) AS into_partition;
UPDATE customers_b SET loyalty = 1 WHERE customer_id = 1700;         -- straight into the partition
UPDATE customers SET city = 'Bonn' WHERE customer_id = 1600;           -- through the parent
SELECT 51 IN (SELECT mseg.segment_members('loyal_berlin')) AS member_51;
UPDATE customers SET customer_id = 1998 WHERE customer_id = 51;       -- moves between partitions
SELECT count(*) FILTER (WHERE m IN (1600, 1700, 51)) AS left, count(*) FILTER (WHERE m = 1998) AS moved_in
FROM mseg.segment_members('loyal_berlin') m;
SELECT email_pseudonym = mseg.pseudonym(email, 'analytics') AS partition_row_pseudonymised FROM customers WHERE customer_id = 1700;
DELETE FROM customers_a WHERE customer_id = 6;
SELECT diffs();

-- source rows routed through the parent, and straight into a partition
INSERT INTO orders VALUES (90001, 10, '2026-03-01', 45);
INSERT INTO orders_2026 VALUES (90002, 11, '2026-04-01', 49);
SELECT count(*) FILTER (WHERE m IN (10, 11)) AS new_big_2026 FROM mseg.segment_members('big_2026') m;
DELETE FROM orders_2026 WHERE order_id = 90002;
SELECT 11 IN (SELECT mseg.segment_members('big_2026')) AS still_member;
SELECT diffs();

-- a future partition: created under the parent, it gets the triggers (segments and pseudonyms)
CREATE TABLE customers_c PARTITION OF customers FOR VALUES FROM (2000) TO (3000);
SELECT count(*) FILTER (WHERE t.tgname LIKE 'zz_mseg_segments%') AS segment_triggers, count(*) FILTER (WHERE t.tgname = 'zz_mseg_pseudonym') AS pseudonym_trigger
FROM pg_trigger t WHERE t.tgrelid = 'customers_c'::regclass AND (t.tgname LIKE 'zz_mseg%');
INSERT INTO customers_c VALUES (2001, 'c2001@example.com', 'Berlin', 90);
SELECT 2001 IN (SELECT mseg.segment_members('loyal_berlin')) AS member_from_new_partition,
       (SELECT email_pseudonym = mseg.pseudonym(email, 'analytics') FROM customers WHERE customer_id = 2001) AS pseudonymised;
SELECT diffs();

-- attach a partition that already holds rows (and forged pseudonyms): its subjects join, its
-- pseudonym column is computed
CREATE TABLE customers_d (LIKE customers INCLUDING ALL);
INSERT INTO customers_d SELECT g, 'd' || g || '@example.com', 'Berlin', 95, 'forged' FROM generate_series(3001, 3020) g;
ALTER TABLE customers ATTACH PARTITION customers_d FOR VALUES FROM (3000) TO (4000);
SELECT count(*) AS joined FROM mseg.segment_members('loyal_berlin') m WHERE m BETWEEN 3001 AND 3020;
SELECT count(*) FILTER (WHERE email_pseudonym = mseg.pseudonym(email, 'analytics')) AS recomputed,
       count(*) FILTER (WHERE email_pseudonym = 'forged') AS forged_left FROM customers_d;
SELECT diffs();
-- detach it: its subjects leave every segment, and it keeps no segment trigger
ALTER TABLE customers DETACH PARTITION customers_d;
SELECT count(*) AS still_members FROM mseg.segment_members('loyal_berlin') m WHERE m BETWEEN 3001 AND 3020;
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgrelid = 'customers_d'::regclass AND tgname LIKE 'zz_mseg_segments%';
SELECT diffs();

-- a source partition attached with rows, detached, then truncated and dropped
CREATE TABLE orders_2027 (LIKE orders);
INSERT INTO orders_2027 VALUES (95001, 20, '2027-02-01', 48), (95002, 21, '2027-03-01', 47);
ALTER TABLE orders ATTACH PARTITION orders_2027 FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
SELECT count(*) FILTER (WHERE m IN (20, 21)) AS joined_by_attached_orders FROM mseg.segment_members('big_2026') m;
SELECT diffs();
ALTER TABLE orders DETACH PARTITION orders_2027;
SELECT diffs();
TRUNCATE orders_2026;
SELECT diffs();
DROP TABLE orders_2025;
SELECT diffs();
TRUNCATE customers_a;
SELECT count(*) AS members_of_truncated_partition FROM mseg.memberships m WHERE m.subject_key < 1000 AND cardinality(m.segments) > 0;
SELECT diffs();
DROP TABLE customers_b;
SELECT count(*) AS members_of_dropped_partition FROM mseg.memberships m WHERE m.subject_key BETWEEN 1000 AND 1999 AND cardinality(m.segments) > 0;
SELECT diffs();

-- an export over the partitioned subject table
SELECT mseg.add_partner('p', '{dm}', k => 2);
SELECT count(*) > 0 AS exported FROM mseg.export_variant_twins('p');
SELECT ok FROM mseg.verify_audit_log();

\c mseg_regress postgres
DROP DATABASE mseg_parts WITH (FORCE);
