#!/usr/bin/env bash
# Replicas and copies: a hot standby made with pg_basebackup -R (same key file) serves segment
# sizes, k-views and the verify functions read-only; exports are refused there. A promoted standby
# and a pg_dump/pg_restore copy must be accepted (mseg.accept_copy) before they export again, and
# then continue the partner's sequence. Called by scripts/test.
source "$(dirname "$0")/../scripts/lib.sh"
mseg_cluster_start "wal_level = replica" "max_wal_senders = 4" "hot_standby = on"
STANDBY="$MSEG_DIR/standby"
SPORT=$((MSEG_PORT + 1))
fail() { echo "FAIL: $*"; exit 1; }
stop_standby() { sudo -u postgres "$PG_BIN/pg_ctl" -D "$STANDBY" -m immediate stop >/dev/null 2>&1 || true; }
trap 'stop_standby; mseg_cluster_stop' EXIT
spsql() { sudo -u postgres "$PG_BIN/psql" -h "$MSEG_SOCK" -p "$SPORT" -U postgres -d "$1" -X -v ON_ERROR_STOP=1 "${@:2}"; }

say "a controller with subjects, consent, segments, a k-view and an export"
mseg_psql postgres -q -c "CREATE DATABASE ctl"
mseg_psql ctl -q >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
CREATE TABLE customers (customer_id bigint PRIMARY KEY, email text, birth_date date, postcode text);
INSERT INTO customers SELECT g, 'u' || g || '@example.com', date '1950-01-01' + (g * 37) % 20000, lpad(((g * 7919) % 100)::text, 5, '1')
FROM generate_series(1, 2000) g;
SELECT mseg.register_subjects('customers', key_column => 'customer_id');
SELECT mseg.classify('customers', 'email', 'direct');
SELECT mseg.classify('customers', 'birth_date', 'quasi', hierarchy => 'date');
SELECT mseg.classify('customers', 'postcode', 'quasi', hierarchy => 'prefix');
SELECT mseg.define_purpose('dm', '{consent,legitimate_interest}', '2 years');
SELECT count(mseg.grant_consent(g, 'dm')) FROM generate_series(1, 300) g;
SELECT mseg.object(1000, 'dm');
SELECT mseg.define_segment('young', 'dm', $$birth_date > date '1980-01-01'$$);
-- a k-view is owned by a role that is not a superuser (it computes its rows with its owner's rights)
CREATE ROLE rep_kview IN ROLE mseg_admin;
GRANT SELECT ON customers TO rep_kview;
GRANT CREATE ON SCHEMA public TO rep_kview;
SET ROLE rep_kview;
SELECT mseg.create_kanon_view('public.customers_k', 'customers', k => 5);
RESET ROLE;
SELECT mseg.add_partner('trustco', '{dm}', k => 5);
SELECT count(*) FROM mseg.export_variant_twins('trustco');
SQL
fp=$(mseg_psql ctl -Atc "SELECT mseg.key_fingerprint()")
note "primary: $(mseg_psql ctl -Atc "SELECT last_sequence FROM mseg.partners") export(s) to trustco, key $fp"

say "a hot standby (pg_basebackup -R, the same key file)"
sudo -u postgres "$PG_BIN/pg_basebackup" -h "$MSEG_SOCK" -p "$MSEG_PORT" -U postgres -D "$STANDBY" -R -X stream >/dev/null
echo "port = $SPORT" | sudo -u postgres tee -a "$STANDBY/postgresql.auto.conf" >/dev/null
sudo -u postgres "$PG_BIN/pg_ctl" -D "$STANDBY" -l "$MSEG_DIR/standby.log" -w start >/dev/null
mseg_psql ctl -q -c "SELECT mseg.grant_consent(301, 'dm')" >/dev/null
for _ in $(seq 1 50); do
    [ "$(spsql ctl -Atc "SELECT count(*) FROM mseg.consent_events" 2>/dev/null)" = "$(mseg_psql ctl -Atc "SELECT count(*) FROM mseg.consent_events")" ] && break
    sleep 0.2
done
[ "$(spsql ctl -Atc "SELECT pg_is_in_recovery()")" = "t" ] || fail "the standby is not in recovery"
for q in "SELECT mseg.key_fingerprint()" \
         "SELECT count(*) FROM mseg.segment_sizes" \
         "SELECT count(*) FROM public.customers_k" \
         "SELECT count(*) FROM mseg.verify_segments()" \
         "SELECT ok FROM mseg.verify_audit_log()" \
         "SELECT mseg.k_anonymity('customers')" \
         "SELECT mseg.is_processable(1000, 'dm')"; do
    p=$(mseg_psql ctl -Atc "$q"); s=$(spsql ctl -Atc "$q") || fail "the standby refused: $q"
    [ "$p" = "$s" ] || fail "$q: primary '$p', standby '$s'"
    note "ok on the standby, as on the primary: $q -> $s"
done
out=$(spsql ctl -Atc "SELECT count(*) FROM mseg.export_variant_twins('trustco')" 2>&1) && fail "the standby exported: $out"
echo "$out" | grep -q "this server is a standby" || fail "unexpected refusal on the standby: $out"
note "ok: the standby refuses to export (MS075, this server is a standby)"

say "the standby promoted: a new timeline must be accepted before it exports"
sudo -u postgres "$PG_BIN/pg_ctl" -D "$STANDBY" -w promote >/dev/null
for _ in $(seq 1 50); do [ "$(spsql ctl -Atc "SELECT pg_is_in_recovery()")" = "f" ] && break; sleep 0.2; done
out=$(spsql ctl -Atc "SELECT count(*) FROM mseg.export_variant_twins('trustco')" 2>&1) && fail "the promoted standby exported without acceptance: $out"
echo "$out" | grep -q "another timeline" || fail "unexpected refusal after promotion: $out"
note "ok: refused (MS075, on another timeline than the earlier exports)"
spsql ctl -Atc "SELECT mseg.accept_copy()" >/dev/null
n=$(spsql ctl -Atc "SELECT count(*) FROM mseg.export_variant_twins('trustco', mode => 'delta')")
seq=$(spsql ctl -Atc "SELECT last_sequence FROM mseg.partners WHERE name = 'trustco'")
[ "$seq" = "2" ] || fail "the accepted copy did not continue the sequence (last_sequence $seq)"
spsql ctl -Atc "SELECT action FROM mseg.audit_log ORDER BY seq DESC LIMIT 10" | grep -q "instance.accept_copy" || fail "accept_copy was not audited"
note "ok: after mseg.accept_copy() (audited) the promoted copy exports dump 2 ($n lines)"
stop_standby

say "a pg_dump / pg_restore copy: another database, to be accepted before it exports"
mseg_psql postgres -q -c "CREATE DATABASE ctl_copy"
sudo -u postgres "$PG_BIN/pg_dump" -h "$MSEG_SOCK" -p "$MSEG_PORT" -U postgres -Fc -f "$MSEG_DIR/ctl.dump" ctl
sudo -u postgres "$PG_BIN/pg_restore" -h "$MSEG_SOCK" -p "$MSEG_PORT" -U postgres --exit-on-error -d ctl_copy "$MSEG_DIR/ctl.dump"
out=$(mseg_psql ctl_copy -Atc "SELECT count(*) FROM mseg.export_variant_twins('trustco')" 2>&1) && fail "the restored copy exported: $out"
echo "$out" | grep -q "restored or cloned copy" || fail "unexpected refusal in the restored copy: $out"
note "ok: the restored copy refuses to export (MS075, a restored or cloned copy)"
mseg_psql ctl -Atc "SELECT count(*) FROM mseg.export_variant_twins('trustco', mode => 'delta')" >/dev/null
note "ok: the original still exports without any step"
echo "replica: 1 passed, 0 failed"
