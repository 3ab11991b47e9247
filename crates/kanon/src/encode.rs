//! Dictionary encoding of the input and the per-column node index the algorithms use.
//!
//! While records stream in, every quasi value is replaced by a `u32` code (first-seen
//! order) and only the dictionary keeps the distinct values. When the input is complete
//! the dictionary is sorted in hierarchy order and the codes are renumbered, so that
//! **every node of every level covers a contiguous range of codes**: numbers and dates by
//! value, prefix codes lexicographically (a shared prefix is a contiguous run), categorical
//! leaves in depth-first order of the mapping (a subtree is a contiguous run; a shallow leaf
//! padded down to a lower level is a run of one). A node is then `(level, ordinal)` and a
//! record's node at a level is one array lookup.

use crate::error::Error;
use crate::hierarchy::{Hierarchy, Leaf, NodeKey, NumPlan};
use crate::solution::Gen;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

pub(crate) const NONE: u32 = u32::MAX;
/// Largest number of records, subjects and distinct values per column.
pub(crate) const MAX_CODES: u64 = u32::MAX as u64 - 1;

/// A small fast non-cryptographic hasher (the rustc "Fx" multiply-rotate scheme). Inputs are
/// the caller's own data, hashed in-process; no untrusted party chooses keys to collide.
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const FX_K: u64 = 0xf135_7aea_2e62_a9c5;

impl FxHasher {
    #[inline]
    fn add(&mut self, x: u64) {
        self.hash = self.hash.wrapping_add(x).wrapping_mul(FX_K);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_i64(&mut self, i: i64) {
        self.add(i as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash.rotate_left(26)
    }
}

pub type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
pub type FxSet<K> = HashSet<K, BuildHasherDefault<FxHasher>>;

/// Hash of a slice of codes, for the grouping table.
#[inline]
pub(crate) fn hash_codes(key: &[u32]) -> u64 {
    let mut h = FxHasher::default();
    for &x in key {
        h.add(x as u64);
    }
    let x = h.hash;
    (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (x >> 32)
}

/// Groups `n` keys of `q` codes each (`keys[i*q..(i+1)*q]`). Returns each key's group and the
/// number of groups; groups are numbered in order of first appearance (deterministic).
pub(crate) fn group_keys(keys: &[u32], q: usize, n: usize) -> (Vec<u32>, usize) {
    let mut group = vec![0u32; n];
    if n == 0 {
        return (group, 0);
    }
    if q == 0 {
        return (group, 1);
    }
    let cap = (n * 2).next_power_of_two().max(16);
    let mask = cap - 1;
    let mut slots = vec![NONE; cap];
    let mut reps: Vec<u32> = Vec::new();
    for i in 0..n {
        let key = &keys[i * q..(i + 1) * q];
        let mut h = hash_codes(key) as usize & mask;
        loop {
            let g = slots[h];
            if g == NONE {
                slots[h] = reps.len() as u32;
                group[i] = reps.len() as u32;
                reps.push(i as u32);
                break;
            }
            let r = reps[g as usize] as usize;
            if &keys[r * q..(r + 1) * q] == key {
                group[i] = g;
                break;
            }
            h = (h + 1) & mask;
        }
    }
    (group, reps.len())
}

/// The dictionary of one quasi column while records stream in. `null` is the code of the
/// NULL leaf once one was seen (its slot in `values` holds a placeholder).
#[derive(Clone, Debug)]
pub(crate) enum Dict {
    /// Integers and dates (days since 1970-01-01).
    Int {
        map: FxMap<i64, u32>,
        values: Vec<i64>,
        null: Option<u32>,
    },
    /// Finite floats by bit pattern (-0 normalised to 0 before).
    Num {
        map: FxMap<u64, u32>,
        values: Vec<f64>,
        null: Option<u32>,
    },
    /// Prefix codes; the string is shared between the map and the list.
    Text {
        map: FxMap<Arc<str>, u32>,
        values: Vec<Arc<str>>,
        null: Option<u32>,
    },
    /// Categorical leaves are coded by their position in the mapping, no dictionary needed;
    /// NULL is the code after the last leaf.
    Cat { null: bool },
}

impl Dict {
    pub(crate) fn new(h: &Hierarchy) -> Dict {
        match h {
            Hierarchy::Date | Hierarchy::Integer { .. } => Dict::Int {
                map: FxMap::default(),
                values: Vec::new(),
                null: None,
            },
            Hierarchy::Numeric { .. } => Dict::Num {
                map: FxMap::default(),
                values: Vec::new(),
                null: None,
            },
            Hierarchy::Prefix { .. } => Dict::Text {
                map: FxMap::default(),
                values: Vec::new(),
                null: None,
            },
            Hierarchy::Categorical(_) => Dict::Cat { null: false },
        }
    }

    fn len(&self) -> usize {
        match self {
            Dict::Int { values, .. } => values.len(),
            Dict::Num { values, .. } => values.len(),
            Dict::Text { values, .. } => values.len(),
            Dict::Cat { .. } => 0,
        }
    }

    /// Whether one more distinct value still fits.
    pub(crate) fn has_room(&self) -> bool {
        (self.len() as u64) < MAX_CODES
    }

    /// The code of a checked leaf (first-seen order; categorical: the leaf's position).
    pub(crate) fn code(&mut self, h: &Hierarchy, leaf: &Leaf<'_>) -> u32 {
        match (self, leaf) {
            (Dict::Int { values, null, .. }, Leaf::Null) => *null.get_or_insert_with(|| {
                values.push(0);
                (values.len() - 1) as u32
            }),
            (Dict::Num { values, null, .. }, Leaf::Null) => *null.get_or_insert_with(|| {
                values.push(0.0);
                (values.len() - 1) as u32
            }),
            (Dict::Text { values, null, .. }, Leaf::Null) => *null.get_or_insert_with(|| {
                values.push(Arc::from(""));
                (values.len() - 1) as u32
            }),
            (Dict::Cat { null }, Leaf::Null) => {
                *null = true;
                match h {
                    Hierarchy::Categorical(cat) => cat.leaf_count() as u32,
                    _ => unreachable!(),
                }
            }
            (Dict::Int { map, values, .. }, Leaf::Int(v)) => *map.entry(*v).or_insert_with(|| {
                values.push(*v);
                (values.len() - 1) as u32
            }),
            (Dict::Num { map, values, .. }, Leaf::Num(x)) => {
                *map.entry(x.to_bits()).or_insert_with(|| {
                    values.push(*x);
                    (values.len() - 1) as u32
                })
            }
            (Dict::Text { map, values, .. }, Leaf::Text(s)) => {
                if let Some(&c) = map.get(*s) {
                    return c;
                }
                let a: Arc<str> = Arc::from(*s);
                let c = values.len() as u32;
                values.push(a.clone());
                map.insert(a, c);
                c
            }
            (Dict::Cat { .. }, Leaf::Cat(node)) => match h {
                Hierarchy::Categorical(cat) => cat.leaf_code(*node),
                _ => unreachable!(),
            },
            _ => unreachable!("leaf kind does not match the dictionary"),
        }
    }

    /// Approximate heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        // a hashbrown slot is key + value + 1 control byte, at ≤ 7/8 load
        match self {
            Dict::Int { map, values, .. } => map.capacity() * 13 + values.capacity() * 8,
            Dict::Num { map, values, .. } => map.capacity() * 13 + values.capacity() * 8,
            Dict::Text { map, values, .. } => {
                map.capacity() * 21
                    + values.capacity() * 16
                    + values.iter().map(|s| s.len() + 16).sum::<usize>()
            }
            Dict::Cat { .. } => 0,
        }
    }
}

/// The sorted leaves of a column.
#[derive(Clone, Debug)]
enum Leaves {
    Int(Vec<i64>),
    Num(Vec<f64>),
    Text(Vec<Arc<str>>),
    Cat,
}

/// The node index of one quasi column: for every level the nodes as contiguous code ranges,
/// the node of each code, and each node's NCP.
#[derive(Clone, Debug)]
pub(crate) struct ColumnIndex {
    pub hierarchy: Hierarchy,
    plan: Option<NumPlan>,
    leaves: Leaves,
    pub top: usize,
    pub n_codes: u32,
    /// The code of the NULL leaf when the column holds NULL: the first code of the sorted
    /// kinds, the code after the last leaf of a categorical mapping.
    pub null: Option<u32>,
    /// Observed codes before each code (`n_codes + 1` entries): categorical mappings may
    /// declare leaves nobody holds, the other kinds code observed values only.
    obs: Vec<u32>,
    /// `node_of[level][code]` for 0 < level < top (level 0 is the code, the top is node 0).
    node_of: Vec<Vec<u32>>,
    /// `starts[level]`: first code of each node, plus `n_codes` at the end (0 < level < top).
    starts: Vec<Vec<u32>>,
    /// `ncp[level][node]` for 0 < level < top (0 at level 0, 1 at the top).
    ncp: Vec<Vec<f64>>,
}

impl ColumnIndex {
    /// Sorts the dictionary, renumbers `codes` in place and builds the index.
    pub(crate) fn build(
        h: &Hierarchy,
        dict: Dict,
        codes: &mut [u32],
    ) -> Result<ColumnIndex, Error> {
        let plan = h.plan()?;
        // the NULL leaf sorts first (its own node on every level below the top)
        let (leaves, n, null) = match dict {
            Dict::Int { values, null, .. } => {
                let (sorted, remap) = sort_dict(values, null, |a, b| a.cmp(b));
                renumber(codes, &remap);
                let n = sorted.len();
                (Leaves::Int(sorted), n, null.map(|_| 0))
            }
            Dict::Num { values, null, .. } => {
                let (sorted, remap) = sort_dict(values, null, |a, b| a.total_cmp(b));
                renumber(codes, &remap);
                let n = sorted.len();
                (Leaves::Num(sorted), n, null.map(|_| 0))
            }
            Dict::Text { map, values, null } => {
                drop(map);
                let (sorted, remap) = sort_dict(values, null, |a, b| a.cmp(b));
                renumber(codes, &remap);
                let n = sorted.len();
                (Leaves::Text(sorted), n, null.map(|_| 0))
            }
            Dict::Cat { null } => match h {
                Hierarchy::Categorical(c) => {
                    let leaves = c.leaf_count();
                    if null {
                        (Leaves::Cat, leaves + 1, Some(leaves as u32))
                    } else {
                        (Leaves::Cat, leaves, None)
                    }
                }
                _ => unreachable!(),
            },
        };
        let obs = match leaves {
            Leaves::Cat => {
                let mut seen = vec![false; n];
                for &c in codes.iter() {
                    seen[c as usize] = true;
                }
                let mut obs = Vec::with_capacity(n + 1);
                obs.push(0u32);
                for (i, s) in seen.iter().enumerate() {
                    obs.push(obs[i] + *s as u32);
                }
                obs
            }
            _ => (0..=n as u32).collect(),
        };
        let top = h.top();
        let mut ix = ColumnIndex {
            hierarchy: h.clone(),
            plan,
            leaves,
            top,
            n_codes: n as u32,
            null,
            obs,
            node_of: vec![Vec::new(); top + 1],
            starts: vec![Vec::new(); top + 1],
            ncp: vec![Vec::new(); top + 1],
        };
        if n == 0 {
            return Ok(ix);
        }
        for level in 1..top {
            let mut node_of = Vec::with_capacity(n);
            let mut starts = Vec::new();
            let mut prev: Option<NodeKey<'_>> = None;
            for code in 0..n {
                let leaf = ix.leaf(code as u32);
                let key = h.node_key(ix.plan.as_ref(), &leaf, level);
                if prev != Some(key) {
                    starts.push(code as u32);
                    prev = Some(key);
                }
                node_of.push(starts.len() as u32 - 1);
            }
            starts.push(n as u32);
            ix.node_of[level] = node_of;
            ix.starts[level] = starts;
        }
        for level in 1..top {
            let nodes = ix.starts[level].len() - 1;
            let mut ncp = Vec::with_capacity(nodes);
            for j in 0..nodes {
                let (a, b) = (ix.starts[level][j], ix.starts[level][j + 1]);
                ncp.push(ix.node_ncp(level, a, b));
            }
            ix.ncp[level] = ncp;
        }
        Ok(ix)
    }

    /// NCP of the node at `level` covering codes `a..b` (0 < level < top).
    fn node_ncp(&self, level: usize, a: u32, b: u32) -> f64 {
        if self.null == Some(a) && b == a + 1 {
            return 0.0; // the NULL node holds one value
        }
        match &self.leaves {
            Leaves::Int(_) | Leaves::Num(_) => {
                let range = self.domain_width();
                if range <= 0.0 {
                    return 0.0;
                }
                let (dmin, dmax) = self.domain();
                let (lo, hi) = self
                    .hierarchy
                    .interval(self.plan.as_ref(), &self.leaf(a), level);
                let cov = hi.min(dmax) - lo.max(dmin);
                (cov / range).clamp(0.0, 1.0)
            }
            // prefix and categorical: observed values under the node
            Leaves::Text(_) | Leaves::Cat => self.set_ncp(self.observed(a, b)),
        }
    }

    /// Observed codes in `a..b`.
    #[inline]
    pub(crate) fn observed(&self, a: u32, b: u32) -> u32 {
        self.obs[b as usize] - self.obs[a as usize]
    }

    /// Whether `code` occurs in the input.
    #[inline]
    pub(crate) fn is_observed(&self, code: u32) -> bool {
        self.observed(code, code + 1) == 1
    }

    /// NCP of a set of `d` observed values: (d − 1) / (observed values − 1).
    #[inline]
    pub(crate) fn set_ncp(&self, d: u32) -> f64 {
        let n = self.obs[self.n_codes as usize];
        if n <= 1 || d <= 1 {
            0.0
        } else {
            ((d - 1) as f64 / (n - 1) as f64).min(1.0)
        }
    }

    /// Smallest and largest non-NULL value of an ordered column (integer, numeric, date).
    pub(crate) fn domain(&self) -> (f64, f64) {
        let first = if self.null == Some(0) { 1 } else { 0 };
        if first >= self.n_codes {
            return (0.0, 0.0);
        }
        (self.value_f64(first), self.value_f64(self.n_codes - 1))
    }

    /// `max − min` of the non-NULL values of an ordered column.
    pub(crate) fn domain_width(&self) -> f64 {
        let (a, b) = self.domain();
        b - a
    }

    /// Whether the column is ordered by value (integer, numeric, date).
    pub(crate) fn is_ordered(&self) -> bool {
        matches!(self.leaves, Leaves::Int(_) | Leaves::Num(_))
    }

    /// Whether the column is a categorical mapping.
    pub(crate) fn is_categorical(&self) -> bool {
        matches!(self.leaves, Leaves::Cat)
    }

    pub(crate) fn value_f64(&self, code: u32) -> f64 {
        match &self.leaves {
            Leaves::Int(v) => v[code as usize] as f64,
            Leaves::Num(v) => v[code as usize],
            _ => unreachable!(),
        }
    }

    pub(crate) fn leaf(&self, code: u32) -> Leaf<'_> {
        if self.null == Some(code) {
            return Leaf::Null;
        }
        match &self.leaves {
            Leaves::Int(v) => Leaf::Int(v[code as usize]),
            Leaves::Num(v) => Leaf::Num(v[code as usize]),
            Leaves::Text(v) => Leaf::Text(&v[code as usize]),
            Leaves::Cat => match &self.hierarchy {
                Hierarchy::Categorical(c) => Leaf::Cat(c.leaf_node(code)),
                _ => unreachable!(),
            },
        }
    }

    /// The node of `code` at `level`.
    #[inline]
    pub(crate) fn node(&self, level: usize, code: u32) -> u32 {
        if level == 0 {
            code
        } else if level >= self.top {
            0
        } else {
            self.node_of[level][code as usize]
        }
    }

    /// `node_of` for a level strictly between 0 and the top (`None` for level 0: identity).
    #[inline]
    pub(crate) fn node_map(&self, level: usize) -> Option<&[u32]> {
        if level == 0 {
            None
        } else {
            debug_assert!(level < self.top);
            Some(&self.node_of[level])
        }
    }

    /// First code of a node.
    #[inline]
    pub(crate) fn start(&self, level: usize, node: u32) -> u32 {
        if level == 0 {
            node
        } else if level >= self.top {
            0
        } else {
            self.starts[level][node as usize]
        }
    }

    /// One past the last code of a node.
    #[inline]
    pub(crate) fn end(&self, level: usize, node: u32) -> u32 {
        if level == 0 {
            node + 1
        } else if level >= self.top {
            self.n_codes
        } else {
            self.starts[level][node as usize + 1]
        }
    }

    /// NCP of a node: 0 at level 0, 1 at the top.
    #[inline]
    pub(crate) fn ncp(&self, level: usize, node: u32) -> f64 {
        if level == 0 {
            0.0
        } else if level >= self.top {
            1.0
        } else {
            self.ncp[level][node as usize]
        }
    }

    /// Textual form and NCP of a partition-local release.
    pub(crate) fn gen_label(&self, g: &Gen) -> (String, f64) {
        match g {
            Gen::Node(n) => {
                let lv = n.level as usize;
                (self.label(lv, n.id), self.ncp(lv, n.id))
            }
            Gen::Range { lo, hi } => {
                let (lo, hi) = (*lo, *hi);
                if lo == hi {
                    return (self.label(0, lo), 0.0);
                }
                if self.null == Some(lo) {
                    return ("*".to_string(), 1.0); // NULL together with values
                }
                let w = self.domain_width();
                let ncp = if w <= 0.0 {
                    0.0
                } else {
                    ((self.value_f64(hi) - self.value_f64(lo)) / w).clamp(0.0, 1.0)
                };
                let text = match (&self.hierarchy, self.leaf(lo), self.leaf(hi)) {
                    (Hierarchy::Date, _, _) => {
                        format!("{}/{}", self.label(0, lo), self.label(0, hi))
                    }
                    (Hierarchy::Numeric { .. }, _, _) => {
                        format!("[{},{}]", self.label(0, lo), self.label(0, hi))
                    }
                    _ => format!("{}-{}", self.label(0, lo), self.label(0, hi)),
                };
                (text, ncp)
            }
            Gen::Set(codes) => {
                let d = codes.len() as u32;
                let ncp = self.set_ncp(d);
                if d == 1 {
                    return (self.label(0, codes[0]), 0.0);
                }
                if d >= self.observed(0, self.n_codes) {
                    return ("*".to_string(), 1.0);
                }
                // the largest nodes whose observed values are all in the set, in code order
                let mut parts: Vec<String> = Vec::new();
                let mut i = 0;
                while i < codes.len() {
                    let code = codes[i];
                    let mut take = (0usize, code, 1usize);
                    for level in 1..self.top {
                        let n = self.node(level, code);
                        let (a, b) = (self.start(level, n), self.end(level, n));
                        let inside = codes[i..].partition_point(|&x| x < b);
                        if inside as u32 == self.observed(a, b) {
                            take = (level, n, inside);
                        } else {
                            break;
                        }
                    }
                    parts.push(self.label(take.0, take.1));
                    i += take.2;
                }
                (parts.join("|"), ncp)
            }
        }
    }

    /// Textual form of a node (through the hierarchy's own `generalize` of its first leaf).
    pub(crate) fn label(&self, level: usize, node: u32) -> String {
        if level >= self.top {
            return "*".to_string();
        }
        let leaf = self.leaf(self.start(level, node));
        self.hierarchy
            .label(&leaf, level)
            .expect("a checked leaf has a label at every level")
    }
}

/// Sorts a dictionary (the NULL placeholder first); returns the sorted values and old → new.
fn sort_dict<T>(
    values: Vec<T>,
    null: Option<u32>,
    cmp: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> (Vec<T>, Vec<u32>) {
    let n = values.len();
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        (Some(a) != null)
            .cmp(&(Some(b) != null))
            .then_with(|| cmp(&values[a as usize], &values[b as usize]))
    });
    let mut remap = vec![0u32; n];
    for (new, &old) in order.iter().enumerate() {
        remap[old as usize] = new as u32;
    }
    let mut slots: Vec<Option<T>> = values.into_iter().map(Some).collect();
    let sorted = order
        .iter()
        .map(|&old| slots[old as usize].take().unwrap())
        .collect();
    (sorted, remap)
}

fn renumber(codes: &mut [u32], remap: &[u32]) {
    for c in codes {
        *c = remap[*c as usize];
    }
}

/// Sensitive values, dictionary-encoded.
#[derive(Clone, Debug, Default)]
pub(crate) struct SensDict {
    pub map: FxMap<Arc<str>, u32>,
}

impl SensDict {
    pub(crate) fn code(&mut self, s: &str) -> Option<u32> {
        if let Some(&c) = self.map.get(s) {
            return Some(c);
        }
        if self.map.len() as u64 >= MAX_CODES {
            return None;
        }
        let c = self.map.len() as u32;
        self.map.insert(Arc::from(s), c);
        Some(c)
    }
}

/// The unit the algorithms partition: one per distinct subject. A subject's value in a
/// column is the code range `lo..=hi` over its rows (`hi` absent when every subject's rows
/// agree in every column); a node holds the subject iff it holds the whole range.
#[derive(Clone, Debug)]
pub(crate) struct Elements {
    pub n: usize,
    /// `codes[column][element]`: the lowest code over the subject's rows.
    pub codes: Vec<Vec<u32>>,
    /// `hi[column][element]`: the highest code; empty when no subject has differing rows.
    pub hi: Vec<Vec<u32>>,
    /// Rows per element; empty when every subject has one row.
    pub weight: Vec<u32>,
    /// Sensitive code per element, or `n_sens + i` for the set `sets[i]` when the subject's
    /// rows carry several values; empty when there is no sensitive attribute.
    pub sens: Vec<u32>,
    pub sets: Vec<Vec<u32>>,
    pub n_sens: u32,
}

impl Elements {
    #[inline]
    pub(crate) fn weight(&self, e: usize) -> u64 {
        if self.weight.is_empty() {
            1
        } else {
            self.weight[e] as u64
        }
    }
}

/// Collapses rows to elements (one per distinct subject). Returns the elements and, when
/// some subject has several rows, the element of every row (`None`: row i is element i).
pub(crate) fn collapse(
    subjects: &[i64],
    codes: Vec<Vec<u32>>,
    sens: Option<Vec<u32>>,
    n_sens: u32,
) -> (Elements, Option<Vec<u32>>) {
    let n = subjects.len();
    let unique_sorted = subjects.windows(2).all(|w| w[0] < w[1]);
    let mut perm: Vec<u32> = Vec::new();
    let mut unique = unique_sorted;
    if !unique_sorted {
        perm = (0..n as u32).collect();
        perm.sort_unstable_by_key(|&r| (subjects[r as usize], r));
        unique = perm
            .windows(2)
            .all(|w| subjects[w[0] as usize] != subjects[w[1] as usize]);
    }
    if unique {
        return (
            Elements {
                n,
                codes,
                hi: Vec::new(),
                weight: Vec::new(),
                sens: sens.unwrap_or_default(),
                sets: Vec::new(),
                n_sens,
            },
            None,
        );
    }
    let q = codes.len();
    let mut row_elem = vec![0u32; n];
    let mut lo: Vec<Vec<u32>> = vec![Vec::new(); q];
    let mut hi: Vec<Vec<u32>> = vec![Vec::new(); q];
    let mut weight = Vec::new();
    let mut esens = Vec::new();
    let mut sets: Vec<Vec<u32>> = Vec::new();
    let mut spread = false;
    let mut i = 0;
    while i < n {
        let s = subjects[perm[i] as usize];
        let mut j = i;
        while j < n && subjects[perm[j] as usize] == s {
            j += 1;
        }
        let e = weight.len() as u32;
        let rows = &perm[i..j];
        for &r in rows {
            row_elem[r as usize] = e;
        }
        for c in 0..q {
            let mut a = u32::MAX;
            let mut b = 0;
            for &r in rows {
                let x = codes[c][r as usize];
                a = a.min(x);
                b = b.max(x);
            }
            spread |= a != b;
            lo[c].push(a);
            hi[c].push(b);
        }
        weight.push((j - i) as u32);
        if let Some(sv) = &sens {
            let mut vals: Vec<u32> = rows.iter().map(|&r| sv[r as usize]).collect();
            vals.sort_unstable();
            vals.dedup();
            if vals.len() == 1 {
                esens.push(vals[0]);
            } else {
                esens.push(n_sens + sets.len() as u32);
                sets.push(vals);
            }
        }
        i = j;
    }
    drop(codes);
    if !spread {
        hi.clear();
    }
    (
        Elements {
            n: weight.len(),
            codes: lo,
            hi,
            weight,
            sens: esens,
            sets,
            n_sens,
        },
        Some(row_elem),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hierarchy::Value;

    fn index(h: &Hierarchy, values: &[Value<'_>]) -> (ColumnIndex, Vec<u32>) {
        let mut d = Dict::new(h);
        let mut codes: Vec<u32> = values
            .iter()
            .map(|v| {
                let leaf = h.leaf(v).unwrap();
                d.code(h, &leaf)
            })
            .collect();
        let ix = ColumnIndex::build(h, d, &mut codes).unwrap();
        (ix, codes)
    }

    #[test]
    fn nodes_are_contiguous_and_nested() {
        let cat = Hierarchy::categorical([
            ("nurse", "health"),
            ("surgeon", "health"),
            ("teacher", "education"),
            ("health", "services"),
            ("education", "services"),
            ("welder", "industry"),
            ("industry", "*"),
            ("services", "*"),
            ("retired", "*"),
        ])
        .unwrap();
        let cases: Vec<(Hierarchy, Vec<Value<'static>>)> = vec![
            (
                Hierarchy::integer_default(),
                vec![
                    Value::Int(37),
                    Value::Int(-3),
                    Value::Int(12),
                    Value::Int(99),
                    Value::Int(37),
                    Value::Int(140),
                ],
            ),
            (
                Hierarchy::date(),
                (0..40).map(|i| Value::Int(i * 97 - 2000)).collect(),
            ),
            (
                Hierarchy::numeric(vec![0.5, 1.0, 5.0]).unwrap(),
                vec![
                    Value::Num(0.3),
                    Value::Num(7.9),
                    Value::Num(-2.2),
                    Value::Num(4.99),
                ],
            ),
            (
                Hierarchy::prefix(3).unwrap(),
                vec![
                    Value::Text("123"),
                    Value::Text("129"),
                    Value::Text("223"),
                    Value::Text("121"),
                ],
            ),
            (cat, vec![Value::Text("welder"), Value::Text("nurse")]),
        ];
        for (h, values) in cases {
            let (ix, codes) = index(&h, &values);
            for (v, &code) in values.iter().zip(&codes) {
                for level in 0..=ix.top {
                    let node = ix.node(level, code);
                    assert!(ix.start(level, node) <= code && code < ix.end(level, node));
                    assert_eq!(ix.label(level, node), h.generalize(v, level).unwrap());
                    if level > 0 {
                        // nested: the child node's range lies inside the parent's
                        let child = ix.node(level - 1, code);
                        assert!(ix.start(level, node) <= ix.start(level - 1, child));
                        assert!(ix.end(level - 1, child) <= ix.end(level, node));
                        assert!(ix.ncp(level - 1, child) <= ix.ncp(level, node) + 1e-12);
                    }
                }
            }
        }
    }

    #[test]
    fn ncp_values() {
        let h = Hierarchy::integer(vec![10]).unwrap();
        let (ix, codes) = index(&h, &[Value::Int(0), Value::Int(5), Value::Int(100)]);
        // band 0-9 over domain 0..100: 9/100
        assert!((ix.ncp(1, ix.node(1, codes[0])) - 0.09).abs() < 1e-12);
        assert_eq!(ix.ncp(0, codes[0]), 0.0);
        assert_eq!(ix.ncp(2, 0), 1.0);
        let h = Hierarchy::prefix(2).unwrap();
        let (ix, codes) = index(
            &h,
            &[
                Value::Text("10"),
                Value::Text("11"),
                Value::Text("20"),
                Value::Text("30"),
                Value::Text("40"),
            ],
        );
        // 1* holds 2 of 5 observed codes: (2-1)/(5-1)
        assert!((ix.ncp(1, ix.node(1, codes[0])) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn grouping() {
        let keys = [1, 2, 3, 4, 1, 2, 5, 6, 3, 4];
        let (g, n) = group_keys(&keys, 2, 5);
        assert_eq!(n, 3);
        assert_eq!(g, [0, 1, 0, 2, 1]);
    }
}
