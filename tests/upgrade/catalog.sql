-- Everything the extension pg_mseg owns, described by name (never by OID), one fact per line,
-- sorted: two databases whose outputs are equal have the same extension schema. tests/upgrade.sh
-- compares a database upgraded with ALTER EXTENSION pg_mseg UPDATE with a fresh install; a
-- difference is what the upgrade script still misses (or does differently).
-- Covers: the extension row (version, schema, configuration tables and their dump conditions);
-- every member object with its definition, owner, privileges, initial privileges and comment;
-- for relations their columns (name, type, default, nullability, identity, generation,
-- collation, privileges, comment, and their order), constraints, indexes, triggers, policies,
-- row security, replica identity, options, partitioning and inheritance; sequences' parameters;
-- types' attributes, labels and domain constraints; event triggers; objects in schema mseg that
-- are not members; default privileges in schema mseg. Roles are cluster-wide: roles.sql.
\set QUIET on
\pset footer off
\pset tuples_only on
\pset format unaligned
WITH ext AS (
    SELECT e.oid, e.extname, e.extversion, e.extrelocatable, e.extnamespace::regnamespace::text AS schema,
           e.extconfig, e.extcondition
    FROM pg_extension e WHERE e.extname = 'pg_mseg'
), member AS (
    SELECT d.classid, d.objid, o.type, o.identity
    FROM pg_depend d, ext, LATERAL pg_identify_object(d.classid, d.objid, 0) o
    WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
), rel AS (
    SELECT m.type AS objtype, m.identity, c.*
    FROM member m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
), facts(line) AS (
    -- the extension itself
    SELECT format('extension pg_mseg: version %s, schema %s, relocatable %s', extversion, schema, extrelocatable) FROM ext
    UNION ALL
    SELECT format('extension pg_mseg: configuration table %s %s', c.rel::regclass, coalesce(nullif(c.cond, ''), '(all rows)'))
    FROM ext, unnest(ext.extconfig, ext.extcondition) AS c(rel, cond)
    -- every member: that it exists, its owner and its comment
    UNION ALL
    SELECT format('member %s %s', m.type, m.identity) FROM member m
    UNION ALL
    SELECT format('member %s %s: comment %s', m.type, m.identity, quote_literal(d.description))
    FROM member m JOIN pg_description d ON d.classoid = m.classid AND d.objoid = m.objid AND d.objsubid = 0
    UNION ALL
    SELECT format('member %s %s: initial privileges %s', m.type, m.identity, ip.initprivs::text)
    FROM member m JOIN pg_init_privs ip ON ip.classoid = m.classid AND ip.objoid = m.objid AND ip.objsubid = 0
    UNION ALL
    SELECT format('member %s %s: column %s initial privileges %s', m.type, m.identity, a.attname, ip.initprivs::text)
    FROM member m JOIN pg_init_privs ip ON ip.classoid = m.classid AND ip.objoid = m.objid AND ip.objsubid > 0
    JOIN pg_attribute a ON a.attrelid = m.objid AND a.attnum = ip.objsubid
    -- schemas
    UNION ALL
    SELECT format('member schema %s: owner %s, privileges %s', n.nspname, n.nspowner::regrole, coalesce(n.nspacl::text, '(default)'))
    FROM member m JOIN pg_namespace n ON m.classid = 'pg_namespace'::regclass AND n.oid = m.objid
    -- functions and procedures: the whole definition (security, search_path, volatility, body, symbol)
    UNION ALL
    SELECT format(E'member %s %s: owner %s, privileges %s, definition\n    %s', m.type, m.identity, p.proowner::regrole,
                  coalesce(p.proacl::text, '(default)'), replace(pg_get_functiondef(p.oid), E'\n', E'\n    '))
    FROM member m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid WHERE p.prokind <> 'a'
    UNION ALL
    SELECT format('member %s %s: owner %s, privileges %s, transition %s, final %s, state %s, initial %s, combine %s, parallel %s',
                  m.type, m.identity, p.proowner::regrole, coalesce(p.proacl::text, '(default)'), a.aggtransfn, a.aggfinalfn,
                  a.aggtranstype::regtype, coalesce(a.agginitval, '(null)'), a.aggcombinefn, p.proparallel)
    FROM member m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid JOIN pg_aggregate a ON a.aggfnoid = p.oid
    -- relations
    UNION ALL
    SELECT format('member %s %s: owner %s, privileges %s, persistence %s, row security %s, forced %s, replica identity %s, options %s, partition key %s',
                  r.objtype, r.identity, r.relowner::regrole, coalesce(r.relacl::text, '(default)'), r.relpersistence,
                  r.relrowsecurity, r.relforcerowsecurity, r.relreplident, coalesce(r.reloptions::text, '(none)'),
                  coalesce(pg_get_partkeydef(r.oid), '(none)'))
    FROM rel r
    UNION ALL
    SELECT format(E'member view %s: definition\n    %s', r.identity, replace(pg_get_viewdef(r.oid, true), E'\n', E'\n    '))
    FROM rel r WHERE r.relkind IN ('v', 'm')
    UNION ALL
    SELECT format('member %s %s: inherits from %s (position %s)', r.objtype, r.identity, i.inhparent::regclass, i.inhseqno)
    FROM rel r JOIN pg_inherits i ON i.inhrelid = r.oid
    UNION ALL
    SELECT format('member %s %s: partition bound %s', r.objtype, r.identity, pg_get_expr(r.relpartbound, r.oid))
    FROM rel r WHERE r.relispartition
    UNION ALL
    SELECT format('member %s %s: columns in order %s', r.objtype, r.identity,
                  (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a
                   WHERE a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped))
    FROM rel r WHERE r.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
    UNION ALL
    SELECT format('member %s %s: column %s %s%s%s%s%s%s, privileges %s%s',
                  r.objtype, r.identity, quote_ident(a.attname), format_type(a.atttypid, a.atttypmod),
                  CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END,
                  CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END,
                  CASE WHEN a.attgenerated <> '' THEN ' generated ' || a.attgenerated::text ELSE '' END,
                  coalesce(' DEFAULT ' || pg_get_expr(ad.adbin, ad.adrelid), ''),
                  CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END,
                  coalesce(a.attacl::text, '(default)'),
                  coalesce(', comment ' || quote_literal(col_description(r.oid, a.attnum)), ''))
    FROM rel r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    UNION ALL
    SELECT format('member %s %s: constraint %s %s%s', r.objtype, r.identity, quote_ident(co.conname), pg_get_constraintdef(co.oid),
                  CASE WHEN co.condeferrable THEN ' deferrable' || CASE WHEN co.condeferred THEN ' initially deferred' ELSE '' END ELSE '' END)
    FROM rel r JOIN pg_constraint co ON co.conrelid = r.oid
    UNION ALL
    SELECT format('member %s %s: index %s', r.objtype, r.identity, pg_get_indexdef(x.indexrelid))
           || CASE WHEN x.indisclustered THEN ' (clustered)' ELSE '' END
           || CASE WHEN x.indisreplident THEN ' (replica identity)' ELSE '' END
    FROM rel r JOIN pg_index x ON x.indrelid = r.oid
    UNION ALL
    SELECT format('member %s %s: trigger %s enabled %s', r.objtype, r.identity, pg_get_triggerdef(tg.oid), tg.tgenabled)
    FROM rel r JOIN pg_trigger tg ON tg.tgrelid = r.oid AND NOT tg.tgisinternal
    UNION ALL
    SELECT format('member %s %s: policy %s %s for %s to %s using %s with check %s', r.objtype, r.identity, quote_ident(po.polname),
                  CASE WHEN po.polpermissive THEN 'permissive' ELSE 'restrictive' END, po.polcmd,
                  (SELECT string_agg(CASE WHEN ro = 0 THEN 'public' ELSE ro::regrole::text END, ',' ORDER BY 1) FROM unnest(po.polroles) ro),
                  coalesce(pg_get_expr(po.polqual, po.polrelid), '(none)'), coalesce(pg_get_expr(po.polwithcheck, po.polrelid), '(none)'))
    FROM rel r JOIN pg_policy po ON po.polrelid = r.oid
    UNION ALL
    SELECT format('member %s %s: rule %s', r.objtype, r.identity, pg_get_ruledef(ru.oid))
    FROM rel r JOIN pg_rewrite ru ON ru.ev_class = r.oid AND ru.rulename <> '_RETURN'
    UNION ALL
    SELECT format('member sequence %s: type %s, start %s, increment %s, min %s, max %s, cache %s, cycle %s, owned by %s',
                  r.identity, s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
                  coalesce((SELECT d.refobjid::regclass || '.' || quote_ident(a.attname) FROM pg_depend d
                            JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                            WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid AND d.deptype IN ('a', 'i')
                              AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0 LIMIT 1), '(none)'))
    FROM rel r JOIN pg_sequence s ON s.seqrelid = r.oid
    -- types: domains, enums, composites
    UNION ALL
    SELECT format('member %s %s: kind %s, owner %s, privileges %s%s%s%s', m.type, m.identity, t.typtype, t.typowner::regrole,
                  coalesce(t.typacl::text, '(default)'),
                  CASE WHEN t.typtype = 'd' THEN format(', over %s%s%s', format_type(t.typbasetype, t.typtypmod),
                       CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END, coalesce(' DEFAULT ' || t.typdefault, '')) ELSE '' END,
                  CASE WHEN t.typtype = 'e' THEN ', labels ' || (SELECT string_agg(quote_literal(l.enumlabel), ', ' ORDER BY l.enumsortorder)
                                                                  FROM pg_enum l WHERE l.enumtypid = t.oid) ELSE '' END,
                  CASE WHEN t.typtype = 'c' THEN ', attributes ' || (SELECT string_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
                                                                      FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) ELSE '' END)
    FROM member m JOIN pg_type t ON m.classid = 'pg_type'::regclass AND t.oid = m.objid
    UNION ALL
    SELECT format('member %s %s: constraint %s %s', m.type, m.identity, quote_ident(co.conname), pg_get_constraintdef(co.oid))
    FROM member m JOIN pg_constraint co ON m.classid = 'pg_type'::regclass AND co.contypid = m.objid
    -- event triggers
    UNION ALL
    SELECT format('member event trigger %s: on %s, function %s, enabled %s, tags %s, owner %s', quote_ident(et.evtname), et.evtevent,
                  et.evtfoid::regprocedure, et.evtenabled, coalesce(et.evttags::text, '(all)'), et.evtowner::regrole)
    FROM member m JOIN pg_event_trigger et ON m.classid = 'pg_event_trigger'::regclass AND et.oid = m.objid
    -- objects in schema mseg that the extension does not own
    UNION ALL
    SELECT format('not a member: relation %s (kind %s)', c.oid::regclass, c.relkind)
    FROM pg_class c WHERE c.relnamespace = 'mseg'::regnamespace AND c.relkind NOT IN ('i', 'I', 't')
      AND NOT EXISTS (SELECT 1 FROM member m WHERE m.classid = 'pg_class'::regclass AND m.objid = c.oid)
      AND NOT EXISTS (SELECT 1 FROM pg_depend d JOIN member m ON m.classid = d.refclassid AND m.objid = d.refobjid
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
    UNION ALL
    SELECT format('not a member: function %s', p.oid::regprocedure)
    FROM pg_proc p WHERE p.pronamespace = 'mseg'::regnamespace
      AND NOT EXISTS (SELECT 1 FROM member m WHERE m.classid = 'pg_proc'::regclass AND m.objid = p.oid)
    UNION ALL
    SELECT format('not a member: type %s', t.oid::regtype)
    FROM pg_type t WHERE t.typnamespace = 'mseg'::regnamespace AND t.typrelid = 0 AND t.typelem = 0
      AND NOT EXISTS (SELECT 1 FROM member m WHERE m.classid = 'pg_type'::regclass AND m.objid = t.oid)
    UNION ALL
    SELECT format('default privileges in schema mseg for %s on %s: %s', da.defaclrole::regrole, da.defaclobjtype, da.defaclacl::text)
    FROM pg_default_acl da WHERE da.defaclnamespace = 'mseg'::regnamespace
)
SELECT line FROM facts ORDER BY line COLLATE "C";
