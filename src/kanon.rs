//! k-anonymity inside the database: generalisation along hierarchies, k and l measured in
//! distinct subjects, k-checked views (`src/kview.rs`) suppressing small classes at query time, and the
//! anonymiser (the `kanon` crate: Mondrian-style local recoding along the hierarchies, with a
//! full-domain baseline) for exports.
//!
//! Hierarchy specifications (the `hierarchy` of `mseg.classify`, or passed directly):
//!   `date` · `integer` or `integer:5,10,20,100` · `numeric:0.5,1,5` · `prefix` (5 characters)
//!   or `prefix:N` · `category:<schema.table>` (a mapping table with text columns `child`, `parent`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use kanon::{Anonymizer, Hierarchy, Value};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use pgrx::PgRelation;

use crate::catalog;
use crate::error::{boundary, Code, MsegError, Result as MsegResult};

/// The error of the anonymiser or a hierarchy, told without any data value: values come from
/// relations, and messages go to clients and the server log (column names and record numbers stay).
pub(crate) fn kanon_error(e: kanon::Error) -> MsegError {
    MsegError::new(Code::KAnonymity, value_free(&e))
        .hint("Hierarchies: date, integer[:w1,w2,…], numeric[:w1,…], prefix[:N], category:<mapping table>.")
}

fn value_free(e: &kanon::Error) -> String {
    use kanon::Error as E;
    match e {
        E::InColumn { column, record, source } => match record {
            Some(r) => format!("column \"{column}\", record {r}: {}", value_free(source)),
            None => format!("column \"{column}\": {}", value_free(source)),
        },
        E::InvalidValue { hierarchy, .. } => format!("a value does not fit the {hierarchy} hierarchy"),
        E::UnknownValue { .. } => "a value is not in the categorical hierarchy (its mapping has no pair for it)".to_owned(),
        E::NotALeaf { .. } => "a value is an inner node of the categorical hierarchy, not a leaf".to_owned(),
        E::Cycle { .. } | E::MultipleRoots { .. } | E::ConflictingParent { .. } | E::ReservedName { .. } | E::EmptyMapping => {
            format!("invalid categorical mapping: {}", mapping_problem(e))
        }
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Hierarchy specifications
// ---------------------------------------------------------------------------------------------

thread_local! {
    /// spec -> (the mapping table it reads, if any; the hierarchy), until the catalog changes
    static HIERARCHIES: RefCell<(u64, HashMap<String, (Option<pg_sys::Oid>, Rc<Hierarchy>)>)> = RefCell::new((0, HashMap::new()));
}

fn parse_widths<T: std::str::FromStr>(spec: &str, list: &str) -> MsegResult<Vec<T>> {
    list.split(',').map(|w| w.trim().parse::<T>().map_err(|_| bad_spec(spec, "widths are comma-separated numbers"))).collect()
}

fn bad_spec(spec: &str, why: &str) -> MsegError {
    MsegError::new(Code::KAnonymity, format!("invalid hierarchy \"{}\"", short(spec)))
        .detail(why.to_owned())
        .hint("Hierarchies: date, integer[:w1,w2,…], numeric[:w1,…], prefix[:N], category:<mapping table>.")
}

/// At most 64 characters of an input, for messages (never a whole value read from a relation).
pub(crate) fn short(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// The mapping table a `category:<table>` specification names (resolved with the caller's
/// search_path), or None for other kinds.
pub(crate) fn mapping_table(spec: &str) -> MsegResult<Option<pg_sys::Oid>> {
    let Some(table) = spec.strip_prefix("category:") else { return Ok(None) };
    let name = table.trim().to_owned();
    // an invalid name raises a syntax error in parse_ident (to_regclass only returns NULL for it
    // from PostgreSQL 16 on): reported as the invalid specification it is
    let relid = PgTryBuilder::new(|| {
        catalog::query_one::<pg_sys::Oid>(
            "SELECT CASE WHEN pg_catalog.cardinality(pg_catalog.parse_ident($1)) OPERATOR(pg_catalog.>) 0 \
             THEN pg_catalog.to_regclass($1)::pg_catalog.oid END",
            &[name.as_str().into()],
        )
        .map_err(|_| ())
    })
    .catch_others(|_| Err(()))
    .execute()
    .map_err(|_| bad_spec(spec, "the mapping table's name is not a valid (schema-qualified) table name"))?
    .unwrap_or(pg_sys::InvalidOid);
    if relid == pg_sys::InvalidOid {
        return Err(bad_spec(spec, &format!("the mapping table {} does not exist", short(table.trim()))));
    }
    Ok(Some(relid))
}

/// A category mapping read with the privileges of the current user (the caller, or mseg_upkeep
/// in an export): an ordinary table, never a view (whose functions would run as the reader).
/// Messages never carry its values.
fn load_categorical(spec: &str, relid: pg_sys::Oid) -> MsegResult<Hierarchy> {
    let name = catalog::relation_name(relid);
    // SAFETY: a syscache lookup; '\0' when the relation vanished.
    let kind = unsafe { pg_sys::get_rel_relkind(relid) } as u8;
    if kind != b'r' && kind != b'p' {
        return Err(bad_spec(spec, &format!("the mapping {name} is not a table")));
    }
    catalog::require_select(relid)?;
    let pairs: Vec<(String, String)> = catalog::with_search_path(c"pg_catalog, pg_temp", || {
        Spi::connect(|c| {
            let mut out = Vec::new();
            for row in c.select(&format!("SELECT child::pg_catalog.text, parent::pg_catalog.text FROM {name}"), None, &[])? {
                out.push((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default()));
            }
            Ok(out)
        })
    })
    .map_err(|_| bad_spec(spec, "the mapping table must have text columns child and parent"))?;
    Hierarchy::categorical(pairs).map_err(|e| bad_spec(spec, &mapping_problem(&e)))
}

/// What is wrong with a category mapping, without any of its values.
fn mapping_problem(e: &kanon::Error) -> String {
    use kanon::Error as E;
    match e.root_cause() {
        E::EmptyMapping => "the mapping has no child -> parent pair".to_owned(),
        E::Cycle { path } => format!("the mapping has a cycle of {} values", path.len().saturating_sub(1).max(1)),
        E::MultipleRoots { roots } => format!("the mapping has {} roots; it needs exactly one", roots.len()),
        E::ConflictingParent { .. } => "a child has more than one parent".to_owned(),
        E::ReservedName { .. } => "a value uses a name reserved for the hierarchy's top".to_owned(),
        _ => "the mapping does not form a hierarchy".to_owned(),
    }
}

/// The hierarchy a specification names (cached per backend until the catalog changes; a mapping
/// table is checked against the current user's privileges on every use, cached or not).
pub(crate) fn hierarchy(spec: &str) -> MsegResult<Rc<Hierarchy>> {
    let generation = catalog::cache_generation();
    if let Some((mapping, h)) = HIERARCHIES.with(|c| {
        let c = c.borrow();
        if c.0 == generation {
            c.1.get(spec).cloned()
        } else {
            None
        }
    }) {
        if let Some(relid) = mapping {
            catalog::require_select(relid)?;
        }
        return Ok(h);
    }
    let (kind, arg) = match spec.split_once(':') {
        Some((k, a)) => (k, Some(a)),
        None => (spec, None),
    };
    let mut mapping = None;
    let h = match (kind, arg) {
        ("date", None) => Hierarchy::date(),
        ("integer", None) => Hierarchy::integer_default(),
        ("integer", Some(w)) => Hierarchy::integer(parse_widths(spec, w)?).map_err(kanon_error)?,
        ("numeric", Some(w)) => Hierarchy::numeric(parse_widths(spec, w)?).map_err(kanon_error)?,
        ("numeric", None) => Hierarchy::numeric(vec![1.0, 10.0, 100.0, 1000.0]).map_err(kanon_error)?,
        ("prefix", None) => Hierarchy::prefix(5).map_err(kanon_error)?,
        ("prefix", Some(n)) => {
            Hierarchy::prefix(n.trim().parse().map_err(|_| bad_spec(spec, "prefix:N takes a length"))?).map_err(kanon_error)?
        }
        ("category", Some(_)) => {
            let relid = mapping_table(spec)?.unwrap_or(pg_sys::InvalidOid);
            mapping = Some(relid);
            load_categorical(spec, relid)?
        }
        _ => return Err(bad_spec(spec, "unknown kind")),
    };
    let h = Rc::new(h);
    HIERARCHIES.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != generation {
            c.1.clear();
            c.0 = generation;
        }
        c.1.insert(spec.to_owned(), (mapping, h.clone()));
    });
    Ok(h)
}

fn generalize_value(value: &Value<'_>, spec: &str, level: i32) -> MsegResult<String> {
    let h = hierarchy(spec)?;
    let level = usize::try_from(level)
        .map_err(|_| MsegError::new(Code::KAnonymity, format!("level {level} is negative")).hint("Levels start at 0 (the exact value)."))?;
    h.generalize(value, level).map_err(|e| if about_value(&e) { with_input(kanon_error(e), value) } else { kanon_error(e) })
}

/// Whether an error is about the value itself (not the level or the hierarchy).
fn about_value(e: &kanon::Error) -> bool {
    use kanon::Error as E;
    matches!(e.root_cause(), E::InvalidValue { .. } | E::UnknownValue { .. } | E::NotALeaf { .. } | E::WrongType { .. })
}

/// An error about a value the caller passed to `generalize` names (a short prefix of) that value.
fn with_input(e: MsegError, value: &Value<'_>) -> MsegError {
    let shown = match value {
        Value::Text(t) => short(t),
        Value::Int(i) => i.to_string(),
        Value::Num(n) => n.to_string(),
        Value::Date(d) => d.to_string(),
        Value::Null => "NULL".into(),
    };
    MsegError { detail: Some(format!("The value given was \"{shown}\".")), ..e }
}

/// Generalise a text value (dates as YYYY-MM-DD) to `level` of `hierarchy`.
#[pg_extern(stable, parallel_safe, name = "generalize")]
fn generalize_text(value: Option<&str>, hierarchy: Option<&str>, level: Option<i32>) -> Option<String> {
    boundary(|| {
        let spec = hierarchy.ok_or_else(|| MsegError::null_argument("hierarchy"))?;
        let level = level.ok_or_else(|| MsegError::null_argument("level"))?;
        let Some(value) = value else { return Ok(None) };
        let h = self::hierarchy(spec)?;
        let v = h.parse(value).map_err(|e| with_input(kanon_error(e), &Value::Text(value)))?;
        generalize_value(&v, spec, level).map(Some)
    })
}

#[pg_extern(stable, parallel_safe, name = "generalize")]
fn generalize_date(value: Option<pgrx::datum::Date>, hierarchy: Option<&str>, level: Option<i32>) -> Option<String> {
    boundary(|| {
        let spec = hierarchy.ok_or_else(|| MsegError::null_argument("hierarchy"))?;
        let level = level.ok_or_else(|| MsegError::null_argument("level"))?;
        let Some(value) = value else { return Ok(None) };
        if value.is_infinity() || value.is_neg_infinity() {
            return Err(MsegError::new(Code::KAnonymity, "an infinite date cannot be generalised"));
        }
        let v = Value::Date(kanon::days_to_date(i64::from(value.to_unix_epoch_days())));
        generalize_value(&v, spec, level).map(Some)
    })
}

#[pg_extern(stable, parallel_safe, name = "generalize")]
fn generalize_int(value: Option<i64>, hierarchy: Option<&str>, level: Option<i32>) -> Option<String> {
    boundary(|| {
        let spec = hierarchy.ok_or_else(|| MsegError::null_argument("hierarchy"))?;
        let level = level.ok_or_else(|| MsegError::null_argument("level"))?;
        let Some(value) = value else { return Ok(None) };
        generalize_value(&Value::Int(value), spec, level).map(Some)
    })
}

// ---------------------------------------------------------------------------------------------
// Columns, classes and subject keys of a relation
// ---------------------------------------------------------------------------------------------

pub(crate) struct QuasiColumn {
    pub(crate) name: String,
    pub(crate) spec: Option<String>,
    pub(crate) typ: String,
    /// the column's type (its values are turned into text without any user-defined cast)
    pub(crate) typid: pg_sys::Oid,
}

pub(crate) struct Target {
    pub(crate) relid: pg_sys::Oid,
    pub(crate) name: String,
    pub(crate) key: String,
    pub(crate) key_unique: bool,
    /// who reads its rows: the caller for a relation the caller named, mseg_upkeep for exports
    pub(crate) who: catalog::Who,
}

impl Target {
    /// Run a read-only query on the target's rows as the identity that may read them.
    fn read<T>(&self, f: impl FnOnce(&pgrx::spi::SpiClient<'_>) -> MsegResult<T>) -> MsegResult<T> {
        catalog::run(self.who, || Spi::connect(|c| f(&c)))
    }
}

/// The relation a k-anonymity function is asked about, read as `who`; a caller must be allowed
/// to read it (PostgreSQL checks again when the query runs).
pub(crate) fn target(relid: pg_sys::Oid, key_column: Option<&str>, who: catalog::Who) -> MsegResult<Target> {
    if who == catalog::Who::Caller {
        catalog::require_select(relid)?;
    }
    let name = catalog::relation_name(relid);
    let subject = catalog::subject_table()?;
    let registered_key: Option<String> = if subject.as_ref().is_some_and(|s| s.relid == relid) {
        subject.map(|s| s.key)
    } else {
        catalog::select(|c| {
            let t = c.select(
                "SELECT key_column::pg_catalog.text FROM mseg.sources WHERE relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid",
                None,
                &[relid.into()],
            )?;
            if t.is_empty() {
                Ok(None)
            } else {
                Ok(t.first().get::<String>(1)?)
            }
        })?
    };
    let key = key_column.map(str::to_owned).or(registered_key).ok_or_else(|| {
        MsegError::new(Code::KAnonymity, format!("{name} has no known subject key"))
            .detail("k counts distinct subjects, not rows.")
            .hint("Pass key_column => '…', or register the table as the subject table or a source.")
    })?;
    let (exists, unique) = catalog::select(|c| {
        let t = c.select(
            "SELECT a.attnum IS NOT NULL, EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid OPERATOR(pg_catalog.=) $1::pg_catalog.oid \
               AND i.indisunique AND i.indpred IS NULL AND i.indnkeyatts OPERATOR(pg_catalog.=) 1 AND i.indkey[0] OPERATOR(pg_catalog.=) a.attnum) \
             FROM (SELECT 1) one LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) $1::pg_catalog.oid \
               AND a.attname OPERATOR(pg_catalog.=) $2::pg_catalog.name AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped",
            None,
            &[relid.into(), key.as_str().into()],
        )?;
        let row = t.first();
        Ok((row.get::<bool>(1)?.unwrap_or(false), row.get::<bool>(2)?.unwrap_or(false)))
    })?;
    if !exists {
        return Err(MsegError::new(Code::UndefinedObject, format!("column \"{key}\" of {name} does not exist"))
            .hint("key_column names the column holding the subject key."));
    }
    Ok(Target { relid, name, key, key_unique: unique, who })
}

/// (column, class, hierarchy, type, type oid) for every column of a relation.
#[allow(clippy::type_complexity)]
pub(crate) fn columns_of(relid: pg_sys::Oid) -> MsegResult<Vec<(String, Option<String>, Option<String>, String, pg_sys::Oid)>> {
    catalog::select(|c| {
        let mut out = Vec::new();
        for row in c.select(
            "SELECT a.attname::pg_catalog.text, cc.class, cc.hierarchy, pg_catalog.format_type(a.atttypid, NULL), a.atttypid \
             FROM pg_catalog.pg_attribute a LEFT JOIN mseg.column_classes cc \
               ON cc.relid OPERATOR(pg_catalog.=) a.attrelid AND cc.column_name OPERATOR(pg_catalog.=) a.attname \
             WHERE a.attrelid OPERATOR(pg_catalog.=) $1::pg_catalog.oid AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            None,
            &[relid.into()],
        )? {
            out.push((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<String>(2)?,
                row.get::<String>(3)?,
                row.get::<String>(4)?.unwrap_or_default(),
                row.get::<pg_sys::Oid>(5)?.unwrap_or(pg_sys::InvalidOid),
            ));
        }
        Ok(out)
    })
}

/// The quasi columns to use: given ones (checked) or all columns classified quasi.
pub(crate) fn quasi_columns(t: &Target, given: Option<Vec<String>>) -> MsegResult<Vec<QuasiColumn>> {
    let all = columns_of(t.relid)?;
    let pick = |name: &str| -> MsegResult<QuasiColumn> {
        let (n, class, spec, typ, typid) = all.iter().find(|(n, ..)| n == name).ok_or_else(|| {
            MsegError::new(Code::UndefinedObject, format!("column \"{name}\" of {} does not exist", t.name))
                .hint("Name columns of the relation.")
        })?;
        match class.as_deref() {
            Some("direct") => {
                Err(MsegError::new(Code::KAnonymity, format!("column \"{n}\" is a direct identifier, not a quasi identifier"))
                    .detail("Direct identifiers are never released, generalised or not.")
                    .hint("Leave it out; k-anonymity concerns quasi columns."))
            }
            Some("sensitive") => Err(MsegError::new(Code::KAnonymity, format!("column \"{n}\" is sensitive, not a quasi identifier"))
                .hint("Use it as the sensitive attribute of l-diversity instead.")),
            _ => Ok(QuasiColumn { name: n.clone(), spec: spec.clone(), typ: typ.clone(), typid: *typid }),
        }
    };
    let cols = match given {
        Some(list) => list.iter().map(|n| pick(n)).collect::<MsegResult<Vec<_>>>()?,
        None => all
            .iter()
            .filter(|(_, class, ..)| class.as_deref() == Some("quasi"))
            .map(|(n, _, spec, typ, typid)| QuasiColumn { name: n.clone(), spec: spec.clone(), typ: typ.clone(), typid: *typid })
            .collect(),
    };
    if cols.is_empty() {
        return Err(MsegError::new(Code::KAnonymity, format!("{} has no quasi columns", t.name))
            .hint("Classify them with mseg.classify(table, column, 'quasi', hierarchy => …), or pass columns => ARRAY[…]."));
    }
    Ok(cols)
}

/// SQL expression of one column generalised to `level` (level 0: the exact value, as text).
pub(crate) fn generalized_expr(alias: &str, col: &QuasiColumn, level: i32) -> MsegResult<String> {
    let c = format!("{alias}.{}", quote_identifier(&col.name));
    let text = if col.typ == "date" || col.typ.starts_with("timestamp") {
        format!("pg_catalog.to_char({c}, 'YYYY-MM-DD')")
    } else {
        catalog::safe_text(&c, col.typid)
    };
    if level == 0 {
        return Ok(text);
    }
    // a quasi column without a hierarchy has two levels: the value, and * (suppressed)
    let Some(spec) = col.spec.as_deref() else {
        if level == 1 {
            return Ok(format!("CASE WHEN {c} IS NULL THEN NULL ELSE '*' END"));
        }
        return Err(MsegError::new(Code::KAnonymity, format!("level {level} is beyond column \"{}\", which has no hierarchy", col.name))
            .detail("Without a hierarchy a column has level 0 (the value) and 1 (*).")
            .hint("Give it one: mseg.classify(table, column, 'quasi', hierarchy => 'date' | 'integer' | 'prefix' | …)."));
    };
    let h = hierarchy(spec)?;
    if level as usize >= h.levels() {
        return Err(MsegError::new(Code::KAnonymity, format!("level {level} is beyond hierarchy \"{spec}\" of column \"{}\"", col.name))
            .detail(format!("It has levels 0 to {}.", h.levels() - 1)));
    }
    Ok(format!("mseg.generalize({text}, {}, {level})", pgrx::spi::quote_literal(spec)))
}

pub(crate) fn check_levels(cols: &[QuasiColumn], levels: Option<Vec<i32>>) -> MsegResult<Vec<i32>> {
    let levels = levels.unwrap_or_else(|| vec![0; cols.len()]);
    if levels.len() != cols.len() {
        return Err(MsegError::new(Code::KAnonymity, format!("{} levels for {} columns", levels.len(), cols.len()))
            .hint("Give one level per quasi column, in the same order."));
    }
    if let Some(l) = levels.iter().find(|l| **l < 0) {
        return Err(MsegError::new(Code::KAnonymity, format!("level {l} is negative")).hint("Levels start at 0 (the exact value)."));
    }
    Ok(levels)
}

/// Grouping expression: the raw column at level 0 (equal values, equal classes), the typed
/// `generalize` overload above it (no round trip through text for dates and integers).
pub(crate) fn grouping_expr(col: &QuasiColumn, level: i32) -> MsegResult<String> {
    let c = format!("r.{}", quote_identifier(&col.name));
    if level == 0 {
        return Ok(c);
    }
    let e = generalized_expr("r", col, level)?;
    let Some(spec) = col.spec.as_deref() else { return Ok(e) };
    let lit = pgrx::spi::quote_literal(spec);
    Ok(match col.typ.as_str() {
        "date" => format!("mseg.generalize({c}, {lit}, {level})"),
        "smallint" | "integer" | "bigint" if spec.starts_with("integer") => {
            format!("mseg.generalize({c}::pg_catalog.int8, {lit}, {level})")
        }
        _ => e,
    })
}

fn class_query(t: &Target, cols: &[QuasiColumn], levels: &[i32], sensitive: Option<&str>) -> MsegResult<String> {
    let keys = cols.iter().zip(levels).map(|(c, l)| grouping_expr(c, *l)).collect::<MsegResult<Vec<_>>>()?;
    let subjects = if t.key_unique {
        "pg_catalog.count(*)".to_owned() // one row per subject: the cheap count is exact
    } else {
        format!("pg_catalog.count(DISTINCT r.{})", quote_identifier(&t.key))
    };
    let sens = sensitive.map(|s| format!(", pg_catalog.count(DISTINCT r.{})", quote_identifier(s))).unwrap_or_default();
    Ok(format!(
        "SELECT ARRAY[{texts}]::pg_catalog.text[] AS class, {subjects} AS subjects, pg_catalog.count(*) AS rows{sens} \
         FROM {rel} r GROUP BY {list}",
        texts = keys
            .iter()
            .zip(cols.iter().zip(levels))
            .map(|(k, (c, l))| if *l == 0 { catalog::safe_text(k, c.typid) } else { format!("({k})::pg_catalog.text") })
            .collect::<Vec<_>>()
            .join(", "),
        list = keys.join(", "),
        rel = t.name
    ))
}

// ---------------------------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------------------------

/// k of a relation: the smallest equivalence class over the quasi columns (at the given
/// generalisation levels), counted in distinct subjects. 0 for an empty relation.
#[pg_extern(stable, parallel_safe)]
fn k_anonymity(
    relation: Option<PgRelation>,
    columns: default!(Option<Vec<String>>, "NULL"),
    levels: default!(Option<Vec<i32>>, "NULL"),
    key_column: default!(Option<&str>, "NULL"),
) -> i64 {
    boundary(|| {
        let relid = relation.map(|r| r.oid()).ok_or_else(|| MsegError::null_argument("relation"))?;
        let t = target(relid, key_column, catalog::Who::Caller)?;
        let cols = quasi_columns(&t, columns)?;
        let levels = check_levels(&cols, levels)?;
        let q = class_query(&t, &cols, &levels, None)?;
        t.read(|c| {
            Ok(c.select(&format!("SELECT COALESCE(pg_catalog.min(subjects), 0)::pg_catalog.int8 FROM ({q}) x"), None, &[])?
                .first()
                .get_one::<i64>()?
                .unwrap_or(0))
        })
    })
}

/// Every equivalence class with its distinct subjects and rows, smallest first (privileged).
#[pg_extern(stable, parallel_safe)]
fn equivalence_classes(
    relation: Option<PgRelation>,
    columns: default!(Option<Vec<String>>, "NULL"),
    levels: default!(Option<Vec<i32>>, "NULL"),
    key_column: default!(Option<&str>, "NULL"),
) -> TableIterator<'static, (name!(class, Vec<Option<String>>), name!(subjects, i64), name!(rows, i64))> {
    let rows = boundary(|| {
        let relid = relation.map(|r| r.oid()).ok_or_else(|| MsegError::null_argument("relation"))?;
        let t = target(relid, key_column, catalog::Who::Caller)?;
        let cols = quasi_columns(&t, columns)?;
        let levels = check_levels(&cols, levels)?;
        let q = class_query(&t, &cols, &levels, None)?;
        t.read(|c| {
            let mut out = Vec::new();
            for row in c.select(&format!("{q} ORDER BY 2, 1"), None, &[])? {
                out.push((
                    row.get::<Vec<Option<String>>>(1)?.unwrap_or_default(),
                    row.get::<i64>(2)?.unwrap_or(0),
                    row.get::<i64>(3)?.unwrap_or(0),
                ));
            }
            Ok(out)
        })
    });
    TableIterator::new(rows)
}

/// l-diversity: the fewest distinct values of a sensitive column over the classes.
#[pg_extern(stable, parallel_safe)]
fn l_diversity(
    relation: Option<PgRelation>,
    sensitive_column: Option<&str>,
    columns: default!(Option<Vec<String>>, "NULL"),
    levels: default!(Option<Vec<i32>>, "NULL"),
    key_column: default!(Option<&str>, "NULL"),
) -> i64 {
    boundary(|| {
        let relid = relation.map(|r| r.oid()).ok_or_else(|| MsegError::null_argument("relation"))?;
        let sensitive = sensitive_column.ok_or_else(|| MsegError::null_argument("sensitive_column"))?;
        let t = target(relid, key_column, catalog::Who::Caller)?;
        if !columns_of(relid)?.iter().any(|(n, ..)| n == sensitive) {
            return Err(MsegError::new(Code::UndefinedObject, format!("column \"{sensitive}\" of {} does not exist", t.name)));
        }
        let cols = quasi_columns(&t, columns)?;
        let levels = check_levels(&cols, levels)?;
        let q = class_query(&t, &cols, &levels, Some(sensitive))?;
        t.read(|c| {
            Ok(c.select(&format!("SELECT COALESCE(pg_catalog.min(x.count), 0)::pg_catalog.int8 FROM ({q}) x"), None, &[])?
                .first()
                .get_one::<i64>()?
                .unwrap_or(0))
        })
    })
}

// ---------------------------------------------------------------------------------------------
// The anonymiser
// ---------------------------------------------------------------------------------------------

pub(crate) fn check_k(k: i32) -> MsegResult<usize> {
    if k < 2 {
        return Err(MsegError::new(Code::KAnonymity, format!("k must be at least 2, not {k}"))
            .hint("k is the fewest distinct subjects a released group may describe."));
    }
    Ok(k as usize)
}

pub(crate) struct Run {
    pub(crate) subjects: Vec<i64>,
    pub(crate) out: kanon::Anonymized,
}

pub(crate) fn run_anonymizer(
    relid: pg_sys::Oid,
    k: i32,
    columns: Option<Vec<String>>,
    l: Option<i32>,
    sensitive: Option<&str>,
    suppression_limit: f64,
    key_column: Option<&str>,
    algorithm: kanon::Algorithm,
) -> MsegResult<Run> {
    let k = check_k(k)?;
    if !(0.0..=1.0).contains(&suppression_limit) {
        return Err(MsegError::new(Code::KAnonymity, format!("suppression limit {suppression_limit} is outside [0, 1]"))
            .hint("It is the largest fraction of records that may be suppressed, e.g. 0.01."));
    }
    let l = match l {
        None => None,
        Some(l) if l >= 1 => Some(l as usize),
        Some(l) => return Err(MsegError::new(Code::KAnonymity, format!("l must be at least 1, not {l}"))),
    };
    if l.is_some() && sensitive.is_none() {
        return Err(MsegError::new(Code::KAnonymity, "l-diversity needs a sensitive column").hint("Pass sensitive_column => '…'."));
    }
    let t = target(relid, key_column, catalog::Who::Caller)?;
    let cols = quasi_columns(&t, columns)?;
    let mut spec_cols = Vec::new();
    for c in &cols {
        let h = match c.spec.as_deref() {
            Some(spec) => (*hierarchy(spec)?).clone(),
            None => flat_hierarchy(&t, c)?,
        };
        spec_cols.push((c.name.clone(), h));
    }
    let mut a = Anonymizer::new(spec_cols, k, l, suppression_limit).map_err(kanon_error)?.with_algorithm(algorithm);
    let exprs: Vec<String> = cols.iter().map(|c| generalized_expr("r", c, 0)).collect::<MsegResult<Vec<_>>>()?;
    let sens = match sensitive {
        Some(s) => {
            let typid = columns_of(relid)?.into_iter().find(|c| c.0 == s).map(|c| c.4).ok_or_else(|| {
                MsegError::new(Code::UndefinedObject, format!("column \"{}\" of {} does not exist", short(s), t.name))
                    .hint("sensitive_column names a column of the relation.")
            })?;
            catalog::safe_text(&format!("r.{}", quote_identifier(s)), typid)
        }
        None => "NULL::pg_catalog.text".into(),
    };
    // a NULL quasi value is a value of its column's hierarchy (a leaf under *), not a reason to suppress
    let sql = format!(
        "SELECT r.{key}::pg_catalog.int8, ARRAY[{list}]::pg_catalog.text[], {sens} FROM {rel} r",
        key = quote_identifier(&t.key),
        list = exprs.join(", "),
        rel = t.name
    );
    let mut subjects = Vec::new();
    catalog::stream_rows(t.who, &sql, |row| {
        let subject = row.get::<i64>(1)?.unwrap_or(0);
        let values = row.get::<Vec<Option<String>>>(2)?.unwrap_or_default();
        let sensitive = row.get::<String>(3)?;
        subjects.push(subject);
        let texts: Vec<Option<&str>> = values.iter().map(Option::as_deref).collect();
        a.push_text_nullable(subject, &texts, sensitive.as_deref()).map_err(kanon_error)
    })?;
    let out = a.run().map_err(kanon_error)?;
    Ok(Run { subjects, out })
}

/// A column without a hierarchy: every value directly under `*`.
pub(crate) fn flat_hierarchy(t: &Target, c: &QuasiColumn) -> MsegResult<Hierarchy> {
    let expr = generalized_expr("r", c, 0)?;
    let values: Vec<String> = t.read(|cl| {
        let mut v = Vec::new();
        for row in cl.select(&format!("SELECT DISTINCT {expr} FROM {} r WHERE {expr} IS NOT NULL", t.name), None, &[])? {
            v.push(row.get::<String>(1)?.unwrap_or_default());
        }
        Ok(v)
    })?;
    flat_hierarchy_of(values)
}

/// The hierarchy of a column without one, from its distinct non-NULL values (level 0 text):
/// every value directly under `*` (children are ordered by name, so the order given does not matter).
pub(crate) fn flat_hierarchy_of(values: impl IntoIterator<Item = String>) -> MsegResult<Hierarchy> {
    let mut values = values.into_iter().peekable();
    if values.peek().is_none() {
        return Hierarchy::categorical([("-", "*")]).map_err(kanon_error);
    }
    Hierarchy::categorical(values.map(|v| (v, "*".to_owned()))).map_err(kanon_error)
}

fn report_json(r: &kanon::Report, records: usize) -> serde_json::Value {
    serde_json::json!({
        "algorithm": r.algorithm.to_string(),
        "k_required": r.k_required,
        "k_reached": r.k_reached,
        "l_required": r.l_required,
        "l_reached": r.l_reached,
        "records": records,
        "subjects": r.subjects,
        "classes": r.classes,
        "suppressed_records": r.suppressed_records + (records - r.records),
        "suppressed_subjects": r.suppressed_subjects,
        "suppression_limit": r.suppression_limit,
        "ncp": (r.ncp * 1e6).round() / 1e6,
        "discernibility": r.discernibility,
        "levels": r.levels_used.iter().map(|c| serde_json::json!({
            "column": c.column, "min": c.min, "max": c.max, "top": c.top, "ncp": (c.ncp * 1e6).round() / 1e6,
        })).collect::<Vec<_>>(),
    })
}

/// Anonymise a relation: per row, its subject and generalised quasi values (NULL: suppressed;
/// a NULL element: the value was NULL and is released as such). Privileged: the output still
/// carries subject keys.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn anonymize(
    relation: Option<PgRelation>,
    k: Option<i32>,
    columns: default!(Option<Vec<String>>, "NULL"),
    l: default!(Option<i32>, "NULL"),
    sensitive_column: default!(Option<&str>, "NULL"),
    suppression_limit: default!(f64, 0.01),
    key_column: default!(Option<&str>, "NULL"),
) -> TableIterator<'static, (name!(subject_key, i64), name!(quasi, Option<Vec<Option<String>>>))> {
    let rows = boundary(|| {
        let relid = relation.map(|r| r.oid()).ok_or_else(|| MsegError::null_argument("relation"))?;
        let k = k.ok_or_else(|| MsegError::null_argument("k"))?;
        let run = run_anonymizer(relid, k, columns, l, sensitive_column, suppression_limit, key_column, kanon::Algorithm::Mondrian)?;
        let mut released = HashMap::new();
        for (subject, values) in run.out.iter() {
            if let Some(v) = values {
                // the NULL leaf is released as SQL NULL
                released.insert(subject, v.iter().map(|x| (x != kanon::NULL_LABEL).then(|| x.clone())).collect::<Vec<_>>());
            }
        }
        Ok(run.subjects.iter().map(|s| (*s, released.get(s).cloned())).collect::<Vec<_>>())
    });
    TableIterator::new(rows)
}

/// What the anonymiser reaches on a relation (k, l, suppression, information loss, levels),
/// with `algorithm => 'global'` for the full-domain baseline and `'ranges'` for Mondrian with
/// partition-local ranges and sets.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn anonymize_report(
    relation: Option<PgRelation>,
    k: Option<i32>,
    columns: default!(Option<Vec<String>>, "NULL"),
    l: default!(Option<i32>, "NULL"),
    sensitive_column: default!(Option<&str>, "NULL"),
    suppression_limit: default!(f64, 0.01),
    key_column: default!(Option<&str>, "NULL"),
    algorithm: default!(&str, "'mondrian'"),
) -> pgrx::JsonB {
    pgrx::JsonB(boundary(|| {
        let relid = relation.map(|r| r.oid()).ok_or_else(|| MsegError::null_argument("relation"))?;
        let k = k.ok_or_else(|| MsegError::null_argument("k"))?;
        let algorithm = match algorithm {
            "mondrian" => kanon::Algorithm::Mondrian,
            "global" => kanon::Algorithm::GlobalRecoding,
            "ranges" => kanon::Algorithm::Ranges,
            other => {
                return Err(MsegError::new(Code::KAnonymity, format!("unknown algorithm \"{other}\"")).hint(
                    "algorithm is mondrian (along the hierarchies, the default), ranges (each class's own ranges and sets) or global.",
                ))
            }
        };
        let run = run_anonymizer(relid, k, columns, l, sensitive_column, suppression_limit, key_column, algorithm)?;
        Ok(report_json(run.out.report(), run.subjects.len()))
    }))
}

// k-checked views: src/kview.rs
