-- Randomized properties (fixed seed, so the file is reproducible): for 25 random tables with
-- duplicate rows per subject, random k and random levels, every class a k-view shows has at
-- least k distinct subjects, every class the anonymiser releases has at least k distinct
-- subjects, and no direct or sensitive value ever appears in either.
SELECT setseed(0.4242);
CREATE FUNCTION pg_temp.check_random_tables(runs int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    i int; n int; k int; lb int; lz int; bad bigint; leak bigint; shown bigint; released bigint;
BEGIN
    FOR i IN 1 .. runs LOOP
        DROP TABLE IF EXISTS rnd_t CASCADE;
        n := 50 + (random() * 1500)::int;
        k := 2 + (random() * 28)::int;
        lb := (random() * 5)::int;                -- date levels 0..5
        lz := (random() * 5)::int;                -- prefix levels 0..5
        CREATE TABLE rnd_t (sid bigint, secret_mail text, born date, zip text, sex text, diag text);
        INSERT INTO rnd_t
        SELECT s, 'mail' || s || '@example.com', date '1940-01-01' + (random() * 25000)::int,
               lpad((10000 + (random() * 89999)::int)::text, 5, '0'), (ARRAY['f','m','d'])[1 + (random() * 2)::int],
               'diag-' || (random() * 5)::int
        FROM generate_series(1, n) s;
        -- 1 to 3 identical rows per subject: must never inflate k
        INSERT INTO rnd_t SELECT * FROM rnd_t WHERE random() < 0.3;
        INSERT INTO rnd_t SELECT * FROM rnd_t WHERE random() < 0.2;
        PERFORM mseg.classify('rnd_t', 'secret_mail', 'direct');
        PERFORM mseg.classify('rnd_t', 'born', 'quasi', hierarchy => 'date');
        PERFORM mseg.classify('rnd_t', 'zip', 'quasi', hierarchy => 'prefix');
        PERFORM mseg.classify('rnd_t', 'sex', 'quasi');
        PERFORM mseg.classify('rnd_t', 'diag', 'sensitive');
        -- a k-view is made by a role that is not a superuser and can read the source
        GRANT SELECT ON rnd_t TO regress_admin;
        SET LOCAL ROLE regress_admin;
        PERFORM mseg.create_kanon_view('pg_temp.rnd_v', 'rnd_t', k, levels => ARRAY[lb, lz, 0], key_column => 'sid');
        RESET ROLE;
        -- every shown class: at least k distinct subjects behind it in the source
        SELECT count(*) INTO bad FROM (
            SELECT v.born, v.zip, v.sex FROM rnd_v v GROUP BY 1, 2, 3
        ) c
        WHERE (SELECT count(DISTINCT t.sid) FROM rnd_t t
               WHERE mseg.generalize(t.born, 'date', lb) = c.born AND mseg.generalize(t.zip, 'prefix', lz) = c.zip
                 AND t.sex = c.sex) < k;
        SELECT count(*) INTO shown FROM rnd_v;
        -- no direct or sensitive value anywhere in the view
        SELECT count(*) INTO leak FROM rnd_v v, rnd_t t WHERE row_to_json(v)::text LIKE '%' || t.secret_mail || '%'
                                                        OR row_to_json(v)::text LIKE '%' || t.diag || '%';
        IF bad > 0 OR leak > 0 THEN
            RAISE EXCEPTION 'run %: k-view with k=% levels (%,%) shows % classes under k, % leaks', i, k, lb, lz, bad, leak;
        END IF;
        -- the anonymiser: every released class has at least k distinct subjects
        SELECT count(*) INTO bad FROM (
            SELECT quasi FROM mseg.anonymize('rnd_t', k, key_column => 'sid') WHERE quasi IS NOT NULL
            GROUP BY quasi HAVING count(DISTINCT subject_key) < k) x;
        SELECT count(*) INTO released FROM mseg.anonymize('rnd_t', k, key_column => 'sid') a
        WHERE a.quasi IS NOT NULL AND EXISTS (SELECT 1 FROM rnd_t t WHERE t.secret_mail = ANY (a.quasi) OR t.diag = ANY (a.quasi));
        IF bad > 0 OR released > 0 THEN
            RAISE EXCEPTION 'run %: anonymiser with k=% released % classes under k, % leaks', i, k, bad, released;
        END IF;
        DROP VIEW rnd_v;
        DELETE FROM mseg.column_classes WHERE relid = 'rnd_t'::regclass;
    END LOOP;
    DROP TABLE rnd_t;
    RETURN runs || ' random tables: every class shown or released has k distinct subjects, no direct or sensitive value';
END $$;
SET client_min_messages = warning;
SELECT pg_temp.check_random_tables(25);
