#!/usr/bin/env bash
# Upgrades from every released version (sql/releases) released for this PostgreSQL version to the
# current one (Cargo.toml), the way a DBA does it: the released version is built from its commit
# and installed, real state is made with it (tests/upgrade/state.sql: subjects, consents, segments
# with members, a partner with two exports imported by a trusted party, audit entries), then the
# current version is installed over it, the server restarted and ALTER EXTENSION pg_mseg UPDATE
# run in every database. Then
#   (a) the upgraded extension's schema equals a fresh install's, in a second cluster: every object
#       the extension owns and its roles (tests/upgrade/catalog.sql, roles.sql); the diff printed
#       on failure is exactly what the upgrade script still misses;
#   (b) the data survives: verify_segments() is empty, verify_audit_log() is valid (also after
#       new changes), the next delta export continues the partner's sequence and imports.
# The release is built from tag v<version> when the clone has it (it must point at the commit
# sql/releases names), else from that commit; a shallow clone is deepened (git fetch) or the test
# fails saying how to get the history. Called by scripts/test.
# Usage: tests/upgrade.sh [VERSION]   (default: every release that supports $MSEG_PG)
source "$(dirname "$0")/../scripts/lib.sh"
current=$(sed -nE 's/^version = "(.*)"$/\1/p' "$MSEG_ROOT/Cargo.toml" | head -1)
fails=0
MEMBERS="SELECT string_agg(name || '=' || (SELECT count(*) FROM mseg.segment_members(name)), ',' ORDER BY name) FROM mseg.segments"
check() { if [ "$2" = "$3" ]; then note "ok   $1"; else echo "FAIL $1: got '$2', expected '$3'"; fails=$((fails + 1)); fi; }

# A git revision holding release $1 (commit $2): the tag if present, else the commit.
release_rev() {
    local v="$1" commit="$2" tagged
    if tagged=$(git -C "$MSEG_ROOT" rev-parse -q --verify "refs/tags/v$v^{commit}" 2>/dev/null); then
        [ "$tagged" = "$commit" ] || { echo "tag v$v is $tagged but sql/releases says $commit" >&2; return 1; }
        echo "v$v"; return 0
    fi
    if ! git -C "$MSEG_ROOT" cat-file -e "$commit^{commit}" 2>/dev/null; then
        note "commit $commit of release $v is not in this clone: fetching history and tags" >&2
        git -C "$MSEG_ROOT" fetch -q --tags --unshallow 2>/dev/null || git -C "$MSEG_ROOT" fetch -q --tags 2>/dev/null || true
    fi
    if git -C "$MSEG_ROOT" cat-file -e "$commit^{commit}" 2>/dev/null; then echo "$commit"; return 0; fi
    echo "release $v (commit $commit, tag v$v) is not in this clone (shallow, or without tags): clone the" \
         "whole history, or run 'git fetch --unshallow --tags', then run the test again" >&2
    return 1
}

# psql into cluster A (the upgraded one) or B (the fresh one): on DB [psql args...]
on_a() { local db="$1"; shift; MSEG_SOCK="$A_SOCK" MSEG_PORT="$A_PORT" mseg_psql "$db" "$@"; }
on_b() { local db="$1"; shift; MSEG_SOCK="$B_SOCK" MSEG_PORT="$B_PORT" mseg_psql "$db" "$@"; }
stop_both() {
    [ -n "${A_DIR:-}" ] && MSEG_DIR="$A_DIR" mseg_cluster_stop
    [ -n "${B_DIR:-}" ] && MSEG_DIR="$B_DIR" mseg_cluster_stop
    # leave the current version installed for whatever runs next
    [ -n "${reinstall:-}" ] && mseg_build_install >/dev/null 2>&1
    true
}

upgrade_from() {
    local from="$1" commit="$2" rev src out twins
    say "upgrade $from -> $current on PostgreSQL $MSEG_PG"
    rev=$(release_rev "$from" "$commit") || { fails=$((fails + 1)); return; }
    src="$(mktemp -d /tmp/pg_mseg_release.XXXXXX)"
    git -C "$MSEG_ROOT" archive "$rev" | tar -x -C "$src"
    note "building $from from $rev (debug build; dependencies shared with this tree's target directory)"
    reinstall=1
    if ! (cd "$src" && CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MSEG_ROOT/target}" \
            cargo pgrx install --pg-config "$PG_CONFIG" > "$src/build.log" 2>&1); then
        tail -30 "$src/build.log"; echo "FAIL building release $from"; fails=$((fails + 1)); return
    fi
    rm -rf "$src"
    # the release's path crates (pg_mseg, kanon) were built into this tree's target directory under
    # the same names and hashes as the current ones, and newer than the current sources: remove
    # them, or a later build of this tree would take them as up to date
    (cd "$MSEG_ROOT" && CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MSEG_ROOT/target}" cargo clean -q --profile dev -p kanon -p pg_mseg)

    # cluster A: the released version, with state
    unset MSEG_PORT
    mseg_cluster_start
    A_DIR="$MSEG_DIR" A_SOCK="$MSEG_SOCK" A_PORT="$MSEG_PORT"
    trap stop_both EXIT
    out="$A_DIR/dumps"; sudo -u postgres mkdir -p "$out"
    export_to() { on_a acme -q -c "COPY (SELECT mseg.export_variant_twins('trustco', mode => '$1')) TO '$out/$2' WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')"; }
    twins() { sudo -u postgres sh -c "grep -c '\"type\":\"twin\"' '$out/$1'"; }
    import() { on_a trustco -Atc "SELECT mseg.import_variant_twins('$out/$1')"; }
    for db in acme trustco; do on_a postgres -q -c "CREATE DATABASE $db" -c "ALTER DATABASE $db SET mseg.controller_id = '$db'"; done
    on_a acme -q < "$MSEG_ROOT/tests/upgrade/state.sql" >/dev/null
    check "state made with $from" "$(on_a acme -Atc "SELECT extversion FROM pg_extension WHERE extname = 'pg_mseg'")" "$from"
    on_a trustco -q >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION pg_mseg;
SELECT mseg.register_controller('acme', '$(on_a acme -Atc "SELECT mseg.controller_public_key()")');
SQL
    export_to full acme-1.jsonl
    check "first export (full) imports under $from" "$(import acme-1.jsonl)" "$(twins acme-1.jsonl)"
    on_a acme -q >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT count(*) FROM (SELECT mseg.object(id, 'direct_marketing') FROM customers WHERE id % 7 = 0 AND id % 50 <> 0) x;
UPDATE customers SET sport = 'running' WHERE id % 11 = 0;
INSERT INTO customers SELECT g, 'c' || g || '@example.com', date '1960-01-01' + g, lpad((10000 + g % 400)::text, 5, '0'), 'f', 'yoga' FROM generate_series(1201, 1300) g;
SQL
    export_to delta acme-2.jsonl
    check "second export (delta) imports under $from" "$(import acme-2.jsonl)" "$(twins acme-2.jsonl)"
    local members_before
    members_before=$(on_a acme -Atc "$MEMBERS")

    # the new version over it: files replaced, server restarted, ALTER EXTENSION UPDATE everywhere
    mseg_build_install
    sudo -u postgres "$PG_BIN/pg_ctl" -D "$A_DIR/data" -l "$A_DIR/server.log" -w restart >/dev/null
    for db in acme trustco; do
        if ! on_a "$db" -q -c "ALTER EXTENSION pg_mseg UPDATE"; then echo "FAIL ALTER EXTENSION pg_mseg UPDATE in $db"; fails=$((fails + 1)); fi
        check "$db is at $current" "$(on_a "$db" -Atc "SELECT extversion FROM pg_extension WHERE extname = 'pg_mseg'")" "$current"
    done

    # (a) the schema equals a fresh install's (cluster B)
    unset MSEG_PORT
    mseg_cluster_start
    B_DIR="$MSEG_DIR" B_SOCK="$MSEG_SOCK" B_PORT="$MSEG_PORT"
    trap stop_both EXIT
    on_b postgres -q -c "CREATE DATABASE fresh" -c "ALTER DATABASE fresh SET mseg.controller_id = 'fresh'"
    on_b fresh -q -c "SET client_min_messages = warning" -c "CREATE EXTENSION pg_mseg"
    on_b fresh < "$MSEG_ROOT/tests/upgrade/catalog.sql" > "$A_DIR/fresh.catalog"
    on_b fresh < "$MSEG_ROOT/tests/upgrade/roles.sql" > "$A_DIR/fresh.roles"
    note "a fresh $current install has $(grep -c '^member ' "$A_DIR/fresh.catalog") facts about the objects it owns, $(wc -l < "$A_DIR/fresh.roles") about its roles"
    for db in acme trustco; do
        on_a "$db" < "$MSEG_ROOT/tests/upgrade/catalog.sql" > "$A_DIR/$db.catalog"
        if diff -u --label "fresh $current" --label "$db upgraded from $from" "$A_DIR/fresh.catalog" "$A_DIR/$db.catalog" > "$A_DIR/$db.diff"; then
            note "ok   $db: the upgraded extension's objects equal a fresh install's"
        else
            echo "FAIL $db: the upgraded extension differs from a fresh $current install (- fresh, + upgraded):"
            grep -E '^[-+][^-+]' "$A_DIR/$db.diff" | head -150
            fails=$((fails + 1))
        fi
    done
    on_a postgres < "$MSEG_ROOT/tests/upgrade/roles.sql" > "$A_DIR/upgraded.roles"
    if diff -u --label "fresh $current" --label "upgraded from $from" "$A_DIR/fresh.roles" "$A_DIR/upgraded.roles" > "$A_DIR/roles.diff"; then
        note "ok   the roles equal a fresh install's"
    else
        echo "FAIL the roles differ from a fresh $current install (- fresh, + upgraded):"; grep -E '^[-+][^-+]' "$A_DIR/roles.diff"; fails=$((fails + 1))
    fi

    # (b) the data survives and the new version works on it
    check "segments and their members survive ($members_before)" "$(on_a acme -Atc "$MEMBERS")" "$members_before"
    check "verify_segments() after the upgrade" "$(on_a acme -Atc "SELECT count(*) FROM mseg.verify_segments()")" "0"
    check "verify_audit_log() after the upgrade" "$(on_a acme -Atc "SELECT ok FROM mseg.verify_audit_log()")" "t"
    on_a acme -q >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT count(*) FROM (SELECT mseg.grant_consent(id, 'newsletter', notice_version => 'v2', source => 'app') FROM customers WHERE id % 9 = 0) x;
SELECT count(*) FROM (SELECT mseg.object(id, 'direct_marketing') FROM customers WHERE id % 13 = 0) x;
UPDATE customers SET sport = 'cycling' WHERE id % 17 = 0;
INSERT INTO orders (customer_id, category, amount) SELECT g, 'bikes', 99 FROM generate_series(1, 1300, 5) g;
DELETE FROM customers WHERE id BETWEEN 1290 AND 1300;
SQL
    check "verify_segments() after new changes" "$(on_a acme -Atc "SELECT count(*) FROM mseg.verify_segments()")" "0"
    check "verify_audit_log() after new changes" "$(on_a acme -Atc "SELECT ok AND entries > 0 FROM mseg.verify_audit_log()")" "t"
    export_to delta acme-3.jsonl
    check "the next delta continues the sequence" \
        "$(sudo -u postgres head -1 "$out/acme-3.jsonl" | python3 -c "import sys, json; h = json.load(sys.stdin); print(h['sequence'], h['follows'])")" "3 2"
    check "it imports at the (upgraded) trusted party" "$(import acme-3.jsonl)" "$(twins acme-3.jsonl)"
    # the twins held from $from's dumps end together and come back under new pseudonyms only
    check "no pseudonym of a $from dump is sent again, and k holds over the dump's history" \
        "$(sudo -u postgres python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
def lines(f):
    return [json.loads(l) for l in open(f"{d}/{f}")]
old = {l["pseudonym"] for f in ("acme-1.jsonl", "acme-2.jsonl") for l in lines(f) if l.get("type") == "twin"}
new = lines("acme-3.jsonl")
again = sum(1 for l in new if l.get("type") == "twin" and l["pseudonym"] in old)
m = new[0]
print(again, m["k_history"] >= m["k_required"])
PY
)" "0 True"
    check "the trusted party is at sequence 3" "$(on_a trustco -Atc "SELECT last_sequence FROM mseg.controllers WHERE id = 'acme'")" "3"
    check "verify_audit_log() at the trusted party" "$(on_a trustco -Atc "SELECT ok FROM mseg.verify_audit_log()")" "t"

    stop_both; A_DIR=""; B_DIR=""; reinstall=""; trap - EXIT
}

ran=0
while read -r version commit pgs; do
    case "$version" in ''|'#'*) continue ;; esac
    [ -n "${1:-}" ] && [ "$1" != "$version" ] && continue
    if [ "$version" = "$current" ]; then continue; fi
    if ! [[ " $pgs " == *" $MSEG_PG "* ]]; then note "skip upgrade from $version: released for PostgreSQL $pgs only"; continue; fi
    upgrade_from "$version" "$commit"; ran=$((ran + 1))
done < "$MSEG_ROOT/sql/releases"

if [ "$fails" -gt 0 ]; then echo "upgrade: $fails checks failed"; exit 1; fi
echo "upgrade: $ran passed, 0 failed"
