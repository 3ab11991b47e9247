-- Real state for the upgrade test, made with the released version's API (0.1.0 onwards): run in
-- the controller's database (mseg.controller_id = 'acme') before ALTER EXTENSION pg_mseg UPDATE.
-- Subjects, classified columns, a purpose, consents and objections (audit entries), a registered
-- source, segments with members (over the subject row and over the source), a pseudonym column,
-- a k-checked view, and a partner (trustco) that tests/upgrade.sh exports to twice.
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
CREATE TABLE customers (id bigint PRIMARY KEY, email text, born date, zip text, sex text, sport text);
INSERT INTO customers
SELECT g, 'c' || g || '@example.com', date '1950-01-01' + (g * 97) % 20000,
       lpad((10000 + (g * 7919) % 400)::text, 5, '0'), (ARRAY['f','m'])[1 + g % 2],
       (ARRAY['running','cycling','yoga'])[1 + g % 3]
FROM generate_series(1, 1200) g;
CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer_id bigint NOT NULL, category text, amount numeric);
INSERT INTO orders (customer_id, category, amount)
SELECT 1 + (g * 31) % 1200, (ARRAY['shoes','bikes','mats','shirts'])[1 + g % 4], (g % 90) + 10 FROM generate_series(1, 4000) g;

SELECT mseg.register_subjects('customers', 'id');
SELECT mseg.classify('customers', 'email', 'direct');
SELECT mseg.classify('customers', 'born', 'quasi', hierarchy => 'date');
SELECT mseg.classify('customers', 'zip', 'quasi', hierarchy => 'prefix');
SELECT mseg.classify('customers', 'sex', 'quasi');
SELECT mseg.classify('customers', 'sport', 'attribute');
SELECT mseg.define_purpose('direct_marketing', '{consent,legitimate_interest}', '2 years');
SELECT mseg.define_purpose('newsletter', '{consent}', '1 year');
SELECT mseg.register_source('orders', 'customer_id');
SELECT mseg.add_pseudonym_column('customers', 'email', 'analytics');

-- consents, objections, withdrawals: every one an audit entry
SELECT count(*) FROM (SELECT mseg.grant_consent(id, 'newsletter', notice_version => 'v1', source => 'web') FROM customers WHERE id % 4 = 0) x;
SELECT count(*) FROM (SELECT mseg.object(id, 'direct_marketing') FROM customers WHERE id % 50 = 0) x;
SELECT count(*) FROM (SELECT mseg.withdraw_consent(id, 'newsletter') FROM customers WHERE id % 40 = 0) x;

SELECT mseg.define_segment('runners', 'direct_marketing', $$sport = 'running'$$);
SELECT mseg.define_segment('bike_buyers', 'direct_marketing',
    $$EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = s.id AND o.category = 'bikes')$$);
SELECT mseg.define_segment('readers', 'newsletter', $$sex = 'f'$$);
SELECT mseg.create_kanon_view('customers_k', 'customers', k => 5);

SELECT mseg.add_partner('trustco', '{direct_marketing}', k => 10);
