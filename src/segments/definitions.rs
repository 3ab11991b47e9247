//! Defining, altering and dropping segments; registering sources.

use super::*;

pub fn check_segment_name(name: &str) -> MsegResult<()> {
    catalog::check_name(catalog::NameKind::Segment, name)
}

pub(super) fn check_purpose(purpose: &str) -> MsegResult<()> {
    catalog::require_purpose(purpose)
}

pub(super) fn segment_id(name: &str) -> MsegResult<i32> {
    catalog::select(|c| {
        let t = c.select("SELECT segment_id FROM mseg.segments WHERE name OPERATOR(pg_catalog.=) $1", None, &[name.into()])?;
        if t.is_empty() {
            return Err(MsegError::new(Code::UnknownSegment, format!("segment \"{name}\" does not exist"))
                .hint("mseg.segments lists the segments."));
        }
        Ok(t.first().get_one::<i32>()?.unwrap_or(0))
    })
}

pub(super) fn store_segment(
    existing: Option<i32>,
    name: &str,
    purpose: &str,
    predicate: &str,
    description: Option<&str>,
    a: &Analysis,
) -> MsegResult<i32> {
    let sources: Vec<String> = a.sources.iter().map(|r| catalog::relation_name(*r)).collect();
    catalog::update(|c| {
        let t = match existing {
            None => c.update(
                "INSERT INTO mseg.segments (name, purpose, predicate, canonical, sources, time_dependent, reads_sensitive, \
                 subject_columns, description) \
                 VALUES ($1, $2, $3, $4, $5::pg_catalog.text[]::pg_catalog.regclass[], $6, $7, $8::pg_catalog.text[]::pg_catalog.name[], $9) \
                 RETURNING segment_id",
                None,
                &[
                    name.into(), purpose.into(), predicate.into(), a.canonical.as_str().into(), sources.clone().into(),
                    a.time_dependent.into(), a.reads_sensitive.into(), a.subject_columns.clone().into(), description.into(),
                ],
            )?,
            Some(id) => c.update(
                "UPDATE mseg.segments SET purpose = $2, predicate = $3, canonical = $4, \
                 sources = $5::pg_catalog.text[]::pg_catalog.regclass[], time_dependent = $6, reads_sensitive = $7, \
                 subject_columns = $8::pg_catalog.text[]::pg_catalog.name[], description = COALESCE($9, description), \
                 updated_at = pg_catalog.now() WHERE segment_id OPERATOR(pg_catalog.=) $1 RETURNING segment_id",
                None,
                &[
                    id.into(), purpose.into(), predicate.into(), a.canonical.as_str().into(), sources.clone().into(),
                    a.time_dependent.into(), a.reads_sensitive.into(), a.subject_columns.clone().into(), description.into(),
                ],
            )?,
        };
        Ok(t.first().get_one::<i32>()?.unwrap_or(0))
    })
}

/// Define a segment; returns the number of members it has right away.
#[pg_extern(volatile, parallel_unsafe)]
pub(super) fn define_segment(
    name: Option<&str>,
    purpose: Option<&str>,
    predicate: Option<&str>,
    description: default!(Option<&str>, "NULL"),
) -> i64 {
    boundary(|| {
        let name = name.ok_or_else(|| MsegError::null_argument("name"))?;
        let purpose = purpose.ok_or_else(|| MsegError::null_argument("purpose"))?;
        let predicate = predicate.ok_or_else(|| MsegError::null_argument("predicate"))?;
        check_segment_name(name)?;
        check_purpose(purpose)?;
        let subject = require_subject_table()?;
        if catalog::select(|c| {
            Ok(!c.select("SELECT 1 FROM mseg.segments WHERE name OPERATOR(pg_catalog.=) $1", None, &[name.into()])?.is_empty())
        })? {
            return Err(MsegError::new(Code::DuplicateObject, format!("segment \"{name}\" already exists"))
                .hint("Change it with mseg.alter_segment, or drop it first."));
        }
        let a = analyze(&subject, predicate)?;
        // audit first: the chain head is the first lock every maintenance path takes
        catalog::audit(
            "segment.define",
            name,
            serde_json::json!({
                "purpose": purpose, "predicate": a.canonical, "time_dependent": a.time_dependent, "reads_sensitive": a.reads_sensitive,
            }),
        )?;
        lock_maintained_tables(&subject)?;
        let id = store_segment(None, name, purpose, predicate, description, &a)?;
        ensure_triggers_tree(subject.relid)?;
        // the maintained tables are locked: only consent changes can run alongside
        refresh_all(name, &Scope::Only(vec![id]), LockMode::Table)?;
        let size = segment_size(id)?;
        if a.time_dependent {
            pgrx::notice!(
                "pg_mseg: segment \"{name}\" depends on the current time; schedule mseg.refresh_segments() (e.g. nightly with pg_cron)"
            );
        }
        Ok(size)
    })
}

/// Change a segment's predicate, purpose or description; returns its member count.
#[pg_extern(volatile, parallel_unsafe)]
pub(super) fn alter_segment(
    name: Option<&str>,
    predicate: default!(Option<&str>, "NULL"),
    purpose: default!(Option<&str>, "NULL"),
    description: default!(Option<&str>, "NULL"),
) -> i64 {
    boundary(|| {
        let name = name.ok_or_else(|| MsegError::null_argument("name"))?;
        let id = segment_id(name)?;
        if predicate.is_none() && purpose.is_none() && description.is_none() {
            return Err(MsegError::new(Code::InvalidArgument, "nothing to change").hint("Pass predicate, purpose or description."));
        }
        let (old_predicate, old_purpose) = catalog::select(|c| {
            let t =
                c.select("SELECT predicate, purpose FROM mseg.segments WHERE segment_id OPERATOR(pg_catalog.=) $1", None, &[id.into()])?;
            let row = t.first();
            Ok((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default()))
        })?;
        let predicate = predicate.unwrap_or(&old_predicate);
        let purpose = purpose.unwrap_or(&old_purpose);
        check_purpose(purpose)?;
        let subject = require_subject_table()?;
        let a = analyze(&subject, predicate)?;
        catalog::audit("segment.alter", name, serde_json::json!({"purpose": purpose, "predicate": a.canonical}))?;
        lock_maintained_tables(&subject)?;
        store_segment(Some(id), name, purpose, predicate, description, &a)?;
        refresh_all(name, &Scope::Only(vec![id]), LockMode::Table)?;
        segment_size(id)
    })
}

/// Drop a segment; every member leaves it (recorded as membership events).
#[pg_extern(volatile, parallel_unsafe)]
pub(super) fn drop_segment(name: Option<&str>) -> bool {
    boundary(|| {
        let name = name.ok_or_else(|| MsegError::null_argument("name"))?;
        let id = segment_id(name)?;
        let subject = require_subject_table()?;
        catalog::audit("segment.drop", name, serde_json::json!({"segment_id": id}))?;
        lock_maintained_tables(&subject)?;
        catalog::update(|c| {
            c.update("DELETE FROM mseg.segments WHERE segment_id OPERATOR(pg_catalog.=) $1", None, &[id.into()])?;
            c.update(
                "WITH u AS (UPDATE mseg.memberships SET segments = pg_catalog.array_remove(segments, $1), updated_at = pg_catalog.now() \
                            WHERE $1 OPERATOR(pg_catalog.=) ANY (segments) RETURNING subject_key) \
                 INSERT INTO mseg.membership_events (subject_key, joined, left_segments) SELECT subject_key, '{}', ARRAY[$1] FROM u",
                None,
                &[id.into()],
            )?;
            Ok(())
        })?;
        Ok(true)
    })
}

/// Register a table keyed by the subject (e.g. orders) so predicates may read it.
#[pg_extern(volatile, parallel_unsafe)]
pub(super) fn register_source(table: Option<PgRelation>, subject_key_column: Option<&str>) -> bool {
    boundary(|| {
        let relid = table.map(|t| t.oid()).ok_or_else(|| MsegError::null_argument("table"))?;
        let column = subject_key_column.ok_or_else(|| MsegError::null_argument("subject_key_column"))?;
        let subject = require_subject_table()?;
        let name = catalog::relation_name(relid);
        if relid == subject.relid {
            return Err(MsegError::new(Code::SourceInUse, format!("{name} is the subject table"))
                .hint("Predicates read the subject row directly as s; register other tables as sources."));
        }
        let (relkind, typ) = catalog::select(|c| {
            let t = c.select(
                "SELECT c.relkind::pg_catalog.text, (SELECT a.atttypid::pg_catalog.regtype::pg_catalog.text FROM pg_catalog.pg_attribute a \
                   WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid AND a.attname OPERATOR(pg_catalog.=) $2::pg_catalog.name \
                     AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped) \
                 FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1::pg_catalog.oid",
                None,
                &[relid.into(), column.into()],
            )?;
            let row = t.first();
            Ok((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?))
        })?;
        if relkind != "r" && relkind != "p" {
            return Err(MsegError::new(Code::InvalidTable, format!("{name} is not an ordinary or partitioned table"))
                .hint("Sources are tables; register a view's underlying tables instead."));
        }
        let Some(typ) = typ else {
            return Err(MsegError::new(Code::UndefinedObject, format!("column \"{column}\" of {name} does not exist"))
                .hint("Name the column that holds the subject key."));
        };
        // the key column holds the subject key: an integer for an integer-keyed subject table, else
        // the subject key's own type (uuid, text…)
        let integer = |t: &str| ["smallint", "integer", "bigint"].contains(&t);
        let fits = if subject.mapped { subject.key_type.split('(').next() == Some(typ.as_str()) } else { integer(&typ) };
        if !fits {
            return Err(MsegError::new(Code::InvalidTable, format!("column \"{column}\" of {name} has type {typ}")).hint(format!(
                "The subject key column of a source has the subject key's type ({}).",
                if subject.mapped { subject.key_type.as_str() } else { "an integer" }
            )));
        }
        // DDL on the table: the caller must own it
        let owner_ok = Spi::get_one_with_args::<bool>(
            "SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE') FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1::pg_catalog.oid",
            &[relid.into()],
        )?
        .unwrap_or(false);
        if !owner_ok {
            return Err(MsegError::new(Code::InsufficientPrivilege, format!("must be owner of table {name}")));
        }
        let inserted = catalog::update(|c| {
            Ok(!c
                .update(
                    "INSERT INTO mseg.sources (relid, key_column) VALUES ($1::pg_catalog.oid::pg_catalog.regclass, $2) \
                     ON CONFLICT (relid) DO NOTHING RETURNING relid",
                    None,
                    &[relid.into(), column.into()],
                )?
                .is_empty())
        })?;
        if !inserted {
            return Err(MsegError::new(Code::DuplicateObject, format!("{name} is already a registered source"))
                .hint("mseg.sources lists the sources."));
        }
        ensure_triggers_tree(relid)?;
        // upkeep reads it as mseg_upkeep (a grant is a catalog change: it runs none of the table's code)
        catalog::update(|c| {
            c.update(&format!("GRANT SELECT ON {name} TO mseg_upkeep"), None, &[])?;
            Ok(())
        })?;
        catalog::audit("source.register", &name, serde_json::json!({"key_column": column}))?;
        Ok(true)
    })
}

#[pg_extern(volatile, parallel_unsafe)]
pub(super) fn unregister_source(table: Option<PgRelation>) -> bool {
    boundary(|| {
        let relid = table.map(|t| t.oid()).ok_or_else(|| MsegError::null_argument("table"))?;
        let name = catalog::relation_name(relid);
        let users: Vec<String> = catalog::select(|c| {
            let mut v = Vec::new();
            for row in c.select(
                "SELECT name FROM mseg.segments WHERE $1::pg_catalog.oid::pg_catalog.regclass OPERATOR(pg_catalog.=) ANY (sources) ORDER BY name",
                None,
                &[relid.into()],
            )? {
                v.push(row.get::<String>(1)?.unwrap_or_default());
            }
            Ok(v)
        })?;
        if !users.is_empty() {
            return Err(MsegError::new(Code::SourceInUse, format!("{name} is read by segments"))
                .detail(format!("Used by: {}.", users.join(", ")))
                .hint("Drop or alter those segments first."));
        }
        let deleted = catalog::update(|c| {
            Ok(!c
                .update(
                    "DELETE FROM mseg.sources WHERE relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid RETURNING relid",
                    None,
                    &[relid.into()],
                )?
                .is_empty())
        })?;
        if !deleted {
            return Err(
                MsegError::new(Code::UndefinedObject, format!("{name} is not a registered source")).hint("mseg.sources lists the sources.")
            );
        }
        drop_triggers_tree(relid)?;
        catalog::update(|c| {
            c.update(&format!("REVOKE SELECT ON {name} FROM mseg_upkeep"), None, &[])?;
            Ok(())
        })?;
        catalog::audit("source.unregister", &name, serde_json::json!({}))?;
        Ok(true)
    })
}
