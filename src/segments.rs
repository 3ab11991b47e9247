//! Microsegments: definitions checked with PostgreSQL's own parser, and memberships kept exact by
//! statement-level triggers.
//!
//! Storage: `mseg.memberships` holds one row per subject with the array of segment ids it
//! belongs to, so one change to one subject rewrites at most one row, whatever the number of
//! segments. Every change of a set is appended to `mseg.membership_events` (joined / left).
//!
//! Upkeep: one static trigger function, `mseg.segments_trigger()`, fires once per statement on
//! the subject table and on every registered source table, with transition tables. It recomputes
//! the *set* of the affected subjects (idempotent; no counted deltas) with one generated query
//! that evaluates every segment and the subject's legal basis for each segment's purpose. The
//! generated SQL lives only in backend memory as prepared plans, rebuilt when the catalog changes,
//! so pg_dump/pg_restore need nothing but the configuration tables.
//!
//! Concurrency: before evaluating, a statement locks the membership rows of the subjects it
//! touches (creating empty rows where needed), then evaluates with a fresh snapshot. In READ
//! COMMITTED the second of two writers on one subject waits and then sees the first one's
//! committed data; in REPEATABLE READ and SERIALIZABLE the rows are written, not only locked, so
//! the second writer gets a serialization failure instead of evaluating a stale snapshot.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::ffi::{c_void, CStr, CString};
use std::rc::Rc;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, OwnedPreparedStatement, SpiClient};
use pgrx::{PgRelation, PgTryBuilder};

use crate::bulk_predicates::{BulkPredicate, SourceAggregates};
use crate::catalog;
use crate::error::{boundary, Code, MsegError, Result as MsegResult};
use crate::keys;
use crate::progress;
use crate::row_predicates::RowPredicates;

// ---------------------------------------------------------------------------------------------
// Catalog snapshot
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct SubjectTable {
    pub relid: pg_sys::Oid,
    pub key: String,
    pub name: String,
}

#[derive(Clone, Debug)]
struct SegmentDef {
    id: i32,
    name: String,
    purpose: String,
    canonical: String,
    reads_sensitive: bool,
    subject_columns: Vec<String>,
    /// attribute numbers of `subject_columns` in the subject table
    subject_attnums: Vec<i16>,
    /// the sources it reads, with their inheritance children (a change to a child's rows is a
    /// change to what a predicate over the parent reads)
    sources: Vec<pg_sys::Oid>,
}

#[derive(Clone, Debug)]
struct Source {
    relid: pg_sys::Oid,
    key: String,
    key_attnum: i16,
}

#[derive(Default)]
struct SegCatalog {
    subject: Option<SubjectTable>,
    segments: Vec<SegmentDef>,
    sources: Vec<Source>,
    subject_key_attnum: i16,
    /// every subject column some predicate reads (attribute numbers, sorted)
    read_columns: Vec<i16>,
    /// per segment (same order as `segments`): the positions in `read_columns` of what it reads
    segment_reads: Vec<Vec<usize>>,
    /// the row-only predicates (index = position in `segments`), compiled on first use
    row_predicates: OnceCell<Option<RowPredicates>>,
    /// the bulk forms of the predicates with sources (index = position in `segments`), on first use
    bulk_predicates: OnceCell<Vec<Option<BulkPredicate>>>,
}

impl SegCatalog {
    /// The compiled row-only predicates, if they fit the subject table's descriptor `desc`.
    /// SAFETY: `desc` is the subject table's current tuple descriptor.
    unsafe fn row_predicates(&self, desc: pg_sys::TupleDesc) -> Option<&RowPredicates> {
        let compiled = self.row_predicates.get_or_init(|| {
            let subject = self.subject.as_ref()?;
            let texts: Vec<Option<&str>> = self.segments.iter().map(|s| s.sources.is_empty().then_some(s.canonical.as_str())).collect();
            RowPredicates::compile(&subject.name, desc, &texts).ok()
        });
        compiled.as_ref().filter(|c| c.fits(desc))
    }

    /// The bulk form of segment number `i` (position in `segments`), if it has one.
    fn bulk_predicate(&self, i: usize) -> Option<&BulkPredicate> {
        let forms = self.bulk_predicates.get_or_init(|| {
            let Some(subject) = self.subject.as_ref() else {
                return Vec::new();
            };
            let texts: Vec<Option<&str>> = self.segments.iter().map(|s| (!s.sources.is_empty()).then_some(s.canonical.as_str())).collect();
            // a predicate that no longer analyses fails its SQL evaluation anyway; here it is only not rewritten
            crate::bulk_predicates::compile(&subject.name, subject.relid, self.subject_key_attnum, &texts).unwrap_or_default()
        });
        forms.get(i).and_then(|f| f.as_ref())
    }
}

pub fn subject_table() -> MsegResult<Option<SubjectTable>> {
    catalog::select(|c| {
        let t = c.select("SELECT relid::pg_catalog.oid, key_column::pg_catalog.text FROM mseg.subject_tables", None, &[])?;
        if t.is_empty() {
            return Ok(None);
        }
        let row = t.first();
        let relid = row.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid);
        let key = row.get::<String>(2)?.unwrap_or_default();
        Ok(Some(SubjectTable { relid, name: catalog::relation_name(relid), key }))
    })
}

fn require_subject_table() -> MsegResult<SubjectTable> {
    subject_table()?.ok_or_else(|| {
        MsegError::new(Code::SubjectTable, "no subject table is registered")
            .hint("Register it first: SELECT mseg.register_subjects('public.customers', key_column => 'customer_id').")
    })
}

fn load_catalog() -> MsegResult<SegCatalog> {
    let subject = subject_table()?;
    let (segments, sources) = catalog::select(|c| {
        let mut segments = Vec::new();
        for row in c.select(
            "SELECT segment_id, name, purpose, canonical, reads_sensitive, subject_columns::pg_catalog.text[], \
                    ARRAY(WITH RECURSIVE r(relid) AS (SELECT pg_catalog.unnest(g.sources)::pg_catalog.oid \
                            UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN r ON i.inhparent OPERATOR(pg_catalog.=) r.relid) \
                          SELECT r.relid::pg_catalog.int8 FROM r) \
             FROM mseg.segments g ORDER BY segment_id",
            None,
            &[],
        )? {
            segments.push(SegmentDef {
                id: row.get::<i32>(1)?.unwrap_or(0),
                name: row.get::<String>(2)?.unwrap_or_default(),
                purpose: row.get::<String>(3)?.unwrap_or_default(),
                canonical: row.get::<String>(4)?.unwrap_or_default(),
                reads_sensitive: row.get::<bool>(5)?.unwrap_or(false),
                subject_columns: row.get::<Vec<String>>(6)?.unwrap_or_default(),
                subject_attnums: Vec::new(),
                sources: row.get::<Vec<i64>>(7)?.unwrap_or_default().into_iter().map(|o| pg_sys::Oid::from(o as u32)).collect(),
            });
        }
        let mut sources = Vec::new();
        for row in c.select("SELECT relid::pg_catalog.oid, key_column::pg_catalog.text FROM mseg.sources", None, &[])? {
            let relid = row.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid);
            let key = row.get::<String>(2)?.unwrap_or_default();
            let key_attnum = attnum(relid, &key).unwrap_or(0);
            sources.push(Source { relid, key, key_attnum });
        }
        Ok((segments, sources))
    })?;
    let mut segments = segments;
    let mut subject_key_attnum = 0;
    if let Some(subject) = &subject {
        subject_key_attnum = attnum(subject.relid, &subject.key).unwrap_or(0);
        for seg in &mut segments {
            seg.subject_attnums = seg.subject_columns.iter().filter_map(|c| attnum(subject.relid, c)).collect();
        }
    }
    let mut read_columns: Vec<i16> = segments.iter().flat_map(|s| s.subject_attnums.iter().copied()).collect();
    read_columns.sort_unstable();
    read_columns.dedup();
    let segment_reads =
        segments.iter().map(|s| s.subject_attnums.iter().filter_map(|a| read_columns.binary_search(a).ok()).collect()).collect();
    Ok(SegCatalog {
        subject,
        segments,
        sources,
        subject_key_attnum,
        read_columns,
        segment_reads,
        row_predicates: OnceCell::new(),
        bulk_predicates: OnceCell::new(),
    })
}

fn attnum(relid: pg_sys::Oid, column: &str) -> Option<i16> {
    let c = CString::new(column).ok()?;
    // SAFETY: a syscache lookup; returns InvalidAttrNumber (0) when there is no such column.
    let n = unsafe { pg_sys::get_attnum(relid, c.as_ptr()) };
    (n > 0).then_some(n)
}

// ---------------------------------------------------------------------------------------------
// Generated SQL
// ---------------------------------------------------------------------------------------------

/// Which segments a recompute evaluates: all of them, or only those whose inputs changed (the
/// stored set is kept for the others).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Scope {
    All,
    Only(Vec<i32>),
}

impl Scope {
    fn includes(&self, id: i32) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(ids) => ids.contains(&id),
        }
    }
}

/// How an evaluation reads the sources: through the predicates' subqueries, one subplan per
/// subquery and subject, or (statements over many subjects) in the predicates' bulk form, one
/// aggregate query per source and subject (see bulk_predicates.rs).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reads {
    PerSubject,
    Bulk,
}

/// `SELECT subject_key, segs FROM <from> s …`: the segments in `scope` evaluated for every row of
/// `from`, each ANDed with the legal basis of the segment's purpose (see mseg._processable, the
/// same rule).
fn eval_select(cat: &SegCatalog, subject: &SubjectTable, from: &str, scope: &Scope) -> String {
    let (set, joins) = eval_parts(cat, subject, scope, false, Reads::PerSubject);
    format!("SELECT s.{}::pg_catalog.int8 AS subject_key, {set} AS segs FROM {from} s{joins}", quote_identifier(&subject.key))
}

/// The new set of the subject row s for the segments in `scope`, and the joins it needs (the
/// subject's legal-basis state, the aggregate queries over the sources). With `carry`, the set also
/// holds the stored ids of the segments outside `scope` (the caller joins the subject's membership
/// row as m), so it is the subject's whole new set, in id order like every stored set; without it,
/// only the ids in scope.
fn eval_parts(cat: &SegCatalog, subject: &SubjectTable, scope: &Scope, carry: bool, reads: Reads) -> (String, String) {
    let key = format!("s.{}", quote_identifier(&subject.key));
    let in_scope: Vec<usize> = (0..cat.segments.len()).filter(|&i| scope.includes(cat.segments[i].id)).collect();
    let segments: Vec<&SegmentDef> = in_scope.iter().map(|&i| &cat.segments[i]).collect();
    let mut purposes: Vec<&str> = segments.iter().map(|s| s.purpose.as_str()).collect();
    purposes.sort_unstable();
    purposes.dedup();
    let alias = |p: &str| purposes.iter().position(|x| *x == p).unwrap_or(0) + 1;
    let carry = carry && *scope != Scope::All;
    // segments grouped by their legal basis (purpose; explicit consent for sensitive data), so the
    // basis is evaluated once per subject and group, not once per segment
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    let mut aggregates = SourceAggregates::default();
    for (&n, seg) in in_scope.iter().zip(&segments) {
        let i = alias(&seg.purpose);
        let pred = match (reads, cat.bulk_predicate(n)) {
            (Reads::Bulk, Some(b)) => {
                let values: Vec<String> = b.values.iter().map(|v| aggregates.value(v)).collect();
                b.render(|v| values[v].clone())
            }
            _ => seg.canonical.clone(),
        };
        // Art. 9: a predicate over sensitive data needs explicit consent
        let basis = crate::consent::processable(i, seg.reads_sensitive);
        let element = format!("CASE WHEN ({pred}) THEN {id} END", id = seg.id);
        match groups.iter_mut().find(|(b, _)| *b == basis) {
            Some((_, elements)) => elements.push(element),
            None => groups.push((basis, vec![element])),
        }
    }
    // NULL where the basis does not hold; NULL elements are dropped by _segments_merge
    let evaluated = groups
        .iter()
        .map(|(basis, elements)| format!("(CASE WHEN {basis} THEN ARRAY[{}]::pg_catalog.int4[] END)", elements.join(", ")))
        .collect::<Vec<_>>()
        .join(" OPERATOR(pg_catalog.||) ");
    let evaluated = if evaluated.is_empty() { "NULL::pg_catalog.int4[]".to_owned() } else { evaluated };
    let set = if carry {
        let ids: Vec<String> = segments.iter().map(|s| s.id.to_string()).collect();
        format!("mseg._segments_merge(m.segments, '{{{}}}'::pg_catalog.int4[], {evaluated})", ids.join(","))
    } else {
        format!("mseg._segments_merge(NULL, NULL, {evaluated})")
    };
    let mut joins = crate::consent::joins(&purposes, &key);
    if reads == Reads::Bulk {
        joins.push_str(&aggregates.joins(&key));
    }
    (set, joins)
}

/// Recompute the subjects in $1 for the segments in `scope`, write the sets that changed (creating
/// rows where needed) and their events. With a partial scope the stored ids outside it are kept.
/// A key without a subject row (deleted meanwhile) gets the empty set. `bulk`: the sources are
/// read in their bulk form.
fn apply_sql(cat: &SegCatalog, subject: &SubjectTable, scope: &Scope, bulk: bool) -> String {
    let reads = if bulk { Reads::Bulk } else { Reads::PerSubject };
    let (set, joins) = eval_parts(cat, subject, scope, true, reads);
    let write = write_sets_sql(SetWrite::Upsert);
    format!(
        "WITH n AS MATERIALIZED (SELECT mseg_k.k AS subject_key, m.segments AS stored, \
                CASE WHEN s.{key} IS NULL THEN '{{}}'::pg_catalog.int4[] ELSE {set} END AS new \
              FROM pg_catalog.unnest($1::pg_catalog.int8[]) mseg_k(k) \
              LEFT JOIN {rel} s ON s.{key} OPERATOR(pg_catalog.=) mseg_k.k{joins} \
              LEFT JOIN mseg.memberships m ON m.subject_key OPERATOR(pg_catalog.=) mseg_k.k), \
         d AS MATERIALIZED (SELECT * FROM n WHERE COALESCE(n.stored, '{{}}'::pg_catalog.int4[]) IS DISTINCT FROM n.new), \
         {write} \
         INSERT INTO mseg.membership_events (subject_key, joined, left_segments) \
         SELECT d.subject_key, mseg._segments_minus(d.new, d.stored), mseg._segments_minus(d.stored, d.new) FROM d",
        rel = subject.name,
        key = quote_identifier(&subject.key),
    )
}

/// How the changed sets are written (see [`write_sets_sql`]).
#[derive(Clone, Copy)]
enum SetWrite {
    /// every row by `INSERT … ON CONFLICT DO UPDATE`: right whatever other sessions do, and no
    /// join with the memberships table (whose plan could scan all of it for a batch of subjects)
    Upsert,
    /// missing rows by a plain insert (half the cost of an upsert), stored ones by an upsert: for
    /// callers holding the memberships table lock since before the statement's snapshot
    InsertOrUpsert,
}

/// The CTEs writing the changed sets of CTE `d (subject_key, new, stored)`; `stored` is NULL where
/// the subject has no membership row.
fn write_sets_sql(how: SetWrite) -> String {
    const UPSERT: &str = "ON CONFLICT (subject_key) DO UPDATE SET segments = EXCLUDED.segments, updated_at = EXCLUDED.updated_at";
    let insert = |name: &str, filter: &str, conflict: &str| {
        format!(
            "{name} AS (INSERT INTO mseg.memberships AS m (subject_key, segments, updated_at) \
                   SELECT d.subject_key, d.new, pg_catalog.now() FROM d{filter} {conflict})"
        )
    };
    match how {
        SetWrite::Upsert => insert("u", "", UPSERT),
        SetWrite::InsertOrUpsert => {
            format!("{}, {}", insert("i", " WHERE d.stored IS NULL", ""), insert("u", " WHERE d.stored IS NOT NULL", UPSERT))
        }
    }
}

/// The row-lock protocol: create the membership rows of $1 where missing and write the others, in
/// key order. A write, not only a lock: in REPEATABLE READ / SERIALIZABLE a concurrent writer of
/// the same subject then gets a serialization failure instead of evaluating a stale snapshot; in
/// READ COMMITTED the second writer waits, and its next statement sees the first one's commit.
const LOCK_SQL: &str = "INSERT INTO mseg.memberships AS m (subject_key) \
     SELECT k FROM pg_catalog.unnest($1::pg_catalog.int8[]) k ORDER BY k \
     ON CONFLICT (subject_key) DO UPDATE SET updated_at = pg_catalog.now()";

/// A statement that touches at least this many subjects (`mseg.bulk_statement_subjects`) is
/// maintained in bulk: in READ COMMITTED it takes the memberships table lock instead of one row lock
/// per subject (no pass that writes every row first), and it reads the sources in the predicates'
/// bulk form (bulk_predicates.rs).
fn bulk_subjects() -> usize {
    crate::gucs::BULK_STATEMENT_SUBJECTS.get().max(1) as usize
}
/// Conflicts with every writer of memberships (ROW EXCLUSIVE) and with itself, not with readers.
const TABLE_LOCK_SQL: &str = "LOCK TABLE mseg.memberships IN SHARE ROW EXCLUSIVE MODE";

/// Evaluate the new subjects (transition table mseg_new), write the sets that differ from a stored
/// one (normally none is stored: the subject is new) and their events. `bulk`: the sources are read
/// in their bulk form. `locked`: the caller holds the memberships
/// table lock in READ COMMITTED, so this statement's snapshot sees every membership row there will
/// be, and new rows are plainly inserted (half the cost of an ON CONFLICT insert).
fn insert_sql(cat: &SegCatalog, subject: &SubjectTable, bulk: bool, locked: bool) -> String {
    let key = quote_identifier(&subject.key);
    let reads = if bulk { Reads::Bulk } else { Reads::PerSubject };
    let (set, joins) = eval_parts(cat, subject, &Scope::All, false, reads);
    let write = write_sets_sql(if locked { SetWrite::InsertOrUpsert } else { SetWrite::Upsert });
    format!(
        "WITH n AS MATERIALIZED (SELECT s.{key}::pg_catalog.int8 AS subject_key, {set} AS new, m.segments AS stored \
              FROM mseg_new s{joins} LEFT JOIN mseg.memberships m ON m.subject_key OPERATOR(pg_catalog.=) s.{key}), \
         d AS MATERIALIZED (SELECT * FROM n WHERE COALESCE(n.stored, '{{}}'::pg_catalog.int4[]) IS DISTINCT FROM n.new), \
         {write} \
         INSERT INTO mseg.membership_events (subject_key, joined, left_segments) \
         SELECT d.subject_key, mseg._segments_minus(d.new, d.stored), mseg._segments_minus(d.stored, d.new) FROM d"
    )
}

/// Remove the membership rows of deleted subjects ($1), recording what they left.
const DELETE_SQL: &str = "WITH d AS (DELETE FROM mseg.memberships m WHERE m.subject_key OPERATOR(pg_catalog.=) ANY ($1) \
                RETURNING m.subject_key, m.segments) \
     INSERT INTO mseg.membership_events (subject_key, joined, left_segments) \
     SELECT subject_key, '{}', segments FROM d WHERE pg_catalog.cardinality(segments) OPERATOR(pg_catalog.>) 0";

const TRUNCATE_SQL: &str = "WITH d AS (DELETE FROM mseg.memberships RETURNING subject_key, segments) \
     INSERT INTO mseg.membership_events (subject_key, joined, left_segments) \
     SELECT subject_key, '{}', segments FROM d WHERE pg_catalog.cardinality(segments) OPERATOR(pg_catalog.>) 0";

// ---------------------------------------------------------------------------------------------
// Plans prepared once per backend and catalog generation
// ---------------------------------------------------------------------------------------------

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum PlanKind {
    Apply(Scope, bool),
    RowEval(Vec<i32>),
    RowWrite(Vec<i32>),
    SubjectLock,
    Lock,
    Insert { bulk: bool, locked: bool },
    Delete,
    Truncate,
}

/// Partial scopes make one plan per combination of changed inputs; past this many the cache starts over.
const MAX_CACHED_PLANS: usize = 256;

struct PlanCache {
    generation: u64,
    catalog: Option<Rc<SegCatalog>>,
    plans: HashMap<PlanKind, Rc<OwnedPreparedStatement>>,
}

thread_local! {
    static PLANS: RefCell<PlanCache> = RefCell::new(PlanCache { generation: 0, catalog: None, plans: HashMap::new() });
}

fn cached_catalog() -> MsegResult<Rc<SegCatalog>> {
    let generation = keys::cache_generation();
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

fn plan(
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

fn int8_array() -> pgrx::PgOid {
    pgrx::PgOid::BuiltIn(pgrx::PgBuiltInOids::INT8ARRAYOID)
}

fn read_committed() -> bool {
    // SAFETY: reading a PostgreSQL global.
    unsafe { pg_sys::XactIsoLevel < pg_sys::XACT_REPEATABLE_READ as i32 }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LockMode {
    /// one row lock per subject, whatever the number (schedulable refresh: blocks no writer)
    Rows,
    /// the table lock for big READ COMMITTED statements
    RowsOrTable,
    /// the table lock in READ COMMITTED (segment (re)definitions, which lock the maintained tables)
    Table,
}

/// Take part in the lock protocol for `keys` (sorted, distinct).
fn lock_keys(client: &mut SpiClient<'_>, keys: &[i64], mode: LockMode) -> MsegResult<()> {
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
    client.update(&*lock, None, &[keys.to_vec().into()])?;
    Ok(())
}

/// Lock and recompute the segments in `scope` for `keys` (sorted, distinct).
fn apply_keys(
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

// ---------------------------------------------------------------------------------------------
// Transition tables read directly
// ---------------------------------------------------------------------------------------------

/// A scan of one transition table (a tuplestore of the statement's old or new rows) with its own
/// read pointer, so the SQL that reads the same table through SPI is not disturbed. Finding which
/// subjects and columns a statement changed this way costs no query at all.
struct TransitionScan {
    store: *mut pg_sys::Tuplestorestate,
    slot: *mut pg_sys::TupleTableSlot,
    pointer: i32,
}

impl TransitionScan {
    /// SAFETY: `store` is a live transition table of a relation with descriptor `desc`.
    unsafe fn open(store: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc) -> Option<Self> {
        if store.is_null() {
            return None;
        }
        let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsMinimalTuple);
        let pointer = pg_sys::tuplestore_alloc_read_pointer(store, pg_sys::EXEC_FLAG_REWIND as i32);
        pg_sys::tuplestore_select_read_pointer(store, pointer);
        pg_sys::tuplestore_rescan(store);
        Some(TransitionScan { store, slot, pointer })
    }

    unsafe fn next(&mut self) -> bool {
        pg_sys::tuplestore_select_read_pointer(self.store, self.pointer);
        pg_sys::tuplestore_gettupleslot(self.store, true, false, self.slot)
    }

    /// The current row's value of attribute `attnum` (1-based), None when NULL.
    unsafe fn value(&self, attnum: i16) -> Option<pg_sys::Datum> {
        if i32::from((*self.slot).tts_nvalid) < i32::from(attnum) {
            pg_sys::slot_getsomeattrs_int(self.slot, i32::from(attnum));
        }
        let i = (attnum - 1) as usize;
        if *(*self.slot).tts_isnull.add(i) {
            None
        } else {
            Some(*(*self.slot).tts_values.add(i))
        }
    }

    /// The current row's integer key in attribute `attnum` of type `typid` (int2/int4/int8).
    unsafe fn key(&self, attnum: i16, typid: pg_sys::Oid) -> Option<i64> {
        let d = self.value(attnum)?;
        match typid {
            pg_sys::INT8OID => Some(d.value() as i64),
            pg_sys::INT4OID => Some(i64::from(d.value() as i32)),
            pg_sys::INT2OID => Some(i64::from(d.value() as i16)),
            _ => None,
        }
    }

    unsafe fn close(self) {
        pg_sys::ExecDropSingleTupleTableSlot(self.slot);
    }
}

/// Whether two values of one type have the same binary image. Equal images mean equal values;
/// different images (a TOAST pointer, another header form) are taken as a change, which only
/// recomputes more than needed.
/// SAFETY: both are valid datums of a type with `byval` and `len`.
unsafe fn same_image(x: pg_sys::Datum, y: pg_sys::Datum, byval: bool, len: i16) -> bool {
    if byval {
        return x == y;
    }
    let (px, py) = (x.cast_mut_ptr::<u8>() as *const u8, y.cast_mut_ptr::<u8>() as *const u8);
    let (nx, ny) = match len {
        l if l > 0 => (l as usize, l as usize),
        -1 => (pgrx::varlena::varsize_any(px.cast()), pgrx::varlena::varsize_any(py.cast())),
        -2 => (CStr::from_ptr(px.cast()).to_bytes().len(), CStr::from_ptr(py.cast()).to_bytes().len()),
        _ => return false,
    };
    nx == ny && std::slice::from_raw_parts(px, nx) == std::slice::from_raw_parts(py, ny)
}

/// SAFETY: `desc` is a valid tuple descriptor and `attnum` one of its attributes.
unsafe fn attr(desc: pg_sys::TupleDesc, attnum: i16) -> Option<&'static pg_sys::FormData_pg_attribute> {
    if attnum < 1 || i32::from(attnum) > (*desc).natts {
        return None;
    }
    Some(&*crate::compat::tuple_desc_attr(desc, (attnum - 1) as usize))
}

/// Every key of one transition table, sorted and distinct; None if the key cannot be read.
unsafe fn transition_keys(store: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc, attnum: i16, out: &mut Vec<i64>) -> Option<()> {
    let typid = attr(desc, attnum)?.atttypid;
    let mut scan = TransitionScan::open(store, desc)?;
    while scan.next() {
        if let Some(k) = scan.key(attnum, typid) {
            out.push(k);
        }
    }
    scan.close();
    Some(())
}

fn sort_dedup(mut v: Vec<i64>) -> Vec<i64> {
    v.sort_unstable();
    v.dedup();
    v
}

/// What an UPDATE of the subject table changed: subjects whose key stayed and whose set may have
/// moved (recomputed for the `affected` segments), and subjects whose key changed (old and new key
/// recomputed in full).
struct SubjectUpdate {
    changed: Vec<i64>,
    rekeyed: Vec<i64>,
    affected: Vec<i32>,
}

/// Compare each row's old and new version: a segment can move only if the row changed a column
/// it reads, and a compiled row-only segment only if its predicate's truth value changed (its
/// legal basis is the same before and after). Subjects where nothing can move are left out.
/// SAFETY: `td` is the trigger data of an UPDATE statement trigger on the subject table.
unsafe fn scan_subject_update(td: &pg_sys::TriggerData, cat: &SegCatalog) -> Option<SubjectUpdate> {
    let desc = (*td.tg_relation).rd_att;
    let key_typ = attr(desc, cat.subject_key_attnum)?.atttypid;
    let (columns, reads) = (&cat.read_columns, &cat.segment_reads);
    let kinds: Vec<(bool, i16)> = columns.iter().map(|&a| attr(desc, a).map(|t| (t.attbyval, t.attlen))).collect::<Option<_>>()?;
    let compiled = cat.row_predicates(desc);
    let mut old = TransitionScan::open(td.tg_oldtable, desc)?;
    let Some(mut new) = TransitionScan::open(td.tg_newtable, desc) else {
        old.close();
        return None;
    };
    let mut row_changed = vec![false; columns.len()];
    let mut affected = vec![false; cat.segments.len()];
    let (mut changed, mut rekeyed) = (Vec::new(), Vec::new());
    let mut paired = true;
    loop {
        // an UPDATE appends each row's old and new versions together: the two tables pair up
        let (a, b) = (old.next(), new.next());
        if a != b {
            paired = false;
            break;
        }
        if !a {
            break;
        }
        let (ko, kn) = (old.key(cat.subject_key_attnum, key_typ), new.key(cat.subject_key_attnum, key_typ));
        if ko != kn {
            rekeyed.extend(ko);
            rekeyed.extend(kn);
            continue;
        }
        let Some(k) = kn else { continue };
        let mut differs = false;
        for (i, &attnum) in columns.iter().enumerate() {
            let same = match (old.value(attnum), new.value(attnum)) {
                (None, None) => true,
                (Some(x), Some(y)) => same_image(x, y, kinds[i].0, kinds[i].1),
                _ => false,
            };
            row_changed[i] = !same;
            differs |= !same;
        }
        if !differs {
            continue;
        }
        let mut moves = false;
        for (j, r) in reads.iter().enumerate() {
            if !r.iter().any(|&i| row_changed[i]) {
                continue;
            }
            let kept = match compiled {
                Some(c) if c.is_compiled(j) => c.holds(j, old.slot) == c.holds(j, new.slot),
                _ => false,
            };
            if !kept {
                affected[j] = true;
                moves = true;
            }
        }
        if let Some(c) = compiled {
            c.reset();
        }
        if moves {
            changed.push(k);
        }
    }
    old.close();
    new.close();
    if !paired {
        return None;
    }
    let affected = cat.segments.iter().zip(&affected).filter(|(_, a)| **a).map(|(s, _)| s.id).collect();
    let rekeyed = sort_dedup(rekeyed);
    let changed = sort_dedup(changed).into_iter().filter(|k| rekeyed.binary_search(k).is_err()).collect();
    Some(SubjectUpdate { changed, rekeyed, affected })
}

/// Keys of every row of both transition tables through SQL: the fallback when a table cannot be
/// read directly (it recomputes more than needed, never less).
fn keys_by_sql(client: &mut SpiClient<'_>, key: &str, old: bool, new: bool) -> MsegResult<Vec<i64>> {
    let key = quote_identifier(key);
    let mut parts = Vec::new();
    if new {
        parts.push(format!("SELECT {key}::pg_catalog.int8 AS k FROM mseg_new"));
    }
    if old {
        parts.push(format!("SELECT {key}::pg_catalog.int8 AS k FROM mseg_old"));
    }
    let sql = format!("SELECT pg_catalog.array_agg(DISTINCT k ORDER BY k) FROM ({}) x WHERE k IS NOT NULL", parts.join(" UNION ALL "));
    let t = client.update(sql.as_str(), None, &[])?;
    Ok(t.first().get_one::<Vec<i64>>()?.unwrap_or_default())
}

/// Keys of the rows of the transition tables `old`/`new`, read directly, else through SQL.
unsafe fn statement_keys(
    client: &mut SpiClient<'_>,
    td: &pg_sys::TriggerData,
    key: &str,
    attnum: i16,
    old: bool,
    new: bool,
) -> MsegResult<Vec<i64>> {
    let desc = (*td.tg_relation).rd_att;
    let mut keys = Vec::new();
    let direct = (!old || transition_keys(td.tg_oldtable, desc, attnum, &mut keys).is_some())
        && (!new || transition_keys(td.tg_newtable, desc, attnum, &mut keys).is_some());
    if direct {
        Ok(sort_dedup(keys))
    } else {
        keys_by_sql(client, key, old, new)
    }
}

// ---------------------------------------------------------------------------------------------
// The trigger
// ---------------------------------------------------------------------------------------------

/// Run `f` with SPI as the extension owner, the statement's transition tables visible, and generic
/// plans (the prepared statements are the same every time; custom plans would plan the whole
/// evaluation again on every statement).
unsafe fn with_trigger_spi(td: &pg_sys::TriggerData, f: impl FnOnce(&mut SpiClient<'_>) -> MsegResult<()>) -> MsegResult<()> {
    let tdp = td as *const pg_sys::TriggerData as *mut pg_sys::TriggerData;
    catalog::as_owner(|| {
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
fn without_jit<T>(f: impl FnOnce() -> MsegResult<T>) -> MsegResult<T> {
    catalog::with_setting(c"jit", c"off", f)
}

unsafe fn on_statement(td: &pg_sys::TriggerData) -> MsegResult<()> {
    let relid = (*td.tg_relation).rd_id;
    let cat = cached_catalog()?;
    let Some(subject) = cat.subject.clone() else {
        return Ok(());
    };
    if cat.segments.is_empty() {
        return Ok(());
    }
    let op = td.tg_event & pg_sys::TRIGGER_EVENT_OPMASK;
    if relid == subject.relid {
        return on_subject_statement(td, op, &cat, &subject);
    }
    let Some(src) = cat.sources.iter().find(|s| s.relid == relid).cloned() else {
        return Err(MsegError::new(
            Code::InvalidTable,
            format!("{} is neither the subject table nor a registered source", catalog::relation_name(relid)),
        )
        .hint("Let mseg.register_source create the segment triggers."));
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
            unsafe { statement_keys(client, td, &src.key, src.key_attnum, old, new)? }
        };
        apply_keys(client, &cat, &subject, &keys, &scope, LockMode::RowsOrTable)
    })
}

unsafe fn on_subject_statement(td: &pg_sys::TriggerData, op: u32, cat: &SegCatalog, subject: &SubjectTable) -> MsegResult<()> {
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
            if locked {
                // waits for every writer of memberships; the next statement's snapshot sees them
                client.update(TABLE_LOCK_SQL, None, &[])?;
            }
            let p = plan(client, &PlanKind::Insert { bulk, locked }, &[], || insert_sql(cat, subject, bulk, locked))?;
            planned_for(bulk, || {
                client.update(&*p, None, &[])?;
                Ok(())
            })
        }),
        pg_sys::TRIGGER_EVENT_UPDATE => {
            let scanned = scan_subject_update(td, cat);
            if let Some(u) = &scanned {
                if u.rekeyed.is_empty() && (u.changed.is_empty() || u.affected.is_empty()) {
                    return Ok(()); // no set can move (no column read changed, or no predicate changed its value): no query run
                }
            }
            with_trigger_spi(td, |client| match scanned {
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
                    let keys = keys_by_sql(client, &subject.key, true, true)?;
                    apply_keys(client, cat, subject, &keys, &Scope::All, LockMode::RowsOrTable)
                }
            })
        }
        pg_sys::TRIGGER_EVENT_DELETE => with_trigger_spi(td, |client| {
            // lock first: a concurrent source change must not re-create a deleted subject's set
            // SAFETY: td is this trigger's data.
            let keys = unsafe { statement_keys(client, td, &subject.key, cat.subject_key_attnum, true, false)? };
            if !keys.is_empty() {
                lock_keys(client, &keys, LockMode::RowsOrTable)?;
                let d = plan(client, &PlanKind::Delete, &[int8_array()], || DELETE_SQL.to_owned())?;
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
// evaluates its SET on that version): one query per statement, a second only if a set changed.

fn row_path_applies(cat: &SegCatalog, u: &SubjectUpdate) -> bool {
    read_committed()
        && u.rekeyed.is_empty()
        && !u.affected.is_empty()
        && u.changed.len() < bulk_subjects()
        && cat.segments.iter().filter(|s| u.affected.contains(&s.id)).all(|s| s.sources.is_empty())
}

fn row_eval_sql(cat: &SegCatalog, subject: &SubjectTable, affected: &[i32]) -> String {
    format!(
        "SELECT n.subject_key, n.segs, COALESCE(m.segments, '{{}}'::pg_catalog.int4[]) \
         FROM ({eval} WHERE s.{key} OPERATOR(pg_catalog.=) ANY ($1)) n \
         LEFT JOIN mseg.memberships m ON m.subject_key OPERATOR(pg_catalog.=) n.subject_key",
        eval = eval_select(cat, subject, "mseg_new", &Scope::Only(affected.to_vec())),
        key = quote_identifier(&subject.key),
    )
}

/// $1 subject, $2 its new bits among the affected ids, $3 joined, $4 left.
fn row_write_sql(affected: &[i32]) -> String {
    let ids = affected.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    format!(
        "WITH w AS (INSERT INTO mseg.memberships AS m (subject_key, segments, updated_at) VALUES ($1, $2, pg_catalog.now()) \
                    ON CONFLICT (subject_key) DO UPDATE SET updated_at = pg_catalog.now(), \
                      segments = mseg._segments_merge(m.segments, '{{{ids}}}'::pg_catalog.int4[], $2::pg_catalog.int4[])) \
         INSERT INTO mseg.membership_events (subject_key, joined, left_segments) VALUES ($1, $3, $4)"
    )
}

fn update_row_segments(
    client: &mut SpiClient<'_>,
    cat: &SegCatalog,
    subject: &SubjectTable,
    keys: &[i64],
    affected: &[i32],
) -> MsegResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let eval = plan(client, &PlanKind::RowEval(affected.to_vec()), &[int8_array()], || row_eval_sql(cat, subject, affected))?;
    let mut changes = Vec::new();
    for row in client.update(&*eval, None, &[keys.to_vec().into()])? {
        let key = row.get::<i64>(1)?.unwrap_or(0);
        let new = row.get::<Vec<i32>>(2)?.unwrap_or_default();
        let stored = row.get::<Vec<i32>>(3)?.unwrap_or_default();
        let old: Vec<i32> = stored.into_iter().filter(|id| affected.contains(id)).collect();
        let joined: Vec<i32> = new.iter().copied().filter(|id| !old.contains(id)).collect();
        let left: Vec<i32> = old.iter().copied().filter(|id| !new.contains(id)).collect();
        if !joined.is_empty() || !left.is_empty() {
            changes.push((key, new, joined, left));
        }
    }
    if changes.is_empty() {
        return Ok(());
    }
    let int4_array = pgrx::PgOid::BuiltIn(pgrx::PgBuiltInOids::INT4ARRAYOID);
    let write = plan(
        client,
        &PlanKind::RowWrite(affected.to_vec()),
        &[pgrx::PgOid::BuiltIn(pgrx::PgBuiltInOids::INT8OID), int4_array, int4_array, int4_array],
        || row_write_sql(affected),
    )?;
    for (key, new, joined, left) in changes {
        client.update(&*write, None, &[key.into(), new.into(), joined.into(), left.into()])?;
    }
    Ok(())
}

/// Lock the subject rows of `keys` FOR SHARE (see the row-only path): consent changes and refresh
/// batches, which recompute every segment, take them before evaluating.
fn lock_subject_rows(client: &mut SpiClient<'_>, subject: &SubjectTable, keys: &[i64]) -> MsegResult<()> {
    let sql = || {
        format!(
            "SELECT 1 FROM {rel} s WHERE s.{key} OPERATOR(pg_catalog.=) ANY ($1) ORDER BY s.{key} FOR SHARE",
            rel = subject.name,
            key = quote_identifier(&subject.key)
        )
    };
    let lock = plan(client, &PlanKind::SubjectLock, &[int8_array()], sql)?;
    client.update(&*lock, None, &[keys.to_vec().into()])?;
    Ok(())
}

/// Recompute `keys` (already locked) for `scope`.
fn apply_locked(client: &mut SpiClient<'_>, cat: &SegCatalog, subject: &SubjectTable, keys: &[i64], scope: &Scope) -> MsegResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let bulk = keys.len() >= bulk_subjects();
    let kind = PlanKind::Apply(scope.clone(), bulk);
    let apply = plan(client, &kind, &[int8_array()], || apply_sql(cat, subject, scope, bulk))?;
    planned_for(bulk, || {
        client.update(&*apply, None, &[keys.to_vec().into()])?;
        Ok(())
    })
}

/// Run an upkeep query `f`; for a bulk statement with a plan made for this execution (worth its few
/// milliseconds: the generic plan assumes a handful of subjects).
fn planned_for<T>(bulk: bool, f: impl FnOnce() -> MsegResult<T>) -> MsegResult<T> {
    if bulk {
        catalog::with_setting(c"plan_cache_mode", c"force_custom_plan", f)
    } else {
        f()
    }
}

/// Statement-level AFTER trigger on the subject table and every registered source table.
#[pg_trigger]
fn segments_trigger<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, std::convert::Infallible> {
    let td = trigger.trigger_data();
    boundary(|| unsafe { on_statement(td) });
    Ok(None)
}

// ---------------------------------------------------------------------------------------------
// Predicate analysis with PostgreSQL's parser
// ---------------------------------------------------------------------------------------------

#[derive(Default, Debug)]
struct Walk {
    relations: Vec<(pg_sys::Oid, Vec<i32>)>,
    foreign_functions: Vec<String>,
    forbidden: Vec<String>,
    time_dependent: bool,
    /// the query whose range table is being walked (PostgreSQL 16+ keeps a relation's selected
    /// columns in its query's `rteperminfos`, not in the range table entry)
    query: Option<std::ptr::NonNull<pg_sys::Query>>,
}

const TIME_FUNCTIONS: &[&str] = &["now", "statement_timestamp", "transaction_timestamp", "age", "timeofday", "clock_timestamp"];

unsafe fn check_function(w: &mut Walk, funcid: pg_sys::Oid) {
    if funcid == pg_sys::InvalidOid {
        return;
    }
    let name_ptr = pg_sys::get_func_name(funcid);
    let name = if name_ptr.is_null() { format!("{}", u32::from(funcid)) } else { CStr::from_ptr(name_ptr).to_string_lossy().into_owned() };
    if pg_sys::get_func_namespace(funcid) != pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE) {
        w.foreign_functions.push(name);
    } else if TIME_FUNCTIONS.contains(&name.as_str()) {
        w.time_dependent = true;
    }
}

/// The attribute numbers a relation's range table entry reads (0: the whole row; so counts an
/// entry without permission info, which parse analysis never leaves).
unsafe fn selected_columns(w: &Walk, rte: *mut pg_sys::RangeTblEntry) -> Vec<i32> {
    let query = w.query.map_or(std::ptr::null_mut(), |q| q.as_ptr());
    let Some(selected) = crate::compat::rte_selected_cols(query, rte) else {
        return vec![0];
    };
    let mut cols = Vec::new();
    let mut m = -1;
    loop {
        m = pg_sys::bms_next_member(selected, m);
        if m < 0 {
            break;
        }
        cols.push(m + pg_sys::FirstLowInvalidHeapAttributeNumber);
    }
    cols
}

#[pg_guard]
unsafe extern "C-unwind" fn walk_node(node: *mut pg_sys::Node, ctx: *mut c_void) -> bool {
    if node.is_null() {
        return false;
    }
    let w = &mut *(ctx as *mut Walk);
    match (*node).type_ {
        pg_sys::NodeTag::T_Query => {
            let outer = w.query.replace(std::ptr::NonNull::new_unchecked(node.cast()));
            let found = pg_sys::query_tree_walker(node.cast(), Some(walk_node), ctx, pg_sys::QTW_EXAMINE_RTES_BEFORE as i32);
            (*(ctx as *mut Walk)).query = outer;
            return found;
        }
        pg_sys::NodeTag::T_RangeTblEntry => {
            let rte = node as *mut pg_sys::RangeTblEntry;
            if (*rte).rtekind == pg_sys::RTEKind::RTE_RELATION {
                let cols = selected_columns(w, rte);
                w.relations.push(((*rte).relid, cols));
            }
            return false;
        }
        pg_sys::NodeTag::T_FuncExpr => check_function(w, (*(node as *mut pg_sys::FuncExpr)).funcid),
        pg_sys::NodeTag::T_OpExpr | pg_sys::NodeTag::T_DistinctExpr | pg_sys::NodeTag::T_NullIfExpr => {
            let op = node as *mut pg_sys::OpExpr;
            pg_sys::set_opfuncid(op);
            check_function(w, (*op).opfuncid);
        }
        pg_sys::NodeTag::T_ScalarArrayOpExpr => {
            let op = node as *mut pg_sys::ScalarArrayOpExpr;
            pg_sys::set_sa_opfuncid(op);
            check_function(w, (*op).opfuncid);
        }
        pg_sys::NodeTag::T_Aggref => check_function(w, (*(node as *mut pg_sys::Aggref)).aggfnoid),
        pg_sys::NodeTag::T_WindowFunc => check_function(w, (*(node as *mut pg_sys::WindowFunc)).winfnoid),
        pg_sys::NodeTag::T_SQLValueFunction => {
            let op = (*(node as *mut pg_sys::SQLValueFunction)).op;
            if op <= pg_sys::SQLValueFunctionOp::SVFOP_LOCALTIMESTAMP_N {
                w.time_dependent = true;
            } else {
                w.forbidden.push("session functions such as current_user".to_owned());
            }
        }
        _ => {}
    }
    pg_sys::expression_tree_walker(node, Some(walk_node), ctx)
}

#[derive(Debug)]
pub struct Analysis {
    pub canonical: String,
    pub sources: Vec<pg_sys::Oid>,
    pub time_dependent: bool,
    pub reads_sensitive: bool,
    pub subject_columns: Vec<String>,
}

fn invalid_predicate(message: impl Into<String>) -> MsegError {
    MsegError::new(Code::InvalidPredicate, message).hint(
        "A predicate is a boolean SQL expression over the subject row (alias s), e.g. \
         s.birth_date > date '1996-01-01' AND EXISTS (SELECT 1 FROM public.orders o WHERE o.customer_id = s.customer_id).",
    )
}

fn caught_message(e: &pg_sys::panic::CaughtError) -> String {
    match e {
        pg_sys::panic::CaughtError::PostgresError(r) => r.message().to_owned(),
        pg_sys::panic::CaughtError::ErrorReport(r) => r.message().to_owned(),
        pg_sys::panic::CaughtError::RustPanic { ereport, .. } => ereport.message().to_owned(),
    }
}

/// A predicate that parsed and analysed as one boolean expression over `relation` (alias `alias`),
/// with what it reads and its canonical (deparsed, schema-qualified) text.
pub struct CheckedPredicate {
    walk: Walk,
    pub canonical: String,
}

impl CheckedPredicate {
    /// Relations the predicate reads, other than the one it is evaluated over.
    pub fn other_relations(&self, relid: pg_sys::Oid) -> Vec<pg_sys::Oid> {
        self.walk.relations.iter().map(|(r, _)| *r).filter(|r| *r != relid).collect()
    }
    pub fn time_dependent(&self) -> bool {
        self.walk.time_dependent
    }
}

/// Parse and analyse `predicate` with PostgreSQL's own parser inside the fixed wrapper
/// `SELECT (predicate) FROM relation alias`; refuse anything but one boolean, non-volatile
/// expression calling pg_catalog functions only.
pub fn check_predicate(relation: &str, relid: pg_sys::Oid, alias: &str, predicate: &str) -> MsegResult<CheckedPredicate> {
    if predicate.trim().is_empty() {
        return Err(invalid_predicate("the predicate is empty"));
    }
    let sql = format!("SELECT ({predicate}) AS mseg_member FROM {relation} {alias}");
    let c_sql = CString::new(sql.clone()).map_err(|_| invalid_predicate("the predicate contains a NUL byte"))?;
    // 1. parse: exactly one plain SELECT with our single target and FROM, nothing smuggled in
    let raw: std::result::Result<*mut pg_sys::List, String> =
        PgTryBuilder::new(|| Ok(unsafe { pg_sys::raw_parser(c_sql.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT) }))
            .catch_others(|e| Err(caught_message(&e)))
            .execute();
    let raw = raw.map_err(|m| invalid_predicate("the predicate has a syntax error").detail(m))?;
    let first = |l: *mut pg_sys::List| unsafe { (*(*l).elements).ptr_value };
    let malformed = unsafe {
        raw.is_null() || (*raw).length != 1 || {
            let stmt = (*(first(raw) as *mut pg_sys::RawStmt)).stmt;
            if (*stmt).type_ != pg_sys::NodeTag::T_SelectStmt {
                true
            } else {
                let s = stmt as *mut pg_sys::SelectStmt;
                let one = |l: *mut pg_sys::List| !l.is_null() && (*l).length == 1;
                !(one((*s).targetList)
                    && one((*s).fromClause)
                    && (*s).whereClause.is_null()
                    && (*s).groupClause.is_null()
                    && (*s).havingClause.is_null()
                    && (*s).windowClause.is_null()
                    && (*s).sortClause.is_null()
                    && (*s).limitCount.is_null()
                    && (*s).limitOffset.is_null()
                    && (*s).lockingClause.is_null()
                    && (*s).withClause.is_null()
                    && (*s).distinctClause.is_null()
                    && (*s).intoClause.is_null()
                    && (*s).valuesLists.is_null()
                    && (*s).op == pg_sys::SetOperation::SETOP_NONE)
            }
        }
    };
    if malformed {
        return Err(invalid_predicate("the predicate is not a single expression")
            .detail("It closes the expression's parentheses or adds clauses of its own."));
    }
    // 2. analyse: names resolve, types check
    let query: std::result::Result<*mut pg_sys::Query, String> = PgTryBuilder::new(|| unsafe {
        let rawstmt = first(raw) as *mut pg_sys::RawStmt;
        Ok(pg_sys::parse_analyze_fixedparams(rawstmt, c_sql.as_ptr(), std::ptr::null(), 0, std::ptr::null_mut()))
    })
    .catch_others(|e| Err(caught_message(&e)))
    .execute();
    let query = query.map_err(|m| invalid_predicate("the predicate does not analyse").detail(m))?;
    unsafe {
        if (*query).hasAggs || (*query).hasWindowFuncs || (*query).hasTargetSRFs || (*query).hasModifyingCTE {
            return Err(invalid_predicate("the predicate aggregates, windows or returns sets at its top level").detail(
                "Aggregates belong inside a subquery, e.g. (SELECT count(*) FROM public.orders o WHERE o.customer_id = s.customer_id) > 3.",
            ));
        }
        let tle = first((*query).targetList) as *mut pg_sys::TargetEntry;
        let typ = pg_sys::exprType((*tle).expr.cast());
        if typ != pg_sys::BOOLOID {
            let name = CStr::from_ptr(pg_sys::format_type_be(typ)).to_string_lossy().into_owned();
            return Err(invalid_predicate("the predicate is not boolean").detail(format!("It has type {name}.")));
        }
        if pg_sys::contain_volatile_functions(query.cast()) {
            return Err(invalid_predicate("the predicate calls a volatile function")
                .detail("Membership must be reproducible; functions such as random() or clock_timestamp() are not allowed.")
                .hint("Use now() or current_date for time-dependent segments; they are refreshed by mseg.refresh_segments()."));
        }
        let mut w = Walk::default();
        walk_node(query.cast(), &mut w as *mut Walk as *mut c_void);
        if let Some(f) = w.foreign_functions.first() {
            return Err(invalid_predicate(format!("function {f} is not a built-in function"))
                .detail("Predicates may call functions of pg_catalog only: a user function could read tables that no trigger watches."));
        }
        if let Some(f) = w.forbidden.first() {
            return Err(invalid_predicate(format!("the predicate uses {f}")));
        }
        // canonical text: deparsed with only pg_catalog on the path, so every other name is qualified
        let c_alias = CString::new(alias).map_err(|_| invalid_predicate("invalid alias"))?;
        let canonical = catalog::with_search_path(c"pg_catalog", || {
            let ctx = pg_sys::deparse_context_for(c_alias.as_ptr(), relid);
            let text = pg_sys::deparse_expression((*tle).expr.cast(), ctx, true, false);
            Ok(CStr::from_ptr(text).to_string_lossy().into_owned())
        })?;
        Ok(CheckedPredicate { walk: w, canonical })
    }
}

/// Parse, analyse and check a segment predicate over the subject row (alias s) and registered
/// sources; return its canonical form and what it reads.
pub fn analyze(subject: &SubjectTable, predicate: &str) -> MsegResult<Analysis> {
    let checked = check_predicate(&subject.name, subject.relid, "s", predicate)?;
    let w = &checked.walk;
    unsafe {
        let mut sources = Vec::new();
        let mut subject_columns = Vec::new();
        let mut reads_sensitive = false;
        for (relid, cols) in &w.relations {
            let is_subject = *relid == subject.relid;
            if !is_subject {
                let registered = catalog::select(|c| {
                    let t = c.select(
                        "SELECT 1 FROM mseg.sources WHERE relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid",
                        None,
                        &[(*relid).into()],
                    )?;
                    Ok(!t.is_empty())
                })?;
                if !registered {
                    return Err(MsegError::new(
                        Code::InvalidPredicate,
                        format!("the predicate reads {}, which is not a registered source", catalog::relation_name(*relid)),
                    )
                    .hint("Register it with mseg.register_source(table, subject_key_column) so its changes maintain the segment."));
                }
                if !sources.contains(relid) {
                    sources.push(*relid);
                }
            }
            let classes = column_classes(*relid)?;
            for &attno in cols {
                if attno < 0 {
                    continue;
                }
                if attno == 0 {
                    if let Some((c, _)) = classes.iter().find(|(_, k)| k == "direct") {
                        return Err(MsegError::new(Code::InvalidPredicate, "the predicate reads whole rows")
                            .detail(format!("{} has the direct identifier column {c}.", catalog::relation_name(*relid)))
                            .hint("Name the columns you need."));
                    }
                    continue;
                }
                let name_ptr = pg_sys::get_attname(*relid, attno as i16, true);
                if name_ptr.is_null() {
                    continue;
                }
                let col = CStr::from_ptr(name_ptr).to_string_lossy().into_owned();
                match classes.iter().find(|(c, _)| *c == col).map(|(_, k)| k.as_str()) {
                    Some("direct") => {
                        return Err(MsegError::new(
                            Code::InvalidPredicate,
                            format!("column {col} of {} is a direct identifier", catalog::relation_name(*relid)),
                        )
                        .detail("Segments describe people by what they do and roughly who they are, never by name, e-mail or phone.")
                        .hint("Use quasi or attribute columns, or reclassify the column if it is not identifying."));
                    }
                    Some("sensitive") => reads_sensitive = true,
                    _ => {}
                }
                if is_subject && !subject_columns.contains(&col) {
                    subject_columns.push(col);
                }
            }
        }
        Ok(Analysis { canonical: checked.canonical.clone(), sources, time_dependent: w.time_dependent, reads_sensitive, subject_columns })
    }
}

fn column_classes(relid: pg_sys::Oid) -> MsegResult<Vec<(String, String)>> {
    catalog::select(|c| {
        let mut out = Vec::new();
        for row in c.select(
            "SELECT column_name::pg_catalog.text, class FROM mseg.column_classes WHERE relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid",
            None,
            &[relid.into()],
        )? {
            out.push((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default()));
        }
        Ok(out)
    })
}

// ---------------------------------------------------------------------------------------------
// Triggers on the subject table and the sources
// ---------------------------------------------------------------------------------------------

/// (name, event, transition tables) of the four statement triggers every maintained table gets.
const TRIGGERS: [(&str, &str, &str); 4] = [
    ("zz_mseg_segments_ins", "AFTER INSERT", "REFERENCING NEW TABLE AS mseg_new"),
    ("zz_mseg_segments_upd", "AFTER UPDATE", "REFERENCING OLD TABLE AS mseg_old NEW TABLE AS mseg_new"),
    ("zz_mseg_segments_del", "AFTER DELETE", "REFERENCING OLD TABLE AS mseg_old"),
    ("zz_mseg_segments_trunc", "AFTER TRUNCATE", ""),
];

fn ensure_triggers(relid: pg_sys::Oid) -> MsegResult<()> {
    let table = catalog::relation_name(relid);
    catalog::update(|c| {
        for (name, event, referencing) in TRIGGERS {
            let exists = !c
                .select(
                    "SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid OPERATOR(pg_catalog.=) $1::pg_catalog.oid \
                     AND tgname OPERATOR(pg_catalog.=) $2::pg_catalog.name",
                    None,
                    &[relid.into(), name.into()],
                )?
                .is_empty();
            if !exists {
                c.update(
                    &format!("CREATE TRIGGER {name} {event} ON {table} {referencing} FOR EACH STATEMENT EXECUTE FUNCTION mseg.segments_trigger()"),
                    None,
                    &[],
                )?;
            }
        }
        Ok(())
    })
}

fn drop_triggers(relid: pg_sys::Oid) -> MsegResult<()> {
    let table = catalog::relation_name(relid);
    catalog::update(|c| {
        for (name, _, _) in TRIGGERS {
            c.update(&format!("DROP TRIGGER IF EXISTS {name} ON {table}"), None, &[])?;
        }
        Ok(())
    })
}

/// Block writers to the subject table and the sources until the definition change commits, so
/// no statement keeps maintaining memberships with the old definitions.
fn lock_maintained_tables(subject: &SubjectTable) -> MsegResult<()> {
    let mut tables = vec![subject.relid];
    tables.extend(load_catalog()?.sources.iter().map(|s| s.relid));
    catalog::update(|c| {
        for t in tables {
            c.update(&format!("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE", catalog::relation_name(t)), None, &[])?;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Refresh and verification
// ---------------------------------------------------------------------------------------------

/// Recompute every subject's set in batches (progress in mseg.progress); returns subjects changed.
fn refresh_all(label: &str, scope: &Scope, mode: LockMode) -> MsegResult<i64> {
    // SAFETY: pick up definition changes committed by other sessions before using the cache.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    keys::note_catalog_change();
    let cat = cached_catalog()?;
    let subject = require_subject_table()?;
    let total = catalog::select(|c| {
        Ok(c.select(&format!("SELECT pg_catalog.count(*) FROM {}", subject.name), None, &[])?.first().get_one::<i64>()?.unwrap_or(0))
    })?;
    let slot = progress::start(progress::Operation::Refresh, subject.relid, label, total);
    let batch = i64::from(crate::gucs::REFRESH_BATCH_SUBJECTS.get().max(1));
    let key = quote_identifier(&subject.key);
    let next_batch = format!(
        "SELECT pg_catalog.array_agg(k ORDER BY k) FROM (SELECT s.{key}::pg_catalog.int8 AS k FROM {} s \
         WHERE s.{key} OPERATOR(pg_catalog.>) $1 ORDER BY s.{key} LIMIT $2) x",
        subject.name
    );
    let before = events_count()?;
    let mut done = 0i64;
    catalog::as_owner(|| {
        without_jit(|| {
            Spi::connect_mut(|client| -> MsegResult<()> {
                let mut last = i64::MIN;
                loop {
                    let t = client.update(&next_batch, None, &[last.into(), batch.into()])?;
                    let keys = t.first().get_one::<Vec<i64>>()?.unwrap_or_default();
                    let Some(&max) = keys.last() else { break };
                    if mode != LockMode::Table {
                        // (definitions have locked the whole table instead)
                        lock_subject_rows(client, &subject, &keys)?;
                    }
                    apply_keys(client, &cat, &subject, &keys, scope, mode)?;
                    last = max;
                    done += keys.len() as i64;
                    progress::advance(slot, done, done);
                    pgrx::check_for_interrupts!();
                }
                // memberships of subjects that no longer exist
                client.update(
                    &format!(
                        "WITH d AS (DELETE FROM mseg.memberships m WHERE NOT EXISTS \
                       (SELECT 1 FROM {} s WHERE s.{key} OPERATOR(pg_catalog.=) m.subject_key) \
                       RETURNING m.subject_key, m.segments) \
                     INSERT INTO mseg.membership_events (subject_key, joined, left_segments) \
                     SELECT subject_key, '{{}}', segments FROM d WHERE pg_catalog.cardinality(segments) OPERATOR(pg_catalog.>) 0",
                        subject.name
                    ),
                    None,
                    &[],
                )?;
                Ok(())
            })
        })
    })?;
    progress::finish(slot, done);
    Ok(events_count()? - before)
}

fn events_count() -> MsegResult<i64> {
    catalog::select(|c| {
        Ok(c.select("SELECT pg_catalog.count(*) FROM mseg.membership_events", None, &[])?.first().get_one::<i64>()?.unwrap_or(0))
    })
}

fn segment_size(id: i32) -> MsegResult<i64> {
    catalog::select(|c| {
        Ok(c.select("SELECT pg_catalog.count(*) FROM mseg.memberships WHERE $1 OPERATOR(pg_catalog.=) ANY (segments)", None, &[id.into()])?
            .first()
            .get_one::<i64>()?
            .unwrap_or(0))
    })
}

// ---------------------------------------------------------------------------------------------
// SQL interface
// ---------------------------------------------------------------------------------------------

pub fn check_segment_name(name: &str) -> MsegResult<()> {
    let ok = name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(MsegError::new(Code::InvalidArgument, format!("invalid segment name \"{name}\""))
            .hint("A segment name starts with a lower-case letter and has at most 63 characters from a-z, 0-9, _."))
    }
}

fn check_purpose(purpose: &str) -> MsegResult<()> {
    let exists = catalog::select(|c| {
        Ok(!c.select("SELECT 1 FROM mseg.purposes WHERE name OPERATOR(pg_catalog.=) $1", None, &[purpose.into()])?.is_empty())
    })?;
    if exists {
        Ok(())
    } else {
        Err(MsegError::new(Code::UnknownPurpose, format!("purpose \"{purpose}\" does not exist"))
            .hint("Define it with mseg.define_purpose(name, legal_bases, retention); mseg.purposes lists the purposes."))
    }
}

fn segment_id(name: &str) -> MsegResult<i32> {
    catalog::select(|c| {
        let t = c.select("SELECT segment_id FROM mseg.segments WHERE name OPERATOR(pg_catalog.=) $1", None, &[name.into()])?;
        if t.is_empty() {
            return Err(MsegError::new(Code::UnknownSegment, format!("segment \"{name}\" does not exist"))
                .hint("mseg.segments lists the segments."));
        }
        Ok(t.first().get_one::<i32>()?.unwrap_or(0))
    })
}

fn store_segment(
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
fn define_segment(name: Option<&str>, purpose: Option<&str>, predicate: Option<&str>, description: default!(Option<&str>, "NULL")) -> i64 {
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
        ensure_triggers(subject.relid)?;
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
fn alter_segment(
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
fn drop_segment(name: Option<&str>) -> bool {
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
fn register_source(table: Option<PgRelation>, subject_key_column: Option<&str>) -> bool {
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
        if relkind != "r" {
            return Err(MsegError::new(Code::InvalidTable, format!("{name} is not an ordinary table"))
                .hint("Sources are ordinary tables; register a view's underlying tables instead."));
        }
        let Some(typ) = typ else {
            return Err(MsegError::new(Code::UndefinedObject, format!("column \"{column}\" of {name} does not exist"))
                .hint("Name the column that holds the subject key."));
        };
        if !["smallint", "integer", "bigint"].contains(&typ.as_str()) {
            return Err(MsegError::new(Code::InvalidTable, format!("column \"{column}\" of {name} has type {typ}"))
                .hint("The subject key column of a source must be an integer, like the subject key."));
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
        ensure_triggers(relid)?;
        catalog::audit("source.register", &name, serde_json::json!({"key_column": column}))?;
        Ok(true)
    })
}

#[pg_extern(volatile, parallel_unsafe)]
fn unregister_source(table: Option<PgRelation>) -> bool {
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
        drop_triggers(relid)?;
        catalog::audit("source.unregister", &name, serde_json::json!({}))?;
        Ok(true)
    })
}

/// Recompute every subject's set (after time passes: time-dependent predicates and consent
/// expiry); returns the number of membership events it wrote. Schedulable: it blocks no writer,
/// taking part in the same row-lock protocol as the triggers. With `segment`, only that segment is
/// recomputed.
#[pg_extern(volatile, parallel_unsafe)]
fn refresh_segments(segment: default!(Option<&str>, "NULL")) -> i64 {
    boundary(|| {
        require_subject_table()?;
        let scope = match segment {
            Some(name) => Scope::Only(vec![segment_id(name)?]),
            None => Scope::All,
        };
        let label = segment.unwrap_or("*").to_owned();
        let changed = refresh_all(&label, &scope, LockMode::Rows)?;
        catalog::audit("segments.refresh", &label, serde_json::json!({"events": changed}))?;
        Ok(changed)
    })
}

/// Differences between stored memberships and a from-scratch evaluation (none when exact).
#[pg_extern(volatile, parallel_unsafe)]
fn verify_segments() -> TableIterator<'static, (name!(segment, String), name!(subject_key, i64), name!(should_be_member, bool))> {
    let rows = boundary(|| {
        unsafe { pg_sys::AcceptInvalidationMessages() };
        let cat = cached_catalog()?;
        let Some(subject) = cat.subject.clone() else {
            return Ok(Vec::new());
        };
        let names: HashMap<i32, String> = cat.segments.iter().map(|s| (s.id, s.name.clone())).collect();
        let sql = format!(
            "WITH n AS ({eval}) \
             SELECT COALESCE(n.subject_key, m.subject_key), COALESCE(n.segs, '{{}}'::pg_catalog.int4[]), COALESCE(m.segments, '{{}}'::pg_catalog.int4[]) \
             FROM n FULL JOIN mseg.memberships m ON m.subject_key OPERATOR(pg_catalog.=) n.subject_key \
             WHERE COALESCE(n.segs, '{{}}'::pg_catalog.int4[]) IS DISTINCT FROM COALESCE(m.segments, '{{}}'::pg_catalog.int4[]) \
             ORDER BY 1",
            eval = eval_select(&cat, &subject, &subject.name, &Scope::All)
        );
        without_jit(|| {
            catalog::select(|c| {
                let mut out = Vec::new();
                for row in c.select(&sql, None, &[])? {
                    let key = row.get::<i64>(1)?.unwrap_or(0);
                    let expected = row.get::<Vec<i32>>(2)?.unwrap_or_default();
                    let stored = row.get::<Vec<i32>>(3)?.unwrap_or_default();
                    for id in expected.iter().filter(|i| !stored.contains(i)) {
                        out.push((names.get(id).cloned().unwrap_or_else(|| format!("#{id}")), key, true));
                    }
                    for id in stored.iter().filter(|i| !expected.contains(i)) {
                        out.push((names.get(id).cloned().unwrap_or_else(|| format!("#{id}")), key, false));
                    }
                }
                Ok(out)
            })
        })
    });
    TableIterator::new(rows)
}

/// Internal: a subject's whole new set after a recompute of the segments in `scope`: the stored
/// ids outside the scope and the `evaluated` ids (NULL where the subject is not a member), in id
/// order like every stored set. One call instead of one `= ANY` test per carried segment.
#[pg_extern(immutable, parallel_safe, name = "_segments_merge")]
fn segments_merge(stored: Option<pgrx::Array<i32>>, scope: Option<pgrx::Array<i32>>, evaluated: Option<pgrx::Array<i32>>) -> Vec<i32> {
    let scope: Vec<i32> = scope.map(|a| a.iter().flatten().collect()).unwrap_or_default();
    let mut set: Vec<i32> = stored.map(|a| a.iter().flatten().filter(|id| !scope.contains(id)).collect()).unwrap_or_default();
    if let Some(e) = evaluated {
        set.extend(e.iter().flatten());
    }
    set.sort_unstable();
    set.dedup();
    set
}

/// Internal: the ids of set `a` that are not in set `b`, in id order (joined / left segments).
#[pg_extern(immutable, parallel_safe, name = "_segments_minus")]
fn segments_minus(a: Option<pgrx::Array<i32>>, b: Option<pgrx::Array<i32>>) -> Vec<i32> {
    let b: Vec<i32> = b.map(|b| b.iter().flatten().collect()).unwrap_or_default();
    let mut out: Vec<i32> = a.map(|a| a.iter().flatten().filter(|id| !b.contains(id)).collect()).unwrap_or_default();
    out.sort_unstable();
    out.dedup();
    out
}

/// Internal: recompute one subject after a change of its legal basis (called by consent functions).
#[pg_extern(volatile, parallel_unsafe, name = "_segments_refresh_subject")]
fn segments_refresh_subject(subject: Option<i64>) -> bool {
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
        catalog::as_owner(|| {
            catalog::with_setting(c"plan_cache_mode", c"force_generic_plan", || {
                Spi::connect_mut(|client| {
                    lock_subject_rows(client, &subject, &[key])?;
                    apply_keys(client, &cat, &subject, &[key], &Scope::All, LockMode::Rows)
                })
            })
        })?;
        Ok(true)
    })
}
