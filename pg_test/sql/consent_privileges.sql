-- An application role records choices and asks whether it may process; it cannot read anyone's
-- report, the ledger or the audit log, erase, configure, or rewrite history.
\c - regress_app
SELECT mseg.grant_consent(10, 'newsletter', notice_version => 'v4', source => 'app') IS NOT NULL AS recorded;
SELECT mseg.withdraw_consent(10, 'newsletter') IS NOT NULL AS withdrawn;
SELECT mseg.object(11, 'direct_marketing') IS NOT NULL AS objected;
SELECT mseg.restrict(12) IS NOT NULL AS restricted;
SELECT mseg.is_processable(10, 'newsletter') AS ten, mseg.is_processable(11, 'direct_marketing') AS eleven;
SELECT name FROM mseg.purposes ORDER BY name;
SELECT * FROM try($$SELECT mseg.subject_report(1)$$);
SELECT * FROM try($$SELECT mseg.forget(13)$$);
SELECT * FROM try($$SELECT mseg.define_purpose('mine', '{legitimate_interest}', '100 years')$$);
SELECT * FROM try($$SELECT mseg.alter_purpose('newsletter', legal_bases => '{legitimate_interest}')$$);
SELECT * FROM try($$SELECT mseg.classify('customers', 'email', 'attribute')$$);
SELECT * FROM try($$SELECT * FROM mseg.consent_events$$);
SELECT * FROM try($$SELECT * FROM mseg.legal_basis_state$$);
SELECT * FROM try($$SELECT * FROM mseg.audit_log$$);
SELECT * FROM try($$SELECT mseg.verify_audit_log()$$);
SELECT * FROM try($$UPDATE mseg.consent_events SET event = 'grant'$$);
SELECT * FROM try($$INSERT INTO mseg.legal_basis_state (subject_key, purpose, consent_basis, granted_at, last_event_id, updated_at)
                    VALUES (11, 'direct_marketing', 'consent', now(), 1, now())$$);
SELECT * FROM try($$SELECT mseg._audit('consent.grant', 'x', '{}')$$);
SELECT * FROM try($$SELECT mseg._subject_ref('1')$$);
SELECT * FROM try($$SELECT mseg._record('x', 'newsletter', 'grant', 'consent', NULL, NULL, NULL)$$);
\c - postgres
-- the ledger names the application as actor, and the chain still verifies
SELECT event, purpose, actor FROM mseg.consent_events WHERE actor = 'regress_app' ORDER BY event_id;
SELECT ok, problem FROM mseg.verify_audit_log();
