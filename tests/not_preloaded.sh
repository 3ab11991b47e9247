#!/usr/bin/env bash
# Without shared_preload_libraries the library refuses to load, so mseg.key_file can never be a
# placeholder visible to every role. Called by scripts/test.
source "$(dirname "$0")/../scripts/lib.sh"
mseg_cluster_start "shared_preload_libraries = ''"
say "CREATE EXTENSION without shared_preload_libraries"
out=$(sudo -u postgres "$PG_BIN/psql" -h "$MSEG_SOCK" -p "$MSEG_PORT" -U postgres -X -d postgres \
      -v VERBOSITY=verbose -c "CREATE EXTENSION pg_mseg" 2>&1 || true)
echo "$out" | sed 's/^/   /'
echo "$out" | grep -q "MS005" && echo "$out" | grep -q "shared_preload_libraries" \
    || { echo "FAIL: expected SQLSTATE MS005 naming shared_preload_libraries"; exit 1; }
n=$(mseg_psql postgres -Atc "SELECT count(*) FROM pg_extension WHERE extname = 'pg_mseg'")
[ "$n" = "0" ] || { echo "FAIL: extension half-installed"; exit 1; }
echo "not_preloaded: 1 passed, 0 failed"
