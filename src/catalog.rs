//! Reads and writes of pg_mseg's own configuration tables.
//!
//! Application roles have no privilege on these tables, yet the extension's triggers (which run
//! as whichever role wrote the row) must read them. So every statement here runs through
//! [`as_owner`]: the bootstrap superuser with `search_path` pinned to `pg_catalog, pg_temp` and a
//! security-restricted context, with fixed SQL text whose every name and operator is qualified.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::error::{Code, MsegError, Result};

/// Restores user id, security context and GUC nest level, also when an error unwinds.
struct OwnerGuard {
    saved_user: pg_sys::Oid,
    saved_context: i32,
    guc_nest_level: i32,
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        // SAFETY: restores exactly what `as_owner` saved, in reverse order.
        unsafe {
            pg_sys::SetUserIdAndSecContext(self.saved_user, self.saved_context);
            pg_sys::AtEOXact_GUC(true, self.guc_nest_level);
        }
    }
}

/// Run `f` as the bootstrap superuser with a pinned, hijack-proof search_path.
pub fn as_owner<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let guard = unsafe {
        let mut saved_user = pg_sys::InvalidOid;
        let mut saved_context = 0;
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        let guc_nest_level = pg_sys::NewGUCNestLevel();
        let guard = OwnerGuard { saved_user, saved_context, guc_nest_level };
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        pg_sys::SetUserIdAndSecContext(
            pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID),
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32 | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
        guard
    };
    let result = f();
    drop(guard);
    result
}

/// Run `f` with the setting `name` = `value` (restored afterwards, also on error).
pub fn with_setting<T>(name: &CStr, value: &CStr, f: impl FnOnce() -> Result<T>) -> Result<T> {
    struct Restore(i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: pops exactly the nest level pushed below.
            unsafe { pg_sys::AtEOXact_GUC(true, self.0) }
        }
    }
    let _restore = unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        Restore(level)
    };
    f()
}

/// Run `f` with `search_path` set to `path`.
pub fn with_search_path<T>(path: &CStr, f: impl FnOnce() -> Result<T>) -> Result<T> {
    with_setting(c"search_path", path, f)
}

/// Run a read-only query as owner and hand the client to `f`.
pub fn select<T>(f: impl FnOnce(&SpiClient<'_>) -> Result<T>) -> Result<T> {
    as_owner(|| Spi::connect(|client| f(&client)))
}

/// Stream the rows of a read-only query as owner, in batches, to `each` (constant memory).
pub fn stream_as_owner(sql: &str, mut each: impl FnMut(&pgrx::spi::SpiHeapTupleData<'_>) -> Result<()>) -> Result<()> {
    as_owner(|| {
        Spi::connect(|client| {
            let mut cursor = client.open_cursor(sql, &[]);
            loop {
                let batch = cursor.fetch(10_000)?;
                if batch.is_empty() {
                    return Ok(());
                }
                for row in batch {
                    each(&row)?;
                }
            }
        })
    })
}

/// Run a read-only query as owner and hand each row to `each` as the executor produces it: the
/// row's datums and null flags, valid only during the call (copy what you keep). A custom
/// `DestReceiver` (SPI_execute_extended with `dest`): no tuple table, no copy of any row, no
/// cursor. The query runs read-only under the calling statement's snapshot, so several such
/// reads of one caller are consistent with each other. The first error `each` returns stops the
/// query and is returned; a panic in `each` is raised as an ERROR from the row receiver.
pub fn for_each_row_as_owner(sql: &str, mut each: impl FnMut(&[pg_sys::Datum], &[bool]) -> Result<()>) -> Result<()> {
    let sql = std::ffi::CString::new(sql).map_err(|_| MsegError::new(Code::General, "query text contains a NUL byte"))?;
    as_owner(|| {
        Spi::connect(|_client| {
            let mut receiver = RowReceiver {
                dest: pg_sys::DestReceiver {
                    receiveSlot: Some(receive_row),
                    rStartup: Some(receiver_noop_startup),
                    rShutdown: Some(receiver_noop),
                    rDestroy: Some(receiver_noop),
                    mydest: pg_sys::CommandDest::DestNone,
                },
                each: &mut each,
                failed: None,
            };
            // SAFETY: SPI is connected (Spi::connect); `receiver` outlives the call and starts with
            // its DestReceiver, so the executor's pointer to it is a pointer to the RowReceiver.
            let status = unsafe {
                let options = pg_sys::SPIExecuteOptions {
                    // the calling statement's snapshot: every read of one caller sees the same data
                    // (and none of the caller's own writes made after the statement began)
                    read_only: true,
                    dest: std::ptr::addr_of_mut!(receiver).cast::<pg_sys::DestReceiver>(),
                    ..Default::default()
                };
                pg_sys::SPI_execute_extended(sql.as_ptr(), &options)
            };
            if let Some(e) = receiver.failed.take() {
                return Err(e);
            }
            if status < 0 {
                return Err(MsegError::new(Code::General, format!("SPI_execute_extended failed: {status}")));
            }
            Ok(())
        })
    })
}

/// What [`for_each_row_as_owner`] calls per row: its datums and null flags.
type RowFn<'a> = dyn FnMut(&[pg_sys::Datum], &[bool]) -> Result<()> + 'a;

#[repr(C)]
struct RowReceiver<'a> {
    /// first, so a pointer to it is a pointer to the RowReceiver
    dest: pg_sys::DestReceiver,
    each: &'a mut RowFn<'a>,
    failed: Option<MsegError>,
}

/// A returned error stops the query cleanly (the executor stops at `false`) and is handed back
/// after it; a panic, which also carries an ERROR raised by a pg_sys call, becomes a PostgreSQL
/// ERROR right here (#[pg_guard]) and aborts the statement the usual way: PostgreSQL's error
/// state is never held while the executor goes on.
#[pg_guard]
unsafe extern "C-unwind" fn receive_row(slot: *mut pg_sys::TupleTableSlot, dest: *mut pg_sys::DestReceiver) -> bool {
    // SAFETY: `dest` is the DestReceiver at the start of a live RowReceiver (for_each_row_as_owner).
    let receiver = unsafe { &mut *dest.cast::<RowReceiver<'_>>() };
    // SAFETY: the executor hands a valid slot; after slot_getallattrs its first tts_nvalid values
    // and null flags are set.
    let (values, nulls) = unsafe {
        pg_sys::slot_getallattrs(slot);
        let n = usize::try_from((*slot).tts_nvalid).unwrap_or(0);
        (std::slice::from_raw_parts((*slot).tts_values, n), std::slice::from_raw_parts((*slot).tts_isnull, n))
    };
    match (receiver.each)(values, nulls) {
        Ok(()) => true,
        Err(e) => {
            receiver.failed = Some(e);
            false
        }
    }
}

unsafe extern "C-unwind" fn receiver_noop_startup(_: *mut pg_sys::DestReceiver, _: std::ffi::c_int, _: pg_sys::TupleDesc) {}

unsafe extern "C-unwind" fn receiver_noop(_: *mut pg_sys::DestReceiver) {}

/// Run a writing statement (or several) as owner.
pub fn update<T>(f: impl FnOnce(&mut SpiClient<'_>) -> Result<T>) -> Result<T> {
    as_owner(|| Spi::connect_mut(|client| f(client)))
}

// ---------------------------------------------------------------------------------------------
// mseg.audit_log
// ---------------------------------------------------------------------------------------------

/// Append an entry to the hash-chained audit log (see sql/audit.sql).
pub fn audit(action: &str, object: &str, details: serde_json::Value) -> Result<()> {
    let details = pgrx::JsonB(details);
    update(|c| {
        c.update("SELECT mseg._audit($1, $2, $3)", None, &[action.into(), object.into(), details.into()])?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// mseg.domains
// ---------------------------------------------------------------------------------------------

pub fn domain_version(domain: &str) -> Result<Option<i32>> {
    select(|c| {
        let t = c.select("SELECT key_version FROM mseg.domains WHERE name OPERATOR(pg_catalog.=) $1", Some(1), &[domain.into()])?;
        if t.is_empty() {
            return Ok(None);
        }
        Ok(t.first().get_one::<i32>()?)
    })
}

/// Insert a domain; false if it already existed.
pub fn create_domain(domain: &str, description: Option<&str>) -> Result<bool> {
    update(|c| {
        let t = c.update(
            "INSERT INTO mseg.domains(name, description) VALUES ($1, $2) \
             ON CONFLICT (name) DO NOTHING RETURNING name",
            None,
            &[domain.into(), description.into()],
        )?;
        Ok(!t.is_empty())
    })
}

pub fn drop_domain(domain: &str) -> Result<()> {
    update(|c| {
        c.update("DELETE FROM mseg.domains WHERE name OPERATOR(pg_catalog.=) $1", None, &[domain.into()])?;
        Ok(())
    })
}

/// Increment the key version of a domain; returns the new version.
pub fn bump_domain_version(domain: &str) -> Result<Option<i32>> {
    update(|c| {
        let t = c.update(
            "UPDATE mseg.domains SET key_version = key_version OPERATOR(pg_catalog.+) 1, \
             rotated_at = pg_catalog.now() WHERE name OPERATOR(pg_catalog.=) $1 RETURNING key_version",
            None,
            &[domain.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        Ok(t.first().get_one::<i32>()?)
    })
}

// ---------------------------------------------------------------------------------------------
// mseg.pseudonym_columns
// ---------------------------------------------------------------------------------------------

/// One pseudonym column of a table, as stored in `mseg.pseudonym_columns`.
#[derive(Clone, Debug)]
pub struct PseudonymColumn {
    pub relid: pg_sys::Oid,
    pub source: String,
    pub target: String,
    pub domain: String,
}

fn columns_where(filter: &str, arg: pgrx::datum::DatumWithOid<'_>) -> Result<Vec<PseudonymColumn>> {
    select(|c| {
        let q = format!(
            "SELECT relid::pg_catalog.oid, source_column::pg_catalog.text, target_column::pg_catalog.text, domain \
             FROM mseg.pseudonym_columns WHERE {filter} ORDER BY relid, target_column"
        );
        let mut out = Vec::new();
        for row in c.select(&q, None, &[arg])? {
            out.push(PseudonymColumn {
                relid: row.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                source: row.get::<String>(2)?.unwrap_or_default(),
                target: row.get::<String>(3)?.unwrap_or_default(),
                domain: row.get::<String>(4)?.unwrap_or_default(),
            });
        }
        Ok(out)
    })
}

pub fn pseudonym_columns_of(relid: pg_sys::Oid) -> Result<Vec<PseudonymColumn>> {
    columns_where("relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid", relid.into())
}

pub fn pseudonym_columns_in_domain(domain: &str) -> Result<Vec<PseudonymColumn>> {
    columns_where("domain OPERATOR(pg_catalog.=) $1", domain.into())
}

pub fn columns_of_domain(domain: &str) -> Result<Vec<String>> {
    Ok(pseudonym_columns_in_domain(domain)?.into_iter().map(|c| format!("{}.{}", relation_name(c.relid), c.target)).collect())
}

pub fn insert_pseudonym_column(col: &PseudonymColumn) -> Result<()> {
    update(|c| {
        c.update(
            "INSERT INTO mseg.pseudonym_columns(relid, source_column, target_column, domain) \
             VALUES ($1::pg_catalog.oid::pg_catalog.regclass, $2, $3, $4)",
            None,
            &[col.relid.into(), col.source.as_str().into(), col.target.as_str().into(), col.domain.as_str().into()],
        )?;
        Ok(())
    })
}

pub fn delete_pseudonym_column(relid: pg_sys::Oid, target: &str) -> Result<()> {
    update(|c| {
        c.update(
            "DELETE FROM mseg.pseudonym_columns WHERE relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid \
             AND target_column OPERATOR(pg_catalog.=) $2",
            None,
            &[relid.into(), target.into()],
        )?;
        Ok(())
    })
}

/// Schema-qualified, quoted name of a relation (for messages and generated DDL).
/// A new memory context (an AllocSet of the usual sizes) under `parent`, for work whose
/// allocations are freed together with it.
/// SAFETY: `parent` is a valid memory context.
pub unsafe fn memory_context(parent: pg_sys::MemoryContext, name: &'static std::ffi::CStr) -> pg_sys::MemoryContext {
    pg_sys::AllocSetContextCreateInternal(parent, name.as_ptr(), 0, 8 * 1024, 8 * 1024 * 1024)
}

pub fn relation_name(relid: pg_sys::Oid) -> String {
    // SAFETY: plain catalog lookups; NULL results are handled.
    unsafe {
        let rel = pg_sys::get_rel_name(relid);
        if rel.is_null() {
            return format!("{}", u32::from(relid));
        }
        let nsp = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
        let rel = std::ffi::CStr::from_ptr(rel).to_string_lossy();
        if nsp.is_null() {
            return spi::quote_identifier(rel.as_ref());
        }
        let nsp = std::ffi::CStr::from_ptr(nsp).to_string_lossy();
        spi::quote_qualified_identifier(nsp.as_ref(), rel.as_ref())
    }
}
