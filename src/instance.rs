//! Which running copy of a controller database makes its exports.
//!
//! A controller's dumps carry sequence numbers its partners check (replays and gaps are refused),
//! and every copy of the database signs with the same key (it is derived from the same key file).
//! A restored backup, a promoted standby or a `pg_dump` copy holds an older sequence than the
//! original may have reached, and would send a partner a second, different dump 6. So the first
//! export records the database's identity — the cluster's system identifier, the WAL timeline it
//! writes and the database OID — in `mseg.instance_identity` (kept by pg_dump), and every export
//! compares: a copy (another system identifier or database OID: `pg_dump`/`pg_restore`, a copy
//! made from a template) or a fork of the history (another timeline: point-in-time recovery, a
//! promoted standby) must be accepted explicitly with `mseg.accept_copy()` before it exports.
//! A file-level copy of the data directory started as a second primary keeps all three and is not
//! detected (see docs/operations.md).

use pgrx::prelude::*;
use serde_json::json;

use crate::catalog;
use crate::error::{boundary, Code, MsegError, Result};

/// (system identifier, timeline, database OID) of this server and database now.
fn current() -> Result<(String, i32, u32)> {
    // SAFETY: reading PostgreSQL globals and control data.
    unsafe {
        if pg_sys::RecoveryInProgress() {
            return Err(MsegError::new(Code::CopyNotAccepted, "this server is a standby: exports are made on the primary")
                .detail("A standby serves segment sizes, k-views and the verify functions read-only.")
                .hint("Export on the primary, or promote this server and run SELECT mseg.accept_copy()."));
        }
        Ok((pg_sys::GetSystemIdentifier().to_string(), pg_sys::GetWALInsertionTimeLine() as i32, u32::from(pg_sys::MyDatabaseId)))
    }
}

fn describe(id: &(String, i32, u32)) -> String {
    format!("system {}, timeline {}, database OID {}", id.0, id.1, id.2)
}

/// The identity recorded by the first export (or the last accepted copy), if any.
fn recorded() -> Result<Option<(String, i32, u32)>> {
    catalog::select(|c| {
        let t = c.select("SELECT system_identifier, timeline, database_oid FROM mseg.instance_identity", None, &[])?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok(Some((
            r.get::<String>(1)?.unwrap_or_default(),
            r.get::<i32>(2)?.unwrap_or(0),
            r.get::<pg_sys::Oid>(3)?.map(u32::from).unwrap_or(0),
        )))
    })
}

/// Before an export: the identity recorded by the first export must be this one.
pub fn check_before_export() -> Result<()> {
    let now = current()?;
    let recorded = recorded()?;
    match recorded {
        None => record(&now, "instance.first_export", None),
        Some(r) if r == now => Ok(()),
        Some(r) => {
            let what = if r.0 != now.0 || r.2 != now.2 {
                "a restored or cloned copy of the database that made the earlier exports"
            } else {
                "on another timeline than the earlier exports (restored to a point in time, or a promoted standby)"
            };
            Err(MsegError::new(Code::CopyNotAccepted, format!("this database is {what}"))
                .detail(format!("The earlier exports were made by {}; this is {}. Its partners may already hold dumps this copy does not know, with the sequence numbers it would use next.", describe(&r), describe(&now)))
                .hint("If this copy is the one that exports from now on (the original is gone or will not export again), run SELECT mseg.accept_copy(); partners then get the next sequence numbers from here."))
        }
    }
}

fn record(id: &(String, i32, u32), action: &str, previous: Option<&(String, i32, u32)>) -> Result<()> {
    catalog::update(|c| {
        c.update("DELETE FROM mseg.instance_identity", None, &[])?;
        c.update(
            "INSERT INTO mseg.instance_identity (system_identifier, timeline, database_oid) VALUES ($1, $2, $3)",
            None,
            &[id.0.as_str().into(), id.1.into(), pg_sys::Oid::from(id.2).into()],
        )?;
        Ok(())
    })?;
    catalog::audit(action, "", json!({"now": describe(id), "before": previous.map(describe)}))
}

/// Accept this database as the one that exports from now on (after a restore, a copy, or the
/// promotion of a standby); audited. Returns the identity recorded.
#[pg_extern(volatile, parallel_unsafe)]
fn accept_copy() -> String {
    boundary(|| {
        let now = current()?;
        let previous = recorded()?;
        record(&now, "instance.accept_copy", previous.as_ref())?;
        Ok(describe(&now))
    })
}
