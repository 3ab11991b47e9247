//! Microsegments: definitions checked with PostgreSQL's own parser, and memberships kept exact by
//! statement-level triggers.
//!
//! Storage: `mseg.memberships` holds one row per subject with the array of segment ids it
//! belongs to, so one change to one subject rewrites at most one row, whatever the number of
//! segments. Every change of a set is appended to `mseg.membership_events` (joined / left).
//!
//! Upkeep: one static trigger function, `mseg.segments_trigger()`, fires once per statement on
//! the subject table and on every registered source table, with transition tables. It recomputes
//! the *set* of the affected subjects (idempotent; no counted deltas) with one generated query
//! that evaluates every segment and the subject's legal basis for each segment's purpose. The
//! generated SQL lives only in backend memory as prepared plans, rebuilt when the catalog changes,
//! so pg_dump/pg_restore need nothing but the configuration tables.
//!
//! Concurrency: before evaluating, a statement locks the membership rows of the subjects it
//! touches (creating empty rows where needed), then evaluates with a fresh snapshot. In READ
//! COMMITTED the second of two writers on one subject waits and then sees the first one's
//! committed data; in REPEATABLE READ and SERIALIZABLE the rows are written, not only locked, so
//! the second writer gets a serialization failure instead of evaluating a stale snapshot.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::rc::Rc;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, OwnedPreparedStatement, SpiClient};
use pgrx::PgRelation;

use crate::bulk_predicates::{BulkPredicate, SourceAggregates};
use crate::catalog::{self, require_subject_table, subject_table, SubjectTable};
use crate::error::{boundary, Code, MsegError, Result as MsegResult};
use crate::predicate;
use crate::progress;
use crate::row_predicates::RowPredicates;

mod analysis;
mod definitions;
mod memberships;
mod model;
mod partitions;
mod plans;
mod refresh;
mod sql;
mod transition;
mod triggers;
mod upkeep;
use self::analysis::*;
use self::definitions::*;
use self::model::*;
use self::plans::*;
use self::refresh::*;
use self::sql::*;
use self::transition::*;
use self::triggers::*;
use self::upkeep::*;

// what the rest of the extension uses
pub use self::analysis::{check_predicate, CheckedPredicate};
pub use self::definitions::check_segment_name;
pub use self::memberships::{for_each_membership, StoredSet};
pub use self::triggers::remember_partition;
