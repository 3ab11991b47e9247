//! What one export reads: the subjects the partner may receive, with everything their twins
//! say (`read_input`), and what the partner holds (`read_state`, `read_cohorts`).

use std::collections::HashMap;

use kanon::{FxMap, FxSet};
use pgrx::prelude::*;
use pgrx::spi::quote_literal;

use super::release::{Ctx, LegalClass, Sets, Stored, Truth};
use super::Partner;
use crate::catalog;
use crate::error::{Code, MsegError, Result as MsegResult};
use crate::kanon as kanon_sql;
use crate::pseudonym;

/// What the partner holds, one row per subject it was ever sent (mseg.partner_twins).
pub(super) struct StateRow {
    pub(super) subject: i64,
    pub(super) generation: i32,
    pub(super) pseudonym: [u8; pseudonym::PSEUDONYM_LEN],
    /// the cohort it is in; None once sent as a tombstone
    pub(super) cohort: Option<i64>,
}

/// The input of one export: the releasable subjects and everything their truth refers to.
pub(super) struct Input {
    pub(super) ctx: Ctx,
    pub(super) truth: Truth,
    pub(super) sets: Sets,
    /// processable for at least one of the partner's purposes now
    pub(super) eligible: usize,
    /// eligible subjects that may not be released, and why (expiring this month, incomplete)
    pub(super) unreleasable: FxMap<i64, &'static str>,
}

/// Read the subjects (their quasi values, legal basis per purpose, segment sets) the partner may
/// receive, under the calling statement's snapshot.
pub(super) fn read_input(p: &Partner, now: &str) -> MsegResult<Input> {
    let subject = catalog::subject_table()?.ok_or_else(|| {
        MsegError::new(Code::SubjectTable, "no subject table is registered").hint("Register it first with mseg.register_subjects.")
    })?;
    // the registered table is read as mseg_upkeep, never as the caller or the superuser
    let t = kanon_sql::target(subject.relid, None, catalog::Who::Upkeep)?;
    let cols = kanon_sql::quasi_columns(&t, None)?;
    let (sql, nq, np) = input_query(p, &subject, &cols)?;
    let seg_names = partner_segments(&p.purposes)?;
    // sized for the table up front: growing vectors of a million entries costs copies and page faults
    let estimate = catalog::select(|c| {
        Ok(c.select(
            "SELECT GREATEST(reltuples, 0)::pg_catalog.int8 FROM pg_catalog.pg_class WHERE oid OPERATOR(pg_catalog.=) $1",
            None,
            &[subject.relid.into()],
        )?
        .first()
        .get_one::<i64>()?
        .unwrap_or(0))
    })?;
    let cap = usize::try_from(estimate).unwrap_or(0).min(100_000_000);
    let mut truth = Truth {
        nq,
        subjects: Vec::with_capacity(cap),
        quasi_text: String::new(),
        quasi_end: Vec::with_capacity(cap * nq),
        set: Vec::with_capacity(cap),
        legal: Vec::with_capacity(cap),
    };
    // a column without a hierarchy is categorical over its distinct values in the whole table
    let mut flat_values: Vec<Option<FxSet<String>>> = cols.iter().map(|c| c.spec.is_none().then(Default::default)).collect();
    let mut basis_names: Vec<String> = Vec::new();
    let mut months: Vec<String> = Vec::new();
    let mut month_index: FxMap<String, u16> = FxMap::default();
    let mut legal_classes: Vec<LegalClass> = Vec::new();
    let mut legal_index: FxMap<Vec<(u8, u16)>, u32> = FxMap::default();
    let mut sets = Sets::default();
    let no_segments = sets.intern(&[]);
    let mut memberships = segment_sets(&seg_names, &mut sets)?;
    let mut eligible = 0usize;
    let mut unreleasable: FxMap<i64, &'static str> = FxMap::default();
    let mut legal_key: Vec<(u8, u16)> = Vec::with_capacity(np);
    let columns = 1 + nq + 2 * np;
    let excluded = partner_exclusions(&p.name)?;
    catalog::for_each_row(catalog::Who::Upkeep, &sql, |values, nulls| {
        if values.len() != columns || nulls.len() != columns {
            return Err(MsegError::new(Code::General, format!("export input: {} columns, expected {columns}", values.len())));
        }
        // SAFETY: the first column is int8
        let subject = unsafe { i64::from_polymorphic_datum(values[0], nulls[0], pg_sys::INT8OID) }.unwrap_or(0);
        if excluded.contains(&subject) {
            return Ok(()); // out of the partner's scope: its twin ends with a tombstone
        }
        // SAFETY: every column but the first (int8) is cast to text in the query
        let text =
            |n: usize| -> Option<&str> { unsafe { <&str as FromDatum>::from_polymorphic_datum(values[n], nulls[n], pg_sys::TEXTOID) } };
        for (c, seen) in flat_values.iter_mut().enumerate() {
            if let (Some(seen), Some(v)) = (seen.as_mut(), text(1 + c)) {
                if !seen.contains(v) {
                    seen.insert(v.to_owned());
                }
            }
        }
        // per purpose: (basis, expiry month) or none (u8::MAX); a grant that expires this month
        // is not released for the purpose any more
        legal_key.clear();
        let mut any_basis = false;
        let mut mask = 0u64;
        for n in 0..np {
            let Some(b) = text(1 + nq + n) else {
                legal_key.push((u8::MAX, u16::MAX));
                continue;
            };
            any_basis = true;
            // legitimate interest has no expiry (a grant that ran out may still be on record)
            let expiry = if b == "legitimate_interest" { None } else { text(1 + nq + np + n) };
            if expiry.is_some_and(|e| e <= now) {
                legal_key.push((u8::MAX, u16::MAX));
                continue;
            }
            let b = match basis_names.iter().position(|x| x == b) {
                Some(n) => n as u8,
                None => {
                    basis_names.push(b.to_owned());
                    (basis_names.len() - 1) as u8
                }
            };
            let e = match expiry {
                None => u16::MAX,
                Some(e) => match month_index.get(e) {
                    Some(&m) => m,
                    None => {
                        if months.len() >= usize::from(u16::MAX) {
                            return Err(MsegError::new(Code::General, "too many distinct expiry months"));
                        }
                        months.push(e.to_owned());
                        month_index.insert(e.to_owned(), (months.len() - 1) as u16);
                        (months.len() - 1) as u16
                    }
                },
            };
            legal_key.push((b, e));
            mask |= 1 << n;
        }
        if !any_basis {
            return Ok(()); // processable for none of the partner's purposes
        }
        eligible += 1;
        if mask == 0 {
            unreleasable.insert(subject, "expiring");
            return Ok(());
        }
        if (0..nq).any(|n| nulls[1 + n]) {
            // a NULL quasi value cannot be placed in a class
            unreleasable.insert(subject, "incomplete");
            return Ok(());
        }
        for n in 0..nq {
            truth.quasi_text.push_str(text(1 + n).unwrap_or(""));
            truth.quasi_end.push(truth.quasi_text.len());
        }
        let legal = match legal_index.get(legal_key.as_slice()) {
            Some(&l) => l,
            None => {
                let per = legal_key.iter().map(|&(b, e)| (b != u8::MAX).then_some((b, (e != u16::MAX).then_some(e)))).collect();
                legal_classes.push(LegalClass { per, mask });
                legal_index.insert(legal_key.clone(), (legal_classes.len() - 1) as u32);
                (legal_classes.len() - 1) as u32
            }
        };
        truth.legal.push(legal);
        // no membership row: no segments
        truth.set.push(memberships.position(subject).map(|p| memberships.entries[p].1).unwrap_or(no_segments));
        truth.subjects.push(subject);
        Ok(())
    })?;
    drop(memberships);
    let mut hierarchies = Vec::new();
    for (c, flat) in cols.iter().zip(flat_values) {
        hierarchies.push(match c.spec.as_deref() {
            Some(spec) => (*catalog::as_upkeep(|| kanon_sql::hierarchy(spec))?).clone(),
            None => kanon_sql::flat_hierarchy_of(flat.unwrap_or_default())?,
        });
    }
    let seg_ids = seg_names.iter().map(|(id, n)| (n.clone(), *id)).collect();
    let ctx = Ctx {
        columns: cols.iter().map(|c| c.name.clone()).collect(),
        specs: cols.iter().map(|c| c.spec.clone()).collect(),
        hierarchies,
        purposes: p.purposes.clone(),
        seg_names,
        seg_ids,
        basis_names,
        months,
        legal_classes,
        k: p.k as usize,
    };
    Ok(Input { ctx, truth, sets, eligible, unreleasable })
}

/// The query of `read_input`: per subject of the registered table, one scalar column per value:
/// its id, its quasi values (as generalised at level 0), the basis in force per partner purpose,
/// that basis's expiry month per purpose. Returns it with the number of quasi columns and of
/// purposes.
fn input_query(p: &Partner, subject: &catalog::SubjectTable, cols: &[kanon_sql::QuasiColumn]) -> MsegResult<(String, usize, usize)> {
    // the subject id: the key itself, or the id a uuid/text key is mapped to
    let key = subject.id_of_row("s");
    let quasi_exprs = cols.iter().map(|c| kanon_sql::generalized_expr("s", c, 0)).collect::<MsegResult<Vec<_>>>()?;
    // per partner purpose: the basis that applies now (the rule of mseg._processable) and, for a
    // grant, the month it expires in: its first instant (UTC) is what a twin may say
    let purposes: Vec<&str> = p.purposes.iter().map(String::as_str).collect();
    if purposes.len() > 64 {
        return Err(MsegError::new(Code::InvalidArgument, "a partner has more than 64 purposes"));
    }
    let joins = crate::consent::joins(&purposes, &key);
    let mut bases = Vec::new();
    let mut expiries = Vec::new();
    for n in 0..purposes.len() {
        let i = n + 1;
        bases.push(crate::consent::basis_in_force(i));
        // (a grant's expiry; it applies only when the grant is the basis in force, i.e. when the
        // basis is not legitimate interest: see below)
        expiries.push(format!(
            "CASE WHEN b{i}.consent_basis IS NOT NULL THEN pg_catalog.to_char(pg_catalog.date_trunc('month', \
             (b{i}.granted_at OPERATOR(pg_catalog.+) pp{i}.retention) AT TIME ZONE 'UTC'), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') END"
        ));
    }
    // one scalar column per value: key, quasi values, the basis per purpose, its expiry month per
    // purpose. The segment sets are read on their own (below) and found by key.
    let (nq, np) = (quasi_exprs.len(), purposes.len());
    // (a subject the partner asked never to receive again is left out by read_input)
    let sql = format!(
        "SELECT {key}, {q}, {b}, {e} FROM {rel} s{id_join} {joins}",
        q = quasi_exprs.iter().map(|x| format!("({x})::pg_catalog.text")).collect::<Vec<_>>().join(", "),
        b = bases.iter().map(|x| format!("({x})::pg_catalog.text")).collect::<Vec<_>>().join(", "),
        e = expiries.join(", "),
        rel = subject.name,
        id_join = subject.id_join("s"),
    );
    Ok((sql, nq, np))
}

/// The subjects the partner asked never to receive again (a participant's erasure there,
/// src/notices.rs): out of its scope, so their twins end with a tombstone. Left out while the
/// input is read, not by an anti-join in its query: on a table the planner takes for empty (the
/// usual case: no exclusions) it chose a nested loop that rescanned it once per subject.
fn partner_exclusions(partner: &str) -> MsegResult<FxSet<i64>> {
    catalog::select(|c| {
        let mut set = FxSet::default();
        for row in
            c.select("SELECT subject_key FROM mseg.partner_exclusions WHERE partner OPERATOR(pg_catalog.=) $1", None, &[partner.into()])?
        {
            if let Some(s) = row.get::<i64>(1)? {
                set.insert(s);
            }
        }
        Ok(set)
    })
}

/// The partner's segments: those bound to one of its purposes, by id.
fn partner_segments(purposes: &[String]) -> MsegResult<HashMap<i32, String>> {
    catalog::select(|c| {
        let mut m = HashMap::new();
        for row in c.select(
            "SELECT segment_id, name FROM mseg.segments WHERE purpose OPERATOR(pg_catalog.=) ANY ($1)",
            None,
            &[purposes.to_vec().into()],
        )? {
            m.insert(row.get::<i32>(1)?.unwrap_or(0), row.get::<String>(2)?.unwrap_or_default());
        }
        Ok(m)
    })
}

/// Every subject's segment set, restricted to the partner's segments, as an index into `sets`,
/// by subject; each distinct stored array is decoded once.
fn segment_sets(seg_names: &HashMap<i32, String>, sets: &mut Sets) -> MsegResult<ByKey<u32>> {
    let no_segments = sets.intern(&[]);
    let mut decoded: FxMap<Vec<u8>, u32> = FxMap::default();
    let mut rows: Vec<(i64, u32)> = Vec::new();
    crate::segments::for_each_membership(|subject, stored| {
        let set = match stored {
            None => no_segments,
            Some(stored) => match decoded.get(stored.bytes()) {
                Some(&n) => n,
                None => {
                    let mut ids: Vec<i32> = stored.ids().into_iter().filter(|id| seg_names.contains_key(id)).collect();
                    ids.sort_unstable();
                    let n = sets.intern(&ids);
                    decoded.insert(stored.bytes().to_vec(), n);
                    n
                }
            },
        };
        rows.push((subject, set));
        Ok(())
    })?;
    Ok(ByKey::new(rows))
}

/// What the partner holds (every subject it was ever sent), sorted by subject.
pub(super) fn read_state(partner: &str) -> MsegResult<Vec<StateRow>> {
    let mut rows = Vec::new();
    catalog::for_each_row(
        catalog::Who::Owner,
        &format!(
            "SELECT subject_key, generation, pseudonym, cohort FROM mseg.partner_twins WHERE partner OPERATOR(pg_catalog.=) {}",
            quote_literal(partner)
        ),
        |values, nulls| {
            if values.len() != 4 || nulls.len() != 4 {
                return Err(MsegError::new(Code::General, "partner state: unexpected row shape"));
            }
            // SAFETY: subject_key int8, generation int4, pseudonym text, cohort int8
            let (subject, generation, pn, cohort) = unsafe {
                (
                    i64::from_polymorphic_datum(values[0], nulls[0], pg_sys::INT8OID),
                    i32::from_polymorphic_datum(values[1], nulls[1], pg_sys::INT4OID),
                    <&str as FromDatum>::from_polymorphic_datum(values[2], nulls[2], pg_sys::TEXTOID),
                    i64::from_polymorphic_datum(values[3], nulls[3], pg_sys::INT8OID),
                )
            };
            let pseudonym: [u8; pseudonym::PSEUDONYM_LEN] = pn
                .and_then(|p| p.as_bytes().try_into().ok())
                .ok_or_else(|| MsegError::new(Code::General, "partner state: a stored pseudonym is malformed"))?;
            rows.push(StateRow { subject: subject.unwrap_or(0), generation: generation.unwrap_or(0), pseudonym, cohort });
            Ok(())
        },
    )?;
    rows.sort_unstable_by_key(|r| r.subject);
    Ok(rows)
}

/// The cohorts' records (None: unreadable, so every member is regrouped).
pub(super) fn read_cohorts(partner: &str) -> MsegResult<FxMap<i64, Option<Stored>>> {
    catalog::select(|c| {
        let mut m = FxMap::default();
        for row in c.select(
            "SELECT cohort, record::pg_catalog.text FROM mseg.partner_cohorts WHERE partner OPERATOR(pg_catalog.=) $1",
            None,
            &[partner.into()],
        )? {
            let id = row.get::<i64>(1)?.unwrap_or(0);
            let stored = row.get::<String>(2)?.and_then(|t| serde_json::from_str::<Stored>(&t).ok());
            m.insert(id, stored);
        }
        Ok(m)
    })
}

/// Values by subject key, sorted, for look-ups in (nearly) key order: the input comes in the
/// subject table's physical order, which is its key order when it was filled in key order, so a
/// cursor answers most look-ups at the next entry (reading the entries front to back instead of a
/// probe to a random place per subject); a binary search answers the rest. Keys are unique.
pub(super) struct ByKey<T> {
    pub(super) entries: Vec<(i64, T)>,
    pub(super) cursor: usize,
}

impl<T> ByKey<T> {
    pub(super) fn new(mut entries: Vec<(i64, T)>) -> ByKey<T> {
        entries.sort_unstable_by_key(|e| e.0);
        ByKey { entries, cursor: 0 }
    }

    /// Where `key` is, if it is there.
    pub(super) fn position(&mut self, key: i64) -> Option<usize> {
        let c = self.cursor;
        let after_previous = c == 0 || self.entries.get(c - 1).is_some_and(|e| e.0 < key);
        match self.entries.get(c) {
            Some(e) if e.0 == key => {
                self.cursor = c + 1;
                return Some(c);
            }
            Some(e) if e.0 > key && after_previous => return None,
            None if after_previous => return None,
            _ => {}
        }
        match self.entries.binary_search_by_key(&key, |e| e.0) {
            Ok(p) => {
                self.cursor = p + 1;
                Some(p)
            }
            Err(p) => {
                self.cursor = p;
                None
            }
        }
    }
}
