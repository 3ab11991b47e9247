//! The one error type of the crate.

use std::fmt;

/// Everything that can go wrong in `kanon`.
///
/// Every variant carries enough context to be shown to a DBA as is (`Display`); the
/// extension maps the variants to SQLSTATEs. Errors about one input value are wrapped in
/// [`Error::InColumn`], which names the quasi column and the 0-based input record.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A hierarchy definition is unusable (bad widths, zero prefix length, ...).
    InvalidHierarchy {
        hierarchy: &'static str,
        reason: String,
    },
    /// The value has the wrong type for the hierarchy (e.g. text for a date hierarchy).
    WrongType {
        hierarchy: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    /// The value has the right type but does not fit the hierarchy (NaN, a postcode of the
    /// wrong length, a date outside years -9999..=9999, unparsable text, ...).
    InvalidValue {
        hierarchy: &'static str,
        value: String,
        reason: String,
    },
    /// A categorical value that the mapping does not mention at all.
    UnknownValue { value: String },
    /// A categorical value that is an inner node (a parent) of the mapping, not a leaf.
    NotALeaf { value: String },
    /// A generalisation level outside `0..levels`.
    LevelOutOfRange { level: usize, levels: usize },
    /// A categorical mapping without any pair.
    EmptyMapping,
    /// A categorical mapping whose parent links form a cycle; `path` lists it, first node
    /// repeated at the end (`a → b → a`).
    Cycle { path: Vec<String> },
    /// A categorical mapping with more than one top node (a node that is nobody's child).
    MultipleRoots { roots: Vec<String> },
    /// A categorical child given two different parents.
    ConflictingParent { child: String, parents: [String; 2] },
    /// `*` is reserved for the top of every hierarchy and `NULL` for the NULL leaf; either may
    /// only be the mapping's root.
    ReservedName { name: String },
    /// A parameter of the anonymiser is out of range (k = 0, a suppression limit outside
    /// [0, 1], duplicate column names, ...).
    InvalidParameter {
        parameter: &'static str,
        reason: String,
    },
    /// A record with a different number of quasi values than there are quasi columns.
    Arity {
        record: u64,
        expected: usize,
        found: usize,
    },
    /// `l` was requested but a record carries no sensitive value.
    MissingSensitive { record: u64 },
    /// An error about one value, with its column and record.
    InColumn {
        column: String,
        record: Option<u64>,
        source: Box<Error>,
    },
    /// More records, subjects or distinct values than the 32-bit encoding can hold.
    TooLarge { what: &'static str, limit: u64 },
}

impl Error {
    /// The innermost error (unwraps [`Error::InColumn`]).
    pub fn root_cause(&self) -> &Error {
        match self {
            Error::InColumn { source, .. } => source.root_cause(),
            e => e,
        }
    }

    pub(crate) fn in_column(self, column: &str, record: Option<u64>) -> Error {
        Error::InColumn {
            column: column.to_string(),
            record,
            source: Box::new(self),
        }
    }
}

fn list(names: &[String], sep: &str) -> String {
    const MAX: usize = 10;
    let mut s = names
        .iter()
        .take(MAX)
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(sep);
    if names.len() > MAX {
        s.push_str(&format!("{sep}... ({} in all)", names.len()));
    }
    s
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidHierarchy { hierarchy, reason } => {
                write!(f, "invalid {hierarchy} hierarchy: {reason}")
            }
            Error::WrongType {
                hierarchy,
                expected,
                found,
            } => write!(
                f,
                "a {hierarchy} hierarchy takes {expected} values, got a {found} value"
            ),
            Error::InvalidValue {
                hierarchy,
                value,
                reason,
            } => write!(f, "value {value} does not fit the {hierarchy} hierarchy: {reason}"),
            Error::UnknownValue { value } => write!(
                f,
                "value \"{value}\" is not in the categorical hierarchy (add a pair \"{value}\" -> parent to the mapping)"
            ),
            Error::NotALeaf { value } => write!(
                f,
                "value \"{value}\" is an inner node of the categorical hierarchy, not a leaf; only leaves are input values"
            ),
            Error::LevelOutOfRange { level, levels } => write!(
                f,
                "generalisation level {level} is out of range: this hierarchy has levels 0..={}",
                levels.saturating_sub(1)
            ),
            Error::EmptyMapping => write!(f, "the categorical mapping has no child -> parent pair"),
            Error::Cycle { path } => {
                write!(f, "the categorical mapping has a cycle: {}", list(path, " -> "))
            }
            Error::MultipleRoots { roots } => write!(
                f,
                "the categorical mapping has {} top nodes ({}); map each of them to one common root such as \"*\"",
                roots.len(),
                list(roots, ", ")
            ),
            Error::ConflictingParent { child, parents } => write!(
                f,
                "the categorical mapping gives \"{child}\" two parents, \"{}\" and \"{}\"",
                parents[0], parents[1]
            ),
            Error::ReservedName { name } if name == crate::hierarchy::NULL_LABEL => write!(
                f,
                "\"{name}\" is reserved for the NULL value, which every hierarchy has as a leaf under the root; rename the category (it may only be the root of the mapping)"
            ),
            Error::ReservedName { name } => write!(
                f,
                "\"{name}\" is reserved for the top of a hierarchy and may only appear as the root of the mapping"
            ),
            Error::InvalidParameter { parameter, reason } => {
                write!(f, "invalid parameter {parameter}: {reason}")
            }
            Error::Arity {
                record,
                expected,
                found,
            } => write!(
                f,
                "record {record} has {found} quasi values, expected {expected} (one per quasi column)"
            ),
            Error::MissingSensitive { record } => write!(
                f,
                "record {record} has no sensitive value, but l-diversity was requested"
            ),
            Error::InColumn {
                column,
                record,
                source,
            } => match record {
                Some(r) => write!(f, "column \"{column}\", record {r}: {source}"),
                None => write!(f, "column \"{column}\": {source}"),
            },
            Error::TooLarge { what, limit } => {
                write!(f, "too many {what}: at most {limit} are supported")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::InColumn { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}
