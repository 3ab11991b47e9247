//! What a partner may see of a subject, and how twins are grouped into cohorts (no SQL here).
//!
//! A *record* is everything a twin line says except its pseudonym: generalised quasi values,
//! segments, and per purpose the legal basis and expiry (which also make the policy). Every twin
//! belongs to a *cohort*: at least k twins that were released in the same dump with the same record
//! and have changed together since, so a partner holding every dump sees the same history for each
//! of them. [`group`] forms cohorts from subjects (the anonymiser over the quasi columns, the
//! segment set and the legal view, then the segment sets made k-anonymous within each class and
//! the legal view of each group taken as the *meet* of its members'); [`Coverage`] tells whether a
//! cohort's record is still true for a member.

use std::collections::{BTreeMap, HashMap};

use kanon::{Anonymizer, FxMap, Hierarchy};
use serde::{Deserialize, Serialize};

use crate::error::{Code, MsegError, Result as MsegResult};
use crate::kanon as kanon_sql;

pub const NONE: u32 = u32::MAX;
/// The anonymiser's extra column for the legal view (bases and expiry months per purpose).
pub const LEGAL_COLUMN: &str = "(legal basis)";

/// Segment sets (segment ids, sorted), each stored once; equal sets have equal indexes.
#[derive(Default)]
pub struct Sets {
    list: Vec<Vec<i32>>,
    index: FxMap<Vec<i32>, u32>,
}

impl Sets {
    pub fn intern(&mut self, ids: &[i32]) -> u32 {
        if let Some(&n) = self.index.get(ids) {
            return n;
        }
        let n = self.list.len() as u32;
        self.list.push(ids.to_vec());
        self.index.insert(ids.to_vec(), n);
        n
    }
    pub fn get(&self, n: u32) -> &[i32] {
        self.list.get(n as usize).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// A subject's legal view: per partner purpose the basis in force and the month its grant expires,
/// for the purposes it may be released for. Subjects share a few of these; each is stored once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LegalClass {
    /// per partner purpose: (basis index, expiry index) when releasable for it
    pub per: Vec<Option<(u8, Option<u16>)>>,
    /// the releasable purposes as bits (purpose n is bit n)
    pub mask: u64,
}

/// What every grouping needs: the columns and their hierarchies, the partner's purposes, names.
pub struct Ctx {
    pub columns: Vec<String>,
    pub specs: Vec<Option<String>>,
    pub hierarchies: Vec<Hierarchy>,
    pub purposes: Vec<String>,
    pub seg_names: HashMap<i32, String>,
    pub seg_ids: HashMap<String, i32>,
    pub basis_names: Vec<String>,
    /// expiry months as released: the first instant of the month, `YYYY-MM-01T00:00:00Z`
    pub months: Vec<String>,
    pub legal_classes: Vec<LegalClass>,
    pub k: usize,
}

impl Ctx {
    /// The anonymiser's ladder for a legal class: exact (bases and expiry months), expiry years,
    /// bases only; the hierarchy's root `*` above them. Equal consecutive rungs are given once.
    fn legal_chain(&self, lc: &LegalClass) -> Vec<String> {
        let mut exact = Vec::new();
        let mut year = Vec::new();
        let mut bases = Vec::new();
        for (n, per) in lc.per.iter().enumerate() {
            let Some((b, e)) = per else { continue };
            let purpose = self.purposes.get(n).map(String::as_str).unwrap_or("");
            let basis = self.basis_names.get(usize::from(*b)).map(String::as_str).unwrap_or("");
            bases.push(format!("{purpose}={basis}"));
            match e.and_then(|e| self.months.get(usize::from(e))) {
                Some(m) => {
                    exact.push(format!("{purpose}={basis}@{}", m.get(..7).unwrap_or(m)));
                    year.push(format!("{purpose}={basis}@{}", m.get(..4).unwrap_or(m)));
                }
                None => {
                    exact.push(format!("{purpose}={basis}"));
                    year.push(format!("{purpose}={basis}"));
                }
            }
        }
        let mut chain = vec![exact.join(";"), year.join(";"), bases.join(";")];
        chain.dedup();
        chain
    }

    /// The legal view shared by a group: the purposes every member may be released for, per
    /// purpose the common basis (`*` when members differ) and the earliest expiry month of any
    /// member (so no member is held past its own expiry). `None` when no purpose is common.
    fn legal_meet(&self, classes: impl Iterator<Item = u32>) -> Option<Vec<Option<Legal>>> {
        let np = self.purposes.len();
        let mut mask = u64::MAX;
        let mut basis: Vec<Option<Option<u8>>> = vec![None; np]; // None: unseen; Some(None): differs
        let mut expiry: Vec<Option<u16>> = vec![None; np];
        let mut seen = Vec::new();
        for c in classes {
            if seen.contains(&c) {
                continue;
            }
            seen.push(c);
            let Some(lc) = self.legal_classes.get(c as usize) else { continue };
            mask &= lc.mask;
            for (n, per) in lc.per.iter().enumerate() {
                let Some((b, e)) = per else { continue };
                basis[n] = match basis[n] {
                    None => Some(Some(*b)),
                    Some(Some(x)) if x == *b => Some(Some(x)),
                    _ => Some(None),
                };
                if let Some(e) = e {
                    expiry[n] = Some(match expiry[n] {
                        Some(cur) if self.month(cur) <= self.month(*e) => cur,
                        _ => *e,
                    });
                }
            }
        }
        if seen.is_empty() || mask == 0 {
            return None;
        }
        Some(
            (0..np)
                .map(|n| {
                    (mask & (1 << n) != 0).then(|| Legal {
                        basis: match basis[n] {
                            Some(Some(b)) => self.basis_names.get(usize::from(b)).cloned().unwrap_or_default(),
                            _ => "*".to_owned(),
                        },
                        expires_at: expiry[n].map(|e| self.month(e).to_owned()),
                    })
                })
                .collect(),
        )
    }

    fn month(&self, e: u16) -> &str {
        self.months.get(usize::from(e)).map(String::as_str).unwrap_or("")
    }

    fn segment_names(&self, ids: &[i32]) -> Vec<String> {
        let mut names: Vec<String> = ids.iter().filter_map(|id| self.seg_names.get(id).cloned()).collect();
        names.sort_unstable();
        names
    }
}

/// The subjects that may be released now, column-wise (a few flat vectors, not allocations per
/// subject): key, raw quasi values (level 0 text, end to end in one buffer), segment set, legal class.
#[derive(Default)]
pub struct Truth {
    pub nq: usize,
    pub subjects: Vec<i64>,
    pub quasi_text: String,
    /// per subject and quasi column: where its value ends in `quasi_text`
    pub quasi_end: Vec<usize>,
    pub set: Vec<u32>,
    pub legal: Vec<u32>,
}

impl Truth {
    pub fn len(&self) -> usize {
        self.subjects.len()
    }
    pub fn quasi(&self, i: usize, c: usize) -> &str {
        let at = i * self.nq + c;
        let start = if at == 0 { 0 } else { self.quasi_end.get(at - 1).copied().unwrap_or(0) };
        let end = self.quasi_end.get(at).copied().unwrap_or(start);
        self.quasi_text.get(start..end).unwrap_or("")
    }
}

/// A purpose's legal basis as released.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Legal {
    /// the basis in force for every member, or `*` (a basis the purpose accepts; members differ)
    pub basis: String,
    /// the first instant of the earliest month in which a member's grant expires
    pub expires_at: Option<String>,
}

/// Everything a twin line says but its pseudonym.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Record {
    /// generalised values, in column order
    pub quasi: Vec<String>,
    /// their levels in the columns' hierarchies
    pub levels: Vec<u16>,
    /// segment names, sorted
    pub segments: Vec<String>,
    /// per partner purpose (in the partner's order): the legal basis, or None when the twin may
    /// not be used for that purpose
    pub legal: Vec<Option<Legal>>,
}

/// A cohort's record as stored in `mseg.partner_cohorts.record`, with what it was made under, so
/// a change of columns, hierarchies or purposes is noticed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stored {
    pub columns: Vec<String>,
    pub hierarchies: Vec<Option<String>>,
    pub purposes: Vec<String>,
    pub record: Record,
}

impl Record {
    /// The policy's expiry: the earliest of the purposes' expiries.
    pub fn expires_at(&self) -> Option<&str> {
        self.legal.iter().flatten().filter_map(|l| l.expires_at.as_deref()).min()
    }

    /// The twin line is `prefix + pseudonym + suffix` (keys in name order, as serde_json writes a
    /// map: legal_basis, policy, pseudonym, quasi, segments, type).
    pub fn line_parts(&self, ctx: &Ctx) -> MsegResult<(String, String)> {
        #[derive(Serialize)]
        struct Policy<'a> {
            expires_at: Option<&'a str>,
            purposes: Vec<&'a str>,
        }
        let ser = |e: serde_json::Error| MsegError::new(Code::General, format!("twin serialisation failed: {e}"));
        let legal: BTreeMap<&str, &Legal> =
            ctx.purposes.iter().zip(&self.legal).filter_map(|(p, l)| Some((p.as_str(), l.as_ref()?))).collect();
        let policy = Policy {
            expires_at: self.expires_at(),
            purposes: ctx.purposes.iter().zip(&self.legal).filter(|(_, l)| l.is_some()).map(|(p, _)| p.as_str()).collect(),
        };
        let quasi: BTreeMap<&str, &str> = ctx.columns.iter().map(String::as_str).zip(self.quasi.iter().map(String::as_str)).collect();
        let prefix = format!(
            "{{\"legal_basis\":{},\"policy\":{},\"pseudonym\":\"",
            serde_json::to_string(&legal).map_err(ser)?,
            serde_json::to_string(&policy).map_err(ser)?
        );
        let suffix = format!(
            "\",\"quasi\":{},\"segments\":{},\"type\":\"twin\"}}",
            serde_json::to_string(&quasi).map_err(ser)?,
            serde_json::to_string(&self.segments).map_err(ser)?
        );
        Ok((prefix, suffix))
    }
}

/// Groups of subjects with one record each (every group at least k), those that could not be
/// placed, and the information loss of the anonymiser runs.
#[derive(Default)]
pub struct Grouping {
    pub parts: Vec<(Record, Vec<u32>)>,
    pub unplaced: Vec<u32>,
    /// records anonymised and the sum of their NCP over the quasi columns
    pub records: usize,
    pub ncp_sum: f64,
    /// a group whose members share no purpose (only when members' purposes differ)
    pub incompatible: bool,
}

/// Form groups of at least `ctx.k` from `members` (indexes into `truth`): the kanon anonymiser over
/// the quasi columns and the legal view, with the partner's segments declared (its cuts weigh the
/// memberships they would lose; up to `suppression_limit` of the members may stay unplaced), then
/// within each class the segment sets made k-anonymous, then one record per (class, segment set)
/// with the members' legal meet; groups with equal records are one group.
pub fn group(ctx: &Ctx, truth: &Truth, sets: &mut Sets, members: &[u32], suppression_limit: f64) -> MsegResult<Grouping> {
    let k = ctx.k;
    if members.len() < k {
        return Ok(Grouping { unplaced: members.to_vec(), ..Default::default() });
    }
    let nq = ctx.columns.len();
    let mut hierarchies: Vec<(String, Hierarchy)> = Vec::with_capacity(nq + 2);
    for c in 0..nq {
        let h = match ctx.specs.get(c).and_then(|s| s.as_deref()) {
            Some(_) => ctx.hierarchies.get(c).cloned().ok_or_else(|| MsegError::new(Code::General, "hierarchy missing"))?,
            // a column without a hierarchy: its values here, each directly under * (the labels are
            // the same as over the whole table; the domain, and so the NCP, is this group's)
            None => {
                let mut values: Vec<&str> = members.iter().map(|&i| truth.quasi(i as usize, c)).collect();
                values.sort_unstable();
                values.dedup();
                kanon_sql::flat_hierarchy_of(values.into_iter().map(str::to_owned))?
            }
        };
        hierarchies.push((ctx.columns[c].clone(), h));
    }
    // the partner's segments, declared to the anonymiser: its partitioning weighs the memberships
    // a cut would lose (so members sharing segments stay together) and every class shows the
    // segments all of its members hold; the sets are refined within each class below
    let segment_ids: Vec<i32> = {
        let mut ids: Vec<i32> = ctx.seg_names.keys().copied().collect();
        ids.sort_unstable();
        ids
    };
    let mut present: Vec<u32> = members.iter().map(|&i| truth.legal[i as usize]).collect();
    present.sort_unstable();
    present.dedup();
    let mut leaf_of: FxMap<u32, String> = FxMap::default();
    let mut pairs: Vec<(String, String)> = Vec::new();
    for &lc in &present {
        let chain = ctx.legal_classes.get(lc as usize).map(|l| ctx.legal_chain(l)).unwrap_or_default();
        for w in chain.windows(2) {
            pairs.push((w[0].clone(), w[1].clone()));
        }
        if let Some(last) = chain.last() {
            pairs.push((last.clone(), "*".to_owned()));
        }
        leaf_of.insert(lc, chain.into_iter().next().unwrap_or_default());
    }
    pairs.sort_unstable();
    pairs.dedup();
    hierarchies.push((LEGAL_COLUMN.to_owned(), Hierarchy::categorical(pairs).map_err(kanon_sql::kanon_error)?));
    let mut a = Anonymizer::new(hierarchies, k, None, suppression_limit)
        .and_then(|a| a.with_segments(segment_ids.iter().map(|id| ctx.seg_names.get(id).cloned().unwrap_or_default())))
        .map_err(kanon_sql::kanon_error)?;
    a.reserve(members.len());
    let mut texts: Vec<Option<&str>> = Vec::with_capacity(nq + 1);
    let mut segment_indexes: Vec<u32> = Vec::new();
    for (pos, &i) in members.iter().enumerate() {
        let i = i as usize;
        texts.clear();
        for c in 0..nq {
            texts.push(Some(truth.quasi(i, c)));
        }
        texts.push(Some(leaf_of.get(&truth.legal[i]).map(String::as_str).unwrap_or("")));
        segment_indexes.clear();
        segment_indexes.extend(sets.get(truth.set[i]).iter().filter_map(|id| segment_ids.binary_search(id).ok().map(|n| n as u32)));
        a.push_text_with(pos as i64, &texts, None, &segment_indexes).map_err(kanon_sql::kanon_error)?;
    }
    drop(texts);
    let out = a.run().map_err(kanon_sql::kanon_error)?;
    let report = out.report();
    let quasi_ncp: f64 = report.levels_used.iter().take(nq).map(|c| c.ncp).sum::<f64>() / nq.max(1) as f64;
    let mut g = Grouping { records: members.len(), ncp_sum: quasi_ncp * members.len() as f64, ..Default::default() };
    // the members of each class (positions), by a counting sort over the class numbers
    let n_classes = out.classes().len();
    let mut start = vec![0usize; n_classes + 1];
    let class_of: Vec<u32> = (0..members.len()).map(|pos| out.class_of(pos).map(|c| c as u32).unwrap_or(NONE)).collect();
    for &c in &class_of {
        if c != NONE {
            start[c as usize + 1] += 1;
        }
    }
    for c in 0..n_classes {
        start[c + 1] += start[c];
    }
    let mut by_class = vec![0u32; start[n_classes]];
    let mut fill = start.clone();
    for (pos, &c) in class_of.iter().enumerate() {
        if c == NONE {
            g.unplaced.push(members[pos]);
        } else {
            by_class[fill[c as usize]] = pos as u32;
            fill[c as usize] += 1;
        }
    }
    // segment sets k-anonymous within each class; then one record per (class, set)
    let mut set_of: Vec<u32> = members.iter().map(|&i| truth.set[i as usize]).collect();
    let mut part_of: FxMap<Record, usize> = FxMap::default();
    for (c, class) in out.classes().iter().enumerate() {
        let positions = &by_class[start[c]..start[c + 1]];
        k_anonymous_sets(positions, &mut set_of, sets, k);
        let mut subgroups: Vec<(u32, Vec<u32>)> = Vec::new();
        for &pos in positions {
            let s = set_of[pos as usize];
            match subgroups.iter_mut().find(|g| g.0 == s) {
                Some(g) => g.1.push(pos),
                None => subgroups.push((s, vec![pos])),
            }
        }
        for (s, positions) in subgroups {
            let Some(legal) = ctx.legal_meet(positions.iter().map(|&p| truth.legal[members[p as usize] as usize])) else {
                g.incompatible = true;
                continue;
            };
            let record = Record {
                quasi: class.key.iter().take(nq).cloned().collect(),
                levels: class.levels.iter().take(nq).map(|&l| l as u16).collect(),
                segments: ctx.segment_names(sets.get(s)),
                legal,
            };
            let n = match part_of.get(&record) {
                Some(&n) => n,
                None => {
                    g.parts.push((record.clone(), Vec::new()));
                    part_of.insert(record, g.parts.len() - 1);
                    g.parts.len() - 1
                }
            };
            g.parts[n].1.extend(positions.iter().map(|&p| members[p as usize]));
        }
    }
    Ok(g)
}

/// Make the segment sets of one equivalence class (`members`, at least k of them) k-anonymous:
/// the members of every set held by fewer than k take the intersection of those sets, joined,
/// while still fewer than k, by the largest group (which takes the intersection too).
/// `set_of[m]` is member m's set, an index into `sets` (equal sets have equal indexes).
pub fn k_anonymous_sets(members: &[u32], set_of: &mut [u32], sets: &mut Sets, k: usize) {
    // (set, members holding it): few per class
    let mut groups: Vec<(u32, usize)> = Vec::new();
    for &m in members {
        let s = set_of[m as usize];
        match groups.iter_mut().find(|g| g.0 == s) {
            Some(g) => g.1 += 1,
            None => groups.push((s, 1)),
        }
    }
    // in the order of the sets themselves (ties of the largest group go to the last one)
    groups.sort_by(|a, b| sets.get(a.0).cmp(sets.get(b.0)));
    let (small, big): (Vec<_>, Vec<_>) = groups.into_iter().partition(|g| g.1 < k);
    if small.is_empty() {
        return;
    }
    let mut common: Vec<i32> = sets.get(small[0].0).to_vec();
    let mut moved_sets: Vec<u32> = Vec::new();
    let mut moved = 0usize;
    for &(s, count) in &small {
        let set = sets.get(s);
        common.retain(|id| set.contains(id));
        moved_sets.push(s);
        moved += count;
    }
    if moved < k {
        if let Some(&(s, _)) = big.iter().max_by_key(|g| g.1) {
            let set = sets.get(s);
            common.retain(|id| set.contains(id));
            moved_sets.push(s);
        }
    }
    let common = sets.intern(&common);
    for &m in members {
        if moved_sets.contains(&set_of[m as usize]) {
            set_of[m as usize] = common;
        }
    }
}

/// Information loss of what a partner holds: per quasi value, the share of the column's distinct
/// values among the releasable subjects that it stands for, (covered - 1) / (distinct - 1), `*`
/// counting 1 (the normalised certainty penalty with every hierarchy read as categorical); the mean
/// over twins and quasi columns. `groups`: each record with its number of twins.
pub fn held_ncp(ctx: &Ctx, truth: &Truth, groups: &[(&Record, usize)]) -> MsegResult<f64> {
    let nq = ctx.columns.len();
    let twins: usize = groups.iter().map(|g| g.1).sum();
    if nq == 0 || twins == 0 {
        return Ok(0.0);
    }
    let mut total = 0.0;
    for c in 0..nq {
        let h = &ctx.hierarchies[c];
        let top = h.top();
        let distinct: std::collections::HashSet<&str, std::hash::BuildHasherDefault<kanon::FxHasher>> =
            (0..truth.len()).map(|i| truth.quasi(i, c)).collect();
        let parsed = distinct.iter().map(|v| h.parse(v)).collect::<Result<Vec<_>, _>>().map_err(kanon_sql::kanon_error)?;
        // per level used: how many distinct values each label stands for
        let mut counts: FxMap<(usize, String), usize> = FxMap::default();
        let mut levels: Vec<usize> = groups.iter().filter_map(|g| g.0.levels.get(c).map(|&l| usize::from(l))).collect();
        levels.sort_unstable();
        levels.dedup();
        for &level in levels.iter().filter(|&&l| l > 0 && l < top) {
            for v in &parsed {
                *counts.entry((level, h.generalize(v, level).map_err(kanon_sql::kanon_error)?)).or_default() += 1;
            }
        }
        let denominator = distinct.len().saturating_sub(1).max(1) as f64;
        for (record, n) in groups {
            let level = record.levels.get(c).map(|&l| usize::from(l)).unwrap_or(top);
            let ncp = if level == 0 {
                0.0
            } else if level >= top {
                1.0
            } else {
                let covered = record.quasi.get(c).and_then(|l| counts.get(&(level, l.clone()))).copied().unwrap_or(1);
                (covered.saturating_sub(1)) as f64 / denominator
            };
            total += ncp * *n as f64;
        }
    }
    Ok(total / (twins * nq) as f64)
}

/// A cohort's record in the form the coverage check compares: label ids, segment ids, basis ids.
pub struct Resolved {
    labels: Vec<u32>,
    levels: Vec<usize>,
    /// None: a segment that no longer exists (no member can be in it)
    segments: Option<Vec<i32>>,
    /// per purpose: (basis id or None for `*`, expiry) when the record allows the purpose
    legal: Vec<Option<(Option<u8>, Option<String>)>>,
    /// a basis this export does not know (no member has it)
    unknown_basis: bool,
}

/// Whether a cohort's record is still true of a member: every generalised value an ancestor of
/// (or equal to) the member's value, every segment one the member is in, every purpose one it may
/// be released for, with the same basis unless the record says `*`, and no expiry later than its own.
pub struct Coverage<'t> {
    ctx: &'t Ctx,
    truth: &'t Truth,
    tops: Vec<usize>,
    labels: FxMap<(u32, u32, &'t str), u32>,
    ids: FxMap<String, u32>,
}

impl<'t> Coverage<'t> {
    pub fn new(ctx: &'t Ctx, truth: &'t Truth) -> Coverage<'t> {
        let tops = ctx.hierarchies.iter().map(Hierarchy::top).collect();
        Coverage { ctx, truth, tops, labels: FxMap::default(), ids: FxMap::default() }
    }

    fn id(&mut self, label: &str) -> u32 {
        if let Some(&n) = self.ids.get(label) {
            return n;
        }
        let n = self.ids.len() as u32;
        self.ids.insert(label.to_owned(), n);
        n
    }

    pub fn resolve(&mut self, r: &Record) -> Resolved {
        let labels = r.quasi.iter().map(|l| self.id(l)).collect();
        let segments = r.segments.iter().map(|n| self.ctx.seg_ids.get(n).copied()).collect::<Option<Vec<i32>>>().map(|mut v| {
            v.sort_unstable();
            v
        });
        let mut unknown_basis = false;
        let legal = r
            .legal
            .iter()
            .map(|l| {
                l.as_ref().map(|l| {
                    let basis = if l.basis == "*" {
                        None
                    } else {
                        match self.ctx.basis_names.iter().position(|b| *b == l.basis) {
                            Some(b) => Some(b as u8),
                            None => {
                                unknown_basis = true;
                                None
                            }
                        }
                    };
                    (basis, l.expires_at.clone())
                })
            })
            .collect();
        Resolved { labels, levels: r.levels.iter().map(|&l| usize::from(l)).collect(), segments, legal, unknown_basis }
    }

    /// Does `r` (of the current shape: as many columns and purposes as now) hold for subject `i`?
    pub fn covers(&mut self, r: &Resolved, sets: &Sets, i: usize) -> MsegResult<bool> {
        if r.unknown_basis || r.labels.len() != self.ctx.columns.len() || r.legal.len() != self.ctx.purposes.len() {
            return Ok(false);
        }
        for c in 0..r.labels.len() {
            let level = r.levels.get(c).copied().unwrap_or(0);
            if level >= self.tops.get(c).copied().unwrap_or(0) {
                continue; // `*` covers everything
            }
            let value = self.truth.quasi(i, c);
            let key = (c as u32, level as u32, value);
            let label = match self.labels.get(&key) {
                Some(&l) => l,
                None => {
                    let h = &self.ctx.hierarchies[c];
                    let v = h.parse(value).map_err(kanon_sql::kanon_error)?;
                    let text = h.generalize(&v, level).map_err(kanon_sql::kanon_error)?;
                    let l = self.id(&text);
                    self.labels.insert(key, l);
                    l
                }
            };
            if label != r.labels[c] {
                return Ok(false);
            }
        }
        let Some(segments) = &r.segments else { return Ok(false) };
        let own = sets.get(self.truth.set.get(i).copied().unwrap_or(NONE));
        if !segments.iter().all(|id| own.binary_search(id).is_ok()) {
            return Ok(false);
        }
        let Some(lc) = self.truth.legal.get(i).and_then(|&l| self.ctx.legal_classes.get(l as usize)) else { return Ok(false) };
        for (n, want) in r.legal.iter().enumerate() {
            let Some((basis, expires)) = want else { continue };
            let Some(Some((b, e))) = lc.per.get(n) else { return Ok(false) };
            if basis.is_some_and(|x| x != *b) {
                return Ok(false);
            }
            match (expires, e) {
                (None, Some(_)) => return Ok(false),
                (Some(x), Some(e)) if self.ctx.month(*e) < x.as_str() => return Ok(false),
                _ => {}
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx {
        Ctx {
            columns: vec!["age".into()],
            specs: vec![Some("integer".into())],
            hierarchies: vec![Hierarchy::integer_default()],
            purposes: vec!["dm".into(), "an".into()],
            seg_names: HashMap::from([(1, "runners".to_owned()), (2, "cyclists".to_owned())]),
            seg_ids: HashMap::from([("runners".to_owned(), 1), ("cyclists".to_owned(), 2)]),
            basis_names: vec!["consent".into(), "legitimate_interest".into()],
            months: vec!["2027-03-01T00:00:00Z".into(), "2027-05-01T00:00:00Z".into()],
            legal_classes: vec![
                LegalClass { per: vec![Some((0, Some(0))), None], mask: 1 },
                LegalClass { per: vec![Some((0, Some(1))), Some((1, None))], mask: 3 },
                LegalClass { per: vec![Some((1, None)), None], mask: 1 },
                LegalClass { per: vec![None, Some((1, None))], mask: 2 },
            ],
            k: 2,
        }
    }

    #[test]
    fn legal_meet_is_conservative() {
        let c = ctx();
        let m = c.legal_meet([0u32, 1].into_iter()).unwrap();
        assert_eq!(m, vec![Some(Legal { basis: "consent".into(), expires_at: Some("2027-03-01T00:00:00Z".into()) }), None]);
        let m = c.legal_meet([1u32, 2].into_iter()).unwrap();
        assert_eq!(m, vec![Some(Legal { basis: "*".into(), expires_at: Some("2027-05-01T00:00:00Z".into()) }), None]);
        assert!(c.legal_meet([0u32, 3].into_iter()).is_none(), "no common purpose");
        assert_eq!(
            c.legal_chain(&c.legal_classes[1]),
            ["dm=consent@2027-05;an=legitimate_interest", "dm=consent@2027;an=legitimate_interest", "dm=consent;an=legitimate_interest"]
        );
        assert_eq!(c.legal_chain(&c.legal_classes[2]), ["dm=legitimate_interest"]);
    }

    #[test]
    fn groups_have_k_and_records_cover_their_members() {
        let c = ctx();
        let mut sets = Sets::default();
        let none = sets.intern(&[]);
        let run = sets.intern(&[1]);
        let both = sets.intern(&[1, 2]);
        let mut t = Truth { nq: 1, ..Default::default() };
        for (n, (age, set, legal)) in
            [(31, run, 0), (33, both, 1), (35, run, 0), (52, none, 2), (57, both, 2), (58, none, 1)].iter().enumerate()
        {
            t.subjects.push(n as i64);
            t.quasi_text.push_str(&age.to_string());
            t.quasi_end.push(t.quasi_text.len());
            t.set.push(*set);
            t.legal.push(*legal);
        }
        let g = group(&c, &t, &mut sets, &[0, 1, 2, 3, 4, 5], 0.0).unwrap();
        assert!(g.unplaced.is_empty() && !g.incompatible);
        let mut seen = 0;
        for (record, members) in &g.parts {
            assert!(members.len() >= 2, "{record:?}");
            let mut cov = Coverage::new(&c, &t);
            let r = cov.resolve(record);
            for &m in members {
                assert!(cov.covers(&r, &sets, m as usize).unwrap(), "{record:?} {m}");
            }
            seen += members.len();
        }
        assert_eq!(seen, 6);
        // a record with a segment or a later expiry than a member's is not true of it
        let (record, members) = &g.parts[0];
        let mut cov = Coverage::new(&c, &t);
        let mut wrong = record.clone();
        wrong.segments = vec!["cyclists".into(), "runners".into()];
        let r = cov.resolve(&wrong);
        assert!(members.iter().any(|&m| !cov.covers(&r, &sets, m as usize).unwrap()));
        let mut late = record.clone();
        late.legal[0] = Some(Legal { basis: "*".into(), expires_at: Some("2099-01-01T00:00:00Z".into()) });
        let r = cov.resolve(&late);
        assert!(members.iter().any(|&m| !cov.covers(&r, &sets, m as usize).unwrap()) || members.iter().all(|&m| t.legal[m as usize] == 2));
    }

    #[test]
    fn too_few_stay_unplaced() {
        let c = ctx();
        let mut sets = Sets::default();
        let none = sets.intern(&[]);
        let t = Truth { nq: 1, subjects: vec![1], quasi_text: "40".into(), quasi_end: vec![2], set: vec![none], legal: vec![0] };
        let g = group(&c, &t, &mut sets, &[0], 0.0).unwrap();
        assert_eq!(g.unplaced, [0]);
        assert!(g.parts.is_empty());
    }
}
