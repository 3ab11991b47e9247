//! Property tests of the anonymisers on random tables, and determinism.

use kanon::{
    l_diversity, measure_k, Algorithm, Anonymized, Anonymizer, ClassCounter, Hierarchy, Value,
};
use proptest::prelude::*;
use std::collections::HashMap;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Date,
    Integer,
    Numeric,
    Prefix,
    Categorical,
}

#[derive(Clone, Debug, PartialEq)]
enum Owned {
    Int(i64),
    Num(f64),
    Text(String),
    Null,
}

impl Owned {
    fn value(&self) -> Value<'_> {
        match self {
            Owned::Int(i) => Value::Int(*i),
            Owned::Num(x) => Value::Num(*x),
            Owned::Text(s) => Value::Text(s),
            Owned::Null => Value::Null,
        }
    }
}

const LEAVES: [&str; 6] = ["nurse", "surgeon", "teacher", "welder", "retired", "pilot"];

fn hierarchy(kind: Kind) -> Hierarchy {
    match kind {
        Kind::Date => Hierarchy::date(),
        Kind::Integer => Hierarchy::integer_default(),
        Kind::Numeric => Hierarchy::numeric(vec![0.5, 1.0, 5.0, 25.0]).unwrap(),
        Kind::Prefix => Hierarchy::prefix(3).unwrap(),
        Kind::Categorical => Hierarchy::categorical([
            ("nurse", "health"),
            ("surgeon", "health"),
            ("teacher", "education"),
            ("health", "services"),
            ("education", "services"),
            ("welder", "industry"),
            ("pilot", "industry"),
            ("industry", "*"),
            ("services", "*"),
            ("retired", "*"),
        ])
        .unwrap(),
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Date),
        Just(Kind::Integer),
        Just(Kind::Numeric),
        Just(Kind::Prefix),
        Just(Kind::Categorical),
    ]
}

/// A value of the kind, NULL about one time in ten.
fn value(kind: Kind) -> BoxedStrategy<Owned> {
    prop_oneof![1 => Just(Owned::Null), 9 => non_null(kind)].boxed()
}

fn non_null(kind: Kind) -> BoxedStrategy<Owned> {
    match kind {
        // 1975..2004, so months, years and bands all collide
        Kind::Date => (1826i64..12784).prop_map(Owned::Int).boxed(),
        Kind::Integer => (-30i64..160).prop_map(Owned::Int).boxed(),
        Kind::Numeric => prop_oneof![
            (-40i64..200).prop_map(|i| Owned::Num(i as f64 / 4.0)),
            (-10.0f64..50.0).prop_map(Owned::Num),
        ]
        .boxed(),
        Kind::Prefix => {
            proptest::collection::vec(prop_oneof![Just('0'), Just('1'), Just('2'), Just('9')], 3)
                .prop_map(|c| Owned::Text(c.into_iter().collect()))
                .boxed()
        }
        Kind::Categorical => proptest::sample::select(LEAVES.to_vec())
            .prop_map(|s| Owned::Text(s.to_string()))
            .boxed(),
    }
}

#[derive(Clone, Debug)]
struct Row {
    subject: i64,
    values: Vec<Owned>,
    sensitive: String,
}

#[derive(Clone, Debug)]
struct Table {
    kinds: Vec<Kind>,
    rows: Vec<Row>,
}

/// Subjects with 1–3 rows each: exact duplicates, or (sometimes) a row that differs in one
/// column; rows shuffled.
fn table() -> impl Strategy<Value = Table> {
    proptest::collection::vec(kind(), 1..=5).prop_flat_map(|kinds| {
        let row = kinds.iter().map(|&k| value(k)).collect::<Vec<_>>();
        let subject = (
            row,
            0usize..5,
            proptest::collection::vec((any::<bool>(), 0usize..5, 0usize..5), 0..=2),
        );
        let extra_values = kinds.iter().map(|&k| value(k)).collect::<Vec<_>>();
        (
            Just(kinds),
            proptest::collection::vec((subject, extra_values), 1..120),
        )
            .prop_flat_map(|(kinds, subjects)| {
                let mut rows = Vec::new();
                for (i, ((values, sens, dups), extra)) in subjects.into_iter().enumerate() {
                    let subject = 1000 + 7 * i as i64;
                    let sensitive = format!("s{sens}");
                    rows.push(Row {
                        subject,
                        values: values.clone(),
                        sensitive: sensitive.clone(),
                    });
                    for (differ, col, s2) in dups {
                        let mut v = values.clone();
                        let mut s = sensitive.clone();
                        if differ {
                            let c = col % v.len();
                            v[c] = extra[c].clone();
                            s = format!("s{s2}");
                        }
                        rows.push(Row {
                            subject,
                            values: v,
                            sensitive: s,
                        });
                    }
                }
                (Just(kinds), Just(rows).prop_shuffle())
            })
            .prop_map(|(kinds, rows)| Table { kinds, rows })
    })
}

fn columns(t: &Table) -> Vec<(String, Hierarchy)> {
    t.kinds
        .iter()
        .enumerate()
        .map(|(i, &k)| (format!("c{i}"), hierarchy(k)))
        .collect()
}

fn run(t: &Table, alg: Algorithm, k: usize, l: Option<usize>, limit: f64) -> Anonymized {
    let mut a = Anonymizer::new(columns(t), k, l, limit)
        .unwrap()
        .with_algorithm(alg);
    for r in &t.rows {
        let vals: Vec<Value<'_>> = r.values.iter().map(Owned::value).collect();
        a.push(r.subject, &vals, Some(&r.sensitive)).unwrap();
    }
    a.run().unwrap()
}

fn n_subjects(t: &Table) -> usize {
    let mut s: Vec<i64> = t.rows.iter().map(|r| r.subject).collect();
    s.sort_unstable();
    s.dedup();
    s.len()
}

fn n_sensitive(t: &Table) -> usize {
    let mut s: Vec<&str> = t.rows.iter().map(|r| r.sensitive.as_str()).collect();
    s.sort_unstable();
    s.dedup();
    s.len()
}

/// What a recipient sees of record i: its quasi values and, when segments are declared, the
/// segments it shows (two classes may share their values and differ in their segments).
fn released_key(out: &Anonymized, i: usize) -> Option<Vec<String>> {
    out.record(i).map(|v| {
        let mut key = v.to_vec();
        if !out.segment_names().is_empty() {
            key.push(format!("{:?}", out.segments(i).unwrap()));
        }
        key
    })
}

/// Every property an anonymisation must have, checked against the input.
fn check(
    t: &Table,
    out: &Anonymized,
    alg: Algorithm,
    k: usize,
    l: Option<usize>,
    limit: f64,
) -> Result<(), TestCaseError> {
    let r = out.report();
    let hs: Vec<Hierarchy> = t.kinds.iter().map(|&k| hierarchy(k)).collect();
    prop_assert_eq!(out.len(), t.rows.len());
    prop_assert_eq!(r.records, t.rows.len());
    prop_assert_eq!(r.subjects, n_subjects(t));

    // each output value is an ancestor-or-self of the input value (the range algorithm:
    // a range, set or node that covers it)
    for (i, row) in t.rows.iter().enumerate() {
        prop_assert_eq!(out.subject(i), row.subject);
        if let Some(gen) = out.record(i) {
            prop_assert_eq!(gen.len(), hs.len());
            for (c, h) in hs.iter().enumerate() {
                if alg == Algorithm::Ranges {
                    prop_assert!(
                        h.covers(&gen[c], &row.values[c].value()).unwrap(),
                        "{} does not cover {:?}",
                        gen[c],
                        row.values[c]
                    );
                    continue;
                }
                let lv = h.level_of(&row.values[c].value(), &gen[c]).unwrap();
                prop_assert!(
                    lv.is_some(),
                    "{} is not an ancestor of {:?}",
                    gen[c],
                    row.values[c]
                );
                let class = &out.classes()[out.class_of(i).unwrap()];
                // the reported level prints the same (a padded categorical leaf prints
                // its own name on several levels)
                prop_assert_eq!(
                    &h.generalize(&row.values[c].value(), class.levels[c])
                        .unwrap(),
                    &gen[c]
                );
            }
        }
    }

    // all rows of a subject end identically (same class or all suppressed)
    let mut by_subject: HashMap<i64, Option<usize>> = HashMap::new();
    for i in 0..out.len() {
        let c = out.class_of(i);
        if let Some(prev) = by_subject.insert(out.subject(i), c) {
            prop_assert_eq!(prev, c, "subject {} in two classes", out.subject(i));
        }
    }

    // every released class has ≥ k distinct subjects (and ≥ l values), measured on the output
    // (a released record is its quasi values and, when segments are declared, the segments
    // it shows: two classes may share their values and differ in the segments)
    let released: Vec<(i64, Vec<String>)> = (0..out.len())
        .filter_map(|i| released_key(out, i).map(|key| (out.subject(i), key)))
        .collect();
    let kr = measure_k(released.clone());
    if !released.is_empty() {
        prop_assert!(kr.k >= k, "k {} < {}", kr.k, k);
    }
    prop_assert_eq!(r.k_reached, kr.k);
    prop_assert_eq!(r.classes, kr.classes);
    let mut counter = ClassCounter::new();
    for (s, key) in &released {
        counter.push(*s, key.clone());
    }
    let (classes, _) = counter.finish();
    for c in &classes {
        prop_assert!(c.subjects >= k);
    }
    let lr = l_diversity(t.rows.iter().enumerate().filter_map(|(i, row)| {
        released_key(out, i).map(|v| (row.subject, v, row.sensitive.clone()))
    }));
    prop_assert_eq!(r.l_reached, Some(lr.l));
    if let Some(l) = l {
        if !released.is_empty() {
            prop_assert!(lr.l >= l, "l {} < {}", lr.l, l);
        }
    }

    // suppression within the limit, or everything when k (or l) cannot be met at all
    let suppressed = (0..out.len()).filter(|&i| out.record(i).is_none()).count();
    prop_assert_eq!(r.suppressed_records, suppressed);
    let infeasible = n_subjects(t) < k || l.is_some_and(|l| n_sensitive(t) < l);
    if infeasible {
        prop_assert_eq!(suppressed, t.rows.len());
        prop_assert_eq!(r.k_reached, 0);
    } else {
        prop_assert!(
            suppressed as f64 <= limit * t.rows.len() as f64,
            "{} suppressed, limit {}",
            suppressed,
            limit
        );
        if alg != Algorithm::GlobalRecoding {
            prop_assert!(r.classes > 0);
        }
        if alg == Algorithm::Ranges {
            prop_assert_eq!(suppressed, 0, "the range algorithm never needs to suppress");
        }
    }
    prop_assert!((0.0..=1.0).contains(&r.ncp));

    if alg == Algorithm::GlobalRecoding {
        // full-domain: one level per column for every class
        for c in out.classes() {
            prop_assert_eq!(&c.levels, &out.classes()[0].levels);
        }
        for lu in &r.levels_used {
            prop_assert_eq!(lu.min, lu.max);
        }
    }
    Ok(())
}

fn algorithms() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        Just(Algorithm::Mondrian),
        Just(Algorithm::GlobalRecoding),
        Just(Algorithm::Ranges)
    ]
}

proptest! {

    #[test]
    fn anonymisation_meets_k(t in table(), alg in algorithms(), k in 2usize..20, limit in prop_oneof![Just(0.0), 0.0f64..0.2]) {
        let out = run(&t, alg, k, None, limit);
        check(&t, &out, alg, k, None, limit)?;
    }

    #[test]
    fn anonymisation_meets_k_and_l(t in table(), alg in algorithms(), k in 2usize..20, l in 1usize..5, limit in 0.0f64..0.2) {
        let out = run(&t, alg, k, Some(l), limit);
        check(&t, &out, alg, k, Some(l), limit)?;
    }

    /// Adding duplicate rows of subjects never raises k, for the measurement and for the
    /// anonymisers: a table whose subjects are fewer than k stays fully suppressed however
    /// many rows each subject has.
    #[test]
    fn duplicates_never_raise_k(t in table(), alg in algorithms(), copies in 1usize..6) {
        let raw = |t: &Table| {
            let hs: Vec<Hierarchy> = t.kinds.iter().map(|&k| hierarchy(k)).collect();
            measure_k(t.rows.iter().map(|r| {
                (r.subject, r.values.iter().zip(&hs).map(|(v, h)| h.generalize(&v.value(), 0).unwrap()).collect())
            }).collect::<Vec<_>>())
        };
        let mut dup = t.clone();
        for r in &t.rows {
            for _ in 0..copies {
                dup.rows.push(r.clone());
            }
        }
        prop_assert_eq!(raw(&t).k, raw(&dup).k);
        prop_assert_eq!(raw(&t).subjects, raw(&dup).subjects);

        let k = n_subjects(&t) + 1;
        let out = run(&dup, alg, k, None, 0.5);
        prop_assert_eq!(out.report().suppressed_records, dup.rows.len());
        prop_assert_eq!(out.report().k_reached, 0);

        let k = 2;
        let out = run(&dup, alg, k, None, 0.1);
        check(&dup, &out, alg, k, None, 0.1)?;
    }
}

fn fixed_table() -> Table {
    let mut rows = Vec::new();
    let mut x: u64 = 12345;
    let mut next = |n: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    let kinds = vec![
        Kind::Date,
        Kind::Prefix,
        Kind::Categorical,
        Kind::Integer,
        Kind::Numeric,
    ];
    for s in 0..2000 {
        let row = Row {
            subject: s,
            values: vec![
                Owned::Int(3000 + next(8000) as i64),
                Owned::Text(format!("{}{}{}", next(3), next(10), next(10))),
                Owned::Text(LEAVES[next(6) as usize].to_string()),
                Owned::Int(next(100) as i64),
                Owned::Num(next(400) as f64 / 8.0),
            ],
            sensitive: format!("d{}", next(4)),
        };
        if s % 10 == 0 {
            rows.push(row.clone());
        }
        rows.push(row);
    }
    Table { kinds, rows }
}

#[test]
fn deterministic() {
    let t = fixed_table();
    for alg in [
        Algorithm::Mondrian,
        Algorithm::GlobalRecoding,
        Algorithm::Ranges,
    ] {
        for (k, l) in [(5, None), (10, Some(2))] {
            let a = run(&t, alg, k, l, 0.02);
            let b = run(&t, alg, k, l, 0.02);
            let out_a: Vec<_> = a
                .iter()
                .map(|(s, v)| (s, v.map(<[String]>::to_vec)))
                .collect();
            let out_b: Vec<_> = b
                .iter()
                .map(|(s, v)| (s, v.map(<[String]>::to_vec)))
                .collect();
            assert_eq!(out_a, out_b);
            assert_eq!(a.classes(), b.classes());
            let (mut ra, mut rb) = (a.report().clone(), b.report().clone());
            ra.elapsed = Default::default();
            rb.elapsed = Default::default();
            assert_eq!(ra, rb);
            check(&t, &a, alg, k, l, 0.02).unwrap();
        }
    }
}

/// Segment memberships of a table's subjects: 0–3 of 6 segments each, by subject id.
fn memberships(t: &Table, seed: u64) -> HashMap<i64, Vec<u32>> {
    let mut m = HashMap::new();
    for r in &t.rows {
        let mut x = (r.subject as u64 ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut set = Vec::new();
        for _ in 0..(x % 4) {
            x = x.rotate_left(17).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            set.push((x % 6) as u32);
        }
        set.sort_unstable();
        set.dedup();
        m.entry(r.subject).or_insert(set);
    }
    m
}

proptest! {
    /// Released segments: a class shows only segments every one of its subjects holds, so a
    /// (quasi values, segments) group has ≥ k subjects; the report counts what is kept.
    #[test]
    fn segments_are_released_per_class(t in table(), alg in algorithms(), k in 2usize..12, seed in any::<u64>(), weight in prop_oneof![Just(0.0), 0.0f64..5.0]) {
        let names = ["a", "b", "c", "d", "e", "f"];
        let segs = memberships(&t, seed);
        let mut a = Anonymizer::new(columns(&t), k, None, 0.1)
            .unwrap()
            .with_algorithm(alg)
            .with_segments(names)
            .unwrap()
            .with_segment_weight(weight)
            .unwrap();
        for r in &t.rows {
            let vals: Vec<Value<'_>> = r.values.iter().map(Owned::value).collect();
            a.push_with(r.subject, &vals, Some(&r.sensitive), &segs[&r.subject]).unwrap();
        }
        let out = a.run().unwrap();
        check(&t, &out, alg, k, None, 0.1)?;
        let mut grouped: Vec<(i64, Vec<String>)> = Vec::new();
        let mut kept = 0;
        let mut seen = std::collections::HashSet::new();
        for i in 0..out.len() {
            let Some(shown) = out.segments(i) else { continue };
            let subject = out.subject(i);
            for s in shown {
                prop_assert!(segs[&subject].contains(&(*s as u32)), "subject {} shown in segment {} it is not in", subject, s);
            }
            if seen.insert(subject) {
                kept += shown.len();
            }
            let mut key = out.record(i).unwrap().to_vec();
            key.push(shown.iter().map(|s| names[*s]).collect::<Vec<_>>().join(","));
            grouped.push((subject, key));
        }
        if !grouped.is_empty() {
            prop_assert!(measure_k(grouped).k >= k);
        }
        let r = out.report();
        let total: usize = segs.values().map(Vec::len).sum();
        prop_assert_eq!(r.memberships, total);
        prop_assert_eq!(r.memberships_kept, kept);
        prop_assert_eq!(r.segments.iter().map(|s| s.kept).sum::<usize>(), kept);
        prop_assert_eq!(r.segments.iter().map(|s| s.members).sum::<usize>(), total);
    }
}

#[test]
fn mondrian_beats_global_on_loss() {
    let t = fixed_table();
    let m = run(&t, Algorithm::Mondrian, 10, None, 0.02);
    let g = run(&t, Algorithm::GlobalRecoding, 10, None, 0.02);
    assert!(
        m.report().ncp < g.report().ncp,
        "{} vs {}",
        m.report(),
        g.report()
    );
}
