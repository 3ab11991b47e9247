//! One export, step by step (`build_export`): what the partner may receive and what it holds
//! are read (`input`), the held cohorts carried forward, the waiting subjects released, the
//! endings named, the lines ordered and summed up in the manifest, and the new holdings recorded
//! (`write_state`) before the lines stream out (`stream`).

use std::collections::{BTreeMap, HashMap};

use kanon::{FxMap, FxSet};
use serde_json::{json, Value as Json};

use super::input::{read_cohorts, read_input, read_state, ByKey, Input, StateRow};
use super::release::{self, Coverage, Ctx, Record, Sets, Stored, Truth, NONE};
use super::stream::ExportStream;
use super::{partner_domain, Mode, Partner};
use crate::catalog;
use crate::dump::{self, FORMAT};
use crate::error::{Code, MsegError, Result as MsegResult};
use crate::keys;
use crate::pseudonym;
use crate::sql_array;

/// A cohort the partner holds after this export.
struct Out {
    id: i64,
    record: Record,
    /// members the partner held before (state rows)
    held: Vec<u32>,
    /// members sent now for the first time under this pseudonym: (truth index, generation, pseudonym)
    new: Vec<(u32, i32, [u8; pseudonym::PSEUDONYM_LEN])>,
    /// the partner gets new lines for it (new, or its record changed)
    changed: bool,
    /// its row in mseg.partner_cohorts is written (new, record or member count changed)
    write: bool,
    /// its held members move to it from another cohort (their cohort column is rewritten)
    moved: bool,
}

impl Out {
    fn size(&self) -> usize {
        self.held.len() + self.new.len()
    }
}

/// A subject ends at the partner: its state row and why (None: looked up; the tombstone line
/// itself never says).
struct Tomb {
    row: u32,
    reason: Option<&'static str>,
}

/// The pseudonym of a subject in a partner's domain, generation `g`: generation 0 is the
/// pseudonym of the key's text; a twin that ended (tombstone) and is released again later gets the
/// next generation, the pseudonym of `<key>/<g>`, unlinkable to its earlier one.
fn twin_pseudonym(keys: &keys::DomainKeys, subject: i64, generation: i32) -> [u8; pseudonym::PSEUDONYM_LEN] {
    let mut digits = [0u8; 20];
    let key = decimal(subject, &mut digits);
    if generation == 0 {
        return pseudonym::pseudonym_bytes(keys, key);
    }
    let mut text = Vec::with_capacity(32);
    text.extend_from_slice(key);
    text.push(b'/');
    text.extend_from_slice(generation.to_string().as_bytes());
    pseudonym::pseudonym_bytes(keys, &text)
}

/// The decimal text of `v` (what `v.to_string()` gives), written into `buf`.
fn decimal(v: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut n = v.unsigned_abs();
    let mut pos = buf.len();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        pos -= 1;
        buf[pos] = b'-';
    }
    &buf[pos..]
}

/// Prepare the dump and record what the partner will hold; the lines stream from the result.
///
/// Every twin is in a cohort (see `release`). Per export, for each cohort the partner holds:
/// members that may no longer be released (withdrawn, objected, restricted, erased, expiring,
/// out of scope) end with a tombstone, as a batch when at least k of them leave and at least k
/// stay; otherwise the whole cohort ends, and its other members are released again under new
/// pseudonyms, grouped with the other subjects waiting to be released. A cohort whose record no
/// longer holds for every member (a changed value, a segment left, a basis changed, its expiry
/// reached) is regrouped over its own members: they keep their pseudonyms and all get the new
/// record (parts of at least k each). Subjects not held (new, or ended) are grouped among
/// themselves, per set of purposes, and released only in groups of at least k; the rest wait.
///
/// The steps: read the input (eligible subjects and their truth) and what the partner holds,
/// link the two, carry the held cohorts forward, release the subjects not held, name why twins
/// end, order the lines, sum up the manifest, record the new holdings, stream.
pub(super) fn build_export(p: &Partner, mode: Mode) -> MsegResult<ExportStream> {
    // a restored, cloned or promoted copy must not reuse the original's sequence numbers
    crate::instance::check_before_export()?;
    let controller = crate::gucs::controller_id().ok_or_else(|| {
        MsegError::new(Code::InvalidArgument, "mseg.controller_id is not set")
            .hint("Set mseg.controller_id in postgresql.conf to this controller's name, then reload.")
    })?;
    let now = catalog::query_one::<String>(
        "SELECT pg_catalog.to_char(pg_catalog.now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
        &[],
    )?
    .unwrap_or_default();
    let sequence = p.last_sequence + 1;
    let Input { ctx, truth, mut sets, eligible, unreleasable } = read_input(p, &now)?;
    let state = read_state(&p.name)?;
    let stored = read_cohorts(&p.name)?;
    let link = Link::new(&truth, &state);
    let mut plan = Plan::new(sequence);
    carry_cohorts(&mut plan, mode, &ctx, &truth, &mut sets, &state, &stored, &link, &now)?;
    release_waiting(&mut plan, p, &ctx, &truth, &mut sets, &state, &link)?;
    let (ended_by_reason, erased) = name_endings(&mut plan.tombs, &state, &unreleasable)?;
    let delta = mode == Mode::Delta;
    let lines = order_lines(delta, &plan.outs, &state, &plan.tombs);
    let summary = summarize(delta, &ctx, &truth, &sets, &link, &plan)?;
    let manifest = json!({
        "type": "manifest",
        "format": FORMAT,
        "controller": controller,
        "partner": p.name,
        "sequence": sequence,
        "follows": if p.last_sequence == 0 { Json::Null } else { Json::from(p.last_sequence) },
        "mode": if delta { "delta" } else { "full" },
        "refresh": mode == Mode::Refresh,
        "created_at": now,
        "purposes": p.purposes,
        "time_granularity": "month",
        "k_required": p.k,
        "k_reached": summary.k_reached,
        "k_reached_in_dump": summary.k_in_dump,
        "k_history": summary.k_history,
        "counts": {"twins": lines.twins.len(), "tombstones": lines.tombstones.len(), "eligible": eligible,
                   "releasable": truth.len(), "held": summary.held, "pending": plan.pending, "first_released": plan.first_released,
                   "cohorts": plan.outs.len(), "regrouped_cohorts": plan.regrouped_cohorts},
        "ended_by_reason": ended_by_reason,
        "suppressed": eligible - summary.held,
        "information_loss": {
            "ncp": (summary.ncp_held * 1e6).round() / 1e6,
            "ncp_grouped": if plan.grouped == 0 { Json::Null } else { json!((plan.ncp_sum / plan.grouped as f64 * 1e6).round() / 1e6) },
            "grouped": plan.grouped,
            "discernibility": summary.discernibility,
        },
        "segment_memberships": {
            "true": summary.true_memberships,
            "kept": summary.kept_memberships,
            "fraction": if summary.true_memberships == 0 { Json::Null } else {
                json!((summary.kept_memberships as f64 / summary.true_memberships as f64 * 1e6).round() / 1e6) },
        },
        "levels": summary.levels,
        "segments": summary.segments,
        "public_key": dump::b64(keys::signing_key()?.verifying_key().as_bytes()),
        // the signed head of the audit chain: the partner keeps it (mseg.controller_anchors), so
        // a later rewrite of this controller's audit log is detectable (mseg.verify_audit_log(anchor))
        "audit_anchor": crate::audit::anchor()?,
    });
    let manifest_line = dump::to_line(&manifest)?;
    write_state(p, sequence, delta, &ctx, &state, &truth, &plan.outs, &plan.tombs, &erased, &stored, &manifest)?;
    catalog::audit(
        "export",
        &p.name,
        json!({"sequence": sequence, "mode": mode.name(), "twins": lines.twins.len(), "tombstones": lines.tombstones.len()}),
    )?;
    let parts = plan.outs.iter().map(|o| o.record.line_parts(&ctx)).collect::<MsegResult<Vec<_>>>()?;
    Ok(ExportStream::new(p.name.clone(), sequence, manifest_line, parts, lines.twins, lines.tombstones))
}

/// Releasable subjects (truth indexes) and the partner's state rows, linked both ways (NONE: no
/// counterpart).
struct Link {
    truth_of_state: Vec<u32>,
    state_of_truth: Vec<u32>,
}

impl Link {
    fn new(truth: &Truth, state: &[StateRow]) -> Link {
        let mut truth_of_state: Vec<u32> = vec![NONE; state.len()];
        let mut state_of_truth: Vec<u32> = vec![NONE; truth.len()];
        let mut by_key = ByKey::new(state.iter().enumerate().map(|(j, r)| (r.subject, j as u32)).collect());
        for (i, &s) in truth.subjects.iter().enumerate() {
            if let Some(pos) = by_key.position(s) {
                let j = by_key.entries[pos].1;
                state_of_truth[i] = j;
                truth_of_state[j as usize] = i as u32;
            }
        }
        Link { truth_of_state, state_of_truth }
    }

    fn truth(&self, state_row: u32) -> u32 {
        self.truth_of_state[state_row as usize]
    }
}

/// What this export decides: the cohorts the partner holds after it, the twins that end, and
/// what the manifest counts about the grouping.
struct Plan {
    sequence: i64,
    /// cohort ids made in this export: (sequence << 24) + n
    made: i64,
    outs: Vec<Out>,
    tombs: Vec<Tomb>,
    /// the size of each batch of twins ended together (k over the partner's history)
    tomb_batches: Vec<usize>,
    /// truth indexes of held subjects whose cohort ended now and who may be released again
    rejoin: Vec<u32>,
    /// records anonymised and their NCP sum
    grouped: usize,
    ncp_sum: f64,
    regrouped_cohorts: usize,
    /// releasable subjects left waiting (no group of k yet)
    pending: usize,
    first_released: usize,
}

impl Plan {
    fn new(sequence: i64) -> Plan {
        Plan {
            sequence,
            made: 0,
            outs: Vec::new(),
            tombs: Vec::new(),
            tomb_batches: Vec::new(),
            rejoin: Vec::new(),
            grouped: 0,
            ncp_sum: 0.0,
            regrouped_cohorts: 0,
            pending: 0,
            first_released: 0,
        }
    }

    fn new_cohort_id(&mut self) -> i64 {
        self.made += 1;
        (self.sequence << 24) + self.made
    }

    /// A whole cohort ends: members who left get a tombstone (reason looked up later), those who
    /// stay get one with `reason` and wait to be grouped afresh under a new pseudonym.
    fn end_cohort(&mut self, stay: &[u32], leave: &[u32], reason: &'static str, link: &Link) {
        self.tombs.extend(leave.iter().map(|&row| Tomb { row, reason: None }));
        self.tombs.extend(stay.iter().map(|&row| Tomb { row, reason: Some(reason) }));
        self.tomb_batches.push(stay.len() + leave.len());
        self.rejoin.extend(stay.iter().map(|&j| link.truth(j)));
    }

    fn count_grouping(&mut self, records: usize, ncp_sum: f64) {
        self.grouped += records;
        self.ncp_sum += ncp_sum;
    }
}

/// The partner's purposes a releasable subject may be processed for now, as a bit mask.
fn purpose_mask(ctx: &Ctx, truth: &Truth, i: u32) -> u64 {
    ctx.legal_classes.get(truth.legal[i as usize] as usize).map(|l| l.mask).unwrap_or(0)
}

/// A held cohort's stored record, if it was made under the current columns, hierarchies and
/// purposes.
fn current_record<'s>(ctx: &Ctx, stored: &'s FxMap<i64, Option<Stored>>, cohort: i64) -> Option<&'s Stored> {
    stored
        .get(&cohort)
        .and_then(|s| s.as_ref())
        .filter(|s| s.columns == ctx.columns && s.hierarchies == ctx.specs && s.purposes == ctx.purposes)
}

/// The held cohorts whose current record is no longer true of some member that is still
/// releasable. Checked in one pass over the subjects in table order, not cohort by cohort: a
/// cohort's members lie all over the table, and reading their values member by member missed
/// the cache on every value (a tenth of a repeated export at 200 000 subjects).
fn uncovered_cohorts(
    ctx: &Ctx,
    truth: &Truth,
    sets: &Sets,
    state: &[StateRow],
    stored: &FxMap<i64, Option<Stored>>,
    link: &Link,
) -> MsegResult<FxSet<i64>> {
    let mut coverage = Coverage::new(ctx, truth);
    let mut resolved: FxMap<i64, Option<release::Resolved>> = FxMap::default();
    let mut uncovered: FxSet<i64> = Default::default();
    for (i, &j) in link.state_of_truth.iter().enumerate() {
        let Some(cohort) = state.get(j as usize).and_then(|r| r.cohort) else { continue };
        if cohort < 0 || uncovered.contains(&cohort) {
            continue;
        }
        let record = resolved.entry(cohort).or_insert_with(|| current_record(ctx, stored, cohort).map(|s| coverage.resolve(&s.record)));
        if let Some(r) = record {
            if !coverage.covers(r, sets, i)? {
                uncovered.insert(cohort);
            }
        }
    }
    Ok(uncovered)
}

/// Step: every cohort the partner holds is kept, shrunk, regrouped over its own members, or
/// ended (see `build_export`).
#[allow(clippy::too_many_arguments)]
fn carry_cohorts(
    plan: &mut Plan,
    mode: Mode,
    ctx: &Ctx,
    truth: &Truth,
    sets: &mut Sets,
    state: &[StateRow],
    stored: &FxMap<i64, Option<Stored>>,
    link: &Link,
    now: &str,
) -> MsegResult<()> {
    let k = ctx.k;
    let mut members_of: FxMap<i64, Vec<u32>> = FxMap::default();
    for (j, r) in state.iter().enumerate() {
        if let Some(c) = r.cohort {
            members_of.entry(c).or_default().push(j as u32);
        }
    }
    let mut cohort_ids: Vec<i64> = members_of.keys().copied().collect();
    cohort_ids.sort_unstable();
    let uncovered = if mode == Mode::Refresh { Default::default() } else { uncovered_cohorts(ctx, truth, sets, state, stored, link)? };
    for cid in cohort_ids {
        let rows = members_of.remove(&cid).unwrap_or_default();
        let (stay, leave): (Vec<u32>, Vec<u32>) = rows.iter().partition(|&&j| link.truth(j) != NONE);
        if mode == Mode::Refresh {
            // every cohort ends; everyone is grouped afresh under a new pseudonym
            plan.end_cohort(&stay, &leave, "refreshed", link);
            continue;
        }
        if cid < 0 {
            // twins held from mseg-vt/1 dumps (the 0.1.0 -> 0.2.0 upgrade): they end together and
            // are released again under new pseudonyms, so no old record meets a new one
            plan.end_cohort(&stay, &leave, "regrouped", link);
            continue;
        }
        if !leave.is_empty() {
            if leave.len() >= k && stay.len() >= k {
                plan.tombs.extend(leave.iter().map(|&row| Tomb { row, reason: None }));
                plan.tomb_batches.push(leave.len());
            } else {
                // the whole cohort ends; those who may still be released wait for a new group
                plan.end_cohort(&stay, &leave, "regrouped", link);
                continue;
            }
        }
        if stay.len() < k {
            plan.end_cohort(&stay, &[], "regrouped", link);
            continue;
        }
        // is the record still true of every member (and made under the current columns)?
        let current = current_record(ctx, stored, cid);
        let fresh = current.is_some_and(|s| s.record.expires_at().is_none_or(|e| e > now)) && !uncovered.contains(&cid);
        if let (true, Some(s)) = (fresh, current) {
            plan.outs.push(Out {
                id: cid,
                record: s.record.clone(),
                held: stay,
                new: Vec::new(),
                changed: false,
                write: !leave.is_empty(),
                moved: false,
            });
            continue;
        }
        // regroup the cohort over its own members: they keep their pseudonyms. A twin never
        // loses a purpose its subject still allows, so members are regrouped per set of
        // purposes; when a set has fewer than k members, or a group cannot be formed, the
        // cohort ends instead and its members are grouped afresh with everyone waiting
        let mut by_mask: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for &j in &stay {
            let i = link.truth(j);
            by_mask.entry(purpose_mask(ctx, truth, i)).or_default().push(i);
        }
        let mut g = release::Grouping::default();
        for members in by_mask.values() {
            if members.len() < k {
                g.incompatible = true;
                break;
            }
            let part = release::group(ctx, truth, sets, members, 0.0)?;
            g.incompatible |= part.incompatible || !part.unplaced.is_empty();
            g.records += part.records;
            g.ncp_sum += part.ncp_sum;
            g.parts.extend(part.parts);
        }
        if g.incompatible || g.parts.is_empty() {
            plan.end_cohort(&stay, &[], "regrouped", link);
            continue;
        }
        plan.regrouped_cohorts += 1;
        plan.count_grouping(g.records, g.ncp_sum);
        let mut parts = g.parts;
        parts.sort_by(|a, b| b.1.len().cmp(&a.1.len()));
        let old = current.map(|s| &s.record);
        for (n, (record, part)) in parts.into_iter().enumerate() {
            let changed = old != Some(&record);
            let held: Vec<u32> = part.iter().map(|&i| link.state_of_truth[i as usize]).collect();
            let (id, moved) = if n == 0 { (cid, false) } else { (plan.new_cohort_id(), true) };
            plan.outs.push(Out { id, record, held, new: Vec::new(), changed, write: true, moved });
        }
    }
    Ok(())
}

/// Step: subjects not held (new, ended earlier, or from a cohort that ended now) are grouped per
/// set of purposes and released only in groups of at least k, under their next pseudonym.
fn release_waiting(
    plan: &mut Plan,
    p: &Partner,
    ctx: &Ctx,
    truth: &Truth,
    sets: &mut Sets,
    state: &[StateRow],
    link: &Link,
) -> MsegResult<()> {
    let keys = keys::domain_keys(&partner_domain(&p.name))?;
    let mut waiting: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for (i, &j) in link.state_of_truth.iter().enumerate() {
        if j == NONE || state[j as usize].cohort.is_none() {
            waiting.entry(purpose_mask(ctx, truth, i as u32)).or_default().push(i as u32);
        }
    }
    for &i in &plan.rejoin {
        waiting.entry(purpose_mask(ctx, truth, i)).or_default().push(i);
    }
    for members in waiting.values_mut() {
        members.sort_unstable();
        let g = release::group(ctx, truth, sets, members, p.suppression_limit)?;
        plan.count_grouping(g.records, g.ncp_sum);
        plan.pending += g.unplaced.len();
        for (record, part) in g.parts {
            let new = part
                .iter()
                .map(|&i| {
                    let j = link.state_of_truth[i as usize];
                    let generation = if j == NONE { 0 } else { state[j as usize].generation.saturating_add(1) };
                    if j == NONE {
                        plan.first_released += 1;
                    }
                    (i, generation, twin_pseudonym(&keys, truth.subjects[i as usize], generation))
                })
                .collect();
            let id = plan.new_cohort_id();
            plan.outs.push(Out { id, record, held: Vec::new(), new, changed: true, write: true, moved: false });
        }
    }
    Ok(())
}

/// Step: why each twin ended (counted in the manifest; tombstone lines never say), and the
/// subjects erased among them (their link to the pseudonym is deleted).
fn name_endings(
    tombs: &mut [Tomb],
    state: &[StateRow],
    unreleasable: &FxMap<i64, &'static str>,
) -> MsegResult<(BTreeMap<&'static str, usize>, Vec<i64>)> {
    let leaving: Vec<i64> = tombs
        .iter()
        .filter(|t| t.reason.is_none())
        .map(|t| state[t.row as usize].subject)
        .filter(|s| !unreleasable.contains_key(s))
        .collect();
    let reasons = tombstone_reasons(&leaving)?;
    let mut by_reason: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut erased: Vec<i64> = Vec::new();
    for t in tombs.iter_mut() {
        let s = state[t.row as usize].subject;
        let reason = t.reason.or_else(|| unreleasable.get(&s).copied()).unwrap_or_else(|| match reasons.get(&s).map(String::as_str) {
            Some("erased") => "erased",
            Some("restricted") => "restricted",
            Some("objected") => "objected",
            Some("withdrawn") => "withdrawn",
            _ => "out_of_scope",
        });
        t.reason = Some(reason);
        *by_reason.entry(reason).or_default() += 1;
        if reason == "erased" {
            erased.push(s);
        }
    }
    Ok((by_reason, erased))
}

/// The dump's body in line order: twins as (pseudonym, index of their cohort in `outs`), then
/// tombstone lines.
struct Lines {
    twins: Vec<([u8; pseudonym::PSEUDONYM_LEN], u32)>,
    tombstones: Vec<String>,
}

/// Step: the lines in an order that says nothing of subject keys or of the order subjects were
/// added: twins by pseudonym (a keyed hash), then tombstones by pseudonym.
fn order_lines(delta: bool, outs: &[Out], state: &[StateRow], tombs: &[Tomb]) -> Lines {
    let mut twins: Vec<([u8; pseudonym::PSEUDONYM_LEN], u32)> = Vec::new();
    for (n, o) in outs.iter().enumerate() {
        if !delta || o.changed {
            twins.extend(o.held.iter().map(|&j| (state[j as usize].pseudonym, n as u32)));
            twins.extend(o.new.iter().map(|&(_, _, pn)| (pn, n as u32)));
        }
    }
    // by the first 8 bytes as one integer (ASCII, so the same order), the rest only on a tie
    let prefix = |p: &[u8; pseudonym::PSEUDONYM_LEN]| u64::from_be_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]]);
    twins.sort_unstable_by(|a, b| prefix(&a.0).cmp(&prefix(&b.0)).then_with(|| a.cmp(b)));
    // tombstones only in a delta: a full dump lists what the partner holds, and its import
    // replaces everything, so a twin left out has ended
    let mut ended: Vec<[u8; pseudonym::PSEUDONYM_LEN]> =
        if delta { tombs.iter().map(|t| state[t.row as usize].pseudonym).collect() } else { Vec::new() };
    ended.sort_unstable();
    let tombstones = ended.iter().map(|pn| dump::tombstone_line(&String::from_utf8_lossy(pn))).collect();
    Lines { twins, tombstones }
}

/// What the manifest reports of the partner's holdings after this dump.
struct Summary {
    held: usize,
    /// the smallest group over every released field but the pseudonym: held, in this dump, and
    /// over every batch released or ended together
    k_reached: usize,
    k_in_dump: usize,
    k_history: usize,
    discernibility: u64,
    ncp_held: f64,
    true_memberships: usize,
    kept_memberships: usize,
    /// per quasi column: the generalisation levels used ({min, max, top})
    levels: BTreeMap<String, Json>,
    /// the segments named in some twin
    segments: std::collections::BTreeSet<String>,
}

/// Step: the partner's holdings after this dump, grouped by every released field but the
/// pseudonym.
fn summarize(delta: bool, ctx: &Ctx, truth: &Truth, sets: &Sets, link: &Link, plan: &Plan) -> MsegResult<Summary> {
    let mut held_groups: FxMap<&Record, usize> = FxMap::default();
    let mut dump_groups: FxMap<&Record, usize> = FxMap::default();
    let mut k_history = usize::MAX;
    let (mut true_memberships, mut kept_memberships) = (0usize, 0usize);
    let nq = ctx.columns.len();
    let mut levels: Vec<(usize, usize)> = vec![(usize::MAX, 0); nq];
    let mut segments = std::collections::BTreeSet::new();
    for o in &plan.outs {
        let size = o.size();
        *held_groups.entry(&o.record).or_default() += size;
        if !delta || o.changed {
            *dump_groups.entry(&o.record).or_default() += size;
        }
        k_history = k_history.min(size);
        kept_memberships += o.record.segments.len() * size;
        for i in o.held.iter().map(|&j| link.truth(j)).chain(o.new.iter().map(|n| n.0)) {
            true_memberships += sets.get(truth.set[i as usize]).len();
        }
        for (c, &l) in o.record.levels.iter().enumerate().take(nq) {
            levels[c] = (levels[c].0.min(usize::from(l)), levels[c].1.max(usize::from(l)));
        }
        segments.extend(o.record.segments.iter().cloned());
    }
    for &b in &plan.tomb_batches {
        k_history = k_history.min(b);
    }
    let held_list: Vec<(&Record, usize)> = held_groups.iter().map(|(r, n)| (*r, *n)).collect();
    let ncp_held = release::held_ncp(ctx, truth, &held_list)?;
    let levels = ctx
        .columns
        .iter()
        .zip(&ctx.hierarchies)
        .zip(&levels)
        .map(|((c, h), &(min, max))| {
            let top = h.top();
            let (min, max) = if min == usize::MAX { (top, top) } else { (min, max) };
            (c.clone(), json!({"min": min, "max": max, "top": top}))
        })
        .collect();
    Ok(Summary {
        held: held_groups.values().sum(),
        k_reached: held_groups.values().min().copied().unwrap_or(0),
        k_in_dump: dump_groups.values().min().copied().unwrap_or(0),
        k_history: if k_history == usize::MAX { 0 } else { k_history },
        discernibility: held_groups.values().map(|&n| (n as u64) * (n as u64)).sum(),
        ncp_held,
        true_memberships,
        kept_memberships,
        levels,
        segments,
    })
}

/// New rows of mseg.partner_twins from arrays ($2 subject keys, $3 generations, $4 pseudonyms,
/// $5 cohorts).
const INSERT_TWINS: &str = "INSERT INTO mseg.partner_twins (partner, subject_key, generation, pseudonym, cohort, sequence) \
     SELECT $1, u.s, u.g, u.pn, u.c, $6 FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.int8[]), pg_catalog.unnest($3::pg_catalog.int4[]), \
       pg_catalog.unnest($4::pg_catalog.text[]), pg_catalog.unnest($5::pg_catalog.int8[])) AS u(s, g, pn, c)";
/// For subjects the partner held before (a later generation): their row is rewritten.
const REWRITE_TWINS: &str = " ON CONFLICT (partner, subject_key) DO UPDATE SET generation = EXCLUDED.generation, \
     pseudonym = EXCLUDED.pseudonym, cohort = EXCLUDED.cohort, sequence = EXCLUDED.sequence, tombstoned_at = NULL";

/// Remember what the partner holds after this export, and the export itself (its digest is
/// recorded when the trailer is written).
#[allow(clippy::too_many_arguments)]
fn write_state(
    p: &Partner,
    sequence: i64,
    delta: bool,
    ctx: &Ctx,
    state: &[StateRow],
    truth: &Truth,
    outs: &[Out],
    tombs: &[Tomb],
    erased: &[i64],
    stored: &FxMap<i64, Option<Stored>>,
    manifest: &Json,
) -> MsegResult<()> {
    let name = p.name.as_str();
    // twins that ended; those released again in this export (under their next generation) are
    // rewritten by the insert below, once
    let again: FxSet<i64> = outs.iter().flat_map(|o| o.new.iter().map(|n| truth.subjects[n.0 as usize])).collect();
    let tombstoned: Vec<i64> = tombs.iter().map(|t| state[t.row as usize].subject).filter(|s| !again.contains(s)).collect();
    let kept: std::collections::HashSet<i64> = outs.iter().map(|o| o.id).collect();
    let ended: Vec<i64> = stored.keys().copied().filter(|id| !kept.contains(id)).collect();
    let mut cohort_rows: Vec<(i64, String, i32)> = Vec::new();
    for o in outs.iter().filter(|o| o.write) {
        let s = Stored {
            columns: ctx.columns.clone(),
            hierarchies: ctx.specs.clone(),
            purposes: ctx.purposes.clone(),
            record: o.record.clone(),
        };
        let text = serde_json::to_string(&s).map_err(|e| MsegError::new(Code::General, e.to_string()))?;
        cohort_rows.push((o.id, text, o.size() as i32));
    }
    catalog::update(|c| {
        // the partner's row first: locked until the export commits, so remove_partner waits for it
        // (mseg.partner_twins has no foreign key to check that per row)
        let locked = c.update(
            "UPDATE mseg.partners SET last_sequence = $2 WHERE name OPERATOR(pg_catalog.=) $1 RETURNING 1",
            None,
            &[name.into(), sequence.into()],
        )?;
        if locked.is_empty() {
            return Err(MsegError::new(Code::UnknownPartner, format!("partner \"{name}\" was removed during the export"))
                .hint("Nothing was exported."));
        }
        // ended twins first (a cohort that ended now may release some of them again below): they
        // stay known (resolve refuses them as not processable) unless the subject was erased, then
        // the link between pseudonym and subject goes too
        c.update(
            "DELETE FROM mseg.partner_twins WHERE partner OPERATOR(pg_catalog.=) $1 AND subject_key OPERATOR(pg_catalog.=) ANY ($2)",
            None,
            &[name.into(), erased.to_vec().into()],
        )?;
        for chunk in tombstoned.chunks(10_000) {
            c.update(
                "UPDATE mseg.partner_twins SET cohort = NULL, tombstoned_at = pg_catalog.now(), sequence = $3 \
                 WHERE partner OPERATOR(pg_catalog.=) $1 AND subject_key OPERATOR(pg_catalog.=) ANY ($2)",
                None,
                &[name.into(), sql_array::int8(chunk), sequence.into()],
            )?;
        }
        // twins sent now for the first time under their pseudonym, in batches of arrays, in
        // pseudonym order (the wider of the two indexes then grows at its right edge: 10 % less
        // than key order, 30 % less than cohort order at 190 000 rows). Generation 0 is a subject the
        // partner never held (no state row, see release_waiting): a plain insert, without the
        // conflict check per row; a later generation rewrites the subject's row
        let mut new_rows: Vec<(i64, i32, &[u8], i64)> = Vec::new();
        for o in outs {
            for (i, g, pn) in &o.new {
                new_rows.push((truth.subjects[*i as usize], *g, pn.as_slice(), o.id));
            }
        }
        new_rows.sort_unstable_by(|a, b| a.2.cmp(b.2));
        let (first_time, again): (Vec<_>, Vec<_>) = new_rows.into_iter().partition(|r| r.1 == 0);
        let upsert_twins = format!("{INSERT_TWINS}{REWRITE_TWINS}");
        for (rows, sql) in [(first_time, INSERT_TWINS), (again, upsert_twins.as_str())] {
            for chunk in rows.chunks(10_000) {
                let subjects: Vec<i64> = chunk.iter().map(|r| r.0).collect();
                let generations: Vec<i32> = chunk.iter().map(|r| r.1).collect();
                let pseudonyms = chunk
                    .iter()
                    .map(|r| std::str::from_utf8(r.2))
                    .collect::<std::result::Result<Vec<&str>, _>>()
                    .map_err(|e| MsegError::new(Code::General, format!("pseudonym is not text: {e}")))?;
                let cohorts: Vec<i64> = chunk.iter().map(|r| r.3).collect();
                c.update(
                    sql,
                    None,
                    &[
                        name.into(),
                        sql_array::int8(&subjects),
                        sql_array::int4(&generations),
                        sql_array::text(pseudonyms),
                        sql_array::int8(&cohorts),
                        sequence.into(),
                    ],
                )?;
            }
        }
        // held twins whose cohort was split off from the one they were in
        let moved: Vec<(i64, i64)> =
            outs.iter().filter(|o| o.moved).flat_map(|o| o.held.iter().map(move |&j| (state[j as usize].subject, o.id))).collect();
        for chunk in moved.chunks(10_000) {
            let subjects: Vec<i64> = chunk.iter().map(|r| r.0).collect();
            let cohorts: Vec<i64> = chunk.iter().map(|r| r.1).collect();
            c.update(
                "UPDATE mseg.partner_twins t SET cohort = u.c, sequence = $4 \
                 FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.int8[]), pg_catalog.unnest($3::pg_catalog.int8[])) AS u(s, c) \
                 WHERE t.partner OPERATOR(pg_catalog.=) $1 AND t.subject_key OPERATOR(pg_catalog.=) u.s",
                None,
                &[name.into(), sql_array::int8(&subjects), sql_array::int8(&cohorts), sequence.into()],
            )?;
        }
        c.update(
            "DELETE FROM mseg.partner_cohorts WHERE partner OPERATOR(pg_catalog.=) $1 AND cohort OPERATOR(pg_catalog.=) ANY ($2)",
            None,
            &[name.into(), ended.into()],
        )?;
        for chunk in cohort_rows.chunks(10_000) {
            let ids: Vec<i64> = chunk.iter().map(|r| r.0).collect();
            let records: Vec<&str> = chunk.iter().map(|r| r.1.as_str()).collect();
            let sizes: Vec<i32> = chunk.iter().map(|r| r.2).collect();
            c.update(
                "INSERT INTO mseg.partner_cohorts AS pc (partner, cohort, record, members, created_sequence, changed_sequence) \
                 SELECT $1, u.id, u.r::pg_catalog.jsonb, u.n, $5, $5 FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.int8[]), \
                   pg_catalog.unnest($3::pg_catalog.text[]), pg_catalog.unnest($4::pg_catalog.int4[])) AS u(id, r, n) \
                 ON CONFLICT (partner, cohort) DO UPDATE SET members = EXCLUDED.members, record = EXCLUDED.record, \
                   changed_sequence = CASE WHEN pc.record OPERATOR(pg_catalog.=) EXCLUDED.record THEN pc.changed_sequence ELSE EXCLUDED.changed_sequence END",
                None,
                &[name.into(), sql_array::int8(&ids), sql_array::text(records), sql_array::int4(&sizes), sequence.into()],
            )?;
        }
        c.update(
            "INSERT INTO mseg.partner_exports (partner, sequence, mode, manifest) VALUES ($1, $2, $3, $4)",
            None,
            &[name.into(), sequence.into(), (if delta { "delta" } else { "full" }).into(), pgrx::JsonB(manifest.clone()).into()],
        )?;
        Ok(())
    })
}

/// Why subjects left a partner's scope: erased, restricted, objected, withdrawn or out_of_scope.
fn tombstone_reasons(subjects: &[i64]) -> MsegResult<HashMap<i64, String>> {
    if subjects.is_empty() {
        return Ok(HashMap::new());
    }
    catalog::select(|c| {
        let mut m = HashMap::new();
        for row in c.select(
            "SELECT k, CASE WHEN e.subject_ref IS NOT NULL OR ss.erased_at IS NOT NULL THEN 'erased' \
                            WHEN ss.restricted_at IS NOT NULL THEN 'restricted' \
                            WHEN EXISTS (SELECT 1 FROM mseg.legal_basis_state b WHERE b.subject_key OPERATOR(pg_catalog.=) k AND b.objected_at IS NOT NULL) THEN 'objected' \
                            WHEN EXISTS (SELECT 1 FROM mseg.legal_basis_state b WHERE b.subject_key OPERATOR(pg_catalog.=) k AND b.withdrawn_at IS NOT NULL) THEN 'withdrawn' \
                            ELSE 'out_of_scope' END \
             FROM pg_catalog.unnest($1::pg_catalog.int8[]) k \
             LEFT JOIN mseg.subject_state ss ON ss.subject_key OPERATOR(pg_catalog.=) k \
             LEFT JOIN mseg.erasures e ON e.subject_id OPERATOR(pg_catalog.=) k \
                  OR e.subject_ref OPERATOR(pg_catalog.=) mseg._subject_ref(k::pg_catalog.text)",
            None,
            &[sql_array::int8(subjects)],
        )? {
            m.insert(row.get::<i64>(1)?.unwrap_or(0), row.get::<String>(2)?.unwrap_or_default());
        }
        Ok(m)
    })
}
