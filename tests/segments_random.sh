#!/usr/bin/env bash
# Randomized differential test of microsegment upkeep: 4 concurrent sessions run 10,000 random
# transactions (inserts, updates, deletes and multi-row changes on the subject table and a
# source table, consent grants, withdrawals, objections, restrictions, erasures), first in
# READ COMMITTED, then 2,000 more on few subjects in REPEATABLE READ (pgbench retries the
# serialization failures the row-lock protocol raises); then 3,000 more with every statement
# maintained in bulk (mseg.bulk_statement_subjects = 1), in READ COMMITTED and REPEATABLE READ.
# After each half, 6,000 on 40 new subjects (ids above 2000) whose customer rows are inserted and
# deleted while their orders are inserted and deleted (orders may come before their customer).
# After each phase mseg.verify_segments() must report no difference from a from-scratch evaluation.
# Usage: tests/segments_random.sh [--key bigint|uuid]: with uuid, the subject table and the source
# are keyed by uuids (md5 of the integer id; mapped to subject ids in mseg.subject_ids), same workload.
source "$(dirname "$0")/../scripts/lib.sh"
key=bigint
while [ $# -gt 0 ]; do
    case "$1" in --key) key="${2:-}"; shift 2 ;; --key=*) key="${1#--key=}"; shift ;; *) echo "unknown option $1" >&2; exit 2 ;; esac
done
case "$key" in
    bigint) rk_body='SELECT $1' ;;
    uuid) rk_body='SELECT pg_catalog.md5($1::pg_catalog.text)::pg_catalog.uuid' ;;
    *) echo "--key is bigint or uuid" >&2; exit 2 ;;
esac
mseg_cluster_start
say "randomized differential test of segment memberships (subject keys: $key)"
mseg_psql postgres -q -c "CREATE DATABASE rnd"
# rk(n): the key of subject number n (inlined: an immutable one-line SQL function)
mseg_psql rnd -q -v keytype="$key" -v rk_body="$rk_body" >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
CREATE FUNCTION rk(bigint) RETURNS :keytype LANGUAGE sql IMMUTABLE AS :'rk_body';
CREATE TABLE customers (id :keytype PRIMARY KEY, email text, city text, points int, birth_date date, health text);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id :keytype, category text, amount numeric);
CREATE INDEX ON orders (customer_id);
INSERT INTO customers SELECT rk(g), 'c' || g || '@example.com', (ARRAY['Berlin','Hamburg','Munich','Cologne'])[1 + g % 4],
       g % 200, date '1950-01-01' + (g * 37) % 20000, CASE WHEN g % 9 = 0 THEN 'diabetes' END
FROM generate_series(1, 2000) g;
INSERT INTO orders (customer_id, category, amount)
SELECT rk(1 + (g * 7) % 2000), (ARRAY['running','books','yoga','kids'])[1 + g % 4], (g % 50)::numeric FROM generate_series(1, 5000) g;
SELECT mseg.register_subjects('customers', 'id');
SELECT mseg.classify('customers', 'email', 'direct');
SELECT mseg.classify('customers', 'health', 'sensitive');
SELECT mseg.register_source('orders', 'customer_id');
SELECT mseg.define_purpose('dm', '{consent,legitimate_interest}', '2 years');
SELECT mseg.define_purpose('nl', '{consent}', '1 year');
SELECT mseg.define_segment('berlin', 'dm', $$city = 'Berlin'$$);
SELECT mseg.define_segment('rich', 'dm', $$points > 150$$);
SELECT mseg.define_segment('young_rich_runners', 'dm', $$birth_date > date '1980-01-01' AND points > 50
    AND EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = s.id AND o.category = 'running')$$);
SELECT mseg.define_segment('frequent', 'dm', $$(SELECT count(*) FROM orders o WHERE o.customer_id = s.id) >= 4$$);
SELECT mseg.define_segment('big_basket', 'nl', $$(SELECT sum(amount) FROM orders o WHERE o.customer_id = s.id) > 80$$);
SELECT mseg.define_segment('health', 'dm', $$health IS NOT NULL AND city <> 'Munich'$$);
SELECT mseg.define_segment('no_orders', 'nl', $$NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = s.id)$$);
-- consent operations may legitimately be refused (unknown or erased subject, nothing to withdraw)
CREATE FUNCTION rnd_consent(op int, subject :keytype) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    CASE op
        WHEN 0 THEN PERFORM mseg.grant_consent(subject, 'dm', 'v1');
        WHEN 1 THEN PERFORM mseg.grant_consent(subject, 'nl', 'v' || (abs(hashtext(subject::text)) % 3));
        WHEN 2 THEN PERFORM mseg.withdraw_consent(subject, 'nl');
        WHEN 3 THEN PERFORM mseg.withdraw_consent(subject, 'dm');
        WHEN 4 THEN PERFORM mseg.object(subject, 'dm');
        WHEN 5 THEN PERFORM mseg.lift_objection(subject, 'dm');
        WHEN 6 THEN PERFORM mseg.restrict(subject);
        WHEN 7 THEN PERFORM mseg.lift_restriction(subject);
        ELSE PERFORM mseg.forget(subject, mode => 'nullify');
    END CASE;
EXCEPTION WHEN SQLSTATE 'MS040' OR SQLSTATE 'MS043' OR SQLSTATE 'MS044' OR SQLSTATE 'MS049' THEN
    NULL;
END $$;
SQL
if [ "$key" = uuid ]; then   # the keys really are mapped: one subject id per customer
    ids=$(mseg_psql rnd -At -c "SELECT count(*) FROM mseg.subject_ids")
    note "uuid keys: $ids subject ids in mseg.subject_ids"
    [ "$ids" -ge 2000 ] || { echo "FAIL: expected 2000 mapped subject ids, found $ids"; exit 1; }
fi
cat > "$MSEG_DIR/ops.sql" <<'PGB'
\set op random(1, 21)
\set id random(1, :idmax)
\set v random(0, 300)
\if :op <= 3
INSERT INTO customers VALUES (rk(:id), 'n' || :id || '@example.com', (ARRAY['Berlin','Hamburg','Munich'])[1 + :v % 3], :v, date '1960-01-01' + :v * 60, CASE WHEN :v % 5 = 0 THEN 'vegan' END) ON CONFLICT (id) DO NOTHING;
\elif :op <= 5
UPDATE customers SET city = (ARRAY['Berlin','Hamburg','Munich','Cologne'])[1 + :v % 4] WHERE id = rk(:id);
\elif :op <= 7
UPDATE customers SET points = :v WHERE id = rk(:id);
\elif :op = 8
DELETE FROM customers WHERE id = rk(:id);
\elif :op <= 11
INSERT INTO orders (customer_id, category, amount) VALUES (rk(:id), (ARRAY['running','books','yoga','kids'])[1 + :v % 4], :v % 60);
\elif :op = 12
UPDATE orders SET category = (ARRAY['running','books','yoga','kids'])[1 + :v % 4] WHERE id = (SELECT max(id) FROM orders WHERE customer_id = rk(:id));
\elif :op = 13
DELETE FROM orders WHERE customer_id = rk(:id);
\elif :op = 14
UPDATE customers SET points = points + 1 WHERE id IN (SELECT rk(g) FROM generate_series(:id, :id + 25) g);
\elif :op = 15
INSERT INTO orders (customer_id, category, amount) SELECT rk(g), (ARRAY['running','books','yoga','kids'])[1 + (g + :v) % 4], :v % 60 FROM generate_series(:id, :id + 30) g;
\else
SELECT rnd_consent(:v % 9, rk(:id));
\endif
PGB
# New subjects under contention: a few ids above the initial 2,000 whose customer rows are inserted
# and deleted while their orders are inserted and deleted (orders may come before their subject).
cat > "$MSEG_DIR/new_subjects.sql" <<'PGB'
\set op random(1, 10)
\set id random(2001, 2000 + :ids)
\set v random(0, 300)
\if :op <= 3
INSERT INTO customers VALUES (rk(:id), 'n' || :id || '@example.com', (ARRAY['Berlin','Hamburg','Munich'])[1 + :v % 3], :v, date '1960-01-01' + :v * 60, NULL) ON CONFLICT (id) DO NOTHING;
\elif :op <= 5
DELETE FROM customers WHERE id = rk(:id);
\elif :op <= 8
INSERT INTO orders (customer_id, category, amount) VALUES (rk(:id), (ARRAY['running','books','yoga','kids'])[1 + :v % 4], :v % 60);
\elif :op = 9
DELETE FROM orders WHERE customer_id = rk(:id);
\else
INSERT INTO customers SELECT rk(g), 'n' || g || '@example.com', 'Berlin', :v, date '1990-01-01', NULL FROM generate_series(:id, :id + 3) g ON CONFLICT (id) DO NOTHING;
\endif
PGB
chown postgres "$MSEG_DIR/ops.sql" "$MSEG_DIR/new_subjects.sql"
pgb() { sudo -u postgres env PGOPTIONS="${PGOPTIONS:-}" "$PG_BIN/pgbench" -h "$MSEG_SOCK" -p "$MSEG_PORT" -U postgres -n -f "$MSEG_DIR/${OPS:-ops}.sql" "$@" rnd; }
RR='-c default_transaction_isolation=repeatable\ read'
new_subjects() {  # label: the new-subjects workload in READ COMMITTED, then in REPEATABLE READ
    note "phase $1: new subjects (40 ids above 2000, inserted and deleted beside their orders), 4 clients x 1000 transactions, READ COMMITTED"
    OPS=new_subjects pgb -D ids=40 -c 4 -j 2 -t 1000 --max-tries=20 2>&1 | grep -E "processed|failed|retried|tps" | sed 's/^/   /'
    note "phase $1 (REPEATABLE READ): the same, 4 clients x 500 transactions"
    OPS=new_subjects PGOPTIONS="$RR" pgb -D ids=40 -c 4 -j 2 -t 500 --max-tries=100 2>&1 | grep -E "processed|failed|retried|tps" | sed 's/^/   /'
}
note "phase 1: 4 clients x 2500 transactions, READ COMMITTED"
pgb -D idmax=4000 -c 4 -j 2 -t 2500 --max-tries=20 2>&1 | grep -E "processed|failed|retried|tps" | sed 's/^/   /'
note "phase 2: 4 clients x 500 transactions on 300 subjects (many conflicts), REPEATABLE READ"
PGOPTIONS="$RR" pgb -D idmax=300 -c 4 -j 2 -t 500 --max-tries=100 2>&1 | grep -E "processed|failed|retried|tps" | sed 's/^/   /'
verify() {     # label: no difference from a from-scratch evaluation, and enough changes to prove it
    read -r events members diffs <<< "$(mseg_psql rnd -At -F ' ' -c "SELECT (SELECT count(*) FROM mseg.membership_events),
        (SELECT count(*) FROM mseg.memberships WHERE segments <> '{}'), (SELECT count(*) FROM mseg.verify_segments())")"
    note "after $1: membership events written: $events; subjects in a segment now: $members; differences: $diffs"
    [ "$events" -gt 1000 ] || { echo "FAIL: the workload changed too few memberships ($events) to prove anything"; exit 1; }
    if [ "$diffs" != "0" ]; then
        mseg_psql rnd -c "SELECT * FROM mseg.verify_segments() LIMIT 20"
        echo "FAIL: memberships differ from a from-scratch evaluation after $1"; exit 1
    fi
}
verify "phases 1-2"
new_subjects 2b
verify "phase 2b"
# Every statement maintained in bulk (memberships table lock in READ COMMITTED, sources read in
# grouped passes, new subjects inserted without ON CONFLICT), then the row-lock protocol with
# grouped passes in REPEATABLE READ.
mseg_psql rnd -q -c "ALTER DATABASE rnd SET mseg.bulk_statement_subjects = 1"
note "phase 3: bulk upkeep for every statement, 4 clients x 500 transactions, READ COMMITTED"
pgb -D idmax=4000 -c 4 -j 2 -t 500 --max-tries=20 2>&1 | grep -E "processed|failed|retried|tps" | sed 's/^/   /'
note "phase 4: bulk upkeep, 4 clients x 250 transactions on 300 subjects, REPEATABLE READ"
PGOPTIONS="$RR" pgb -D idmax=300 -c 4 -j 2 -t 250 --max-tries=100 2>&1 | grep -E "processed|failed|retried|tps" | sed 's/^/   /'
verify "phases 3-4 (bulk)"
new_subjects "4b (bulk)"
verify "phase 4b (bulk)"
audit=$(mseg_psql rnd -At -c "SELECT ok FROM mseg.verify_audit_log()")
[ "$audit" = "t" ] || { echo "FAIL: audit chain broken"; exit 1; }
echo "segments_random$([ "$key" = uuid ] && echo _uuid || true): 1 passed, 0 failed"
