//! The generated SQL of the upkeep: evaluation of the segments in a scope with their legal
//! basis, and the statements that write changed sets and their events.

use super::*;

/// Which segments a recompute evaluates: all of them, or only those whose inputs changed (the
/// stored set is kept for the others).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Scope {
    All,
    Only(Vec<i32>),
}

impl Scope {
    pub(super) fn includes(&self, id: i32) -> bool {
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
pub(super) enum Reads {
    PerSubject,
    Bulk,
}

/// `SELECT subject_key, segs FROM <from> s …`: the segments in `scope` evaluated for every row of
/// `from`, each ANDed with the legal basis of the segment's purpose (see mseg._processable, the
/// same rule).
pub(super) fn eval_select(cat: &SegCatalog, subject: &SubjectTable, from: &str, scope: &Scope) -> String {
    let id = subject.id_of_row("s");
    let (set, joins) = eval_parts(cat, subject, scope, false, Reads::PerSubject, &id, None);
    format!("SELECT {id} AS subject_key, {set} AS segs FROM {from} s{}{joins}", subject.id_join("s"))
}

/// The new set of the subject row s for the segments in `scope`, and the joins it needs (the
/// subject's legal-basis state, the aggregate queries over the sources). With `carry`, the set also
/// holds the stored ids of the segments outside `scope` (the caller joins the subject's membership
/// row as m), so it is the subject's whole new set, in id order like every stored set; without it,
/// only the ids in scope. `id` is the SQL expression of the subject's id (the consent state is
/// keyed by it); the sources are joined by the row's own key. `within`: an SQL array holding every
/// id evaluated (see [`crate::consent::joins_within`]).
pub(super) fn eval_parts(
    cat: &SegCatalog,
    subject: &SubjectTable,
    scope: &Scope,
    carry: bool,
    reads: Reads,
    id: &str,
    within: Option<&str>,
) -> (String, String) {
    let key = subject.row_key("s");
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
    let mut joins = crate::consent::joins_within(&purposes, id, within);
    if reads == Reads::Bulk {
        joins.push_str(&aggregates.joins(&key));
    }
    (set, joins)
}

/// Recompute the subjects in $1 for the segments in `scope`, write the sets that changed (creating
/// rows where needed) and their events. With a partial scope the stored ids outside it are kept.
/// A key without a subject row (deleted meanwhile) gets the empty set. `bulk`: the sources are
/// read in their bulk form.
///
/// `batch`: $1 is a bounded batch of ascending keys (a refresh), and every table joined by the
/// subject's id is also filtered by the range of $1 (`crate::consent::within_keys`). The plan is
/// made for each batch (it is bulk), and without the filter it hashed the whole subject,
/// membership and state tables for every batch of 10,000 keys (refresh 5.4× the plain CREATE
/// TABLE AS at 1 M subjects, fourth round); with it they are read by index. Not for the
/// triggers' statements: their key lists are unbounded and unordered.
pub(super) fn apply_sql(cat: &SegCatalog, subject: &SubjectTable, scope: &Scope, bulk: bool, batch: bool) -> String {
    let reads = if bulk { Reads::Bulk } else { Reads::PerSubject };
    let keys = "$1::pg_catalog.int8[]";
    let within = |column: &str| if batch { crate::consent::within_keys(column, keys) } else { String::new() };
    let (set, joins) = eval_parts(cat, subject, scope, true, reads, "mseg_k.k", batch.then_some(keys));
    // (row_of_id ends with the ON condition of the subject row's join; a mapped key joins the row
    // by the key's text, which the id list cannot filter)
    let row_within = if subject.mapped { String::new() } else { within(&subject.row_key("s")) };
    let write = write_sets_sql(SetWrite::Upsert);
    format!(
        "WITH n AS MATERIALIZED (SELECT mseg_k.k AS subject_key, m.segments AS stored, \
                CASE WHEN {key} IS NULL THEN '{{}}'::pg_catalog.int4[] ELSE {set} END AS new \
              FROM pg_catalog.unnest($1::pg_catalog.int8[]) mseg_k(k){row}{row_within}{joins} \
              LEFT JOIN mseg.memberships m ON m.subject_key OPERATOR(pg_catalog.=) mseg_k.k{m_within}), \
         d AS MATERIALIZED (SELECT * FROM n WHERE COALESCE(n.stored, '{{}}'::pg_catalog.int4[]) IS DISTINCT FROM n.new), \
         {write} \
         INSERT INTO mseg.membership_events (subject_key, joined, left_segments) {events}",
        key = subject.row_key("s"),
        row = subject.row_of_id("mseg_k.k", "s"),
        m_within = within("m.subject_key"),
        events = EVENTS_OF_D,
    )
}

/// How the changed sets are written (see [`write_sets_sql`]).
#[derive(Clone, Copy)]
pub(super) enum SetWrite {
    /// every row by `INSERT … ON CONFLICT DO UPDATE`: right whatever other sessions do, and no
    /// join with the memberships table (whose plan could scan all of it for a batch of subjects)
    Upsert,
    /// missing rows by a plain insert (half the cost of an upsert), stored ones by an upsert: for
    /// callers holding the memberships table lock since before the statement's snapshot
    InsertOrUpsert,
}

/// The CTEs writing the changed sets of CTE `d (subject_key, new, stored)`; `stored` is NULL where
/// the subject has no membership row.
pub(super) fn write_sets_sql(how: SetWrite) -> String {
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
pub(super) const LOCK_SQL: &str = "INSERT INTO mseg.memberships AS m (subject_key) \
     SELECT k FROM pg_catalog.unnest($1::pg_catalog.int8[]) k ORDER BY k \
     ON CONFLICT (subject_key) DO UPDATE SET updated_at = pg_catalog.now()";

/// A statement that touches at least this many subjects (`mseg.bulk_statement_subjects`) is
/// maintained in bulk: in READ COMMITTED it takes the memberships table lock instead of one row lock
/// per subject (no pass that writes every row first), and it reads the sources in the predicates'
/// bulk form (bulk_predicates.rs).
pub(super) fn bulk_subjects() -> usize {
    crate::gucs::bulk_statement_subjects()
}
/// Conflicts with every writer of memberships (ROW EXCLUSIVE) and with itself, not with readers.
pub(super) const TABLE_LOCK_SQL: &str = "LOCK TABLE mseg.memberships IN SHARE ROW EXCLUSIVE MODE";

/// The key locks of the texts $1 (distinct) of non-integer keys: their buckets' rows written in
/// bucket order (see [`lock_key_texts`]).
pub(super) const KEY_LOCK_SQL: &str = "INSERT INTO mseg.key_locks AS l (bucket) \
     SELECT DISTINCT pg_catalog.hashtext(k) OPERATOR(pg_catalog.&) 65535 FROM pg_catalog.unnest($1::pg_catalog.text[]) k ORDER BY 1 \
     ON CONFLICT (bucket) DO UPDATE SET bucket = EXCLUDED.bucket";

/// Every key lock at once (READ COMMITTED statements over many keys), like [`TABLE_LOCK_SQL`].
pub(super) const KEY_TABLE_LOCK_SQL: &str = "LOCK TABLE mseg.key_locks IN SHARE ROW EXCLUSIVE MODE";

/// The key locks of the new subjects (transition table mseg_new) of a table with non-integer keys.
pub(super) fn new_key_locks_sql(subject: &SubjectTable) -> String {
    format!(
        "INSERT INTO mseg.key_locks AS l (bucket) \
         SELECT DISTINCT pg_catalog.hashtext(({k})::pg_catalog.text) OPERATOR(pg_catalog.&) 65535 FROM mseg_new s \
         WHERE {k} IS NOT NULL ORDER BY 1 ON CONFLICT (bucket) DO UPDATE SET bucket = EXCLUDED.bucket",
        k = subject.row_key("s"),
    )
}

/// Evaluate the new subjects (transition table mseg_new) and write their sets and events.
/// `bulk`: the sources are read in their bulk form.
///
/// `locked`: the caller holds the memberships table lock in READ COMMITTED, so this statement's
/// snapshot sees every membership row there will be and every source row whose writer took part
/// in the protocol: the sets that differ from a stored one (normally none is stored) are written,
/// missing rows by a plain insert (half the cost of an ON CONFLICT insert).
///
/// Otherwise the INSERT takes part in the row protocol by *claiming* each new subject's
/// membership row: `INSERT … ON CONFLICT DO NOTHING` of the evaluated set, in key order, the
/// empty set included. Source rows may exist (or be being written) for a key before its subject
/// does, and a source statement locks its keys' membership rows whether or not the subject
/// exists; a source writer's row is visible here, or is being written and makes this insert
/// wait, or comes later and waits for this one. A claimed row (none existed) is therefore exact;
/// where one existed the set was evaluated from a snapshot that may miss that writer (READ
/// COMMITTED waits and skips it; REPEATABLE READ fails to serialize), so the query returns those
/// keys, sorted, for the caller to recompute under the protocol ([`apply_keys`]).
pub(super) fn insert_sql(cat: &SegCatalog, subject: &SubjectTable, bulk: bool, locked: bool) -> String {
    let reads = if bulk { Reads::Bulk } else { Reads::PerSubject };
    let id = subject.id_of_row("s");
    let (set, joins) = eval_parts(cat, subject, &Scope::All, false, reads, &id, None);
    if !locked {
        return format!(
            "WITH n AS MATERIALIZED (SELECT {id} AS subject_key, {set} AS new \
                  FROM mseg_new s{id_join}{joins} WHERE {id} IS NOT NULL), \
             c AS (INSERT INTO mseg.memberships AS m (subject_key, segments, updated_at) \
                   SELECT n.subject_key, n.new, pg_catalog.now() FROM n ORDER BY n.subject_key \
                   ON CONFLICT (subject_key) DO NOTHING RETURNING m.subject_key, m.segments), \
             e AS (INSERT INTO mseg.membership_events (subject_key, joined, left_segments) \
                   SELECT c.subject_key, c.segments, '{{}}' FROM c \
                   WHERE pg_catalog.cardinality(c.segments) OPERATOR(pg_catalog.>) 0) \
             SELECT pg_catalog.array_agg(DISTINCT n.subject_key ORDER BY n.subject_key) FROM n \
             WHERE NOT EXISTS (SELECT 1 FROM c WHERE c.subject_key OPERATOR(pg_catalog.=) n.subject_key)",
            id_join = subject.id_join("s"),
        );
    }
    let write = write_sets_sql(SetWrite::InsertOrUpsert);
    format!(
        "WITH n AS MATERIALIZED (SELECT {id} AS subject_key, {set} AS new, m.segments AS stored \
              FROM mseg_new s{id_join}{joins} LEFT JOIN mseg.memberships m ON m.subject_key OPERATOR(pg_catalog.=) {id}), \
         d AS MATERIALIZED (SELECT * FROM n WHERE COALESCE(n.stored, '{{}}'::pg_catalog.int4[]) IS DISTINCT FROM n.new), \
         {write} \
         INSERT INTO mseg.membership_events (subject_key, joined, left_segments) {events}",
        id_join = subject.id_join("s"),
        events = EVENTS_OF_D,
    )
}

/// The events of the changed sets in CTE `d (subject_key, new, stored)`. A subject without a stored
/// set (every subject of a load) joined its whole new set and left none: no set difference is
/// computed for it (two function calls per new subject, about a tenth of a customer load's upkeep).
pub(super) const EVENTS_OF_D: &str = "SELECT d.subject_key, \
       CASE WHEN d.stored IS NULL THEN d.new ELSE mseg._segments_minus(d.new, d.stored) END, \
       CASE WHEN d.stored IS NULL THEN '{}'::pg_catalog.int4[] ELSE mseg._segments_minus(d.stored, d.new) END FROM d";

/// Mapped keys: give the new subjects of the statement (transition table mseg_new) their ids.
pub(super) fn new_ids_sql(subject: &SubjectTable) -> String {
    format!(
        "INSERT INTO mseg.subject_ids (subject_key) SELECT ({})::pg_catalog.text FROM mseg_new s \
         WHERE {} IS NOT NULL ON CONFLICT (subject_key) DO NOTHING",
        subject.row_key("s"),
        subject.row_key("s")
    )
}

/// Empty the sets of deleted subjects ($1, locked), recording what they left. The membership rows
/// stay, as the rows of keys that only have source rows do: a key's row is its lock in the
/// protocol, and the existence of a row never goes back. A deleted row would let a REPEATABLE READ
/// INSERT of the same key, whose snapshot predates a source writer's commit, claim a fresh row
/// with a set that misses that writer (see [`insert_sql`]); an existing row makes it fail to
/// serialize instead.
pub(super) const EMPTY_SQL: &str = "WITH o AS MATERIALIZED (SELECT m.subject_key, m.segments FROM mseg.memberships m \
                WHERE m.subject_key OPERATOR(pg_catalog.=) ANY ($1) AND pg_catalog.cardinality(m.segments) OPERATOR(pg_catalog.>) 0), \
          u AS (UPDATE mseg.memberships m SET segments = '{}', updated_at = pg_catalog.now() FROM o \
                WHERE m.subject_key OPERATOR(pg_catalog.=) o.subject_key) \
     INSERT INTO mseg.membership_events (subject_key, joined, left_segments) SELECT o.subject_key, '{}', o.segments FROM o";

pub(super) const TRUNCATE_SQL: &str = "WITH d AS (DELETE FROM mseg.memberships RETURNING subject_key, segments) \
     INSERT INTO mseg.membership_events (subject_key, joined, left_segments) \
     SELECT subject_key, '{}', segments FROM d WHERE pg_catalog.cardinality(segments) OPERATOR(pg_catalog.>) 0";
