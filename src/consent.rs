//! The legal-basis rule as SQL fragments, for queries that evaluate it for many subjects at once
//! (segment upkeep, Variant Twin export). The SQL function `mseg._processable` (sql/consent.sql)
//! states the same rule for one subject; the pg_regress files consent and segments and the twins
//! round trip check that they agree.
//!
//! A query using these fragments joins, for purpose number `i` (aliases are numbered so one query
//! can evaluate several purposes), `pp{i}` (the purpose's legal bases and retention), `b{i}` (the
//! subject's state for it) and once `ss` (the subject's restriction and erasure): see [`joins`].
//! A subject is processable for a purpose when it is not blocked (restricted, erased, objected)
//! and either has a valid grant (a basis the purpose accepts, within its retention) or the purpose
//! accepts legitimate interest; for sensitive data only an explicit consent counts (Art. 9).

use pgrx::spi::quote_literal;

/// ` AND column BETWEEN the first and the last element of the SQL array keys`, which holds
/// ascending ids: a filter every id of the batch passes. A range, not `= ANY (keys)`: before 17,
/// PostgreSQL's B-tree takes `= ANY` of 10 000 values as 10 000 descents, and 15 chose to scan and
/// hash whole tables for every batch instead (a refresh quadratic in the subjects: 2.55× the plain
/// CREATE TABLE AS at 1 M subjects on 15, 1.15× with the range); a range is one descent and a
/// contiguous read, estimated from the histogram.
pub fn within_keys(column: &str, keys: &str) -> String {
    format!(
        " AND {column} OPERATOR(pg_catalog.>=) ({keys})[1] \
          AND {column} OPERATOR(pg_catalog.<=) ({keys})[pg_catalog.cardinality({keys})]"
    )
}

/// The joins for `purposes` (aliases pp1/b1, pp2/b2, … in order) and the subject state `ss` of the
/// subject whose key is the SQL expression `key`.
pub fn joins(purposes: &[&str], key: &str) -> String {
    joins_within(purposes, key, None)
}

/// [`joins`] for subjects known to be among the ids of the SQL array `keys` (ascending): each state
/// table is also filtered by the range of that list ([`within_keys`]), so a plan made for a batch
/// of keys reads those rows by index instead of hashing the whole table.
pub fn joins_within(purposes: &[&str], key: &str, keys: Option<&str>) -> String {
    let within = |alias: &str| keys.map(|k| within_keys(&format!("{alias}.subject_key"), k)).unwrap_or_default();
    let mut sql = format!(" LEFT JOIN mseg.subject_state ss ON ss.subject_key OPERATOR(pg_catalog.=) {key}{}", within("ss"));
    for (n, p) in purposes.iter().enumerate() {
        let i = n + 1;
        let lit = quote_literal(p);
        sql.push_str(&format!(
            " CROSS JOIN (SELECT legal_bases, retention, 'legitimate_interest' OPERATOR(pg_catalog.=) ANY (legal_bases) AS li \
                          FROM mseg.purposes WHERE name OPERATOR(pg_catalog.=) {lit} OFFSET 0) pp{i} \
              LEFT JOIN mseg.legal_basis_state b{i} ON b{i}.subject_key OPERATOR(pg_catalog.=) {key} \
              AND b{i}.purpose OPERATOR(pg_catalog.=) {lit}{}",
            within(&format!("b{i}"))
        ));
    }
    sql
}

/// Restricted, erased, or objected to purpose `i`: nothing else matters.
pub fn blocked(i: usize) -> String {
    format!("(ss.restricted_at IS NOT NULL OR ss.erased_at IS NOT NULL OR b{i}.objected_at IS NOT NULL)")
}

/// A recorded grant the purpose accepts, within its retention (for sensitive data: a consent).
pub fn granted(i: usize, sensitive: bool) -> String {
    let kind = if sensitive { format!("b{i}.consent_basis OPERATOR(pg_catalog.=) 'consent' AND ") } else { String::new() };
    format!(
        "({kind}b{i}.consent_basis OPERATOR(pg_catalog.=) ANY (pp{i}.legal_bases) \
         AND b{i}.granted_at OPERATOR(pg_catalog.+) pp{i}.retention OPERATOR(pg_catalog.>) pg_catalog.now())"
    )
}

/// The purpose accepts legitimate interest (never enough for sensitive data); tested once per
/// query in the `pp{i}` subquery, not once per segment and subject.
pub fn legitimate_interest(i: usize) -> String {
    format!("pp{i}.li")
}

/// Processable for purpose `i` now.
pub fn processable(i: usize, sensitive: bool) -> String {
    if sensitive {
        format!("(NOT {} AND {})", blocked(i), granted(i, true))
    } else {
        // legitimate interest first: when the purpose accepts it, the grant is never looked at
        format!("(NOT {} AND ({} OR {}))", blocked(i), legitimate_interest(i), granted(i, false))
    }
}

/// The basis that makes the subject processable for purpose `i` now (its grant's basis, or
/// legitimate_interest), NULL when none does.
pub fn basis_in_force(i: usize) -> String {
    format!(
        "CASE WHEN {} THEN NULL WHEN {} THEN b{i}.consent_basis WHEN {} THEN 'legitimate_interest' END",
        blocked(i),
        granted(i, false),
        legitimate_interest(i)
    )
}

// ---------------------------------------------------------------------------------------------
// The subject table, read and written with the narrowest rights (see catalog.rs)
// ---------------------------------------------------------------------------------------------

use pgrx::prelude::*;
use pgrx::spi::quote_identifier;

use crate::catalog::{self, SubjectTable};
use crate::error::{boundary, Code, MsegError, Result};

fn subject_table() -> Result<catalog::SubjectTable> {
    catalog::subject_table()?.ok_or_else(|| {
        MsegError::new(Code::SubjectTable, "no subject table is registered")
            .hint("Register it first: SELECT mseg.register_subjects('public.customers', key_column => 'customer_id').")
    })
}

/// Internal: whether subject `subject` has a row in the subject table (read as mseg_upkeep; the
/// consent functions are SECURITY DEFINER and must not read a user table as their owner).
#[pg_extern(stable, parallel_safe, name = "_subject_exists")]
fn subject_exists(subject: Option<&str>) -> bool {
    boundary(|| {
        let subject = subject.ok_or_else(|| MsegError::null_argument("subject"))?;
        let t = subject_table()?;
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {} s WHERE s.{} OPERATOR(pg_catalog.=) {})",
            t.name,
            quote_identifier(&t.key),
            t.key_of_text("$1")
        );
        catalog::as_upkeep(|| Ok(catalog::query_one::<bool>(&sql, &[subject.into()])?.unwrap_or(false)))
    })
}

/// The subject id of a subject key given as text: an integer key is its own id; any other key
/// (uuid, text…) is looked up in mseg.subject_ids. NULL when there is no such subject id.
pub fn id_of_key(t: &SubjectTable, key: &str) -> Result<Option<i64>> {
    if !t.mapped {
        return Ok(key.trim().parse::<i64>().ok());
    }
    catalog::select(|c| {
        let r = c.select("SELECT subject_id FROM mseg.subject_ids WHERE subject_key OPERATOR(pg_catalog.=) $1", None, &[key.into()])?;
        if r.is_empty() {
            return Ok(None);
        }
        Ok(r.first().get_one::<i64>()?)
    })
}

/// Internal: the subject id of a key given as text (NULL when unknown).
#[pg_extern(stable, parallel_safe, name = "_subject_id")]
fn subject_id_sql(key: Option<&str>) -> Option<i64> {
    boundary(|| {
        let Some(key) = key else { return Ok(None) };
        id_of_key(&subject_table()?, key)
    })
}

/// The subject key (as text) behind a subject id, as the functions that return subjects give
/// them (`segment_members`, `resolve`, `verify_segments`): for integer keys the id is the key
/// itself; for other key types, `mseg.subject_key(id)::uuid` turns it back. NULL when unknown.
#[pg_extern(stable, parallel_safe, name = "subject_key")]
fn subject_key_sql(id: Option<i64>) -> Option<String> {
    boundary(|| {
        let Some(id) = id else { return Ok(None) };
        let t = subject_table()?;
        if !t.mapped {
            return Ok(Some(id.to_string()));
        }
        catalog::select(|c| {
            let r = c.select("SELECT subject_key FROM mseg.subject_ids WHERE subject_id OPERATOR(pg_catalog.=) $1", None, &[id.into()])?;
            if r.is_empty() {
                return Ok(None);
            }
            Ok(r.first().get_one::<String>()?)
        })
    })
}

/// Internal (register_subjects): give every row of a subject table with non-integer keys its id.
#[pg_extern(volatile, parallel_unsafe, name = "_map_subjects")]
fn map_subjects() -> i64 {
    boundary(|| {
        let t = subject_table()?;
        if !t.mapped {
            return Ok(0);
        }
        let sql = format!(
            "INSERT INTO mseg.subject_ids (subject_key) SELECT ({k})::pg_catalog.text FROM {rel} s WHERE {k} IS NOT NULL \
             ORDER BY {k} ON CONFLICT (subject_key) DO NOTHING",
            k = t.row_key("s"),
            rel = t.name
        );
        catalog::as_upkeep(|| Spi::connect_mut(|c| Ok(c.update(&sql, None, &[])?.len() as i64)))
    })
}

/// Internal: the subject's row as jsonb (for subject_report), read as mseg_upkeep. Built column by
/// column: `to_jsonb` of a whole row would call a user-defined cast to json of any column's type;
/// here columns of non-built-in types (enums, composites…) come out as their text.
#[pg_extern(stable, parallel_safe, name = "_subject_row")]
fn subject_row(subject: Option<&str>) -> Option<pgrx::JsonB> {
    boundary(|| {
        let subject = subject.ok_or_else(|| MsegError::null_argument("subject"))?;
        let t = subject_table()?;
        let columns: Vec<(String, pg_sys::Oid)> = catalog::select(|c| {
            let mut out = Vec::new();
            for row in c.select(
                "SELECT attname::pg_catalog.text, atttypid FROM pg_catalog.pg_attribute \
                 WHERE attrelid OPERATOR(pg_catalog.=) $1 AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped ORDER BY attnum",
                None,
                &[t.relid.into()],
            )? {
                out.push((row.get::<String>(1)?.unwrap_or_default(), row.get::<pg_sys::Oid>(2)?.unwrap_or(pg_sys::InvalidOid)));
            }
            Ok(out)
        })?;
        let pairs: Vec<String> = columns
            .iter()
            .map(|(name, typid)| {
                let col = format!("s.{}", quote_identifier(name));
                // SAFETY: a syscache lookup of an existing type.
                let builtin = u32::from(unsafe { pg_sys::getBaseType(*typid) }) < pg_sys::FirstGenbkiObjectId;
                let value = if builtin { col } else { catalog::safe_text(&col, *typid) };
                format!("{}, pg_catalog.to_jsonb({value})", pgrx::spi::quote_literal(name))
            })
            .collect();
        let object = pairs
            .chunks(50)
            .map(|c| format!("pg_catalog.jsonb_build_object({})", c.join(", ")))
            .collect::<Vec<_>>()
            .join(" OPERATOR(pg_catalog.||) ");
        let object = if object.is_empty() { "'{}'::pg_catalog.jsonb".to_owned() } else { object };
        let sql = format!(
            "SELECT {object} FROM {} s WHERE s.{} OPERATOR(pg_catalog.=) {}",
            t.name,
            quote_identifier(&t.key),
            t.key_of_text("$1")
        );
        catalog::as_upkeep(|| {
            Spi::connect(|c| {
                let t = c.select(&sql, Some(1), &[subject.into()])?;
                if t.is_empty() {
                    return Ok(None);
                }
                Ok(t.first().get_one::<pgrx::JsonB>()?)
            })
        })
    })
}

/// Internal: erase the subject's row for `forget` — delete it, or set `columns` to NULL — as the
/// subject table's owner in a security-restricted context, so the table's own triggers run with
/// its owner's rights, never with the extension's. Returns the rows touched.
#[pg_extern(volatile, parallel_unsafe, name = "_erase_subject_row")]
fn erase_subject_row(subject: Option<&str>, mode: Option<&str>, columns: default!(Option<Vec<String>>, "NULL")) -> i64 {
    boundary(|| {
        let subject = subject.ok_or_else(|| MsegError::null_argument("subject"))?;
        let t = subject_table()?;
        // at a trusted party, a participant's erasure reaches the controllers (src/notices.rs)
        crate::notices::before_erasure(subject)?;
        let key = format!("{} OPERATOR(pg_catalog.=) {}", quote_identifier(&t.key), t.key_of_text("$1"));
        let sql = match mode {
            Some("delete") => format!("DELETE FROM {} WHERE {key}", t.name),
            Some("nullify") => {
                let columns = columns.unwrap_or_default();
                if columns.is_empty() {
                    return Err(MsegError::new(Code::InvalidArgument, "no column to clear"));
                }
                let set: Vec<String> = columns.iter().map(|c| format!("{} = NULL", quote_identifier(c))).collect();
                format!("UPDATE {} SET {} WHERE {key}", t.name, set.join(", "))
            }
            _ => return Err(MsegError::new(Code::InvalidArgument, "unknown erasure mode")),
        };
        catalog::as_table_owner(t.relid, || {
            deferred_triggers_refused(|| Spi::connect_mut(|c| Ok(c.update(&sql, None, &[subject.into()])?.len() as i64)))
        })
    })
}

/// The erasure runs in a security-restricted context (the table owner's triggers must not leave
/// anything behind in the caller's session), where PostgreSQL refuses to queue a deferred trigger:
/// say so clearly, with the way out.
fn deferred_triggers_refused<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let f = std::panic::AssertUnwindSafe(f);
    pgrx::PgTryBuilder::new(move || {
        let f = f;
        (f.0)()
    })
    .catch_others(|e| match e {
        pg_sys::panic::CaughtError::PostgresError(ref r) if r.message().contains("deferred trigger") => {
            Err(MsegError::new(Code::Erasure, "the subject row cannot be erased while a constraint on it is deferred")
                .detail("forget runs the table's triggers as its owner in a security-restricted operation, where PostgreSQL refuses to defer a trigger.")
                .hint("Run SET CONSTRAINTS ALL IMMEDIATE in the transaction before calling mseg.forget."))
        }
        other => other.rethrow(),
    })
    .execute()
}

// ---------------------------------------------------------------------------------------------
// Column classes
// ---------------------------------------------------------------------------------------------

const CLASSES: [&str; 4] = ["direct", "quasi", "sensitive", "attribute"];

/// The column types a hierarchy kind (the part before any ':') fits; None for an unknown kind.
fn hierarchy_fits(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "date" => &["date", "timestamp without time zone", "timestamp with time zone"],
        "prefix" | "category" => &["text", "character varying", "character"],
        "integer" => &["smallint", "integer", "bigint"],
        "numeric" => &["smallint", "integer", "bigint", "numeric", "real", "double precision"],
        _ => return None,
    })
}

/// Classify a column of a table as direct, quasi (with an optional generalisation hierarchy),
/// sensitive or attribute. A Rust function, not SECURITY DEFINER: a category hierarchy's mapping
/// table is read with the caller's own privileges.
#[pg_extern(volatile, parallel_unsafe)]
fn classify(
    table: Option<pgrx::PgRelation>,
    column_name: Option<&str>,
    class: Option<&str>,
    hierarchy: default!(Option<&str>, "NULL"),
) -> String {
    boundary(|| {
        let relid = table.map(|t| t.oid()).ok_or_else(|| MsegError::null_argument("table"))?;
        let column = column_name.ok_or_else(|| MsegError::null_argument("column_name"))?;
        let class = class.ok_or_else(|| MsegError::null_argument("class"))?;
        let name = catalog::relation_name(relid);
        let owner = catalog::relation_owner(relid)?;
        // SAFETY: a membership test of two existing roles.
        if !unsafe { pg_sys::has_privs_of_role(pg_sys::GetUserId(), owner) } {
            return Err(MsegError::new(Code::InsufficientPrivilege, format!("must be owner of table {name}")));
        }
        let typ = catalog::select(|c| {
            let t = c.select(
                "SELECT pg_catalog.format_type(a.atttypid, NULL) FROM pg_catalog.pg_attribute a \
                 WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attname OPERATOR(pg_catalog.=) $2::pg_catalog.name \
                   AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped",
                None,
                &[relid.into(), column.into()],
            )?;
            if t.is_empty() {
                return Ok(None);
            }
            Ok(t.first().get_one::<String>()?)
        })?
        .ok_or_else(|| {
            MsegError::new(Code::UndefinedObject, format!("column \"{column}\" of {name} does not exist"))
                .hint("mseg.unclassified_columns(table) lists the columns still to classify.")
        })?;
        if !CLASSES.contains(&class) {
            return Err(MsegError::new(Code::InvalidArgument, format!("unknown column class \"{class}\""))
                .hint("A column is direct, quasi, sensitive or attribute."));
        }
        let mut stored_spec = hierarchy.map(str::to_owned);
        if let Some(spec) = hierarchy {
            if class != "quasi" {
                return Err(MsegError::new(
                    Code::InvalidArgument,
                    format!("only quasi columns take a hierarchy, and {} is {class}", quote_identifier(column)),
                )
                .hint("Classify it as quasi, or leave out hierarchy."));
            }
            let kind = spec.split(':').next().unwrap_or("");
            let fits = hierarchy_fits(kind).ok_or_else(|| {
                MsegError::new(Code::InvalidArgument, format!("unknown hierarchy \"{spec}\""))
                    .hint("Hierarchies: date, integer[:w1,w2,…], numeric[:w1,…], prefix[:N], category:<mapping table>.")
            })?;
            if !fits.contains(&typ.as_str()) {
                return Err(MsegError::new(
                    Code::InvalidArgument,
                    format!("hierarchy \"{spec}\" does not fit column {} of type {typ}", quote_identifier(column)),
                )
                .hint("date fits date/timestamp columns, prefix and category text columns, integer and numeric number columns."));
            }
            // the whole specification (widths, prefix length, the mapping and its shape), read as the caller
            crate::kanon::hierarchy(spec)?;
            if let Some(mapping) = crate::kanon::mapping_table(spec)? {
                // stored schema-qualified: exports resolve it under a pinned search_path
                stored_spec = Some(format!("category:{}", catalog::relation_name(mapping)));
                // exports read it as mseg_upkeep: the caller, who may read it, lets them
                catalog::update(|c| {
                    c.update(&format!("GRANT SELECT ON {} TO mseg_upkeep", catalog::relation_name(mapping)), None, &[])?;
                    Ok(())
                })?;
            }
        }
        catalog::update(|c| {
            c.update(
                "INSERT INTO mseg.column_classes (relid, column_name, class, hierarchy) VALUES ($1::pg_catalog.oid::pg_catalog.regclass, $2, $3, $4) \
                 ON CONFLICT (relid, column_name) DO UPDATE \
                 SET class = EXCLUDED.class, hierarchy = EXCLUDED.hierarchy, classified_at = pg_catalog.now()",
                None,
                &[relid.into(), column.into(), class.into(), stored_spec.as_deref().into()],
            )?;
            Ok(())
        })?;
        let mut details = serde_json::json!({ "class": class });
        if let Some(h) = &stored_spec {
            details["hierarchy"] = serde_json::Value::from(h.as_str());
        }
        catalog::audit("column.classify", &format!("{name}.{}", quote_identifier(column)), details)?;
        Ok(class.to_owned())
    })
}
