-- Attack class 4: pg_mseg's SECURITY DEFINER and as-owner paths touching user tables.
-- mseg_admin owns the subject table and so decides what runs when it is written or read: its
-- triggers, rules, constraints, generated columns, index expressions, domains and casts. When
-- pg_mseg writes or reads that table as the bootstrap superuser (forget's DML, subject_report's
-- row, the export's quasi values, the consent functions' existence check), all of that runs as
-- the superuser. It must run as the table owner (or not at all). Each attempt (D1…) installs one
-- trap, fires it through pg_mseg, removes it; atk_check() must then return no row.
\getenv abs_srcdir PG_ABS_SRCDIR
\set atkdb atk_definer_dml
\set setup :abs_srcdir '/sql/attack_setup.inc'
\i :setup

INSERT INTO public.customers
SELECT i, format('c%s@example.com', i), date '1980-01-01' + (i % 4) * 365, '1011' || (i % 2), CASE WHEN i % 2 = 0 THEN 'f' ELSE 'm' END, NULL, i
FROM generate_series(9, 16) i;

\c - atk_admin
-- a trigger function of the administrator's that fires the payload named by its argument
CREATE FUNCTION atk_admin.trg() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM atk_admin.pwn(TG_ARGV[0]);
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;

-- D1 (issue): a BEFORE DELETE trigger on the subject table, fired by forget (mode delete).
CREATE TRIGGER d1 BEFORE DELETE ON public.customers FOR EACH ROW EXECUTE FUNCTION atk_admin.trg('D1');
SELECT * FROM atk($$SELECT mseg.forget(1)->>'rows'$$);
DROP TRIGGER d1 ON public.customers;
SELECT * FROM atk_check();
-- D2 (invented): a BEFORE UPDATE trigger, fired by forget (mode nullify).
CREATE TRIGGER d2 BEFORE UPDATE ON public.customers FOR EACH ROW EXECUTE FUNCTION atk_admin.trg('D2');
SELECT * FROM atk($$SELECT mseg.forget(2, 'nullify')->>'rows'$$);
DROP TRIGGER d2 ON public.customers;
SELECT * FROM atk_check();
-- D3 (invented): a sensitive column whose type is a domain with a CHECK calling the payload:
-- nullify writes NULL into it and the CHECK runs.
CREATE DOMAIN atk_admin.code AS text CHECK (atk_admin.pwn('D3') IS NOT NULL);
ALTER TABLE public.customers ADD COLUMN d3 atk_admin.code;
SELECT mseg.classify('public.customers', 'd3', 'sensitive');
SELECT * FROM atk($$SELECT mseg.forget(3, 'nullify')->>'rows'$$);
SELECT mseg.classify('public.customers', 'd3', 'attribute');
ALTER TABLE public.customers DROP COLUMN d3;
SELECT * FROM atk_check();
-- D4 (invented): a rule ON DELETE DO ALSO calling the payload (rule actions run as the caller).
CREATE RULE d4 AS ON DELETE TO public.customers DO ALSO SELECT atk_admin.pwn('D4');
SELECT * FROM atk($$SELECT mseg.forget(4)->>'rows'$$);
DROP RULE d4 ON public.customers;
SELECT * FROM atk_check();
-- D5 (invented): a stored generated column computed by an IMMUTABLE function (recomputed by
-- nullify's UPDATE).
ALTER TABLE public.customers ADD COLUMN d5 text GENERATED ALWAYS AS (atk_admin.imm('D5', email)) STORED;
SELECT * FROM atk($$SELECT mseg.forget(5, 'nullify')->>'rows'$$);
ALTER TABLE public.customers DROP COLUMN d5;
SELECT * FROM atk_check();
-- D6 (invented): a CHECK constraint calling the payload (checked on nullify's new row).
ALTER TABLE public.customers ADD CONSTRAINT d6 CHECK (atk_admin.pwn('D6')) NOT VALID;
SELECT * FROM atk($$SELECT mseg.forget(6, 'nullify')->>'rows'$$);
ALTER TABLE public.customers DROP CONSTRAINT d6;
SELECT * FROM atk_check();
-- D7 (invented): an index expression over e-mail (evaluated for nullify's new row version).
CREATE INDEX d7 ON public.customers (atk_admin.imm('D7', email));
SELECT * FROM atk($$SELECT mseg.forget(7, 'nullify')->>'rows'$$);
DROP INDEX public.d7;
SELECT * FROM atk_check();
-- D8 (invented): a partial index whose predicate calls an IMMUTABLE function.
CREATE INDEX d8 ON public.customers (email) WHERE atk_admin.imm('D8', true);
SELECT * FROM atk($$SELECT mseg.forget(8, 'nullify')->>'rows'$$);
DROP INDEX public.d8;
SELECT * FROM atk_check();
-- D9 (invented): an index expression with a constant call of an IMMUTABLE function. PostgreSQL
-- folds it (runs it) when a backend first loads the index for planning: in a fresh session whose
-- first query on the table is pg_mseg's own, it runs as whoever pg_mseg runs that query as.
CREATE INDEX d9 ON public.customers ((customer_id + atk_admin.imm('D9', 0::bigint)));
-- ... the application's grant_consent (SECURITY DEFINER: checks the subject exists)
\c - atk_app
SELECT * FROM atk($$SELECT mseg.grant_consent(11, 'mkt') IS NOT NULL$$);
SELECT * FROM atk_check();
-- ... the administrator's subject_report
\c - atk_admin
SELECT * FROM atk($$SELECT mseg.subject_report(11) IS NOT NULL$$);
SELECT * FROM atk_check();
-- ... the export role's export (reads the subject table as owner)
\c - atk_admin
SELECT mseg.add_partner('p1', '{mkt}', 2);
\c - atk_export
SELECT * FROM atk($$SELECT count(*) > 0 FROM mseg.export_variant_twins('p1')$$);
SELECT * FROM atk_check();
\c - atk_admin
DROP INDEX public.d9;
-- D10 (invented): subject_report renders the row with to_jsonb, which calls a type's cast to
-- json: a column of an enum of the administrator's with such a cast.
CREATE TYPE atk_admin.mood AS ENUM ('f', 'm');
CREATE FUNCTION atk_admin.mood_json(atk_admin.mood) RETURNS json LANGUAGE plpgsql AS $$
BEGIN PERFORM atk_admin.pwn('D10'); RETURN to_json($1::name::text); END $$;
CREATE CAST (atk_admin.mood AS json) WITH FUNCTION atk_admin.mood_json(atk_admin.mood);
ALTER TABLE public.customers ADD COLUMN mood atk_admin.mood;
UPDATE public.customers SET mood = sex::atk_admin.mood;
SELECT * FROM atk($$SELECT mseg.subject_report(12)->'data'->>'mood'$$);
SELECT * FROM atk_check();
-- D11 (invented): the same column classified quasi, with a cast to text: the export (run by
-- mseg_export) casts every quasi value with ::text as the bootstrap superuser; the payload makes
-- the administrator superuser.
CREATE FUNCTION atk_admin.mood_text(atk_admin.mood) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM atk_admin.pwn('D11', 'atk_admin'); RETURN $1::name::text; END $$;
CREATE CAST (atk_admin.mood AS text) WITH FUNCTION atk_admin.mood_text(atk_admin.mood);
SELECT mseg.classify('public.customers', 'mood', 'quasi');
\c - atk_export
SELECT * FROM atk($$SELECT count(*) > 0 FROM mseg.export_variant_twins('p1')$$);
SELECT * FROM atk_check();
-- ... and the administrator's own k functions over the subject table
\c - atk_admin
SELECT * FROM atk($$SELECT mseg.k_anonymity('public.customers', ARRAY['mood']) > 0$$);
SELECT * FROM atk_check();
-- D16 (invented): D9-D11 again after the administrator lets everyone use its schema (which it
-- may): whichever role pg_mseg reads or plans the subject table as now runs the owner's code.
SELECT mseg.classify('public.customers', 'mood', 'quasi');
GRANT USAGE ON SCHEMA atk_admin TO PUBLIC;
CREATE INDEX d16 ON public.customers ((customer_id + atk_admin.imm('D16', 0::bigint)));
\c - atk_app
SELECT * FROM atk($$SELECT mseg.grant_consent(14, 'mkt') IS NOT NULL$$);
SELECT * FROM atk_check();
\c - atk_admin
SELECT * FROM atk($$SELECT mseg.subject_report(14)->'data'->>'mood'$$);
SELECT * FROM atk_check();
\c - atk_export
SELECT * FROM atk($$SELECT count(*) > 0 FROM mseg.export_variant_twins('p1')$$);
SELECT * FROM atk_check();
\c - atk_admin
DROP INDEX public.d16;
REVOKE USAGE ON SCHEMA atk_admin FROM PUBLIC;
SELECT mseg.classify('public.customers', 'mood', 'attribute');
-- D12 (control): a deferred constraint trigger fires at commit, outside forget, as the session's role.
CREATE CONSTRAINT TRIGGER d12 AFTER DELETE ON public.customers DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION atk_admin.trg('D12');
SELECT * FROM atk($$SELECT mseg.forget(9)->>'rows'$$);
DROP TRIGGER d12 ON public.customers;
SELECT * FROM atk_check();
-- D13 (control): ON DELETE CASCADE into a table of the administrator's with a DELETE trigger
-- (PostgreSQL runs the cascade as the referencing table's owner).
CREATE TABLE atk_admin.notes (customer_id bigint REFERENCES public.customers ON DELETE CASCADE);
INSERT INTO atk_admin.notes VALUES (10);
CREATE TRIGGER d13 BEFORE DELETE ON atk_admin.notes FOR EACH ROW EXECUTE FUNCTION atk_admin.trg('D13');
SELECT * FROM atk($$SELECT mseg.forget(10)->>'rows'$$);
DROP TABLE atk_admin.notes;
SELECT * FROM atk_check();
-- D14 (control): the backfill of add_pseudonym_column and rotate_domain's rewrite fire the
-- table's UPDATE triggers as the caller.
CREATE TRIGGER d14 BEFORE UPDATE ON public.customers FOR EACH ROW EXECUTE FUNCTION atk_admin.trg('D14');
SELECT * FROM atk($$SELECT mseg.add_pseudonym_column('public.customers', 'email', 'analytics')$$);
SELECT * FROM atk($$SELECT mseg.rotate_domain('analytics')$$);
DROP TRIGGER d14 ON public.customers;
SELECT * FROM atk_check();
-- D15 (control): forget is not the application's nor the export role's.
\c - atk_app
SELECT * FROM atk($$SELECT mseg.forget(13)$$);
\c - atk_export
SELECT * FROM atk($$SELECT mseg.forget(13)$$);
SELECT * FROM atk_check();

-- D17 (invented, review of issue 15): the trusted party's participants trigger is SECURITY
-- DEFINER and reads the identifier column of every row written; a composite identifier type of the
-- administrator's with a cast to text calling the payload. The trigger and set_participant_columns
-- read the column through its type's output function (format('%s')), never a cast: no NOTICE, no escalation.
\c - atk_admin
CREATE TYPE atk_admin.handle AS (v text);
CREATE FUNCTION atk_admin.handle_text(atk_admin.handle) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM atk_admin.pwn('D17', 'atk_admin'); RETURN ($1).v; END $$;
CREATE CAST (atk_admin.handle AS text) WITH FUNCTION atk_admin.handle_text(atk_admin.handle);
ALTER TABLE public.customers ADD COLUMN handle atk_admin.handle;
UPDATE public.customers SET handle = ROW(email)::atk_admin.handle;
SELECT mseg.classify('public.customers', 'handle', 'direct');
SELECT * FROM atk($$SELECT mseg.set_participant_columns('handle', 'handle')$$);
SELECT * FROM atk($$UPDATE public.customers SET handle = ROW('new16@example.com')::atk_admin.handle WHERE customer_id = 16$$);
SELECT * FROM atk_check();
\c - atk_app
SELECT * FROM atk($$INSERT INTO public.customers (customer_id, email, handle) VALUES (17, 'c17@example.com', '(c17@example.com)')$$);
SELECT * FROM atk_check();
\c - postgres
SELECT count(*) AS participants_with_person FROM mseg.participant_persons;

-- Checks as superuser -------------------------------------------------------------------------
\c - postgres
SELECT * FROM atk_check();
SELECT subject_key, restricted_at IS NOT NULL AS restricted, erased_at IS NOT NULL AS erased FROM mseg.subject_state ORDER BY 1;
SELECT count(*) AS erasures FROM mseg.erasures;

\c mseg_regress postgres
DROP DATABASE atk_definer_dml WITH (FORCE);
DROP ROLE atk_app, atk_export, atk_admin, atk_dpo;
