//! Generalisation hierarchies and their stable textual forms.
//!
//! A hierarchy maps an input value (a *leaf*) to coarser and coarser *nodes*, one per
//! level: level 0 is the exact value, the top level `levels() - 1` is always `*`. Every level
//! partitions the leaves, and the partition of level `L + 1` is coarser than that of level `L`
//! (every node has exactly one parent), so the levels form a tree. The textual form of a node
//! is stable: the same node always prints the same string, whatever leaf it was reached from.

use crate::error::Error;
use std::collections::HashMap;
use std::fmt;

/// One input value for a quasi column.
///
/// Which variants a hierarchy accepts:
///
/// | hierarchy | accepts |
/// |---|---|
/// | [`Hierarchy::Date`] | `Date(time::Date)`, or `Int(days since 1970-01-01)` |
/// | [`Hierarchy::Integer`] | `Int` |
/// | [`Hierarchy::Numeric`] | `Num` (finite), or `Int` with magnitude ≤ 2^53 |
/// | [`Hierarchy::Prefix`] | `Text` of exactly `len` characters, none of them `*` |
/// | [`Hierarchy::Categorical`] | `Text` naming a leaf of the mapping |
///
/// Anything else is [`Error::WrongType`] / [`Error::InvalidValue`] / [`Error::UnknownValue`].
///
/// `Null` (SQL NULL, a missing value) is accepted by every hierarchy: it is a leaf of its own
/// directly under the root, so it prints as [`NULL_LABEL`] on every level below the top and as
/// `*` at the top, like any other value generalised all the way.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    Int(i64),
    Num(f64),
    Date(time::Date),
    Text(&'a str),
    Null,
}

/// The textual form of the NULL leaf (and of its node on every level below the top). It is
/// reserved: no categorical node may be called so and no prefix code may be it.
pub const NULL_LABEL: &str = "NULL";

impl Value<'_> {
    /// The variant's name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "integer",
            Value::Num(_) => "numeric",
            Value::Date(_) => "date",
            Value::Text(_) => "text",
            Value::Null => "null",
        }
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Num(x) => write!(f, "{x}"),
            Value::Date(d) => {
                let days = date_to_days(*d);
                let (y, m, dd) = civil_from_days(days);
                write!(f, "{}-{m:02}-{dd:02}", fmt_year(y))
            }
            Value::Text(s) => write!(f, "\"{s}\""),
            Value::Null => f.write_str(NULL_LABEL),
        }
    }
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value<'_> {
    fn from(v: i32) -> Self {
        Value::Int(v as i64)
    }
}
impl From<f64> for Value<'_> {
    fn from(v: f64) -> Self {
        Value::Num(v)
    }
}
impl From<time::Date> for Value<'_> {
    fn from(v: time::Date) -> Self {
        Value::Date(v)
    }
}
impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(v)
    }
}
impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(v.as_str())
    }
}

/// A generalisation hierarchy for one quasi column.
///
/// Textual forms, level by level (`levels()` counts level 0 and the top):
///
/// | hierarchy | levels | forms |
/// |---|---|---|
/// | `Date` | 6 | `1987-03-14` → `1987-03` → `1987` → `1985-1989` → `1980-1989` → `*` |
/// | `Integer { widths: [5, 10, 20, 100] }` | widths + 2 | `37` → `35-39` → `30-39` → `20-39` → `0-99` → `*` |
/// | `Numeric { widths: [0.5, 1, 5] }` | widths + 2 | `37.25` → `[37,37.5)` → `[37,38)` → `[35,40)` → `*` |
/// | `Prefix { len: 5 }` | len + 1 | `10115` → `1011*` → `101**` → `10***` → `1****` → `*` |
/// | `Categorical` | height + 1 | `nurse` → `health` → `services` → `*` |
///
/// Integer bands are closed `lo-hi` with `lo` a multiple of the width (floor division, so
/// `-3` with width 5 is `-5--1`: the first `-` after a digit separates the bounds). Numeric
/// bands are half-open `[lo,hi)` printed in exact decimal (no binary noise). Dates use the
/// proleptic Gregorian calendar, years `-9999..=9999` written with at least four digits
/// (`0044`, `-0044`), bands of years aligned to multiples of 5 and 10 (`1985-1989`).
/// Each width must be a multiple of the previous one so the bands nest.
#[derive(Clone, Debug, PartialEq)]
pub enum Hierarchy {
    Date,
    Integer { widths: Vec<i64> },
    Numeric { widths: Vec<f64> },
    Prefix { len: usize },
    Categorical(Categorical),
}

/// The default integer band widths: `37` → `35-39` → `30-39` → `20-39` → `0-99` → `*`.
pub const DEFAULT_INTEGER_WIDTHS: [i64; 4] = [5, 10, 20, 100];

/// Bounds of the date hierarchy (inclusive), in days since 1970-01-01: years -9999..=9999.
pub const MIN_DATE_DAYS: i64 = -4_371_587; // -9999-01-01
pub const MAX_DATE_DAYS: i64 = 2_932_896; // 9999-12-31

const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;
const NUM_MAX_DECIMALS: u32 = 12;

impl Hierarchy {
    /// The date hierarchy.
    pub fn date() -> Hierarchy {
        Hierarchy::Date
    }

    /// An integer hierarchy with the given band widths (checked).
    pub fn integer(widths: Vec<i64>) -> Result<Hierarchy, Error> {
        let h = Hierarchy::Integer { widths };
        h.validate()?;
        Ok(h)
    }

    /// An integer hierarchy with [`DEFAULT_INTEGER_WIDTHS`].
    pub fn integer_default() -> Hierarchy {
        Hierarchy::Integer {
            widths: DEFAULT_INTEGER_WIDTHS.to_vec(),
        }
    }

    /// A numeric hierarchy with the given band widths (checked).
    pub fn numeric(widths: Vec<f64>) -> Result<Hierarchy, Error> {
        let h = Hierarchy::Numeric { widths };
        h.validate()?;
        Ok(h)
    }

    /// A prefix hierarchy for codes of exactly `len` characters (checked).
    pub fn prefix(len: usize) -> Result<Hierarchy, Error> {
        let h = Hierarchy::Prefix { len };
        h.validate()?;
        Ok(h)
    }

    /// A categorical hierarchy from child → parent pairs, see [`Categorical::new`].
    pub fn categorical<I, C, P>(pairs: I) -> Result<Hierarchy, Error>
    where
        I: IntoIterator<Item = (C, P)>,
        C: Into<String>,
        P: Into<String>,
    {
        Ok(Hierarchy::Categorical(Categorical::new(pairs)?))
    }

    /// The hierarchy's kind: `date`, `integer`, `numeric`, `prefix` or `categorical`.
    pub fn kind(&self) -> &'static str {
        match self {
            Hierarchy::Date => "date",
            Hierarchy::Integer { .. } => "integer",
            Hierarchy::Numeric { .. } => "numeric",
            Hierarchy::Prefix { .. } => "prefix",
            Hierarchy::Categorical(_) => "categorical",
        }
    }

    /// Checks the definition (widths positive, increasing, each a multiple of the previous;
    /// prefix length ≥ 1). Categorical mappings are checked when they are built.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Hierarchy::Date | Hierarchy::Categorical(_) => Ok(()),
            Hierarchy::Integer { widths } => {
                let bad = |reason: String| Error::InvalidHierarchy {
                    hierarchy: "integer",
                    reason,
                };
                for (i, &w) in widths.iter().enumerate() {
                    if w <= 0 {
                        return Err(bad(format!("width {w} is not positive")));
                    }
                    if i > 0 {
                        let prev = widths[i - 1];
                        if w <= prev {
                            return Err(bad(format!(
                                "widths must increase strictly ({prev} then {w})"
                            )));
                        }
                        if w % prev != 0 {
                            return Err(bad(format!(
                                "each width must be a multiple of the previous one so the bands nest ({w} is not a multiple of {prev})"
                            )));
                        }
                    }
                }
                Ok(())
            }
            Hierarchy::Numeric { widths } => numeric_plan(widths).map(|_| ()),
            Hierarchy::Prefix { len } => {
                if *len == 0 {
                    Err(Error::InvalidHierarchy {
                        hierarchy: "prefix",
                        reason: "the code length must be at least 1".into(),
                    })
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Number of levels, counting level 0 (exact) and the top (`*`).
    pub fn levels(&self) -> usize {
        match self {
            Hierarchy::Date => 6,
            Hierarchy::Integer { widths } => widths.len() + 2,
            Hierarchy::Numeric { widths } => widths.len() + 2,
            Hierarchy::Prefix { len } => len + 1,
            Hierarchy::Categorical(c) => c.height() + 1,
        }
    }

    /// The top level (`levels() - 1`), whose only node is `*`.
    pub fn top(&self) -> usize {
        self.levels() - 1
    }

    /// The textual form of `value` generalised to `level`.
    pub fn generalize(&self, value: &Value<'_>, level: usize) -> Result<String, Error> {
        self.validate()?;
        let levels = self.levels();
        if level >= levels {
            return Err(Error::LevelOutOfRange { level, levels });
        }
        let leaf = self.leaf(value)?;
        self.label(&leaf, level)
    }

    /// The level at which `value` generalises to exactly `generalized`, if any: `Some(level)`
    /// means `generalized` is an ancestor-or-self of `value` in this hierarchy.
    pub fn level_of(&self, value: &Value<'_>, generalized: &str) -> Result<Option<usize>, Error> {
        for level in 0..self.levels() {
            if self.generalize(value, level)? == generalized {
                return Ok(Some(level));
            }
        }
        Ok(None)
    }

    /// Whether a released value covers `value`: `*`; an ancestor-or-self node (see
    /// [`Hierarchy::level_of`]); a range released by [`crate::Algorithm::Ranges`] holding it
    /// (`lo-hi` for integers, `[lo,hi]` for numerics, `YYYY-MM-DD/YYYY-MM-DD` for dates, both
    /// ends included); or, for a categorical hierarchy, a set `a|b|…` one of whose nodes is
    /// an ancestor-or-self. NULL is covered by `*`, `NULL` and a set holding `NULL`.
    pub fn covers(&self, released: &str, value: &Value<'_>) -> Result<bool, Error> {
        if released == "*" || self.level_of(value, released)?.is_some() {
            return Ok(true);
        }
        let leaf = self.leaf(value)?;
        Ok(match (self, leaf) {
            (Hierarchy::Categorical(_), _) if released.contains('|') => {
                for part in released.split('|') {
                    if self.level_of(value, part)?.is_some() {
                        return Ok(true);
                    }
                }
                false
            }
            (_, Leaf::Null) => false,
            (Hierarchy::Integer { .. }, Leaf::Int(v)) => {
                let b = released.as_bytes();
                let cut = (1..b.len()).find(|&i| b[i] == b'-' && b[i - 1].is_ascii_digit());
                match cut.map(|i| {
                    (
                        released[..i].parse::<i64>(),
                        released[i + 1..].parse::<i64>(),
                    )
                }) {
                    Some((Ok(lo), Ok(hi))) => lo <= v && v <= hi,
                    _ => false,
                }
            }
            (Hierarchy::Numeric { .. }, Leaf::Num(x)) => {
                let inner = released.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
                match inner.and_then(|r| r.split_once(',')) {
                    Some((a, b)) => match (a.parse::<f64>(), b.parse::<f64>()) {
                        (Ok(lo), Ok(hi)) => lo <= x && x <= hi,
                        _ => false,
                    },
                    None => false,
                }
            }
            (Hierarchy::Date, Leaf::Int(days)) => match released.split_once('/') {
                Some((a, b)) => match (parse_date(a), parse_date(b)) {
                    (Some(lo), Some(hi)) => lo <= days && days <= hi,
                    _ => false,
                },
                None => false,
            },
            _ => false,
        })
    }

    /// Parses the text form of an input value into the type this hierarchy takes: a date
    /// `YYYY-MM-DD`, an integer, a finite decimal; text stays text (not trimmed).
    pub fn parse<'a>(&self, text: &'a str) -> Result<Value<'a>, Error> {
        let bad = |reason: &str| Error::InvalidValue {
            hierarchy: self.kind(),
            value: format!("\"{text}\""),
            reason: reason.to_string(),
        };
        match self {
            Hierarchy::Date => {
                let days = parse_date(text.trim()).ok_or_else(|| {
                    bad("not a date of the form YYYY-MM-DD with year -9999..=9999")
                })?;
                Ok(Value::Date(days_to_date(days)))
            }
            Hierarchy::Integer { .. } => text
                .trim()
                .parse::<i64>()
                .map(Value::Int)
                .map_err(|_| bad("not a 64-bit integer")),
            Hierarchy::Numeric { .. } => match text.trim().parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(Value::Num(x)),
                _ => Err(bad("not a finite number")),
            },
            Hierarchy::Prefix { .. } | Hierarchy::Categorical(_) => Ok(Value::Text(text)),
        }
    }

    /// Checks `value` and turns it into the internal leaf form.
    pub(crate) fn leaf<'a>(&self, value: &Value<'a>) -> Result<Leaf<'a>, Error> {
        let plan = self.plan()?;
        self.leaf_planned(plan.as_ref(), value)
    }

    /// [`Hierarchy::leaf`] with the numeric plan computed once by the caller.
    pub(crate) fn leaf_planned<'a>(
        &self,
        plan: Option<&NumPlan>,
        value: &Value<'a>,
    ) -> Result<Leaf<'a>, Error> {
        let kind = self.kind();
        let wrong = |expected: &'static str| Error::WrongType {
            hierarchy: kind,
            expected,
            found: value.type_name(),
        };
        match (self, value) {
            (_, Value::Null) => Ok(Leaf::Null),
            (Hierarchy::Date, Value::Date(d)) => Ok(Leaf::Int(date_to_days(*d))),
            (Hierarchy::Date, Value::Int(days)) => {
                if (MIN_DATE_DAYS..=MAX_DATE_DAYS).contains(days) {
                    Ok(Leaf::Int(*days))
                } else {
                    Err(Error::InvalidValue {
                        hierarchy: kind,
                        value: days.to_string(),
                        reason: "days since 1970-01-01 outside years -9999..=9999".into(),
                    })
                }
            }
            (Hierarchy::Date, _) => Err(wrong("date (or integer days since 1970-01-01)")),
            (Hierarchy::Integer { .. }, Value::Int(i)) => Ok(Leaf::Int(*i)),
            (Hierarchy::Integer { .. }, _) => Err(wrong("integer")),
            (Hierarchy::Numeric { .. }, v @ (Value::Num(_) | Value::Int(_))) => {
                let x = match v {
                    Value::Int(i) => {
                        if i.unsigned_abs() > (1u64 << 53) {
                            return Err(Error::InvalidValue {
                                hierarchy: kind,
                                value: i.to_string(),
                                reason: "integer too large to be represented exactly".into(),
                            });
                        }
                        *i as f64
                    }
                    Value::Num(x) => *x,
                    _ => unreachable!(),
                };
                if !x.is_finite() {
                    return Err(Error::InvalidValue {
                        hierarchy: kind,
                        value: x.to_string(),
                        reason: "not a finite number".into(),
                    });
                }
                let x = if x == 0.0 { 0.0 } else { x }; // -0 is 0
                plan.expect("numeric plan").finest(x)?;
                Ok(Leaf::Num(x))
            }
            (Hierarchy::Numeric { .. }, _) => Err(wrong("numeric")),
            (Hierarchy::Prefix { len }, Value::Text(s)) => {
                let n = s.chars().count();
                if n != *len {
                    return Err(Error::InvalidValue {
                        hierarchy: kind,
                        value: format!("\"{s}\""),
                        reason: format!("has {n} characters, the hierarchy expects exactly {len}"),
                    });
                }
                if s.contains('*') {
                    return Err(Error::InvalidValue {
                        hierarchy: kind,
                        value: format!("\"{s}\""),
                        reason: "contains \"*\", which marks generalised characters".into(),
                    });
                }
                if *s == NULL_LABEL {
                    return Err(Error::InvalidValue {
                        hierarchy: kind,
                        value: format!("\"{s}\""),
                        reason: format!("\"{NULL_LABEL}\" is reserved for the NULL value (pass Value::Null for a missing value)"),
                    });
                }
                Ok(Leaf::Text(s))
            }
            (Hierarchy::Prefix { .. }, _) => Err(wrong("text")),
            (Hierarchy::Categorical(c), Value::Text(s)) => Ok(Leaf::Cat(c.leaf(s)?)),
            (Hierarchy::Categorical(_), _) => Err(wrong("text")),
        }
    }

    /// Textual form of a checked leaf at a checked level.
    pub(crate) fn label(&self, leaf: &Leaf<'_>, level: usize) -> Result<String, Error> {
        let top = self.top();
        if level > top {
            return Err(Error::LevelOutOfRange {
                level,
                levels: top + 1,
            });
        }
        if level == top {
            return Ok("*".to_string());
        }
        Ok(match (self, leaf) {
            (_, Leaf::Null) => NULL_LABEL.to_string(),
            (Hierarchy::Date, Leaf::Int(days)) => {
                let (y, m, d) = civil_from_days(*days);
                match level {
                    0 => format!("{}-{m:02}-{d:02}", fmt_year(y)),
                    1 => format!("{}-{m:02}", fmt_year(y)),
                    2 => fmt_year(y),
                    3 => {
                        let a = y.div_euclid(5) * 5;
                        format!("{}-{}", fmt_year(a), fmt_year(a + 4))
                    }
                    _ => {
                        let a = y.div_euclid(10) * 10;
                        format!("{}-{}", fmt_year(a), fmt_year(a + 9))
                    }
                }
            }
            (Hierarchy::Integer { widths }, Leaf::Int(v)) => {
                if level == 0 {
                    v.to_string()
                } else {
                    let w = widths[level - 1] as i128;
                    let lo = (*v as i128).div_euclid(w) * w;
                    format!("{lo}-{}", lo + w - 1)
                }
            }
            (Hierarchy::Numeric { widths }, Leaf::Num(x)) => {
                if level == 0 {
                    format!("{x}")
                } else {
                    let plan = numeric_plan(widths)?;
                    let (lo, hi) = plan.band_scaled(plan.finest(*x)?, level);
                    format!(
                        "[{},{})",
                        fmt_scaled(lo, plan.decimals),
                        fmt_scaled(hi, plan.decimals)
                    )
                }
            }
            (Hierarchy::Prefix { len }, Leaf::Text(s)) => {
                let keep = len - level;
                let mut out: String = s.chars().take(keep).collect();
                out.extend(std::iter::repeat_n('*', level));
                out
            }
            (Hierarchy::Categorical(c), Leaf::Cat(node)) => {
                c.names[c.ancestor_at_level(*node, level) as usize].clone()
            }
            _ => unreachable!("leaf kind does not match hierarchy"),
        })
    }

    /// A key that identifies the node of `leaf` at `level` (0 < level < top), for grouping
    /// sorted leaves into nodes. Two leaves share a node iff their keys are equal.
    pub(crate) fn node_key<'a>(
        &self,
        plan: Option<&NumPlan>,
        leaf: &Leaf<'a>,
        level: usize,
    ) -> NodeKey<'a> {
        match (self, leaf) {
            (_, Leaf::Null) => NodeKey::Null,
            (Hierarchy::Date, Leaf::Int(days)) => {
                let (y, m, _) = civil_from_days(*days);
                NodeKey::Int(match level {
                    1 => (y * 12 + m as i64 - 1) as i128,
                    2 => y as i128,
                    3 => y.div_euclid(5) as i128,
                    _ => y.div_euclid(10) as i128,
                })
            }
            (Hierarchy::Integer { widths }, Leaf::Int(v)) => {
                NodeKey::Int((*v as i128).div_euclid(widths[level - 1] as i128))
            }
            (Hierarchy::Numeric { .. }, Leaf::Num(x)) => {
                let plan = plan.expect("numeric plan");
                let i0 = plan.finest(*x).expect("checked leaf");
                NodeKey::Int(i0.div_euclid(plan.ratios[level - 1]) as i128)
            }
            (Hierarchy::Prefix { len }, Leaf::Text(s)) => {
                let keep = len - level;
                let end = s
                    .char_indices()
                    .nth(keep)
                    .map(|(i, _)| i)
                    .unwrap_or(s.len());
                NodeKey::Text(&s[..end])
            }
            (Hierarchy::Categorical(c), Leaf::Cat(node)) => {
                NodeKey::Int(c.ancestor_at_level(*node, level) as i128)
            }
            _ => unreachable!("leaf kind does not match hierarchy"),
        }
    }

    /// The closed value interval covered by the node of `leaf` at `level` (0 ≤ level < top),
    /// for the ordered kinds (date in days, integer, numeric). Numeric bands are half-open;
    /// their interval is `[lo, hi]` with `hi - lo` the band width.
    pub(crate) fn interval(
        &self,
        plan: Option<&NumPlan>,
        leaf: &Leaf<'_>,
        level: usize,
    ) -> (f64, f64) {
        match (self, leaf) {
            (Hierarchy::Date, Leaf::Int(days)) => {
                if level == 0 {
                    return (*days as f64, *days as f64);
                }
                let (y, m, _) = civil_from_days(*days);
                let (a, b) = match level {
                    1 => {
                        let next = if m == 12 {
                            days_from_civil(y + 1, 1, 1)
                        } else {
                            days_from_civil(y, m + 1, 1)
                        };
                        (days_from_civil(y, m, 1), next - 1)
                    }
                    2 => (days_from_civil(y, 1, 1), days_from_civil(y + 1, 1, 1) - 1),
                    3 => {
                        let a = y.div_euclid(5) * 5;
                        (days_from_civil(a, 1, 1), days_from_civil(a + 5, 1, 1) - 1)
                    }
                    _ => {
                        let a = y.div_euclid(10) * 10;
                        (days_from_civil(a, 1, 1), days_from_civil(a + 10, 1, 1) - 1)
                    }
                };
                (a as f64, b as f64)
            }
            (Hierarchy::Integer { widths }, Leaf::Int(v)) => {
                if level == 0 {
                    return (*v as f64, *v as f64);
                }
                let w = widths[level - 1] as i128;
                let lo = (*v as i128).div_euclid(w) * w;
                (lo as f64, (lo + w - 1) as f64)
            }
            (Hierarchy::Numeric { .. }, Leaf::Num(x)) => {
                if level == 0 {
                    return (*x, *x);
                }
                let plan = plan.expect("numeric plan");
                let (lo, hi) = plan.band_scaled(plan.finest(*x).expect("checked leaf"), level);
                (lo as f64 / plan.scale, hi as f64 / plan.scale)
            }
            _ => unreachable!("interval of an unordered hierarchy"),
        }
    }

    /// The plan of a numeric hierarchy (`None` for the other kinds).
    pub(crate) fn plan(&self) -> Result<Option<NumPlan>, Error> {
        match self {
            Hierarchy::Numeric { widths } => Ok(Some(numeric_plan(widths)?)),
            _ => Ok(None),
        }
    }
}

/// A checked input value in the form the encoder and the labels use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Leaf<'a> {
    /// Integers, and dates as days since 1970-01-01.
    Int(i64),
    Num(f64),
    Text(&'a str),
    /// A categorical leaf, by node id.
    Cat(u32),
    /// The NULL leaf (every hierarchy has one, directly under the root).
    Null,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeKey<'a> {
    Int(i128),
    Text(&'a str),
    Null,
}

/// Exact decimal arithmetic for numeric bands: values are scaled by `10^decimals`, the
/// finest band has the integer width `w0` in that scale, band `L` is `ratios[L-1]` finest bands.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NumPlan {
    pub decimals: u32,
    pub scale: f64,
    pub w0: i64,
    pub ratios: Vec<i64>,
}

impl NumPlan {
    /// Index of the finest band holding `x`.
    pub(crate) fn finest(&self, x: f64) -> Result<i64, Error> {
        // x is usually a decimal typed by a person; a value that is a band boundary in
        // decimal may land a few ulps below it in binary, so snap within 8 ulps upwards.
        let t = (x * self.scale) / self.w0 as f64;
        let i = (t + t.abs() * 8.0 * f64::EPSILON).floor();
        if !i.is_finite() || i.abs() >= (1u64 << 62) as f64 {
            return Err(Error::InvalidValue {
                hierarchy: "numeric",
                value: x.to_string(),
                reason: "too large for the band widths".into(),
            });
        }
        Ok(i as i64)
    }

    /// `[lo, hi)` of the band at `level` (≥ 1), in the scaled integer domain.
    pub(crate) fn band_scaled(&self, finest: i64, level: usize) -> (i128, i128) {
        let r = self.ratios[level - 1];
        let w = self.w0 as i128 * r as i128;
        let i = finest.div_euclid(r) as i128;
        (i * w, i * w + w)
    }
}

pub(crate) fn numeric_plan(widths: &[f64]) -> Result<NumPlan, Error> {
    let bad = |reason: String| Error::InvalidHierarchy {
        hierarchy: "numeric",
        reason,
    };
    for (i, &w) in widths.iter().enumerate() {
        if !w.is_finite() || w <= 0.0 {
            return Err(bad(format!("width {w} is not a positive finite number")));
        }
        if i > 0 && w <= widths[i - 1] {
            return Err(bad(format!(
                "widths must increase strictly ({} then {w})",
                widths[i - 1]
            )));
        }
    }
    let Some(&first) = widths.first() else {
        return Ok(NumPlan {
            decimals: 0,
            scale: 1.0,
            w0: 1,
            ratios: Vec::new(),
        });
    };
    let mut decimals = None;
    for d in 0..=NUM_MAX_DECIMALS {
        let s = first * 10f64.powi(d as i32);
        if (s - s.round()).abs() <= (s * 1e-15).max(1e-6) {
            decimals = Some(d);
            break;
        }
    }
    let Some(decimals) = decimals else {
        return Err(bad(format!(
            "width {first} needs more than {NUM_MAX_DECIMALS} decimal places"
        )));
    };
    let scale = 10f64.powi(decimals as i32);
    let w0s = (first * scale).round();
    if w0s >= (1u64 << 53) as f64 {
        return Err(bad(format!("width {first} is too large")));
    }
    let w0 = w0s as i64;
    let mut ratios = Vec::with_capacity(widths.len());
    for (i, &w) in widths.iter().enumerate() {
        let r = w / first;
        let rr = r.round();
        if (r - rr).abs() > 1e-9 * r || rr >= (1u64 << 40) as f64 {
            return Err(bad(format!(
                "each width must be a multiple of the previous one so the bands nest ({w} is not a multiple of {first})"
            )));
        }
        let rr = rr as i64;
        if i > 0 {
            let prev = ratios[i - 1];
            if rr % prev != 0 {
                return Err(bad(format!(
                    "each width must be a multiple of the previous one so the bands nest ({w} is not a multiple of {})",
                    widths[i - 1]
                )));
            }
        }
        ratios.push(rr);
    }
    Ok(NumPlan {
        decimals,
        scale,
        w0,
        ratios,
    })
}

/// Prints a scaled integer as an exact decimal, trailing zeros trimmed.
fn fmt_scaled(v: i128, decimals: u32) -> String {
    if decimals == 0 {
        return v.to_string();
    }
    let p = 10i128.pow(decimals);
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    let int = a / p as u128;
    let frac = a % p as u128;
    if frac == 0 {
        return format!("{sign}{int}");
    }
    let mut f = format!("{frac:0width$}", width = decimals as usize);
    while f.ends_with('0') {
        f.pop();
    }
    format!("{sign}{int}.{f}")
}

// ---------------------------------------------------------------------------------------
// Calendar arithmetic (proleptic Gregorian, days since 1970-01-01), after H. Hinnant.

pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn fmt_year(y: i64) -> String {
    if y < 0 {
        format!("-{:04}", -y)
    } else {
        format!("{y:04}")
    }
}

/// Days since 1970-01-01 of a `time::Date`.
pub fn date_to_days(d: time::Date) -> i64 {
    d.to_julian_day() as i64 - UNIX_EPOCH_JULIAN_DAY
}

/// The `time::Date` of a day count (must lie in [`MIN_DATE_DAYS`]..=[`MAX_DATE_DAYS`]).
pub fn days_to_date(days: i64) -> time::Date {
    time::Date::from_julian_day((days + UNIX_EPOCH_JULIAN_DAY) as i32)
        .expect("day count inside the supported range")
}

fn parse_date(s: &str) -> Option<i64> {
    let (neg, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let mut parts = rest.split('-');
    let (ys, ms, ds) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || ys.len() < 4
        || ms.len() != 2
        || ds.len() != 2
        || !ys
            .bytes()
            .chain(ms.bytes())
            .chain(ds.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let y: i64 = ys.parse().ok()?;
    let y = if neg { -y } else { y };
    let m: u32 = ms.parse().ok()?;
    let d: u32 = ds.parse().ok()?;
    if !(-9999..=9999).contains(&y) || !(1..=12).contains(&m) || d == 0 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // reject 2023-02-30 and the like: the day must round-trip
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

// ---------------------------------------------------------------------------------------
// Categorical hierarchies

const NONE: u32 = u32::MAX;

/// A categorical hierarchy built from a DBA-supplied mapping of child → parent pairs, for
/// example `nurse → health`, `health → services`, `services → *`.
///
/// Rules, each with its own error:
/// - at least one pair ([`Error::EmptyMapping`]);
/// - a child has one parent (repeating the same pair is fine) ([`Error::ConflictingParent`]);
/// - no cycle, including `a → a` ([`Error::Cycle`]);
/// - exactly one root, the one node that is nobody's child ([`Error::MultipleRoots`]);
/// - `*` and `NULL` ([`NULL_LABEL`]) may only be the root ([`Error::ReservedName`]). The root
///   prints as `*` whatever it is called in the mapping; `NULL` is the NULL leaf every
///   hierarchy has directly under the root (it is not part of the mapping).
///
/// Leaves are the nodes without children; only leaves are input values. Leaves may sit at
/// different depths: the hierarchy's height `H` is the deepest leaf's depth and level `L`
/// of a leaf at depth `d` is its ancestor at depth `min(d, H - L)`, so a shallow leaf keeps
/// its own name on the lowest levels and every level means "this many steps below the root".
#[derive(Clone, Debug, PartialEq)]
pub struct Categorical {
    names: Vec<String>,
    index: HashMap<String, u32>,
    parent: Vec<u32>,
    depth: Vec<u32>,
    root: u32,
    height: u32,
    /// node → leaf code (position in depth-first order, children by name), or NONE
    leaf_code: Vec<u32>,
    /// leaf code → node
    leaves: Vec<u32>,
}

impl Categorical {
    /// Builds the hierarchy from child → parent pairs (see the type's rules).
    pub fn new<I, C, P>(pairs: I) -> Result<Categorical, Error>
    where
        I: IntoIterator<Item = (C, P)>,
        C: Into<String>,
        P: Into<String>,
    {
        let mut names: Vec<String> = Vec::new();
        let mut index: HashMap<String, u32> = HashMap::new();
        let mut parent: Vec<u32> = Vec::new();
        let mut intern = |name: String, names: &mut Vec<String>, parent: &mut Vec<u32>| -> u32 {
            if let Some(&id) = index.get(&name) {
                return id;
            }
            let id = names.len() as u32;
            index.insert(name.clone(), id);
            names.push(name);
            parent.push(NONE);
            id
        };
        let mut any = false;
        for (c, p) in pairs {
            any = true;
            let (c, p): (String, String) = (c.into(), p.into());
            if c == "*" || c == NULL_LABEL {
                return Err(Error::ReservedName { name: c });
            }
            if c == p {
                return Err(Error::Cycle {
                    path: vec![c.clone(), c],
                });
            }
            let ci = intern(c, &mut names, &mut parent);
            let pi = intern(p, &mut names, &mut parent);
            match parent[ci as usize] {
                NONE => parent[ci as usize] = pi,
                old if old == pi => {}
                old => {
                    return Err(Error::ConflictingParent {
                        child: names[ci as usize].clone(),
                        parents: [names[old as usize].clone(), names[pi as usize].clone()],
                    })
                }
            }
        }
        if !any {
            return Err(Error::EmptyMapping);
        }
        let n = names.len();

        // cycles: walk up from every node; 0 = unseen, 1 = on the current walk, 2 = done
        let mut state = vec![0u8; n];
        for start in 0..n {
            let mut path: Vec<u32> = Vec::new();
            let mut x = start as u32;
            while x != NONE && state[x as usize] == 0 {
                state[x as usize] = 1;
                path.push(x);
                x = parent[x as usize];
            }
            if x != NONE && state[x as usize] == 1 {
                let pos = path.iter().position(|&p| p == x).unwrap();
                let mut cyc: Vec<String> = path[pos..]
                    .iter()
                    .map(|&i| names[i as usize].clone())
                    .collect();
                cyc.push(names[x as usize].clone());
                return Err(Error::Cycle { path: cyc });
            }
            for p in path {
                state[p as usize] = 2;
            }
        }

        let mut roots: Vec<u32> = (0..n as u32)
            .filter(|&i| parent[i as usize] == NONE)
            .collect();
        if roots.len() > 1 {
            let mut r: Vec<String> = roots.iter().map(|&i| names[i as usize].clone()).collect();
            r.sort();
            return Err(Error::MultipleRoots { roots: r });
        }
        let root = roots
            .pop()
            .expect("an acyclic non-empty mapping has a root");

        let mut children: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (i, &p) in parent.iter().enumerate() {
            if p != NONE {
                children[p as usize].push(i as u32);
            }
        }
        for ch in &mut children {
            ch.sort_by(|a, b| names[*a as usize].cmp(&names[*b as usize]));
        }
        let mut depth = vec![0u32; n];
        let mut leaf_code = vec![NONE; n];
        let mut leaves = Vec::new();
        let mut height = 0;
        let mut stack = vec![root];
        while let Some(x) = stack.pop() {
            let ch = &children[x as usize];
            if ch.is_empty() {
                leaf_code[x as usize] = leaves.len() as u32;
                leaves.push(x);
                height = height.max(depth[x as usize]);
            }
            for &c in ch.iter().rev() {
                depth[c as usize] = depth[x as usize] + 1;
                stack.push(c);
            }
        }
        Ok(Categorical {
            names,
            index,
            parent,
            depth,
            root,
            height,
            leaf_code,
            leaves,
        })
    }

    /// Depth of the deepest leaf (the root has depth 0).
    pub fn height(&self) -> usize {
        self.height as usize
    }

    /// The leaves (valid input values) in the hierarchy's order.
    pub fn leaves(&self) -> impl Iterator<Item = &str> + '_ {
        self.leaves.iter().map(|&i| self.names[i as usize].as_str())
    }

    /// Number of leaves.
    pub fn leaf_count(&self) -> usize {
        self.leaves.len()
    }

    /// The parent of a node (`None` for the root and for unknown names).
    pub fn parent(&self, name: &str) -> Option<&str> {
        let &i = self.index.get(name)?;
        let p = self.parent[i as usize];
        (p != NONE).then(|| self.names[p as usize].as_str())
    }

    /// The root's name as given in the mapping (it prints as `*`).
    pub fn root(&self) -> &str {
        &self.names[self.root as usize]
    }

    pub(crate) fn leaf(&self, name: &str) -> Result<u32, Error> {
        match self.index.get(name) {
            None => Err(Error::UnknownValue {
                value: name.to_string(),
            }),
            Some(&i) if self.leaf_code[i as usize] == NONE => Err(Error::NotALeaf {
                value: name.to_string(),
            }),
            Some(&i) => Ok(i),
        }
    }

    pub(crate) fn leaf_code(&self, node: u32) -> u32 {
        self.leaf_code[node as usize]
    }

    pub(crate) fn leaf_node(&self, code: u32) -> u32 {
        self.leaves[code as usize]
    }

    /// The node of leaf `node` at `level` (< height; the top is the root).
    pub(crate) fn ancestor_at_level(&self, node: u32, level: usize) -> u32 {
        let target = (self.height as usize).saturating_sub(level) as u32;
        let mut x = node;
        while self.depth[x as usize] > target {
            x = self.parent[x as usize];
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Month;

    fn d(y: i32, m: u8, day: u8) -> Value<'static> {
        Value::Date(time::Date::from_calendar_date(y, Month::try_from(m).unwrap(), day).unwrap())
    }

    fn all(h: &Hierarchy, v: Value<'_>) -> Vec<String> {
        (0..h.levels())
            .map(|l| h.generalize(&v, l).unwrap())
            .collect()
    }

    #[test]
    fn date_levels() {
        let h = Hierarchy::date();
        assert_eq!(h.levels(), 6);
        assert_eq!(
            all(&h, d(1987, 3, 14)),
            [
                "1987-03-14",
                "1987-03",
                "1987",
                "1985-1989",
                "1980-1989",
                "*"
            ]
        );
        // days since the epoch give the same forms
        let days = date_to_days(time::Date::from_calendar_date(1987, Month::March, 14).unwrap());
        assert_eq!(all(&h, Value::Int(days)), all(&h, d(1987, 3, 14)));
        assert_eq!(h.generalize(&Value::Int(0), 0).unwrap(), "1970-01-01");
        assert_eq!(h.generalize(&Value::Int(-1), 0).unwrap(), "1969-12-31");
        assert_eq!(all(&h, d(2000, 2, 29))[0], "2000-02-29");
        assert_eq!(all(&h, d(1989, 12, 31))[3], "1985-1989");
        assert_eq!(all(&h, d(1990, 1, 1))[3], "1990-1994");
        assert_eq!(
            all(&h, d(5, 6, 7)),
            [
                "0005-06-07",
                "0005-06",
                "0005",
                "0005-0009",
                "0000-0009",
                "*"
            ]
        );
        assert_eq!(
            all(&h, d(-44, 3, 15)),
            [
                "-0044-03-15",
                "-0044-03",
                "-0044",
                "-0045--0041",
                "-0050--0041",
                "*"
            ]
        );
        assert_eq!(
            h.generalize(&Value::Int(MIN_DATE_DAYS), 0).unwrap(),
            "-9999-01-01"
        );
        assert_eq!(
            h.generalize(&Value::Int(MAX_DATE_DAYS), 0).unwrap(),
            "9999-12-31"
        );
    }

    #[test]
    fn date_bounds() {
        assert_eq!(days_from_civil(-9999, 1, 1), MIN_DATE_DAYS);
        assert_eq!(days_from_civil(9999, 12, 31), MAX_DATE_DAYS);
        assert_eq!(days_to_date(MIN_DATE_DAYS).year(), -9999);
        assert_eq!(days_to_date(MAX_DATE_DAYS).year(), 9999);
    }

    #[test]
    fn date_calendar_roundtrip() {
        for z in (-800_000..800_000).step_by(997) {
            let (y, m, dd) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, dd), z);
            let t = days_to_date(z);
            assert_eq!(
                (t.year() as i64, t.month() as u32, t.day() as u32),
                (y, m, dd)
            );
        }
    }

    #[test]
    fn date_errors_and_parse() {
        let h = Hierarchy::date();
        assert!(matches!(
            h.generalize(&Value::Text("1987-03-14"), 0),
            Err(Error::WrongType {
                hierarchy: "date",
                found: "text",
                ..
            })
        ));
        assert!(matches!(
            h.generalize(&Value::Num(1.0), 0),
            Err(Error::WrongType { .. })
        ));
        assert!(matches!(
            h.generalize(&Value::Int(MAX_DATE_DAYS + 1), 0),
            Err(Error::InvalidValue { .. })
        ));
        assert!(matches!(
            h.generalize(&d(1987, 3, 14), 6),
            Err(Error::LevelOutOfRange {
                level: 6,
                levels: 6
            })
        ));
        assert_eq!(h.parse("1987-03-14").unwrap(), d(1987, 3, 14));
        assert_eq!(h.parse(" -0044-03-15 ").unwrap(), d(-44, 3, 15));
        for bad in [
            "1987-02-30",
            "1987-13-01",
            "87-03-14",
            "1987/03/14",
            "",
            "10000-01-01",
            "1987-3-14",
        ] {
            assert!(
                matches!(h.parse(bad), Err(Error::InvalidValue { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn integer_levels() {
        let h = Hierarchy::integer_default();
        assert_eq!(h.levels(), 6);
        assert_eq!(
            all(&h, Value::Int(37)),
            ["37", "35-39", "30-39", "20-39", "0-99", "*"]
        );
        assert_eq!(
            all(&h, Value::Int(-3)),
            ["-3", "-5--1", "-10--1", "-20--1", "-100--1", "*"]
        );
        assert_eq!(
            all(&h, Value::Int(0)),
            ["0", "0-4", "0-9", "0-19", "0-99", "*"]
        );
        let h = Hierarchy::integer(vec![1000, 10_000]).unwrap();
        assert_eq!(
            all(&h, Value::Int(123_456)),
            ["123456", "123000-123999", "120000-129999", "*"]
        );
        let h = Hierarchy::integer(vec![]).unwrap();
        assert_eq!(all(&h, Value::Int(7)), ["7", "*"]);
        let h = Hierarchy::integer(vec![10]).unwrap();
        assert_eq!(
            h.generalize(&Value::Int(i64::MAX), 1).unwrap(),
            "9223372036854775800-9223372036854775809"
        );
        assert_eq!(
            h.generalize(&Value::Int(i64::MIN), 1).unwrap(),
            "-9223372036854775810--9223372036854775801"
        );
    }

    #[test]
    fn integer_errors() {
        for (w, frag) in [
            (vec![0], "not positive"),
            (vec![-5], "not positive"),
            (vec![10, 5], "increase"),
            (vec![5, 5], "increase"),
            (vec![5, 10, 20, 50], "multiple"),
        ] {
            match Hierarchy::integer(w.clone()) {
                Err(e @ Error::InvalidHierarchy { .. }) => {
                    assert!(e.to_string().contains(frag), "{e}")
                }
                other => panic!("{w:?}: {other:?}"),
            }
        }
        let h = Hierarchy::integer_default();
        assert!(matches!(
            h.generalize(&Value::Num(1.5), 0),
            Err(Error::WrongType { .. })
        ));
        assert!(matches!(
            h.generalize(&Value::Text("1"), 0),
            Err(Error::WrongType { .. })
        ));
        assert!(matches!(
            h.generalize(&Value::Int(1), 9),
            Err(Error::LevelOutOfRange { .. })
        ));
        // an invalid definition built by hand is refused on use
        let bad = Hierarchy::Integer { widths: vec![3, 4] };
        assert!(matches!(
            bad.generalize(&Value::Int(1), 0),
            Err(Error::InvalidHierarchy { .. })
        ));
        assert_eq!(h.parse(" 42 ").unwrap(), Value::Int(42));
        assert!(matches!(h.parse("4.2"), Err(Error::InvalidValue { .. })));
    }

    #[test]
    fn numeric_levels() {
        let h = Hierarchy::numeric(vec![0.5, 1.0, 5.0]).unwrap();
        assert_eq!(h.levels(), 5);
        assert_eq!(
            all(&h, Value::Num(37.25)),
            ["37.25", "[37,37.5)", "[37,38)", "[35,40)", "*"]
        );
        assert_eq!(
            all(&h, Value::Num(-0.25)),
            ["-0.25", "[-0.5,0)", "[-1,0)", "[-5,0)", "*"]
        );
        assert_eq!(
            all(&h, Value::Int(3)),
            ["3", "[3,3.5)", "[3,4)", "[0,5)", "*"]
        );
        assert_eq!(h.generalize(&Value::Num(-0.0), 0).unwrap(), "0");
        let h = Hierarchy::numeric(vec![0.1, 0.2, 1.0]).unwrap();
        // no binary noise, and 0.3 falls in the band that prints as starting at 0.3
        assert_eq!(
            all(&h, Value::Num(0.3)),
            ["0.3", "[0.3,0.4)", "[0.2,0.4)", "[0,1)", "*"]
        );
        assert_eq!(
            all(&h, Value::Num(0.7)),
            ["0.7", "[0.7,0.8)", "[0.6,0.8)", "[0,1)", "*"]
        );
        let h = Hierarchy::numeric(vec![2500.0, 10_000.0]).unwrap();
        assert_eq!(
            h.generalize(&Value::Num(12_345.678), 1).unwrap(),
            "[10000,12500)"
        );
    }

    #[test]
    fn numeric_errors() {
        for (w, frag) in [
            (vec![0.0], "positive"),
            (vec![f64::NAN], "positive"),
            (vec![f64::INFINITY], "positive"),
            (vec![1.0, 0.5], "increase"),
            (vec![0.5, 1.25], "multiple"),
            (vec![1.0, 2.0, 3.0], "multiple"),
            (vec![1.0 / 3.0], "decimal places"),
        ] {
            match Hierarchy::numeric(w.clone()) {
                Err(e @ Error::InvalidHierarchy { .. }) => {
                    assert!(e.to_string().contains(frag), "{w:?}: {e}")
                }
                other => panic!("{w:?}: {other:?}"),
            }
        }
        let h = Hierarchy::numeric(vec![1.0]).unwrap();
        assert!(matches!(
            h.generalize(&Value::Num(f64::NAN), 0),
            Err(Error::InvalidValue { .. })
        ));
        assert!(matches!(
            h.generalize(&Value::Num(f64::INFINITY), 0),
            Err(Error::InvalidValue { .. })
        ));
        assert!(matches!(
            h.generalize(&Value::Num(1e300), 1),
            Err(Error::InvalidValue { .. })
        ));
        assert!(matches!(
            h.generalize(&Value::Int(i64::MAX), 0),
            Err(Error::InvalidValue { .. })
        ));
        assert!(matches!(
            h.generalize(&Value::Text("1"), 0),
            Err(Error::WrongType { .. })
        ));
        assert!(matches!(
            h.generalize(&Value::Num(1.0), 3),
            Err(Error::LevelOutOfRange { .. })
        ));
        assert_eq!(h.parse("2.5").unwrap(), Value::Num(2.5));
        assert!(matches!(h.parse("NaN"), Err(Error::InvalidValue { .. })));
        assert!(matches!(h.parse("x"), Err(Error::InvalidValue { .. })));
    }

    #[test]
    fn prefix_levels_and_errors() {
        let h = Hierarchy::prefix(5).unwrap();
        assert_eq!(h.levels(), 6);
        assert_eq!(
            all(&h, Value::Text("10115")),
            ["10115", "1011*", "101**", "10***", "1****", "*"]
        );
        let h1 = Hierarchy::prefix(1).unwrap();
        assert_eq!(all(&h1, Value::Text("A")), ["A", "*"]);
        let h3 = Hierarchy::prefix(3).unwrap();
        assert_eq!(all(&h3, Value::Text("äöü")), ["äöü", "äö*", "ä**", "*"]);
        assert!(matches!(
            Hierarchy::prefix(0),
            Err(Error::InvalidHierarchy { .. })
        ));
        assert!(matches!(
            h.generalize(&Value::Text("1011"), 0),
            Err(Error::InvalidValue { .. })
        ));
        assert!(matches!(
            h.generalize(&Value::Text("101155"), 0),
            Err(Error::InvalidValue { .. })
        ));
        assert!(matches!(
            h.generalize(&Value::Text("1011*"), 0),
            Err(Error::InvalidValue { .. })
        ));
        assert!(matches!(
            h.generalize(&Value::Int(10115), 0),
            Err(Error::WrongType { .. })
        ));
        assert!(matches!(
            h.generalize(&Value::Text("10115"), 6),
            Err(Error::LevelOutOfRange { .. })
        ));
        assert_eq!(h.parse(" 10115").unwrap(), Value::Text(" 10115"));
    }

    fn occupations() -> Hierarchy {
        Hierarchy::categorical([
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
        .unwrap()
    }

    #[test]
    fn categorical_levels() {
        let h = occupations();
        assert_eq!(h.levels(), 4);
        assert_eq!(
            all(&h, Value::Text("nurse")),
            ["nurse", "health", "services", "*"]
        );
        assert_eq!(
            all(&h, Value::Text("teacher")),
            ["teacher", "education", "services", "*"]
        );
        // shallower leaves keep their own name on the lowest levels
        assert_eq!(
            all(&h, Value::Text("welder")),
            ["welder", "welder", "industry", "*"]
        );
        assert_eq!(
            all(&h, Value::Text("retired")),
            ["retired", "retired", "retired", "*"]
        );
        let Hierarchy::Categorical(c) = &h else {
            unreachable!()
        };
        assert_eq!(c.height(), 3);
        assert_eq!(c.leaf_count(), 5);
        assert_eq!(
            c.leaves().collect::<Vec<_>>(),
            ["welder", "retired", "teacher", "nurse", "surgeon"]
        );
        assert_eq!(c.parent("nurse"), Some("health"));
        assert_eq!(c.parent("*"), None);
        assert_eq!(c.root(), "*");
        // the root prints as * whatever its name
        let h = Hierarchy::categorical([("F", "any"), ("M", "any")]).unwrap();
        assert_eq!(all(&h, Value::Text("F")), ["F", "*"]);
        assert_eq!(h.level_of(&Value::Text("F"), "*").unwrap(), Some(1));
        assert_eq!(h.level_of(&Value::Text("F"), "M").unwrap(), None);
    }

    #[test]
    fn categorical_errors() {
        let h = occupations();
        assert!(matches!(
            h.generalize(&Value::Text("pilot"), 0),
            Err(Error::UnknownValue { .. })
        ));
        assert!(matches!(
            h.generalize(&Value::Text("health"), 0),
            Err(Error::NotALeaf { .. })
        ));
        assert!(matches!(
            h.generalize(&Value::Text("*"), 0),
            Err(Error::NotALeaf { .. })
        ));
        assert!(matches!(
            h.generalize(&Value::Int(1), 0),
            Err(Error::WrongType { .. })
        ));
        assert!(matches!(
            h.generalize(&Value::Text("nurse"), 4),
            Err(Error::LevelOutOfRange { .. })
        ));

        let none: [(&str, &str); 0] = [];
        assert_eq!(Categorical::new(none), Err(Error::EmptyMapping));
        assert_eq!(
            Categorical::new([("a", "a")]),
            Err(Error::Cycle {
                path: vec!["a".into(), "a".into()]
            })
        );
        match Categorical::new([("a", "b"), ("b", "c"), ("c", "a"), ("x", "*")]) {
            Err(Error::Cycle { path }) => {
                assert_eq!(path.len(), 4);
                assert_eq!(path.first(), path.last());
            }
            other => panic!("{other:?}"),
        }
        match Categorical::new([("a", "b"), ("b", "a")]) {
            Err(e @ Error::Cycle { .. }) => assert!(e.to_string().contains("cycle")),
            other => panic!("{other:?}"),
        }
        match Categorical::new([("nurse", "health"), ("welder", "industry")]) {
            Err(e @ Error::MultipleRoots { .. }) => {
                assert_eq!(
                    e,
                    Error::MultipleRoots {
                        roots: vec!["health".into(), "industry".into()]
                    }
                );
                assert!(e.to_string().contains("common root"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Categorical::new([
                ("nurse", "health"),
                ("nurse", "care"),
                ("health", "*"),
                ("care", "*")
            ]),
            Err(Error::ConflictingParent {
                child: "nurse".into(),
                parents: ["health".into(), "care".into()]
            })
        );
        // the same pair twice is fine
        assert!(Categorical::new([("nurse", "health"), ("nurse", "health")]).is_ok());
        assert_eq!(
            Categorical::new([("*", "top"), ("a", "*")]),
            Err(Error::ReservedName { name: "*".into() })
        );
    }

    #[test]
    fn error_messages_name_the_problem() {
        let e = Hierarchy::prefix(5)
            .unwrap()
            .generalize(&Value::Text("123"), 0)
            .unwrap_err();
        assert_eq!(e.to_string(), "value \"123\" does not fit the prefix hierarchy: has 3 characters, the hierarchy expects exactly 5");
        let e = Error::LevelOutOfRange {
            level: 7,
            levels: 6,
        };
        assert_eq!(
            e.to_string(),
            "generalisation level 7 is out of range: this hierarchy has levels 0..=5"
        );
        let e = Error::UnknownValue {
            value: "pilot".into(),
        }
        .in_column("occupation", Some(3));
        assert!(e
            .to_string()
            .starts_with("column \"occupation\", record 3: value \"pilot\""));
        assert_eq!(
            e.root_cause(),
            &Error::UnknownValue {
                value: "pilot".into()
            }
        );
    }

    #[test]
    fn level_of_finds_ancestors() {
        let h = Hierarchy::date();
        let v = d(1987, 3, 14);
        assert_eq!(h.level_of(&v, "1985-1989").unwrap(), Some(3));
        assert_eq!(h.level_of(&v, "1988").unwrap(), None);
    }

    #[test]
    fn null_is_a_leaf_under_the_root_of_every_hierarchy() {
        let cat = Hierarchy::categorical([("nurse", "health"), ("health", "*")]).unwrap();
        for h in [
            Hierarchy::date(),
            Hierarchy::integer_default(),
            Hierarchy::numeric(vec![0.5, 1.0]).unwrap(),
            Hierarchy::prefix(3).unwrap(),
            cat,
        ] {
            let forms = all(&h, Value::Null);
            assert_eq!(forms.len(), h.levels());
            for (level, f) in forms.iter().enumerate() {
                let want = if level == h.top() { "*" } else { NULL_LABEL };
                assert_eq!(f, want, "{} level {level}", h.kind());
            }
            assert_eq!(h.level_of(&Value::Null, NULL_LABEL).unwrap(), Some(0));
            assert_eq!(h.level_of(&Value::Null, "*").unwrap(), Some(h.top()));
        }
        assert_eq!(Value::Null.to_string(), "NULL");
        assert_eq!(Value::Null.type_name(), "null");
        // the label is reserved: no category and no prefix code may be called so
        let e = Hierarchy::categorical([("NULL", "*")]).unwrap_err();
        assert_eq!(
            e,
            Error::ReservedName {
                name: "NULL".into()
            }
        );
        assert!(e.to_string().contains("reserved for the NULL value"));
        assert!(Hierarchy::categorical([("a", "NULL"), ("NULL", "*")]).is_err());
        // ... except as the root, which prints as *
        let h = Hierarchy::categorical([("a", "NULL")]).unwrap();
        assert_eq!(all(&h, Value::Text("a")), ["a", "*"]);
        let h = Hierarchy::prefix(4).unwrap();
        assert!(matches!(
            h.generalize(&Value::Text("NULL"), 0),
            Err(Error::InvalidValue { .. })
        ));
    }
}
