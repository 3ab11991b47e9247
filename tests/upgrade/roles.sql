-- The cluster-wide part of pg_mseg's schema: its roles (name mseg_*), their attributes, what they
-- are members of, and their settings. Compared like catalog.sql, between two clusters.
\set QUIET on
\pset footer off
\pset tuples_only on
\pset format unaligned
SELECT line FROM (
    SELECT format('role %s: superuser %s, inherit %s, createrole %s, createdb %s, login %s, replication %s, bypassrls %s, connection limit %s',
                  r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, r.rolreplication,
                  r.rolbypassrls, r.rolconnlimit) AS line
    FROM pg_roles r WHERE r.rolname ~ '^mseg_'
    UNION ALL
    SELECT format('role %s: member of %s, admin option %s', m.rolname, g.rolname, am.admin_option)
    FROM pg_auth_members am JOIN pg_roles m ON m.oid = am.member JOIN pg_roles g ON g.oid = am.roleid
    WHERE m.rolname ~ '^mseg_'
    UNION ALL
    SELECT format('role %s: has member %s, admin option %s', g.rolname, m.rolname, am.admin_option)
    FROM pg_auth_members am JOIN pg_roles m ON m.oid = am.member JOIN pg_roles g ON g.oid = am.roleid
    WHERE g.rolname ~ '^mseg_' AND m.rolname ~ '^mseg_'
    UNION ALL
    SELECT format('role %s: settings %s (database %s)', r.rolname, s.setconfig::text, coalesce(d.datname, '(all)'))
    FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole LEFT JOIN pg_database d ON d.oid = s.setdatabase
    WHERE r.rolname ~ '^mseg_'
) facts ORDER BY line COLLATE "C";
