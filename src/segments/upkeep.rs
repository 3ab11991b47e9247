//! The statement trigger and the lock protocol: what each statement recomputes, and how.

use super::*;
use std::borrow::Cow;

/// Run `f` with SPI as `mseg_upkeep`, the statement's transition tables visible, and generic
/// plans (the prepared statements are the same every time; custom plans would plan the whole
/// evaluation again on every statement).
pub(super) unsafe fn with_trigger_spi(td: &pg_sys::TriggerData, f: impl FnOnce(&mut SpiClient<'_>) -> MsegResult<()>) -> MsegResult<()> {
    let tdp = td as *const pg_sys::TriggerData as *mut pg_sys::TriggerData;
    catalog::as_upkeep(|| {
        without_jit(|| {
            catalog::with_setting(c"plan_cache_mode", c"force_generic_plan", || {
                Spi::connect_mut(|client| {
                    // SAFETY: makes this statement's transition tables visible to the queries below.
                    unsafe { pg_sys::SPI_register_trigger_data(tdp) };
                    f(client)
                })
            })
        })
    })
}

/// Run `f` with JIT compilation off: an evaluation of every segment is one expression per segment
/// and per basis, and compiling them costs seconds on every bulk statement (its plan is costed
/// high), more than the compiled code saves.
pub(super) fn without_jit<T>(f: impl FnOnce() -> MsegResult<T>) -> MsegResult<T> {
    catalog::with_setting(c"jit", c"off", f)
}

pub(super) unsafe fn on_statement(td: &pg_sys::TriggerData) -> MsegResult<()> {
    let relid = (*td.tg_relation).rd_id;
    let cat = cached_catalog()?;
    let Some(subject) = cat.subject.clone() else {
        return Ok(());
    };
    if cat.segments.is_empty() {
        return Ok(());
    }
    let op = td.tg_event & pg_sys::TRIGGER_EVENT_OPMASK;
    let Some(member) = cat.members.get(&relid).copied() else {
        return Err(MsegError::new(
            Code::InvalidTable,
            format!("{} is neither the subject table nor a registered source", catalog::relation_name(relid)),
        )
        .hint("Let mseg.register_source create the segment triggers."));
    };
    let src = match member.role {
        Role::Subject => return on_subject_statement(td, op, &cat, &subject),
        Role::SubjectPart => return on_subject_part_statement(td, op, &cat, &subject, member.key_attnum),
        Role::Source(i) => cat.sources[i].clone(),
    };
    // only the segments that read this source can change
    let affected: Vec<i32> = cat.segments.iter().filter(|s| s.sources.contains(&relid)).map(|s| s.id).collect();
    if affected.is_empty() {
        return Ok(());
    }
    let scope = Scope::Only(affected);
    with_trigger_spi(td, |client| {
        let keys = if op == pg_sys::TRIGGER_EVENT_TRUNCATE {
            // every subject may have lost its source rows: recompute all current members
            let t = client.update("SELECT pg_catalog.array_agg(subject_key ORDER BY subject_key) FROM mseg.memberships", None, &[])?;
            t.first().get_one::<Vec<i64>>()?.unwrap_or_default()
        } else {
            let old = op != pg_sys::TRIGGER_EVENT_INSERT;
            let new = op != pg_sys::TRIGGER_EVENT_DELETE;
            // SAFETY: td is this trigger's data; the transition tables live until it returns.
            unsafe { statement_keys(client, td, &subject, &src.key, member.key_attnum, old, new, MapKeys::Lock)? }
        };
        apply_keys(client, &cat, &subject, &keys, &scope, LockMode::RowsOrTable)
    })
}

/// A statement on a partition (or inheritance child) of the subject table itself, not through the
/// parent: its transition tables have the partition's row type, so the subjects are found by key
/// and recomputed whole (the parent's fast paths read the parent's row type).
pub(super) unsafe fn on_subject_part_statement(
    td: &pg_sys::TriggerData,
    op: u32,
    cat: &SegCatalog,
    subject: &SubjectTable,
    key_attnum: i16,
) -> MsegResult<()> {
    with_trigger_spi(td, |client| {
        if op == pg_sys::TRIGGER_EVENT_TRUNCATE {
            // the partition's subjects are gone: every set without a subject row is emptied
            return empty_orphans(client, cat, subject, LockMode::RowsOrTable);
        }
        let old = op != pg_sys::TRIGGER_EVENT_INSERT;
        let new = op != pg_sys::TRIGGER_EVENT_DELETE;
        // SAFETY: td is this trigger's data; the transition tables live until it returns.
        let how = if new { MapKeys::Create } else { MapKeys::Lookup };
        let keys = unsafe { statement_keys(client, td, subject, &subject.key, key_attnum, old, new, how)? };
        apply_keys(client, cat, subject, &keys, &Scope::All, LockMode::RowsOrTable)
    })
}

/// Empty the sets of subjects that no longer have a row, recording what they left, under the lock
/// protocol: the candidates' membership rows are locked, then recomputed with a snapshot taken
/// after the lock (a subject inserted meanwhile keeps its set). The rows stay (see [`EMPTY_SQL`]).
pub(super) fn empty_orphans(client: &mut SpiClient<'_>, cat: &SegCatalog, subject: &SubjectTable, mode: LockMode) -> MsegResult<()> {
    let find = format!(
        "SELECT pg_catalog.array_agg(m.subject_key ORDER BY m.subject_key) FROM mseg.memberships m \
         WHERE pg_catalog.cardinality(m.segments) OPERATOR(pg_catalog.>) 0 \
           AND NOT EXISTS (SELECT 1 FROM (SELECT m.subject_key AS k) mseg_k{row} WHERE {key} IS NOT NULL)",
        row = subject.row_of_id("mseg_k.k", "s"),
        key = subject.row_key("s"),
    );
    let t = client.update(&find, None, &[])?;
    let keys = t.first().get_one::<Vec<i64>>()?.unwrap_or_default();
    apply_keys(client, cat, subject, &keys, &Scope::All, mode)
}

pub(super) unsafe fn on_subject_statement(td: &pg_sys::TriggerData, op: u32, cat: &SegCatalog, subject: &SubjectTable) -> MsegResult<()> {
    match op {
        pg_sys::TRIGGER_EVENT_INSERT => with_trigger_spi(td, |client| {
            // SAFETY: the new rows' transition table of this INSERT statement trigger.
            let rows = unsafe {
                if td.tg_newtable.is_null() {
                    0
                } else {
                    pg_sys::tuplestore_tuple_count(td.tg_newtable)
                }
            };
            let bulk = rows >= bulk_subjects() as i64;
            let locked = bulk && read_committed();
            if subject.mapped {
                // the new keys' locks (their source writers may have no id to lock; see
                // lock_key_texts), before their ids and before the memberships
                if locked {
                    client.update(KEY_TABLE_LOCK_SQL, None, &[])?;
                } else {
                    let l = plan(client, &PlanKind::NewKeyLocks, &[], || new_key_locks_sql(subject))?;
                    client.update(&*l, None, &[])?;
                }
            }
            if locked {
                // waits for every writer of memberships; the next statement's snapshot sees them
                client.update(TABLE_LOCK_SQL, None, &[])?;
            }
            if subject.mapped {
                // the new subjects' ids, before the evaluation joins them
                let ids = plan(client, &PlanKind::NewIds, &[], || new_ids_sql(subject))?;
                client.update(&*ids, None, &[])?;
            }
            let p = plan(client, &PlanKind::Insert { bulk, locked }, &[], || insert_sql(cat, subject, bulk, locked))?;
            let stored = planned_for(bulk, || {
                let t = client.update(&*p, None, &[])?;
                if locked {
                    return Ok(Vec::new());
                }
                Ok(t.first().get_one::<Vec<i64>>()?.unwrap_or_default())
            })?;
            // keys whose membership row existed (source rows before the subject, a concurrent
            // source writer): recomputed under the row protocol, with a snapshot taken after it
            apply_keys(client, cat, subject, &stored, &Scope::All, LockMode::Rows)
        }),
        pg_sys::TRIGGER_EVENT_UPDATE => {
            let mut scanned = scan_subject_update(td, cat);
            if let Some(u) = &scanned {
                if u.rekeyed.is_empty() && (u.changed.is_empty() || u.affected.is_empty()) {
                    return Ok(()); // no set can move (no column read changed, or no predicate changed its value): no query run
                }
            }
            with_trigger_spi(td, |client| {
                if let Some(u) = scanned.as_mut() {
                    u.resolve(client)?;
                }
                match scanned {
                    Some(u) if row_path_applies(cat, &u) => update_row_segments(client, cat, subject, &u.changed, &u.affected),
                    Some(u) => {
                        let all: Vec<i64> = sort_dedup(u.changed.iter().chain(&u.rekeyed).copied().collect());
                        lock_keys(client, &all, LockMode::RowsOrTable)?;
                        if !u.changed.is_empty() && !u.affected.is_empty() {
                            apply_locked(client, cat, subject, &u.changed, &Scope::Only(u.affected.clone()))?;
                        }
                        apply_locked(client, cat, subject, &u.rekeyed, &Scope::All)
                    }
                    None => {
                        let keys = keys_by_sql(client, subject, &subject.key, true, true, MapKeys::Create)?;
                        apply_keys(client, cat, subject, &keys, &Scope::All, LockMode::RowsOrTable)
                    }
                }
            })
        }
        pg_sys::TRIGGER_EVENT_DELETE => with_trigger_spi(td, |client| {
            // lock first: a concurrent source change must not re-create a deleted subject's set
            // SAFETY: td is this trigger's data.
            let keys = unsafe { statement_keys(client, td, subject, &subject.key, cat.subject_key_attnum, true, false, MapKeys::Lookup)? };
            if !keys.is_empty() {
                lock_keys(client, &keys, LockMode::RowsOrTable)?;
                let d = plan(client, &PlanKind::Delete, &[int8_array()], || EMPTY_SQL.to_owned())?;
                client.update(&*d, None, &[keys.into()])?;
            }
            Ok(())
        }),
        _ => with_trigger_spi(td, |client| {
            let p = plan(client, &PlanKind::Truncate, &[], || TRUNCATE_SQL.to_owned())?;
            client.update(&*p, None, &[])?;
            Ok(())
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// The row-only path: an UPDATE that changed only columns read by segments over the subject row
// ---------------------------------------------------------------------------------------------
//
// In READ COMMITTED the UPDATE itself holds the subject row's lock until commit, and every other
// maintainer of a row-only segment's bit takes that lock too (other UPDATEs and DELETEs of the
// row; consent changes and refresh batches lock it FOR SHARE before evaluating; definitions lock
// the table), while source triggers recompute only the segments that read their source. So the
// affected bits can be evaluated from the new row with a fresh snapshot and no membership lock,
// and written as a merge into the latest version of the membership row (ON CONFLICT DO UPDATE
// evaluates its SET on that version): one query per statement ([`row_apply_sql`]).

pub(super) fn row_path_applies(cat: &SegCatalog, u: &SubjectUpdate) -> bool {
    read_committed()
        && u.rekeyed.is_empty()
        && !u.affected.is_empty()
        && u.changed.len() < bulk_subjects()
        && cat.segments.iter().filter(|s| u.affected.contains(&s.id)).all(|s| s.sources.is_empty())
}

/// The row-only recompute of the subjects $1 for the `affected` segments, in one statement:
/// evaluate them from the new rows (transition table mseg_new), and where a set moved merge the
/// new bits into the latest version of the membership row (ON CONFLICT DO UPDATE evaluates its SET
/// on that version) and record the event. The joined and left ids are those of the affected
/// segments against the stored set the evaluation read; `merged` is that stored set with the
/// affected ids replaced by the new ones, so `merged − stored` joined and `stored − merged` left.
/// One statement, not an evaluation and then one write per moved subject: an UPDATE that moves a
/// set in most statements paid for the second query (issue 17).
pub(super) fn row_apply_sql(cat: &SegCatalog, subject: &SubjectTable, affected: &[i32]) -> String {
    let ids = affected.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    format!(
        "WITH n AS MATERIALIZED (SELECT e.subject_key, e.segs AS new, \
                COALESCE(m.segments, '{{}}'::pg_catalog.int4[]) AS stored, \
                mseg._segments_merge(m.segments, '{{{ids}}}'::pg_catalog.int4[], e.segs) AS merged \
              FROM ({eval} WHERE {id} OPERATOR(pg_catalog.=) ANY ($1)) e \
              LEFT JOIN mseg.memberships m ON m.subject_key OPERATOR(pg_catalog.=) e.subject_key), \
         d AS MATERIALIZED (SELECT n.subject_key, n.new, mseg._segments_minus(n.merged, n.stored) AS joined, \
                mseg._segments_minus(n.stored, n.merged) AS left_segments FROM n \
              WHERE n.merged OPERATOR(pg_catalog.<>) n.stored), \
         w AS (INSERT INTO mseg.memberships AS m (subject_key, segments, updated_at) \
               SELECT d.subject_key, d.new, pg_catalog.now() FROM d ORDER BY d.subject_key \
               ON CONFLICT (subject_key) DO UPDATE SET updated_at = EXCLUDED.updated_at, \
                 segments = mseg._segments_merge(m.segments, '{{{ids}}}'::pg_catalog.int4[], EXCLUDED.segments)) \
         INSERT INTO mseg.membership_events (subject_key, joined, left_segments) \
         SELECT d.subject_key, d.joined, d.left_segments FROM d",
        eval = eval_select(cat, subject, "mseg_new", &Scope::Only(affected.to_vec())),
        id = subject.id_of_row("s"),
    )
}

pub(super) fn update_row_segments(
    client: &mut SpiClient<'_>,
    cat: &SegCatalog,
    subject: &SubjectTable,
    keys: &[i64],
    affected: &[i32],
) -> MsegResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let apply = plan(client, &PlanKind::RowApply(affected.to_vec()), &[int8_array()], || row_apply_sql(cat, subject, affected))?;
    client.update(&*apply, None, &[crate::sql_array::int8(keys)])?;
    Ok(())
}

/// Lock the subject rows of `keys` FOR SHARE (see the row-only path): consent changes and refresh
/// batches, which recompute every segment, take them before evaluating.
/// The lock needs a privilege `mseg_upkeep` does not have (UPDATE), so it is taken as the table's
/// owner: a row lock runs no code of the table.
pub(super) fn lock_subject_rows(client: &mut SpiClient<'_>, cat: &SegCatalog, subject: &SubjectTable, keys: &[i64]) -> MsegResult<()> {
    if subject.mapped {
        // the owner may not read mseg.subject_ids: the keys' texts are looked up here first
        let t = client.update(
            "SELECT pg_catalog.array_agg(subject_key) FROM mseg.subject_ids WHERE subject_id OPERATOR(pg_catalog.=) ANY ($1)",
            None,
            &[crate::sql_array::int8(keys)],
        )?;
        let texts = t.first().get_one::<Vec<String>>()?.unwrap_or_default();
        let sql = || {
            format!(
                "SELECT 1 FROM {rel} s WHERE {key} OPERATOR(pg_catalog.=) ANY ({arr}) ORDER BY {key} FOR SHARE",
                rel = subject.name,
                key = subject.row_key("s"),
                arr = format!("$1::pg_catalog.text[]::{}[]", subject.key_type),
            )
        };
        let lock = plan(client, &PlanKind::SubjectLock, &[pgrx::PgOid::BuiltIn(pgrx::PgBuiltInOids::TEXTARRAYOID)], sql)?;
        return catalog::run_as(cat.subject_owner, || {
            client.update(&*lock, None, &[texts.into()])?;
            Ok(())
        });
    }
    let sql = || {
        format!(
            "SELECT 1 FROM {rel} s WHERE s.{key} OPERATOR(pg_catalog.=) ANY ($1) ORDER BY s.{key} FOR SHARE",
            rel = subject.name,
            key = quote_identifier(&subject.key)
        )
    };
    let lock = plan(client, &PlanKind::SubjectLock, &[int8_array()], sql)?;
    catalog::run_as(cat.subject_owner, || {
        client.update(&*lock, None, &[crate::sql_array::int8(keys)])?;
        Ok(())
    })
}

/// Recompute `keys` (already locked) for `scope`.
pub(super) fn apply_locked(
    client: &mut SpiClient<'_>,
    cat: &SegCatalog,
    subject: &SubjectTable,
    keys: &[i64],
    scope: &Scope,
) -> MsegResult<()> {
    apply_locked_with(client, cat, subject, keys, scope, false)
}

/// [`apply_locked`]; `batch`: `keys` is a bounded batch (see [`apply_sql`]).
pub(super) fn apply_locked_with(
    client: &mut SpiClient<'_>,
    cat: &SegCatalog,
    subject: &SubjectTable,
    keys: &[i64],
    scope: &Scope,
    batch: bool,
) -> MsegResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let bulk = keys.len() >= bulk_subjects();
    let kind = PlanKind::Apply(scope.clone(), bulk, batch);
    let apply = plan(client, &kind, &[int8_array()], || apply_sql(cat, subject, scope, bulk, batch))?;
    planned_for(bulk, || {
        client.update(&*apply, None, &[crate::sql_array::int8(keys)])?;
        Ok(())
    })
}

/// Run an upkeep query `f`; for a bulk statement with a plan made for this execution (worth its few
/// milliseconds: the generic plan assumes a handful of subjects).
pub(super) fn planned_for<T>(bulk: bool, f: impl FnOnce() -> MsegResult<T>) -> MsegResult<T> {
    if bulk {
        catalog::with_setting(c"plan_cache_mode", c"force_custom_plan", f)
    } else {
        f()
    }
}

/// Statement-level AFTER trigger on the subject table and every registered source table.
#[pg_trigger]
pub(super) fn segments_trigger<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, std::convert::Infallible> {
    let td = trigger.trigger_data();
    boundary(|| unsafe { on_statement(td) });
    Ok(None)
}

/// The ids of an int4[] argument: the array's own data where it has no NULL (every stored set and
/// scope), else its elements without the NULLs (an evaluation: NULL where not a member).
fn set_ids<'a>(a: &'a Option<pgrx::Array<'a, i32>>) -> Cow<'a, [i32]> {
    match a {
        None => Cow::Borrowed(&[]),
        Some(a) => match a.as_slice() {
            Ok(ids) => Cow::Borrowed(ids),
            Err(_) => Cow::Owned(a.iter().flatten().collect()),
        },
    }
}

/// A set as the int4[] these functions return, built in one call (`sql_array`): pgrx's `Vec<i32>`
/// goes element by element, which was most of these functions' cost (a load recomputing a source
/// calls them once or twice per subject).
pub(super) struct SegmentIds(pg_sys::Datum);

impl SegmentIds {
    fn new(ids: &[i32]) -> Self {
        SegmentIds(crate::sql_array::int4_datum(ids))
    }
}

pgrx::impl_sql_translatable!(SegmentIds, "INT[]");

// SAFETY: the datum is an int4[] made in the function's memory context, the declared result type.
unsafe impl pgrx::callconv::BoxRet for SegmentIds {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut pgrx::callconv::FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        unsafe { fcinfo.return_raw_datum(self.0) }
    }
}

/// Internal: a subject's whole new set after a recompute of the segments in `scope`: the stored
/// ids outside the scope and the `evaluated` ids (NULL where the subject is not a member), in id
/// order like every stored set. One call instead of one `= ANY` test per carried segment.
#[pg_extern(immutable, parallel_safe, name = "_segments_merge")]
pub(super) fn segments_merge(
    stored: Option<pgrx::Array<i32>>,
    scope: Option<pgrx::Array<i32>>,
    evaluated: Option<pgrx::Array<i32>>,
) -> SegmentIds {
    let scope = set_ids(&scope);
    let mut set: Vec<i32> = set_ids(&stored).iter().copied().filter(|id| !scope.contains(id)).collect();
    set.extend_from_slice(&set_ids(&evaluated));
    set.sort_unstable();
    set.dedup();
    SegmentIds::new(&set)
}

/// Internal: the ids of set `a` that are not in set `b`, in id order (joined / left segments).
#[pg_extern(immutable, parallel_safe, name = "_segments_minus")]
pub(super) fn segments_minus(a: Option<pgrx::Array<i32>>, b: Option<pgrx::Array<i32>>) -> SegmentIds {
    let b = set_ids(&b);
    let mut out: Vec<i32> = set_ids(&a).iter().copied().filter(|id| !b.contains(id)).collect();
    out.sort_unstable();
    out.dedup();
    SegmentIds::new(&out)
}

/// Internal: recompute one subject after a change of its legal basis (called by consent functions).
#[pg_extern(volatile, parallel_unsafe, name = "_segments_refresh_subject")]
pub(super) fn segments_refresh_subject(subject: Option<i64>) -> bool {
    boundary(|| {
        let Some(key) = subject else { return Ok(false) };
        unsafe { pg_sys::AcceptInvalidationMessages() };
        let cat = cached_catalog()?;
        let Some(subject) = cat.subject.clone() else {
            return Ok(false);
        };
        if cat.segments.is_empty() {
            return Ok(false);
        }
        catalog::as_upkeep(|| {
            catalog::with_setting(c"plan_cache_mode", c"force_generic_plan", || {
                Spi::connect_mut(|client| {
                    lock_subject_rows(client, &cat, &subject, &[key])?;
                    apply_keys(client, &cat, &subject, &[key], &Scope::All, LockMode::Rows)
                })
            })
        })?;
        Ok(true)
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn segment_set_merge_and_difference() {
        let merged = Spi::get_one::<Vec<i32>>("SELECT mseg._segments_merge('{1,5,9}', '{5,7}', '{7,NULL,2}')").unwrap();
        assert_eq!(merged, Some(vec![1, 2, 7, 9]), "stored ids outside the scope kept, evaluated ids added, sorted");
        let merged = Spi::get_one::<Vec<i32>>("SELECT mseg._segments_merge(NULL, '{5}', '{NULL}')").unwrap();
        assert_eq!(merged, Some(vec![]));
        let minus = Spi::get_one::<Vec<i32>>("SELECT mseg._segments_minus('{1,2,3}', '{2,4}')").unwrap();
        assert_eq!(minus, Some(vec![1, 3]));
        let minus = Spi::get_one::<Vec<i32>>("SELECT mseg._segments_minus('{}', NULL)").unwrap();
        assert_eq!(minus, Some(vec![]));
        // the results are built by hand (SegmentIds): a real int4[], never NULL, usable as one
        let empty = Spi::get_one::<String>(
            "SELECT pg_typeof(mseg._segments_merge(NULL, NULL, NULL))::text || ' ' || mseg._segments_merge(NULL, NULL, NULL)::text",
        )
        .unwrap();
        assert_eq!(empty.as_deref(), Some("integer[] {}"));
        let roundtrip = Spi::get_one::<bool>(
            "SELECT mseg._segments_minus(mseg._segments_merge('{3,1}', '{}', '{2}'), '{1}') OPERATOR(pg_catalog.=) '{2,3}'::int4[] \
               AND pg_catalog.array_ndims(mseg._segments_merge('{3,1}', '{}', '{2}')) OPERATOR(pg_catalog.=) 1",
        )
        .unwrap();
        assert_eq!(roundtrip, Some(true));
    }
}
