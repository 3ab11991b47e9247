//! Every configuration parameter of pg_mseg, defined in one place.
//!
//! `mseg.key_file` is SIGHUP + superuser-only: application roles can neither `SHOW` it nor see it
//! in `pg_settings`. Because the library must be preloaded (see `lib.rs`), no backend ever holds
//! it as an unprotected placeholder.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::error::{Code, MsegError, Result};

static KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static CONTROLLER_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static BACKFILL_BATCH_BLOCKS: GucSetting<i32> = GucSetting::<i32>::new(1024);
static REFRESH_BATCH_SUBJECTS: GucSetting<i32> = GucSetting::<i32>::new(10000);
static MIN_GROUP_SIZE: GucSetting<i32> = GucSetting::<i32>::new(10);
static BULK_STATEMENT_SUBJECTS: GucSetting<i32> = GucSetting::<i32>::new(10000);
static SIZE_EPSILON: GucSetting<f64> = GucSetting::<f64>::new(0.5);

/// Heap blocks per batch of a backfill or rotation (at least 1).
pub fn backfill_batch_blocks() -> i64 {
    i64::from(BACKFILL_BATCH_BLOCKS.get().max(1))
}

/// Subjects per batch of a refresh or a segment (re)definition (at least 1).
pub fn refresh_batch_subjects() -> usize {
    REFRESH_BATCH_SUBJECTS.get().max(1) as usize
}

/// k for sizes shown outside the privileged roles (at least 2).
pub fn min_group_size() -> i64 {
    i64::from(MIN_GROUP_SIZE.get().max(2))
}

/// Privacy parameter of each published segment size (within the setting's bounds).
pub fn size_epsilon() -> f64 {
    SIZE_EPSILON.get().clamp(0.01, 10.0)
}

/// Subjects from which a statement's upkeep runs in bulk (at least 1).
pub fn bulk_statement_subjects() -> usize {
    BULK_STATEMENT_SUBJECTS.get().max(1) as usize
}

static IMPORT_MAX_LINE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(1 << 20);
static IMPORT_MAX_DUMP_SIZE: GucSetting<i32> = GucSetting::<i32>::new(2 << 20);
static IMPORT_MAX_JSON_DEPTH: GucSetting<i32> = GucSetting::<i32>::new(16);

/// Largest line of a Variant Twin dump the import reads, in bytes.
pub fn import_max_line_bytes() -> usize {
    IMPORT_MAX_LINE_SIZE.get().max(1024) as usize
}

/// Largest Variant Twin dump the import reads, in bytes.
pub fn import_max_dump_bytes() -> u64 {
    (IMPORT_MAX_DUMP_SIZE.get().max(1) as u64) * 1024
}

/// Deepest nesting of JSON objects and arrays in a dump line the import parses.
pub fn import_max_json_depth() -> usize {
    IMPORT_MAX_JSON_DEPTH.get().clamp(2, 64) as usize
}

/// Bumped whenever `mseg.key_file` is assigned (start-up, SIGHUP reload, `SET` by a superuser);
/// the key cache compares it and zeroises itself when it moved.
static KEY_FILE_GENERATION: AtomicU64 = AtomicU64::new(0);

pub fn key_file_generation() -> u64 {
    KEY_FILE_GENERATION.load(Ordering::Relaxed)
}

#[pg_guard]
unsafe extern "C-unwind" fn key_file_assigned(_new: *const std::ffi::c_char, _extra: *mut std::ffi::c_void) {
    KEY_FILE_GENERATION.fetch_add(1, Ordering::Relaxed);
}

pub fn key_file() -> Option<String> {
    KEY_FILE.get().and_then(|c| c.to_str().ok().map(str::to_owned)).filter(|s| !s.is_empty())
}

pub fn controller_id() -> Option<String> {
    CONTROLLER_ID.get().and_then(|c| c.to_str().ok().map(str::to_owned)).filter(|s| !s.is_empty())
}

static PRELOADED: AtomicBool = AtomicBool::new(false);

/// Every SQL entry point starts here (via `error::boundary`).
pub fn ensure_preloaded() -> Result<()> {
    if PRELOADED.load(Ordering::Relaxed) {
        Ok(())
    } else {
        Err(not_preloaded())
    }
}

/// Why the library must be preloaded.
pub fn not_preloaded() -> MsegError {
    MsegError::new(Code::NotPreloaded, "pg_mseg must be loaded through shared_preload_libraries")
        .detail("Loaded on demand, its settings (mseg.key_file) would be visible to every role as placeholders.")
        .hint("Add pg_mseg to shared_preload_libraries in postgresql.conf and restart the server.")
}

/// Defines the settings; called by `_PG_init` in the postmaster, which then marks the library
/// preloaded ([`mark_preloaded`]).
pub fn init() {
    // SAFETY: the assign hook only bumps an atomic counter and cannot raise.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"mseg.key_file",
            c"Path of the pg_mseg master key file (32 or more random bytes, mode 0600).",
            c"Per-domain keys are derived from it with HKDF-SHA256 inside the server; it never reaches SQL.",
            &KEY_FILE,
            GucContext::Sighup,
            GucFlags::SUPERUSER_ONLY,
            None,
            Some(key_file_assigned),
            None,
        );
    }
    GucRegistry::define_string_guc(
        c"mseg.controller_id",
        c"Identifier of this party: the controller named in its Variant Twin manifests, or the partner a dump must be addressed to.",
        c"",
        &CONTROLLER_ID,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"mseg.backfill_batch_blocks",
        c"Heap blocks rewritten per batch when a pseudonym column is backfilled or re-keyed.",
        c"Smaller batches report progress in mseg.progress more often.",
        &BACKFILL_BATCH_BLOCKS,
        1,
        1 << 20,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"mseg.refresh_batch_subjects",
        c"Subjects recomputed per batch by mseg.refresh_segments and segment (re)definitions.",
        c"Smaller batches report progress in mseg.progress more often and hold fewer row locks at once.",
        &REFRESH_BATCH_SUBJECTS,
        1,
        1 << 24,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"mseg.bulk_statement_subjects",
        c"A statement whose segment upkeep touches at least this many subjects is maintained in bulk.",
        c"In bulk it takes the memberships table lock instead of a row lock per subject (READ COMMITTED) \
          and reads each source with one aggregate query per subject instead of one subquery per predicate. Only a superuser may change it.",
        &BULK_STATEMENT_SUBJECTS,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"mseg.min_group_size",
        c"k: the fewest distinct subjects a group shown outside the privileged roles may describe.",
        c"Published segment sizes (mseg.segment_sizes, mseg.pool_segment_sizes) below it, after noise, are suppressed. Only a superuser may change it.",
        &MIN_GROUP_SIZE,
        2,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"mseg.import_max_line_size",
        c"Longest line of a Variant Twin dump mseg.import_variant_twins accepts.",
        c"A dump with a longer line is refused whole, before anything is parsed. Only a superuser may change it.",
        &IMPORT_MAX_LINE_SIZE,
        1024,
        1 << 30,
        GucContext::Suset,
        GucFlags::UNIT_BYTE,
    );
    GucRegistry::define_int_guc(
        c"mseg.import_max_dump_size",
        c"Largest Variant Twin dump mseg.import_variant_twins accepts.",
        c"A bigger dump is refused whole, before it is read into memory. Only a superuser may change it.",
        &IMPORT_MAX_DUMP_SIZE,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"mseg.import_max_json_depth",
        c"Deepest nesting of JSON objects and arrays in a Variant Twin dump line.",
        c"Twin lines nest three levels deep; deeper lines are refused before they are parsed. Only a superuser may change it.",
        &IMPORT_MAX_JSON_DEPTH,
        2,
        64,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"mseg.size_epsilon",
        c"Privacy parameter epsilon of each published segment size (two-sided geometric noise, scale 1/epsilon).",
        c"Smaller is more private and noisier. Used by mseg.publish_segment_sizes(); only a superuser may change it.",
        &SIZE_EPSILON,
        0.01,
        10.0,
        GucContext::Suset,
        GucFlags::default(),
    );
    // Reserve the prefix so a typo such as mseg.keyfile is reported instead of kept as a placeholder.
    unsafe {
        pg_sys::MarkGUCPrefixReserved(c"mseg".as_ptr());
    }
}

/// The library was loaded by the postmaster (`shared_preload_libraries`).
pub fn mark_preloaded() {
    PRELOADED.store(true, Ordering::Relaxed);
}
