-- Consent: subject registration, column classes, purposes, recording choices, the
-- "may S be processed for P now?" answer, and every refusal.

-- Nothing works before a subject table is registered.
SELECT mseg.define_purpose('early', '{consent}', '1 year');
SELECT * FROM try($$SELECT mseg.grant_consent(1, 'early')$$);

-- registration
CREATE VIEW customers_view AS SELECT * FROM customers;
SELECT * FROM try($$SELECT mseg.register_subjects(NULL, 'customer_id')$$);
SELECT * FROM try($$SELECT mseg.register_subjects('customers', NULL)$$);
SELECT * FROM try($$SELECT mseg.register_subjects('customers', 'no_such_column')$$);
SELECT * FROM try($$SELECT mseg.register_subjects('customers', 'email')$$);
SELECT * FROM try($$SELECT mseg.register_subjects('customers', 'loyalty')$$);
SELECT * FROM try($$SELECT mseg.register_subjects('customers_view', 'customer_id')$$);
SELECT mseg.register_subjects('customers', key_column => 'customer_id');
SELECT mseg.register_subjects('customers', key_column => 'customer_id') AS idempotent;
CREATE TABLE other_people (id int PRIMARY KEY);
SELECT * FROM try($$SELECT mseg.register_subjects('other_people', 'id')$$);
SELECT relid, key_column FROM mseg.subject_tables;

-- column classes
ALTER TABLE customers ADD COLUMN birth_date date, ADD COLUMN postcode text, ADD COLUMN health_interest text;
UPDATE customers SET birth_date = date '1960-01-01' + (customer_id % 15000)::int, postcode = lpad((customer_id % 99999)::text, 5, '0');
SELECT mseg.classify('customers', 'email', 'direct');
SELECT mseg.classify('customers', 'phone', 'direct');
SELECT mseg.classify('customers', 'birth_date', 'quasi', hierarchy => 'date');
SELECT mseg.classify('customers', 'postcode', 'quasi', hierarchy => 'prefix');
SELECT mseg.classify('customers', 'health_interest', 'sensitive');
SELECT * FROM mseg.unclassified_columns('customers');
SELECT mseg.classify('customers', 'loyalty', 'quasi');
SELECT mseg.classify('customers', 'loyalty', 'attribute') AS reclassified;
SELECT column_name, class, hierarchy FROM mseg.column_classes ORDER BY column_name;
SELECT count(*) AS unclassified FROM mseg.unclassified_columns('customers');
SELECT * FROM try($$SELECT mseg.classify('customers', 'no_such', 'direct')$$);
SELECT * FROM try($$SELECT mseg.classify('customers', 'email', 'secret')$$);
SELECT * FROM try($$SELECT mseg.classify('customers', 'email', 'direct', hierarchy => 'prefix')$$);
SELECT * FROM try($$SELECT mseg.classify('customers', 'postcode', 'quasi', hierarchy => 'date')$$);
SELECT * FROM try($$SELECT mseg.classify('customers', 'birth_date', 'quasi', hierarchy => 'zodiac')$$);
SELECT * FROM try($$SELECT mseg.classify('customers', NULL, 'direct')$$);
SELECT * FROM try($$SELECT mseg.classify('customers', 'email', NULL)$$);

-- purposes
SELECT mseg.define_purpose('direct_marketing', legal_bases => '{consent,legitimate_interest}',
                           retention => interval '2 years', description => 'offers by e-mail and post');
SELECT mseg.define_purpose('newsletter', '{consent}', '1 year');
SELECT mseg.define_purpose('orders', '{contract}', '10 years');
SELECT name, legal_bases, retention, description FROM mseg.purposes ORDER BY name;
SELECT * FROM try($$SELECT mseg.define_purpose('newsletter', '{consent}', '1 year')$$);
SELECT * FROM try($$SELECT mseg.define_purpose('Bad Name', '{consent}', '1 year')$$);
SELECT * FROM try($$SELECT mseg.define_purpose('x', '{}', '1 year')$$);
SELECT * FROM try($$SELECT mseg.define_purpose('x', '{consent,vital_interest}', '1 year')$$);
SELECT * FROM try($$SELECT mseg.define_purpose('x', '{consent,NULL}', '1 year')$$);
SELECT * FROM try($$SELECT mseg.define_purpose('x', '{consent}', '0 days')$$);
SELECT * FROM try($$SELECT mseg.define_purpose('x', '{consent}', '-1 day')$$);
SELECT * FROM try($$SELECT mseg.define_purpose(NULL, '{consent}', '1 year')$$);
SELECT * FROM try($$SELECT mseg.define_purpose('x', NULL, '1 year')$$);
SELECT * FROM try($$SELECT mseg.define_purpose('x', '{consent}', NULL)$$);
SELECT mseg.alter_purpose('early', retention => '6 months', description => 'changed');
SELECT name, legal_bases, retention, description FROM mseg.purposes WHERE name = 'early';
SELECT * FROM try($$SELECT mseg.alter_purpose('early')$$);
SELECT * FROM try($$SELECT mseg.alter_purpose('no_such', retention => '1 day')$$);
SELECT * FROM try($$SELECT mseg.alter_purpose('early', legal_bases => '{}')$$);
SELECT mseg.drop_purpose('early');
SELECT * FROM try($$SELECT mseg.drop_purpose('early')$$);

-- recording choices
SELECT mseg.grant_consent(1, 'newsletter', notice_version => 'v3', source => 'web-signup',
                          evidence => '{"ip": "192.0.2.1", "form": "signup-2026-11"}') IS NOT NULL AS granted;
SELECT mseg.grant_consent(1, 'newsletter', notice_version => 'v3', source => 'web-signup') AS duplicate_is_noop;
SELECT mseg.grant_consent(1, 'newsletter', notice_version => 'v4', source => 'preference-centre') IS NOT NULL AS new_notice_recorded;
SELECT mseg.grant_consent(2, 'orders', legal_basis => 'contract') IS NOT NULL AS contract_recorded;
SELECT mseg.object(3, 'direct_marketing') IS NOT NULL AS objected;
SELECT mseg.object(3, 'direct_marketing') AS second_objection_is_noop;
SELECT mseg.grant_consent(4, 'direct_marketing', 'v1') IS NOT NULL AS granted;
SELECT mseg.withdraw_consent(4, 'direct_marketing') IS NOT NULL AS withdrawn;
SELECT mseg.withdraw_consent(4, 'direct_marketing') AS second_withdrawal_is_noop;
SELECT mseg.restrict(5) IS NOT NULL AS restricted;
SELECT mseg.restrict(5) AS second_restriction_is_noop;

-- refusals, each with its SQLSTATE
SELECT * FROM try($$SELECT mseg.grant_consent(1, 'orders')$$);
SELECT * FROM try($$SELECT mseg.grant_consent(1, 'newsletter', legal_basis => 'legitimate_interest')$$);
SELECT * FROM try($$SELECT mseg.grant_consent(1, 'newsletter', legal_basis => 'vital_interest')$$);
SELECT * FROM try($$SELECT mseg.grant_consent(999999, 'newsletter')$$);
SELECT * FROM try($$SELECT mseg.grant_consent(1, 'no_such_purpose')$$);
SELECT * FROM try($$SELECT mseg.grant_consent(NULL, 'newsletter')$$);
SELECT * FROM try($$SELECT mseg.grant_consent(1, NULL)$$);
SELECT * FROM try($$SELECT mseg.grant_consent(1, 'newsletter', legal_basis => NULL)$$);
SELECT * FROM try($$SELECT mseg.withdraw_consent(6, 'newsletter')$$);
SELECT * FROM try($$SELECT mseg.lift_objection(6, 'direct_marketing')$$);
SELECT * FROM try($$SELECT mseg.lift_restriction(6)$$);
SELECT * FROM try($$SELECT mseg.restrict(NULL)$$);
-- a refused call leaves no event behind
SELECT count(*) AS events FROM mseg.consent_events;

-- the state derived from the ledger
SELECT subject_key, purpose, consent_basis, notice_version, granted_at IS NOT NULL AS granted,
       withdrawn_at IS NOT NULL AS withdrawn, objected_at IS NOT NULL AS objected
FROM mseg.legal_basis_state ORDER BY 1, 2;
SELECT subject_key, restricted_at IS NOT NULL AS restricted FROM mseg.subject_state ORDER BY 1;

-- may S be processed for P now?  (6 never chose anything)
SELECT s AS subject,
       mseg.is_processable(s, 'newsletter') AS newsletter,
       mseg.is_processable(s, 'direct_marketing') AS direct_marketing,
       mseg.is_processable(s, 'direct_marketing', sensitive => true) AS dm_sensitive,
       mseg.is_processable(s, 'orders') AS orders
FROM generate_series(1, 6) s;
-- explicit consent makes sensitive processing possible
SELECT mseg.grant_consent(6, 'direct_marketing', 'v1') IS NOT NULL AS granted;
SELECT mseg.is_processable(6, 'direct_marketing', sensitive => true) AS dm_sensitive_after_consent;
-- an objection stops even consented processing; a new explicit grant supersedes it
SELECT mseg.object(6, 'direct_marketing') IS NOT NULL AS objected;
SELECT mseg.is_processable(6, 'direct_marketing') AS after_objection;
SELECT mseg.grant_consent(6, 'direct_marketing', 'v2') IS NOT NULL AS granted_again;
SELECT mseg.is_processable(6, 'direct_marketing') AS after_new_grant;
-- lifting
SELECT mseg.lift_objection(3, 'direct_marketing') IS NOT NULL AS lifted;
SELECT mseg.lift_restriction(5) IS NOT NULL AS lifted;
SELECT mseg.is_processable(3, 'direct_marketing') AS three, mseg.is_processable(5, 'direct_marketing') AS five;
-- expiry: a grant is valid for the purpose's retention
SELECT mseg.alter_purpose('newsletter', retention => '1 microsecond');
SELECT pg_sleep(0.01);
SELECT mseg.is_processable(1, 'newsletter') AS expired;
SELECT mseg.grant_consent(1, 'newsletter', notice_version => 'v4') IS NOT NULL AS expired_grant_can_be_renewed;
SELECT mseg.alter_purpose('newsletter', retention => '1 year');
SELECT mseg.is_processable(1, 'newsletter') AS valid_again;
-- is_processable refusals
SELECT * FROM try($$SELECT mseg.is_processable(999999, 'newsletter')$$);
SELECT * FROM try($$SELECT mseg.is_processable(1, 'no_such')$$);
SELECT * FROM try($$SELECT mseg.is_processable(1, 'newsletter', NULL)$$);
-- a purpose with recorded choices cannot be dropped
SELECT * FROM try($$SELECT mseg.drop_purpose('newsletter')$$);
