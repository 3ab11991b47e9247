//! Pool segments (trusted-party side): cross-controller segments over the pooled Variant Twins.
//!
//! A pool segment is a boolean predicate over a pooled twin (`mseg.pool_twins`, alias `t`: its
//! generalised `quasi` values, the controller's exported `segments`, `legal_basis`, `policy`),
//! checked by the same parser-based rules as local segments, and bound to a purpose: a twin is a
//! member only while its embedded policy allows that purpose. Membership is stored in
//! `pool_twins.pool_segments`, recomputed for a controller's twins by every import that changes
//! them and for all twins when a pool segment is defined; expiry is applied where membership is
//! read (`mseg.pool_segment_sizes`, `mseg.pool_segment_members`). Person-level pool segments
//! (predicates over a person's linked twins together) are in src/pool_persons.rs; both levels
//! share `mseg.pool_segments` and its namespace.

use pgrx::prelude::*;
use pgrx::spi::quote_literal;

use crate::catalog;
use crate::error::{boundary, Code, MsegError, Result as MsegResult};
use crate::segments;

const POOL_TWINS: &str = "mseg.pool_twins";

/// The oid of one of the pool's relations (`mseg.pool_twins`, `mseg.pool_persons`).
pub(crate) fn relid_of(relation: &str) -> MsegResult<pg_sys::Oid> {
    catalog::select(|c| {
        Ok(c.select("SELECT $1::pg_catalog.regclass::pg_catalog.oid", None, &[relation.into()])?
            .first()
            .get_one::<pg_sys::Oid>()?
            .unwrap_or(pg_sys::InvalidOid))
    })
}

/// The two levels of pool segments: a predicate over one pooled twin (alias `t`), or over all of
/// one person's twins together (alias `p`, src/pool_persons.rs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Twin,
    Person,
}

impl Level {
    /// As `mseg.pool_segments.level` says it.
    fn name(self) -> &'static str {
        match self {
            Level::Twin => "twin",
            Level::Person => "person",
        }
    }

    fn relation(self) -> &'static str {
        match self {
            Level::Twin => POOL_TWINS,
            Level::Person => crate::pool_persons::POOL_PERSONS,
        }
    }

    pub(crate) fn hint(self, e: MsegError) -> MsegError {
        e.hint(match self {
            Level::Twin => {
                "A pool segment predicate is a boolean SQL expression over a pooled twin (alias t), e.g. \
                 'runners' = ANY (t.segments) AND t.quasi->>'postcode' LIKE '10%'."
            }
            Level::Person => {
                "A person segment predicate is a boolean SQL expression over a person (alias p, mseg.pool_persons), e.g. \
                 'acme:runners' = ANY (p.segments) AND 'gymco:members' = ANY (p.segments)."
            }
        })
    }
}

/// The checks every pool segment definition shares, at either level: its name and purpose, and a
/// predicate that passes the allowlist, reads the level's relation only and does not depend on the
/// time (memberships are recomputed on import only). Returns the relation's oid and the predicate.
pub(crate) fn check_definition(
    level: Level,
    name: &str,
    purpose: &str,
    predicate: &str,
) -> MsegResult<(pg_sys::Oid, segments::CheckedPredicate)> {
    segments::check_segment_name(name)?;
    segments::check_segment_name(purpose).map_err(|_| {
        MsegError::new(Code::InvalidArgument, format!("invalid purpose \"{purpose}\""))
            .hint("Name a purpose the controllers' twins carry in their policy, e.g. direct_marketing.")
    })?;
    let (alias, reads, memberships) = match level {
        Level::Twin => ("t", "A pool segment reads the pooled twin only.", "Pool"),
        Level::Person => ("p", "A person segment reads the pooled person only.", "Person"),
    };
    let relid = relid_of(level.relation())?;
    let checked = segments::check_predicate(level.relation(), relid, alias, predicate).map_err(|e| level.hint(e))?;
    if let Some(other) = checked.other_relations(relid).first() {
        return Err(level.hint(
            MsegError::new(Code::InvalidPredicate, format!("the predicate reads {}", catalog::relation_name(*other))).detail(reads),
        ));
    }
    if checked.time_dependent() {
        return Err(level.hint(
            MsegError::new(Code::InvalidPredicate, "the predicate depends on the current time")
                .detail(format!("{memberships} memberships are recomputed on import only; expiry is applied by the twins' policies.")),
        ));
    }
    Ok((relid, checked))
}

/// The membership expression when no pool segment of the level exists.
const NO_SEGMENTS: &str = "'{}'::pg_catalog.text[]";

/// The array of the names of the `level`'s pool segments a row (alias `t` or `p`) belongs to: the
/// predicate holds and the row allows the segment's purpose (a twin's policy; every twin of a person).
/// The segments are read now, in name order.
pub(crate) fn membership_expr(level: Level) -> MsegResult<String> {
    let segments: Vec<(String, String, String)> = catalog::select(|c| {
        let mut v = Vec::new();
        for row in c.select(
            "SELECT name, purpose, canonical FROM mseg.pool_segments WHERE level OPERATOR(pg_catalog.=) $1 ORDER BY name",
            None,
            &[level.name().into()],
        )? {
            v.push((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<String>(2)?.unwrap_or_default(),
                row.get::<String>(3)?.unwrap_or_default(),
            ));
        }
        Ok(v)
    })?;
    if segments.is_empty() {
        return Ok(NO_SEGMENTS.to_owned());
    }
    let cases: Vec<String> = segments
        .iter()
        .map(|(name, purpose, canonical)| {
            let p = quote_literal(purpose);
            let allowed = match level {
                Level::Twin => format!("(t.policy OPERATOR(pg_catalog.->) 'purposes') OPERATOR(pg_catalog.?) {p}"),
                Level::Person => format!("{p} OPERATOR(pg_catalog.=) ANY (p.purposes)"),
            };
            format!("CASE WHEN ({canonical}) AND {allowed} THEN {n} END", n = quote_literal(name))
        })
        .collect();
    Ok(format!("pg_catalog.array_remove(ARRAY[{}]::pg_catalog.text[], NULL::pg_catalog.text)", cases.join(", ")))
}

/// Recompute the pool segments of the twins of `controller` (all twins when None); returns the
/// number of twins whose set changed.
pub fn recompute(controller: Option<&str>) -> MsegResult<i64> {
    let expr = membership_expr(Level::Twin)?;
    if expr == NO_SEGMENTS {
        // no twin holds a name when none is defined (drop_pool_segment removes it from every
        // twin, a new twin starts with none): nothing to scan for
        return Ok(0);
    }
    let filter = match controller {
        Some(id) => format!("t.controller OPERATOR(pg_catalog.=) {} AND ", quote_literal(id)),
        None => String::new(),
    };
    let sql = format!("UPDATE {POOL_TWINS} t SET pool_segments = {expr} WHERE {filter}t.pool_segments IS DISTINCT FROM {expr}");
    // evaluated as mseg_upkeep, never as a superuser: the predicates passed the allowlist, and even
    // a construct it missed would run without elevated rights
    catalog::as_upkeep(|| Spi::connect_mut(|c| Ok(c.update(&sql, None, &[])?.len() as i64)))
}

/// Define a pool segment over the pooled twins; returns its number of members now.
#[pg_extern(volatile, parallel_unsafe)]
fn define_pool_segment(
    name: Option<&str>,
    purpose: Option<&str>,
    predicate: Option<&str>,
    description: default!(Option<&str>, "NULL"),
) -> i64 {
    boundary(|| {
        let name = name.ok_or_else(|| MsegError::null_argument("name"))?;
        let purpose = purpose.ok_or_else(|| MsegError::null_argument("purpose"))?;
        let predicate = predicate.ok_or_else(|| MsegError::null_argument("predicate"))?;
        let (_, checked) = check_definition(Level::Twin, name, purpose, predicate)?;
        let inserted = catalog::update(|c| {
            Ok(!c
                .update(
                    "INSERT INTO mseg.pool_segments (name, purpose, predicate, canonical, description) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (name) DO NOTHING RETURNING name",
                    None,
                    &[name.into(), purpose.into(), predicate.into(), checked.canonical.as_str().into(), description.into()],
                )?
                .is_empty())
        })?;
        if !inserted {
            return Err(MsegError::new(Code::DuplicateObject, format!("pool segment \"{name}\" already exists"))
                .hint("Drop it first with mseg.drop_pool_segment."));
        }
        catalog::audit("pool_segment.define", name, serde_json::json!({"purpose": purpose, "predicate": checked.canonical}))?;
        recompute(None)?;
        // person-level segments may read the persons' twin-level pool segments
        crate::pool_persons::refresh(crate::pool_persons::Scope::All, false)?;
        members(name)
    })
}

/// Members now, by the same definition as mseg.pool_segment_members (policy not expired).
fn members(name: &str) -> MsegResult<i64> {
    catalog::select(|c| {
        Ok(c.select("SELECT pg_catalog.count(*) FROM mseg.pool_segment_members($1)", None, &[name.into()])?
            .first()
            .get_one::<i64>()?
            .unwrap_or(0))
    })
}

/// Drop a pool segment of either level; its memberships go with it.
#[pg_extern(volatile, parallel_unsafe)]
fn drop_pool_segment(name: Option<&str>) -> bool {
    boundary(|| {
        let name = name.ok_or_else(|| MsegError::null_argument("name"))?;
        let level = catalog::update(|c| {
            let t =
                c.update("DELETE FROM mseg.pool_segments WHERE name OPERATOR(pg_catalog.=) $1 RETURNING level", None, &[name.into()])?;
            let level = if t.is_empty() { None } else { t.first().get_one::<String>()? };
            let table = match level.as_deref() {
                None => return Ok(None),
                Some("person") => {
                    "mseg.pool_persons SET person_segments = pg_catalog.array_remove(person_segments, $1) \
                     WHERE $1 OPERATOR(pg_catalog.=) ANY (person_segments)"
                }
                Some(_) => {
                    "mseg.pool_twins SET pool_segments = pg_catalog.array_remove(pool_segments, $1) \
                     WHERE $1 OPERATOR(pg_catalog.=) ANY (pool_segments)"
                }
            };
            c.update(&format!("UPDATE {table}"), None, &[name.into()])?;
            Ok(level)
        })?;
        let Some(level) = level else {
            return Err(MsegError::new(Code::UnknownSegment, format!("pool segment \"{name}\" does not exist"))
                .hint("mseg.pool_segments lists the pool segments."));
        };
        if level == "twin" {
            // the persons' pool_segments lose it; person segments reading them are evaluated again
            crate::pool_persons::refresh(crate::pool_persons::Scope::All, false)?;
        } else {
            crate::pool_persons::drop_if_unused()?;
        }
        catalog::audit("pool_segment.drop", name, serde_json::json!({}))?;
        Ok(true)
    })
}
