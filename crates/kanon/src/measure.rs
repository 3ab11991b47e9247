//! Measuring k (and l) of rows that are already generalised.
//!
//! A row is `(subject, key)`: the subject's id and the tuple of its (generalised) quasi
//! values. Rows with equal keys form an *equivalence class*. Classes are sized in
//! **distinct subjects**, never rows: a subject with three rows in a class counts once, so
//! duplicates cannot inflate k. Keys are compared as whole tuples, exactly (no trimming, no
//! case folding); `*` is just a string here.

use std::collections::HashMap;

/// k of a set of rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KReport {
    /// Minimum number of distinct subjects over the classes; 0 when there are no rows.
    pub k: usize,
    /// Number of equivalence classes.
    pub classes: usize,
    /// Number of rows.
    pub rows: usize,
    /// Number of distinct subjects over all rows.
    pub subjects: usize,
}

/// One equivalence class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EquivalenceClass {
    pub key: Vec<String>,
    /// Distinct subjects in the class.
    pub subjects: usize,
    pub rows: usize,
    /// Distinct sensitive values in the class (0 when none were given).
    pub sensitive_values: usize,
}

/// l of a set of rows with a sensitive attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LReport {
    /// Minimum number of distinct sensitive values over the classes; 0 when there are no rows.
    pub l: usize,
    pub classes: usize,
    pub rows: usize,
}

/// Streaming accumulator of equivalence classes: feed rows one by one, then read the
/// classes or the reports. Memory: the distinct keys, plus 16 bytes per row (and 8 more per
/// row with a sensitive value) until `finish`.
#[derive(Default, Debug, Clone)]
pub struct ClassCounter {
    index: HashMap<Vec<String>, u32>,
    keys: Vec<Vec<String>>,
    rows: Vec<usize>,
    members: Vec<(u32, i64)>,
    sens_index: HashMap<String, u32>,
    sensitive: Vec<(u32, u32)>,
}

impl ClassCounter {
    pub fn new() -> Self {
        Self::default()
    }

    fn class(&mut self, key: Vec<String>) -> u32 {
        if let Some(&c) = self.index.get(&key) {
            return c;
        }
        let c = self.keys.len() as u32;
        self.index.insert(key.clone(), c);
        self.keys.push(key);
        self.rows.push(0);
        c
    }

    /// Adds one row.
    pub fn push(&mut self, subject: i64, key: Vec<String>) {
        let c = self.class(key);
        self.rows[c as usize] += 1;
        self.members.push((c, subject));
    }

    /// Adds one row with its sensitive value.
    pub fn push_sensitive(&mut self, subject: i64, key: Vec<String>, sensitive: &str) {
        let c = self.class(key);
        self.rows[c as usize] += 1;
        self.members.push((c, subject));
        let n = self.sens_index.len() as u32;
        let s = *self.sens_index.entry(sensitive.to_string()).or_insert(n);
        self.sensitive.push((c, s));
    }

    /// The classes, sorted by key.
    pub fn finish(mut self) -> (Vec<EquivalenceClass>, usize) {
        let n = self.keys.len();
        let mut subjects = vec![0usize; n];
        self.members.sort_unstable();
        self.members.dedup();
        for &(c, _) in &self.members {
            subjects[c as usize] += 1;
        }
        let mut all: Vec<i64> = self.members.iter().map(|&(_, s)| s).collect();
        all.sort_unstable();
        all.dedup();
        let mut sens = vec![0usize; n];
        self.sensitive.sort_unstable();
        self.sensitive.dedup();
        for &(c, _) in &self.sensitive {
            sens[c as usize] += 1;
        }
        let mut classes: Vec<EquivalenceClass> = self
            .keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| EquivalenceClass {
                key,
                subjects: subjects[i],
                rows: self.rows[i],
                sensitive_values: sens[i],
            })
            .collect();
        classes.sort_by(|a, b| a.key.cmp(&b.key));
        (classes, all.len())
    }
}

/// k of `rows`: the minimum number of distinct subjects over the equivalence classes
/// (0 for no rows).
pub fn measure_k<I>(rows: I) -> KReport
where
    I: IntoIterator<Item = (i64, Vec<String>)>,
{
    let mut c = ClassCounter::new();
    for (s, key) in rows {
        c.push(s, key);
    }
    let (classes, subjects) = c.finish();
    KReport {
        k: classes.iter().map(|c| c.subjects).min().unwrap_or(0),
        classes: classes.len(),
        rows: classes.iter().map(|c| c.rows).sum(),
        subjects,
    }
}

/// The equivalence classes of `rows`, sorted by key, each with its distinct subjects and rows.
pub fn equivalence_classes<I>(rows: I) -> Vec<EquivalenceClass>
where
    I: IntoIterator<Item = (i64, Vec<String>)>,
{
    let mut c = ClassCounter::new();
    for (s, key) in rows {
        c.push(s, key);
    }
    c.finish().0
}

/// l of `rows` `(subject, key, sensitive)`: the minimum number of distinct sensitive values
/// over the equivalence classes (distinct l-diversity; 0 for no rows).
pub fn l_diversity<I, S>(rows: I) -> LReport
where
    I: IntoIterator<Item = (i64, Vec<String>, S)>,
    S: AsRef<str>,
{
    let mut c = ClassCounter::new();
    for (s, key, v) in rows {
        c.push_sensitive(s, key, v.as_ref());
    }
    let (classes, _) = c.finish();
    LReport {
        l: classes
            .iter()
            .map(|c| c.sensitive_values)
            .min()
            .unwrap_or(0),
        classes: classes.len(),
        rows: classes.iter().map(|c| c.rows).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(s: i64, k: &[&str]) -> (i64, Vec<String>) {
        (s, k.iter().map(|x| x.to_string()).collect())
    }

    #[test]
    fn empty() {
        assert_eq!(
            measure_k(Vec::new()),
            KReport {
                k: 0,
                classes: 0,
                rows: 0,
                subjects: 0
            }
        );
        assert_eq!(l_diversity(Vec::<(i64, Vec<String>, String)>::new()).l, 0);
    }

    #[test]
    fn counts_subjects_not_rows() {
        let rows = vec![
            row(1, &["1987", "10***"]),
            row(1, &["1987", "10***"]),
            row(1, &["1987", "10***"]),
            row(2, &["1987", "10***"]),
            row(3, &["1988", "10***"]),
            row(4, &["1988", "10***"]),
            row(5, &["1988", "10***"]),
        ];
        let r = measure_k(rows.clone());
        assert_eq!(
            r,
            KReport {
                k: 2,
                classes: 2,
                rows: 7,
                subjects: 5
            }
        );
        let classes = equivalence_classes(rows);
        assert_eq!(classes[0].key, ["1987", "10***"]);
        assert_eq!((classes[0].subjects, classes[0].rows), (2, 4));
        assert_eq!((classes[1].subjects, classes[1].rows), (3, 3));
    }

    #[test]
    fn duplicates_never_raise_k() {
        let base = vec![row(1, &["a"]), row(2, &["a"]), row(3, &["b"])];
        let mut dup = base.clone();
        for _ in 0..10 {
            dup.push(row(3, &["b"]));
        }
        assert_eq!(measure_k(base).k, 1);
        assert_eq!(measure_k(dup).k, 1);
    }

    #[test]
    fn l_counts_distinct_values() {
        let rows = vec![
            (1, vec!["x".to_string()], "flu"),
            (2, vec!["x".to_string()], "flu"),
            (3, vec!["x".to_string()], "cold"),
            (4, vec!["y".to_string()], "flu"),
            (4, vec!["y".to_string()], "flu"),
        ];
        assert_eq!(
            l_diversity(rows),
            LReport {
                l: 1,
                classes: 2,
                rows: 5
            }
        );
    }
}
