//! Full-domain global recoding, chosen greedily: the baseline.
//!
//! One level per column for the whole table. Start with every column exact; while the
//! records in classes that are too small (< k subjects, or < l sensitive values) exceed the
//! suppression budget, raise by one level the column that leaves the fewest such records
//! (ties: the lower NCP, then the first column). Those records are then suppressed. With
//! every column at `*` there is one class, valid iff the whole input is.
//!
//! Evaluating a raise merges the current classes (not the records), so the work shrinks as
//! the levels rise: O(C·q) per candidate for C current classes.

use crate::encode::{group_keys, ColumnIndex, Elements, NONE};
use crate::solution::{for_each_sens, Node, SolClass, Solution, Stamps};

/// The current classes, each with a representative element's codes.
struct Classes {
    rep: Vec<u32>, // C × q
    subjects: Vec<u64>,
    rows: Vec<u64>,
    /// distinct sensitive values per class, sorted (only when l is required)
    sens: Vec<Vec<u32>>,
}

struct Eval {
    outliers: u64,
    ncp: f64,
    /// group of each unit (current classes, then the straddlers that became consistent)
    group: Vec<u32>,
    groups: usize,
    joined: Vec<u32>,
}

struct Global<'a> {
    cols: &'a [ColumnIndex],
    el: &'a Elements,
    q: usize,
    k: u64,
    l: Option<u64>,
}

pub(crate) fn global(
    cols: &[ColumnIndex],
    el: Elements,
    k: usize,
    l: Option<usize>,
    budget: u64,
) -> (Solution, Vec<usize>) {
    let q = cols.len();
    let n = el.n;
    let g = Global {
        cols,
        el: &el,
        q,
        k: k as u64,
        l: l.map(|l| l as u64),
    };
    let mut levels = vec![0usize; q];
    if n == 0 {
        return (
            Solution {
                classes: Vec::new(),
                element_class: Vec::new(),
            },
            levels,
        );
    }

    // initial classes: consistent elements grouped by their exact codes
    let mut straddlers: Vec<u32> = Vec::new();
    let mut units: Vec<u32> = Vec::new();
    for e in 0..n {
        if g.consistent(e, &levels) {
            units.push(e as u32);
        } else {
            straddlers.push(e as u32);
        }
    }
    let mut classes = Classes {
        rep: Vec::new(),
        subjects: Vec::new(),
        rows: Vec::new(),
        sens: Vec::new(),
    };
    {
        let mut keys = Vec::with_capacity(units.len() * q);
        for &e in &units {
            for c in 0..q {
                keys.push(el.codes[c][e as usize]);
            }
        }
        let (grp, ng) = group_keys(&keys, q, units.len());
        classes.rep = vec![0; ng * q];
        classes.subjects = vec![0; ng];
        classes.rows = vec![0; ng];
        if g.l.is_some() {
            classes.sens = vec![Vec::new(); ng];
        }
        let mut seen = vec![false; ng];
        for (u, &e) in units.iter().enumerate() {
            let gi = grp[u] as usize;
            if !seen[gi] {
                seen[gi] = true;
                classes.rep[gi * q..(gi + 1) * q].copy_from_slice(&keys[u * q..(u + 1) * q]);
            }
            classes.subjects[gi] += 1;
            classes.rows[gi] += el.weight(e as usize);
            if g.l.is_some() {
                for_each_sens(&el, el.sens[e as usize], |v| classes.sens[gi].push(v));
            }
        }
        for s in &mut classes.sens {
            s.sort_unstable();
            s.dedup();
        }
    }

    let mut outliers = g.evaluate(&classes, &straddlers, &levels).outliers;
    while outliers > budget {
        // evaluate every possible raise, spread over the available cores; the pick is the
        // same whatever the spread: fewest outliers, then lowest NCP, then first column
        let cands: Vec<usize> = (0..q).filter(|&c| levels[c] < cols[c].top).collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, cands.len().max(1));
        let better = |a: &(usize, Eval), b: &(usize, Eval)| {
            (a.1.outliers, a.1.ncp, a.0) < (b.1.outliers, b.1.ncp, b.0)
        };
        let best_of = |stripe: Vec<usize>| -> Option<(usize, Eval)> {
            let mut best: Option<(usize, Eval)> = None;
            for c in stripe {
                let mut cand = levels.clone();
                cand[c] += 1;
                let ev = (c, g.evaluate(&classes, &straddlers, &cand));
                if best.as_ref().is_none_or(|b| better(&ev, b)) {
                    best = Some(ev);
                }
            }
            best
        };
        let stripes: Vec<Vec<usize>> = (0..threads)
            .map(|t| cands.iter().copied().skip(t).step_by(threads).collect())
            .collect();
        let results: Vec<Option<(usize, Eval)>> = if threads <= 1 {
            stripes.into_iter().map(best_of).collect()
        } else {
            std::thread::scope(|sc| {
                let handles: Vec<_> = stripes
                    .into_iter()
                    .map(|st| sc.spawn(|| best_of(st)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("evaluation thread"))
                    .collect()
            })
        };
        let mut best: Option<(usize, Eval)> = None;
        for r in results.into_iter().flatten() {
            if best.as_ref().is_none_or(|b| better(&r, b)) {
                best = Some(r);
            }
        }
        let Some((c, ev)) = best else { break };
        levels[c] += 1;
        classes = g.merge(&classes, &straddlers, &levels, &ev);
        let joined: std::collections::HashSet<u32> = ev.joined.iter().copied().collect();
        straddlers.retain(|e| !joined.contains(e));
        outliers = ev.outliers;
    }

    // final: group every element at the chosen levels, release the valid groups
    let mut keys = vec![0u32; n * q];
    let mut ok = vec![true; n];
    for e in 0..n {
        ok[e] = g.consistent(e, &levels);
        for c in 0..q {
            keys[e * q + c] = cols[c].node(levels[c], el.codes[c][e]);
        }
    }
    let (grp, ng) = group_keys(&keys, q, n);
    let mut subjects = vec![0u64; ng];
    let mut rows = vec![0u64; ng];
    let mut first = vec![NONE; ng];
    for e in 0..n {
        if ok[e] {
            let gi = grp[e] as usize;
            subjects[gi] += 1;
            rows[gi] += el.weight(e);
            if first[gi] == NONE {
                first[gi] = e as u32;
            }
        }
    }
    let mut sensitive = vec![0u64; ng];
    if !el.sens.is_empty() {
        // distinct values per group: walk the elements group by group
        let mut order: Vec<u32> = (0..n as u32).filter(|&e| ok[e as usize]).collect();
        order.sort_by_key(|&e| grp[e as usize]);
        let mut st = Stamps::new(el.n_sens as usize);
        let mut cur = NONE;
        for &e in &order {
            let gi = grp[e as usize];
            if gi != cur {
                st.next();
                cur = gi;
            }
            for_each_sens(&el, el.sens[e as usize], |v| {
                if st.add(v) {
                    sensitive[gi as usize] += 1;
                }
            });
        }
    }
    let mut class_of_group = vec![NONE; ng];
    let mut out = Vec::new();
    for gi in 0..ng {
        if first[gi] == NONE {
            continue;
        }
        let valid = subjects[gi] >= g.k && g.l.is_none_or(|l| sensitive[gi] >= l);
        if !valid {
            continue;
        }
        class_of_group[gi] = out.len() as u32;
        out.push(SolClass {
            gens: Vec::new(),
            nodes: (0..q)
                .map(|c| Node {
                    level: levels[c] as u16,
                    id: keys[first[gi] as usize * q + c],
                })
                .collect(),
            subjects: subjects[gi],
            rows: rows[gi],
            sensitive: sensitive[gi],
        });
    }
    let element_class = (0..n)
        .map(|e| {
            if ok[e] {
                class_of_group[grp[e] as usize]
            } else {
                NONE
            }
        })
        .collect();
    (
        Solution {
            classes: out,
            element_class,
        },
        levels,
    )
}

impl Global<'_> {
    /// Whether all rows of element `e` fall in one node per column at `levels`.
    fn consistent(&self, e: usize, levels: &[usize]) -> bool {
        if self.el.hi.is_empty() {
            return true;
        }
        (0..self.q).all(|c| {
            let col = &self.cols[c];
            col.node(levels[c], self.el.codes[c][e]) == col.node(levels[c], self.el.hi[c][e])
        })
    }

    /// Groups the current classes (and the straddlers consistent at `levels`) at `levels`.
    fn evaluate(&self, cls: &Classes, straddlers: &[u32], levels: &[usize]) -> Eval {
        let q = self.q;
        let nc = cls.subjects.len();
        let mut joined: Vec<u32> = Vec::new();
        let mut left_rows = 0u64;
        for &e in straddlers {
            if self.consistent(e as usize, levels) {
                joined.push(e);
            } else {
                left_rows += self.el.weight(e as usize);
            }
        }
        let nu = nc + joined.len();
        let mut keys = vec![0u32; nu * q];
        for u in 0..nc {
            for c in 0..q {
                keys[u * q + c] = self.cols[c].node(levels[c], cls.rep[u * q + c]);
            }
        }
        for (j, &e) in joined.iter().enumerate() {
            for c in 0..q {
                keys[(nc + j) * q + c] = self.cols[c].node(levels[c], self.el.codes[c][e as usize]);
            }
        }
        let (group, groups) = group_keys(&keys, q, nu);
        let mut subj = vec![0u64; groups];
        let mut rows = vec![0u64; groups];
        let mut ncp = 0.0;
        for u in 0..nu {
            let (s, r) = if u < nc {
                (cls.subjects[u], cls.rows[u])
            } else {
                (1, self.el.weight(joined[u - nc] as usize))
            };
            subj[group[u] as usize] += s;
            rows[group[u] as usize] += r;
            let per: f64 = (0..q)
                .map(|c| self.cols[c].ncp(levels[c], keys[u * q + c]))
                .sum();
            ncp += r as f64 * per;
        }
        let mut ok: Vec<bool> = subj.iter().map(|&s| s >= self.k).collect();
        if let Some(l) = self.l {
            let mut pairs: Vec<u64> = Vec::new();
            for u in 0..nu {
                let gi = group[u] as u64;
                if u < nc {
                    pairs.extend(cls.sens[u].iter().map(|&v| (gi << 32) | v as u64));
                } else {
                    let e = joined[u - nc] as usize;
                    for_each_sens(self.el, self.el.sens[e], |v| {
                        pairs.push((gi << 32) | v as u64)
                    });
                }
            }
            pairs.sort_unstable();
            pairs.dedup();
            let mut dist = vec![0u64; groups];
            for p in pairs {
                dist[(p >> 32) as usize] += 1;
            }
            for gi in 0..groups {
                ok[gi] &= dist[gi] >= l;
            }
        }
        let outliers: u64 = (0..groups)
            .filter(|&gi| !ok[gi])
            .map(|gi| rows[gi])
            .sum::<u64>()
            + left_rows;
        Eval {
            outliers,
            ncp,
            group,
            groups,
            joined,
        }
    }

    /// The classes after the raise that `ev` evaluated.
    fn merge(&self, cls: &Classes, _straddlers: &[u32], _levels: &[usize], ev: &Eval) -> Classes {
        let q = self.q;
        let nc = cls.subjects.len();
        let mut out = Classes {
            rep: vec![0; ev.groups * q],
            subjects: vec![0; ev.groups],
            rows: vec![0; ev.groups],
            sens: if self.l.is_some() {
                vec![Vec::new(); ev.groups]
            } else {
                Vec::new()
            },
        };
        let mut seen = vec![false; ev.groups];
        for u in 0..nc + ev.joined.len() {
            let gi = ev.group[u] as usize;
            let rep: &[u32] = if u < nc {
                &cls.rep[u * q..(u + 1) * q]
            } else {
                &[]
            };
            if !seen[gi] {
                seen[gi] = true;
                if u < nc {
                    out.rep[gi * q..(gi + 1) * q].copy_from_slice(rep);
                } else {
                    let e = ev.joined[u - nc] as usize;
                    for c in 0..q {
                        out.rep[gi * q + c] = self.el.codes[c][e];
                    }
                }
            }
            if u < nc {
                out.subjects[gi] += cls.subjects[u];
                out.rows[gi] += cls.rows[u];
                if self.l.is_some() {
                    out.sens[gi].extend_from_slice(&cls.sens[u]);
                }
            } else {
                let e = ev.joined[u - nc] as usize;
                out.subjects[gi] += 1;
                out.rows[gi] += self.el.weight(e);
                if self.l.is_some() {
                    let s = &mut out.sens[gi];
                    for_each_sens(self.el, self.el.sens[e], |v| s.push(v));
                }
            }
        }
        for s in &mut out.sens {
            s.sort_unstable();
            s.dedup();
        }
        out
    }
}
