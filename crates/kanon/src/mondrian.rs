//! Top-down greedy local recoding along the hierarchies (Mondrian-style).
//!
//! Every partition carries one node per column; the root partition holds every subject at
//! `*` everywhere. For a partition, each column whose node is not a leaf is tried one level
//! down: its elements fall into the node's children (a subject whose rows straddle two
//! children *stays*). Children with ≥ k subjects (and ≥ l distinct sensitive values) become
//! partitions of their own. The rest (small children and straddlers) stays together at the
//! parent node if it is itself ≥ k (and ≥ l); if not, either the valid children with the
//! smallest gain are merged into it until it is, or it is suppressed when the remaining
//! suppression budget covers it and suppressing costs less NCP than merging (both costs are
//! upper bounds: a suppressed row loses up to 1 per column, a merged row keeps the parent
//! node in this column for good). Among the columns, the split with the largest NCP gain per
//! nat of entropy it spends is applied; a node with one non-empty child is descended for
//! free. A partition nobody can split further is a released class.
//!
//! Invariant: every partition ever created has ≥ k subjects and ≥ l values, so every
//! released class does; suppression is only ever used to gain precision.
//!
//! Work: each split costs O(m·q) for a partition of m subjects (one counting pass per
//! column, one scatter per array). A subject takes part in at most Σ(levels) splits.

use crate::encode::{ColumnIndex, Elements, NONE};
use crate::solution::{for_each_sens, sens_len, Node, SolClass, Solution, Stamps};
use std::mem;

struct Part {
    s: usize,
    e: usize,
    nodes: Vec<Node>,
    /// columns that may not be specialised any more (bit per column)
    fin: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rest {
    Empty,
    Keep,
    Suppress,
}

struct Cand {
    col: usize,
    /// NCP gain (in record·column units) per nat of entropy of the split
    score: f64,
    lc: usize,
    first: u32,
    /// the non-empty children, local index → child offset from `first` (the "stay" group,
    /// subjects whose rows straddle two children, is offset `nch`, never `own`)
    touched: Vec<u32>,
    /// local index → becomes a partition of its own
    own: Vec<bool>,
    rest: Rest,
    rest_rows: u64,
}

struct Mondrian<'a> {
    cols: &'a [ColumnIndex],
    k: u64,
    l: Option<u64>,
    budget: u64,
    el: Elements,
    eid: Vec<u32>,
    stamps: Stamps,
    // scratch
    child: Vec<u32>,
    best_child: Vec<u32>,
    tmp: Vec<u32>,
    dest: Vec<u32>,
    slot: Vec<u32>,
    touched: Vec<u32>,
    cnt: Vec<u64>,
    rows: Vec<u64>,
    ent: Vec<usize>,
    seg: Vec<usize>,
    sbuf: Vec<u32>,
    dist: Vec<u64>,
    /// columns from here on are segment memberships (leaf 1: member), see [`mondrian`]
    seg_from: usize,
    seg_weight: f64,
}

/// The hierarchy algorithm. Columns `seg_from..` are segment memberships (a two-leaf
/// categorical, code 1 for members): splitting one gains `seg_weight` per member row (those
/// memberships can now be released), nothing for the non-members, and they count for nothing
/// in the suppression cost.
pub(crate) fn mondrian(
    cols: &[ColumnIndex],
    el: Elements,
    k: usize,
    l: Option<usize>,
    budget: u64,
    seg_from: usize,
    seg_weight: f64,
) -> Solution {
    let n = el.n;
    let q = cols.len();
    assert!(q <= 64, "at most 64 quasi columns");
    let max_codes = cols.iter().map(|c| c.n_codes as usize).max().unwrap_or(0);
    let n_sens = el.n_sens as usize;
    let mut m = Mondrian {
        cols,
        k: k as u64,
        l: l.map(|l| l as u64),
        budget,
        eid: (0..n as u32).collect(),
        stamps: Stamps::new(n_sens),
        child: vec![0; n],
        best_child: vec![0; n],
        tmp: vec![0; n],
        dest: vec![0; n],
        slot: vec![NONE; max_codes + 1],
        touched: Vec::new(),
        cnt: Vec::new(),
        rows: Vec::new(),
        ent: Vec::new(),
        seg: Vec::new(),
        sbuf: Vec::new(),
        dist: Vec::new(),
        seg_from,
        seg_weight,
        el,
    };
    let mut element_class = vec![NONE; n];
    if n == 0 {
        return Solution {
            classes: Vec::new(),
            element_class,
        };
    }
    let root_ok = n as u64 >= m.k && m.l.is_none_or(|l| m.distinct(0, n) >= l);
    if !root_ok {
        return Solution {
            classes: Vec::new(),
            element_class,
        };
    }
    let root = Part {
        s: 0,
        e: n,
        nodes: cols
            .iter()
            .map(|c| Node {
                level: c.top as u16,
                id: 0,
            })
            .collect(),
        fin: 0,
    };
    let mut stack = vec![root];
    let mut done: Vec<Part> = Vec::new();
    while let Some(mut p) = stack.pop() {
        let mut best: Option<Cand> = None;
        for c in 0..q {
            if let Some(cand) = m.evaluate(&mut p, c) {
                if best.as_ref().is_none_or(|b| cand.score > b.score) {
                    best = Some(cand);
                    mem::swap(&mut m.child, &mut m.best_child);
                }
            }
        }
        match best {
            None => done.push(p),
            Some(cand) => m.apply(p, cand, &mut stack),
        }
    }

    let has_sens = !m.el.sens.is_empty();
    let mut classes = Vec::with_capacity(done.len());
    for (ci, p) in done.into_iter().enumerate() {
        let mut rows = 0;
        for i in p.s..p.e {
            element_class[m.eid[i] as usize] = ci as u32;
            rows += m.el.weight(i);
        }
        let sensitive = if has_sens { m.distinct(p.s, p.e) } else { 0 };
        classes.push(SolClass {
            nodes: p.nodes,
            gens: Vec::new(),
            subjects: (p.e - p.s) as u64,
            rows,
            sensitive,
        });
    }
    Solution {
        classes,
        element_class,
    }
}

impl Mondrian<'_> {
    /// Distinct sensitive values of the elements at positions `s..e`.
    fn distinct(&mut self, s: usize, e: usize) -> u64 {
        self.stamps.next();
        let mut d = 0;
        for i in s..e {
            let code = self.el.sens[i];
            let st = &mut self.stamps;
            for_each_sens(&self.el, code, |v| {
                if st.add(v) {
                    d += 1
                }
            });
        }
        d
    }

    /// Tries to specialise column `c` of `p` by one level (descending for free through
    /// nodes with a single non-empty child). Leaves the children in `self.child`.
    fn evaluate(&mut self, p: &mut Part, c: usize) -> Option<Cand> {
        if p.fin & (1u64 << c) != 0 {
            return None;
        }
        let cols = self.cols;
        let col = &cols[c];
        let (s, e) = (p.s, p.e);
        let m = e - s;
        let (lc, first, nch) = loop {
            let node = p.nodes[c];
            if node.level == 0 {
                return None;
            }
            let lv = node.level as usize;
            let lc = lv - 1;
            let a = col.start(lv, node.id);
            let b = col.end(lv, node.id);
            let first = col.node(lc, a);
            let nch = col.node(lc, b - 1) - first + 1;
            self.count_children(c, s, e, lc, first, nch);
            if self.touched.len() == 1 {
                let only = self.touched[0];
                self.slot[only as usize] = NONE;
                if only == nch {
                    // every subject straddles: this column cannot go further here
                    p.fin |= 1u64 << c;
                    return None;
                }
                p.nodes[c] = Node {
                    level: lc as u16,
                    id: first + only,
                };
                continue;
            }
            break (lc, first, nch);
        };
        for &t in &self.touched {
            self.slot[t as usize] = NONE;
        }
        let t = self.touched.len();
        let touched = mem::take(&mut self.touched);
        let node = p.nodes[c];
        let pn = col.ncp(node.level as usize, node.id);
        if self.l.is_some() {
            self.group_sens(s, m, t);
        }
        let k = self.k;
        let l = self.l;
        let mut own = vec![false; t];
        let mut gains = vec![0.0f64; t];
        let mut own_list: Vec<usize> = Vec::new();
        let (mut rest_cnt, mut rest_rows) = (0u64, 0u64);
        let mut total = 0.0;
        for j in 0..t {
            let is_stay = touched[j] == nch;
            let ok = !is_stay && self.cnt[j] >= k && l.is_none_or(|l| self.dist[j] >= l);
            if ok {
                own[j] = true;
                let g = if c >= self.seg_from {
                    // a segment: only the members gain (their membership can be shown)
                    if first + touched[j] == 1 {
                        self.rows[j] as f64 * self.seg_weight
                    } else {
                        0.0
                    }
                } else {
                    self.rows[j] as f64 * (pn - col.ncp(lc, first + touched[j]))
                };
                gains[j] = g;
                total += g;
                own_list.push(j);
            } else {
                rest_cnt += self.cnt[j];
                rest_rows += self.rows[j];
            }
        }
        if own_list.is_empty() {
            return None;
        }
        let mut rest = Rest::Empty;
        let mut gain = total;
        let mut suppressed_rows = 0;
        if rest_cnt > 0 {
            let mut rest_distinct = 0;
            if l.is_some() {
                self.stamps.next();
                for j in 0..t {
                    if !own[j] {
                        rest_distinct += self.union_add(j);
                    }
                }
            }
            let rest_ok = rest_cnt >= k && l.is_none_or(|l| rest_distinct >= l);
            if rest_ok {
                rest = Rest::Keep;
            } else {
                // option A: merge the valid children with the least gain into the rest
                let mut order = own_list.clone();
                order.sort_by(|&a, &b| gains[a].total_cmp(&gains[b]).then(a.cmp(&b)));
                let (mut rc, mut rd) = (rest_cnt, rest_distinct);
                let mut merge_gain = None;
                let mut merged = 0;
                for (idx, &j) in order.iter().enumerate() {
                    rc += self.cnt[j];
                    if l.is_some() {
                        rd += self.union_add(j);
                    }
                    if rc >= k && l.is_none_or(|l| rd >= l) {
                        merged = idx + 1;
                        if merged < order.len() {
                            // the merged children keep the parent node in this column for
                            // good: they forgo all of its remaining precision, rows × ncp(parent)
                            let lost: f64 = order[..merged]
                                .iter()
                                .map(|&j| self.rows[j] as f64 * pn)
                                .sum();
                            merge_gain = Some(total - lost);
                        }
                        break;
                    }
                }
                // option B: suppress the rest, if the budget covers it
                // a suppressed row loses everything it could still gain: up to 1 per column
                // (its current NCP would understate this near the root)
                let suppress_gain = (rest_rows <= self.budget)
                    .then_some(total - rest_rows as f64 * self.seg_from as f64);
                match (merge_gain, suppress_gain) {
                    (Some(a), Some(b)) if b > a => {
                        gain = b;
                        rest = Rest::Suppress;
                        suppressed_rows = rest_rows;
                    }
                    (Some(a), _) => {
                        gain = a;
                        rest = Rest::Keep;
                        for &j in &order[..merged] {
                            own[j] = false;
                        }
                    }
                    (None, Some(b)) => {
                        gain = b;
                        rest = Rest::Suppress;
                        suppressed_rows = rest_rows;
                    }
                    (None, None) => return None,
                }
            }
        }
        if gain.is_nan() || gain <= 0.0 {
            return None;
        }
        // Rank by NCP gained per nat of partition entropy spent: every split divides the
        // partition, and a table of N subjects affords only about ln(N/k) nats of division
        // before classes reach k. A split that gains a little for many groups can starve
        // later, better splits; one that peels off a small rest is almost free.
        let mut entropy = 0.0;
        let mut rest_cnt_final = 0u64;
        for j in 0..t {
            if own[j] {
                let p = self.cnt[j] as f64 / m as f64;
                entropy -= p * p.ln();
            } else {
                rest_cnt_final += self.cnt[j];
            }
        }
        if rest == Rest::Keep && rest_cnt_final > 0 {
            let p = rest_cnt_final as f64 / m as f64;
            entropy -= p * p.ln();
        }
        let score = gain / entropy.max(1e-12);
        Some(Cand {
            col: c,
            score,
            lc,
            first,
            touched,
            own,
            rest,
            rest_rows: suppressed_rows,
        })
    }

    /// One pass over column `c` of positions `s..e`: the local child of every element into
    /// `self.child`, and per local child its subjects and rows. A subject whose code range
    /// spans two children goes to the "stay" child `nch`.
    fn count_children(&mut self, c: usize, s: usize, e: usize, lc: usize, first: u32, nch: u32) {
        let col = &self.cols[c];
        let map = col.node_map(lc);
        let codes = &self.el.codes[c][s..e];
        let hi = if self.el.hi.is_empty() {
            None
        } else {
            Some(&self.el.hi[c][s..e])
        };
        let child = &mut self.child[..e - s];
        let slot = &mut self.slot;
        let touched = &mut self.touched;
        let cnt = &mut self.cnt;
        touched.clear();
        cnt.clear();
        let node = |x: u32| match map {
            None => x,
            Some(mp) => mp[x as usize],
        };
        for i in 0..codes.len() {
            let code = codes[i];
            let mut g = node(code) - first;
            if let Some(hi) = hi {
                let h = hi[i];
                if h != code && node(h) - first != g {
                    g = nch;
                }
            }
            let mut local = slot[g as usize];
            if local == NONE {
                local = touched.len() as u32;
                slot[g as usize] = local;
                touched.push(g);
                cnt.push(0);
            }
            child[i] = local;
            cnt[local as usize] += 1;
        }
        self.rows.clear();
        if self.el.weight.is_empty() {
            self.rows.extend_from_slice(&self.cnt);
        } else {
            self.rows.resize(self.touched.len(), 0);
            for (i, &ch) in self.child[..e - s].iter().enumerate() {
                self.rows[ch as usize] += self.el.weight[s + i] as u64;
            }
        }
    }

    /// Groups the sensitive values of positions `s..s+m` by local child (counting sort into
    /// `sbuf`, segments in `seg`) and counts each child's distinct values into `dist`.
    fn group_sens(&mut self, s: usize, m: usize, t: usize) {
        self.ent.clear();
        self.ent.resize(t, 0);
        for i in 0..m {
            self.ent[self.child[i] as usize] += sens_len(&self.el, self.el.sens[s + i]);
        }
        self.seg.clear();
        self.seg.push(0);
        for j in 0..t {
            let last = *self.seg.last().unwrap();
            self.seg.push(last + self.ent[j]);
        }
        let total = self.seg[t];
        self.sbuf.clear();
        self.sbuf.resize(total, 0);
        // reuse ent as the write cursor
        for j in 0..t {
            self.ent[j] = self.seg[j];
        }
        for i in 0..m {
            let ch = self.child[i] as usize;
            let code = self.el.sens[s + i];
            let (sbuf, ent) = (&mut self.sbuf, &mut self.ent);
            for_each_sens(&self.el, code, |v| {
                sbuf[ent[ch]] = v;
                ent[ch] += 1;
            });
        }
        self.dist.clear();
        for j in 0..t {
            self.stamps.next();
            let mut d = 0;
            for &v in &self.sbuf[self.seg[j]..self.seg[j + 1]] {
                if self.stamps.add(v) {
                    d += 1;
                }
            }
            self.dist.push(d);
        }
    }

    /// Adds child `j`'s sensitive values to the current stamp set; returns how many were new.
    fn union_add(&mut self, j: usize) -> u64 {
        let mut d = 0;
        for &v in &self.sbuf[self.seg[j]..self.seg[j + 1]] {
            if self.stamps.add(v) {
                d += 1;
            }
        }
        d
    }

    /// Applies a split: regroups the positions of `p` by child and pushes the new partitions.
    fn apply(&mut self, p: Part, cand: Cand, stack: &mut Vec<Part>) {
        let (s, e) = (p.s, p.e);
        let m = e - s;
        let t = cand.touched.len();
        // group of each local child: own children in local order, then the rest
        let mut gid = vec![0u32; t];
        let mut ng = 0u32;
        for j in 0..t {
            if cand.own[j] {
                gid[j] = ng;
                ng += 1;
            }
        }
        let rest_g = ng;
        for j in 0..t {
            if !cand.own[j] {
                gid[j] = rest_g;
            }
        }
        let groups = ng as usize + 1;
        let mut off = vec![0usize; groups + 1];
        for &ch in &self.best_child[..m] {
            off[gid[ch as usize] as usize + 1] += 1;
        }
        for g in 0..groups {
            off[g + 1] += off[g];
        }
        let bounds = off.clone();
        for i in 0..m {
            let g = gid[self.best_child[i] as usize] as usize;
            self.dest[i] = off[g] as u32;
            off[g] += 1;
        }
        let dest = &self.dest[..m];
        let tmp = &mut self.tmp[..m];
        permute(&mut self.eid[s..e], dest, tmp);
        for c in 0..self.el.codes.len() {
            permute(&mut self.el.codes[c][s..e], dest, tmp);
        }
        for c in 0..self.el.hi.len() {
            permute(&mut self.el.hi[c][s..e], dest, tmp);
        }
        if !self.el.weight.is_empty() {
            permute(&mut self.el.weight[s..e], dest, tmp);
        }
        if !self.el.sens.is_empty() {
            permute(&mut self.el.sens[s..e], dest, tmp);
        }

        let c = cand.col;
        let mut new_parts = Vec::with_capacity(groups);
        let mut g = 0;
        for j in 0..t {
            if cand.own[j] {
                let mut nodes = p.nodes.clone();
                nodes[c] = Node {
                    level: cand.lc as u16,
                    id: cand.first + cand.touched[j],
                };
                new_parts.push(Part {
                    s: s + bounds[g],
                    e: s + bounds[g + 1],
                    nodes,
                    fin: p.fin,
                });
                g += 1;
            }
        }
        debug_assert_eq!(g, ng as usize);
        let (rs, re) = (s + bounds[ng as usize], s + bounds[ng as usize + 1]);
        if rs < re {
            match cand.rest {
                Rest::Keep => new_parts.push(Part {
                    s: rs,
                    e: re,
                    nodes: p.nodes,
                    fin: p.fin | (1u64 << c),
                }),
                Rest::Suppress => {
                    // positions rs..re are dropped: their elements keep class NONE
                    self.budget -= cand.rest_rows;
                }
                Rest::Empty => unreachable!("a non-empty rest without a fate"),
            }
        }
        stack.extend(new_parts.into_iter().rev());
    }
}

/// Moves `a[i]` to `a[dest[i]]` through `tmp`.
#[inline]
fn permute(a: &mut [u32], dest: &[u32], tmp: &mut [u32]) {
    for (i, &d) in dest.iter().enumerate() {
        tmp[d as usize] = a[i];
    }
    a.copy_from_slice(tmp);
}
