//! Person-level pool segments (trusted party): segments over persons, not twins.
//!
//! A person is the set of pooled twins sharing a link (`mseg.pool_links.person`, the OPRF output
//! of their matching identifier); an unlinked twin is a person of its own, keyed
//! `twin:controller:pseudonym` (no OPRF output, base64, has a colon). `mseg.pool_twin_persons`
//! gives every twin its person key. `mseg.pool_persons` holds one row per person — its
//! controllers, `controller:segment` for every exported segment of any of its twins, the twin-level
//! pool segments of its twins, its number of twins, the purposes every one of its twins allows, its
//! earliest expiry — and the person-level pool segments it is in (`person_segments`).
//!
//! A person-level segment (`mseg.pool_segments.level = 'person'`) is a predicate over that row
//! (alias `p`), checked by the same allowlist as every predicate and evaluated as `mseg_upkeep`; a
//! person is a member while the predicate holds and the segment's purpose is among its `purposes`
//! (every twin allows it); expiry is applied where membership is read (no twin expired).
//!
//! Kept exact in two set-based statements per change ([`refresh`]): one rebuilds the rows of the
//! persons a change can touch (all of them, or those with a twin of one controller, before or
//! after the change) from the pooled twins and links, deleting the persons gone and writing only
//! the rows that differ; one evaluates the person-level predicates over the rows written (or over
//! every row when a person segment was defined). A predicate reads its own row only and no other
//! person segment, so an unchanged row keeps its memberships. The table is kept only while a
//! person-level segment exists (the first one's definition builds it, the last one's drop empties
//! it): nothing else reads it, and an import at a trusted party without person segments pays
//! nothing for it (bench/twins: the rebuild was most of a 200 000-twin import).

use pgrx::prelude::*;

use crate::catalog;
use crate::error::{boundary, Code, MsegError, Result as MsegResult};
use crate::pool::{self, Level};

pub(crate) const POOL_PERSONS: &str = "mseg.pool_persons";

/// The rows `mseg.pool_persons` should hold for the twins in `twins` (a CTE over
/// mseg.pool_twin_persons), as the CTE `wanted`.
const WANTED: &str = "\
     base AS ( \
       SELECT w.person, pg_catalog.array_agg(DISTINCT w.controller::pg_catalog.text COLLATE \"C\") AS controllers, \
              pg_catalog.count(*)::pg_catalog.int4 AS twins, pg_catalog.min(w.expires_at) AS expires_at \
       FROM twins w GROUP BY w.person), \
     segs AS ( \
       SELECT w.person, pg_catalog.array_agg(DISTINCT (w.controller OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) s.name) COLLATE \"C\") AS segments \
       FROM twins w, pg_catalog.unnest(w.segments) s(name) GROUP BY w.person), \
     pools AS ( \
       SELECT w.person, pg_catalog.array_agg(DISTINCT s.name COLLATE \"C\") AS pool_segments \
       FROM twins w, pg_catalog.unnest(w.pool_segments) s(name) GROUP BY w.person), \
     allowed AS ( \
       SELECT a.person, pg_catalog.array_agg(a.purpose ORDER BY a.purpose) AS purposes \
       FROM (SELECT w.person, u.purpose COLLATE \"C\" AS purpose, pg_catalog.count(*) AS n FROM twins w \
             CROSS JOIN LATERAL (SELECT DISTINCT e FROM pg_catalog.jsonb_array_elements_text( \
                 CASE WHEN pg_catalog.jsonb_typeof(w.policy OPERATOR(pg_catalog.->) 'purposes') OPERATOR(pg_catalog.=) 'array' \
                      THEN w.policy OPERATOR(pg_catalog.->) 'purposes' ELSE '[]'::pg_catalog.jsonb END) e) u(purpose) \
             GROUP BY 1, 2) a \
       JOIN base b ON b.person OPERATOR(pg_catalog.=) a.person \
       WHERE a.n OPERATOR(pg_catalog.=) b.twins \
       GROUP BY a.person), \
     wanted AS ( \
       SELECT b.person, b.controllers, COALESCE(s.segments, '{}') AS segments, COALESCE(o.pool_segments, '{}') AS pool_segments, \
              b.twins, COALESCE(a.purposes, '{}') AS purposes, b.expires_at \
       FROM base b \
       LEFT JOIN segs s ON s.person OPERATOR(pg_catalog.=) b.person \
       LEFT JOIN pools o ON o.person OPERATOR(pg_catalog.=) b.person \
       LEFT JOIN allowed a ON a.person OPERATOR(pg_catalog.=) b.person)";

/// Delete the persons in scope that are gone, write the rows that differ; returns the number of
/// persons deleted and the keys of the rows written. `$1`, when `scoped`: a controller.
fn rebuild_sql(scoped: bool) -> String {
    let (scope, twins, in_scope) = if scoped {
        (
            // the persons a change of one controller's twins or links can touch: those that had a
            // twin there before (as the table still says) and those that have one now
            "scope AS ( \
               SELECT p.person FROM mseg.pool_persons p WHERE $1 OPERATOR(pg_catalog.=) ANY (p.controllers) \
               UNION \
               SELECT w.person FROM mseg.pool_twin_persons w WHERE w.controller OPERATOR(pg_catalog.=) $1), ",
            "twins AS (SELECT w.* FROM mseg.pool_twin_persons w WHERE w.person IN (SELECT s.person FROM scope s)), ",
            "p.person IN (SELECT s.person FROM scope s) AND ",
        )
    } else {
        ("", "twins AS (SELECT w.* FROM mseg.pool_twin_persons w), ", "")
    };
    format!(
        "WITH {scope}{twins}{WANTED}, \
         gone AS ( \
           DELETE FROM {POOL_PERSONS} p WHERE {in_scope}NOT EXISTS (SELECT 1 FROM wanted w WHERE w.person OPERATOR(pg_catalog.=) p.person) \
           RETURNING p.person), \
         written AS ( \
           INSERT INTO {POOL_PERSONS} AS p (person, controllers, segments, pool_segments, twins, purposes, expires_at) \
           SELECT w.person, w.controllers, w.segments, w.pool_segments, w.twins, w.purposes, w.expires_at FROM wanted w \
           ON CONFLICT (person) DO UPDATE SET controllers = EXCLUDED.controllers, segments = EXCLUDED.segments, \
               pool_segments = EXCLUDED.pool_segments, twins = EXCLUDED.twins, purposes = EXCLUDED.purposes, expires_at = EXCLUDED.expires_at \
           WHERE (p.controllers, p.segments, p.pool_segments, p.twins, p.purposes, p.expires_at) \
                 IS DISTINCT FROM (EXCLUDED.controllers, EXCLUDED.segments, EXCLUDED.pool_segments, EXCLUDED.twins, EXCLUDED.purposes, EXCLUDED.expires_at) \
           RETURNING p.person) \
         SELECT (SELECT pg_catalog.count(*) FROM gone), ARRAY(SELECT w.person::pg_catalog.text FROM written w)"
    )
}

/// Which persons a refresh rebuilds.
#[derive(Clone, Copy)]
pub enum Scope<'a> {
    /// every person (a purge, a twin-level pool segment defined or dropped)
    All,
    /// the persons with a twin of this controller before or after the change (an import of its
    /// dump or of its linkage)
    Controller(&'a str),
}

/// Whether any person-level segment is defined.
fn person_segments_exist() -> MsegResult<bool> {
    catalog::select(|c| {
        Ok(c.select("SELECT 1 FROM mseg.pool_segments WHERE level OPERATOR(pg_catalog.=) 'person' LIMIT 1", None, &[])?.len() > 0)
    })
}

/// Empty `mseg.pool_persons` when no person-level segment is left (it exists for them alone: an
/// import without one pays nothing for persons). Returns the number of rows deleted.
pub fn drop_if_unused() -> MsegResult<i64> {
    if person_segments_exist()? {
        return Ok(0);
    }
    catalog::update(|c| Ok(c.update("DELETE FROM mseg.pool_persons", None, &[])?.len() as i64))
}

/// Bring `mseg.pool_persons` up to date for `scope`; with `every_predicate`, evaluate the person
/// segments over every person (a person segment was defined), else over the rows written only.
/// The table is kept only while a person-level segment exists (defining the first one builds it
/// whole, `every_predicate`). Returns the number of persons deleted or written.
pub fn refresh(scope: Scope<'_>, every_predicate: bool) -> MsegResult<i64> {
    if !every_predicate && !person_segments_exist()? {
        return drop_if_unused();
    }
    let (gone, written): (i64, Vec<String>) = catalog::update(|c| {
        let (sql, args) = match scope {
            Scope::All => (rebuild_sql(false), vec![]),
            Scope::Controller(id) => (rebuild_sql(true), vec![id.into()]),
        };
        let t = c.update(&sql, None, &args)?;
        let row = t.first();
        Ok((row.get::<i64>(1)?.unwrap_or(0), row.get::<Vec<String>>(2)?.unwrap_or_default()))
    })?;
    // here a person segment exists (or is being defined): evaluate them over the rows written
    if !every_predicate && written.is_empty() {
        return Ok(gone);
    }
    let expr = pool::membership_expr(Level::Person)?;
    let (filter, args) = if every_predicate {
        (String::new(), vec![])
    } else {
        ("p.person OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[]) AND ".to_owned(), vec![written.clone().into()])
    };
    let sql = format!("UPDATE {POOL_PERSONS} p SET person_segments = {expr} WHERE {filter}p.person_segments IS DISTINCT FROM {expr}");
    // as mseg_upkeep, like the twin-level predicates (src/pool.rs)
    catalog::as_upkeep(|| Spi::connect_mut(|c| Ok(c.update(&sql, None, &args).map(|_| ())?)))?;
    Ok(gone + written.len() as i64)
}

/// The column number of `pool_persons.person_segments` (a predicate may not read it).
fn person_segments_attnum(relid: pg_sys::Oid) -> MsegResult<i32> {
    catalog::select(|c| {
        Ok(c.select(
            "SELECT attnum::pg_catalog.int4 FROM pg_catalog.pg_attribute \
             WHERE attrelid OPERATOR(pg_catalog.=) $1 AND attname OPERATOR(pg_catalog.=) 'person_segments'",
            None,
            &[relid.into()],
        )?
        .first()
        .get_one::<i32>()?
        .unwrap_or(0))
    })
}

/// Define a person-level pool segment over the pooled persons; returns its number of member
/// persons now.
#[pg_extern(volatile, parallel_unsafe)]
fn define_person_segment(
    name: Option<&str>,
    purpose: Option<&str>,
    predicate: Option<&str>,
    description: default!(Option<&str>, "NULL"),
) -> i64 {
    boundary(|| {
        let name = name.ok_or_else(|| MsegError::null_argument("name"))?;
        let purpose = purpose.ok_or_else(|| MsegError::null_argument("purpose"))?;
        let predicate = predicate.ok_or_else(|| MsegError::null_argument("predicate"))?;
        let (relid, checked) = pool::check_definition(Level::Person, name, purpose, predicate)?;
        let own = person_segments_attnum(relid)?;
        let reads_memberships = checked.columns_read(relid).iter().any(|&col| col == own || col == 0);
        if reads_memberships {
            return Err(Level::Person.hint(
                MsegError::new(Code::InvalidPredicate, "the predicate reads p.person_segments")
                    .detail("A person segment may not depend on other person segments; name their conditions instead."),
            ));
        }
        let inserted = catalog::update(|c| {
            Ok(!c
                .update(
                    "INSERT INTO mseg.pool_segments (name, purpose, predicate, canonical, description, level) \
                     VALUES ($1, $2, $3, $4, $5, 'person') ON CONFLICT (name) DO NOTHING RETURNING name",
                    None,
                    &[name.into(), purpose.into(), predicate.into(), checked.canonical.as_str().into(), description.into()],
                )?
                .is_empty())
        })?;
        if !inserted {
            return Err(MsegError::new(Code::DuplicateObject, format!("pool segment \"{name}\" already exists"))
                .hint("Pool segments of both levels share one namespace; drop it first with mseg.drop_pool_segment."));
        }
        catalog::audit(
            "pool_segment.define",
            name,
            serde_json::json!({"purpose": purpose, "predicate": checked.canonical, "level": "person"}),
        )?;
        refresh(Scope::All, true)?;
        catalog::select(|c| {
            Ok(c.select("SELECT pg_catalog.count(*) FROM mseg.pool_segment_persons($1)", None, &[name.into()])?
                .first()
                .get_one::<i64>()?
                .unwrap_or(0))
        })
    })
}

/// Rebuild `mseg.pool_persons` from the pooled twins and links (internal: the purge of expired
/// twins and the upgrade call it); returns the number of persons deleted or written.
#[pg_extern(volatile, parallel_unsafe, name = "_refresh_pool_persons")]
fn refresh_pool_persons() -> i64 {
    boundary(|| refresh(Scope::All, false))
}
