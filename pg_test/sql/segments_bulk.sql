-- Segment upkeep in bulk: a statement over many subjects reads each source with one aggregate
-- query per subject (the predicates' bulk form) instead of one subquery per predicate. Here every
-- statement counts as bulk, and after each one every maintained set is compared with a
-- from-scratch evaluation of the original predicates (mseg.verify_segments).
SET client_min_messages = notice;
SET mseg.bulk_statement_subjects = 1;
SHOW mseg.bulk_statement_subjects;

-- a source keyed by an int4 column (the subject key is int8), with an inheritance child
CREATE TABLE bulk_src (id serial PRIMARY KEY, cust int4, kind text, qty int4, note text);
CREATE TABLE bulk_src_child () INHERITS (bulk_src);
CREATE INDEX ON bulk_src (cust);
CREATE INDEX ON bulk_src_child (cust);
SELECT mseg.register_source('bulk_src', 'cust');
SELECT mseg.register_source('bulk_src_child', 'cust');
INSERT INTO bulk_src (cust, kind, qty, note) VALUES
    (1, 'a', 1, 'apple'), (1, 'b', 5, NULL),          -- two kinds, a NULL note
    (2, 'x', NULL, NULL),                             -- a NULL quantity only
    (3, 'a', 2, 'avocado'), (3, 'a', 3, 'banana'),
    (NULL, 'a', 9, 'orphan'),                         -- no subject at all
    (99999, 'a', 9, 'nobody');                        -- a key without a subject row
INSERT INTO bulk_src_child (cust, kind, qty, note) VALUES (4, 'c', 7, 'child'), (3, 'x', 1, 'child');

-- shapes that are read in the bulk form, and one that stays correlated
SELECT mseg.define_segment('bulk_any', 'direct_marketing',
    $$EXISTS (SELECT 1 FROM bulk_src b WHERE b.cust = s.customer_id)$$);
SELECT mseg.define_segment('bulk_no_x', 'direct_marketing',
    $$NOT EXISTS (SELECT 1 FROM bulk_src b WHERE s.customer_id = b.cust AND b.kind = 'x')$$);
SELECT mseg.define_segment('bulk_two_big', 'direct_marketing',
    $$(SELECT count(*) FROM bulk_src b WHERE b.cust = s.customer_id AND b.qty > 1) >= 2$$);
SELECT mseg.define_segment('bulk_sum_null', 'direct_marketing',
    $$(SELECT sum(b.qty) FROM bulk_src b WHERE b.cust = s.customer_id) IS NULL AND s.customer_id <= 10$$);
SELECT mseg.define_segment('bulk_only_parent_max', 'direct_marketing',
    $$COALESCE((SELECT max(b.qty) FROM ONLY bulk_src b WHERE b.cust = s.customer_id AND b.kind <> 'x'), 0) BETWEEN 1 AND 4$$);
SELECT mseg.define_segment('bulk_kinds', 'direct_marketing',
    $$(SELECT count(DISTINCT b.kind) FROM bulk_src b WHERE b.cust = s.customer_id) >= 2$$);
SELECT mseg.define_segment('bulk_note_a', 'direct_marketing',
    $$EXISTS (SELECT 1 FROM bulk_src b WHERE b.cust = s.customer_id AND b.note LIKE 'a%')$$);
SELECT mseg.define_segment('bulk_correlated', 'direct_marketing',
    $$EXISTS (SELECT 1 FROM bulk_src b WHERE b.cust = s.customer_id AND b.qty > s.customer_id)$$);
SELECT mseg.define_segment('bulk_mixed', 'newsletter',
    $$s.customer_id <= 10 AND (EXISTS (SELECT 1 FROM bulk_src b WHERE b.cust = s.customer_id AND b.kind = 'a')
      OR (SELECT count(*) FROM bulk_src b WHERE b.cust = s.customer_id AND b.qty > s.customer_id) > 0)$$);
SELECT count(*) AS differences FROM mseg.verify_segments();

-- what the bulk form must give: no rows (false / the aggregate over nothing), NULL
-- conditions (not true), an inheritance child (read unless ONLY)
CREATE VIEW bulk_members AS
SELECT s AS subject,
       ARRAY(SELECT g.name FROM mseg.memberships m JOIN mseg.segments g ON g.segment_id = ANY (m.segments)
             WHERE m.subject_key = s AND g.name LIKE 'bulk%' ORDER BY g.name) AS segments
FROM unnest(ARRAY[1, 2, 3, 4, 5]) s;
SELECT * FROM bulk_members;

-- source changes: INSERT (one statement, several subjects), UPDATE, DELETE, COPY, TRUNCATE
INSERT INTO bulk_src (cust, kind, qty, note) SELECT g, 'a', g % 4, 'a' || g FROM generate_series(5, 40) g;
SELECT count(*) AS differences FROM mseg.verify_segments();
UPDATE bulk_src SET kind = 'x' WHERE cust IN (1, 5, 6);
UPDATE bulk_src SET cust = 2 WHERE cust = 7;                  -- moves rows between subjects
SELECT count(*) AS differences FROM mseg.verify_segments();
DELETE FROM bulk_src WHERE cust BETWEEN 8 AND 20;
COPY bulk_src (cust, kind, qty, note) FROM stdin;
8	b	3	ant
8	c	3	\N
21	\N	\N	\N
\.
SELECT count(*) AS differences FROM mseg.verify_segments();
SELECT * FROM bulk_members;

-- subject changes: new subjects that already have source rows, key and column updates, deletes
INSERT INTO bulk_src (cust, kind, qty, note) VALUES (88801, 'a', 2, 'ahead'), (88801, 'b', 3, 'ahead'), (88802, 'x', 1, 'x');
INSERT INTO customers (customer_id, email, loyalty) VALUES (88801, 'b1@example.com', 1), (88802, 'b2@example.com', 2), (88803, 'b3@example.com', 3);
SELECT s AS subject, ARRAY(SELECT g.name FROM mseg.memberships m JOIN mseg.segments g ON g.segment_id = ANY (m.segments)
                           WHERE m.subject_key = s AND g.name LIKE 'bulk%' ORDER BY g.name) AS segments
FROM unnest(ARRAY[88801, 88802, 88803]) s;
SELECT count(*) AS differences FROM mseg.verify_segments();
UPDATE customers SET customer_id = 88804 WHERE customer_id = 88803;
UPDATE customers SET loyalty = loyalty + 1 WHERE customer_id BETWEEN 1 AND 50;
DELETE FROM customers WHERE customer_id = 88802;
SELECT count(*) AS differences FROM mseg.verify_segments();

-- TRUNCATE of the child and the parent source; refresh in bulk batches
TRUNCATE bulk_src_child;
SELECT count(*) AS differences FROM mseg.verify_segments();
SELECT mseg.refresh_segments() AS changed_by_refresh;
TRUNCATE bulk_src;
SELECT count(*) AS differences FROM mseg.verify_segments();
SELECT * FROM bulk_members;

-- the same statements maintained per subject give the same sets
RESET mseg.bulk_statement_subjects;
INSERT INTO bulk_src (cust, kind, qty, note) SELECT g, 'a', g % 4, 'a' || g FROM generate_series(1, 40) g;
SELECT count(*) AS differences FROM mseg.verify_segments();
SET mseg.bulk_statement_subjects = 1;
DELETE FROM bulk_src WHERE cust % 2 = 0;
SELECT count(*) AS differences FROM mseg.verify_segments();

-- only a superuser sets the threshold
SET ROLE mseg_admin;
SET mseg.bulk_statement_subjects = 5;
RESET ROLE;

-- clean up
SELECT mseg.drop_segment(name) FROM mseg.segments WHERE name LIKE 'bulk%' ORDER BY name;
SELECT mseg.unregister_source('bulk_src_child');
SELECT mseg.unregister_source('bulk_src');
DROP VIEW bulk_members;
DROP TABLE bulk_src CASCADE;
DELETE FROM customers WHERE customer_id >= 88801;
RESET mseg.bulk_statement_subjects;
SELECT count(*) AS differences FROM mseg.verify_segments();
