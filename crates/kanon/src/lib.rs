//! # kanon — k-anonymity for pg_mseg
//!
//! A pure-Rust library (no PostgreSQL) that the `pg_mseg` extension wraps for its k-checked
//! views, `mseg.k_anonymity`, `mseg.generalize` and the anonymiser of the Variant Twin export.
//!
//! - [`Hierarchy`]: generalisation ladders with stable textual forms — `Date`
//!   (`1987-03-14` → `1987-03` → `1987` → `1985-1989` → `1980-1989` → `*`), `Integer` and
//!   `Numeric` bands, `Prefix` codes (`10115` → `1011*` → … → `*`) and `Categorical`
//!   mappings supplied by the DBA.
//! - [`measure_k`], [`equivalence_classes`], [`l_diversity`]: k and l of rows that are already
//!   generalised, counted in **distinct subjects**.
//! - [`Anonymizer`]: given streamed records, quasi columns with hierarchies, k, an optional l
//!   and a suppression limit, finds a generalisation along the hierarchies that meets k (and
//!   l) with little information loss, suppresses what cannot be covered and reports k and l
//!   reached, suppression, NCP and discernibility. [`GlobalRecoding`] is the full-domain
//!   baseline with the same interface; [`Algorithm::Ranges`] is Mondrian with
//!   partition-local releases (each class's own `lo-hi` ranges and sets of categories),
//!   which loses least (UCI Adult, k = 10: NCP 0.044 against 0.050 for anonypy's Mondrian).
//! - NULL ([`Value::Null`]) is a value of every hierarchy, a leaf under the root, never a
//!   reason to suppress.
//! - Segments ([`Anonymizer::with_segments`]): memberships released per class (those every
//!   subject of the class holds), attributes the range algorithm can split on; the report
//!   counts the memberships kept.
//!
//! ## Why Mondrian-style local recoding and not a full-domain lattice search (Flash)
//!
//! A full-domain search (ARX's Flash, OLA, Incognito) picks *one* level per column for the
//! whole table. It is optimal within that model, but the model is coarse: one rare
//! combination anywhere forces its column up for every record, or into the suppression
//! budget. On a census-like table with 8 quasi columns the model itself costs an order of
//! magnitude of precision (the reference numbers: NCP 0.44 with 0.9 % suppressed for a
//! greedy full-domain generaliser against NCP 0.051 with nothing suppressed for Mondrian).
//! The lattice also grows as the product of the hierarchies' level counts (about 390 000
//! nodes for the benchmark's 8 columns), and every node visited needs a grouping pass over
//! all records; Flash's pruning helps, but the worst case stays exponential in q.
//!
//! Top-down greedy partitioning (Mondrian, LeFevre et al. 2006) adapts the granularity to the
//! local density: dense regions (a big city's postcodes, common birth years) are specialised
//! further than sparse ones. Running it **along the hierarchies** (each split moves one column
//! one level down its hierarchy) keeps every output value a hierarchy node with its stable
//! textual form, so classes print identically, output values are always ancestors of the
//! input, and the downstream extension can compare and join them. Its cost is
//! O(N · q · depth), near-linear in N, and it never needs suppression to be valid: the root
//! partition (everything `*`) is valid whenever the whole input is, and every split keeps
//! every partition valid. Suppression is used only where it buys more precision than it
//! costs (see "The anonymiser" in the README for the exact rules).
//!
//! The price of local recoding: classes may overlap in the generalised space (a class
//! `10***` next to a class `101**`). Each printed class still has ≥ k distinct subjects, and a
//! record matching a person's true values is in a class with ≥ k subjects, which is the
//! k-anonymity guarantee the extension promises (SPEC rule 5). Consumers that need one
//! schema per column (e.g. a partner that wants "birth year" everywhere) use
//! [`GlobalRecoding`].
//!
//! See `README.md` for the memory bound, the metrics and the benchmark.

#![allow(clippy::needless_range_loop)]

mod anonymizer;
mod encode;
mod error;
mod global;
mod hierarchy;
mod measure;
mod mondrian;
mod ranges;
mod solution;

pub use anonymizer::{
    Algorithm, Anonymized, Anonymizer, Class, ColumnLevels, GlobalRecoding, Report, SegmentKept,
    DEFAULT_SEGMENT_WEIGHT, MAX_COLUMNS,
};
/// A fast non-cryptographic hasher for in-process keys (integers, codes, short strings).
pub use encode::{FxHasher, FxMap, FxSet};
pub use error::Error;
pub use hierarchy::{
    date_to_days, days_to_date, Categorical, Hierarchy, Value, DEFAULT_INTEGER_WIDTHS,
    MAX_DATE_DAYS, MIN_DATE_DAYS, NULL_LABEL,
};
pub use measure::{
    equivalence_classes, l_diversity, measure_k, ClassCounter, EquivalenceClass, KReport, LReport,
};
