//! Utility on real data: the UCI Adult census table through the anonymisers.
//!
//! ```text
//! cargo run --release --example adult -- ADULT_CSV [--k K] [--algorithm ranges|mondrian|global|all]
//!     [--segments] [--segment-weight W] [--all-rows] [--limit L]
//! ```
//!
//! `ADULT_CSV` is what `scripts/lib.sh`'s `mseg_adult_csv` writes: a header, then `id` and the
//! 15 Adult columns, a missing value (`?`) as an empty field. By default only the 45,222
//! complete rows are used (the usual benchmark); `--all-rows` takes all 48,842 with their
//! missing values as NULL.
//!
//! Quasi-identifiers (the 8 classic ones): age (integer, hierarchy `integer:5,10,20`),
//! workclass, education, marital_status, occupation, race, sex, native_country (categorical,
//! the mappings in `data/adult/*.csv`, see its README). One row per subject (`id`).
//!
//! `--segments` declares the 20 segments of [`SEGMENTS`] (predicates over the Adult columns,
//! including some rare ones) and reports the memberships kept, overall and per segment.
//!
//! Output: per algorithm the report (k reached, classes, suppression, NCP, time of `run`),
//! NCP per column, and the time of the whole anonymisation (pushes and run). The last line
//! of each algorithm is machine-readable (`RESULT key=value ...`).

use kanon::{Algorithm, Anonymizer, Hierarchy, Value};
use std::time::Instant;

const QUASI: [&str; 8] = [
    "age",
    "workclass",
    "education",
    "marital_status",
    "occupation",
    "race",
    "sex",
    "native_country",
];

const MAPPINGS: [(&str, &str); 7] = [
    ("workclass", include_str!("../data/adult/workclass.csv")),
    ("education", include_str!("../data/adult/education.csv")),
    (
        "marital_status",
        include_str!("../data/adult/marital_status.csv"),
    ),
    ("occupation", include_str!("../data/adult/occupation.csv")),
    ("race", include_str!("../data/adult/race.csv")),
    ("sex", include_str!("../data/adult/sex.csv")),
    (
        "native_country",
        include_str!("../data/adult/native_country.csv"),
    ),
];

/// One Adult row, by column name.
struct Row<'a> {
    fields: Vec<&'a str>,
}

impl Row<'_> {
    fn get(&self, header: &[&str], name: &str) -> &str {
        let i = header.iter().position(|h| *h == name).expect("column");
        self.fields[i]
    }
    fn int(&self, header: &[&str], name: &str) -> i64 {
        self.get(header, name).parse().unwrap_or(0)
    }
}

type Pred = fn(&Row<'_>, &[&str]) -> bool;

/// Twenty marketing segments over the Adult columns: common, rare, some defined by
/// quasi-identifiers, some by other columns (income, capital, hours, relationship).
const SEGMENTS: [(&str, Pred); 20] = [
    ("high_income", |r, h| r.get(h, "income") == ">50K"),
    ("investors", |r, h| r.int(h, "capital_gain") > 0),
    ("big_investors", |r, h| r.int(h, "capital_gain") >= 10_000),
    ("capital_losses", |r, h| r.int(h, "capital_loss") > 0),
    ("long_hours", |r, h| r.int(h, "hours_per_week") > 45),
    ("part_time", |r, h| r.int(h, "hours_per_week") < 30),
    ("seniors", |r, h| r.int(h, "age") >= 60),
    ("young_adults", |r, h| r.int(h, "age") < 25),
    ("degree_holders", |r, h| r.int(h, "education_num") >= 13),
    ("graduates", |r, h| {
        matches!(
            r.get(h, "education"),
            "Masters" | "Doctorate" | "Prof-school"
        )
    }),
    ("doctorates", |r, h| r.get(h, "education") == "Doctorate"),
    ("self_employed", |r, h| {
        r.get(h, "workclass").starts_with("Self-emp")
    }),
    ("public_sector", |r, h| {
        r.get(h, "workclass").ends_with("-gov")
    }),
    ("married", |r, h| {
        r.get(h, "marital_status").starts_with("Married")
    }),
    ("single_householders", |r, h| {
        r.get(h, "relationship") == "Unmarried"
    }),
    ("managers", |r, h| {
        r.get(h, "occupation") == "Exec-managerial"
    }),
    ("tech_support", |r, h| {
        r.get(h, "occupation") == "Tech-support"
    }),
    ("farmers", |r, h| {
        r.get(h, "occupation") == "Farming-fishing"
    }),
    ("immigrants", |r, h| {
        let c = r.get(h, "native_country");
        !c.is_empty() && c != "United-States"
    }),
    ("young_high_earners", |r, h| {
        r.get(h, "income") == ">50K" && r.int(h, "age") < 35
    }),
];

fn hierarchies() -> Vec<(&'static str, Hierarchy)> {
    let mut cols = vec![("age", Hierarchy::integer(vec![5, 10, 20]).unwrap())];
    for name in &QUASI[1..] {
        let text = MAPPINGS.iter().find(|(n, _)| n == name).unwrap().1;
        let pairs: Vec<(String, String)> = text
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let (c, p) = l.split_once(',').expect("child,parent");
                (c.trim().to_string(), p.trim().to_string())
            })
            .collect();
        cols.push((name, Hierarchy::categorical(pairs).unwrap()));
    }
    cols
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let mut k = 10usize;
    let mut algorithm = "all".to_string();
    let mut segments = false;
    let mut weight = None;
    let mut all_rows = false;
    let mut limit = 0.01;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--k" => k = args.next().and_then(|x| x.parse().ok()).expect("--k K"),
            "--algorithm" => algorithm = args.next().expect("--algorithm NAME"),
            "--segments" => segments = true,
            "--segment-weight" => {
                weight = Some(
                    args.next()
                        .and_then(|x| x.parse::<f64>().ok())
                        .expect("--segment-weight W"),
                )
            }
            "--all-rows" => all_rows = true,
            "--limit" => limit = args.next().and_then(|x| x.parse().ok()).expect("--limit L"),
            _ if path.is_none() => path = Some(a),
            _ => panic!("unknown argument {a}"),
        }
    }
    let path = path.expect("usage: adult ADULT_CSV [--k K] [--algorithm ...] [--segments]");
    let text = std::fs::read_to_string(&path).expect("read the Adult CSV");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let rows: Vec<Row<'_>> = lines
        .map(|l| Row {
            fields: l.split(',').collect(),
        })
        .filter(|r| r.fields.len() == header.len())
        .filter(|r| all_rows || r.fields.iter().all(|f| !f.is_empty()))
        .collect();
    let quasi_ix: Vec<usize> = QUASI
        .iter()
        .map(|q| header.iter().position(|h| h == q).expect("quasi column"))
        .collect();
    let nulls = rows
        .iter()
        .filter(|r| quasi_ix.iter().any(|&i| r.fields[i].is_empty()))
        .count();
    println!(
        "UCI Adult: {} rows ({} with a NULL quasi value), 8 quasi-identifiers, k = {k}, suppression limit {limit}{}",
        rows.len(),
        nulls,
        if segments { ", 20 segments" } else { "" }
    );
    let memberships: Vec<Vec<u32>> = rows
        .iter()
        .map(|r| {
            SEGMENTS
                .iter()
                .enumerate()
                .filter(|(_, (_, p))| p(r, &header))
                .map(|(i, _)| i as u32)
                .collect()
        })
        .collect();
    let algorithms: Vec<Algorithm> = match algorithm.as_str() {
        "all" => vec![
            Algorithm::Ranges,
            Algorithm::Mondrian,
            Algorithm::GlobalRecoding,
        ],
        "ranges" => vec![Algorithm::Ranges],
        "mondrian" => vec![Algorithm::Mondrian],
        "global" => vec![Algorithm::GlobalRecoding],
        other => panic!("unknown algorithm {other}"),
    };
    for alg in algorithms {
        let started = Instant::now();
        let mut a = Anonymizer::new(hierarchies(), k, None, limit)
            .unwrap()
            .with_algorithm(alg);
        if segments {
            a = a.with_segments(SEGMENTS.iter().map(|(n, _)| *n)).unwrap();
            if let Some(w) = weight {
                a = a.with_segment_weight(w).unwrap();
            }
        }
        a.reserve(rows.len());
        let id = header.iter().position(|h| *h == "id").expect("id");
        let mut values: Vec<Value<'_>> = Vec::with_capacity(8);
        for (r, segs) in rows.iter().zip(&memberships) {
            values.clear();
            for (c, &i) in quasi_ix.iter().enumerate() {
                let f = r.fields[i];
                values.push(if f.is_empty() {
                    Value::Null
                } else if c == 0 {
                    Value::Int(f.parse().expect("age"))
                } else {
                    Value::Text(f)
                });
            }
            let subject: i64 = r.fields[id].parse().expect("id");
            let segs: &[u32] = if segments { segs } else { &[] };
            a.push_with(subject, &values, None, segs).unwrap();
        }
        let out = a.run().unwrap();
        let total = started.elapsed();
        let r = out.report();
        println!("\n{r}");
        println!(
            "  time: run {:.3} s, with the pushes {:.3} s",
            r.elapsed.as_secs_f64(),
            total.as_secs_f64()
        );
        let per: Vec<String> = r
            .levels_used
            .iter()
            .map(|c| format!("{} {:.4}", c.column, c.ncp))
            .collect();
        println!("  NCP per column: {}", per.join(", "));
        if segments {
            let per: Vec<String> = r
                .segments
                .iter()
                .map(|s| {
                    format!(
                        "{} {:.1}% of {}",
                        s.segment,
                        100.0 * s.kept as f64 / s.members.max(1) as f64,
                        s.members
                    )
                })
                .collect();
            println!("  memberships kept per segment: {}", per.join(", "));
        }
        // a few released classes, for the eye
        for c in out.classes().iter().take(3) {
            let segs: Vec<&str> = c
                .segments
                .iter()
                .map(|&s| out.segment_names()[s].as_str())
                .collect();
            println!(
                "  e.g. {} subjects: {} {:?}",
                c.subjects,
                c.key.join(" · "),
                segs
            );
        }
        print!(
            "RESULT algorithm={alg} rows={} k={k} k_reached={} classes={} suppressed={} suppressed_pct={:.3} ncp={:.4} run_s={:.3} total_s={:.3}",
            r.records,
            r.k_reached,
            r.classes,
            r.suppressed_records,
            100.0 * r.suppressed_fraction(),
            r.ncp,
            r.elapsed.as_secs_f64(),
            total.as_secs_f64()
        );
        for c in &r.levels_used {
            print!(" ncp_{}={:.4}", c.column, c.ncp);
        }
        if segments {
            print!(
                " memberships={} memberships_kept={} kept_pct={:.1}",
                r.memberships,
                r.memberships_kept,
                100.0 * r.memberships_kept_fraction()
            );
        }
        println!();
    }
}
