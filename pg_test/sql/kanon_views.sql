-- k-views without side channels. A reader's query, whatever its conditions (leakproof ones,
-- which PostgreSQL pushes into security_barrier views below their own conditions, or leaky
-- ones) and whatever EXPLAIN ANALYZE it runs, sees nothing computed from suppressed rows: the
-- view is a scan of mseg.kanon_view_rows, which computes the k-checked rows inside, as the view's
-- owner; no condition of the reader is pushed into a function scan.

-- 600 customers in three cities, and a hidden one: the only customer in its city
CREATE TABLE shop (id bigint PRIMARY KEY, email text, city text, points int, signup date);
INSERT INTO shop SELECT g, 's' || g || '@example.com', (ARRAY['Berlin', 'Hamburg', 'Köln'])[1 + g % 3],
                        (g * 37) % 1000, date '2020-01-01' + g % 365
FROM generate_series(1, 600) g;
INSERT INTO shop VALUES (9001, 'hidden@example.com', 'Hiddenburg', 4242, date '2019-07-17');
SELECT mseg.classify('shop', 'email', 'direct');
SELECT mseg.classify('shop', 'city', 'quasi');
SELECT mseg.classify('shop', 'points', 'attribute');
SELECT mseg.classify('shop', 'signup', 'attribute');
GRANT SELECT ON shop TO regress_admin;
SET ROLE regress_admin;
SELECT mseg.create_kanon_view('public.shop_k', 'shop', 10, levels => ARRAY[0], key_column => 'id');
GRANT SELECT ON shop_k TO regress_app;
RESET ROLE;
-- the view reads a function scan and nothing else
-- (normalised: PostgreSQL versions print other spacing, and 16 on leave out the r.)
SELECT regexp_replace(regexp_replace(regexp_replace(pg_get_viewdef('shop_k'::regclass), '\s+', ' ', 'g'), '\mr\.', '', 'g'),
                      'kanon_view_rows\(\d+\)', 'kanon_view_rows(<id>)') AS definition;
SELECT (regexp_match(pg_get_viewdef('shop_k'::regclass), 'kanon_view_rows\((\d+)\)'))[1] AS shop_k_id \gset
SELECT city, count(*) FROM shop_k GROUP BY city ORDER BY city;

\c - regress_app
-- (row counts printed as integers: PostgreSQL 18 prints rows=0.00)
CREATE FUNCTION pg_temp.plan(q text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE line text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (ANALYZE, BUFFERS OFF, COSTS OFF, TIMING OFF, SUMMARY OFF) ' || q LOOP
        RETURN NEXT regexp_replace(line, 'rows=(\d+)\.\d+', 'rows=\1', 'g');
    END LOOP;
END $$;
-- every row count of a plan, in order (what a binary search over EXPLAIN ANALYZE reads)
CREATE FUNCTION pg_temp.counts(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE j json;
BEGIN
    EXECUTE 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF, FORMAT JSON) ' || q INTO j;
    RETURN (SELECT string_agg(m[1] || '=' || m[2], ' ') FROM regexp_matches(j::text, '"(Actual Rows|Rows Removed by Filter)": (\d+)', 'g') m);
END $$;
-- a leaky condition: it would tell the reader about every row it is shown
CREATE FUNCTION pg_temp.peek(city text, points int) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
    IF city = 'Hiddenburg' THEN
        RAISE NOTICE 'peeked at the hidden customer: % points', points;
    END IF;
    RETURN true;
END $$;

-- leakproof conditions (text and integer comparisons): the only node counts released rows
SELECT * FROM pg_temp.plan($$SELECT * FROM shop_k WHERE city = 'Hiddenburg'$$);
SELECT * FROM pg_temp.plan($$SELECT * FROM shop_k WHERE city = 'Hiddenburg' AND points > 4000$$);
-- a leaky condition sees released rows only: no notice
SELECT count(*) AS rows_peeked FROM shop_k WHERE pg_temp.peek(city, points);
SELECT * FROM pg_temp.plan($$SELECT * FROM shop_k WHERE pg_temp.peek(city, points)$$);
-- the binary search of the measurement: probes on both sides of the hidden customer's points
-- (4242) and signup date (2019-07-17) give plans with the same row counts
SELECT count(DISTINCT pg_temp.counts(format($$SELECT * FROM shop_k WHERE city = 'Hiddenburg' AND points < %s$$, x))) AS distinct_plans_points,
       min(pg_temp.counts(format($$SELECT * FROM shop_k WHERE city = 'Hiddenburg' AND points < %s$$, x))) AS counts
FROM generate_series(0, 10000, 250) x;
SELECT count(DISTINCT pg_temp.counts(format($$SELECT * FROM shop_k WHERE city = 'Hiddenburg' AND signup < %L$$, d))) AS distinct_plans_signup
FROM generate_series(date '2019-01-01', date '2020-12-31', interval '1 month') d;
SELECT count(DISTINCT pg_temp.counts(format($$SELECT * FROM shop_k WHERE city = %L$$, c))) AS distinct_plans_city
FROM unnest(ARRAY['Hiddenburg', 'Atlantis', 'Nowhere']) c;
-- the attack itself, run to the end: it converges on the end of its range, not on 4242
CREATE FUNCTION pg_temp.binary_search() RETURNS int LANGUAGE plpgsql AS $f$
DECLARE lo int := 0; hi int := 10000; mid int; none text;
BEGIN
    none := pg_temp.counts($$SELECT * FROM shop_k WHERE city = 'Hiddenburg' AND points < 0$$);
    WHILE lo < hi LOOP
        mid := (lo + hi) / 2;
        IF pg_temp.counts(format($$SELECT * FROM shop_k WHERE city = 'Hiddenburg' AND points <= %s$$, mid)) <> none THEN
            hi := mid;
        ELSE
            lo := mid + 1;
        END IF;
    END LOOP;
    RETURN lo;
END $f$;
SELECT pg_temp.binary_search() AS recovered_points;
\c - postgres

-- what the reader's plans show does not move when suppressed rows change
UPDATE shop SET points = 10, signup = date '2021-01-01' WHERE id = 9001;
INSERT INTO shop VALUES (9002, 'hidden2@example.com', 'Hiddenburg', 7, date '2018-01-01');
\c - regress_app
CREATE FUNCTION pg_temp.counts(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE j json;
BEGIN
    EXECUTE 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF, FORMAT JSON) ' || q INTO j;
    RETURN (SELECT string_agg(m[1] || '=' || m[2], ' ') FROM regexp_matches(j::text, '"(Actual Rows|Rows Removed by Filter)": (\d+)', 'g') m);
END $$;
SELECT count(DISTINCT pg_temp.counts(format($$SELECT * FROM shop_k WHERE city = 'Hiddenburg' AND points < %s$$, x))) AS distinct_plans_points,
       min(pg_temp.counts(format($$SELECT * FROM shop_k WHERE city = 'Hiddenburg' AND points < %s$$, x))) AS counts
FROM generate_series(0, 10000, 250) x;
-- the function is the view: a reader may call it, and gets what the view shows
SELECT count(*) AS rows_by_function FROM mseg.kanon_view_rows(:shop_k_id) AS r(city text, points int, signup date);
SELECT * FROM try(format($$SELECT * FROM mseg.kanon_view_rows(%s) AS r(city int, points int, signup date)$$, :shop_k_id));
\c - regress_export
-- ... but only a reader of the view
SELECT * FROM try(format($$SELECT count(*) FROM mseg.kanon_view_rows(%s) AS r(city text, points int, signup date)$$, :shop_k_id));
SELECT * FROM try($$SELECT * FROM shop_k$$);
\c - postgres

-- an error raised while computing the rows could quote a suppressed row: the reader gets a
-- message without it (the server log has the cause)
CREATE TABLE shop_regions (child text, parent text);
INSERT INTO shop_regions VALUES ('Berlin', 'east'), ('Hamburg', 'north'), ('Köln', 'west'),
                                ('east', '*'), ('north', '*'), ('west', '*');
CREATE TABLE shop2 (id bigint PRIMARY KEY, city text, points int);
INSERT INTO shop2 SELECT id, city, points FROM shop;
SELECT mseg.classify('shop2', 'city', 'quasi', hierarchy => 'category:public.shop_regions');
SELECT mseg.classify('shop2', 'points', 'attribute');
GRANT SELECT ON shop2, shop_regions TO regress_admin;
SET ROLE regress_admin;
SELECT mseg.create_kanon_view('public.shop2_k', 'shop2', 10, levels => ARRAY[1], key_column => 'id');
GRANT SELECT ON shop2_k TO regress_app;
RESET ROLE;
\c - regress_app
SELECT * FROM try($$SELECT count(*) FROM shop2_k WHERE city = 'east'$$);
\c - postgres
DELETE FROM shop2 WHERE city NOT IN ('Berlin', 'Hamburg', 'Köln');
SELECT city, count(*) FROM shop2_k GROUP BY city ORDER BY city;

-- the view's owner computes its rows: never a superuser, also not after ALTER VIEW … OWNER
ALTER VIEW shop_k OWNER TO postgres;
\c - regress_app
SELECT * FROM try($$SELECT count(*) FROM shop_k$$);
\c - postgres
ALTER VIEW shop_k OWNER TO regress_admin;
SELECT count(*) AS shown_again FROM shop_k;

-- sources that would run another role's code with the owner's rights are refused: a view, a
-- table whose row-level security policies the owner does not control
CREATE VIEW shop_v AS SELECT * FROM shop;
GRANT SELECT ON shop_v TO regress_admin;
CREATE TABLE shop_rls (id bigint PRIMARY KEY, city text);
ALTER TABLE shop_rls ENABLE ROW LEVEL SECURITY;
CREATE POLICY everyone ON shop_rls USING (true);
GRANT SELECT ON shop_rls TO regress_admin;
SET ROLE regress_admin;
SELECT * FROM try($$SELECT mseg.create_kanon_view('public.bad', 'shop_v', 10, levels => ARRAY[0], columns => ARRAY['city'], attributes => '{}', key_column => 'id')$$);
SELECT * FROM try($$SELECT mseg.create_kanon_view('public.bad', 'shop_rls', 10, levels => ARRAY[0], columns => ARRAY['city'], attributes => '{}', key_column => 'id')$$);
RESET ROLE;
DROP VIEW shop_v;
DROP TABLE shop_rls;
-- nor may a role make a k-view of what it cannot read
REVOKE SELECT ON people FROM regress_admin;
SET ROLE regress_admin;
SELECT * FROM try($$SELECT mseg.create_kanon_view('public.bad', 'people', 10, levels => ARRAY[0, 0, 0], key_column => 'id')$$);
RESET ROLE;
SELECT count(*) AS bad_views FROM pg_class WHERE relname = 'bad';

-- the view depends on the columns it reads, as if it read them itself
SELECT * FROM try($$DROP TABLE shop$$);
SELECT * FROM try($$ALTER TABLE shop DROP COLUMN points$$);
SELECT * FROM try($$ALTER TABLE shop ALTER COLUMN points TYPE bigint$$);
ALTER TABLE shop ADD COLUMN unrelated int;
ALTER TABLE shop DROP COLUMN unrelated;
SELECT count(*) AS still_shown FROM shop_k;
DROP VIEW shop_k;
SELECT regexp_replace(message, '\d+', '<id>') AS message, hint
FROM try(format($$SELECT * FROM mseg.kanon_view_rows(%s) AS r(city text, points int, signup date)$$, :shop_k_id));
DROP VIEW shop2_k;
DELETE FROM mseg.column_classes WHERE relid IN ('shop'::regclass, 'shop2'::regclass);
DROP TABLE shop, shop2, shop_regions;
