-- Every refusal of segment and source functions: bad definitions never half-install.
SELECT count(*) AS segments_before FROM mseg.segments \gset

-- predicates
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', $p$email LIKE '%@example.com'$p$)$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', $p$s IS NOT NULL$p$)$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', $p$true) AS m FROM customers s; DROP TABLE orders; SELECT (true$p$)$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', $p$true) AS m FROM customers s WHERE (true$p$)$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', $p$true) AS m FROM customers s UNION SELECT (false$p$)$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', $p$random() > 0.5$p$)$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', $p$birth_date > clock_timestamp()$p$)$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', $p$loyalty + 1$p$)$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', $p$NULL$p$)$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', $p$loyalty >$p$)$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', $p$no_such_column = 1$p$)$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', $p$EXISTS (SELECT 1 FROM other_people p WHERE p.id = s.customer_id)$p$)$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', $p$EXISTS (SELECT 1 FROM pg_catalog.pg_authid)$p$)$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', $p$EXISTS (SELECT 1 FROM customers_view v)$p$)$$);
CREATE FUNCTION public.sneaky(bigint) RETURNS boolean LANGUAGE sql STABLE AS 'SELECT true';
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', $p$public.sneaky(s.customer_id)$p$)$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', $p$count(*) > 1$p$)$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', $p$current_user = 'postgres'$p$)$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', $p$EXISTS (WITH d AS (DELETE FROM orders RETURNING 1) SELECT 1 FROM d)$p$)$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', '  ')$$);
-- names, purposes, NULLs, duplicates
SELECT * FROM try($$SELECT mseg.define_segment('Bad Name', 'direct_marketing', 'true')$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', 'no_such_purpose', 'true')$$);
SELECT * FROM try($$SELECT mseg.define_segment('loyal', 'direct_marketing', 'true')$$);
SELECT * FROM try($$SELECT mseg.define_segment(NULL, 'direct_marketing', 'true')$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', NULL, 'true')$$);
SELECT * FROM try($$SELECT mseg.define_segment('x', 'direct_marketing', NULL)$$);
SELECT * FROM try($$SELECT mseg.alter_segment('no_such', predicate => 'true')$$);
SELECT * FROM try($$SELECT mseg.alter_segment('loyal')$$);
SELECT * FROM try($$SELECT mseg.alter_segment('loyal', predicate => 'email IS NULL')$$);
SELECT * FROM try($$SELECT mseg.drop_segment('no_such')$$);
SELECT * FROM try($$SELECT mseg.refresh_segments('no_such')$$);
SELECT * FROM try($$SELECT mseg.segment_members('no_such')$$);
SELECT count(*) - :segments_before AS segments_added FROM mseg.segments;

-- sources
SELECT * FROM try($$SELECT mseg.register_source('customers', 'customer_id')$$);
SELECT * FROM try($$SELECT mseg.register_source('orders', 'customer_id')$$);
SELECT * FROM try($$SELECT mseg.register_source('customers_view', 'customer_id')$$);
SELECT * FROM try($$SELECT mseg.register_source('other_people', 'no_such')$$);
CREATE TABLE notes (id int PRIMARY KEY, customer_ref text);
SELECT * FROM try($$SELECT mseg.register_source('notes', 'customer_ref')$$);
SELECT * FROM try($$SELECT mseg.register_source(NULL, 'id')$$);
SELECT * FROM try($$SELECT mseg.unregister_source('orders')$$);
SELECT * FROM try($$SELECT mseg.unregister_source('notes')$$);
SELECT mseg.register_source('notes', 'id');
SELECT mseg.unregister_source('notes');
SELECT count(*) AS notes_triggers FROM pg_trigger WHERE tgrelid = 'notes'::regclass;

-- a purpose bound to a segment cannot be dropped
SELECT * FROM try($$SELECT mseg.drop_purpose('direct_marketing')$$);

-- application roles read sizes only
\c - regress_app
SELECT count(*) > 0 AS sees_sizes FROM mseg.segment_sizes;
SELECT * FROM try($$SELECT mseg.define_segment('mine', 'direct_marketing', 'true')$$);
SELECT * FROM try($$SELECT * FROM mseg.segment_members('loyal')$$);
SELECT * FROM try($$SELECT * FROM mseg.memberships$$);
SELECT * FROM try($$SELECT * FROM mseg.verify_segments()$$);
SELECT * FROM try($$SELECT mseg.refresh_segments()$$);
SELECT * FROM try($$SET mseg.min_group_size = 2$$);
SELECT * FROM try($$SELECT mseg._segments_refresh_subject(1)$$);
-- the application's writes still maintain memberships (the trigger runs as the extension)
INSERT INTO customers (customer_id, email, loyalty) VALUES (90100, 'app-seg@example.com', 99);
\c - postgres
SELECT 90100 IN (SELECT mseg.segment_members('loyal')) AS app_insert_member;
SELECT count(*) AS differences FROM mseg.verify_segments();
