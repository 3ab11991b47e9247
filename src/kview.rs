//! k-checked views without side channels.
//!
//! A k-view (`mseg.create_kanon_view`) shows a relation's quasi columns generalised, its attribute
//! columns as they are, never a direct or sensitive column, and only rows whose class has at least
//! k distinct subjects, checked when it is read, so it stays k-anonymous as the data changes.
//!
//! Where the check runs matters. A view that computes the classes in its own SQL lets the reader's
//! conditions into its plan: PostgreSQL pushes leakproof conditions (`city = 'x'`,
//! `points < 500`) into a `security_barrier` view, below the k-check, and `EXPLAIN ANALYZE`
//! prints the row count of every node; a reader can then count the rows of suppressed classes
//! and find a hidden subject's values by binary search. So the view here is only
//!
//! ```sql
//! SELECT r.born, r.zip, … FROM mseg.kanon_view_rows(<id>) AS r(born text, zip text, …)
//! ```
//!
//! and `mseg.kanon_view_rows` computes the k-checked rows inside: PostgreSQL never pushes a
//! condition into a function scan, so the reader's conditions (leaky or leakproof) are evaluated
//! above it, as the reader, over released rows only, and the one plan node the reader sees counts
//! released rows only. The inner query is built from the definition in `mseg.kanon_views`, never
//! from anything the reader passes, and runs with the rights of the view's owner (who must be
//! able to read the source, and must not be a superuser: the inner query would otherwise evaluate
//! whatever code the source's owner attached to it with superuser rights) in a
//! security-restricted context with a pinned `search_path`. The reader needs SELECT on the view
//! (checked by the function itself, so calling it directly yields no more than the view) and
//! EXECUTE on the function (granted to the pg_mseg roles). An error raised while computing the
//! rows (e.g. a source value that does not fit its hierarchy) is written to the server log only:
//! its message could quote a suppressed row.

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use pgrx::{PgRelation, PgTryBuilder};

use crate::catalog;
use crate::error::{boundary, Code, MsegError, Result as MsegResult};
use crate::kanon::{self, QuasiColumn};

// ---------------------------------------------------------------------------------------------
// The k-checked query
// ---------------------------------------------------------------------------------------------

/// The query computing a k-view's rows: generalised quasi values (`q0`, `q1`, …) and attributes
/// (`a0`, …) of the rows whose class has at least k distinct subjects. Positional aliases, so no
/// column name of the source can clash with the query's own.
fn k_query(t: &kanon::Target, cols: &[QuasiColumn], levels: &[i32], attributes: &[String], k: i32) -> MsegResult<String> {
    let mut select = Vec::new();
    let mut group = Vec::new();
    for (i, (c, l)) in cols.iter().zip(levels).enumerate() {
        // the text of each generalised value; above level 0 through the typed overloads of
        // generalize where there are (same text, a third of the cost for dates)
        let e = if *l == 0 { kanon::generalized_expr("r", c, 0)? } else { kanon::grouping_expr(c, *l)? };
        select.push(format!("{e} AS q{i}"));
        group.push(format!("q{i}"));
    }
    for (i, a) in attributes.iter().enumerate() {
        select.push(format!("r.{} AS a{i}", quote_identifier(a)));
    }
    let subjects = if t.key_unique {
        "pg_catalog.count(*)".to_owned() // one row per subject: the cheap count is exact
    } else {
        "pg_catalog.count(DISTINCT mseg_subject)".to_owned()
    };
    // NULL-safe equality that PostgreSQL can hash: a NULL value becomes a sentinel no generalised
    // value can be (it starts with a control character)
    let null_safe = |a: &str, g: &str| format!("COALESCE({a}.{g}, pg_catalog.chr(1) OPERATOR(pg_catalog.||) 'null')");
    let on = group
        .iter()
        .map(|g| format!("{} OPERATOR(pg_catalog.=) {}", null_safe("g", g), null_safe("c", g)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let out: Vec<String> = group.iter().cloned().chain((0..attributes.len()).map(|i| format!("a{i}"))).map(|c| format!("g.{c}")).collect();
    Ok(format!(
        "WITH g AS MATERIALIZED (SELECT r.{key} AS mseg_subject, {select} FROM {rel} r) \
         SELECT {out} FROM g WHERE EXISTS (SELECT 1 FROM \
           (SELECT {grp} FROM g GROUP BY {grp} HAVING {subjects} OPERATOR(pg_catalog.>=) {k}) c \
           WHERE {on})",
        key = quote_identifier(&t.key),
        select = select.join(", "),
        rel = t.name,
        out = out.join(", "),
        grp = group.join(", "),
    ))
}

/// The type of each column of a relation, as SQL (qualified unless in pg_catalog) without and
/// with its type modifier, and its oid.
fn column_types(relid: pg_sys::Oid) -> MsegResult<Vec<(String, String, String, pg_sys::Oid)>> {
    catalog::select(|c| {
        let mut out = Vec::new();
        for row in c.select(
            "SELECT a.attname::pg_catalog.text, pg_catalog.format_type(a.atttypid, NULL), pg_catalog.format_type(a.atttypid, a.atttypmod), a.atttypid \
             FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid OPERATOR(pg_catalog.=) $1::pg_catalog.oid AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            None,
            &[relid.into()],
        )? {
            out.push((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<String>(2)?.unwrap_or_default(),
                row.get::<String>(3)?.unwrap_or_default(),
                row.get::<pg_sys::Oid>(4)?.unwrap_or(pg_sys::InvalidOid),
            ));
        }
        Ok(out)
    })
}

// ---------------------------------------------------------------------------------------------
// Creation
// ---------------------------------------------------------------------------------------------

/// A possibly qualified name, split by PostgreSQL's own identifier parser and quoted part by part.
fn quoted_name(name: &str) -> MsegResult<String> {
    let parts =
        PgTryBuilder::new(|| catalog::query_one::<Vec<String>>("SELECT pg_catalog.parse_ident($1)", &[name.into()]).map_err(|e| e.message))
            .catch_others(|_| Err("not a valid name".to_owned()))
            .execute()
            .map_err(|why| MsegError::new(Code::InvalidArgument, format!("invalid view name \"{name}\"")).detail(why))?
            .unwrap_or_default();
    if parts.is_empty() || parts.len() > 2 {
        return Err(MsegError::new(Code::InvalidArgument, format!("invalid view name \"{name}\"")).hint("Give a name or schema.name."));
    }
    Ok(parts.iter().map(quote_identifier).collect::<Vec<_>>().join("."))
}

/// The source must be read by its view's owner without running code of someone else's choosing:
/// a table or materialized view (a view would run its owner's functions with the k-view owner's
/// rights), without row-level security policies written by a role the owner does not act for.
fn check_source(relid: pg_sys::Oid, name: &str) -> MsegResult<()> {
    // SAFETY: a syscache lookup of an existing relation (regclass checked it).
    let kind = unsafe { pg_sys::get_rel_relkind(relid) } as u8;
    if !matches!(kind, b'r' | b'p' | b'm') {
        return Err(MsegError::new(Code::KAnonymity, format!("{name} is not a table or materialized view"))
            .detail("A k-view reads its source with its owner's rights; a view or foreign table there would run code of another role's choosing with them.")
            .hint("Create the k-view over the table the view reads."));
    }
    // SAFETY: reads the current user id.
    let user = unsafe { pg_sys::GetUserId() };
    let foreign_policies = catalog::select(|c| {
        Ok(c.select(
            "SELECT c.relrowsecurity AND NOT pg_catalog.pg_has_role($2::pg_catalog.oid, c.relowner, 'USAGE') \
             FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1::pg_catalog.oid",
            None,
            &[relid.into(), user.into()],
        )?
        .first()
        .get_one::<bool>()?
        .unwrap_or(false))
    })?;
    if foreign_policies {
        return Err(MsegError::new(Code::KAnonymity, format!("{name} has row-level security policies of another role"))
            .detail("A k-view reads its source with its owner's rights; the source's policies would run with them.")
            .hint("Create the k-view as the table's owner (or a member of its role), or over a table without row-level security."));
    }
    Ok(())
}

fn not_as_superuser() -> MsegError {
    MsegError::new(Code::InsufficientPrivilege, "a k-view cannot be owned by a superuser")
        .detail(
            "A k-view computes its rows with its owner's rights; with a superuser's, it would run code that other roles can \
             define (row-level security policies, casts) with unlimited rights.",
        )
        .hint("Create it as a role that can read the source and is not a superuser, e.g. SET ROLE to a member of mseg_admin granted SELECT on it.")
}

/// Create a view of `source` that shows its quasi columns generalised (levels given, or chosen
/// by the full-domain anonymiser on the current data), the chosen attribute columns, never a
/// direct or sensitive column, and only rows whose class has at least k distinct subjects —
/// checked at query time inside `mseg.kanon_view_rows`, so the view stays k-anonymous as the data
/// changes and no plan node a reader sees counts a suppressed row. Created as, and owned by, the
/// caller, who must be able to read the source and must not be a superuser.
#[pg_extern(volatile, parallel_unsafe)]
fn create_kanon_view(
    name: Option<&str>,
    source: Option<PgRelation>,
    k: Option<i32>,
    levels: default!(Option<Vec<i32>>, "NULL"),
    columns: default!(Option<Vec<String>>, "NULL"),
    attributes: default!(Option<Vec<String>>, "NULL"),
    key_column: default!(Option<&str>, "NULL"),
) -> String {
    boundary(|| {
        let name = name.ok_or_else(|| MsegError::null_argument("name"))?;
        let relid = source.map(|r| r.oid()).ok_or_else(|| MsegError::null_argument("source"))?;
        let k = k.ok_or_else(|| MsegError::null_argument("k"))?;
        kanon::check_k(k)?;
        let t = kanon::target(relid, key_column, catalog::Who::Caller)?;
        // SAFETY: reads the current user's superuser flag.
        if unsafe { pg_sys::superuser() } {
            return Err(not_as_superuser());
        }
        check_source(relid, &t.name)?;
        let cols = kanon::quasi_columns(&t, columns.clone())?;
        let all = kanon::columns_of(relid)?;
        let attributes: Vec<String> = match attributes {
            Some(list) => {
                for a in &list {
                    match all.iter().find(|(n, ..)| n == a) {
                        None => {
                            return Err(MsegError::new(Code::UndefinedObject, format!("column \"{a}\" of {} does not exist", t.name)))
                        }
                        Some((_, Some(class), ..)) if class == "direct" || class == "sensitive" || class == "quasi" => {
                            return Err(MsegError::new(Code::KAnonymity, format!("column \"{a}\" is {class} and cannot be shown as an attribute"))
                                .detail("A k-view shows quasi columns generalised and attribute columns as they are; direct and sensitive columns never.")
                                .hint("Classify it as attribute if it really identifies nobody."))
                        }
                        Some((_, None, ..)) => {
                            return Err(MsegError::new(Code::KAnonymity, format!("column \"{a}\" is not classified"))
                                .hint("Only columns classified attribute can be shown; classify it with mseg.classify."))
                        }
                        _ => {}
                    }
                }
                list
            }
            None => all.iter().filter(|(_, c, ..)| c.as_deref() == Some("attribute")).map(|(n, ..)| n.clone()).collect(),
        };
        // the caller must be able to read every column the view will read, before anything reads
        // the source for it: privileges are checked when the executor starts (LIMIT 0 reads no row)
        let read: Vec<String> =
            std::iter::once(&t.key).chain(cols.iter().map(|c| &c.name)).chain(&attributes).map(quote_identifier).collect();
        Spi::run(&format!("SELECT {} FROM {} LIMIT 0", read.join(", "), t.name)).map_err(|e| {
            MsegError::new(Code::InsufficientPrivilege, format!("the source cannot be read: {e}"))
                .hint("GRANT SELECT on the source to the creating role.")
        })?;
        let levels = match levels {
            Some(l) => kanon::check_levels(&cols, Some(l))?,
            None => {
                // the full-domain baseline: one level per column that reaches k on today's data
                let run = kanon::run_anonymizer(relid, k, columns, None, None, 0.05, key_column, ::kanon::Algorithm::GlobalRecoding)?;
                run.out.report().levels_used.iter().map(|c| c.max as i32).collect()
            }
        };
        // the view's query is built and planned now (as the caller), so a mistake shows here and
        // not at its first read
        let query = k_query(&t, &cols, &levels, &attributes, k)?;
        Spi::run(&format!("SELECT 1 FROM ({query}) x LIMIT 0"))?;

        let types = column_types(relid)?;
        let type_of =
            |c: &str| types.iter().find(|(n, ..)| n == c).map(|(_, _, full, _)| full.clone()).unwrap_or_else(|| "pg_catalog.text".into());
        let view_cols: Vec<String> = cols.iter().map(|c| c.name.clone()).chain(attributes.iter().cloned()).collect();
        let coldefs: Vec<String> = cols
            .iter()
            .map(|c| format!("{} pg_catalog.text", quote_identifier(&c.name)))
            .chain(attributes.iter().map(|a| format!("{} {}", quote_identifier(a), type_of(a))))
            .collect();
        let view_id = catalog::update(|c| {
            Ok(c.update("SELECT pg_catalog.nextval('mseg.kanon_view_id_seq'::pg_catalog.regclass)::pg_catalog.int4", None, &[])?
                .first()
                .get_one::<i32>()?
                .unwrap_or(0))
        })?;
        let view = quoted_name(name)?;
        // the view is created as the caller (who owns it and must be allowed to create it)
        let sql = format!(
            "CREATE VIEW {view} AS SELECT {list} FROM mseg.kanon_view_rows({view_id}) AS r({defs})",
            list = view_cols.iter().map(|c| format!("r.{}", quote_identifier(c))).collect::<Vec<_>>().join(", "),
            defs = coldefs.join(", "),
        );
        Spi::run(&sql).map_err(|e| {
            MsegError::new(Code::KAnonymity, format!("the view could not be created: {e}"))
                .hint("Give a schema-qualified name that does not exist yet, e.g. public.customers_k.")
        })?;
        let view_oid = Spi::get_one_with_args::<pg_sys::Oid>("SELECT pg_catalog.to_regclass($1)::pg_catalog.oid", &[view.as_str().into()])?
            .ok_or_else(|| MsegError::new(Code::General, format!("the view {view} was created but cannot be found")))?;
        let specs: Vec<Option<String>> = cols.iter().map(|c| c.spec.clone()).collect();
        catalog::update(|c| {
            // forget the definitions of k-views dropped since
            c.update(
                "DELETE FROM mseg.kanon_views v WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) v.view::pg_catalog.oid)",
                None,
                &[],
            )?;
            c.update(
                "INSERT INTO mseg.kanon_views (view_id, view, source, key_column, k, columns, hierarchies, levels, attributes) \
                 VALUES ($1, $2::pg_catalog.oid::pg_catalog.regclass, $3::pg_catalog.oid::pg_catalog.regclass, $4, $5, $6, $7, $8, $9)",
                None,
                &[
                    view_id.into(),
                    view_oid.into(),
                    relid.into(),
                    t.key.as_str().into(),
                    k.into(),
                    cols.iter().map(|c| c.name.clone()).collect::<Vec<_>>().into(),
                    specs.into(),
                    levels.clone().into(),
                    attributes.clone().into(),
                ],
            )?;
            Ok(())
        })?;
        record_dependencies(
            view_oid,
            relid,
            cols.iter().map(|c| c.name.as_str()).chain(attributes.iter().map(String::as_str)).chain([t.key.as_str()]),
        )?;
        catalog::audit(
            "kanon.view",
            name,
            serde_json::json!({"source": t.name, "k": k, "columns": cols.iter().map(|c| &c.name).collect::<Vec<_>>(), "levels": levels, "attributes": attributes}),
        )?;
        Ok(name.to_owned())
    })
}

/// pg_rewrite's OID (RewriteRelationId in catalog/pg_rewrite.h), which pg_sys does not export.
const REWRITE_RELATION_ID: pg_sys::Oid = pg_sys::Oid::from_u32(2618);

/// The view's rule depends on every source column it reads, as if it read them itself: the
/// source or those columns cannot be dropped, nor their types changed, while the view exists.
fn record_dependencies<'a>(view: pg_sys::Oid, source: pg_sys::Oid, columns: impl Iterator<Item = &'a str>) -> MsegResult<()> {
    let rule = catalog::select(|c| {
        Ok(c.select(
            "SELECT r.oid FROM pg_catalog.pg_rewrite r WHERE r.ev_class OPERATOR(pg_catalog.=) $1::pg_catalog.oid \
             AND r.rulename OPERATOR(pg_catalog.=) '_RETURN'",
            None,
            &[view.into()],
        )?
        .first()
        .get_one::<pg_sys::Oid>()?)
    })?
    .ok_or_else(|| MsegError::new(Code::General, "the new k-view has no rewrite rule"))?;
    let mut seen = Vec::new();
    for c in columns {
        if seen.contains(&c) {
            continue;
        }
        seen.push(c);
        let name = std::ffi::CString::new(c).map_err(|_| MsegError::new(Code::General, "column name contains a NUL byte"))?;
        // SAFETY: catalog lookups and a dependency insert for objects that exist (checked above).
        unsafe {
            let attnum = pg_sys::get_attnum(source, name.as_ptr());
            if attnum == pg_sys::InvalidAttrNumber as i16 {
                continue;
            }
            let depender = pg_sys::ObjectAddress { classId: REWRITE_RELATION_ID, objectId: rule, objectSubId: 0 };
            let referenced =
                pg_sys::ObjectAddress { classId: pg_sys::RelationRelationId, objectId: source, objectSubId: i32::from(attnum) };
            pg_sys::recordDependencyOn(&depender, &referenced, pg_sys::DependencyType::DEPENDENCY_NORMAL);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading: mseg.kanon_view_rows(view_id)
// ---------------------------------------------------------------------------------------------

/// A k-view as `mseg.kanon_views` and the catalog describe it now.
struct Definition {
    view: pg_sys::Oid,
    source: pg_sys::Oid,
    key: String,
    k: i32,
    columns: Vec<String>,
    hierarchies: Vec<Option<String>>,
    levels: Vec<i32>,
    attributes: Vec<String>,
    owner: pg_sys::Oid,
    owner_is_superuser: bool,
    source_kind: String,
    foreign_policies: bool,
}

fn definition(view_id: i32) -> MsegResult<Option<Definition>> {
    catalog::select(|c| {
        let t = c.select(
            "SELECT v.view::pg_catalog.oid, v.source::pg_catalog.oid, v.key_column::pg_catalog.text, v.k, \
                    v.columns::pg_catalog.text[], v.hierarchies, v.levels, v.attributes::pg_catalog.text[], \
                    vc.relowner, a.rolsuper, sc.relkind::pg_catalog.text, \
                    sc.relrowsecurity AND NOT pg_catalog.pg_has_role(vc.relowner, sc.relowner, 'USAGE') \
             FROM mseg.kanon_views v \
             JOIN pg_catalog.pg_class vc ON vc.oid OPERATOR(pg_catalog.=) v.view::pg_catalog.oid \
             JOIN pg_catalog.pg_authid a ON a.oid OPERATOR(pg_catalog.=) vc.relowner \
             JOIN pg_catalog.pg_class sc ON sc.oid OPERATOR(pg_catalog.=) v.source::pg_catalog.oid \
             WHERE v.view_id OPERATOR(pg_catalog.=) $1",
            None,
            &[view_id.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok(Some(Definition {
            view: r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
            source: r.get::<pg_sys::Oid>(2)?.unwrap_or(pg_sys::InvalidOid),
            key: r.get::<String>(3)?.unwrap_or_default(),
            k: r.get::<i32>(4)?.unwrap_or(i32::MAX),
            columns: r.get::<Vec<String>>(5)?.unwrap_or_default(),
            hierarchies: r.get::<Vec<Option<String>>>(6)?.unwrap_or_default(),
            levels: r.get::<Vec<i32>>(7)?.unwrap_or_default(),
            attributes: r.get::<Vec<String>>(8)?.unwrap_or_default(),
            owner: r.get::<pg_sys::Oid>(9)?.unwrap_or(pg_sys::InvalidOid),
            owner_is_superuser: r.get::<bool>(10)?.unwrap_or(true),
            source_kind: r.get::<String>(11)?.unwrap_or_default(),
            foreign_policies: r.get::<bool>(12)?.unwrap_or(true),
        }))
    })
}

/// The k-checked query of a definition, from the source's columns as they are now; called as
/// the view's owner, who must (still) be allowed to read the source.
fn query_of(d: &Definition) -> MsegResult<String> {
    let source_name = catalog::relation_name(d.source);
    let t = kanon::target(d.source, Some(&d.key), catalog::Who::Caller)?;
    let types = column_types(d.source)?;
    let cols = d
        .columns
        .iter()
        .zip(d.hierarchies.iter().chain(std::iter::repeat(&None)))
        .map(|(name, spec)| {
            let (typ, typid) = types.iter().find(|(n, ..)| n == name).map(|(_, t, _, oid)| (t.clone(), *oid)).ok_or_else(|| {
                MsegError::new(Code::UndefinedObject, format!("column \"{name}\" of {source_name} no longer exists"))
                    .hint("A renamed column is not followed: create the k-view again.")
            })?;
            Ok(QuasiColumn { name: name.clone(), spec: spec.clone(), typ, typid })
        })
        .collect::<MsegResult<Vec<_>>>()?;
    for a in &d.attributes {
        if !types.iter().any(|(n, ..)| n == a) {
            return Err(MsegError::new(Code::UndefinedObject, format!("column \"{a}\" of {source_name} no longer exists"))
                .hint("A renamed column is not followed: create the k-view again."));
        }
    }
    k_query(&t, &cols, &d.levels, &d.attributes, d.k)
}

/// A DestReceiver appending every row to the function's result tuplestore, after checking once
/// that the query's columns have the types the view declares.
#[repr(C)]
struct StoreReceiver {
    /// first, so a pointer to it is a pointer to the StoreReceiver
    dest: pg_sys::DestReceiver,
    store: *mut pg_sys::Tuplestorestate,
    expected: pg_sys::TupleDesc,
}

#[pg_guard]
unsafe extern "C-unwind" fn store_startup(dest: *mut pg_sys::DestReceiver, _operation: std::ffi::c_int, desc: pg_sys::TupleDesc) {
    // SAFETY: `dest` is the DestReceiver at the start of a live StoreReceiver; both descriptors are valid.
    unsafe {
        let receiver = &*dest.cast::<StoreReceiver>();
        let (got, want) = (&*desc, &*receiver.expected);
        let same = got.natts == want.natts
            && (0..usize::try_from(got.natts).unwrap_or(0)).all(|i| {
                (*crate::compat::tuple_desc_attr(desc, i)).atttypid == (*crate::compat::tuple_desc_attr(receiver.expected, i)).atttypid
            });
        if !same {
            pgrx::ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                "the columns of the k-view no longer match its source",
                "A column type of the source changed since the view was made; create the k-view again."
            );
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn store_row(slot: *mut pg_sys::TupleTableSlot, dest: *mut pg_sys::DestReceiver) -> bool {
    // SAFETY: `dest` is a live StoreReceiver; the tuplestore copies the row into its own context.
    unsafe {
        let receiver = &*dest.cast::<StoreReceiver>();
        pg_sys::tuplestore_puttupleslot(receiver.store, slot);
    }
    true
}

unsafe extern "C-unwind" fn store_noop(_: *mut pg_sys::DestReceiver) {}

/// Errors PostgreSQL raises for reasons that do not depend on the rows read (privileges, missing
/// objects, cancellation, resources): passed on as they are. Every other error of the inner query
/// may quote a value of a suppressed row, so it goes to the server log only.
fn independent_of_rows(code: PgSqlErrorCode) -> bool {
    // a SQLSTATE is packed six bits per character, the class first (MAKE_SQLSTATE)
    let code = code as i32;
    let class = [((code & 0x3F) + i32::from(b'0')) as u8, (((code >> 6) & 0x3F) + i32::from(b'0')) as u8];
    [b"42", b"53", b"57", b"58", b"40", b"0A"].iter().any(|c| **c == class)
}

/// Run the k-checked query as the view's owner into the result tuplestore.
fn compute(view_name: &str, d: &Definition, store: *mut pg_sys::Tuplestorestate, expected: pg_sys::TupleDesc) -> MsegResult<()> {
    let outcome = PgTryBuilder::new(|| {
        // as the view's owner, security-restricted, with a pinned search_path (as PostgreSQL refreshes
        // a materialized view as its owner)
        catalog::run_as(d.owner, || {
            let sql = query_of(d)?;
            let sql = std::ffi::CString::new(sql).map_err(|_| MsegError::new(Code::General, "query text contains a NUL byte"))?;
            Spi::connect(|_client| {
                let mut receiver = StoreReceiver {
                    dest: pg_sys::DestReceiver {
                        receiveSlot: Some(store_row),
                        rStartup: Some(store_startup),
                        rShutdown: Some(store_noop),
                        rDestroy: Some(store_noop),
                        mydest: pg_sys::CommandDest::DestNone,
                    },
                    store,
                    expected,
                };
                // SAFETY: SPI is connected; `receiver` outlives the call and starts with its DestReceiver.
                let status = unsafe {
                    let options = pg_sys::SPIExecuteOptions {
                        // the calling statement's snapshot: the view reads what its reader's statement sees
                        read_only: true,
                        dest: std::ptr::addr_of_mut!(receiver).cast::<pg_sys::DestReceiver>(),
                        ..Default::default()
                    };
                    pg_sys::SPI_execute_extended(sql.as_ptr(), &options)
                };
                if status < 0 {
                    return Err(MsegError::new(Code::General, format!("SPI_execute_extended failed: {status}")));
                }
                Ok(())
            })
        })
    })
    .catch_others(|e| {
        let (code, message, detail) = match &e {
            pg_sys::panic::CaughtError::PostgresError(r) | pg_sys::panic::CaughtError::ErrorReport(r) => {
                (r.sql_error_code(), r.message().to_owned(), r.detail().map(str::to_owned))
            }
            pg_sys::panic::CaughtError::RustPanic { ereport, .. } => {
                (ereport.sql_error_code(), ereport.message().to_owned(), ereport.detail().map(str::to_owned))
            }
        };
        if independent_of_rows(code) {
            e.rethrow();
        }
        // the server log only: never sent to the client, whatever client_min_messages says
        pgrx::ereport!(
            PgLogLevel::LOG_SERVER_ONLY,
            PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
            format!("k-view {view_name} could not be computed: {message}{}", detail.map(|d| format!(" ({d})")).unwrap_or_default())
        );
        Err(MsegError::new(Code::KAnonymity, format!("k-view {view_name} could not be computed"))
            .detail("Computing its rows raised an error; its text could describe a suppressed row, so it is in the server log only.")
            .hint("An administrator finds the cause in the server log (\"k-view … could not be computed\")."))
    })
    .execute();
    outcome
}

/// `mseg.kanon_view_rows(view_id)`: the rows of a k-view, for a reader allowed to SELECT from it.
unsafe fn view_rows(fcinfo: pg_sys::FunctionCallInfo) -> MsegResult<()> {
    // SAFETY: the function is STRICT with one int4 argument.
    let view_id = unsafe { pgrx::fcinfo::pg_getarg::<i32>(fcinfo, 0) }.ok_or_else(|| MsegError::null_argument("view_id"))?;
    let d = definition(view_id)?.ok_or_else(|| {
        MsegError::new(Code::UndefinedObject, format!("k-view {view_id} does not exist"))
            .hint("mseg.kanon_view_rows is called by the views mseg.create_kanon_view makes; query those views.")
    })?;
    let view_name = catalog::relation_name(d.view);
    // SAFETY: reads the current user id and checks a privilege on an existing relation.
    let allowed = unsafe {
        pg_sys::pg_class_aclcheck(d.view, pg_sys::GetUserId(), pg_sys::AclMode::from(pg_sys::ACL_SELECT)) == pg_sys::AclResult::ACLCHECK_OK
    };
    if !allowed {
        return Err(MsegError::new(Code::InsufficientPrivilege, format!("permission denied for k-view {view_name}"))
            .hint(format!("Its rows are for roles that may read it: GRANT SELECT ON {view_name} TO …")));
    }
    if d.owner_is_superuser {
        return Err(not_as_superuser().detail(format!("{view_name} is owned by a superuser; ALTER VIEW … OWNER TO a role that is not.")));
    }
    if !matches!(d.source_kind.as_str(), "r" | "p" | "m") || d.foreign_policies {
        return Err(MsegError::new(Code::KAnonymity, format!("the source of k-view {view_name} can no longer be read safely"))
            .detail("It has row-level security policies of a role the view's owner does not act for.")
            .hint("Disable them, or give the view to the table's owner."));
    }
    // SAFETY: a set-returning function called with a column definition list (the view's).
    let (store, desc) = unsafe {
        pg_sys::InitMaterializedSRF(fcinfo, pg_sys::MAT_SRF_USE_EXPECTED_DESC);
        let rsinfo = (*fcinfo).resultinfo.cast::<pg_sys::ReturnSetInfo>();
        ((*rsinfo).setResult, (*rsinfo).setDesc)
    };
    compute(&view_name, &d, store, desc)
}

#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_mseg_kanon_view_rows() -> &'static pg_sys::Pg_finfo_record {
    const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1_API
}

/// SQL: `mseg.kanon_view_rows(view_id int4) RETURNS SETOF record` (sql/kviews.sql).
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn mseg_kanon_view_rows(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: fcinfo is the call's, passed on unchanged.
    boundary(|| unsafe { view_rows(fcinfo) });
    pg_sys::Datum::from(0usize)
}
