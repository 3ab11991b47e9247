#!/usr/bin/env bash
# Linkage on real data: UCI Adult split into two controllers with a known overlap of shared people
# (acme: ids up to 30,000; gymco: ids above 20,000; the 10,000 in between are customers of both,
# their e-mail addresses written differently at each: case and blanks). Each exports its twins to
# the trusted party (trustco) and runs the OPRF linkage (request, evaluation, finalisation, import).
# Checked:
#   - the trusted party counts persons exactly: distinct persons = the union of the people whose
#     twins it holds, shared persons = their intersection (known to the test from the ids);
#   - pool_segment_sizes publishes persons within the noise, k checked on persons;
#   - no file carries an identifier; what a controller receives (the response to its own request)
#     has exactly its own number of elements, shares no value with anything of the other controller,
#     and the controller's whole database afterwards holds no link of the other's own customers;
#   - a controller's objection reaches the trusted party as a tombstone: the twin and its link go at
#     once; the next linkage round (request 2) links the regrouped twins again, persons exact again;
#   - a person-level pool segment (high earners at acme who are also gymco customers) has exactly
#     the members the controllers' own data give (acme's held high earners ∩ gymco's held twins,
#     by id), after the imports and again after the objection and round 2; the cost of rebuilding
#     the persons is printed.
# Costs (time per step, file sizes) are printed. (The three databases share one cluster and so one
# master key; real parties each have their own.)
source "$(dirname "$0")/../scripts/lib.sh"
ADULT="$(mseg_adult_csv)"
mseg_cluster_start
say "Linkage on UCI Adult: two controllers, 10,000 shared people"
fails=0
check() { if [ "$2" = "$3" ]; then note "ok   $1"; else echo "FAIL $1: got '$2', expected '$3'"; fails=$((fails + 1)); fi; }
out="$MSEG_DIR/linkage"
sudo -u postgres mkdir -p "$out"
cp "$ADULT" "$out/adult.csv" && chown postgres "$out/adult.csv"
for db in acme gymco trustco; do mseg_psql postgres -q -c "CREATE DATABASE $db" -c "ALTER DATABASE $db SET mseg.controller_id = '$db'"; done
CSV="WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')"

setup_controller() {   # db, id filter, e-mail expression
    mseg_psql "$1" -q >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
CREATE TABLE customers (id bigint PRIMARY KEY, email text, age int, workclass text, education text, marital_status text,
    occupation text, race text, sex text, hours_per_week int, income text);
CREATE TEMP TABLE adult (id bigint, age int, workclass text, fnlwgt int, education text, education_num int, marital_status text,
    occupation text, relationship text, race text, sex text, capital_gain int, capital_loss int, hours_per_week int,
    native_country text, income text);
COPY adult FROM '$out/adult.csv' WITH (FORMAT csv, HEADER);
INSERT INTO customers SELECT id, $3, age, workclass, education, marital_status, occupation, race, sex, hours_per_week, income
FROM adult WHERE $2;
SELECT mseg.register_subjects('customers', 'id');
SELECT mseg.classify('customers', 'email', 'direct');
SELECT mseg.classify('customers', 'age', 'quasi', hierarchy => 'integer');
SELECT mseg.classify('customers', c, 'quasi') FROM unnest('{marital_status,race,sex}'::text[]) c;
SELECT mseg.classify('customers', c, 'attribute') FROM unnest('{workclass,education,occupation,hours_per_week,income}'::text[]) c;
SELECT mseg.define_purpose('direct_marketing', '{legitimate_interest}', '2 years');
SELECT mseg.define_segment('high_earners', 'direct_marketing', \$\$ s.income = '>50K' \$\$);
SELECT mseg.add_partner('trustco', '{direct_marketing}', k => 10);
SQL
}
setup_controller acme "id <= 30000" "'c' || id || '@example.org'"
setup_controller gymco "id > 20000" "'  C' || id || '@Example.ORG '"
check "acme customers" "$(mseg_psql acme -Atc "SELECT count(*) FROM customers")" "30000"
check "gymco customers" "$(mseg_psql gymco -Atc "SELECT count(*) FROM customers")" "$(mseg_psql gymco -Atc "SELECT count(*) FROM customers WHERE id > 20000")"
check "shared people (ids in both)" "$(mseg_psql acme -Atc "SELECT count(*) FROM customers WHERE id > 20000")" "10000"

mseg_psql trustco -q >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
SELECT mseg.register_controller('acme', '$(mseg_psql acme -Atc "SELECT mseg.controller_public_key()")');
SELECT mseg.register_controller('gymco', '$(mseg_psql gymco -Atc "SELECT mseg.controller_public_key()")');
SELECT mseg.define_pool_segment('anyone', 'direct_marketing', \$\$true\$\$);
CREATE TABLE staging (n bigserial, line text);
SQL
tp_key=$(mseg_psql trustco -Atc "SELECT mseg.controller_public_key()")
for c in acme gymco; do
    mseg_psql $c -q -c "SELECT mseg.set_partner_public_key('trustco', '$tp_key')" -c "CREATE TABLE staging (n bigserial, line text)" >/dev/null
done

ms() { date +%s%3N; }
# load a file into db's staging table (as psql's \copy would from a client)
stage() { mseg_psql "$1" -q -c "TRUNCATE staging RESTART IDENTITY" -c "COPY staging(line) FROM '$2' $CSV"; }
export_twins() {   # controller, mode, file
    mseg_psql "$1" -q -c "COPY (SELECT mseg.export_variant_twins('trustco', mode => '$2')) TO '$out/$3' $CSV"
    mseg_psql trustco -Atc "SELECT mseg.import_variant_twins('$out/$3')" >/dev/null
}
declare -A cost
link_round() {   # controller, round
    local c=$1 r=$2 t0 t1 t2 t3 t4
    t0=$(ms); mseg_psql "$c" -q -c "COPY (SELECT mseg.linkage_request('trustco', 'email')) TO '$out/$c-req-$r.jsonl' $CSV"
    t1=$(ms); stage trustco "$out/$c-req-$r.jsonl"
    mseg_psql trustco -q -c "COPY (SELECT mseg.linkage_evaluate('staging')) TO '$out/$c-resp-$r.jsonl' $CSV"
    t2=$(ms); stage "$c" "$out/$c-resp-$r.jsonl"
    mseg_psql "$c" -q -c "COPY (SELECT mseg.linkage_finalize('trustco', 'staging')) TO '$out/$c-links-$r.jsonl' $CSV"
    t3=$(ms); stage trustco "$out/$c-links-$r.jsonl"
    mseg_psql trustco -Atc "SELECT mseg.import_linkage('staging')" >/dev/null
    t4=$(ms)
    cost[$c-$r]="request $((t1 - t0)) ms, evaluate $((t2 - t1)) ms, finalize $((t3 - t2)) ms, import $((t4 - t3)) ms; \
files $(stat -c %s "$out/$c-req-$r.jsonl") / $(stat -c %s "$out/$c-resp-$r.jsonl") / $(stat -c %s "$out/$c-links-$r.jsonl") bytes"
    note "$c round $r: $(($(sudo -u postgres wc -l < "$out/$c-req-$r.jsonl") - 2)) elements; ${cost[$c-$r]}"
}
# the test's own knowledge: which people (Adult ids) each controller's twins at trustco are
held() { mseg_psql "$1" -Atc "SELECT subject_key FROM mseg.partner_twins WHERE partner = 'trustco' AND cohort IS NOT NULL ORDER BY 1"; }
expect_persons() {
    held acme > "$out/held-acme.txt"; held gymco > "$out/held-gymco.txt"
    union=$(sort -u "$out/held-acme.txt" "$out/held-gymco.txt" | wc -l)
    shared=$(comm -12 <(sort "$out/held-acme.txt") <(sort "$out/held-gymco.txt") | wc -l)
}
persons_at_tp() {
    mseg_psql trustco -Atc "SELECT count(DISTINCT COALESCE(l.person, t.controller || t.pseudonym)) || ' ' ||
        (SELECT count(*) FROM (SELECT person FROM mseg.pool_links GROUP BY person HAVING count(DISTINCT controller) = 2) x)
        FROM mseg.pool_twins t LEFT JOIN mseg.pool_links l USING (controller, pseudonym)"
}

t0=$(ms)
export_twins acme full acme-twins-1.jsonl
export_twins gymco full gymco-twins-1.jsonl
note "twins exported and imported in $(( $(ms) - t0 )) ms: $(mseg_psql trustco -Atc "SELECT string_agg(controller || ' ' || n, ', ') FROM (SELECT controller, count(*) n FROM mseg.pool_twins GROUP BY 1 ORDER BY 1) x")"
link_round acme 1
link_round gymco 1

say "persons at the trusted party"
expect_persons
note "held twins: acme $(wc -l < "$out/held-acme.txt"), gymco $(wc -l < "$out/held-gymco.txt"); people in both: $shared, in either: $union"
check "persons = people in either controller, shared persons = people in both" "$(persons_at_tp)" "$union $shared"
check "shared people held by both are nearly all 10,000 (k suppression drops a few)" "$([ "$shared" -gt 9800 ] && [ "$shared" -le 10000 ] && echo yes)" "yes"
check "every held twin is linked" "$(mseg_psql trustco -Atc "SELECT count(*) FROM mseg.pool_twins t WHERE NOT EXISTS (SELECT 1 FROM mseg.pool_links l WHERE l.controller = t.controller AND l.pseudonym = t.pseudonym)")" "0"
mseg_psql trustco -Atc "SELECT mseg.publish_segment_sizes()" >/dev/null
check "published persons across controllers within the noise" \
    "$(mseg_psql trustco -Atc "SELECT abs(persons - $union) <= 30 AND abs(twins - (SELECT count(*) FROM mseg.pool_twins)) <= 30 AND NOT suppressed FROM mseg.pool_segment_sizes WHERE kind = 'pool' AND segment = 'anyone' AND controller IS NULL")" "t"
mseg_psql trustco -c "SELECT controller, kind, segment, twins, persons, suppressed FROM mseg.pool_segment_sizes WHERE kind = 'pool' ORDER BY controller NULLS LAST" | sed 's/^/      /'

say "a person-level segment: high earners at acme who are also gymco customers"
# the test's own knowledge: acme's twins whose exported segments say high_earners (a cohort's
# record may leave a segment out to reach k), mapped back to ids through acme's partner state,
# matched by id with gymco's held twins
expect_rich() {
    mseg_psql trustco -Atc "SELECT pseudonym FROM mseg.pool_twins WHERE controller = 'acme' AND 'high_earners' = ANY (segments)" \
        | sort > "$out/rich-pseudonyms.txt"
    mseg_psql acme -Atc "SELECT pseudonym || ' ' || subject_key FROM mseg.partner_twins WHERE partner = 'trustco' AND cohort IS NOT NULL" \
        | sort > "$out/acme-pseudonym-ids.txt"
    join "$out/rich-pseudonyms.txt" "$out/acme-pseudonym-ids.txt" | awk '{print $2}' | sort > "$out/rich-acme.txt"
    comm -12 "$out/rich-acme.txt" <(sort "$out/held-gymco.txt") | wc -l
}
RICH_GYM="'acme:high_earners' = ANY (p.segments) AND 'gymco' = ANY (p.controllers)"
t0=$(ms)
defined=$(mseg_psql trustco -Atc "SELECT mseg.define_person_segment('rich_gym', 'direct_marketing', \$\$$RICH_GYM\$\$)")
note "person segment defined (every person evaluated) in $(( $(ms) - t0 )) ms"
rich=$(expect_rich)
note "acme twins exported as high earners: $(wc -l < "$out/rich-acme.txt") (high earners at acme: $(mseg_psql acme -Atc "SELECT count(*) FROM mseg.segment_members('high_earners')")); of them also held at gymco: $rich"
check "person segment members = acme's held high earners also held at gymco" \
    "$defined $(mseg_psql trustco -Atc "SELECT count(*) FROM mseg.pool_segment_persons('rich_gym')")" "$rich $rich"
check "its member twins: one at each controller per member person" \
    "$(mseg_psql trustco -Atc "SELECT count(*) FILTER (WHERE controller = 'acme') || ' ' || count(*) FILTER (WHERE controller = 'gymco') FROM mseg.pool_segment_members('rich_gym')")" "$rich $rich"
# the persons step of an import at most rebuilds every person: its cost with nothing to change,
# and from an empty table (every row written, every person predicate evaluated)
t0=$(ms); mseg_psql trustco -Atc "SELECT mseg._refresh_pool_persons()" >/dev/null; t1=$(ms)
mseg_psql trustco -Atc "BEGIN; DELETE FROM mseg.pool_persons; SELECT mseg._refresh_pool_persons(); ROLLBACK" >/dev/null; t2=$(ms)
persons_cost="$(mseg_psql trustco -Atc "SELECT count(*) FROM mseg.pool_persons") persons of $(mseg_psql trustco -Atc "SELECT count(*) FROM mseg.pool_twins") twins: rebuilt with nothing to change in $((t1 - t0)) ms, from empty in $((t2 - t1)) ms"
note "$persons_cost"

say "the last mile: participants at the trusted party, deliver each eligible person once"
# participants: people 15,001..25,000 (5,000 of acme only, 5,000 shared) and 100 who are customers
# of neither (ids above Adult's 48,842), e-mail written yet another way; every tenth gave no consent
mseg_psql trustco -q >/dev/null <<SQL
SET client_min_messages = warning;
CREATE TABLE participants (id bigint PRIMARY KEY, email text NOT NULL);
INSERT INTO participants SELECT g, 'C' || g || '@EXAMPLE.org' FROM generate_series(15001, 25000) g;
INSERT INTO participants SELECT g, 'c' || g || '@example.org' FROM generate_series(60001, 60100) g;
SELECT mseg.register_subjects('participants', 'id');
SELECT mseg.classify('participants', 'email', 'direct');
SELECT mseg.define_purpose('direct_marketing', '{consent}', '1 year');
SELECT count(mseg.grant_consent(id, 'direct_marketing', source => 'signup')) FROM participants WHERE id % 10 <> 0;
SELECT mseg.set_participant_columns('email', 'email');
SQL
consenting() { seq 15001 25000 | awk '$1 % 10 != 0'; seq 60001 60100 | awk '$1 % 10 != 0'; }
delivered() {   # segment, campaign: the participant ids delivered, sorted
    mseg_psql trustco -Atc "SELECT participant FROM mseg.deliver('$1', '$2', 'direct_marketing')" | sort
}
expect_anyone() { sort -u "$out/held-acme.txt" "$out/held-gymco.txt" | comm -12 - <(consenting | sort); }
delivered anyone spring > "$out/d-spring.txt"
expect_anyone > "$out/e-spring.txt"
note "deliver('anyone'): $(wc -l < "$out/d-spring.txt") participants reached; expected $(wc -l < "$out/e-spring.txt")"
check "deliver returns exactly the consenting participants held by either controller" "$(diff "$out/d-spring.txt" "$out/e-spring.txt" | wc -l)" "0"
check "each person once (shared customers too)" "$(uniq -d "$out/d-spring.txt" | wc -l) $(comm -12 "$out/d-spring.txt" <(sort "$out/held-gymco.txt") | comm -12 - <(sort "$out/held-acme.txt") | wc -l)" \
    "0 $(expect_anyone | comm -12 - <(sort "$out/held-gymco.txt") | comm -12 - <(sort "$out/held-acme.txt") | wc -l)"
check "nobody who is not a customer, nobody without consent" "$(awk '$1 > 48842 || $1 % 10 == 0' "$out/d-spring.txt" | wc -l)" "0"
check "the same campaign again reaches nobody new" "$(delivered anyone spring | wc -l)" "0"
delivered rich_gym gym-offer > "$out/d-rich.txt"
check "deliver over the person segment: its consenting participants" \
    "$(diff "$out/d-rich.txt" <(sort "$out/rich-acme.txt" | comm -12 - <(sort "$out/held-gymco.txt") | comm -12 - <(consenting | sort)) | wc -l)" "0"
first=$(head -1 "$out/d-rich.txt")
check "a response of a reached participant is recorded" "$(mseg_psql trustco -Atc "SELECT mseg.record_response('gym-offer', $first::bigint)")" "t"
check "deliver is audited with counts" "$(mseg_psql trustco -Atc "SELECT count(*) FROM mseg.audit_log WHERE action = 'deliver'")" "3"

say "what each party receives"
check "no file carries an e-mail address" "$(sudo -u postgres sh -c "cat '$out'/*-req-*.jsonl '$out'/*-resp-*.jsonl '$out'/*-links-*.jsonl" | grep -ciE '@|example')" "0"
for c in acme gymco; do
    [ $c = acme ] && o=gymco || o=acme
    check "$c receives exactly as many elements as it sent" \
        "$(sudo -u postgres grep -c '"type":"evaluated"' "$out/$c-resp-1.jsonl")" "$(sudo -u postgres grep -c '"type":"blinded"' "$out/$c-req-1.jsonl")"
    # every value (element, link, pseudonym) of the other controller's files
    sudo -u postgres sh -c "cat '$out/$o-req-1.jsonl' '$out/$o-resp-1.jsonl' '$out/$o-links-1.jsonl'" \
        | python3 -c "import sys, json
for l in sys.stdin:
    d = json.loads(l)
    for k in ('element', 'link', 'pseudonym'):
        if k in d: print(d[k])" | sort -u > "$out/$o-values.txt"
    sudo -u postgres cat "$out/$c-resp-1.jsonl" | python3 -c "import sys, json
for l in sys.stdin:
    d = json.loads(l)
    if 'element' in d: print(d['element'])" | sort -u > "$out/$c-received.txt"
    check "what $c receives shares no value with $o's files" "$(comm -12 "$out/$c-received.txt" "$out/$o-values.txt" | wc -l)" "0"
done
# the links of gymco's own customers (not acme's) appear nowhere in acme's database after linkage
links_of() { sudo -u postgres cat "$out/$1-links-1.jsonl" | python3 -c "import sys, json
for l in sys.stdin:
    d = json.loads(l)
    if 'link' in d: print(d['link'])" | sort -u; }
links_of acme > "$out/acme-links.txt"; links_of gymco > "$out/gymco-links.txt"
comm -13 "$out/acme-links.txt" "$out/gymco-links.txt" > "$out/gymco-only-links.txt"
check "links only gymco holds: as many as its unshared twins" "$(wc -l < "$out/gymco-only-links.txt")" "$(( $(wc -l < "$out/held-gymco.txt") - shared ))"
sudo -u postgres "$PG_BIN/pg_dump" -h "$MSEG_SOCK" -p "$MSEG_PORT" -U postgres -d acme > "$out/acme-dump.sql"
check "acme's database holds no link of gymco's own customers" "$(grep -cFf "$out/gymco-only-links.txt" "$out/acme-dump.sql" || true)" "0"
check "acme keeps no blind after finalising" "$(mseg_psql acme -Atc "SELECT count(*) FROM mseg.link_blinds")" "0"

say "an objection at acme, a delta, a second linkage round"
shared_id=$(comm -12 <(sort "$out/held-acme.txt") <(sort "$out/held-gymco.txt") | sort -n | awk 'NR == 1')
mseg_psql acme -Atc "SELECT mseg.object($shared_id, 'direct_marketing')" >/dev/null
# and a participant who is a customer of acme only objects at acme
acme_only_id=$(comm -23 <(sort "$out/held-acme.txt") <(sort "$out/held-gymco.txt") | comm -12 - <(consenting | sort) | sort -n | awk 'NR == 1')
mseg_psql acme -Atc "SELECT mseg.object($acme_only_id, 'direct_marketing')" >/dev/null
export_twins acme delta acme-twins-2.jsonl
check "the trusted party holds no link without its twin" \
    "$(mseg_psql trustco -Atc "SELECT count(*) FROM mseg.pool_links l WHERE NOT EXISTS (SELECT 1 FROM mseg.pool_twins t WHERE t.controller = l.controller AND t.pseudonym = l.pseudonym)")" "0"
link_round acme 2
expect_persons
check "after the objection and round 2: persons and shared persons exact again" "$(persons_at_tp)" "$union $shared"
check "the objecting person is no longer shared" "$(grep -cx "$shared_id" "$out/held-acme.txt" || true)" "0"
rich=$(expect_rich)
check "after the objection and round 2: person segment members exact again ($rich)" \
    "$(mseg_psql trustco -Atc "SELECT count(*) FROM mseg.pool_segment_persons('rich_gym')")" "$rich"
check "the acme-only participant who objected at acme is delivered no more" \
    "$(delivered anyone summer | grep -cx "$acme_only_id" || true)" "0"
expect_anyone | grep -vx "$acme_only_id" > "$out/e-summer.txt"
check "deliver after the delta and round 2: exactly the consenting participants held now" \
    "$(diff <(mseg_psql trustco -Atc "SELECT subject_key FROM mseg.deliveries WHERE campaign = 'summer'" | sort) "$out/e-summer.txt" | wc -l)" "0"

say "rights the other way: a participant objects at the trusted party, and one is erased"
# a shared participant objects, an acme-only one asks for erasure: notices to both controllers
tp_objector=$(comm -12 "$out/e-summer.txt" <(sort "$out/held-gymco.txt") | comm -12 - <(sort "$out/held-acme.txt") | sort -n | awk 'NR == 2')
tp_erased=$(comm -23 "$out/e-summer.txt" <(sort "$out/held-gymco.txt") | sort -n | awk 'NR == 2')
mseg_psql trustco -Atc "SELECT mseg.object($tp_objector, 'direct_marketing')" >/dev/null
mseg_psql trustco -Atc "SELECT mseg.forget($tp_erased)" >/dev/null
check "withdrawn at the trusted party: delivered no more at once" \
    "$(delivered anyone autumn | grep -cxE "$tp_objector|$tp_erased" || true)" "0"
for c in acme gymco; do
    mseg_psql trustco -q -c "COPY (SELECT mseg.rights_notices('$c')) TO '$out/$c-notices-1.jsonl' $CSV"
    stage "$c" "$out/$c-notices-1.jsonl"
    note "$c imports $(mseg_psql "$c" -Atc "SELECT mseg.import_rights_notices('staging')") notice line(s)"
done
check "acme: the objection recorded, the erased participant excluded from trustco" \
    "$(mseg_psql acme -Atc "SELECT mseg.is_processable($tp_objector, 'direct_marketing')::text || ' ' || (SELECT count(*) FROM mseg.partner_exclusions WHERE partner = 'trustco' AND subject_key = $tp_erased)")" "false 1"
for c in acme gymco; do
    sudo -u postgres cat "$out/$c-notices-1.jsonl" | python3 -c "import sys, json
for l in sys.stdin:
    d = json.loads(l)
    if 'pseudonym' in d: print(d['pseudonym'])" | sort > "$out/$c-notice-pseudonyms.txt"
    check "$c's notice file names only pseudonyms $c issued to trustco" \
        "$(comm -23 "$out/$c-notice-pseudonyms.txt" <(mseg_psql "$c" -Atc "SELECT pseudonym FROM mseg.partner_twins WHERE partner = 'trustco'" | sort) | wc -l)" "0"
done
check "gymco: the objection recorded" "$(mseg_psql gymco -Atc "SELECT mseg.is_processable($tp_objector, 'direct_marketing')")" "f"
gone_before=$(mseg_psql acme -Atc "SELECT string_agg(quote_literal(pseudonym), ',') FROM mseg.partner_twins WHERE partner = 'trustco' AND subject_key IN ($tp_objector, $tp_erased) AND cohort IS NOT NULL")
g_gone_before=$(mseg_psql gymco -Atc "SELECT string_agg(quote_literal(pseudonym), ',') FROM mseg.partner_twins WHERE partner = 'trustco' AND subject_key = $tp_objector AND cohort IS NOT NULL")
export_twins acme delta acme-twins-3.jsonl
export_twins gymco delta gymco-twins-2.jsonl
check "their twins are gone from the pool after the controllers' next deltas" \
    "$(mseg_psql trustco -Atc "SELECT count(*) FROM mseg.pool_twins WHERE (controller = 'acme' AND pseudonym IN ($gone_before)) OR (controller = 'gymco' AND pseudonym IN ($g_gone_before))")" "0"
check "and no controller holds a twin of them at trustco any more" \
    "$(mseg_psql acme -Atc "SELECT count(*) FROM mseg.partner_twins WHERE partner = 'trustco' AND subject_key IN ($tp_objector, $tp_erased) AND cohort IS NOT NULL") $(mseg_psql gymco -Atc "SELECT count(*) FROM mseg.partner_twins WHERE partner = 'trustco' AND subject_key = $tp_objector AND cohort IS NOT NULL")" "0 0"
check "audit chains verify" "$(for db in acme gymco trustco; do mseg_psql $db -Atc "SELECT ok FROM mseg.verify_audit_log()"; done | sort -u)" "t"

say "cost of linkage"
for k in "${!cost[@]}"; do note "$k: ${cost[$k]}"; done
note "persons: $persons_cost"
[ "$fails" -eq 0 ] && say "linkage: all checks passed" || { echo "linkage: $fails checks failed"; exit 1; }
