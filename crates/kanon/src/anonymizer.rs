//! The anonymiser: streaming input, the two algorithms, the output and its report.

use crate::encode::{collapse, ColumnIndex, Dict, SensDict, MAX_CODES, NONE};
use crate::error::Error;
use crate::global::global;
use crate::hierarchy::{Hierarchy, Leaf, NumPlan, Value};
use crate::mondrian::mondrian;
use crate::ranges::{ranges, Segs};
use crate::solution::{Gen, Solution};
use std::fmt;
use std::time::{Duration, Instant};

/// Most quasi columns an anonymiser takes.
pub const MAX_COLUMNS: usize = 64;

/// Which search the anonymiser runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Top-down greedy local recoding along the hierarchies (the default; see the crate docs).
    Mondrian,
    /// One level per column for the whole table, raised greedily (the baseline).
    GlobalRecoding,
    /// Mondrian with partition-local releases: binary cuts of each column's sorted values
    /// (categories in hierarchy order), each class released as its own range of values
    /// (`lo-hi`), its own set of categories, or the smallest hierarchy node covering its
    /// prefix codes; segment memberships are attributes it can split on. Never suppresses
    /// (except everything when the input has fewer than k subjects or l values).
    Ranges,
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Mondrian => "mondrian",
            Algorithm::GlobalRecoding => "global",
            Algorithm::Ranges => "ranges",
        })
    }
}

/// Anonymises a stream of records to k-anonymity (and optionally distinct l-diversity).
///
/// ```
/// use kanon::{Anonymizer, Hierarchy, Value};
/// let mut a = Anonymizer::new(
///     vec![("age", Hierarchy::integer_default()), ("zip", Hierarchy::prefix(5).unwrap())],
///     2, None, 0.0,
/// ).unwrap();
/// a.push(1, &[Value::Int(34), Value::Text("10115")], None).unwrap();
/// a.push(2, &[Value::Int(36), Value::Text("10117")], None).unwrap();
/// a.push(3, &[Value::Int(52), Value::Text("20095")], None).unwrap();
/// let out = a.run().unwrap();
/// assert!(out.report().k_reached >= 2);
/// assert_eq!(out.record(0), out.record(1));
/// ```
///
/// Records are `(subject, quasi values, sensitive value)`. The unit of anonymisation is the
/// **subject**: all rows of one subject land in the same class with identical output (or
/// are all suppressed), classes are sized in distinct subjects, and duplicates add nothing.
/// When a subject's rows differ in a column, the subject counts as the smallest node that
/// covers all of them (e.g. `1011*` for `10115` and `10117`). Its sensitive values are the
/// set over its rows.
///
/// Memory while records stream in: 8 bytes (subject) + 4 bytes per quasi column + 4 bytes
/// (only if sensitive values are given) per record, plus the dictionaries of distinct values.
/// No per-record string is kept. See the README for the peak during [`Anonymizer::run`].
#[derive(Clone, Debug)]
pub struct Anonymizer {
    names: Vec<String>,
    hierarchies: Vec<Hierarchy>,
    plans: Vec<Option<NumPlan>>,
    k: usize,
    l: Option<usize>,
    suppression_limit: f64,
    algorithm: Algorithm,
    subjects: Vec<i64>,
    codes: Vec<Vec<u32>>,
    dicts: Vec<Dict>,
    sens: Vec<u32>,
    sens_dict: SensDict,
    sens_missing: bool,
    segment_names: Vec<String>,
    segment_weight: f64,
    /// per record `seg_off[r]..seg_off[r+1]` in `seg_ids` (only when segments are declared)
    seg_off: Vec<u32>,
    seg_ids: Vec<u32>,
}

/// The default weight of a kept segment membership against information loss, see
/// [`Anonymizer::with_segment_weight`].
pub const DEFAULT_SEGMENT_WEIGHT: f64 = 2.0;

/// Constructor of the full-domain baseline: an [`Anonymizer`] running
/// [`Algorithm::GlobalRecoding`], with the same input, output and report.
pub struct GlobalRecoding;

impl GlobalRecoding {
    #[allow(clippy::new_ret_no_self)]
    pub fn new<S: Into<String>>(
        columns: Vec<(S, Hierarchy)>,
        k: usize,
        l: Option<usize>,
        suppression_limit: f64,
    ) -> Result<Anonymizer, Error> {
        Ok(Anonymizer::new(columns, k, l, suppression_limit)?
            .with_algorithm(Algorithm::GlobalRecoding))
    }
}

impl Anonymizer {
    /// An anonymiser for the given quasi columns. `k ≥ 1`; `l`, when set, `≥ 1` (every record
    /// must then carry a sensitive value); `suppression_limit` is the largest fraction of
    /// records (rows) that may be suppressed, in `[0, 1]`.
    pub fn new<S: Into<String>>(
        columns: Vec<(S, Hierarchy)>,
        k: usize,
        l: Option<usize>,
        suppression_limit: f64,
    ) -> Result<Anonymizer, Error> {
        let bad =
            |parameter: &'static str, reason: String| Error::InvalidParameter { parameter, reason };
        if k == 0 {
            return Err(bad("k", "must be at least 1".into()));
        }
        if l == Some(0) {
            return Err(bad("l", "must be at least 1 when given".into()));
        }
        if !(0.0..=1.0).contains(&suppression_limit) {
            return Err(bad(
                "suppression_limit",
                format!("{suppression_limit} is not a fraction in [0, 1]"),
            ));
        }
        if columns.len() > MAX_COLUMNS {
            return Err(bad(
                "columns",
                format!(
                    "{} quasi columns, at most {MAX_COLUMNS} are supported",
                    columns.len()
                ),
            ));
        }
        let mut names = Vec::with_capacity(columns.len());
        let mut hierarchies = Vec::with_capacity(columns.len());
        let mut plans = Vec::with_capacity(columns.len());
        for (name, h) in columns {
            let name: String = name.into();
            if names.contains(&name) {
                return Err(bad("columns", format!("column \"{name}\" is given twice")));
            }
            h.validate().map_err(|e| e.in_column(&name, None))?;
            if h.levels() > u16::MAX as usize {
                return Err(Error::InvalidHierarchy {
                    hierarchy: h.kind(),
                    reason: format!("{} levels, at most {} are supported", h.levels(), u16::MAX),
                }
                .in_column(&name, None));
            }
            plans.push(h.plan()?);
            names.push(name);
            hierarchies.push(h);
        }
        let dicts = hierarchies.iter().map(Dict::new).collect();
        let q = names.len();
        Ok(Anonymizer {
            names,
            hierarchies,
            plans,
            k,
            l,
            suppression_limit,
            algorithm: Algorithm::Mondrian,
            subjects: Vec::new(),
            codes: vec![Vec::new(); q],
            dicts,
            sens: Vec::new(),
            sens_dict: SensDict::default(),
            sens_missing: false,
            segment_names: Vec::new(),
            segment_weight: DEFAULT_SEGMENT_WEIGHT,
            seg_off: Vec::new(),
            seg_ids: Vec::new(),
        })
    }

    /// Declares segments (named sets of subjects, e.g. microsegments) whose memberships are
    /// released with the records: each record then carries the indexes of the segments its
    /// subject belongs to ([`Anonymizer::push_with`]), and every released class shows the
    /// segments **all** of its subjects belong to (never one a member is not in), so the
    /// released (quasi values, segments) of a class describe ≥ k subjects. With
    /// [`Algorithm::Ranges`] the memberships are also attributes the partitioning splits on,
    /// so subjects sharing segments end in the same classes; the other algorithms only
    /// intersect. The report counts the memberships kept. Must be called before any push.
    pub fn with_segments<S: Into<String>>(
        mut self,
        names: impl IntoIterator<Item = S>,
    ) -> Result<Anonymizer, Error> {
        let bad = |reason: String| Error::InvalidParameter {
            parameter: "segments",
            reason,
        };
        if !self.subjects.is_empty() {
            return Err(bad(
                "segments must be declared before the first record".into()
            ));
        }
        let mut list: Vec<String> = Vec::new();
        for n in names {
            let n: String = n.into();
            if list.contains(&n) {
                return Err(bad(format!("segment \"{n}\" is given twice")));
            }
            list.push(n);
        }
        if list.len() as u64 >= MAX_CODES {
            return Err(bad(format!("{} segments, at most {MAX_CODES}", list.len())));
        }
        self.seg_off = if list.is_empty() { Vec::new() } else { vec![0] };
        self.segment_names = list;
        Ok(self)
    }

    /// How much a kept segment membership is worth against information loss when the range
    /// algorithm chooses its cuts, in NCP units of one record and one column (the default
    /// [`DEFAULT_SEGMENT_WEIGHT`] = 2: keeping a membership is worth as much as releasing two
    /// of the record's values exactly instead of as `*`). 0 ignores memberships while
    /// partitioning (they are still intersected per class); larger values keep more
    /// memberships at the price of coarser quasi values. On UCI Adult (k = 10, 20 segments)
    /// weights 1, 2, 3 kept 81 %, 86 %, 88 % of the memberships at NCP 0.059, 0.066, 0.071.
    pub fn with_segment_weight(mut self, weight: f64) -> Result<Anonymizer, Error> {
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(Error::InvalidParameter {
                parameter: "segment_weight",
                reason: format!("{weight} is not a finite number ≥ 0"),
            });
        }
        self.segment_weight = weight;
        Ok(self)
    }

    /// The declared segments.
    pub fn segments(&self) -> &[String] {
        &self.segment_names
    }

    /// Chooses the algorithm ([`Algorithm::Mondrian`] by default).
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Anonymizer {
        self.algorithm = algorithm;
        self
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The quasi columns.
    pub fn columns(&self) -> impl Iterator<Item = (&str, &Hierarchy)> {
        self.names.iter().map(String::as_str).zip(&self.hierarchies)
    }

    /// Reserves room for `additional` more records, so the record store grows once instead
    /// of doubling (doubling can leave up to 2× the needed capacity while records stream in).
    pub fn reserve(&mut self, additional: usize) {
        self.subjects.reserve_exact(additional);
        for c in &mut self.codes {
            c.reserve_exact(additional);
        }
    }

    /// Records pushed so far.
    pub fn len(&self) -> usize {
        self.subjects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subjects.is_empty()
    }

    /// Adds one record. `values` holds one value per quasi column, in column order. A record
    /// with an error is not added (nothing of it is kept).
    pub fn push(
        &mut self,
        subject: i64,
        values: &[Value<'_>],
        sensitive: Option<&str>,
    ) -> Result<(), Error> {
        self.push_with(subject, values, sensitive, &[])
    }

    /// Adds one record with the segments its subject belongs to (indexes into the names given
    /// to [`Anonymizer::with_segments`], any order, repeats ignored). A subject with several
    /// records belongs to the union of their segments.
    pub fn push_with(
        &mut self,
        subject: i64,
        values: &[Value<'_>],
        sensitive: Option<&str>,
        segments: &[u32],
    ) -> Result<(), Error> {
        let record = self.subjects.len() as u64;
        if let Some(&bad) = segments
            .iter()
            .find(|&&s| s as usize >= self.segment_names.len())
        {
            return Err(Error::InvalidParameter {
                parameter: "segments",
                reason: format!(
                    "record {record} names segment {bad}, but {} segments are declared",
                    self.segment_names.len()
                ),
            });
        }
        let q = self.names.len();
        if values.len() != q {
            return Err(Error::Arity {
                record,
                expected: q,
                found: values.len(),
            });
        }
        if record >= MAX_CODES {
            return Err(Error::TooLarge {
                what: "records",
                limit: MAX_CODES,
            });
        }
        if self.l.is_some() && sensitive.is_none() {
            return Err(Error::MissingSensitive { record });
        }
        let mut leaves = [Leaf::Int(0); MAX_COLUMNS];
        for c in 0..q {
            let h = &self.hierarchies[c];
            leaves[c] = h
                .leaf_planned(self.plans[c].as_ref(), &values[c])
                .map_err(|e| e.in_column(&self.names[c], Some(record)))?;
            if !self.dicts[c].has_room() {
                return Err(Error::TooLarge {
                    what: "distinct values in one column",
                    limit: MAX_CODES,
                }
                .in_column(&self.names[c], Some(record)));
            }
        }
        // from here on nothing fails except the sensitive dictionary, checked first
        match sensitive {
            Some(s) => {
                let code = self.sens_dict.code(s).ok_or(Error::TooLarge {
                    what: "distinct sensitive values",
                    limit: MAX_CODES,
                })?;
                if self.sens.len() < record as usize {
                    self.sens.resize(record as usize, NONE);
                }
                self.sens.push(code);
            }
            None => {
                self.sens_missing = true;
                if !self.sens.is_empty() {
                    self.sens.push(NONE);
                }
            }
        }
        for c in 0..q {
            let code = self.dicts[c].code(&self.hierarchies[c], &leaves[c]);
            self.codes[c].push(code);
        }
        self.subjects.push(subject);
        if !self.segment_names.is_empty() {
            let start = self.seg_ids.len();
            self.seg_ids.extend_from_slice(segments);
            self.seg_ids[start..].sort_unstable();
            let mut w = start;
            for r in start..self.seg_ids.len() {
                if w == start || self.seg_ids[r] != self.seg_ids[w - 1] {
                    self.seg_ids[w] = self.seg_ids[r];
                    w += 1;
                }
            }
            self.seg_ids.truncate(w);
            self.seg_off.push(w as u32);
        }
        Ok(())
    }

    /// Adds one record given as text, parsed per column with [`Hierarchy::parse`].
    pub fn push_text(
        &mut self,
        subject: i64,
        values: &[&str],
        sensitive: Option<&str>,
    ) -> Result<(), Error> {
        let record = self.subjects.len() as u64;
        let q = self.names.len();
        if values.len() != q {
            return Err(Error::Arity {
                record,
                expected: q,
                found: values.len(),
            });
        }
        let mut parsed = [Value::Int(0); MAX_COLUMNS];
        for c in 0..q {
            parsed[c] = self.hierarchies[c]
                .parse(values[c])
                .map_err(|e| e.in_column(&self.names[c], Some(record)))?;
        }
        self.push(subject, &parsed[..q], sensitive)
    }

    /// Adds one record given as text where `None` is NULL (a value of every hierarchy, see
    /// [`Value::Null`]); the rest is parsed per column with [`Hierarchy::parse`].
    pub fn push_text_nullable(
        &mut self,
        subject: i64,
        values: &[Option<&str>],
        sensitive: Option<&str>,
    ) -> Result<(), Error> {
        self.push_text_with(subject, values, sensitive, &[])
    }

    /// [`Anonymizer::push_text_nullable`] with the subject's segments, as
    /// [`Anonymizer::push_with`].
    pub fn push_text_with(
        &mut self,
        subject: i64,
        values: &[Option<&str>],
        sensitive: Option<&str>,
        segments: &[u32],
    ) -> Result<(), Error> {
        let record = self.subjects.len() as u64;
        let q = self.names.len();
        if values.len() != q {
            return Err(Error::Arity {
                record,
                expected: q,
                found: values.len(),
            });
        }
        let mut parsed = [Value::Null; MAX_COLUMNS];
        for c in 0..q {
            if let Some(text) = values[c] {
                parsed[c] = self.hierarchies[c]
                    .parse(text)
                    .map_err(|e| e.in_column(&self.names[c], Some(record)))?;
            }
        }
        self.push_with(subject, &parsed[..q], sensitive, segments)
    }

    /// Adds every record of an iterator of `(subject, values, sensitive)`; stops at the first
    /// error (the records before it stay added).
    pub fn push_all<'v, I, V>(&mut self, records: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = (i64, V, Option<&'v str>)>,
        V: AsRef<[Value<'v>]>,
    {
        for (s, v, sens) in records {
            self.push(s, v.as_ref(), sens)?;
        }
        Ok(())
    }

    /// Approximate heap bytes held by the pushed records and the dictionaries.
    pub fn memory_bytes(&self) -> usize {
        self.subjects.capacity() * 8
            + self.codes.iter().map(|c| c.capacity() * 4).sum::<usize>()
            + self.sens.capacity() * 4
            + (self.seg_off.capacity() + self.seg_ids.capacity()) * 4
            + self.dicts.iter().map(Dict::heap_bytes).sum::<usize>()
            + self.sens_dict.map.capacity() * 17
            + self
                .sens_dict
                .map
                .keys()
                .map(|s| s.len() + 16)
                .sum::<usize>()
    }

    /// Runs the anonymisation over everything pushed.
    pub fn run(self) -> Result<Anonymized, Error> {
        let started = Instant::now();
        let Anonymizer {
            names,
            hierarchies,
            k,
            l,
            suppression_limit,
            algorithm,
            subjects,
            mut codes,
            dicts,
            sens,
            sens_dict,
            sens_missing,
            segment_names,
            segment_weight,
            seg_off,
            seg_ids,
            ..
        } = self;
        let records = subjects.len();
        let q = names.len();
        let budget = (suppression_limit * records as f64).floor() as u64;
        let mut cols = Vec::with_capacity(q);
        for (c, dict) in dicts.into_iter().enumerate() {
            cols.push(
                ColumnIndex::build(&hierarchies[c], dict, &mut codes[c])
                    .map_err(|e| e.in_column(&names[c], None))?,
            );
        }
        let has_sens = records > 0 && !sens_missing && sens.len() == records;
        let n_sens = sens_dict.map.len() as u32;
        drop(sens_dict);
        let (el, row_elem) = collapse(&subjects, codes, has_sens.then_some(sens), n_sens);
        let n_subjects = el.n;
        let segs = element_segments(
            segment_names.len(),
            seg_off,
            seg_ids,
            row_elem.as_deref(),
            el.n,
        );
        let sol = match algorithm {
            Algorithm::Mondrian if segs.n_segs > 0 && segment_weight > 0.0 => {
                // the largest segments (as many as the column limit leaves room for) become
                // two-leaf columns the partitioning can split on; the build below keeps only
                // the quasi columns of every class
                let (seg_cols, el) = segment_columns(&segs, el, MAX_COLUMNS - q)?;
                let mut all: Vec<ColumnIndex> = cols.clone();
                all.extend(seg_cols);
                mondrian(&all, el, k, l, budget, q, segment_weight)
            }
            Algorithm::Mondrian => mondrian(&cols, el, k, l, budget, q, 0.0),
            Algorithm::GlobalRecoding => global(&cols, el, k, l, budget).0,
            Algorithm::Ranges => ranges(&cols, el, &segs, segment_weight, k, l),
        };
        Ok(build(
            &cols,
            names,
            subjects,
            row_elem,
            n_subjects,
            has_sens,
            sol,
            segment_names,
            &segs,
            algorithm,
            k,
            l,
            suppression_limit,
            budget,
            started,
        ))
    }
}

/// Levels a column was generalised to, over the released classes.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnLevels {
    pub column: String,
    /// Lowest and highest level of a released class (both the top when nothing is released).
    pub min: usize,
    pub max: usize,
    /// The hierarchy's top level (`*`).
    pub top: usize,
    /// This column's NCP: mean over records of the fraction of its domain the released node
    /// covers (suppressed records: 1). The report's `ncp` is the mean of these.
    pub ncp: f64,
}

/// What an anonymisation reached.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub algorithm: Algorithm,
    pub k_required: usize,
    pub l_required: Option<usize>,
    pub suppression_limit: f64,
    /// Records (rows) the limit allows to suppress: ⌊limit × records⌋.
    pub suppression_budget: usize,
    /// Minimum distinct subjects over the released classes; 0 when nothing is released.
    pub k_reached: usize,
    /// Minimum distinct sensitive values over the released classes (0 when nothing is
    /// released); `None` when not every record carried a sensitive value.
    pub l_reached: Option<usize>,
    pub records: usize,
    pub subjects: usize,
    /// Released equivalence classes.
    pub classes: usize,
    pub suppressed_records: usize,
    pub suppressed_subjects: usize,
    /// Normalised certainty penalty in [0, 1]: the mean over records and columns of the
    /// fraction of the column's domain the released node covers (suppressed records: 1).
    pub ncp: f64,
    /// Discernibility: Σ (rows of a class)² + suppressed records × records.
    pub discernibility: u64,
    pub levels_used: Vec<ColumnLevels>,
    /// Segment memberships of all subjects (a subject in three segments has three), counted
    /// once per subject; 0 when no segments are declared.
    pub memberships: usize,
    /// Memberships a released class shows (suppressed subjects keep none).
    pub memberships_kept: usize,
    /// Per declared segment: its members and how many of them the release shows as members.
    pub segments: Vec<SegmentKept>,
    /// Time of [`Anonymizer::run`] (dictionary sorting, search, output), not of the input.
    pub elapsed: Duration,
}

/// How many members of one segment a release still shows as members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentKept {
    pub segment: String,
    /// Subjects in the segment.
    pub members: usize,
    /// Of them, those whose released class shows the segment.
    pub kept: usize,
}

impl Report {
    /// Fraction of the segment memberships the release keeps (1 when there are none).
    pub fn memberships_kept_fraction(&self) -> f64 {
        if self.memberships == 0 {
            1.0
        } else {
            self.memberships_kept as f64 / self.memberships as f64
        }
    }

    /// Fraction of records suppressed (0 for no records).
    pub fn suppressed_fraction(&self) -> f64 {
        if self.records == 0 {
            0.0
        } else {
            self.suppressed_records as f64 / self.records as f64
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: k {} (required {}), {} classes, {} of {} records suppressed ({:.3}%), NCP {:.4}, DM {}, {:.3} s",
            self.algorithm,
            self.k_reached,
            self.k_required,
            self.classes,
            self.suppressed_records,
            self.records,
            100.0 * self.suppressed_fraction(),
            self.ncp,
            self.discernibility,
            self.elapsed.as_secs_f64()
        )?;
        if let Some(l) = self.l_reached {
            write!(f, ", l {l}")?;
        }
        if !self.segments.is_empty() {
            write!(
                f,
                ", memberships kept {} of {} ({:.1}%)",
                self.memberships_kept,
                self.memberships,
                100.0 * self.memberships_kept_fraction()
            )?;
        }
        Ok(())
    }
}

/// One released equivalence class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Class {
    /// The generalised values, one per quasi column (hierarchy textual forms).
    pub key: Vec<String>,
    /// The level of each value in its hierarchy.
    pub levels: Vec<usize>,
    pub subjects: usize,
    pub records: usize,
    /// Distinct sensitive values (`None` when not every record carried one).
    pub sensitive_values: Option<usize>,
    /// The segments all of its subjects belong to (indexes into the declared segments,
    /// ascending); empty when none are declared.
    pub segments: Vec<usize>,
}

/// The result of [`Anonymizer::run`]: per input record (in push order) its class or
/// suppression, the classes, and the report. Strings exist once per class, not per record.
#[derive(Clone, Debug)]
pub struct Anonymized {
    columns: Vec<String>,
    segment_names: Vec<String>,
    classes: Vec<Class>,
    record_class: Vec<u32>,
    subjects: Vec<i64>,
    report: Report,
}

impl Anonymized {
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The quasi column names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The declared segments (what [`Class::segments`] indexes).
    pub fn segment_names(&self) -> &[String] {
        &self.segment_names
    }

    /// The released segments of record `i` (those all of its class belong to), `None` if it
    /// is suppressed.
    pub fn segments(&self, i: usize) -> Option<&[usize]> {
        self.class_of(i)
            .map(|c| self.classes[c].segments.as_slice())
    }

    /// The released classes.
    pub fn classes(&self) -> &[Class] {
        &self.classes
    }

    /// Number of input records.
    pub fn len(&self) -> usize {
        self.record_class.len()
    }

    pub fn is_empty(&self) -> bool {
        self.record_class.is_empty()
    }

    /// The generalised values of record `i` (push order), `None` if it is suppressed.
    pub fn record(&self, i: usize) -> Option<&[String]> {
        self.class_of(i).map(|c| self.classes[c].key.as_slice())
    }

    /// The class of record `i`, `None` if it is suppressed.
    pub fn class_of(&self, i: usize) -> Option<usize> {
        let c = self.record_class[i];
        (c != NONE).then_some(c as usize)
    }

    /// The subject of record `i`.
    pub fn subject(&self, i: usize) -> i64 {
        self.subjects[i]
    }

    /// `(subject, generalised values or None)` for every record, in push order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, Option<&[String]>)> + '_ {
        (0..self.len()).map(|i| (self.subjects[i], self.record(i)))
    }
}

#[allow(clippy::too_many_arguments)]
fn build(
    cols: &[ColumnIndex],
    names: Vec<String>,
    subjects: Vec<i64>,
    row_elem: Option<Vec<u32>>,
    n_subjects: usize,
    has_sens: bool,
    sol: Solution,
    segment_names: Vec<String>,
    segs: &Segs,
    algorithm: Algorithm,
    k: usize,
    l: Option<usize>,
    suppression_limit: f64,
    budget: u64,
    started: Instant,
) -> Anonymized {
    let q = cols.len();
    let records = subjects.len();
    let mut classes = Vec::with_capacity(sol.classes.len());
    let mut kept_ncp = 0.0;
    let mut dm: u64 = 0;
    let mut released_rows: u64 = 0;
    let mut levels_used: Vec<ColumnLevels> = names
        .iter()
        .zip(cols)
        .map(|(n, c)| ColumnLevels {
            column: n.clone(),
            min: usize::MAX,
            max: 0,
            top: c.top,
            ncp: 0.0,
        })
        .collect();
    for sc in &sol.classes {
        let mut key = Vec::with_capacity(q);
        let mut levels = Vec::with_capacity(q);
        let mut per = 0.0;
        for c in 0..q {
            let (text, x, lv) = match sc.gens.get(c) {
                None => {
                    let nd = sc.nodes[c];
                    let lv = nd.level as usize;
                    (cols[c].label(lv, nd.id), cols[c].ncp(lv, nd.id), lv)
                }
                Some(g) => {
                    let (text, x) = cols[c].gen_label(g);
                    (text, x, gen_level(&cols[c], g))
                }
            };
            key.push(text);
            levels.push(lv);
            per += x;
            levels_used[c].ncp += sc.rows as f64 * x;
            levels_used[c].min = levels_used[c].min.min(lv);
            levels_used[c].max = levels_used[c].max.max(lv);
        }
        kept_ncp += sc.rows as f64 * per;
        dm = dm.saturating_add(sc.rows.saturating_mul(sc.rows));
        released_rows += sc.rows;
        classes.push(Class {
            key,
            levels,
            subjects: sc.subjects as usize,
            records: sc.rows as usize,
            sensitive_values: has_sens.then_some(sc.sensitive as usize),
            segments: Vec::new(),
        });
    }
    // segments: a class shows those all of its subjects belong to
    let n_segs = segment_names.len();
    let mut per_segment = vec![(0usize, 0usize); n_segs];
    let (mut memberships, mut kept) = (0usize, 0usize);
    if n_segs > 0 {
        let mut pairs: Vec<(u32, u32)> = Vec::new();
        for (e, &c) in sol.element_class.iter().enumerate() {
            for &sg in segs.of(e) {
                per_segment[sg as usize].0 += 1;
                if c != NONE {
                    pairs.push((c, sg));
                }
            }
        }
        memberships = per_segment.iter().map(|p| p.0).sum();
        pairs.sort_unstable();
        let mut i = 0;
        while i < pairs.len() {
            let mut j = i;
            while j < pairs.len() && pairs[j] == pairs[i] {
                j += 1;
            }
            let (c, sg) = pairs[i];
            let class = &mut classes[c as usize];
            if (j - i) == class.subjects {
                class.segments.push(sg as usize);
                per_segment[sg as usize].1 += j - i;
                kept += j - i;
            }
            i = j;
        }
    }
    let suppressed_records = records as u64 - released_rows;
    for lu in &mut levels_used {
        if lu.min == usize::MAX {
            lu.min = lu.top;
            lu.max = lu.top;
        }
        lu.ncp = if records == 0 {
            0.0
        } else {
            (lu.ncp + suppressed_records as f64) / records as f64
        };
    }
    let suppressed_subjects = sol.element_class.iter().filter(|&&c| c == NONE).count();
    dm = dm.saturating_add(suppressed_records.saturating_mul(records as u64));
    let ncp = if records == 0 {
        0.0
    } else if q == 0 {
        suppressed_records as f64 / records as f64
    } else {
        (kept_ncp + (suppressed_records as f64) * q as f64) / (records as f64 * q as f64)
    };
    let record_class: Vec<u32> = match &row_elem {
        None => sol.element_class,
        Some(re) => re.iter().map(|&e| sol.element_class[e as usize]).collect(),
    };
    let report = Report {
        algorithm,
        k_required: k,
        l_required: l,
        suppression_limit,
        suppression_budget: budget as usize,
        k_reached: classes.iter().map(|c| c.subjects).min().unwrap_or(0),
        l_reached: has_sens.then(|| {
            classes
                .iter()
                .map(|c| c.sensitive_values.unwrap_or(0))
                .min()
                .unwrap_or(0)
        }),
        records,
        subjects: n_subjects,
        classes: classes.len(),
        suppressed_records: suppressed_records as usize,
        suppressed_subjects,
        ncp,
        discernibility: dm,
        levels_used,
        memberships,
        memberships_kept: kept,
        segments: segment_names
            .iter()
            .zip(&per_segment)
            .map(|(name, &(members, kept))| SegmentKept {
                segment: name.clone(),
                members,
                kept,
            })
            .collect(),
        elapsed: started.elapsed(),
    };
    Anonymized {
        columns: names,
        segment_names,
        classes,
        record_class,
        subjects,
        report,
    }
}

/// The level a partition-local release is reported at: the node's level, 0 for an exact
/// value, else the level of the smallest hierarchy node covering it.
fn gen_level(col: &ColumnIndex, g: &Gen) -> usize {
    let (a, b) = match g {
        Gen::Node(n) => return n.level as usize,
        Gen::Range { lo, hi } => (*lo, *hi),
        Gen::Set(codes) => (codes[0], codes[codes.len() - 1]),
    };
    crate::ranges::cover(col, a, b).0
}

/// Two-leaf categorical columns (`0`, `1` under `*`) for the `room` segments with the most
/// members, appended to the elements' codes (code 1: member).
fn segment_columns(
    segs: &Segs,
    mut el: crate::encode::Elements,
    room: usize,
) -> Result<(Vec<ColumnIndex>, crate::encode::Elements), Error> {
    let mut members = vec![0usize; segs.n_segs];
    for &sg in &segs.ids {
        members[sg as usize] += 1;
    }
    let mut order: Vec<usize> = (0..segs.n_segs).filter(|&s| members[s] > 0).collect();
    order.sort_by(|&a, &b| members[b].cmp(&members[a]).then(a.cmp(&b)));
    order.truncate(room);
    let h = Hierarchy::categorical([("0", "*"), ("1", "*")])?;
    let mut cols = Vec::with_capacity(order.len());
    for sg in order {
        let mut codes: Vec<u32> = (0..el.n)
            .map(|e| segs.of(e).binary_search(&(sg as u32)).is_ok() as u32)
            .collect();
        cols.push(ColumnIndex::build(
            &h,
            crate::encode::Dict::Cat { null: false },
            &mut codes,
        )?);
        if !el.hi.is_empty() {
            el.hi.push(codes.clone());
        }
        el.codes.push(codes);
    }
    Ok((cols, el))
}

/// The segments of every element (the union over a subject's rows).
fn element_segments(
    n_segs: usize,
    seg_off: Vec<u32>,
    seg_ids: Vec<u32>,
    row_elem: Option<&[u32]>,
    n_elements: usize,
) -> Segs {
    if n_segs == 0 {
        return Segs::default();
    }
    let Some(re) = row_elem else {
        return Segs {
            n_segs,
            off: seg_off,
            ids: seg_ids,
        };
    };
    let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(seg_ids.len());
    for (r, &e) in re.iter().enumerate() {
        for &sg in &seg_ids[seg_off[r] as usize..seg_off[r + 1] as usize] {
            pairs.push((e, sg));
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    let mut off = vec![0u32; n_elements + 1];
    for &(e, _) in &pairs {
        off[e as usize + 1] += 1;
    }
    for e in 0..n_elements {
        off[e + 1] += off[e];
    }
    Segs {
        n_segs,
        off,
        ids: pairs.into_iter().map(|(_, sg)| sg).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<(&'static str, Hierarchy)> {
        vec![
            ("age", Hierarchy::integer_default()),
            ("zip", Hierarchy::prefix(5).unwrap()),
        ]
    }

    #[test]
    fn parameters_are_checked() {
        assert!(matches!(
            Anonymizer::new(cols(), 0, None, 0.0),
            Err(Error::InvalidParameter { parameter: "k", .. })
        ));
        assert!(matches!(
            Anonymizer::new(cols(), 2, Some(0), 0.0),
            Err(Error::InvalidParameter { parameter: "l", .. })
        ));
        for lim in [-0.1, 1.5, f64::NAN] {
            assert!(matches!(
                Anonymizer::new(cols(), 2, None, lim),
                Err(Error::InvalidParameter {
                    parameter: "suppression_limit",
                    ..
                })
            ));
        }
        let dup = vec![("a", Hierarchy::date()), ("a", Hierarchy::date())];
        assert!(matches!(
            Anonymizer::new(dup, 2, None, 0.0),
            Err(Error::InvalidParameter {
                parameter: "columns",
                ..
            })
        ));
        let bad = vec![("a", Hierarchy::Integer { widths: vec![3, 4] })];
        match Anonymizer::new(bad, 2, None, 0.0) {
            Err(e @ Error::InColumn { .. }) => {
                assert!(matches!(e.root_cause(), Error::InvalidHierarchy { .. }))
            }
            other => panic!("{other:?}"),
        }
        let many: Vec<(String, Hierarchy)> = (0..65)
            .map(|i| (format!("c{i}"), Hierarchy::date()))
            .collect();
        assert!(Anonymizer::new(many, 2, None, 0.0).is_err());
    }

    #[test]
    fn push_errors_leave_nothing_behind() {
        let mut a = Anonymizer::new(cols(), 2, None, 0.0).unwrap();
        assert!(matches!(
            a.push(1, &[Value::Int(3)], None),
            Err(Error::Arity {
                record: 0,
                expected: 2,
                found: 1
            })
        ));
        match a.push(1, &[Value::Int(3), Value::Text("123")], None) {
            Err(Error::InColumn {
                column,
                record: Some(0),
                ..
            }) => assert_eq!(column, "zip"),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.len(), 0);
        assert!(a.push_text(1, &["x", "10115"], None).is_err());
        a.push_text(1, &["34", "10115"], None).unwrap();
        assert_eq!(a.len(), 1);
        let mut b = Anonymizer::new(cols(), 2, Some(2), 0.0).unwrap();
        assert_eq!(
            b.push(1, &[Value::Int(3), Value::Text("10115")], None),
            Err(Error::MissingSensitive { record: 0 })
        );
    }

    #[test]
    fn empty_input() {
        let out = Anonymizer::new(cols(), 2, None, 0.0)
            .unwrap()
            .run()
            .unwrap();
        let r = out.report();
        assert_eq!(
            (
                r.records,
                r.subjects,
                r.classes,
                r.k_reached,
                r.suppressed_records
            ),
            (0, 0, 0, 0, 0)
        );
        assert_eq!(r.ncp, 0.0);
        assert!(out.is_empty());
        let out = GlobalRecoding::new(cols(), 2, None, 0.0)
            .unwrap()
            .run()
            .unwrap();
        assert_eq!(out.report().records, 0);
    }

    #[test]
    fn too_few_subjects_suppresses_everything() {
        for alg in [Algorithm::Mondrian, Algorithm::GlobalRecoding] {
            let mut a = Anonymizer::new(cols(), 3, None, 0.0)
                .unwrap()
                .with_algorithm(alg);
            // three rows but only two subjects
            a.push(1, &[Value::Int(30), Value::Text("10115")], None)
                .unwrap();
            a.push(1, &[Value::Int(30), Value::Text("10115")], None)
                .unwrap();
            a.push(2, &[Value::Int(31), Value::Text("10117")], None)
                .unwrap();
            let out = a.run().unwrap();
            let r = out.report();
            assert_eq!(
                (
                    r.k_reached,
                    r.classes,
                    r.suppressed_records,
                    r.suppressed_subjects
                ),
                (0, 0, 3, 2),
                "{alg}"
            );
            assert_eq!(r.ncp, 1.0);
            assert_eq!(r.discernibility, 9);
            assert!(out.iter().all(|(_, v)| v.is_none()));
            assert_eq!(r.levels_used[0].min, r.levels_used[0].top);
        }
    }

    #[test]
    fn small_example() {
        let mut a = Anonymizer::new(cols(), 2, None, 0.0).unwrap();
        let rows = [
            (1, 34, "10115"),
            (2, 36, "10117"),
            (3, 52, "20095"),
            (4, 57, "20097"),
            (5, 58, "20099"),
        ];
        for (s, age, zip) in rows {
            a.push(s, &[Value::Int(age), Value::Text(zip)], None)
                .unwrap();
        }
        let out = a.run().unwrap();
        let r = out.report().clone();
        assert_eq!(r.k_reached, 2);
        assert_eq!(r.suppressed_records, 0);
        assert_eq!(out.record(0).unwrap(), ["30-39", "1011*"]);
        assert_eq!(out.record(1), out.record(0));
        assert_eq!(out.record(2).unwrap(), ["50-59", "2009*"]);
        assert_eq!(r.discernibility, 4 + 9);
        assert!(r.ncp > 0.0 && r.ncp < 1.0);
        assert_eq!(out.subject(4), 5);
    }

    #[test]
    fn subject_rows_share_one_class() {
        let mut a = Anonymizer::new(cols(), 2, None, 0.0).unwrap();
        a.push(7, &[Value::Int(30), Value::Text("10115")], None)
            .unwrap();
        a.push(8, &[Value::Int(31), Value::Text("10119")], None)
            .unwrap();
        a.push(7, &[Value::Int(30), Value::Text("10117")], None)
            .unwrap();
        a.push(9, &[Value::Int(33), Value::Text("10111")], None)
            .unwrap();
        let out = a.run().unwrap();
        assert_eq!(out.report().subjects, 3);
        assert_eq!(out.record(0), out.record(2));
        assert!(out.report().k_reached >= 2);
    }

    #[test]
    fn no_quasi_columns_and_constant_columns() {
        for alg in [Algorithm::Mondrian, Algorithm::GlobalRecoding] {
            let mut a = Anonymizer::new(Vec::<(&str, Hierarchy)>::new(), 2, None, 0.0)
                .unwrap()
                .with_algorithm(alg);
            a.push(1, &[], None).unwrap();
            a.push(2, &[], None).unwrap();
            let out = a.run().unwrap();
            assert_eq!(
                (out.report().k_reached, out.report().classes),
                (2, 1),
                "{alg}"
            );
            assert_eq!(out.record(0), Some(&[][..]));

            // a column with one value costs nothing once it is out of `*`
            let cols = vec![
                ("d", Hierarchy::date()),
                ("x", Hierarchy::numeric(vec![0.5]).unwrap()),
            ];
            let mut a = Anonymizer::new(cols, 2, None, 0.0)
                .unwrap()
                .with_algorithm(alg);
            for s in 0..4 {
                a.push(s, &[Value::Int(1000), Value::Num(2.5)], None)
                    .unwrap();
            }
            let out = a.run().unwrap();
            if alg == Algorithm::Mondrian {
                assert_eq!(out.record(0).unwrap(), ["1972-09-27", "2.5"]);
                assert_eq!(out.report().ncp, 0.0);
            }
            assert_eq!(out.report().k_reached, 4);
        }
    }

    #[test]
    fn suppression_is_used_only_within_the_limit() {
        // 20 subjects in one postcode area and 1 far away: with a budget of 1 row the
        // outlier is suppressed, without a budget everybody stays at a coarser level
        let cols = vec![("zip", Hierarchy::prefix(5).unwrap())];
        let run = |limit: f64| {
            let mut a = Anonymizer::new(cols.clone(), 5, None, limit).unwrap();
            for s in 0..20 {
                a.push(s, &[Value::Text(&format!("101{:02}", s % 4))], None)
                    .unwrap();
            }
            a.push(99, &[Value::Text("99999")], None).unwrap();
            a.run().unwrap()
        };
        let strict = run(0.0);
        assert_eq!(strict.report().suppressed_records, 0);
        assert_eq!(strict.record(20).unwrap(), ["*"]);
        let loose = run(0.05);
        assert_eq!(loose.report().suppressed_records, 1);
        assert_eq!(loose.record(20), None);
        assert!(loose.report().ncp < strict.report().ncp);
        assert_eq!(loose.report().suppression_budget, 1);
    }

    #[test]
    fn null_is_a_value_not_a_reason_to_suppress() {
        let cols = vec![
            ("age", Hierarchy::integer(vec![10]).unwrap()),
            (
                "job",
                Hierarchy::categorical([
                    ("nurse", "health"),
                    ("surgeon", "health"),
                    ("health", "*"),
                    ("welder", "*"),
                ])
                .unwrap(),
            ),
        ];
        // 6 subjects without a job, 6 nurses, 1 without an age: nothing is suppressed, the
        // NULL job is a class of its own, the lone NULL age generalises to *
        let mut a = Anonymizer::new(cols.clone(), 3, None, 0.0).unwrap();
        for s in 0..6 {
            a.push(s, &[Value::Int(30 + s), Value::Null], None).unwrap();
        }
        for s in 6..12 {
            a.push(s, &[Value::Int(30 + s), Value::Text("nurse")], None)
                .unwrap();
        }
        a.push_text_nullable(12, &[None, Some("nurse")], None)
            .unwrap();
        let out = a.run().unwrap();
        let r = out.report();
        assert_eq!(r.suppressed_records, 0);
        assert!(r.k_reached >= 3);
        assert_eq!(out.record(0).unwrap()[1], crate::NULL_LABEL);
        assert_eq!(out.record(6).unwrap()[1], "nurse");
        assert_eq!(out.record(12).unwrap()[0], "*");
        // job: NULL and nurse are the two observed values, both released exactly
        assert_eq!(r.levels_used[1].ncp, 0.0);
        // NULL as text: parse never yields it, push_text_nullable does
        let mut b = Anonymizer::new(cols, 2, None, 0.0).unwrap();
        assert!(b.push_text(1, &["NULL", "nurse"], None).is_err());
        assert!(b.push_text_nullable(1, &[Some("x"), None], None).is_err());
        assert!(b.push_text_nullable(1, &[None], None).is_err());
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn categorical_loss_counts_observed_values() {
        // 4 declared leaves, 2 observed: a class at * spans both observed values, NCP 1; a
        // leaf nobody holds does not dilute the loss
        let cols = vec![(
            "job",
            Hierarchy::categorical([("a", "*"), ("b", "*"), ("c", "*"), ("d", "*")]).unwrap(),
        )];
        let mut a = Anonymizer::new(cols, 4, None, 0.0).unwrap();
        for s in 0..4 {
            a.push(s, &[Value::Text(if s % 2 == 0 { "a" } else { "b" })], None)
                .unwrap();
        }
        let out = a.run().unwrap();
        assert_eq!(out.record(0).unwrap(), ["*"]);
        assert_eq!(out.report().ncp, 1.0);
    }

    #[test]
    fn ranges_release_their_own_ranges_and_sets() {
        let job = Hierarchy::categorical([
            ("nurse", "health"),
            ("surgeon", "health"),
            ("paramedic", "health"),
            ("teacher", "education"),
            ("health", "*"),
            ("education", "*"),
        ])
        .unwrap();
        let cols = vec![
            ("age", Hierarchy::integer_default()),
            ("job", job.clone()),
            ("score", Hierarchy::numeric(vec![1.0]).unwrap()),
            ("born", Hierarchy::date()),
            ("zip", Hierarchy::prefix(5).unwrap()),
            ("other", job.clone()),
        ];
        type Row<'a> = (i64, &'a str, f64, &'a str, &'a str, Option<&'a str>);
        let rows: [Row<'_>; 8] = [
            (31, "nurse", 1.5, "1987-03-14", "10115", Some("nurse")),
            (33, "surgeon", 2.25, "1987-05-01", "10117", None),
            (35, "nurse", 2.0, "1987-04-01", "10119", Some("teacher")),
            (37, "surgeon", 1.75, "1987-04-11", "10128", Some("teacher")),
            (60, "teacher", 9.0, "1960-01-01", "20095", Some("paramedic")),
            (61, "teacher", 9.5, "1961-01-01", "20095", Some("paramedic")),
            (62, "teacher", 9.0, "1962-01-01", "20097", Some("paramedic")),
            (63, "teacher", 9.5, "1963-01-01", "20099", Some("paramedic")),
        ];
        let mut a = Anonymizer::new(cols.clone(), 4, None, 0.0)
            .unwrap()
            .with_algorithm(Algorithm::Ranges);
        for (s, (age, j, x, d, z, o)) in rows.iter().enumerate() {
            let age = age.to_string();
            let x = x.to_string();
            a.push_text_nullable(
                s as i64,
                &[Some(&age), Some(j), Some(&x), Some(d), Some(z), *o],
                None,
            )
            .unwrap();
        }
        let out = a.run().unwrap();
        // two classes of four: each column released as the members' own span
        let key = out.record(0).unwrap();
        assert_eq!(
            key,
            [
                "31-37",
                "health", // nurse and surgeon: every observed leaf of health
                "[1.5,2.25]",
                "1987-03-14/1987-05-01",
                "101**",
                "education|nurse|NULL", // a set with NULL; teacher is all of education
            ]
        );
        assert_eq!(
            out.record(4).unwrap(),
            [
                "60-63",
                "teacher",
                "[9,9.5]",
                "1960-01-01/1963-01-01",
                "2009*",
                "paramedic"
            ]
        );
        let r = out.report();
        assert_eq!((r.k_reached, r.classes, r.suppressed_records), (4, 2, 0));
        // age: 6 and 3 of 32 years; job: 2 of 3 observed values, then 1
        assert!((r.levels_used[0].ncp - 0.5 * (6.0 + 3.0) / 32.0).abs() < 1e-12);
        assert!((r.levels_used[1].ncp - 0.5 * 0.5).abs() < 1e-12);
        // a class holding every observed value prints *
        assert!(cols[1].1.covers("*", &Value::Text("nurse")).unwrap());
        for (c, (_, h)) in cols.iter().enumerate() {
            for (i, (age, j, x, d, z, o)) in rows.into_iter().enumerate() {
                let key = out.record(i).unwrap();
                let v = match c {
                    0 => Value::Int(age),
                    1 => Value::Text(j),
                    2 => Value::Num(x),
                    3 => h.parse(d).unwrap(),
                    4 => Value::Text(z),
                    _ => o.map(Value::Text).unwrap_or(Value::Null),
                };
                assert!(h.covers(&key[c], &v).unwrap(), "{} {v}", key[c]);
            }
        }
        let h = &cols[0].1;
        assert!(!h.covers("31-37", &Value::Int(38)).unwrap());
        assert!(h.covers("-5--1", &Value::Int(-3)).unwrap());
        assert!(!cols[1].1.covers("health", &Value::Text("teacher")).unwrap());
        assert!(!cols[2].1.covers("[1.5,2.25]", &Value::Num(2.5)).unwrap());
        assert!(!cols[3]
            .1
            .covers("1987-03-14/1987-05-01", &h_date("1987-05-02"))
            .unwrap());
        assert!(!cols[5].1.covers("nurse|teacher", &Value::Null).unwrap());

        // a class mixing NULL with values prints * in that column
        let mut a = Anonymizer::new(vec![("age", Hierarchy::integer_default())], 2, None, 0.0)
            .unwrap()
            .with_algorithm(Algorithm::Ranges);
        for (s, age) in [Value::Int(20), Value::Int(21), Value::Int(50), Value::Null]
            .iter()
            .enumerate()
        {
            a.push(s as i64, &[*age], None).unwrap();
        }
        let out = a.run().unwrap();
        let labels: Vec<&str> = (0..4).map(|i| out.record(i).unwrap()[0].as_str()).collect();
        // NULL sorts first: the only valid cut puts it with 20
        assert_eq!(labels, ["*", "21-50", "21-50", "*"]);
        assert_eq!(
            out.report().levels_used[0].ncp,
            0.5 * 1.0 + 0.5 * (29.0 / 30.0)
        );
    }

    fn h_date(s: &str) -> Value<'static> {
        Hierarchy::date()
            .parse(s)
            .map(|v| match v {
                Value::Date(d) => Value::Date(d),
                _ => unreachable!(),
            })
            .unwrap()
    }

    #[test]
    fn segments_show_what_every_subject_of_a_class_holds() {
        for alg in [
            Algorithm::Ranges,
            Algorithm::Mondrian,
            Algorithm::GlobalRecoding,
        ] {
            let mut a = Anonymizer::new(vec![("age", Hierarchy::integer_default())], 3, None, 0.0)
                .unwrap()
                .with_algorithm(alg)
                .with_segments(["buyers", "rare"])
                .unwrap();
            // ages 20..26; buyers: the first four, rare: one subject
            for s in 0..7 {
                let segs: &[u32] = match s {
                    0 => &[0, 1, 0],
                    1..=3 => &[0],
                    _ => &[],
                };
                a.push_with(s, &[Value::Int(20 + s)], None, segs).unwrap();
            }
            let out = a.run().unwrap();
            let r = out.report();
            assert_eq!(r.memberships, 5, "{alg}");
            assert_eq!(
                r.segments[1],
                SegmentKept {
                    segment: "rare".into(),
                    members: 1,
                    kept: 0
                }
            );
            for i in 0..7 {
                for &sg in out.segments(i).unwrap() {
                    assert!(sg == 0 && i < 4, "{alg}: record {i} shown in {sg}");
                }
            }
            if alg == Algorithm::Ranges {
                // the buyers are split off: all four memberships kept
                assert_eq!(out.segments(0).unwrap(), [0]);
                assert_eq!(r.memberships_kept, 4);
                assert_eq!(r.memberships_kept_fraction(), 0.8);
            }
        }
        let a = Anonymizer::new(vec![("age", Hierarchy::integer_default())], 3, None, 0.0).unwrap();
        assert!(a.clone().with_segments(["x", "x"]).is_err());
        assert!(a.clone().with_segment_weight(-1.0).is_err());
        assert!(a.clone().with_segment_weight(f64::NAN).is_err());
        let mut b = a.with_segments(["x"]).unwrap();
        assert!(matches!(
            b.push_with(1, &[Value::Int(3)], None, &[1]),
            Err(Error::InvalidParameter {
                parameter: "segments",
                ..
            })
        ));
        assert_eq!(b.len(), 0);
        b.push(1, &[Value::Int(3)], None).unwrap();
        assert!(b.with_segments(["y"]).is_err());
    }

    #[test]
    fn l_diversity_is_met() {
        let mut a = Anonymizer::new(cols(), 2, Some(2), 0.0).unwrap();
        let rows = [
            (1, 34, "10115", "flu"),
            (2, 36, "10117", "flu"),
            (3, 35, "10113", "cold"),
            (4, 52, "20095", "flu"),
            (5, 57, "20097", "cold"),
        ];
        for (s, age, zip, d) in rows {
            a.push(s, &[Value::Int(age), Value::Text(zip)], Some(d))
                .unwrap();
        }
        let out = a.run().unwrap();
        assert!(out.report().l_reached.unwrap() >= 2);
        for c in out.classes() {
            assert!(c.sensitive_values.unwrap() >= 2);
        }
    }
}
