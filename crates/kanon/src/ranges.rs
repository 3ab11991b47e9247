//! Mondrian with partition-local releases: binary cuts over each column's sorted codes, and
//! segment memberships as binary attributes.
//!
//! Every column is an ordered axis of codes: numbers and dates by value, categorical leaves
//! in the depth-first order of their mapping (so every subtree is a run of codes), prefix
//! codes lexicographically; NULL is a code of its own (first, or after the last categorical
//! leaf). A partition is a set of subjects. To split it, every column proposes the cut of
//! its codes with the best score, where a cut is valid when both sides keep ≥ k subjects
//! (and ≥ l sensitive values), and every segment held by some but not all subjects proposes
//! members against non-members. The best proposal over all of them is applied; a partition
//! without a valid proposal is a released class. No split ever makes a partition smaller
//! than k, so nothing needs suppressing: the only suppression is of the whole input when it
//! has fewer than k subjects (or l values).
//!
//! Score: the information a cut buys per nat of partition entropy it spends, as in the
//! hierarchy algorithm: gain = Σ over both sides of rows × (NCP of the partition − NCP of
//! the side) for a column, `segment_weight` × member rows for a segment (those memberships
//! can now be released); entropy = H(left/m). A table of N subjects affords about ln(N/k)
//! nats of cutting, and the score spends them where they buy the most.
//!
//! What a class releases is computed from its own members (see [`Gen`]): the range of its
//! values for ordered columns (`lo-hi`), the set of its categories (covered by the largest
//! hierarchy nodes it holds entirely) and the smallest hierarchy node covering its prefix
//! codes; the segments every member holds are worked out with the output, as for the other
//! algorithms.

use crate::encode::{ColumnIndex, Elements, FxMap, NONE};
use crate::solution::{for_each_sens, Gen, SolClass, Solution, Stamps};

/// Segment memberships per element (sorted segment indexes), compressed rows.
#[derive(Clone, Debug, Default)]
pub(crate) struct Segs {
    pub n_segs: usize,
    /// `off[e]..off[e+1]` are element e's entries in `ids`
    pub off: Vec<u32>,
    pub ids: Vec<u32>,
}

impl Segs {
    #[inline]
    pub(crate) fn of(&self, e: usize) -> &[u32] {
        if self.off.is_empty() {
            &[]
        } else {
            &self.ids[self.off[e] as usize..self.off[e + 1] as usize]
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// ordered by value: released as the members' range
    Range,
    /// categorical: released as the members' set of leaves
    Set,
    /// anything else (prefix): the smallest node covering the members' codes
    Node,
}

fn kind(col: &ColumnIndex) -> Kind {
    if col.is_ordered() {
        Kind::Range
    } else if col.is_categorical() {
        Kind::Set
    } else {
        Kind::Node
    }
}

/// The smallest node (level, id) covering codes `a..=b`.
pub(crate) fn cover(col: &ColumnIndex, a: u32, b: u32) -> (usize, u32) {
    for level in 0..col.top {
        let n = col.node(level, a);
        if col.node(level, b) == n {
            return (level, n);
        }
    }
    (col.top, 0)
}

/// NCP of a class of column `col` whose codes span `a..=b` with `d` distinct codes.
fn span_ncp(col: &ColumnIndex, kind: Kind, a: u32, b: u32, d: u32) -> f64 {
    if a == b {
        return 0.0;
    }
    match kind {
        Kind::Range => {
            if col.null == Some(a) {
                return 1.0; // NULL together with values: released as *
            }
            let w = col.domain_width();
            if w <= 0.0 {
                0.0
            } else {
                ((col.value_f64(b) - col.value_f64(a)) / w).clamp(0.0, 1.0)
            }
        }
        Kind::Set => col.set_ncp(d),
        Kind::Node => {
            let (level, n) = cover(col, a, b);
            col.ncp(level, n)
        }
    }
}

struct Cand {
    score: f64,
    /// column index, or `q + s` for segment s
    what: usize,
    /// for a column: elements whose low code is < cut go left
    cut: u32,
}

struct Ranges<'a> {
    cols: &'a [ColumnIndex],
    kinds: Vec<Kind>,
    /// the elements, permuted along with `eid` so every partition's data is contiguous
    el: Elements,
    segs: &'a Segs,
    seg_weight: f64,
    k: u64,
    l: Option<u64>,
    /// element ids, permuted so every partition is a contiguous run
    eid: Vec<u32>,
    stamps: Stamps,
    // scratch
    touched: Vec<u32>,
    cnt: Vec<u64>,
    rows: Vec<u64>,
    seg_cnt: Vec<u64>,
    seg_rows: Vec<u64>,
    seg_touched: Vec<u32>,
    side: Vec<bool>,
    dest: Vec<u32>,
    tmp: Vec<u32>,
    /// per column, the partition's low codes sorted (`sc`) and their elements (`se`), kept
    /// partition-contiguous like the positions: a cut's histogram is one sequential scan
    sc: Vec<Vec<u32>>,
    se: Vec<Vec<u32>>,
    /// rows per element, by element id (empty when every subject has one row)
    w_el: Vec<u32>,
    /// the side of the current split, by element id
    side_el: Vec<bool>,
}

pub(crate) fn ranges(
    cols: &[ColumnIndex],
    el: Elements,
    segs: &Segs,
    seg_weight: f64,
    k: usize,
    l: Option<usize>,
) -> Solution {
    let n = el.n;
    let n_sens = el.n_sens as usize;
    let mut r = Ranges {
        cols,
        kinds: cols.iter().map(kind).collect(),
        segs,
        seg_weight,
        k: k as u64,
        l: l.map(|l| l as u64),
        eid: (0..n as u32).collect(),
        stamps: Stamps::new(n_sens),
        dest: vec![0; n],
        tmp: vec![0; n],
        touched: Vec::new(),
        cnt: Vec::new(),
        rows: Vec::new(),
        seg_cnt: vec![0; segs.n_segs],
        seg_rows: vec![0; segs.n_segs],
        seg_touched: Vec::new(),
        side: vec![false; n],
        sc: Vec::new(),
        se: Vec::new(),
        w_el: el.weight.clone(),
        side_el: vec![false; n],
        el,
    };
    // every column's elements sorted by low code (a counting sort)
    for (c, col) in cols.iter().enumerate() {
        let codes = &r.el.codes[c];
        let mut start = vec![0u32; col.n_codes as usize + 1];
        for &x in codes {
            start[x as usize + 1] += 1;
        }
        for i in 0..col.n_codes as usize {
            start[i + 1] += start[i];
        }
        let mut se = vec![0u32; n];
        for (e, &x) in codes.iter().enumerate() {
            se[start[x as usize] as usize] = e as u32;
            start[x as usize] += 1;
        }
        r.sc.push(se.iter().map(|&e| codes[e as usize]).collect());
        r.se.push(se);
    }
    let mut element_class = vec![NONE; n];
    if n == 0 || (n as u64) < r.k || r.l.is_some_and(|l| r.distinct(0, n, None) < l) {
        return Solution {
            classes: Vec::new(),
            element_class,
        };
    }
    let mut stack = vec![(0usize, n)];
    let mut done = Vec::new();
    while let Some((s, e)) = stack.pop() {
        let mut best: Option<Cand> = None;
        for c in 0..cols.len() {
            if let Some(cand) = r.best_cut(s, e, c) {
                if best.as_ref().is_none_or(|b| cand.score > b.score) {
                    best = Some(cand);
                }
            }
        }
        if let Some(cand) = r.best_segment(s, e) {
            if best.as_ref().is_none_or(|b| cand.score > b.score) {
                best = Some(cand);
            }
        }
        match best {
            None => done.push((s, e)),
            Some(cand) => {
                let mid = r.apply(s, e, &cand);
                stack.push((mid, e));
                stack.push((s, mid));
            }
        }
    }
    // Partitions whose releases print alike and show the same segments are one class to
    // whoever reads them (e.g. two partitions that both mix NULL with values print * there):
    // merge them.
    let mut classes: Vec<SolClass> = Vec::with_capacity(done.len());
    let mut by_key: FxMap<Vec<String>, u32> = FxMap::default();
    let mut members: Vec<Vec<(usize, usize)>> = Vec::new();
    for (s, e) in done {
        let class = r.release(s, e);
        let mut key: Vec<String> = class
            .gens
            .iter()
            .zip(cols)
            .map(|(g, col)| col.gen_label(g).0)
            .collect();
        // ... and show the same segments (members split from non-members stay apart)
        key.push(
            r.common_segments(s, e)
                .iter()
                .map(|sg| sg.to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
        let next = classes.len() as u32;
        let ci = *by_key.entry(key).or_insert(next);
        for i in s..e {
            element_class[r.eid[i] as usize] = ci;
        }
        if ci == next {
            classes.push(class);
            members.push(vec![(s, e)]);
        } else {
            let c = &mut classes[ci as usize];
            c.subjects += class.subjects;
            c.rows += class.rows;
            members[ci as usize].push((s, e));
        }
    }
    if !r.el.sens.is_empty() {
        for (c, runs) in classes.iter_mut().zip(&members) {
            if runs.len() > 1 {
                r.stamps.next();
                let mut d = 0;
                for &(s, e) in runs {
                    for i in s..e {
                        let code = r.el.sens[r.eid[i] as usize];
                        let st = &mut r.stamps;
                        for_each_sens(&r.el, code, |v| {
                            if st.add(v) {
                                d += 1
                            }
                        });
                    }
                }
                c.sensitive = d;
            }
        }
    }
    Solution {
        classes,
        element_class,
    }
}

#[inline]
fn entropy(a: u64, m: u64) -> f64 {
    let p = a as f64 / m as f64;
    let q = 1.0 - p;
    -(p * p.ln() + q * q.ln())
}

impl Ranges<'_> {
    /// The low code of column `c` of the element at position `i`.
    #[inline]
    fn lo(&self, c: usize, i: usize) -> u32 {
        self.el.codes[c][self.eid[i] as usize]
    }

    /// The high code of column `c` of the element at position `i`.
    #[inline]
    fn hi(&self, c: usize, i: usize) -> u32 {
        if self.el.hi.is_empty() {
            self.lo(c, i)
        } else {
            self.el.hi[c][self.eid[i] as usize]
        }
    }

    /// Distinct sensitive values of positions `s..e` (only those on `side` when given).
    fn distinct(&mut self, s: usize, e: usize, side: Option<bool>) -> u64 {
        self.stamps.next();
        let mut d = 0;
        for i in s..e {
            if side.is_some_and(|want| self.side[i] != want) {
                continue;
            }
            let code = self.el.sens[self.eid[i] as usize];
            let st = &mut self.stamps;
            for_each_sens(&self.el, code, |v| {
                if st.add(v) {
                    d += 1
                }
            });
        }
        d
    }

    /// Whether both sides marked in `self.side` (positions `s..e`) hold ≥ l sensitive values.
    fn l_ok(&mut self, s: usize, e: usize) -> bool {
        match self.l {
            None => true,
            Some(l) => {
                self.distinct(s, e, Some(true)) >= l && self.distinct(s, e, Some(false)) >= l
            }
        }
    }

    /// The best cut of column `c` for positions `s..e`.
    fn best_cut(&mut self, s: usize, e: usize, c: usize) -> Option<Cand> {
        let col = &self.cols[c];
        let kind = self.kinds[c];
        let m = (e - s) as u64;
        // histogram of the low codes: distinct codes (ascending), subjects and rows per code
        self.touched.clear();
        self.cnt.clear();
        self.rows.clear();
        let codes = &self.sc[c][s..e];
        let elems = &self.se[c][s..e];
        let mut i = 0;
        while i < codes.len() {
            let code = codes[i];
            let mut j = i;
            let mut rows = 0u64;
            while j < codes.len() && codes[j] == code {
                rows += if self.w_el.is_empty() {
                    1
                } else {
                    self.w_el[elems[j] as usize] as u64
                };
                j += 1;
            }
            self.touched.push(code);
            self.cnt.push((j - i) as u64);
            self.rows.push(rows);
            i = j;
        }
        let t = self.touched.len();
        if t < 2 {
            return None;
        }
        let max_hi = if self.el.hi.is_empty() {
            0
        } else {
            (s..e).map(|i| self.hi(c, i)).max().unwrap_or(0)
        };
        let code_at = |j: usize| self.touched[j];
        let first = code_at(0);
        let last = code_at(t - 1).max(max_hi);
        let total_rows: u64 = self.rows.iter().sum();
        let parent = span_ncp(col, kind, first, last, t as u32);
        if parent <= 0.0 {
            return None;
        }
        let mut best: Option<(f64, u32, u64)> = None;
        let (mut left, mut left_rows) = (0u64, 0u64);
        for j in 0..t - 1 {
            left += self.cnt[j];
            left_rows += self.rows[j];
            let right = m - left;
            if left < self.k {
                continue;
            }
            if right < self.k {
                break;
            }
            let (a, b) = (code_at(j), code_at(j + 1));
            let nl = span_ncp(col, kind, first, a, j as u32 + 1);
            let nr = span_ncp(col, kind, b, last, (t - j - 1) as u32);
            let gain =
                left_rows as f64 * (parent - nl) + (total_rows - left_rows) as f64 * (parent - nr);
            let score = gain / entropy(left, m).max(1e-12);
            if gain > 0.0 && best.is_none_or(|(bs, ..)| score > bs) {
                best = Some((score, b, left));
            }
        }
        let (score, cut, _) = best?;
        if self.l.is_some() {
            for i in s..e {
                self.side[i] = self.lo(c, i) < cut;
            }
            if !self.l_ok(s, e) {
                return None;
            }
        }
        Some(Cand {
            score,
            what: c,
            cut,
        })
    }

    /// The best segment to split positions `s..e` by (members against the others).
    fn best_segment(&mut self, s: usize, e: usize) -> Option<Cand> {
        if self.segs.n_segs == 0 {
            return None;
        }
        let m = (e - s) as u64;
        self.seg_touched.clear();
        for i in s..e {
            let w = self.el.weight(self.eid[i] as usize);
            for &sg in self.segs.of(self.eid[i] as usize) {
                if self.seg_cnt[sg as usize] == 0 {
                    self.seg_touched.push(sg);
                }
                self.seg_cnt[sg as usize] += 1;
                self.seg_rows[sg as usize] += w;
            }
        }
        let mut cands: Vec<(f64, u32)> = Vec::new();
        for &sg in &self.seg_touched {
            let (c, rows) = (self.seg_cnt[sg as usize], self.seg_rows[sg as usize]);
            if c >= self.k && m - c >= self.k {
                let score = self.seg_weight * rows as f64 / entropy(c, m).max(1e-12);
                cands.push((score, sg));
            }
        }
        for &sg in &self.seg_touched {
            self.seg_cnt[sg as usize] = 0;
            self.seg_rows[sg as usize] = 0;
        }
        // best first; ties to the lower segment index (deterministic)
        cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (score, sg) in cands {
            if score <= 0.0 {
                break;
            }
            if self.l.is_some() {
                for i in s..e {
                    self.side[i] = self
                        .segs
                        .of(self.eid[i] as usize)
                        .binary_search(&sg)
                        .is_ok();
                }
                if !self.l_ok(s, e) {
                    continue;
                }
            }
            return Some(Cand {
                score,
                what: self.cols.len() + sg as usize,
                cut: 0,
            });
        }
        None
    }

    /// Reorders positions `s..e` so the left side comes first; returns where the right starts.
    fn apply(&mut self, s: usize, e: usize, cand: &Cand) -> usize {
        let q = self.cols.len();
        let m = e - s;
        for i in s..e {
            self.side[i] = if cand.what < q {
                self.lo(cand.what, i) < cand.cut
            } else {
                let sg = (cand.what - q) as u32;
                self.segs
                    .of(self.eid[i] as usize)
                    .binary_search(&sg)
                    .is_ok()
            };
        }
        let left = self.side[s..e].iter().filter(|&&x| x).count();
        let (mut l, mut r) = (0u32, left as u32);
        for i in 0..m {
            if self.side[s + i] {
                self.dest[i] = l;
                l += 1;
            } else {
                self.dest[i] = r;
                r += 1;
            }
        }
        for i in s..e {
            self.side_el[self.eid[i] as usize] = self.side[i];
        }
        let dest = &self.dest[..m];
        let tmp = &mut self.tmp[..m];
        permute(&mut self.eid[s..e], dest, tmp);
        // the sorted columns: a stable partition keeps each side sorted
        for c in 0..q {
            let (mut l, mut r) = (0u32, left as u32);
            for i in 0..m {
                if self.side_el[self.se[c][s + i] as usize] {
                    self.dest[i] = l;
                    l += 1;
                } else {
                    self.dest[i] = r;
                    r += 1;
                }
            }
            let dest = &self.dest[..m];
            let tmp = &mut self.tmp[..m];
            permute(&mut self.sc[c][s..e], dest, tmp);
            permute(&mut self.se[c][s..e], dest, tmp);
        }
        s + left
    }

    /// The segments every element of positions `s..e` holds, ascending.
    fn common_segments(&mut self, s: usize, e: usize) -> Vec<u32> {
        let mut out = Vec::new();
        if self.segs.n_segs == 0 {
            return out;
        }
        let m = (e - s) as u64;
        self.seg_touched.clear();
        for i in s..e {
            for &sg in self.segs.of(self.eid[i] as usize) {
                if self.seg_cnt[sg as usize] == 0 {
                    self.seg_touched.push(sg);
                }
                self.seg_cnt[sg as usize] += 1;
            }
        }
        for &sg in &self.seg_touched {
            if self.seg_cnt[sg as usize] == m {
                out.push(sg);
            }
            self.seg_cnt[sg as usize] = 0;
        }
        out.sort_unstable();
        out
    }

    /// What the class of positions `s..e` releases.
    fn release(&mut self, s: usize, e: usize) -> SolClass {
        let mut gens = Vec::with_capacity(self.cols.len());
        for (c, col) in self.cols.iter().enumerate() {
            // the low codes are sorted; only subjects whose rows differ reach higher
            let (a, mut b) = (self.sc[c][s], self.sc[c][e - 1]);
            if !self.el.hi.is_empty() {
                for i in s..e {
                    b = b.max(self.hi(c, i));
                }
            }
            gens.push(match self.kinds[c] {
                Kind::Range => Gen::Range { lo: a, hi: b },
                Kind::Node => {
                    let (level, id) = cover(col, a, b);
                    Gen::Node(crate::solution::Node {
                        level: level as u16,
                        id,
                    })
                }
                Kind::Set => {
                    // the members' codes; a subject whose rows differ covers its whole run
                    let mut codes: Vec<u32> = self.sc[c][s..e].to_vec();
                    if !self.el.hi.is_empty() {
                        for i in s..e {
                            let (x, y) = (self.lo(c, i), self.hi(c, i));
                            codes.extend(
                                (x + 1..=y).filter(|&code| code == y || col.is_observed(code)),
                            );
                        }
                        codes.sort_unstable();
                    }
                    codes.dedup();
                    Gen::Set(codes)
                }
            });
        }
        let mut rows = 0;
        for i in s..e {
            rows += self.el.weight(self.eid[i] as usize);
        }
        let sensitive = if self.el.sens.is_empty() {
            0
        } else {
            self.distinct(s, e, None)
        };
        SolClass {
            nodes: Vec::new(),
            gens,
            subjects: (e - s) as u64,
            rows,
            sensitive,
        }
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
