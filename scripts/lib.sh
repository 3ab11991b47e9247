# Shared helpers for scripts/demo, scripts/test and bench/*. Source it; do not run it.
# Everything here is idempotent: a second run installs nothing new.

set -euo pipefail

MSEG_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_CONFIG="$PG_BIN/pg_config"
PGRX_VERSION=0.18.0

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '   %s\n' "$*"; }

# Debian packages, cargo-pgrx and `cargo pgrx init`, each only when missing.
mseg_install_prerequisites() {
    if [ "$(id -u)" != 0 ]; then
        echo "run as root (it installs packages and runs PostgreSQL as user postgres)" >&2
        exit 1
    fi
    # (contrib modules such as pgcrypto ship inside postgresql-15 on Debian 12; xxd is for the log check)
    local pkgs=(postgresql-15 postgresql-server-dev-15 sudo clang libclang-dev pkg-config xxd)
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    # Debian's package starts a 'main' cluster on 5432; we never use it.
    if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
        say "installing cargo-pgrx $PGRX_VERSION (a few minutes, once)"
        cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
    fi
    if ! grep -qs "pg15" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
        say "cargo pgrx init --pg15 $PG_CONFIG"
        cargo pgrx init --pg15 "$PG_CONFIG"
    fi
}

# Build the extension in release mode and install it into PostgreSQL 15.
mseg_build_install() {
    if [ -n "${MSEG_SKIP_BUILD:-}" ]; then note "MSEG_SKIP_BUILD set: using the installed pg_mseg"; return; fi
    say "building and installing pg_mseg (release)"
    (cd "$MSEG_ROOT" && cargo pgrx install --release --pg-config "$PG_CONFIG" 2>&1 | grep -E "^(error|warning: unused)|Installing|Finished" || true)
    test -f "$("$PG_CONFIG" --pkglibdir)/pg_mseg.so" || { echo "pg_mseg.so was not installed" >&2; exit 1; }
}

# Start a throwaway cluster owned by postgres: MSEG_DIR (work dir), MSEG_SOCK, MSEG_PORT are set.
# Usage: mseg_cluster_start [extra postgresql.conf lines...]
mseg_cluster_start() {
    if [ -n "${MSEG_FIXED_DIR:-}" ]; then
        rm -rf "$MSEG_FIXED_DIR"; mkdir -p "$MSEG_FIXED_DIR"; MSEG_DIR="$MSEG_FIXED_DIR"
    else
        MSEG_DIR="$(mktemp -d /tmp/pg_mseg.XXXXXX)"
    fi
    chown postgres:postgres "$MSEG_DIR"
    chmod 0700 "$MSEG_DIR"
    trap mseg_cluster_stop EXIT     # also cleans up when the start below fails
    MSEG_SOCK="$MSEG_DIR/sock"
    MSEG_PORT="${MSEG_PORT:-$(( 20000 + RANDOM % 20000 ))}"
    sudo -u postgres mkdir -p "$MSEG_SOCK"
    # 32 random bytes, owner postgres, mode 0600: what docs/operations.md asks of a real key file
    sudo -u postgres sh -c "umask 077; head -c 32 /dev/urandom > '$MSEG_DIR/mseg.key'"
    sudo -u postgres "$PG_BIN/initdb" -D "$MSEG_DIR/data" -U postgres -A trust --no-sync >/dev/null
    {
        echo "port = $MSEG_PORT"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$MSEG_SOCK'"
        echo "shared_preload_libraries = 'pg_mseg'"
        echo "mseg.key_file = '$MSEG_DIR/mseg.key'"
        echo "mseg.controller_id = 'acme-retail'"
        echo "fsync = off"
        echo "synchronous_commit = off"
        echo "full_page_writes = off"
        echo "shared_buffers = 512MB"
        echo "work_mem = 64MB"
        echo "maintenance_work_mem = 512MB"
        echo "max_wal_size = 4GB"
        echo "logging_collector = off"
        echo "max_prepared_transactions = 10"
        for line in "$@"; do echo "$line"; done
    } | sudo -u postgres tee -a "$MSEG_DIR/data/postgresql.conf" >/dev/null
    sudo -u postgres "$PG_BIN/pg_ctl" -D "$MSEG_DIR/data" -l "$MSEG_DIR/server.log" -w start >/dev/null
}

mseg_cluster_stop() {
    if [ -n "${MSEG_DIR:-}" ] && [ -d "$MSEG_DIR" ]; then
        if [ -d "$MSEG_DIR/data" ]; then
            sudo -u postgres "$PG_BIN/pg_ctl" -D "$MSEG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        fi
        if [ -z "${MSEG_KEEP:-}" ]; then rm -rf "$MSEG_DIR"; fi
    fi
}

# psql as postgres into the throwaway cluster: mseg_psql DB [psql args...]
mseg_psql() {
    local db="$1"; shift
    sudo -u postgres "$PG_BIN/psql" -h "$MSEG_SOCK" -p "$MSEG_PORT" -U postgres -d "$db" -X -v ON_ERROR_STOP=1 "$@"
}
