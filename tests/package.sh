#!/usr/bin/env bash
# The Debian package (scripts/package) installs with dpkg alone (no Rust, no cargo at install
# time) and works: its control fields, its files, then CREATE EXTENSION and a smoke test of every
# area (pseudonyms, consent, segments, k-anonymity, audit chain) in a cluster that loads the
# packaged library, then removal.
# PostgreSQL 15: the .deb is installed on this machine with `dpkg -i` (Depends: postgresql-15 is
# satisfied by Debian's package) and removed with `dpkg -r`.
# PostgreSQL 16 and 18 have no Debian 12 package here (their Depends: postgresql-16/18 come from the
# PGDG repository), so dpkg installs the .deb into a separate root (--instdir, --admindir) whose
# status database lists postgresql-N as installed, and whose /usr/lib/postgresql/N/lib and
# /usr/share/postgresql/N/extension are the wheel-based PostgreSQL's library and extension
# directories: dpkg checks the dependency and places the files; the wheel's server loads them.
# Before installing, the extension's files left by earlier layers are removed, so what runs is the
# package's; afterwards the current build is installed again for the layers that follow.
source "$(dirname "$0")/../scripts/lib.sh"
v="$MSEG_PG"
version=$(sed -nE 's/^version = "(.*)"$/\1/p' "$MSEG_ROOT/Cargo.toml" | head -1)
name="postgresql-$v-pg-mseg"
fails=0
check() { if [ "$2" = "$3" ]; then note "ok   $1"; else echo "FAIL $1: got '$2', expected '$3'"; fails=$((fails + 1)); fi; }
work="$(mktemp -d /tmp/pg_mseg_pkgtest.XXXXXX)"
libdir="$("$PG_CONFIG" --pkglibdir)"; extdir="$("$PG_CONFIG" --sharedir)/extension"

bash "$MSEG_ROOT/scripts/package" --pg "$v" --out "$work" | sed 's/^/   /'
deb="$work/${name}_${version}_amd64.deb"
[ -s "$deb" ] || { echo "FAIL no $deb"; exit 1; }

say "$name: control and contents"
check "package name" "$(dpkg-deb -f "$deb" Package)" "$name"
check "version" "$(dpkg-deb -f "$deb" Version)" "$version"
check "architecture" "$(dpkg-deb -f "$deb" Architecture)" "amd64"
depends=$(dpkg-deb -f "$deb" Depends)
case "$depends" in "postgresql-$v, "*"libc6 (>= "*) note "ok   Depends: $depends" ;; *) echo "FAIL Depends: $depends"; fails=$((fails + 1)) ;; esac
files=$(dpkg-deb -c "$deb" | awk '{print $6}' | grep -v '/$' | sed 's|^\./|/|' | sort)
expected=$(printf '%s\n' "/usr/lib/postgresql/$v/lib/pg_mseg.so" "/usr/share/postgresql/$v/extension/pg_mseg.control" \
    "/usr/share/postgresql/$v/extension/pg_mseg--$version.sql" "/usr/share/doc/$name/README.md" "/usr/share/doc/$name/copyright" \
    $(cd "$MSEG_ROOT/sql" && ls pg_mseg--*--*.sql | sed "s|^|/usr/share/postgresql/$v/extension/|") | sort)
check "files" "$(echo "$files" | tr '\n' ' ')" "$(echo "$expected" | tr '\n' ' ')"
grep -q "default_version = '$version'" <(dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/share/postgresql/$v/extension/pg_mseg.control") \
    && note "ok   pg_mseg.control: default_version = '$version'" || { echo "FAIL control file version"; fails=$((fails + 1)); }

restore() {
    if [ "$v" = 15 ] && dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q "install ok installed"; then dpkg -r "$name" >/dev/null 2>&1 || true; fi
    mseg_cluster_stop
    rm -rf "$work"
    mseg_build_install >/dev/null 2>&1 || true
}
trap restore EXIT

say "$name: install with dpkg"
rm -f "$libdir/pg_mseg.so" "$extdir"/pg_mseg.control "$extdir"/pg_mseg--*.sql
if [ "$v" = 15 ]; then
    dpkg -i "$deb" > "$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; echo "FAIL dpkg -i"; exit 1; }
    check "dpkg says installed" "$(dpkg-query -W -f='${Status} ${Version}' "$name")" "install ok installed $version"
    check "dpkg owns the library" "$(dpkg -S "$libdir/pg_mseg.so" | cut -d: -f1)" "$name"
else
    root="$work/root"; admin="$work/admin"
    mkdir -p "$root/usr/lib/postgresql/$v" "$root/usr/share/postgresql/$v" "$admin/info" "$admin/updates" "$admin/triggers"
    ln -s "$libdir" "$root/usr/lib/postgresql/$v/lib"
    ln -s "$extdir" "$root/usr/share/postgresql/$v/extension"
    # the installed packages of this machine, and postgresql-N played by the wheel's PostgreSQL
    cp /var/lib/dpkg/status "$admin/status"
    printf '\nPackage: postgresql-%s\nStatus: install ok installed\nPriority: optional\nSection: database\nMaintainer: none\nArchitecture: amd64\nVersion: %s\nDescription: PostgreSQL %s (the wheel-based install the tests use)\n' \
        "$v" "$("$PG_CONFIG" --version | awk '{print $2}')" "$v" >> "$admin/status"
    touch "$admin/available"
    dpkg --instdir="$root" --admindir="$admin" --force-not-root -i "$deb" > "$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; echo "FAIL dpkg -i"; exit 1; }
    check "dpkg says installed" "$(dpkg-query --admindir="$admin" -W -f='${Status} ${Version}' "$name")" "install ok installed $version"
    # and refuses it where postgresql-N is missing
    mkdir -p "$work/admin2/info" "$work/admin2/updates" && cp /var/lib/dpkg/status "$work/admin2/status" && touch "$work/admin2/available"
    mkdir -p "$work/root2"
    if dpkg --instdir="$work/root2" --admindir="$work/admin2" --force-not-root -i "$deb" > "$work/dpkg2.log" 2>&1; then
        echo "FAIL dpkg installed $name without postgresql-$v"; fails=$((fails + 1))
    else
        grep -q "depends on postgresql-$v" "$work/dpkg2.log" && note "ok   without postgresql-$v dpkg refuses it: $(grep -m1 'depends on' "$work/dpkg2.log" | sed 's/^ *//')" \
            || { cat "$work/dpkg2.log"; echo "FAIL unexpected dpkg error"; fails=$((fails + 1)); }
    fi
fi
check "the packaged library is in place" "$(cmp -s "$libdir/pg_mseg.so" <(dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/lib/postgresql/$v/lib/pg_mseg.so") && echo same)" "same"

say "$name: CREATE EXTENSION and a smoke test"
mseg_cluster_start
trap restore EXIT   # (mseg_cluster_start set its own)
check "extension version" "$(mseg_psql postgres -qAt -c "SET client_min_messages = warning" -c "CREATE EXTENSION pg_mseg" -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_mseg'")" "$version"
mseg_psql postgres -q >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE TABLE customers (id bigint PRIMARY KEY, email text, born date, zip text, sport text);
INSERT INTO customers SELECT g, 'c' || g || '@example.com', date '1970-01-01' + g * 11, lpad((10000 + g % 20)::text, 5, '0'),
       (ARRAY['running','yoga'])[1 + g % 2] FROM generate_series(1, 400) g;
SELECT mseg.register_subjects('customers', 'id');
SELECT mseg.classify('customers', 'email', 'direct');
SELECT mseg.classify('customers', 'born', 'quasi', hierarchy => 'date');
SELECT mseg.classify('customers', 'zip', 'quasi', hierarchy => 'prefix');
SELECT mseg.add_pseudonym_column('customers', 'email', 'analytics');
SELECT mseg.define_purpose('direct_marketing', '{consent,legitimate_interest}', '2 years');
SELECT count(*) FROM (SELECT mseg.object(id, 'direct_marketing') FROM customers WHERE id % 10 = 0) x;
SELECT mseg.define_segment('runners', 'direct_marketing', $$sport = 'running'$$);
UPDATE customers SET sport = 'running' WHERE id <= 20;
SQL
smoke=$(mseg_psql postgres -At <<'SQL'
SELECT concat_ws(' ',
    (SELECT count(DISTINCT email_pseudonym) FROM customers WHERE email_pseudonym IS NOT NULL),
    mseg.is_processable(10, 'direct_marketing'),
    (SELECT count(*) FROM mseg.segment_members('runners'))
        = (SELECT count(*) FROM customers WHERE sport = 'running' AND mseg.is_processable(id, 'direct_marketing')),
    (SELECT count(*) > 0 FROM mseg.segment_members('runners')),
    (SELECT count(*) FROM mseg.verify_segments()),
    (SELECT ok FROM mseg.verify_audit_log()),
    mseg.key_fingerprint() IS NOT NULL);
SQL
)
check "smoke test: 400 pseudonyms, an objection, segment members as expected, verify_segments empty, audit chain valid, key loaded" \
    "$smoke" "400 f t t 0 t t"

if [ "$v" = 15 ]; then
    mseg_cluster_stop
    dpkg -r "$name" >/dev/null
    check "dpkg -r removes the library" "$([ -e "$libdir/pg_mseg.so" ] && echo present || echo gone)" "gone"
fi
if [ "$fails" -gt 0 ]; then echo "package: $fails checks failed"; exit 1; fi
echo "package: 1 passed, 0 failed"
