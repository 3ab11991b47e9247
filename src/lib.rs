//! pg_mseg: privacy-respecting direct marketing inside PostgreSQL.
//!
//! One module per concept (see docs/architecture.md). This file only wires them together:
//! the module magic, `_PG_init`, the cache invalidation hooks and the SQL bootstrap/finalize
//! scripts that surround the generated function definitions.

use pgrx::pg_sys;
use pgrx::prelude::*;

pub mod audit;
pub mod bulk_predicates;
pub mod catalog;
pub mod compat;
pub mod consent;
pub mod dump;
pub mod error;
pub mod export;
pub mod gucs;
pub mod import;
pub mod instance;
pub mod kanon;
pub mod keys;
pub mod kview;
pub mod linkage;
pub mod notices;
pub mod participants;
pub mod pool;
pub mod pool_persons;
pub mod predicate;
pub mod progress;
pub mod pseudonym;
pub mod row_predicates;
pub mod segments;
pub mod sizes;
pub mod sql_array;
pub mod token;

#[cfg(any(test, feature = "pg_test"))]
mod test_support;

::pgrx::pg_module_magic!(name, version);

/// Relcache invalidation: configuration or domain rows may have changed (see `config_changed`).
#[pg_guard]
unsafe extern "C-unwind" fn relcache_invalidated(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    catalog::note_catalog_change();
}

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: reading a PostgreSQL global set by the postmaster.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        error::boundary::<()>(|| Err(gucs::not_preloaded()));
    }
    gucs::init();
    use progress::PROGRESS;
    pgrx::pg_shmem_init!(PROGRESS);
    // SAFETY: registers a callback that only bumps a counter.
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(relcache_invalidated), pg_sys::Datum::from(0)) };
    gucs::mark_preloaded();
}

/// Statement trigger on pg_mseg's configuration tables: sends a relcache invalidation for the
/// table so every backend drops its cached domain versions and pseudonym rules at commit.
#[pg_trigger]
fn config_changed<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, std::convert::Infallible> {
    let relid = unsafe { (*trigger.trigger_data().tg_relation).rd_id };
    // SAFETY: queues a transactional invalidation message.
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
    Ok(None)
}

pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
pgrx::extension_sql_file!("../sql/audit.sql", name = "audit", requires = ["bootstrap"]);
pgrx::extension_sql_file!("../sql/consent.sql", name = "consent", requires = ["audit"]);
pgrx::extension_sql_file!("../sql/segments.sql", name = "segments", requires = ["consent"]);
pgrx::extension_sql_file!("../sql/twins.sql", name = "twins", requires = ["segments"]);
pgrx::extension_sql_file!("../sql/sizes.sql", name = "sizes", requires = ["twins"]);
pgrx::extension_sql_file!("../sql/kviews.sql", name = "kviews", requires = ["sizes"]);
pgrx::extension_sql_file!("../sql/linkage.sql", name = "linkage", requires = ["kviews"]);
pgrx::extension_sql_file!("../sql/pool_persons.sql", name = "pool_persons", requires = ["linkage"]);
pgrx::extension_sql_file!("../sql/participants.sql", name = "participants", requires = ["pool_persons"]);
pgrx::extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'pg_mseg'", "mseg.key_file = '/tmp/pg_mseg_test.key'"]
    }
}
