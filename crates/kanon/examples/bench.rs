//! Benchmark: a synthetic population through the Mondrian anonymiser and the full-domain
//! baseline.
//!
//! ```text
//! cargo run --release --example bench -- N Q K [L] [SUPPRESSION_LIMIT] [both|mondrian|global|ranges|all]
//! cargo run --release --example bench -- 1000000 8 10
//! ```
//!
//! L = 0 means no l-diversity; the suppression limit defaults to 0.01. "peak MiB" is the
//! process's peak resident memory, reset before each run; it is exact only for the first
//! run of a process (freed memory is not always returned to the system), so measure memory
//! with one algorithm per process.
//!
//! Quasi columns, in order (Q takes the first Q, 1..=8): birth date (skewed ages), postcode
//! (clustered, Zipf over cities), sex, income (log-normal, integer), occupation (3-level
//! categorical with two shallow leaves), customer since (date), children (integer),
//! loyalty score (numeric, one decimal). With L, a sensitive attribute with 12 values
//! (Zipf) is added. The data is deterministic (fixed seed).

use kanon::{Algorithm, Anonymizer, Hierarchy, Value};
use std::time::Instant;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-300);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Zipf(s) over 0..n via its cumulative distribution.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut acc = 0.0;
        let mut cdf = Vec::with_capacity(n);
        for i in 1..=n {
            acc += 1.0 / (i as f64).powf(s);
            cdf.push(acc);
        }
        for x in &mut cdf {
            *x /= acc;
        }
        Zipf(cdf)
    }
    fn sample(&self, r: &mut Rng) -> usize {
        let u = r.unit();
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1)
    }
}

fn occupation_hierarchy() -> (Hierarchy, Vec<String>) {
    let sectors = ["industry", "services", "public", "agriculture"];
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut leaves = Vec::new();
    for s in sectors {
        pairs.push((s.to_string(), "*".to_string()));
        for g in 0..3 {
            let group = format!("{s}-group{g}");
            pairs.push((group.clone(), s.to_string()));
            for o in 0..5 {
                let occ = format!("{s}-g{g}-occupation{o}");
                pairs.push((occ.clone(), group.clone()));
                leaves.push(occ);
            }
        }
    }
    for shallow in ["retired", "student"] {
        pairs.push((shallow.to_string(), "*".to_string()));
        leaves.push(shallow.to_string());
    }
    (Hierarchy::categorical(pairs).unwrap(), leaves)
}

/// Resets the kernel's peak-RSS counter (Linux; best effort).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let n: usize = arg(0, "1000000").parse().expect("N");
    let q: usize = arg(1, "8").parse().expect("Q");
    let k: usize = arg(2, "10").parse().expect("K");
    let l: Option<usize> = args
        .get(3)
        .map(|s| s.parse().expect("L"))
        .filter(|&l| l > 0);
    let limit: f64 = arg(4, "0.01").parse().expect("SUPPRESSION_LIMIT");
    let which = arg(5, "both");
    assert!(
        ["both", "mondrian", "global", "ranges", "all"].contains(&which.as_str()),
        "ALGORITHMS: both (mondrian and global), mondrian, global, ranges or all"
    );
    assert!((1..=8).contains(&q), "Q must be 1..=8");

    let (occ_h, occupations) = occupation_hierarchy();
    let all_columns: Vec<(&str, Hierarchy)> = vec![
        ("birth_date", Hierarchy::date()),
        ("postcode", Hierarchy::prefix(5).unwrap()),
        (
            "sex",
            Hierarchy::categorical([("F", "*"), ("M", "*"), ("X", "*")]).unwrap(),
        ),
        (
            "income",
            Hierarchy::integer(vec![1000, 5000, 10_000, 50_000, 100_000, 500_000]).unwrap(),
        ),
        ("occupation", occ_h),
        ("customer_since", Hierarchy::date()),
        ("children", Hierarchy::integer(vec![2, 4]).unwrap()),
        (
            "loyalty",
            Hierarchy::numeric(vec![0.5, 1.0, 5.0, 10.0, 50.0]).unwrap(),
        ),
    ];
    let columns: Vec<(&str, Hierarchy)> = all_columns.into_iter().take(q).collect();
    let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();

    // population model
    let mut r = Rng(0x5eed_2024);
    let cities: Vec<u32> = (0..300).map(|_| 10 + r.below(990) as u32).collect();
    let city_zipf = Zipf::new(cities.len(), 1.0);
    let district_zipf = Zipf::new(100, 0.8);
    let occ_zipf = Zipf::new(occupations.len(), 0.9);
    let occ_perm: Vec<usize> = {
        let mut p: Vec<usize> = (0..occupations.len()).collect();
        for i in (1..p.len()).rev() {
            p.swap(i, r.below(i as u64 + 1) as usize);
        }
        p
    };
    let diseases: Vec<String> = (0..12).map(|i| format!("condition{i}")).collect();
    let disease_zipf = Zipf::new(diseases.len(), 1.0);
    let reference =
        kanon::date_to_days(time::Date::from_calendar_date(2025, time::Month::January, 1).unwrap());
    let since_lo =
        kanon::date_to_days(time::Date::from_calendar_date(2000, time::Month::January, 1).unwrap());

    // generate first, so that the ingest time below is the library's alone
    struct Person {
        birth: i64,
        postcode: [u8; 5],
        sex: &'static str,
        income: i64,
        occupation: u16,
        since: i64,
        kids: i64,
        loyalty: f64,
        sensitive: u8,
    }
    let mut people = Vec::with_capacity(n);
    for _ in 0..n {
        let age = if r.unit() < 0.7 {
            (40.0 + 12.0 * r.normal()).clamp(18.0, 95.0)
        } else {
            18.0 + 77.0 * r.unit()
        };
        let birth = reference - (age * 365.25) as i64 - r.below(365) as i64;
        let city = cities[city_zipf.sample(&mut r)];
        // district numbers are spread over the city's 100 codes
        let district = (district_zipf.sample(&mut r) as u32 * 37) % 100;
        let digits = [
            city / 100,
            (city / 10) % 10,
            city % 10,
            district / 10,
            district % 10,
        ];
        let postcode = digits.map(|d| b'0' + d as u8);
        let sex = match r.below(1000) {
            0..=494 => "F",
            495..=989 => "M",
            _ => "X",
        };
        let income = ((35_000.0 * (0.6 * r.normal()).exp()) as i64 / 100) * 100;
        let occupation = occ_perm[occ_zipf.sample(&mut r)] as u16;
        let since = since_lo + r.below((reference - since_lo) as u64) as i64;
        let mut kids = 0;
        while kids < 8 && r.unit() < 0.55 {
            kids += 1;
        }
        let loyalty = ((100.0 * r.unit().powf(1.7)) * 10.0).round() / 10.0;
        let sensitive = disease_zipf.sample(&mut r) as u8;
        people.push(Person {
            birth,
            postcode,
            sex,
            income,
            occupation,
            since,
            kids,
            loyalty,
            sensitive,
        });
    }

    let mut mondrian = Anonymizer::new(columns.clone(), k, l, limit).unwrap();
    let t0 = Instant::now();
    mondrian.reserve(n);
    for (subject, p) in people.iter().enumerate() {
        let values = [
            Value::Int(p.birth),
            Value::Text(std::str::from_utf8(&p.postcode).unwrap()),
            Value::Text(p.sex),
            Value::Int(p.income),
            Value::Text(&occupations[p.occupation as usize]),
            Value::Int(p.since),
            Value::Int(p.kids),
            Value::Num(p.loyalty),
        ];
        let sensitive = l.map(|_| diseases[p.sensitive as usize].as_str());
        mondrian
            .push(subject as i64, &values[..q], sensitive)
            .unwrap();
    }
    let ingest = t0.elapsed().as_secs_f64();
    let input_mib = mondrian.memory_bytes() as f64 / (1024.0 * 1024.0);
    drop(people);
    let mut runs = Vec::new();
    if ["both", "global", "all"].contains(&which.as_str()) {
        runs.push(mondrian.clone().with_algorithm(Algorithm::GlobalRecoding));
    }
    if ["ranges", "all"].contains(&which.as_str()) {
        runs.push(mondrian.clone().with_algorithm(Algorithm::Ranges));
    }
    if ["both", "mondrian", "all"].contains(&which.as_str()) {
        runs.push(mondrian);
    }

    println!(
        "N={n} Q={q} ({}) K={k} L={} suppression limit {limit}",
        names.join(", "),
        l.map_or("-".to_string(), |l| l.to_string())
    );
    println!(
        "ingest (push) {ingest:.2} s, input store {input_mib:.1} MiB ({:.1} bytes/record)",
        input_mib * 1048576.0 / n as f64
    );
    println!(
        "{:<9} {:>8} {:>8} {:>10} {:>9} {:>7} {:>9} {:>16} {:>9}",
        "algorithm", "run s", "NCP", "suppressed", "k", "l", "classes", "DM", "peak MiB"
    );
    // the baseline runs first on a copy, so that nothing else is alive while Mondrian runs
    let mut lines = Vec::new();
    for a in runs {
        reset_peak_rss();
        let out = a.run().unwrap();
        let r = out.report();
        let mut text = format!(
            "{:<9} {:>8.2} {:>8.4} {:>9.3}% {:>9} {:>7} {:>9} {:>16} {:>9.0}\n",
            r.algorithm.to_string(),
            r.elapsed.as_secs_f64(),
            r.ncp,
            100.0 * r.suppressed_fraction(),
            r.k_reached,
            r.l_reached.map_or("-".to_string(), |l| l.to_string()),
            r.classes,
            r.discernibility,
            peak_rss_mib().unwrap_or(f64::NAN)
        );
        let levels: Vec<String> = r
            .levels_used
            .iter()
            .map(|c| {
                if c.min == c.max {
                    format!("{}={}/{} ({:.3})", c.column, c.min, c.top, c.ncp)
                } else {
                    format!("{}={}..{}/{} ({:.3})", c.column, c.min, c.max, c.top, c.ncp)
                }
            })
            .collect();
        text.push_str(&format!("          levels (NCP) {}", levels.join(" ")));
        lines.push(text);
    }
    for t in lines.iter().rev() {
        println!("{t}");
    }
}
