//! Reads and writes of pg_mseg's own configuration tables, and the identities every other query
//! of the extension runs as.
//!
//! The rule (docs/security.md, "Who runs what"): nothing the extension runs with elevated rights
//! evaluates anything a non-superuser can define. So there are four identities, and each query
//! picks the narrowest that can do its job:
//! - [`as_owner`]: the bootstrap superuser, for fixed SQL text over the extension's own `mseg.*`
//!   tables only (no user table, view, trigger or function is ever reached from there);
//! - [`as_upkeep`]: the NOLOGIN role `mseg_upkeep` (no superuser, `BYPASSRLS`, no members), for
//!   every query that reads the registered subject table and sources (segment upkeep, refresh,
//!   verification, exports): it holds SELECT on exactly the registered tables and what upkeep writes
//!   of `mseg.*`, so code a table owner planted in a table (an index expression, a CHECK used by
//!   constraint exclusion) runs with those rights and no more;
//! - [`as_table_owner`]: the owner of a user table, for DML and row locks on it (erasure), as
//!   PostgreSQL's own maintenance commands do: the owner's triggers run as the owner;
//! - the caller, unchanged, for relations the caller names (k-anonymity functions, category
//!   mapping tables, import staging tables): PostgreSQL checks the caller's own privileges.
//! Every switch pins `search_path` to `pg_catalog, pg_temp` and enters a security-restricted
//! context (no SET ROLE, no temporary objects), restored when the closure returns or unwinds.

use std::cell::Cell;
use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::error::{Code, MsegError, Result};

thread_local! {
    /// Bumped by the relcache callback (see `lib.rs`) whenever a relation's definition may have
    /// changed: the extension's configuration tables send one on every change (their trigger
    /// `mseg_config_changed`), so every per-backend cache derived from them compares it. Never
    /// borrowed, so invalidation processing may touch it at any moment.
    static CATALOG_GENERATION: Cell<u64> = const { Cell::new(1) };
}

/// Called from the relcache invalidation callback, and after this backend changed the catalog.
pub fn note_catalog_change() {
    CATALOG_GENERATION.with(|g| g.set(g.get().wrapping_add(1)));
}

/// The catalog generation: caches built from the catalog are valid while it stays the same.
pub fn generation() -> u64 {
    CATALOG_GENERATION.with(Cell::get)
}

/// Changes whenever cached keys or catalog-derived state may be stale (the key file setting or
/// the catalog moved): what per-backend caches of plans, domains and hierarchies compare.
pub fn cache_generation() -> u64 {
    (crate::gucs::key_file_generation() << 40) ^ generation()
}

/// The role that reads registered user tables for upkeep and exports (created by bootstrap.sql).
pub const UPKEEP_ROLE: &CStr = c"mseg_upkeep";

/// Restores user id, security context and GUC nest level, also when an error unwinds.
struct IdentityGuard {
    saved_user: pg_sys::Oid,
    saved_context: i32,
    guc_nest_level: i32,
}

impl Drop for IdentityGuard {
    fn drop(&mut self) {
        // SAFETY: restores exactly what `run_as` saved, in reverse order.
        unsafe {
            pg_sys::SetUserIdAndSecContext(self.saved_user, self.saved_context);
            pg_sys::AtEOXact_GUC(true, self.guc_nest_level);
        }
    }
}

/// Run `f` as `user` in a security-restricted context with `search_path = pg_catalog, pg_temp`.
pub fn run_as<T>(user: pg_sys::Oid, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let guard = unsafe {
        let mut saved_user = pg_sys::InvalidOid;
        let mut saved_context = 0;
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        let guc_nest_level = pg_sys::NewGUCNestLevel();
        let guard = IdentityGuard { saved_user, saved_context, guc_nest_level };
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
            user,
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32 | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
        guard
    };
    let result = f();
    drop(guard);
    result
}

/// Run `f` as the bootstrap superuser with a pinned, hijack-proof search_path: only for fixed SQL
/// over the extension's own tables (see the module comment).
pub fn as_owner<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    run_as(pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID), f)
}

thread_local! {
    static UPKEEP_OID: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::InvalidOid) };
}

/// The OID of `mseg_upkeep` (looked up once per backend; roles are cluster-wide and stable).
pub fn upkeep_role() -> Result<pg_sys::Oid> {
    let cached = UPKEEP_OID.with(Cell::get);
    if cached != pg_sys::InvalidOid {
        return Ok(cached);
    }
    // SAFETY: a syscache lookup; missing_ok returns InvalidOid instead of raising.
    let oid = unsafe { pg_sys::get_role_oid(UPKEEP_ROLE.as_ptr(), true) };
    if oid == pg_sys::InvalidOid {
        return Err(MsegError::new(Code::General, "role mseg_upkeep does not exist")
            .detail("pg_mseg reads the registered tables as this role; CREATE EXTENSION creates it.")
            .hint("Reinstall the extension (DROP EXTENSION pg_mseg; CREATE EXTENSION pg_mseg) as a superuser."));
    }
    UPKEEP_OID.with(|c| c.set(oid));
    Ok(oid)
}

/// Run `f` as `mseg_upkeep` (see the module comment): every query that reads the registered
/// subject table or sources goes through here. A data error PostgreSQL raises meanwhile (class 22,
/// e.g. a predicate's cast failing on some row, or 23) is reported without its message, which
/// could quote a value of the data (see [`without_values_in_errors`]).
pub fn as_upkeep<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let upkeep = upkeep_role()?;
    check_registered_tables()?;
    // the planner reads CHECK constraints (and may fold their calls) only for constraint exclusion
    without_values_in_errors(|| run_as(upkeep, || with_setting(c"constraint_exclusion", c"off", f)))
}

thread_local! {
    /// The catalog generation at which the registered tables last passed [`check_registered_tables`].
    static TABLES_CHECKED: Cell<u64> = const { Cell::new(0) };
}

/// Refuse to read the registered tables (subject table, sources, category mappings, with their
/// partitions and inheritance children) while one of their index expressions, partial-index
/// predicates, partition keys or extended statistics calls a function no superuser wrote **on
/// constant arguments only**: PostgreSQL evaluates such calls (constant folding) whenever it plans
/// any query on the table, with the rights of whoever plans, and pg_mseg plans as `mseg_upkeep`.
/// A call over a column (`my_normalize(email)`) runs only when rows are written, as the writer, and
/// is fine. (CHECK constraints are only read by the planner for constraint exclusion, which the
/// upkeep turns off.) Checked once per catalog generation (any DDL on those tables moves it).
pub fn check_registered_tables() -> Result<()> {
    let generation = cache_generation();
    if TABLES_CHECKED.with(Cell::get) == generation {
        return Ok(());
    }
    let expressions: Vec<(String, String, String)> = select(|c| {
        let mut out = Vec::new();
        for row in c.select(
            "WITH RECURSIVE reg(relid) AS ( \
                 SELECT relid::pg_catalog.oid FROM mseg.subject_tables \
                 UNION SELECT relid::pg_catalog.oid FROM mseg.sources \
                 UNION SELECT pg_catalog.to_regclass(pg_catalog.substr(hierarchy, 10))::pg_catalog.oid FROM mseg.column_classes \
                       WHERE hierarchy OPERATOR(pg_catalog.~~) 'category:%'), \
             tree(relid) AS (SELECT relid FROM reg WHERE relid IS NOT NULL \
                 UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent OPERATOR(pg_catalog.=) tree.relid) \
             SELECT x.indrelid::pg_catalog.regclass::pg_catalog.text, 'index ' OPERATOR(pg_catalog.||) x.indexrelid::pg_catalog.regclass::pg_catalog.text, e \
               FROM pg_catalog.pg_index x JOIN tree ON x.indrelid OPERATOR(pg_catalog.=) tree.relid, \
                    LATERAL (VALUES (x.indexprs::pg_catalog.text), (x.indpred::pg_catalog.text)) v(e) WHERE e IS NOT NULL \
             UNION ALL SELECT p.partrelid::pg_catalog.regclass::pg_catalog.text, 'partition key', p.partexprs::pg_catalog.text \
               FROM pg_catalog.pg_partitioned_table p JOIN tree ON p.partrelid OPERATOR(pg_catalog.=) tree.relid WHERE p.partexprs IS NOT NULL \
             UNION ALL SELECT s.stxrelid::pg_catalog.regclass::pg_catalog.text, 'statistics ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(s.stxname), \
                    s.stxexprs::pg_catalog.text \
               FROM pg_catalog.pg_statistic_ext s JOIN tree ON s.stxrelid OPERATOR(pg_catalog.=) tree.relid WHERE s.stxexprs IS NOT NULL",
            None,
            &[],
        )? {
            out.push((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default(), row.get::<String>(3)?.unwrap_or_default()));
        }
        Ok(out)
    })?;
    for (table, what, tree) in expressions {
        if let Some(function) = folded_user_call(&tree) {
            return Err(MsegError::new(
                Code::InvalidTable,
                format!("pg_mseg will not read {table}: its {what} calls {function} on constants, and no superuser wrote that function"),
            )
            .detail("PostgreSQL evaluates such calls whenever it plans any query on the table, with the rights of whoever plans; pg_mseg reads registered tables as mseg_upkeep and will not run the table owner's code that way.")
            .hint("Compute the constant part in the index definition itself, or use a built-in (or superuser-installed) function there."));
        }
    }
    TABLES_CHECKED.with(|c| c.set(generation));
    Ok(())
}

/// In a stored expression tree (`pg_node_tree` text): the first call of a function that no
/// superuser owns whose arguments contain no column, i.e. one the planner would constant-fold.
fn folded_user_call(tree: &str) -> Option<String> {
    let text = std::ffi::CString::new(tree).ok()?;
    struct Found(Option<String>);
    #[pgrx::pg_guard]
    unsafe extern "C-unwind" fn walk(node: *mut pg_sys::Node, ctx: *mut std::ffi::c_void) -> bool {
        if node.is_null() {
            return false;
        }
        let found = &mut *(ctx as *mut Found);
        let (funcid, args) = match (*node).type_ {
            pg_sys::NodeTag::T_FuncExpr => {
                let f = node as *mut pg_sys::FuncExpr;
                ((*f).funcid, (*f).args)
            }
            pg_sys::NodeTag::T_OpExpr | pg_sys::NodeTag::T_DistinctExpr | pg_sys::NodeTag::T_NullIfExpr => {
                let op = node as *mut pg_sys::OpExpr;
                pg_sys::set_opfuncid(op);
                ((*op).opfuncid, (*op).args)
            }
            _ => (pg_sys::InvalidOid, std::ptr::null_mut()),
        };
        if funcid != pg_sys::InvalidOid && !pg_sys::contain_var_clause(args.cast()) && !superuser_owned(funcid) {
            let name = pg_sys::format_procedure(funcid);
            found.0 = Some(if name.is_null() {
                format!("function {}", u32::from(funcid))
            } else {
                CStr::from_ptr(name).to_string_lossy().into_owned()
            });
            return true;
        }
        pg_sys::expression_tree_walker(node, Some(walk), ctx)
    }
    let mut found = Found(None);
    // SAFETY: a node tree PostgreSQL stored itself, read back in the current memory context.
    unsafe {
        let node = pg_sys::stringToNode(text.as_ptr()) as *mut pg_sys::Node;
        walk(node, (&mut found as *mut Found).cast());
    }
    found.0
}

/// Whether function `funcid` is owned by a superuser (built-in, or installed by a superuser).
unsafe fn superuser_owned(funcid: pg_sys::Oid) -> bool {
    let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::PROCOID as i32, pg_sys::Datum::from(funcid));
    if tuple.is_null() {
        return false;
    }
    let owner = (*(pg_sys::GETSTRUCT(tuple) as *mut pg_sys::FormData_pg_proc)).proowner;
    pg_sys::ReleaseSysCache(tuple);
    pg_sys::superuser_arg(owner)
}

/// An SQL expression for the text of `expr`, a value of type `typid`, that never runs a
/// user-defined cast: built-in types (and domains over them, whose casts are their base type's)
/// use `::text`; others (enums, composites, ranges, arrays of them) go through their type's output
/// function, which is always built-in (a user-defined base type needs a superuser).
pub fn safe_text(expr: &str, typid: pg_sys::Oid) -> String {
    // SAFETY: syscache lookups of an existing type.
    unsafe {
        let base = pg_sys::getBaseType(typid);
        if u32::from(base) < pg_sys::FirstGenbkiObjectId {
            return format!("({expr})::pg_catalog.text");
        }
        let mut output = pg_sys::InvalidOid;
        let mut varlena = false;
        pg_sys::getTypeOutputInfo(base, &mut output, &mut varlena);
        let name = pg_sys::get_func_name(output);
        let nsp = pg_sys::get_namespace_name(pg_sys::get_func_namespace(output));
        if name.is_null() || nsp.is_null() {
            return "NULL::pg_catalog.text".to_owned();
        }
        let f = spi::quote_qualified_identifier(
            CStr::from_ptr(nsp).to_string_lossy().as_ref(),
            CStr::from_ptr(name).to_string_lossy().as_ref(),
        );
        format!("pg_catalog.textin({f}({expr}))")
    }
}

/// The five characters of a packed SQLSTATE.
fn sqlstate_text(code: i32) -> String {
    (0..5).map(|i| char::from(b'0' + ((code >> (6 * i)) & 0x3F) as u8)).collect()
}

/// Run `f`; an ERROR of class 22 (data exception) or 23 (integrity constraint violation) that
/// PostgreSQL raises meanwhile comes back as an MS000 error naming only its SQLSTATE: such
/// messages quote the offending value, and this value was read from a user table on behalf of
/// someone who may not read it (an application role whose write fired a trigger, a partner's
/// export). Every other error (serialization failures, lock timeouts, cancellation, permissions)
/// keeps its SQLSTATE and message, which name no data.
pub fn without_values_in_errors<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let f = std::panic::AssertUnwindSafe(f);
    pgrx::PgTryBuilder::new(move || {
        let f = f;
        (f.0)()
    })
    .catch_others(|e| match e {
        pg_sys::panic::CaughtError::PostgresError(ref report) => {
            let code = sqlstate_text(report.sql_error_code() as i32);
            if code.starts_with("22") || code.starts_with("23") {
                Err(MsegError::new(Code::General, format!("a query over the registered tables failed with SQLSTATE {code}"))
                    .detail("PostgreSQL's message is not shown: it could quote a value of the data.")
                    .hint("A segment predicate or a column value does not fit (a failing cast, a division by zero, …); the owner of the table can find the row by evaluating the predicates over it."))
            } else {
                e.rethrow()
            }
        }
        other => other.rethrow(),
    })
    .execute()
}

/// The owner of relation `relid`.
pub fn relation_owner(relid: pg_sys::Oid) -> Result<pg_sys::Oid> {
    select(|c| {
        let t = c.select("SELECT relowner FROM pg_catalog.pg_class WHERE oid OPERATOR(pg_catalog.=) $1", None, &[relid.into()])?;
        if t.is_empty() {
            return Err(MsegError::new(Code::UndefinedObject, format!("relation with OID {} does not exist", u32::from(relid))));
        }
        Ok(t.first().get_one::<pg_sys::Oid>()?.unwrap_or(pg_sys::InvalidOid))
    })
}

/// Run `f` as the owner of `relid` in a security-restricted context: DML and row locks on a user
/// table, so that the table's triggers, defaults and index expressions run with its owner's rights
/// and never with more.
pub fn as_table_owner<T>(relid: pg_sys::Oid, f: impl FnOnce() -> Result<T>) -> Result<T> {
    run_as(relation_owner(relid)?, f)
}

/// Whether the current user has `privilege` (an `ACL_*` bit) on relation `relid`.
pub fn current_user_may(relid: pg_sys::Oid, privilege: u32) -> bool {
    // SAFETY: a plain ACL check on an existing relation.
    unsafe { pg_sys::pg_class_aclcheck(relid, pg_sys::GetUserId(), privilege as pg_sys::AclMode) == pg_sys::AclResult::ACLCHECK_OK }
}

/// Refuse unless the caller may SELECT from `relid` (before reading a relation the caller named).
pub fn require_select(relid: pg_sys::Oid) -> Result<()> {
    if current_user_may(relid, pg_sys::ACL_SELECT) {
        Ok(())
    } else {
        Err(MsegError::new(Code::InsufficientPrivilege, format!("permission denied for relation {}", relation_name(relid)))
            .detail("pg_mseg reads a relation you name with your own privileges.")
            .hint("Ask its owner for SELECT on it."))
    }
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

/// The first column of the first row of a read-only query (run as the current identity); read-only
/// so that it also works on a hot standby, where a read-write SPI call would need a transaction id.
pub fn query_one<T: pgrx::FromDatum + pgrx::IntoDatum>(sql: &str, args: &[pgrx::datum::DatumWithOid<'_>]) -> Result<Option<T>> {
    Spi::connect(|c| {
        let t = c.select(sql, Some(1), args)?;
        if t.is_empty() {
            return Ok(None);
        }
        Ok(t.first().get_one::<T>()?)
    })
}

/// Run a read-only query as owner and hand the client to `f`.
pub fn select<T>(f: impl FnOnce(&SpiClient<'_>) -> Result<T>) -> Result<T> {
    as_owner(|| Spi::connect(|client| f(&client)))
}

/// Who a query runs as (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// the bootstrap superuser: fixed SQL over `mseg.*` only
    Owner,
    /// `mseg_upkeep`: the registered subject table and sources
    Upkeep,
    /// the caller, unchanged (relations the caller named)
    Caller,
}

/// Run `f` as `who`; `Who::Caller` pins the search path only.
pub fn run<T>(who: Who, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match who {
        Who::Owner => as_owner(f),
        Who::Upkeep => as_upkeep(f),
        Who::Caller => with_search_path(c"pg_catalog, pg_temp", f),
    }
}

/// Stream the rows of a read-only query run as `who`, in batches, to `each` (constant memory).
pub fn stream_rows(who: Who, sql: &str, mut each: impl FnMut(&pgrx::spi::SpiHeapTupleData<'_>) -> Result<()>) -> Result<()> {
    run(who, || {
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

/// Run a read-only query as `who` and hand each row to `each` as the executor produces it: the
/// row's datums and null flags, valid only during the call (copy what you keep). A custom
/// `DestReceiver` (SPI_execute_extended with `dest`): no tuple table, no copy of any row, no
/// cursor. The query runs read-only under the calling statement's snapshot, so several such
/// reads of one caller are consistent with each other. The first error `each` returns stops the
/// query and is returned; a panic in `each` is raised as an ERROR from the row receiver.
pub fn for_each_row(who: Who, sql: &str, mut each: impl FnMut(&[pg_sys::Datum], &[bool]) -> Result<()>) -> Result<()> {
    let sql = std::ffi::CString::new(sql).map_err(|_| MsegError::new(Code::General, "query text contains a NUL byte"))?;
    run(who, || {
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

/// What [`for_each_row`] calls per row: its datums and null flags.
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
    // SAFETY: `dest` is the DestReceiver at the start of a live RowReceiver (for_each_row).
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
// mseg.subject_tables, mseg.purposes
// ---------------------------------------------------------------------------------------------

/// The registered subject table: its OID, key column, quoted schema-qualified name, and how its
/// keys are identified inside the extension. Integer keys are their own subject ids; other keys
/// (uuid, text…) are mapped to ids in `mseg.subject_ids` by their text, so memberships, consent
/// state, events and partner state keep one compact integer key whatever the table uses.
#[derive(Clone, Debug)]
pub struct SubjectTable {
    pub relid: pg_sys::Oid,
    pub key: String,
    pub name: String,
    /// the key column's type as SQL (`bigint`, `uuid`, `text`, `character varying(20)` …)
    pub key_type: String,
    /// keys are mapped to ids through mseg.subject_ids (anything but an integer key)
    pub mapped: bool,
}

impl SubjectTable {
    /// The key of row `alias` (`alias.key`).
    pub fn row_key(&self, alias: &str) -> String {
        format!("{alias}.{}", spi::quote_identifier(&self.key))
    }
    /// What a FROM clause joins after row `alias` so that [`Self::id_of_row`] can name its id.
    pub fn id_join(&self, alias: &str) -> String {
        if self.mapped {
            format!(
                " JOIN mseg.subject_ids mseg_id ON mseg_id.subject_key OPERATOR(pg_catalog.=) ({})::pg_catalog.text",
                self.row_key(alias)
            )
        } else {
            String::new()
        }
    }
    /// The subject id of row `alias` (after [`Self::id_join`]).
    pub fn id_of_row(&self, alias: &str) -> String {
        if self.mapped {
            "mseg_id.subject_id".to_owned()
        } else {
            format!("{}::pg_catalog.int8", self.row_key(alias))
        }
    }
    /// LEFT JOINs from the subject id `id` to its row (as `alias`; no row when it is gone).
    pub fn row_of_id(&self, id: &str, alias: &str) -> String {
        if self.mapped {
            format!(
                " LEFT JOIN mseg.subject_ids mseg_id ON mseg_id.subject_id OPERATOR(pg_catalog.=) {id} \
                  LEFT JOIN {rel} {alias} ON {k} OPERATOR(pg_catalog.=) (mseg_id.subject_key)::{typ}",
                rel = self.name,
                k = self.row_key(alias),
                typ = self.key_type
            )
        } else {
            format!(" LEFT JOIN {} {alias} ON {} OPERATOR(pg_catalog.=) {id}", self.name, self.row_key(alias))
        }
    }
    /// A key value from the SQL text expression `text`.
    pub fn key_of_text(&self, text: &str) -> String {
        format!("({text})::{}", self.key_type)
    }
}

/// The registered subject table, if any.
pub fn subject_table() -> Result<Option<SubjectTable>> {
    select(|c| {
        let t = c.select(
            "SELECT t.relid::pg_catalog.oid, t.key_column::pg_catalog.text, \
                    pg_catalog.format_type(a.atttypid, a.atttypmod), a.atttypid \
             FROM mseg.subject_tables t LEFT JOIN pg_catalog.pg_attribute a \
               ON a.attrelid OPERATOR(pg_catalog.=) t.relid AND a.attname OPERATOR(pg_catalog.=) t.key_column",
            None,
            &[],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let row = t.first();
        let relid = row.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid);
        let key = row.get::<String>(2)?.unwrap_or_default();
        let key_type = row.get::<String>(3)?.unwrap_or_else(|| "bigint".to_owned());
        let typid = row.get::<pg_sys::Oid>(4)?.unwrap_or(pg_sys::INT8OID);
        let mapped = ![pg_sys::INT2OID, pg_sys::INT4OID, pg_sys::INT8OID].contains(&typid);
        Ok(Some(SubjectTable { relid, name: relation_name(relid), key, key_type, mapped }))
    })
}

/// The registered subject table, or the error that none is registered.
pub fn require_subject_table() -> Result<SubjectTable> {
    subject_table()?.ok_or_else(|| {
        MsegError::new(Code::SubjectTable, "no subject table is registered")
            .hint("Register it first: SELECT mseg.register_subjects('public.customers', key_column => 'customer_id').")
    })
}

/// Refuse a purpose that is not defined.
pub fn require_purpose(purpose: &str) -> Result<()> {
    let exists =
        select(|c| Ok(!c.select("SELECT 1 FROM mseg.purposes WHERE name OPERATOR(pg_catalog.=) $1", None, &[purpose.into()])?.is_empty()))?;
    if exists {
        Ok(())
    } else {
        Err(MsegError::new(Code::UnknownPurpose, format!("purpose \"{purpose}\" does not exist"))
            .hint("Define it with mseg.define_purpose(name, legal_bases, retention); mseg.purposes lists the purposes."))
    }
}

/// What a checked name names; each kind allows, after a lower-case letter, up to 62 of a-z, 0-9
/// and its own punctuation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// segments and pool segments (and the purposes pool segments name): `_`
    Segment,
    /// trusted partners: `_ -`
    Partner,
    /// pseudonymisation domains: `_ - . :` (partners' domains are `partner.<name>`)
    Domain,
}

/// The one check of the names pg_mseg gives its objects (purposes are checked the same way in
/// sql/consent.sql): a clear error saying what a name may hold.
pub fn check_name(kind: NameKind, name: &str) -> Result<()> {
    let (label, punctuation, listed, code) = match kind {
        NameKind::Segment => ("segment name", "_", "_", Code::InvalidArgument),
        NameKind::Partner => ("partner name", "_-", "_ -", Code::InvalidArgument),
        NameKind::Domain => ("domain name", "_-.:", "_ - . :", Code::InvalidDomain),
    };
    let ok = name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || punctuation.contains(c));
    if ok {
        return Ok(());
    }
    let rule = format!("A {label} starts with a lower-case letter and has at most 63 characters from a-z, 0-9, {listed}");
    let e = MsegError::new(code, format!("invalid {label} \"{name}\""));
    Err(match kind {
        NameKind::Domain => e.detail(rule).hint("Choose a name such as analytics or partner.trustco."),
        _ => e.hint(format!("{rule}.")),
    })
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

/// The relation OIDs a fixed catalog query returns for relation `relid` (its `$1`), in its order.
pub fn relation_oids(sql: &str, relid: pg_sys::Oid) -> Result<Vec<pg_sys::Oid>> {
    select(|c| {
        let mut out = Vec::new();
        for row in c.select(sql, None, &[relid.into()])? {
            out.extend(row.get::<pg_sys::Oid>(1)?);
        }
        Ok(out)
    })
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
