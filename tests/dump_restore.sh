#!/usr/bin/env bash
# pg_dump / pg_restore keep pg_mseg's configuration: domains with their key versions, pseudonym
# columns, and a working trigger in the restored database; published segment sizes and their
# epochs; a k-view that still computes its rows. Called by scripts/test.
source "$(dirname "$0")/../scripts/lib.sh"
mseg_cluster_start
say "pg_dump / pg_restore round trip"
mseg_psql postgres -q -c "CREATE DATABASE src" -c "CREATE DATABASE dst"
mseg_psql src -q >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
CREATE TABLE customers (customer_id int PRIMARY KEY, email text);
INSERT INTO customers SELECT g, 'u' || g || '@example.com' FROM generate_series(1, 1000) g;
SELECT mseg.add_pseudonym_column('customers', 'email', 'analytics');
SELECT mseg.add_pseudonym_column('customers', 'customer_id', 'crm', column_name => 'cid_crm');
SELECT mseg.rotate_domain('crm');
SELECT mseg.register_subjects('customers', key_column => 'customer_id');
SELECT mseg.classify('customers', 'email', 'direct');
SELECT mseg.define_purpose('direct_marketing', '{consent,legitimate_interest}', '2 years');
SELECT count(mseg.grant_consent(g, 'direct_marketing', 'v1')) FROM generate_series(1, 50) g;
SELECT mseg.object(60, 'direct_marketing');
SELECT mseg.forget(70);
ALTER TABLE customers ADD COLUMN zip text;
UPDATE customers SET zip = lpad((10000 + customer_id * 7 % 900)::text, 5, '0');
SELECT mseg.classify('customers', 'zip', 'quasi', hierarchy => 'prefix');
SELECT mseg.define_segment('late_ids', 'direct_marketing', 'customer_id > 500');
SELECT mseg.publish_segment_sizes();
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dr_kview') THEN CREATE ROLE dr_kview IN ROLE mseg_admin; END IF; END $$;
GRANT SELECT ON customers TO dr_kview;
GRANT CREATE ON SCHEMA public TO dr_kview;
SET ROLE dr_kview;
SELECT mseg.create_kanon_view('public.customers_k', 'customers', 10, levels => ARRAY[2]);
RESET ROLE;
SQL
sudo -u postgres "$PG_BIN/pg_dump" -h "$MSEG_SOCK" -p "$MSEG_PORT" -U postgres -Fc -f "$MSEG_DIR/src.dump" src
sudo -u postgres "$PG_BIN/pg_restore" -h "$MSEG_SOCK" -p "$MSEG_PORT" -U postgres --exit-on-error -d dst "$MSEG_DIR/src.dump"
q='SELECT string_agg(format($$%s:%s$$, name, key_version), $$,$$ ORDER BY name) FROM mseg.domains'
c='SELECT string_agg(format($$%s.%s<-%s@%s$$, relid, target_column, source_column, domain), $$,$$ ORDER BY target_column) FROM mseg.pseudonym_columns'
l='SELECT format($$events=%s states=%s erasures=%s purposes=%s classes=%s subjects=%s$$, (SELECT count(*) FROM mseg.consent_events), (SELECT count(*) FROM mseg.legal_basis_state), (SELECT count(*) FROM mseg.erasures), (SELECT string_agg(name, $$,$$) FROM mseg.purposes), (SELECT count(*) FROM mseg.column_classes), (SELECT relid::text FROM mseg.subject_tables))'
a='SELECT format($$audit ok=%s entries=%s head=%s$$, v.ok, v.entries, (SELECT hash FROM mseg.audit_head())) FROM mseg.verify_audit_log() v'
z='SELECT format($$sizes=%s epoch=%s kview=%s/%s$$, (SELECT string_agg(segment || $$=$$ || coalesce(subjects::text, $$-$$), $$,$$ ORDER BY segment) FROM mseg.segment_sizes), (SELECT max(epoch) FROM mseg.size_publications), (SELECT count(*) FROM customers_k), (SELECT count(DISTINCT zip) FROM customers_k))'
for check in "$q" "$c" "$l" "$a" "$z"; do
    a=$(mseg_psql src -Atc "$check"); b=$(mseg_psql dst -Atc "$check")
    if [ "$a" != "$b" ] || [ -z "$a" ]; then echo "FAIL: configuration differs after restore: '$a' vs '$b'"; exit 1; fi
    note "ok: $b"
done
wrong=$(mseg_psql dst -Atq <<'SQL'
INSERT INTO customers VALUES (5000, 'restored@example.com');
UPDATE customers SET email = 'changed@example.com' WHERE customer_id = 1;
SELECT count(*) FROM customers
WHERE email_pseudonym IS DISTINCT FROM mseg.pseudonym(email, 'analytics')
   OR cid_crm IS DISTINCT FROM mseg.pseudonym(customer_id::text, 'crm');
SQL
)
[ "$wrong" = "0" ] || { echo "FAIL: $wrong rows with a wrong pseudonym in the restored database"; exit 1; }
note "ok: the restored trigger keeps 1001 rows exact (pseudonyms equal across the two databases: same key)"
same=$(mseg_psql dst -Atc "SELECT count(*) FROM customers WHERE customer_id = 2 AND email_pseudonym = '$(mseg_psql src -Atc "SELECT email_pseudonym FROM customers WHERE customer_id = 2")'")
[ "$same" = "1" ] || { echo "FAIL: restored pseudonyms differ"; exit 1; }
after=$(mseg_psql dst -Atq <<'SQL'
SELECT mseg.grant_consent(61, 'direct_marketing', 'v2') IS NOT NULL;
SELECT mseg.is_processable(60, 'direct_marketing'), mseg.is_processable(1, 'direct_marketing');
SELECT ok FROM mseg.verify_audit_log();
SQL
)
[ "$(echo $after)" = "t f|t t" ] || { echo "FAIL: the restored ledger does not continue cleanly: $after"; exit 1; }
note "ok: the restored database records new choices, keeps objections and verifies its audit chain"
next=$(mseg_psql dst -Atc "SELECT mseg.publish_segment_sizes()")
want=$(( $(mseg_psql src -Atc "SELECT max(epoch) FROM mseg.size_publications") + 1 ))
[ "$next" = "$want" ] || { echo "FAIL: publications do not continue their epochs after restore: $next, not $want"; exit 1; }
note "ok: the restored database publishes the next epoch"
echo "dump_restore: 1 passed, 0 failed"
