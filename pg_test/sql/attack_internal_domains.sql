-- Attack class 5: pg_mseg's internal pseudonymisation domains (mseg.*).
-- The ledger, the audit log and mseg.erasures name subjects by a keyed pseudonym in the internal
-- domain mseg.subjects, so that after an erasure they prove what happened without naming anyone.
-- Whoever can compute that pseudonym for a chosen key (or reverse a token of it) re-identifies
-- erased subjects. No public function may take an internal domain. Each attempt (I1…) must
-- fail; atk_check() must return no row.
\getenv abs_srcdir PG_ABS_SRCDIR
\set atkdb atk_internal_domains
\set setup :abs_srcdir '/sql/attack_setup.inc'
\i :setup

-- History: subject 5 chose, then was erased; a partner exists.
\c - atk_app
SELECT mseg.grant_consent(5, 'mkt', 'v1', 'web') IS NOT NULL AS granted;
SELECT mseg.withdraw_consent(5, 'mkt') IS NOT NULL AS withdrawn;
\c - atk_admin
SELECT mseg.forget(5)->>'mode' AS erased;
SELECT mseg.add_partner('p1', '{mkt}', 2);
CREATE TABLE atk_admin.t (id bigint, ref text);
INSERT INTO atk_admin.t VALUES (5, NULL);

-- I1 (issue): pseudonym() in the internal domain re-identifies the erasure record ...
SELECT * FROM atk($$SELECT EXISTS (SELECT 1 FROM mseg.erasures e WHERE e.subject_ref = mseg.pseudonym('5', 'mseg.subjects')) AS erased_subject_5_found$$);
-- I2 (issue): ... and every ledger event of the erased subject
SELECT * FROM atk($$SELECT count(*) AS ledger_events_of_5 FROM mseg.consent_events e WHERE e.subject_ref = mseg.pseudonym('5', 'mseg.subjects')$$);
-- I3 (invented): ... and its audit entries
SELECT * FROM atk($$SELECT count(*) > 0 AS audit_entries_of_5 FROM mseg.audit_log l WHERE l.details->>'subject_ref' = mseg.pseudonym('5', 'mseg.subjects')$$);
SELECT * FROM atk_check();
-- I4 (invented): token() in the internal domain.
SELECT * FROM atk($$SELECT mseg.token('5', 'mseg.subjects') IS NOT NULL$$);
-- I5 (invented): spellings of the internal name (must not reach it either).
SELECT * FROM atk($$SELECT mseg.pseudonym('5', 'MSEG.subjects')$$);
SELECT * FROM atk($$SELECT mseg.pseudonym('5', 'mseg.subjects ')$$);
SELECT * FROM atk($$SELECT mseg.pseudonym('5', E'mseg.subjects\n')$$);
-- I6 (control): the other functions that take a domain refuse internal ones.
SELECT * FROM atk($$SELECT mseg.add_pseudonym_column('atk_admin.t', 'id', 'mseg.subjects', 'ref')$$);
SELECT * FROM atk($$SELECT mseg.rotate_domain('mseg.subjects')$$);
SELECT * FROM atk($$SELECT mseg.drop_domain('mseg.subjects')$$);
SELECT * FROM atk($$SELECT mseg.create_domain('mseg.subjects')$$);
SELECT * FROM atk($$SELECT mseg.create_domain('mseg.other')$$);
-- I7 (control): the internal pseudonym function is granted to nobody.
SELECT * FROM atk($$SELECT mseg._subject_ref('5')$$);
SELECT * FROM atk_check();
-- I8 (invented; not on the issue's list): a partner's domain. pseudonym(key, 'partner.p1') maps
-- the partner's pseudonyms back to subject keys without resolve's purpose check and audit entry.
SELECT * FROM atk($$SELECT mseg.pseudonym('5', 'partner.p1') IS NOT NULL AS partner_pseudonym_computed$$);
-- I9 (invented; not on the issue's list): subject_report of an erased key returns the subject's
-- ledger history, re-linking the pseudonymous ledger to the key without any pseudonym function.
SELECT * FROM atk($$SELECT mseg.subject_report(5)->'history' AS history_of_erased_5$$);
SELECT * FROM atk_check();

-- I10 (invented; not on the issue's list): is_processable tells the application which keys were
-- erased (false) from keys that never existed (an error).
\c - atk_app
SELECT * FROM atk($$SELECT mseg.is_processable(5, 'mkt')$$);
SELECT * FROM atk($$SELECT mseg.is_processable(99, 'mkt')$$);
-- I11 (control): the application and the export role call no pseudonym function.
SELECT * FROM atk($$SELECT mseg.pseudonym('5', 'mseg.subjects')$$);
SELECT * FROM atk($$SELECT mseg.token('5', 'mseg.subjects')$$);
\c - atk_export
SELECT * FROM atk($$SELECT mseg.pseudonym('5', 'mseg.subjects')$$);
SELECT * FROM atk_check();

-- I12 (invented): the re-identification role reverses a token of the internal domain.
\c - postgres
\set internal_token 'no token made'
SELECT mseg.token('5', 'mseg.subjects') AS internal_token \gset
\c - atk_dpo
SELECT * FROM atk(format($$SELECT mseg.detoken(%L, 'mseg.subjects')$$, :'internal_token'));
SELECT * FROM atk_check();

\c mseg_regress postgres
DROP DATABASE atk_internal_domains WITH (FORCE);
DROP ROLE atk_app, atk_export, atk_admin, atk_dpo;
