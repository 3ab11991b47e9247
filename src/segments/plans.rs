//! Plans prepared once per backend and catalog generation.

use super::*;

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(super) enum PlanKind {
    /// scope, bulk, batch (see apply_sql)
    Apply(Scope, bool, bool),
    RowApply(Vec<i32>),
    SubjectLock,
    Lock,
    KeyLock,
    NewKeyLocks,
    Insert {
        bulk: bool,
        locked: bool,
    },
    NewIds,
    Delete,
    Truncate,
}

/// Partial scopes make one plan per combination of changed inputs; past this many the cache starts over.
pub(super) const MAX_CACHED_PLANS: usize = 256;

pub(super) struct PlanCache {
    pub(super) generation: u64,
    pub(super) catalog: Option<Rc<SegCatalog>>,
    pub(super) plans: HashMap<PlanKind, Rc<OwnedPreparedStatement>>,
}

thread_local! {
    static PLANS: RefCell<PlanCache> = RefCell::new(PlanCache { generation: 0, catalog: None, plans: HashMap::new() });
}

pub(super) fn cached_catalog() -> MsegResult<Rc<SegCatalog>> {
    let generation = catalog::cache_generation();
    let hit = PLANS.with(|p| {
        let p = p.borrow();
        if p.generation == generation {
            p.catalog.clone()
        } else {
            None
        }
    });
    if let Some(c) = hit {
        return Ok(c);
    }
    let cat = Rc::new(load_catalog()?);
    PLANS.with(|p| {
        let mut p = p.borrow_mut();
        p.generation = generation;
        p.catalog = Some(cat.clone());
        p.plans.clear();
    });
    Ok(cat)
}

pub(super) fn plan(
    client: &SpiClient<'_>,
    kind: &PlanKind,
    args: &[pgrx::PgOid],
    sql: impl FnOnce() -> String,
) -> MsegResult<Rc<OwnedPreparedStatement>> {
    if let Some(p) = PLANS.with(|p| p.borrow().plans.get(kind).cloned()) {
        return Ok(p);
    }
    let stmt = Rc::new(client.prepare_mut(sql().as_str(), args)?.keep());
    PLANS.with(|p| {
        let mut p = p.borrow_mut();
        if p.plans.len() >= MAX_CACHED_PLANS {
            p.plans.clear();
        }
        p.plans.insert(kind.clone(), stmt.clone())
    });
    Ok(stmt)
}

pub(super) fn int8_array() -> pgrx::PgOid {
    pgrx::PgOid::BuiltIn(pgrx::PgBuiltInOids::INT8ARRAYOID)
}

pub(super) fn read_committed() -> bool {
    // SAFETY: reading a PostgreSQL global.
    unsafe { pg_sys::XactIsoLevel < pg_sys::XACT_REPEATABLE_READ as i32 }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum LockMode {
    /// one row lock per subject, whatever the number (schedulable refresh: blocks no writer)
    Rows,
    /// the table lock for big READ COMMITTED statements
    RowsOrTable,
    /// the table lock in READ COMMITTED (segment (re)definitions, which lock the maintained tables)
    Table,
}

/// Take part in the lock protocol for `keys` (sorted, distinct).
pub(super) fn lock_keys(client: &mut SpiClient<'_>, keys: &[i64], mode: LockMode) -> MsegResult<()> {
    let table = read_committed()
        && match mode {
            LockMode::Rows => false,
            LockMode::RowsOrTable => keys.len() >= bulk_subjects(),
            LockMode::Table => true,
        };
    if table {
        // waits for every writer of memberships to finish; the next statement's snapshot sees them
        client.update(TABLE_LOCK_SQL, None, &[])?;
        return Ok(());
    }
    let lock = plan(client, &PlanKind::Lock, &[int8_array()], || LOCK_SQL.to_owned())?;
    client.update(&*lock, None, &[crate::sql_array::int8(keys)])?;
    Ok(())
}

/// Lock and recompute the segments in `scope` for `keys` (sorted, distinct).
pub(super) fn apply_keys(
    client: &mut SpiClient<'_>,
    cat: &SegCatalog,
    subject: &SubjectTable,
    keys: &[i64],
    scope: &Scope,
    mode: LockMode,
) -> MsegResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    lock_keys(client, keys, mode)?;
    apply_locked(client, cat, subject, keys, scope)
}

/// [`apply_keys`] for one batch of a refresh: `keys` is bounded by `mseg.refresh_batch_subjects`,
/// so its recompute reads the joined tables by these keys (see [`apply_sql`]).
pub(super) fn apply_batch(
    client: &mut SpiClient<'_>,
    cat: &SegCatalog,
    subject: &SubjectTable,
    keys: &[i64],
    scope: &Scope,
    mode: LockMode,
) -> MsegResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    // (the batch's statement filters by the range of its keys: first and last must be the ends)
    let sorted;
    let keys = if keys.is_sorted() {
        keys
    } else {
        sorted = {
            let mut k = keys.to_vec();
            k.sort_unstable();
            k
        };
        &sorted
    };
    lock_keys(client, keys, mode)?;
    apply_locked_with(client, cat, subject, keys, scope, true)
}
