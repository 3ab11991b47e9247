-- k-anonymity: hierarchies, k and l in distinct subjects, equivalence classes, the anonymiser,
-- k-checked views, and every refusal.

-- hierarchies and their stable textual forms
SELECT l, mseg.generalize(date '1987-03-14', 'date', l) AS date, mseg.generalize('10115', 'prefix', l) AS postcode,
       mseg.generalize(37, 'integer', l) AS int_default, mseg.generalize(-3, 'integer:5,10', least(l, 3)) AS negative,
       mseg.generalize('2.75', 'numeric:0.5,1,10', least(l, 4)) AS numeric
FROM generate_series(0, 5) l;
CREATE TABLE occupations (child text, parent text);
INSERT INTO occupations VALUES ('nurse', 'health'), ('surgeon', 'health'), ('health', 'services'),
                               ('teacher', 'services'), ('services', '*'), ('welder', '*');
SELECT l, mseg.generalize('nurse', 'category:public.occupations', l) AS nurse,
       mseg.generalize('welder', 'category:public.occupations', least(l, 1)) AS welder
FROM generate_series(0, 3) l;
SELECT mseg.generalize(NULL::text, 'date', 1) IS NULL AS null_stays_null;

SELECT * FROM try($$SELECT mseg.generalize('1987-13-45', 'date', 1)$$);
SELECT * FROM try($$SELECT mseg.generalize('abc', 'integer', 1)$$);
SELECT * FROM try($$SELECT mseg.generalize(date '1987-03-14', 'date', 9)$$);
SELECT * FROM try($$SELECT mseg.generalize(date '1987-03-14', 'date', -1)$$);
SELECT * FROM try($$SELECT mseg.generalize('x', 'zodiac', 1)$$);
SELECT * FROM try($$SELECT mseg.generalize('x', 'integer:5,7', 1)$$);
SELECT * FROM try($$SELECT mseg.generalize('plumber', 'category:public.occupations', 1)$$);
SELECT * FROM try($$SELECT mseg.generalize('x', 'category:public.no_such_map', 1)$$);
SELECT * FROM try($$SELECT mseg.generalize('x', NULL, 1)$$);
CREATE TABLE cyclic (child text, parent text);
INSERT INTO cyclic VALUES ('a', 'b'), ('b', 'a');
SELECT * FROM try($$SELECT mseg.generalize('a', 'category:public.cyclic', 1)$$);

-- a small population, one row per subject, and an orders-like table with several rows per subject
CREATE TABLE people (id bigint PRIMARY KEY, email text, born date, zip text, sex text, income int, diagnosis text, note text);
INSERT INTO people
SELECT g, 'p' || g || '@example.com', date '1950-01-01' + (g * 113) % 18000, lpad((10000 + (g * 7919) % 3000)::text, 5, '0'),
       CASE WHEN g % 2 = 0 THEN 'f' ELSE 'm' END, (g * 37) % 90000, (ARRAY['flu','asthma','diabetes','none'])[1 + g % 4], 'n' || g
FROM generate_series(1, 3000) g;
SELECT mseg.classify('people', 'email', 'direct');
SELECT mseg.classify('people', 'born', 'quasi', hierarchy => 'date');
SELECT mseg.classify('people', 'zip', 'quasi', hierarchy => 'prefix');
SELECT mseg.classify('people', 'sex', 'quasi');
SELECT mseg.classify('people', 'income', 'attribute');
SELECT mseg.classify('people', 'diagnosis', 'sensitive');
SELECT * FROM mseg.unclassified_columns('people');

-- k over the quasi columns, counted in distinct subjects
SELECT mseg.k_anonymity('people', key_column => 'id') AS k_exact;
SELECT mseg.k_anonymity('people', levels => ARRAY[3, 2, 0], key_column => 'id') AS k_generalised;
SELECT mseg.k_anonymity('people', columns => ARRAY['born', 'sex'], levels => ARRAY[4, 1], key_column => 'id') AS k_two_columns;
SELECT class, subjects, rows FROM mseg.equivalence_classes('people', levels => ARRAY[4, 4, 1], key_column => 'id') ORDER BY subjects, class LIMIT 4;
SELECT mseg.l_diversity('people', 'diagnosis', levels => ARRAY[3, 2, 0], key_column => 'id') AS l_fine,
       mseg.l_diversity('people', 'diagnosis', levels => ARRAY[4, 3, 0], key_column => 'id') AS l_coarse;
-- duplicate rows of one subject do not inflate k: 5 rows of subject 1 are still one subject
CREATE TABLE visits (person_id bigint, born date, zip text, sex text);
INSERT INTO visits SELECT 1, date '1980-05-05', '10115', 'f' FROM generate_series(1, 6);
INSERT INTO visits SELECT 2, date '1980-05-05', '10115', 'f' FROM generate_series(1, 6);
SELECT mseg.k_anonymity('visits', columns => ARRAY['born', 'zip', 'sex'], key_column => 'person_id') AS k_distinct_subjects;
SELECT min(c) AS k_if_rows_were_counted FROM (SELECT count(*) c FROM visits GROUP BY born, zip, sex) x;

-- the anonymiser: meets k by generalising along the hierarchies, reports what it reached
SELECT r->>'algorithm' AS algorithm, (r->>'k_reached')::int >= 10 AS k_met, r->'suppressed_records' AS suppressed,
       (r->>'ncp')::numeric < 0.5 AS low_loss, r->'records' AS records
FROM mseg.anonymize_report('people', 10, key_column => 'id') r;
SELECT (m->>'ncp')::numeric <= (g->>'ncp')::numeric AS local_recoding_loses_no_more
FROM mseg.anonymize_report('people', 10, key_column => 'id') m,
     mseg.anonymize_report('people', 10, key_column => 'id', algorithm => 'global') g;
-- every released class has at least k distinct subjects
SELECT min(n) >= 10 AS every_class_has_k FROM (
    SELECT count(DISTINCT subject_key) n FROM mseg.anonymize('people', 10, key_column => 'id')
    WHERE quasi IS NOT NULL GROUP BY quasi) x;
SELECT (r->>'l_reached')::int >= 3 AS l_met FROM mseg.anonymize_report('people', 10, l => 3, sensitive_column => 'diagnosis', key_column => 'id') r;
-- the range algorithm: each class released as its own ranges and sets; it never suppresses
SELECT r->>'algorithm' AS algorithm, (r->>'k_reached')::int >= 10 AS k_met, r->'suppressed_records' AS suppressed,
       (r->>'ncp')::numeric <= (m->>'ncp')::numeric AS loses_no_more_than_mondrian
FROM mseg.anonymize_report('people', 10, key_column => 'id', algorithm => 'ranges') r,
     mseg.anonymize_report('people', 10, key_column => 'id') m;
-- NULL is a value of its column's hierarchy (a leaf under *), not a reason to suppress: 10 of 30
-- subjects have no job, 1 no age; nothing is suppressed, the NULL jobs are released as NULL
CREATE TABLE nullish (id int PRIMARY KEY, age int, job text);
INSERT INTO nullish SELECT g, CASE WHEN g = 7 THEN NULL ELSE 20 + g % 5 END, CASE WHEN g % 3 = 0 THEN NULL ELSE 'nurse' END
FROM generate_series(1, 30) g;
SELECT r->'suppressed_records' AS suppressed, (r->>'k_reached')::int >= 5 AS k_met
FROM mseg.anonymize_report('nullish', 5, columns => ARRAY['age', 'job'], key_column => 'id') r;
SELECT count(*) FILTER (WHERE quasi IS NULL) AS suppressed, count(*) FILTER (WHERE quasi[2] IS NULL) AS job_released_as_null,
       count(*) FILTER (WHERE quasi[2] = 'nurse') AS nurses
FROM mseg.anonymize('nullish', 5, columns => ARRAY['age', 'job'], key_column => 'id');

-- k-checked views: quasi generalised, attributes shown, never direct or sensitive; small classes
-- suppressed at query time. A k-view computes its rows with its owner's rights, so it is made
-- by a role that can read the source and is not a superuser.
SELECT * FROM try($$SELECT mseg.create_kanon_view('public.people_k', 'people', 25, levels => ARRAY[4, 3, 0], key_column => 'id')$$);
GRANT SELECT ON people TO regress_admin;
GRANT CREATE ON SCHEMA public TO regress_admin;
SET ROLE regress_admin;
SELECT mseg.create_kanon_view('public.people_k', 'people', 25, levels => ARRAY[4, 3, 0], key_column => 'id');
RESET ROLE;
SELECT attname FROM pg_attribute WHERE attrelid = 'people_k'::regclass AND attnum > 0 ORDER BY attnum;
SELECT min(n) >= 25 AS every_visible_class_has_k FROM (SELECT count(*) n FROM people_k GROUP BY born, zip, sex) x;
SELECT count(*) AS rows_shown, (SELECT count(*) FROM people) AS rows_total FROM people_k;
-- live: a new subject in a class of its own is invisible until enough join it
INSERT INTO people VALUES (5001, 'x@example.com', date '2020-06-01', '99999', 'f', 1, 'flu', 'new');
SELECT count(*) AS shown FROM people_k WHERE zip = '99***';
INSERT INTO people SELECT 5001 + g, 'y' || g, date '2020-06-01', '99999', 'f', 1, 'flu', 'new' FROM generate_series(1, 24) g;
SELECT count(*) AS shown FROM people_k WHERE zip = '99***';
-- levels chosen automatically
SET ROLE regress_admin;
SELECT mseg.create_kanon_view('public.people_auto', 'people', 10, key_column => 'id');
RESET ROLE;
SELECT min(n) >= 10 AS auto_view_has_k FROM (SELECT count(*) n FROM people_auto GROUP BY born, zip, sex) x;
-- an application role reads the view, not the table
GRANT SELECT ON people_k TO regress_app;
\c - regress_app
SELECT count(*) > 0 AS app_reads_view FROM people_k;
SELECT * FROM try($$SELECT email FROM people_k$$);
SELECT * FROM try($$SELECT * FROM people$$);
SELECT * FROM try($$SELECT mseg.k_anonymity('people', key_column => 'id')$$);
SELECT * FROM try($$SELECT * FROM mseg.anonymize('people', 10, key_column => 'id')$$);
\c - postgres

-- every kind of hierarchy specification can be given to classify
ALTER TABLE people ADD COLUMN job text, ADD COLUMN age int;
UPDATE people SET job = (ARRAY['nurse','surgeon','teacher','welder'])[1 + id % 4], age = 18 + id % 70;
SELECT mseg.classify('people', 'job', 'quasi', hierarchy => 'category:public.occupations');
SELECT mseg.classify('people', 'age', 'quasi', hierarchy => 'integer:5,10,50');
SELECT mseg.classify('people', 'zip', 'quasi', hierarchy => 'prefix:5');
SELECT mseg.k_anonymity('people', columns => ARRAY['job', 'age'], levels => ARRAY[2, 2], key_column => 'id') AS k_job_age;
SELECT * FROM try($$SELECT mseg.classify('people', 'age', 'quasi', hierarchy => 'integer:5,7')$$);
SELECT * FROM try($$SELECT mseg.classify('people', 'job', 'quasi', hierarchy => 'category:public.no_such_map')$$);
SELECT * FROM try($$SELECT mseg.classify('people', 'age', 'quasi', hierarchy => 'category:public.occupations')$$);
SELECT mseg.classify('people', 'job', 'attribute'), mseg.classify('people', 'age', 'attribute');

-- refusals
SET ROLE regress_admin;
SELECT * FROM try($$SELECT mseg.create_kanon_view('public.bad', 'people', 1, key_column => 'id')$$);
SELECT * FROM try($$SELECT mseg.create_kanon_view('public.bad', 'people', 10, attributes => ARRAY['email'], key_column => 'id')$$);
SELECT * FROM try($$SELECT mseg.create_kanon_view('public.bad', 'people', 10, attributes => ARRAY['diagnosis'], key_column => 'id')$$);
SELECT * FROM try($$SELECT mseg.create_kanon_view('public.bad', 'people', 10, attributes => ARRAY['note'], key_column => 'id')$$);
SELECT * FROM try($$SELECT mseg.create_kanon_view('public.people_k', 'people', 10, levels => ARRAY[3, 2, 0], key_column => 'id')$$);
SELECT * FROM try($$SELECT mseg.create_kanon_view('x; DROP TABLE people', 'people', 10, key_column => 'id')$$);
RESET ROLE;
SELECT * FROM try($$SELECT mseg.k_anonymity('people')$$);
SELECT * FROM try($$SELECT mseg.k_anonymity('people', columns => ARRAY['email'], key_column => 'id')$$);
SELECT * FROM try($$SELECT mseg.k_anonymity('people', columns => ARRAY['diagnosis'], key_column => 'id')$$);
SELECT * FROM try($$SELECT mseg.k_anonymity('people', columns => ARRAY['nope'], key_column => 'id')$$);
SELECT * FROM try($$SELECT mseg.k_anonymity('people', levels => ARRAY[1, 1], key_column => 'id')$$);
SELECT * FROM try($$SELECT mseg.k_anonymity('people', levels => ARRAY[9, 0, 0], key_column => 'id')$$);
SELECT * FROM try($$SELECT mseg.k_anonymity('people', levels => ARRAY[0, 0, 2], key_column => 'id')$$);
SELECT * FROM try($$SELECT mseg.k_anonymity('people', key_column => 'nope')$$);
SELECT * FROM try($$SELECT mseg.k_anonymity('occupations', key_column => 'child')$$);
SELECT * FROM try($$SELECT mseg.anonymize_report('people', 10, suppression_limit => 1.5, key_column => 'id')$$);
SELECT * FROM try($$SELECT mseg.anonymize_report('people', 10, l => 2, key_column => 'id')$$);
SELECT * FROM try($$SELECT mseg.anonymize_report('people', 10, algorithm => 'flash', key_column => 'id')$$);
SELECT * FROM try($$SELECT mseg.anonymize_report('people', NULL, key_column => 'id')$$);
SELECT * FROM try($$SELECT mseg.l_diversity('people', 'nope', key_column => 'id')$$);
SELECT * FROM try($$SELECT mseg.classify('people', 'zip', 'quasi', hierarchy => 'date')$$);
