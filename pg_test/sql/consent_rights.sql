-- Data-subject rights: report (Art. 15/20), erasure (Art. 17) in both modes.

-- the report: everything held about subject 1
SELECT r->'subject' AS subject, r->>'subject_table' AS subject_table,
       r->'data'->>'email' AS email, r->'column_classes' AS classes, r->'restricted_since' AS restricted,
       jsonb_array_length(r->'history') AS events, r->'erasure' AS erasure
FROM mseg.subject_report(1) r;
SELECT e->>'event' AS event, e->>'purpose' AS purpose, e->>'legal_basis' AS basis, e->>'notice_version' AS notice,
       e->>'source' AS source, e->'evidence' AS evidence, e->>'actor' AS actor
FROM mseg.subject_report(1) r, jsonb_array_elements(r->'history') e;
SELECT p->>'purpose' AS purpose, p->>'processable_now' AS processable, p->>'consent_basis' AS basis,
       p->>'notice_version' AS notice, (p->>'expires_at') IS NOT NULL AS expires
FROM mseg.subject_report(1) r, jsonb_array_elements(r->'purposes') p;
SELECT * FROM try($$SELECT mseg.subject_report(999999)$$);
SELECT * FROM try($$SELECT mseg.subject_report(NULL)$$);

-- erasure, mode delete: refused while other rows refer to the subject, and nothing is changed
CREATE TABLE orders (order_id int PRIMARY KEY, customer_id bigint REFERENCES customers, amount numeric);
INSERT INTO orders VALUES (1, 7, 10.00), (2, 8, 20.00);
SELECT mseg.grant_consent(7, 'direct_marketing', 'v1') IS NOT NULL AS granted;
SELECT * FROM try($$SELECT mseg.forget(7)$$);
SELECT count(*) AS still_there FROM customers WHERE customer_id = 7;
SELECT mseg.is_processable(7, 'direct_marketing') AS still_processable;
DELETE FROM orders WHERE customer_id = 7;
SELECT f->>'mode' AS mode, f->'rows' AS rows, f->'legal_basis_states_removed' AS states_removed
FROM mseg.forget(7, source => 'dpo-ticket-17') f;
SELECT count(*) AS gone FROM customers WHERE customer_id = 7;
SELECT count(*) AS states FROM mseg.legal_basis_state WHERE subject_key = 7;
-- an erased subject is, to the application, one that does not exist (no erasure oracle)
SELECT * FROM try($$SELECT mseg.is_processable(7, 'direct_marketing')$$);
SELECT r->'data' AS data, r->'erasure'->>'mode' AS erasure_mode,
       r->'history' AS history_withheld
FROM mseg.subject_report(7) r;
SELECT * FROM try($$SELECT mseg.grant_consent(7, 'direct_marketing')$$);
SELECT * FROM try($$SELECT mseg.forget(7)$$);

-- erasure, mode nullify: the row stays, direct and sensitive columns are cleared, and so is
-- the pseudonym column computed from the e-mail address
UPDATE customers SET health_interest = 'diabetes' WHERE customer_id = 8;
SELECT mseg.forget(8, mode => 'nullify')->>'mode' AS mode;
SELECT customer_id, email, phone, health_interest, email_pseudonym, postcode IS NOT NULL AS quasi_kept, loyalty
FROM customers WHERE customer_id = 8;
SELECT count(*) AS orders_kept FROM orders WHERE customer_id = 8;
-- the proof of erasure names nobody: only a keyed reference
SELECT count(*) AS erasures, bool_and(subject_ref ~ '^[A-Za-z0-9_-]{43}$') AS pseudonymous FROM mseg.erasures;
SELECT * FROM try($$SELECT mseg.forget(9, mode => 'shred')$$);
SELECT * FROM try($$SELECT mseg.forget(NULL)$$);
