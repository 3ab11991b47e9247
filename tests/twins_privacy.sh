#!/usr/bin/env bash
# Variant Twin privacy on real data: UCI Adult (48,842 people, plus 1,221 near-copies to pass
# 50,000 rows) as a controller's customers, with consents granted over two years, objections,
# four segments and a partner (k = 10) that may use the twins for two purposes. The controller
# sends a full dump, then 20 deltas, each after one change to one customer (a value, a new
# customer, a withdrawal, an objection, an erasure, a restriction, a segment joined or left, a
# deleted row), then a full dump again, then a refresh (every twin grouped afresh). An independent checker (tests/twins_privacy_check.py,
# which reads only the dumps, the public table at the time of each dump and, for the order test,
# the controller's pseudonym -> key table) confirms:
#   - k over every released field (quasi values, segments, legal basis, expiry, policy), per dump
#     and over everything the partner holds after each dump, equal to the manifest's k_reached;
#   - twins and tombstones in pseudonym order: rank correlation of line order and subject key
#     within +-0.02 on the full dump; tombstones carry nothing but the pseudonym;
#   - every pseudonym's history over all 23 dumps shared by >= k pseudonyms; the intersection of all
#     versions of every twin shared by >= k; linked to the public table at the time of every dump,
#     every twin has >= k candidate persons.
# The trusted party imports all 22 dumps; the state the deltas built equals the final full dump.
source "$(dirname "$0")/../scripts/lib.sh"
ADULT="$(mseg_adult_csv)"
K=10
mseg_cluster_start
say "Variant Twin privacy on UCI Adult (k = $K, 22 dumps)"
fails=0
check() { if [ "$2" = "$3" ]; then note "ok   $1"; else echo "FAIL $1: got '$2', expected '$3'"; fails=$((fails + 1)); fi; }
out="$MSEG_DIR/privacy"
sudo -u postgres mkdir -p "$out/dumps" "$out/snapshots"
cp "$ADULT" "$out/adult.csv" && chown postgres "$out/adult.csv"
for db in acme trustco; do mseg_psql postgres -q -c "CREATE DATABASE $db" -c "ALTER DATABASE $db SET mseg.controller_id = '$db'"; done
QUASI="age, workclass, education, marital_status, occupation, race, sex, native_country"

t0=$(date +%s)
mseg_psql acme -q >/dev/null <<SQL
SET client_min_messages = warning;
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, age int, workclass text, fnlwgt int, education text,
    education_num int, marital_status text, occupation text, relationship text, race text, sex text, capital_gain int,
    capital_loss int, hours_per_week int, native_country text, income text);
CREATE TABLE education_levels (child text, parent text);
INSERT INTO education_levels
SELECT c, 'no-diploma' FROM unnest('{Preschool,1st-4th,5th-6th,7th-8th,9th,10th,11th,12th}'::text[]) c
UNION ALL SELECT c, 'high-school' FROM unnest('{HS-grad,Some-college}'::text[]) c
UNION ALL SELECT c, 'associate' FROM unnest('{Assoc-voc,Assoc-acdm}'::text[]) c
UNION ALL SELECT c, 'university' FROM unnest('{Bachelors,Masters,Doctorate,Prof-school}'::text[]) c
UNION ALL SELECT g, 'any' FROM unnest('{no-diploma,high-school,associate,university}'::text[]) g;
CREATE EXTENSION pg_mseg;
SELECT mseg.register_subjects('customers', 'id');
SELECT mseg.classify('customers', 'email', 'direct');
SELECT mseg.classify('customers', 'age', 'quasi', hierarchy => 'integer');
SELECT mseg.classify('customers', 'education', 'quasi', hierarchy => 'category:public.education_levels');
SELECT mseg.classify('customers', c, 'quasi') FROM unnest('{workclass,marital_status,occupation,race,sex,native_country}'::text[]) c;
SELECT mseg.classify('customers', c, 'attribute')
FROM unnest('{fnlwgt,education_num,relationship,capital_gain,capital_loss,hours_per_week,income}'::text[]) c;
SELECT mseg.define_purpose('direct_marketing', '{consent,legitimate_interest}', '2 years');
SELECT mseg.define_purpose('analytics', '{consent}', '1 year');
SELECT mseg.define_segment('high_earners', 'direct_marketing', \$\$ s.income = '>50K' \$\$);
SELECT mseg.define_segment('long_hours', 'direct_marketing', \$\$ s.hours_per_week >= 50 \$\$);
SELECT mseg.define_segment('married', 'direct_marketing', \$\$ s.marital_status LIKE 'Married%' \$\$);
SELECT mseg.define_segment('investors', 'analytics', \$\$ s.capital_gain > 0 \$\$);
SELECT mseg.add_partner('trustco', '{direct_marketing,analytics}', k => $K);
CREATE TEMP TABLE adult (id bigint, age int, workclass text, fnlwgt int, education text, education_num int, marital_status text,
    occupation text, relationship text, race text, sex text, capital_gain int, capital_loss int, hours_per_week int,
    native_country text, income text);
COPY adult FROM '$out/adult.csv' WITH (FORMAT csv, HEADER);
INSERT INTO customers SELECT id, 'c' || id || '@example.org', age, workclass, fnlwgt, education, education_num, marital_status,
    occupation, relationship, race, sex, capital_gain, capital_loss, hours_per_week, native_country, income FROM adult;
-- near-copies of every 40th person, one year older, to pass 50,000 rows
INSERT INTO customers SELECT 100000 + id, 'n' || id || '@example.org', age + 1, workclass, fnlwgt, education, education_num,
    marital_status, occupation, relationship, race, sex, capital_gain, capital_loss, hours_per_week, native_country, income
FROM adult WHERE id % 40 = 7;
-- consents: direct marketing from about 35 %, analytics from about 25 %; objections from 2 %
SELECT count(mseg.grant_consent(id, 'direct_marketing', 'v1', 'signup')) FROM customers WHERE (id * 7) % 20 < 7;
SELECT count(mseg.grant_consent(id, 'analytics', 'v1', 'survey')) FROM customers WHERE (id * 11) % 20 < 5;
SELECT count(mseg.object(id, 'direct_marketing')) FROM customers WHERE (id * 13) % 50 = 3;
-- the grants were collected over the last two years (one year for analytics): spread their times
UPDATE mseg.legal_basis_state SET granted_at = granted_at - ((subject_key * 7919) % 700) * interval '1 day'
WHERE purpose = 'direct_marketing' AND consent_basis IS NOT NULL;
UPDATE mseg.legal_basis_state SET granted_at = granted_at - ((subject_key * 104729) % 340) * interval '1 day'
WHERE purpose = 'analytics' AND consent_basis IS NOT NULL;
SQL
note "acme: $(mseg_psql acme -Atc "SELECT count(*) || ' customers, ' || (SELECT count(*) FROM mseg.legal_basis_state WHERE consent_basis IS NOT NULL) || ' grants, ' || (SELECT count(*) FROM mseg.legal_basis_state WHERE objected_at IS NOT NULL) || ' objections' FROM customers") (set up in $(( $(date +%s) - t0 )) s)"
check "segments are exact after the load" "$(mseg_psql acme -Atc "SELECT count(*) FROM mseg.verify_segments()")" "0"
mseg_psql acme -Atc "COPY (SELECT child, parent FROM education_levels) TO '$out/education_levels.csv' WITH (FORMAT csv)" >/dev/null

# every dump to a file, byte for byte, and the public table as it was then
dump() {   # sequence, mode
    mseg_psql acme -q -c "COPY (SELECT mseg.export_variant_twins('trustco', mode => '$2')) TO '$out/dumps/$1.jsonl' WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')"
    mseg_psql acme -q -c "COPY (SELECT id, $QUASI FROM customers ORDER BY id) TO '$out/snapshots/$1.csv' WITH (FORMAT csv, HEADER)"
}
# a customer the partner holds now, picked by pseudonym (n-th), optionally with a condition
pick() { mseg_psql acme -Atc "SELECT t.subject_key FROM mseg.partner_twins t JOIN customers c ON c.id = t.subject_key
    WHERE t.partner = 'trustco' AND t.cohort IS NOT NULL ${2:+AND $2} ORDER BY t.pseudonym LIMIT 1 OFFSET $1"; }
newcomer() { mseg_psql acme -q -c "INSERT INTO customers SELECT $1, 'new$1@example.org', age - 1, workclass, fnlwgt, education, education_num,
    marital_status, occupation, relationship, race, sex, capital_gain, capital_loss, hours_per_week, native_country, income
    FROM customers WHERE id = $(pick "$2")"; }

t0=$(date +%s)
dump 1 full
mseg_psql acme -q -c "COPY (SELECT pseudonym, subject_key FROM mseg.partner_twins WHERE partner = 'trustco' AND cohort IS NOT NULL) TO '$out/keys.csv' WITH (FORMAT csv)"
note "full dump: $(sudo -u postgres grep -c '"type":"twin"' "$out/dumps/1.jsonl") twins in $(( $(date +%s) - t0 )) s"

# 20 deltas, each after one change to one customer
changed=()
step() {   # sequence, description, SQL
    mseg_psql acme -q -c "$3" >/dev/null
    dump "$1" delta
    local m; m=$(sudo -u postgres head -1 "$out/dumps/$1.jsonl")
    note "dump $1 after $2: $(python3 -c "import sys, json; m = json.loads(sys.argv[1]); c = m['counts']; print(f\"{c['twins']} twins, {c['tombstones']} tombstones {m['ended_by_reason']}, {c['pending']} waiting, k {m['k_reached']}\")" "$m")"
}
s1=$(pick 11 "c.age BETWEEN 25 AND 40");  step 2 "an age change ($s1)" "UPDATE customers SET age = age + 17 WHERE id = $s1"
newcomer 300001 21; step 3 "a new customer" "SELECT 1"
s3=$(pick 31 "EXISTS (SELECT 1 FROM mseg.legal_basis_state b WHERE b.subject_key = c.id AND b.purpose = 'direct_marketing' AND b.consent_basis = 'consent')")
step 4 "a withdrawal ($s3)" "SELECT mseg.withdraw_consent($s3, 'direct_marketing')"
s4=$(pick 41 "NOT EXISTS (SELECT 1 FROM mseg.legal_basis_state b WHERE b.subject_key = c.id AND b.purpose = 'analytics' AND b.consent_basis IS NOT NULL)")
vpn=$(mseg_psql acme -Atc "SELECT pseudonym FROM mseg.partner_twins WHERE partner = 'trustco' AND subject_key = $s4")
step 5 "an objection ($s4)" "SELECT mseg.object($s4, 'direct_marketing')"
check "the objecting customer's twin is tombstoned in that delta" \
    "$(sudo -u postgres grep -c "^{\"pseudonym\":\"$vpn\",\"type\":\"tombstone\"}\$" "$out/dumps/5.jsonl")" "1"
newcomer 300002 51; step 6 "a new customer" "SELECT 1"
s6=$(pick 61 "c.hours_per_week < 50");    step 7 "a segment joined ($s6)" "UPDATE customers SET hours_per_week = 60 WHERE id = $s6"
s7=$(pick 71 "c.hours_per_week >= 50");   step 8 "a segment left ($s7)" "UPDATE customers SET hours_per_week = 20 WHERE id = $s7"
s8=$(pick 81);                            step 9 "an erasure ($s8)" "SELECT mseg.forget($s8)"
s9=$(pick 91);                            step 10 "a restriction ($s9)" "SELECT mseg.restrict($s9)"
s10=$(pick 101 "c.marital_status = 'Never-married'"); step 11 "a marriage ($s10)" "UPDATE customers SET marital_status = 'Married-civ-spouse' WHERE id = $s10"
newcomer 300003 111; step 12 "a new customer" "SELECT 1"
s12=$(pick 121 "EXISTS (SELECT 1 FROM mseg.legal_basis_state b WHERE b.subject_key = c.id AND b.purpose = 'analytics' AND b.consent_basis = 'consent')")
step 13 "an analytics withdrawal ($s12)" "SELECT mseg.withdraw_consent($s12, 'analytics')"
s13=$(pick 131 "NOT EXISTS (SELECT 1 FROM mseg.legal_basis_state b WHERE b.subject_key = c.id AND b.purpose = 'analytics')")
step 14 "an analytics consent ($s13)" "SELECT mseg.grant_consent($s13, 'analytics', 'v2', 'web')"
s14=$(pick 141 "c.native_country = 'United-States'"); step 15 "a move abroad ($s14)" "UPDATE customers SET native_country = 'Canada' WHERE id = $s14"
newcomer 300004 151; step 16 "a new customer" "SELECT 1"
s16=$(pick 161);                          step 17 "an objection ($s16)" "SELECT mseg.object($s16, 'direct_marketing')"
s17=$(pick 171 "c.education = 'Bachelors'"); step 18 "a degree ($s17)" "UPDATE customers SET education = 'Masters' WHERE id = $s17"
newcomer 300005 181; step 19 "a new customer" "SELECT 1"
s19=$(pick 191);                          step 20 "a deleted row ($s19)" "DELETE FROM customers WHERE id = $s19"
s20=$(pick 201 "c.income = '<=50K'");     step 21 "a raise ($s20)" "UPDATE customers SET income = '>50K' WHERE id = $s20"
dump 22 full
dump 23 refresh
ncp() { sudo -u postgres head -1 "$out/dumps/$1.jsonl" | python3 -c "import sys, json; print(json.load(sys.stdin)['information_loss']['ncp'])"; }
note "NCP over what the partner holds: $(ncp 1) after the first dump, $(ncp 22) after 20 deltas, $(ncp 23) after a refresh"
check "a refresh leaves nothing to tombstone and no pseudonym of before" \
    "$(sudo -u postgres python3 -c "
import json
old = {json.loads(l)['pseudonym'] for l in open('$out/dumps/22.jsonl') if '\"type\":\"twin\"' in l}
new = [json.loads(l) for l in open('$out/dumps/23.jsonl')]
print(sum(1 for l in new if l.get('type') == 'tombstone'), sum(1 for l in new if l.get('pseudonym') in old))")" "0 0"
check "segments are still exact" "$(mseg_psql acme -Atc "SELECT count(*) FROM mseg.verify_segments()")" "0"

# the trusted party imports every dump in order; the deltas build what the last full dump says
mseg_psql trustco -q >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
SELECT mseg.register_controller('acme', '$(mseg_psql acme -Atc "SELECT mseg.controller_public_key()")');
SQL
pool_digest() { mseg_psql trustco -Atc "SELECT count(*) || ':' || md5(string_agg(pseudonym || quasi::text || segments::text || legal_basis::text || policy::text, '|' ORDER BY pseudonym)) FROM mseg.pool_twins"; }
imported=0
for s in $(seq 1 21); do
    r=$(mseg_psql trustco -At -v ON_ERROR_STOP=0 -c "SELECT mseg.import_variant_twins('$out/dumps/$s.jsonl')" 2>&1 | head -1)
    [[ "$r" =~ ^[0-9]+$ ]] && imported=$((imported + 1)) || echo "FAIL import of dump $s: $r"
done
check "the trusted party imports the full dump and 20 deltas" "$imported" "21"
before=$(pool_digest)
mseg_psql trustco -Atc "SELECT mseg.import_variant_twins('$out/dumps/22.jsonl')" >/dev/null
check "the pool the deltas built equals the final full dump" "$(pool_digest)" "$before"
check "the refresh imports" "$(mseg_psql trustco -Atc "SELECT mseg.import_variant_twins('$out/dumps/23.jsonl')")" \
    "$(sudo -u postgres grep -c '"type":"twin"' "$out/dumps/23.jsonl")"

# the independent checker
say "independent check of everything the partner received"
set +e
sudo -u postgres python3 "$(dirname "$0")/twins_privacy_check.py" --k "$K" --dumps "$out/dumps" --snapshots "$out/snapshots" \
    --keys "$out/keys.csv" --columns "age=integer,workclass=flat,education=category:$out/education_levels.csv,marital_status=flat,occupation=flat,race=flat,sex=flat,native_country=flat" \
    > "$out/check.json"
rc=$?
set -e
python3 - "$out/check.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
o, m = r["order"], r["last_manifest"]
print(f"   pseudonyms ever sent: {r['pseudonyms']} ({r['changed_pseudonyms']} changed, {r['ended_pseudonyms']} ended)")
print(f"   k over every released field: per dump >= {r['k_dump_min']}, held after each dump >= {r['k_held_min']}")
print(f"   order: {o['twins']} twins, Spearman(line, key) = {o['spearman_line_vs_key']}, 'line i is the i-th customer' right for {o['line_i_is_ith_key']}")
print(f"   histories shared by >= {r['history_min']} pseudonyms ({r['history_groups']} distinct); intersections of versions shared by >= {r['intersection_min']}")
print(f"   linkage to the public table at every dump: >= {r['linkage_min_candidates']} candidates per twin, {r['linkage_reidentified']} re-identified, {r['linkage_below_k']} below k")
print(f"   last manifest: k_reached {m['k_reached']}, k_history {m['k_history']}, segment memberships kept {m['segment_memberships']}, NCP {m['information_loss']}")
for f in r["failures"]:
    print("FAIL " + f)
PY
[ "$rc" = 0 ] && note "ok   the independent checker confirms k over every field, order, histories and linkage" || { echo "FAIL the independent checker (see above)"; fails=$((fails + 1)); }
if [ "$fails" -gt 0 ]; then echo "twins_privacy: $fails checks failed"; exit 1; fi
echo "twins_privacy: 1 passed, 0 failed"
