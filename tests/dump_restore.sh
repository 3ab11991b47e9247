#!/usr/bin/env bash
# pg_dump / pg_restore keep pg_mseg's configuration: domains with their key versions, pseudonym
# columns, and a working trigger in the restored database. Called by scripts/test.
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
SELECT mseg.add_pseudonym_column('customers', 'customer_id', 'partner.trustco', column_name => 'cid_trustco');
SELECT mseg.rotate_domain('partner.trustco');
SQL
sudo -u postgres "$PG_BIN/pg_dump" -h "$MSEG_SOCK" -p "$MSEG_PORT" -U postgres -Fc -f "$MSEG_DIR/src.dump" src
sudo -u postgres "$PG_BIN/pg_restore" -h "$MSEG_SOCK" -p "$MSEG_PORT" -U postgres --exit-on-error -d dst "$MSEG_DIR/src.dump"
q='SELECT string_agg(format($$%s:%s$$, name, key_version), $$,$$ ORDER BY name) FROM mseg.domains'
c='SELECT string_agg(format($$%s.%s<-%s@%s$$, relid, target_column, source_column, domain), $$,$$ ORDER BY target_column) FROM mseg.pseudonym_columns'
for check in "$q" "$c"; do
    a=$(mseg_psql src -Atc "$check"); b=$(mseg_psql dst -Atc "$check")
    if [ "$a" != "$b" ] || [ -z "$a" ]; then echo "FAIL: configuration differs after restore: '$a' vs '$b'"; exit 1; fi
    note "ok: $b"
done
wrong=$(mseg_psql dst -Atq <<'SQL'
INSERT INTO customers VALUES (5000, 'restored@example.com');
UPDATE customers SET email = 'changed@example.com' WHERE customer_id = 1;
SELECT count(*) FROM customers
WHERE email_pseudonym IS DISTINCT FROM mseg.pseudonym(email, 'analytics')
   OR cid_trustco IS DISTINCT FROM mseg.pseudonym(customer_id::text, 'partner.trustco');
SQL
)
[ "$wrong" = "0" ] || { echo "FAIL: $wrong rows with a wrong pseudonym in the restored database"; exit 1; }
note "ok: the restored trigger keeps 1001 rows exact (pseudonyms equal across the two databases: same key)"
same=$(mseg_psql dst -Atc "SELECT count(*) FROM customers WHERE customer_id = 2 AND email_pseudonym = '$(mseg_psql src -Atc "SELECT email_pseudonym FROM customers WHERE customer_id = 2")'")
[ "$same" = "1" ] || { echo "FAIL: restored pseudonyms differ"; exit 1; }
echo "dump_restore: 1 passed, 0 failed"
