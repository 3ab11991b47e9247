#!/usr/bin/env bash
# Variant Twins end to end: two controllers (databases acme and bikeco) export signed dumps to one
# trusted party (database trustco), which verifies, imports and pools them; deltas carry
# tombstones; resolve answers only for processable subjects; every tampering is rejected with
# nothing imported; partners get unlinkable pseudonyms; exports pass a k check and contain no
# direct identifier. (The three databases share one cluster and so one key file; real controllers
# each have their own.)
source "$(dirname "$0")/../scripts/lib.sh"
mseg_cluster_start
say "Variant Twins round trip"
fails=0
check() { if [ "$2" = "$3" ]; then note "ok   $1"; else echo "FAIL $1: got '$2', expected '$3'"; fails=$((fails + 1)); fi; }
out="$MSEG_DIR/dumps"; sudo -u postgres mkdir -p "$out"
for db in acme bikeco trustco; do mseg_psql postgres -q -c "CREATE DATABASE $db" -c "ALTER DATABASE $db SET mseg.controller_id = '$db'"; done

setup_controller() {   # db, number of customers, seed
    mseg_psql "$1" -q >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
CREATE TABLE customers (id bigint PRIMARY KEY, email text, born date, zip text, sex text, sport text);
INSERT INTO customers SELECT g, '$1-' || g || '@example.com', date '1950-01-01' + (g * 97 + $3) % 20000,
       lpad((10000 + (g * 7919 + $3) % 2000)::text, 5, '0'), (ARRAY['f','m'])[1 + g % 2],
       (ARRAY['running','cycling','yoga'])[1 + (g + $3) % 3] FROM generate_series(1, $2) g;
SELECT mseg.register_subjects('customers', 'id');
SELECT mseg.classify('customers', 'email', 'direct');
SELECT mseg.classify('customers', 'born', 'quasi', hierarchy => 'date');
SELECT mseg.classify('customers', 'zip', 'quasi', hierarchy => 'prefix');
SELECT mseg.classify('customers', 'sex', 'quasi');
SELECT mseg.classify('customers', 'sport', 'attribute');
SELECT mseg.define_purpose('direct_marketing', '{consent,legitimate_interest}', '2 years');
SELECT mseg.define_segment('runners', 'direct_marketing', \$\$sport = 'running'\$\$);
SELECT mseg.define_segment('cyclists', 'direct_marketing', \$\$sport = 'cycling'\$\$);
SELECT mseg.add_partner('trustco', '{direct_marketing}', k => 10);
SELECT mseg.add_partner('otherco', '{direct_marketing}', k => 10);
SQL
}
setup_controller acme 3000 0
setup_controller bikeco 2000 7
# the documented way to write a dump byte for byte: csv with quote and delimiter no JSON contains
export_to() {   # db, partner, mode, file
    mseg_psql "$1" -q -c "COPY (SELECT mseg.export_variant_twins('$2', mode => '$3')) TO '$out/$4' WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')"
}
export_to acme trustco full acme-1.jsonl
export_to bikeco trustco full bikeco-1.jsonl
export_to acme otherco full acme-other-1.jsonl
mseg_psql trustco -q >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
SELECT mseg.register_controller('acme', '$(mseg_psql acme -Atc "SELECT mseg.controller_public_key()")');
SELECT mseg.register_controller('bikeco', '$(mseg_psql bikeco -Atc "SELECT mseg.controller_public_key()")');
SQL
pool() { mseg_psql trustco -Atc "SELECT count(*) FROM mseg.pool_twins"; }
import() { mseg_psql trustco -At -v ON_ERROR_STOP=0 -c "SELECT mseg.import_variant_twins('$out/$1')" 2>&1 | grep -oE "^[0-9]+$|ERROR:.*" | head -1 || true; }
import_err() { sudo -u postgres "$PG_BIN/psql" -h "$MSEG_SOCK" -p "$MSEG_PORT" -U postgres -d trustco -X -At -c "SELECT mseg.import_variant_twins('$out/$1')" 2>&1 | grep "ERROR" | head -1 || true; }

# --- the tamper matrix, against acme's first dump: each rejected, nothing imported
tamper() {   # name, sed/awk program making the file
    local f="$out/t-$1.jsonl"
    sudo -u postgres sh -c "$2 < '$out/acme-1.jsonl' > '$f'"
    local before; before=$(pool)
    local err; err=$(import_err "t-$1.jsonl")
    if [ -n "$err" ] && [ "$(pool)" = "$before" ]; then note "ok   rejected ($1): ${err#ERROR:  }"; else echo "FAIL $1 not rejected: $err"; fails=$((fails + 1)); fi
}
tamper edited-line "sed '5s/\"segments\":\[/\"segments\":[\"vip\",/'"
tamper dropped-line "sed '7d'"
tamper truncated "head -c 20000"
tamper reordered "awk 'NR==3{l3=\$0; next} NR==4{print; print l3; next} {print}'"
tamper malformed-json "sed '6s/^{/{{/'"
tamper unknown-format "sed '1s/mseg-vt\\/2/mseg-vt\\/9/'"
tamper no-trailer "sed '\$d'"
tamper empty "head -c 0"
# a dump for another partner
before=$(pool); err=$(import_err acme-other-1.jsonl)
[ -n "$err" ] && [ "$(pool)" = "$before" ] && note "ok   rejected (for another partner): ${err#ERROR:  }" || { echo "FAIL other partner: $err"; fails=$((fails + 1)); }
# a wrong key: bikeco's dump claims to be acme's
sudo -u postgres sh -c "sed '1s/\"controller\":\"bikeco\"/\"controller\":\"acme\"/' < '$out/bikeco-1.jsonl' > '$out/t-wrong-key.jsonl'"
before=$(pool); err=$(import_err t-wrong-key.jsonl)
[ -n "$err" ] && [ "$(pool)" = "$before" ] && note "ok   rejected (wrong key): ${err#ERROR:  }" || { echo "FAIL wrong key: $err"; fails=$((fails + 1)); }

# --- an administrator without pg_read_server_files cannot make the import read server files
mseg_psql trustco -q -c "CREATE ROLE twin_admin LOGIN IN ROLE mseg_admin" >/dev/null
err=$(sudo -u postgres "$PG_BIN/psql" -h "$MSEG_SOCK" -p "$MSEG_PORT" -U twin_admin -d trustco -X -At -c "SELECT mseg.import_variant_twins('$out/acme-1.jsonl')" 2>&1 | grep ERROR | head -1 || true)
case "$err" in *pg_read_server_files*) note "ok   refused to a non-privileged administrator: ${err#ERROR:  }" ;; *) echo "FAIL server-file import by twin_admin: $err"; fails=$((fails + 1)) ;; esac

# --- the genuine dumps import, in order; a replay is refused
check "acme full dump imports" "$(import acme-1.jsonl)" "$(sudo -u postgres sh -c "grep -c '\"type\":\"twin\"' '$out/acme-1.jsonl'")"
check "bikeco full dump imports" "$(import bikeco-1.jsonl)" "$(sudo -u postgres sh -c "grep -c '\"type\":\"twin\"' '$out/bikeco-1.jsonl'")"
before=$(pool); err=$(import_err acme-1.jsonl)
[ -n "$err" ] && [ "$(pool)" = "$before" ] && note "ok   rejected (replay): ${err#ERROR:  }" || { echo "FAIL replay: $err"; fails=$((fails + 1)); }
check "pool holds both controllers" "$(mseg_psql trustco -Atc "SELECT count(DISTINCT controller) FROM mseg.pool_twins")" "2"
# --- a pool segment across controllers: checked like local segments, kept by every import
pool_def() { mseg_psql trustco -At -v ON_ERROR_STOP=0 -c "SELECT mseg.define_pool_segment('$1', 'direct_marketing', \$\$$2\$\$)" 2>&1 | grep -oE "^[0-9]+$|ERROR:.*" | head -1 || true; }
POOL_PRED="'runners' = ANY (t.segments) OR t.quasi->>'sex' = 'f'"
recount() { mseg_psql trustco -Atc "SELECT count(*) FROM mseg.pool_twins t WHERE ($POOL_PRED) AND t.policy->'purposes' ? 'direct_marketing'"; }
expected_members=$(recount)
check "pool segment defined with its members counted" "$(pool_def sporty "$POOL_PRED")" "$expected_members"
check "pool segment spans both controllers" "$(mseg_psql trustco -Atc "SELECT count(DISTINCT controller) FROM mseg.pool_segment_members('sporty')")" "2"
# sizes reach applications as published (noisy, k-suppressed): imports publish; so does the DBA
check "a new pool segment has no published size yet" "$(mseg_psql trustco -Atc "SELECT count(*) FROM mseg.pool_segment_sizes WHERE segment = 'sporty'")" "0"
mseg_psql trustco -q -c "SELECT mseg.publish_segment_sizes()" >/dev/null
check "published pool segment size is within the noise (kind pool)" "$(mseg_psql trustco -Atc "SELECT abs(twins - $expected_members) <= 30 FROM mseg.pool_segment_sizes WHERE kind = 'pool' AND segment = 'sporty' AND controller IS NULL")" "t"
for bad in "t.quasi->>'sex'|not boolean" "EXISTS (SELECT 1 FROM mseg.controllers c)|reads" "random() > 0.5|volatile" "t.expires_at > now()|current time" "true) AS x, (true|single expression"; do
    err=$(pool_def bad_one "${bad%%|*}")
    case "$err" in *"${bad#*|}"*) note "ok   pool predicate refused: ${err#ERROR:  }" ;; *) echo "FAIL pool predicate '${bad%%|*}' not refused as expected: $err"; fails=$((fails + 1)) ;; esac
done
check "a refused pool segment leaves nothing" "$(mseg_psql trustco -Atc "SELECT count(*) FROM mseg.pool_segments")" "1"
note "pooled segment sizes (controller empty = across controllers):"
mseg_psql trustco -c "SELECT * FROM mseg.pool_segment_sizes ORDER BY segment, controller NULLS LAST" | sed 's/^/      /'

# --- unlinkability: acme's subjects have unrelated pseudonyms for trustco and otherco
shared=$(sudo -u postgres sh -c "grep -o '\"pseudonym\":\"[^\"]*\"' '$out/acme-1.jsonl' | sort > '$out/p1'; grep -o '\"pseudonym\":\"[^\"]*\"' '$out/acme-other-1.jsonl' | sort > '$out/p2'; comm -12 '$out/p1' '$out/p2' | wc -l")
check "no pseudonym shared between two partners' dumps" "$shared" "0"
# --- no direct identifier in any dump; every released class has k twins
leaks=$(mseg_psql acme -Atc "SELECT email FROM customers" | sudo -u postgres sh -c "grep -F -c -f - '$out/acme-1.jsonl' '$out/acme-other-1.jsonl' | awk -F: '{s+=\$2} END {print s+0}'")
check "no e-mail address of acme's customers in its dumps" "$leaks" "0"
kmin=$(sudo -u postgres sh -c "grep '\"type\":\"twin\"' '$out/acme-1.jsonl'" | python3 -c "
import sys, json, collections
c = collections.Counter(json.dumps(json.loads(l)['quasi'], sort_keys=True) for l in sys.stdin)
print(min(c.values()))")
[ "$kmin" -ge 10 ] && note "ok   every quasi class in acme's dump has $kmin or more twins (k = 10)" || { echo "FAIL k check: $kmin"; fails=$((fails + 1)); }
for f in acme-1 bikeco-1 acme-other-1; do
    kall=$(sudo -u postgres sh -c "grep '\"type\":\"twin\"' '$out/$f.jsonl'" | python3 -c "
import sys, json, collections
def rest(l):
    d = json.loads(l); d.pop('pseudonym'); return json.dumps(d, sort_keys=True)
c = collections.Counter(rest(l) for l in sys.stdin)
print(min(c.values()))")
    claimed=$(sudo -u postgres sh -c "head -1 '$out/$f.jsonl'" | python3 -c "import sys, json; print(json.load(sys.stdin)['k_reached'])")
    [ "$kall" -ge 10 ] && [ "$kall" = "$claimed" ] && note "ok   $f: every group of twins equal in every field but the pseudonym has $kall or more, as its manifest says" || { echo "FAIL k over all fields in $f: $kall (manifest: $claimed)"; fails=$((fails + 1)); }
done

# --- a withdrawal after the full export: tombstone in the next delta, refusal in resolve
victim=$(mseg_psql acme -Atc "SELECT subject_key FROM mseg.partner_twins WHERE partner = 'trustco' ORDER BY subject_key LIMIT 1")
vpn=$(mseg_psql acme -Atc "SELECT pseudonym FROM mseg.partner_twins WHERE partner = 'trustco' AND subject_key = $victim")
check "resolve before objection" "$(mseg_psql acme -Atc "SELECT status || ':' || subject_key FROM mseg.resolve('trustco', ARRAY['$vpn', 'unknown-pseudonym'], 'direct_marketing') LIMIT 1")" "ok:$victim"
mseg_psql acme -q -c "SELECT mseg.object($victim, 'direct_marketing')" >/dev/null
check "resolve after objection" "$(mseg_psql acme -Atc "SELECT string_agg(status, ',') FROM mseg.resolve('trustco', ARRAY['$vpn', 'unknown-pseudonym'], 'direct_marketing')")" "not_processable,unknown"
export_to acme trustco delta acme-2.jsonl
check "the delta carries the tombstone (without a reason)" "$(sudo -u postgres sh -c "grep -c '^{\"pseudonym\":\"$vpn\",\"type\":\"tombstone\"}\$' '$out/acme-2.jsonl'")" "1"
check "the delta's manifest counts it as an objection" "$(sudo -u postgres sh -c "head -1 '$out/acme-2.jsonl'" | python3 -c "import sys, json; print(json.load(sys.stdin)['ended_by_reason'].get('objected'))")" "1"
ntomb=$(sudo -u postgres sh -c "grep -c '\"type\":\"tombstone\"' '$out/acme-2.jsonl'")
[ "$ntomb" -ge 10 ] && note "ok   the objection ended its whole cohort: $ntomb tombstones (k = 10)" || { echo "FAIL one objection gave $ntomb tombstones, fewer than k"; fails=$((fails + 1)); }
check "delta imports" "$(import acme-2.jsonl)" "$(sudo -u postgres sh -c "grep -c '\"type\":\"twin\"' '$out/acme-2.jsonl'")"
check "resolve after the tombstone still refuses" "$(mseg_psql acme -Atc "SELECT string_agg(status, ',') FROM mseg.resolve('trustco', ARRAY['$vpn'], 'direct_marketing')")" "not_processable"
check "the objecting customer is gone downstream" "$(mseg_psql trustco -Atc "SELECT count(*) FROM mseg.pool_twins WHERE controller = 'acme' AND pseudonym = '$vpn'")" "0"
check "pool segment kept exact by the delta import" "$(mseg_psql trustco -Atc "SELECT count(*) FROM mseg.pool_segment_members('sporty')")" "$(recount)"
# --- client-side import through a staging table (psql \copy with the same csv trick)
export_to bikeco trustco delta bikeco-2.jsonl
sudo -u postgres "$PG_BIN/psql" -h "$MSEG_SOCK" -p "$MSEG_PORT" -U postgres -d trustco -X -q >/dev/null <<SQL
CREATE TEMP TABLE staging (n bigint GENERATED ALWAYS AS IDENTITY, line text);
\copy staging(line) FROM '$out/bikeco-2.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02')
SELECT mseg.import_variant_twins_from('staging');
SQL
check "client-side import advanced bikeco's sequence" "$(mseg_psql trustco -Atc "SELECT last_sequence FROM mseg.controllers WHERE id = 'bikeco'")" "2"
# --- a partner removed and added again gets pseudonyms unrelated to those it had
held_before=$(mseg_psql acme -Atc "SELECT count(*) > 0 FROM mseg.partner_twins WHERE partner = 'otherco'")
mseg_psql acme -q -c "SELECT mseg.remove_partner('otherco')" >/dev/null
# (mseg.partner_twins has no foreign key to the partner: remove_partner deletes its rows itself)
check "removing a partner forgets what it held" "$held_before $(mseg_psql acme -Atc "SELECT count(*) FROM mseg.partner_twins WHERE partner = 'otherco'")" "t 0"
mseg_psql acme -q -c "SELECT mseg.add_partner('otherco', '{direct_marketing}', k => 10)" >/dev/null
export_to acme otherco full acme-other-2.jsonl
shared=$(sudo -u postgres sh -c "grep -o '\"pseudonym\":\"[^\"]*\"' '$out/acme-other-2.jsonl' | sort > '$out/p3'; comm -12 '$out/p2' '$out/p3' | wc -l")
check "a partner added again shares no pseudonym with its earlier dumps" "$shared" "0"
check "audit chains verify on all three" "$(for db in acme bikeco trustco; do mseg_psql $db -Atc "SELECT ok FROM mseg.verify_audit_log()"; done | sort -u)" "t"
if [ "$fails" -gt 0 ]; then echo "twins_roundtrip: $fails checks failed"; exit 1; fi
echo "twins_roundtrip: 1 passed, 0 failed"
