#!/usr/bin/env bash
# SQL-level suites against the installed extension: pg_regress golden files (pg_test/sql,
# pg_test/expected, order in pg_test/schedule), isolation specs (pg_test/specs, order in
# pg_test/isolation_schedule), then checks on the server log. Called by scripts/test.
# On every supported PostgreSQL version (MSEG_PG). Where PostgreSQL's own wording differs between
# versions, pg_test/expected/NAME_1.out is the other accepted output (pg_regress takes either):
# segments_concurrency_1.out (16 and later report one serialization failure of a SERIALIZABLE
# UPDATE as "concurrent update", 15 as "read/write dependencies"). Change both when a spec changes.
source "$(dirname "$0")/../scripts/lib.sh"

# Fixed paths: the golden files name them (user postgres must own everything here).
export MSEG_FIXED_DIR=/tmp/pg_mseg_regress
mseg_cluster_start \
    "shared_preload_libraries = 'pg_mseg, pg_stat_statements'" \
    "log_statement = 'all'" \
    "log_min_error_statement = 'error'" \
    "pg_stat_statements.track = 'all'"
PGXS="$("$PG_CONFIG" --pkglibdir)/pgxs/src/test"
work="$MSEG_DIR/suite"
sudo -u postgres mkdir -p "$work/out" "$work/iso_out" "$work/iso_keys_out"
cp -r "$MSEG_ROOT/pg_test/sql" "$MSEG_ROOT/pg_test/expected" "$MSEG_ROOT/pg_test/schedule" "$work/"
[ -d "$MSEG_ROOT/pg_test/specs" ] && cp -r "$MSEG_ROOT/pg_test/specs" "$MSEG_ROOT/pg_test/isolation_schedule" \
    "$MSEG_ROOT/pg_test/isolation_schedule_keys" "$work/"
# MSEG_REGRESS_TESTS="attack_predicates attack_audit_tamper": only these pg_regress files, no isolation specs
if [ -n "${MSEG_REGRESS_TESTS:-}" ]; then
    printf 'test: %s\n' $MSEG_REGRESS_TESTS > "$work/schedule"
    rm -f "$work/isolation_schedule" "$work/isolation_schedule_keys"
fi
chown -R postgres:postgres "$work"

status=0
common=(--host="$MSEG_SOCK" --port="$MSEG_PORT" --user=postgres --bindir="$PG_BIN")

say "pg_regress: $(grep -c '^test:' "$work/schedule") files"
if ! (cd "$work" && sudo -u postgres "$PGXS/regress/pg_regress" "${common[@]}" --dbname=mseg_regress \
        --inputdir="$work" --outputdir="$work/out" --schedule="$work/schedule"); then
    status=1
    cat "$work/out/regression.diffs" 2>/dev/null | head -200 || true
    [ -n "${MSEG_SAVE_RESULTS:-}" ] && cp -r "$work/out" "$MSEG_SAVE_RESULTS"
fi

if [ -f "$work/isolation_schedule" ]; then
    say "isolation specs"
    if ! (cd "$work" && sudo -u postgres "$PGXS/isolation/pg_isolation_regress" "${common[@]}" --dbname=mseg_iso \
            --inputdir="$work" --outputdir="$work/iso_out" --schedule="$work/isolation_schedule"); then
        status=1
        cat "$work/iso_out/regression.diffs" 2>/dev/null | head -200 || true
        [ -n "${MSEG_SAVE_RESULTS:-}" ] && mkdir -p "$MSEG_SAVE_RESULTS" && cp -r "$work/iso_out" "$MSEG_SAVE_RESULTS/iso"
    fi
fi

# specs whose subject table has other key types: a database of their own (one subject table per database)
if [ -f "$work/isolation_schedule_keys" ]; then
    say "isolation specs with uuid subject keys"
    if ! (cd "$work" && sudo -u postgres "$PGXS/isolation/pg_isolation_regress" "${common[@]}" --dbname=mseg_iso_keys \
            --inputdir="$work" --outputdir="$work/iso_keys_out" --schedule="$work/isolation_schedule_keys"); then
        status=1
        cat "$work/iso_keys_out/regression.diffs" 2>/dev/null | head -200 || true
        [ -n "${MSEG_SAVE_RESULTS:-}" ] && mkdir -p "$MSEG_SAVE_RESULTS" && cp -r "$work/iso_keys_out" "$MSEG_SAVE_RESULTS/iso_keys"
    fi
fi

say "server log: no key material in any log line (log_statement = all)"
key_hex=$(xxd -p -c 256 "$MSEG_DIR/mseg.key" | tr -d '\n')
key_b64=$(base64 -w0 "$MSEG_DIR/mseg.key")
if grep -qiF -e "$key_hex" -e "$key_b64" "$MSEG_DIR/server.log"; then
    echo "FAIL: key material found in the server log"; status=1
else
    lines=$(wc -l < "$MSEG_DIR/server.log")
    note "ok: $lines log lines, none with the key in hex or base64"
fi
say "outputs: no key material in any pg_regress or isolation output"
# (the attack_* files print <KEY…> where an attack got the key; this catches any output they miss)
leaky=$(grep -rliF -e "$key_hex" -e "$key_b64" "$work/out/results" "$work/iso_out/results" "$work/iso_keys_out/results" 2>/dev/null || true)
if [ -n "$leaky" ]; then
    echo "FAIL: key material found in test output: $(echo $leaky)"; status=1
else
    note "ok: $(find "$work/out/results" "$work/iso_out/results" "$work/iso_keys_out/results" -type f 2>/dev/null | wc -l) output files, none with the key in hex or base64"
fi
if grep -q "SECRETSECRETSECRET" "$MSEG_DIR/server.log"; then
    echo "FAIL: bytes of a rejected key file reached the log"; status=1
fi
exit $status
