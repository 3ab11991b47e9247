//! What an algorithm hands to the output builder, and small shared helpers.

use crate::encode::Elements;

/// A node of one column's hierarchy: its level and its ordinal at that level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Node {
    pub level: u16,
    pub id: u32,
}

/// What a class of the range algorithm releases in one column (codes of the column index).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Gen {
    /// an ordered column: the members' values `lo..=hi`
    Range { lo: u32, hi: u32 },
    /// a categorical column: the members' leaves, sorted
    Set(Vec<u32>),
    /// a hierarchy node
    Node(Node),
}

/// One released equivalence class.
#[derive(Clone, Debug)]
pub(crate) struct SolClass {
    /// one hierarchy node per column (the hierarchy algorithms), or empty when `gens` is set
    pub nodes: Vec<Node>,
    /// one release per column (the range algorithm), or empty
    pub gens: Vec<Gen>,
    /// Distinct subjects (= elements).
    pub subjects: u64,
    pub rows: u64,
    /// Distinct sensitive values (0 when there is no sensitive attribute).
    pub sensitive: u64,
}

/// The result of an algorithm: the released classes and the class of every element
/// (`NONE`: suppressed).
#[derive(Clone, Debug)]
pub(crate) struct Solution {
    pub classes: Vec<SolClass>,
    pub element_class: Vec<u32>,
}

/// Counts distinct small integers without clearing: a value is "seen" in the current epoch
/// when its stamp equals the epoch.
#[derive(Clone, Debug)]
pub(crate) struct Stamps {
    stamp: Vec<u32>,
    epoch: u32,
}

impl Stamps {
    pub(crate) fn new(n: usize) -> Stamps {
        Stamps {
            stamp: vec![0; n],
            epoch: 0,
        }
    }

    /// Starts a new, empty set.
    pub(crate) fn next(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.stamp.iter_mut().for_each(|s| *s = 0);
            self.epoch = 1;
        }
    }

    /// Adds `v`; true when it was not in the set yet.
    #[inline]
    pub(crate) fn add(&mut self, v: u32) -> bool {
        let s = &mut self.stamp[v as usize];
        if *s == self.epoch {
            false
        } else {
            *s = self.epoch;
            true
        }
    }
}

/// Calls `f` for every sensitive value of an element's sensitive code (single or set).
#[inline]
pub(crate) fn for_each_sens(el: &Elements, code: u32, mut f: impl FnMut(u32)) {
    if code < el.n_sens {
        f(code)
    } else {
        for &v in &el.sets[(code - el.n_sens) as usize] {
            f(v)
        }
    }
}

/// Number of sensitive entries of a sensitive code (1 or the set's size).
#[inline]
pub(crate) fn sens_len(el: &Elements, code: u32) -> usize {
    if code < el.n_sens {
        1
    } else {
        el.sets[(code - el.n_sens) as usize].len()
    }
}
