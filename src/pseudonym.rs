//! Keyed pseudonyms (HMAC-SHA256 under a domain key) and the pseudonym columns that the
//! extension's own trigger keeps up to date.
//!
//! Encoding: the 32-byte HMAC tag in unpadded base64url (RFC 4648 §5), always 43 characters of
//! `A-Z a-z 0-9 - _`. The input is the UTF-8 text of the value; a non-text source column is first
//! converted by its type's output function, so `42` and `'42'` give the same pseudonym.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use base64::Engine;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use pgrx::PgRelation;

use crate::catalog::{self, PseudonymColumn};
use crate::error::{boundary, Code, MsegError, Result as MsegResult};
use crate::keys::{self, DomainKeys};
use crate::progress;

/// Length of an encoded pseudonym.
pub const PSEUDONYM_LEN: usize = 43;

/// Name of the trigger on every table with pseudonym columns. It starts with `zz_` because
/// BEFORE ROW triggers fire in name order and ours must see the final source values.
pub const TRIGGER_NAME: &str = "zz_mseg_pseudonym";

pub fn encode_tag(tag: &[u8; 32], out: &mut [u8; PSEUDONYM_LEN]) {
    // 32 bytes always encode to exactly 43 unpadded characters.
    let _ = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_slice(tag, out);
}

/// The pseudonym of `value` under `keys`, as 43 ASCII bytes.
#[inline]
pub fn pseudonym_bytes(keys: &DomainKeys, value: &[u8]) -> [u8; PSEUDONYM_LEN] {
    let mut tag = keys.pseudonym.mac(value);
    let mut out = [0u8; PSEUDONYM_LEN];
    encode_tag(&tag, &mut out);
    keys::wipe(&mut tag);
    out
}

pub fn pseudonym_string(keys: &DomainKeys, value: &str) -> String {
    let b = pseudonym_bytes(keys, value.as_bytes());
    String::from_utf8_lossy(&b).into_owned()
}

/// Build a `text` datum from ASCII bytes without a Rust String in between.
fn text_datum(bytes: &[u8]) -> pg_sys::Datum {
    // SAFETY: cstring_to_text_with_len copies `len` bytes into a palloc'd varlena.
    unsafe { pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(bytes.as_ptr().cast(), bytes.len() as i32)) }
}

// ---------------------------------------------------------------------------------------------
// mseg.pseudonym(value, domain)
// ---------------------------------------------------------------------------------------------

thread_local! {
    /// The last domain used by mseg.pseudonym in this backend: a bulk call over one domain then
    /// costs a string comparison instead of a hash lookup per row.
    static LAST_DOMAIN: RefCell<Option<Rc<DomainKeys>>> = const { RefCell::new(None) };
    static LAST_DOMAIN_GENERATION: Cell<u64> = const { Cell::new(0) };
}

fn keys_for(domain: &str) -> MsegResult<Rc<DomainKeys>> {
    let generation = catalog::cache_generation();
    let hit = LAST_DOMAIN
        .with(|d| d.borrow().as_ref().filter(|k| k.domain == domain && LAST_DOMAIN_GENERATION.with(|g| g.get()) == generation).cloned());
    if let Some(k) = hit {
        return Ok(k);
    }
    let k = keys::domain_keys(domain)?;
    LAST_DOMAIN.with(|d| *d.borrow_mut() = Some(k.clone()));
    LAST_DOMAIN_GENERATION.with(|g| g.set(catalog::cache_generation()));
    Ok(k)
}

/// Keyed pseudonym of `value` in `domain`. NULL value gives NULL.
#[pg_extern(volatile, parallel_safe, name = "pseudonym")]
fn pseudonym_sql(value: Option<&str>, domain: Option<&str>) -> Option<String> {
    boundary(|| {
        let domain = domain.ok_or_else(|| MsegError::null_argument("domain"))?;
        // the internal domains (subject references in the ledger, erasure proofs) are nobody's oracle
        keys::check_not_internal(domain)?;
        let Some(value) = value else { return Ok(None) };
        let keys = keys_for(domain)?;
        Ok(Some(pseudonym_string(&keys, value)))
    })
}

// ---------------------------------------------------------------------------------------------
// The trigger
// ---------------------------------------------------------------------------------------------

/// A pseudonym column resolved against the table's current descriptor.
struct Rule {
    source_attno: i32,
    target_attno: i32,
    source_is_text: bool,
    source_output_fn: pg_sys::Oid,
    domain: String,
}

thread_local! {
    static RULES: RefCell<(u64, HashMap<pg_sys::Oid, Rc<Vec<Rule>>>)> = RefCell::new((0, HashMap::new()));
}

fn attnum_of(rel: pg_sys::Relation, name: &str) -> Option<(i32, pg_sys::Oid)> {
    // SAFETY: rel is an open relation whose descriptor we only read.
    unsafe {
        let desc = (*rel).rd_att;
        for i in 0..(*desc).natts {
            let att = crate::compat::tuple_desc_attr(desc, i as usize);
            if (*att).attisdropped {
                continue;
            }
            let n = std::ffi::CStr::from_ptr((*att).attname.data.as_ptr());
            if n.to_bytes() == name.as_bytes() {
                return Some((i + 1, (*att).atttypid));
            }
        }
    }
    None
}

fn is_text_like(typid: pg_sys::Oid) -> bool {
    typid == pg_sys::TEXTOID || typid == pg_sys::VARCHAROID || typid == pg_sys::BPCHAROID
}

fn rules_for(rel: pg_sys::Relation) -> MsegResult<Rc<Vec<Rule>>> {
    let relid = unsafe { (*rel).rd_id };
    let generation = catalog::cache_generation();
    let hit = RULES.with(|r| {
        let r = r.borrow();
        if r.0 == generation {
            r.1.get(&relid).cloned()
        } else {
            None
        }
    });
    if let Some(rules) = hit {
        return Ok(rules);
    }
    let mut rules = Vec::new();
    // a partition follows the configuration of its nearest configured ancestor (the trigger on a
    // partitioned table is cloned to its partitions; columns are matched by name)
    let mut configured = catalog::pseudonym_columns_of(relid)?;
    if configured.is_empty() {
        for ancestor in ancestors(relid)? {
            configured = catalog::pseudonym_columns_of(ancestor)?;
            if !configured.is_empty() {
                break;
            }
        }
    }
    for col in configured {
        let missing = |c: &str| {
            MsegError::new(
                Code::InvalidTable,
                format!("column \"{c}\" of pseudonym configuration is missing from {}", catalog::relation_name(relid)),
            )
            .hint("Use mseg.drop_pseudonym_column and mseg.add_pseudonym_column after renaming columns.")
        };
        let (source_attno, source_type) = attnum_of(rel, &col.source).ok_or_else(|| missing(&col.source))?;
        let (target_attno, _) = attnum_of(rel, &col.target).ok_or_else(|| missing(&col.target))?;
        let mut output_fn = pg_sys::InvalidOid;
        let mut varlena = false;
        // SAFETY: catalog lookup of the type's output function.
        unsafe { pg_sys::getTypeOutputInfo(source_type, &mut output_fn, &mut varlena) };
        rules.push(Rule {
            source_attno,
            target_attno,
            source_is_text: is_text_like(source_type),
            source_output_fn: output_fn,
            domain: col.domain,
        });
    }
    let rules = Rc::new(rules);
    RULES.with(|r| {
        let mut r = r.borrow_mut();
        if r.0 != generation {
            r.1.clear();
            r.0 = generation;
        }
        r.1.insert(relid, rules.clone());
    });
    Ok(rules)
}

/// The partition ancestors of `relid`, nearest first (none for a table that is not a partition).
fn ancestors(relid: pg_sys::Oid) -> MsegResult<Vec<pg_sys::Oid>> {
    catalog::relation_oids(
        "SELECT a.relid FROM pg_catalog.pg_partition_ancestors($1) WITH ORDINALITY a(relid, n) \
         WHERE a.relid OPERATOR(pg_catalog.<>) $1::pg_catalog.regclass ORDER BY a.n",
        relid,
    )
}

/// The leaf partitions of a partitioned table (the table itself when it is not partitioned).
pub fn leaves(relid: pg_sys::Oid) -> MsegResult<Vec<pg_sys::Oid>> {
    let mut out = catalog::relation_oids("SELECT relid FROM pg_catalog.pg_partition_tree($1) WHERE isleaf ORDER BY level, relid", relid)?;
    if out.is_empty() {
        out.push(relid);
    }
    Ok(out)
}

/// Compute every pseudonym column of the row being written; returns the modified tuple.
unsafe fn pseudonymise_row(td: &pg_sys::TriggerData) -> MsegResult<pg_sys::HeapTuple> {
    let event = td.tg_event;
    let is_row = event & pg_sys::TRIGGER_EVENT_ROW != 0;
    let is_before = event & pg_sys::TRIGGER_EVENT_TIMINGMASK == pg_sys::TRIGGER_EVENT_BEFORE;
    let op = event & pg_sys::TRIGGER_EVENT_OPMASK;
    if !is_row || !is_before || !(op == pg_sys::TRIGGER_EVENT_INSERT || op == pg_sys::TRIGGER_EVENT_UPDATE) {
        return Err(MsegError::new(Code::InvalidTable, "mseg.pseudonym_trigger() must be a BEFORE INSERT OR UPDATE row trigger")
            .hint("Let mseg.add_pseudonym_column create the trigger."));
    }
    let rel = td.tg_relation;
    let tuple = if op == pg_sys::TRIGGER_EVENT_INSERT { td.tg_trigtuple } else { td.tg_newtuple };
    let rules = rules_for(rel)?;
    if rules.is_empty() {
        return Err(MsegError::new(
            Code::InvalidTable,
            format!("table {} has no pseudonym columns registered", catalog::relation_name((*rel).rd_id)),
        )
        .detail("The pseudonym trigger refuses to run on a table that mseg.add_pseudonym_column did not configure.")
        .hint("Drop the trigger, or configure the table with mseg.add_pseudonym_column."));
    }
    let desc = (*rel).rd_att;
    let n = rules.len();
    let mut cols = Vec::with_capacity(n);
    let mut values = Vec::with_capacity(n);
    let mut nulls = Vec::with_capacity(n);
    for rule in rules.iter() {
        let mut isnull = false;
        let d = pg_sys::heap_getattr(tuple, rule.source_attno, desc, &mut isnull);
        cols.push(rule.target_attno);
        if isnull {
            values.push(pg_sys::Datum::from(0));
            nulls.push(true);
            continue;
        }
        let keys = keys_for(&rule.domain)?;
        let p = if rule.source_is_text {
            let t = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
            let bytes = pgrx::varlena::varlena_to_byte_slice(t);
            pseudonym_bytes(&keys, bytes)
        } else {
            let s = pg_sys::OidOutputFunctionCall(rule.source_output_fn, d);
            let p = pseudonym_bytes(&keys, std::ffi::CStr::from_ptr(s).to_bytes());
            pg_sys::pfree(s.cast());
            p
        };
        values.push(text_datum(&p));
        nulls.push(false);
    }
    Ok(pg_sys::heap_modify_tuple_by_cols(tuple, desc, n as i32, cols.as_mut_ptr(), values.as_mut_ptr(), nulls.as_mut_ptr()))
}

/// BEFORE INSERT OR UPDATE row trigger that fills the table's pseudonym columns.
/// Reads its configuration from `mseg.pseudonym_columns`; takes no arguments.
#[pg_trigger]
fn pseudonym_trigger<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, std::convert::Infallible> {
    let td = trigger.trigger_data();
    let tuple = boundary(|| unsafe { pseudonymise_row(td) });
    // SAFETY: the tuple was built for this relation's descriptor in the current memory context.
    let desc = unsafe { pgrx::PgTupleDesc::from_pg_unchecked((*td.tg_relation).rd_att) };
    Ok(Some(unsafe { PgHeapTuple::from_heap_tuple(desc, tuple) }))
}

// ---------------------------------------------------------------------------------------------
// Pseudonym columns: add, drop, backfill, rotate
// ---------------------------------------------------------------------------------------------

struct OpenRel(pg_sys::Relation);

impl OpenRel {
    fn open(relid: pg_sys::Oid) -> MsegResult<OpenRel> {
        // SAFETY: try_relation_open returns NULL for a missing relation instead of raising.
        let rel = unsafe { pg_sys::try_relation_open(relid, pg_sys::AccessShareLock as _) };
        if rel.is_null() {
            return Err(MsegError::new(Code::UndefinedObject, format!("relation with OID {} does not exist", u32::from(relid))));
        }
        Ok(OpenRel(rel))
    }
    fn relkind(&self) -> u8 {
        unsafe { (*(*self.0).rd_rel).relkind as u8 }
    }
}

impl Drop for OpenRel {
    fn drop(&mut self) {
        unsafe { pg_sys::relation_close(self.0, pg_sys::AccessShareLock as _) }
    }
}

fn check_table(relid: pg_sys::Oid) -> MsegResult<OpenRel> {
    let rel = OpenRel::open(relid)?;
    match rel.relkind() {
        // a partitioned table: the column and the row trigger are declared once on it, and
        // PostgreSQL carries both to every present and future partition
        b'r' | b'p' => Ok(rel),
        _ => Err(MsegError::new(Code::InvalidTable, format!("{} is not a table", catalog::relation_name(relid)))
            .hint("Pseudonym columns can be added to ordinary tables only.")),
    }
}

/// (Re)create the single pseudonym trigger of a table from its configured columns.
fn install_trigger(relid: pg_sys::Oid, columns: &[PseudonymColumn]) -> MsegResult<()> {
    let table = catalog::relation_name(relid);
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid OPERATOR(pg_catalog.=) $1::pg_catalog.oid \
         AND tgname OPERATOR(pg_catalog.=) $2::pg_catalog.name)",
        &[relid.into(), TRIGGER_NAME.into()],
    )?
    .unwrap_or(false);
    let mut sql = String::new();
    if exists {
        sql.push_str(&format!("DROP TRIGGER {} ON {table};", quote_identifier(TRIGGER_NAME)));
    }
    if !columns.is_empty() {
        let mut watched: Vec<String> = Vec::new();
        for c in columns {
            for name in [&c.source, &c.target] {
                let q = quote_identifier(name);
                if !watched.contains(&q) {
                    watched.push(q);
                }
            }
        }
        sql.push_str(&format!(
            "CREATE TRIGGER {} BEFORE INSERT OR UPDATE OF {} ON {table} FOR EACH ROW EXECUTE FUNCTION mseg.pseudonym_trigger();",
            quote_identifier(TRIGGER_NAME),
            watched.join(", ")
        ));
    }
    // Run as owner: the trigger function's EXECUTE privilege is not granted to anyone.
    catalog::update(|c| {
        c.update(&sql, None, &[])?;
        Ok(())
    })
}

/// Rewrite `target` in batches of heap blocks so the trigger recomputes it; progress is
/// published in `mseg.progress`. Returns the number of rows rewritten.
fn rewrite_in_batches(col: &PseudonymColumn, operation: progress::Operation, only_missing: bool) -> MsegResult<i64> {
    // a partitioned table is rewritten partition by partition (ctid ranges are per heap)
    let mut rows = 0;
    for leaf in leaves(col.relid)? {
        rows += rewrite_relation_in_batches(col, leaf, operation, only_missing)?;
    }
    Ok(rows)
}

/// Rewrite the pseudonym column `col` of one heap (`relid`: the table or one of its partitions).
pub fn rewrite_relation_in_batches(
    col: &PseudonymColumn,
    relid: pg_sys::Oid,
    operation: progress::Operation,
    only_missing: bool,
) -> MsegResult<i64> {
    let table = catalog::relation_name(relid);
    let blocks: i64 = Spi::get_one_with_args::<i64>(
        "SELECT (pg_catalog.pg_relation_size($1::pg_catalog.oid::pg_catalog.regclass) \
         OPERATOR(pg_catalog./) pg_catalog.current_setting('block_size')::pg_catalog.int8)",
        &[relid.into()],
    )?
    .unwrap_or(0);
    let batch = crate::gucs::backfill_batch_blocks();
    let slot = progress::start(operation, relid, &col.target, blocks);
    let filter = if only_missing { format!(" AND {} IS NULL", quote_identifier(&col.target)) } else { String::new() };
    let sql = format!(
        "UPDATE {table} SET {target} = NULL WHERE ctid OPERATOR(pg_catalog.>=) pg_catalog.tidin(pg_catalog.textout($1)) \
         AND ctid OPERATOR(pg_catalog.<) pg_catalog.tidin(pg_catalog.textout($2)) AND {source} IS NOT NULL{filter}",
        target = quote_identifier(&col.target),
        source = quote_identifier(&col.source),
    );
    let mut rows = 0i64;
    let mut start = 0i64;
    Spi::connect_mut(|c| -> MsegResult<()> {
        while start < blocks {
            let end = (start + batch).min(blocks);
            let lo = format!("({start},0)");
            // the last batch is open-ended so rows on pages added meanwhile are not missed
            let hi = if end >= blocks { format!("({},0)", u32::MAX) } else { format!("({end},0)") };
            let t = c.update(&sql, None, &[lo.as_str().into(), hi.as_str().into()])?;
            rows += t.len() as i64;
            start = end;
            progress::advance(slot, end, rows);
            pgrx::check_for_interrupts!();
        }
        Ok(())
    })?;
    progress::finish(slot, rows);
    Ok(rows)
}

#[pg_extern(volatile, parallel_unsafe)]
fn add_pseudonym_column(
    table: Option<PgRelation>,
    source: Option<&str>,
    domain: Option<&str>,
    column_name: default!(Option<&str>, "NULL"),
) -> String {
    boundary(|| {
        let relid = table.map(|t| t.oid()).ok_or_else(|| MsegError::null_argument("table"))?;
        let source = source.ok_or_else(|| MsegError::null_argument("source"))?;
        let domain = domain.ok_or_else(|| MsegError::null_argument("domain"))?;
        keys::check_domain_name(domain)?;
        keys::check_not_internal(domain)?;
        let rel = check_table(relid)?;
        let table_name = catalog::relation_name(relid);
        let target = column_name.map(str::to_owned).unwrap_or_else(|| format!("{source}_pseudonym"));
        if attnum_of(rel.0, source).is_none() {
            return Err(MsegError::new(Code::UndefinedObject, format!("column \"{source}\" of {table_name} does not exist"))
                .hint("Name an existing column as source."));
        }
        if attnum_of(rel.0, &target).is_some() {
            return Err(MsegError::new(Code::DuplicateObject, format!("column \"{target}\" of {table_name} already exists"))
                .hint("Pass another name with column_name => '...'."));
        }
        if target.is_empty() || target.len() >= pg_sys::NAMEDATALEN as usize {
            return Err(
                MsegError::new(Code::InvalidArgument, format!("invalid column name \"{target}\"")).hint("Column names have 1 to 63 bytes.")
            );
        }
        drop(rel);
        // The domain is created on first use; the key version starts at 1.
        if keys::current_version(domain).is_err() && catalog::create_domain(domain, Some("created by add_pseudonym_column"))? {
            pgrx::notice!("pg_mseg: created pseudonymisation domain \"{domain}\"");
        }
        keys::domain_keys(domain)?; // fails early and clearly when the key file is not usable
                                    // DDL runs as the caller: PostgreSQL itself checks that they own the table.
        Spi::run(&format!("ALTER TABLE {table_name} ADD COLUMN {} pg_catalog.text", quote_identifier(&target)))?;
        let col = PseudonymColumn { relid, source: source.to_owned(), target: target.clone(), domain: domain.to_owned() };
        catalog::insert_pseudonym_column(&col)?;
        install_trigger(relid, &catalog::pseudonym_columns_of(relid)?)?;
        let rows = rewrite_in_batches(&col, progress::Operation::Backfill, true)?;
        // the partitions now computed: a partition attached later is computed when it arrives
        for leaf in leaves(relid)?.into_iter().filter(|l| *l != relid) {
            crate::segments::remember_partition(leaf, relid, "pseudonyms")?;
        }
        catalog::audit(
            "pseudonym_column.add",
            &format!("{table_name}.{}", quote_identifier(&target)),
            serde_json::json!({"source": source, "domain": domain, "rows": rows}),
        )?;
        pgrx::notice!("pg_mseg: backfilled {rows} rows of {table_name}.{}", quote_identifier(&target));
        Ok(target)
    })
}

#[pg_extern(volatile, parallel_unsafe)]
fn drop_pseudonym_column(table: Option<PgRelation>, column_name: Option<&str>) -> bool {
    boundary(|| {
        let relid = table.map(|t| t.oid()).ok_or_else(|| MsegError::null_argument("table"))?;
        let column = column_name.ok_or_else(|| MsegError::null_argument("column_name"))?;
        let table_name = catalog::relation_name(relid);
        let configured = catalog::pseudonym_columns_of(relid)?;
        if !configured.iter().any(|c| c.target == column) {
            return Err(MsegError::new(
                Code::UndefinedObject,
                format!("{table_name}.{} is not a pseudonym column", quote_identifier(column)),
            )
            .hint("mseg.pseudonym_columns lists the pseudonym columns."));
        }
        // the trigger depends on the column: rebuild it without the column first
        catalog::delete_pseudonym_column(relid, column)?;
        install_trigger(relid, &catalog::pseudonym_columns_of(relid)?)?;
        Spi::run(&format!("ALTER TABLE {table_name} DROP COLUMN {}", quote_identifier(column)))?;
        catalog::audit("pseudonym_column.drop", &format!("{table_name}.{}", quote_identifier(column)), serde_json::json!({}))?;
        Ok(true)
    })
}

/// Give `domain` a new key version and recompute every pseudonym column in it.
/// Writers to those tables wait until the rotation commits, so no row keeps an old pseudonym.
#[pg_extern(volatile, parallel_unsafe)]
fn rotate_domain(domain: Option<&str>) -> i32 {
    boundary(|| {
        let domain = domain.ok_or_else(|| MsegError::null_argument("domain"))?;
        keys::check_not_internal(domain)?;
        keys::current_version(domain)?;
        let columns = catalog::pseudonym_columns_in_domain(domain)?;
        for c in &columns {
            Spi::run(&format!("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE", catalog::relation_name(c.relid)))?;
        }
        let version = catalog::bump_domain_version(domain)?.ok_or_else(|| keys::unknown_domain(domain))?;
        // make our own backend see the new version before the rewrite
        catalog::note_catalog_change();
        let mut rows = 0;
        for c in &columns {
            rows += rewrite_in_batches(c, progress::Operation::Rotate, false)?;
        }
        catalog::audit("domain.rotate", domain, serde_json::json!({"key_version": version, "columns": columns.len(), "rows": rows}))?;
        Ok(version)
    })
}

/// Keyed reference to a subject in the ledger and audit log (internal; not granted to anyone): the
/// pseudonym of the subject key's text in the internal domain mseg.subjects.
#[pg_extern(volatile, parallel_safe, name = "_subject_ref")]
fn subject_ref(subject: Option<&str>) -> Option<String> {
    boundary(|| {
        let Some(subject) = subject else { return Ok(None) };
        let keys = keys_for(keys::SUBJECT_DOMAIN)?;
        Ok(Some(pseudonym_string(&keys, subject)))
    })
}

#[cfg(any(test, feature = "pg_test"))]
pub fn pseudonym_for_test(value: &str, domain: &str) -> MsegResult<String> {
    Ok(pseudonym_string(&*keys::domain_keys(domain)?, value))
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::pseudonym;
    use crate::test_support::setup_domains;

    #[pg_test]
    fn pseudonym_is_deterministic_compact_and_domain_separated() {
        setup_domains();
        let a1 = pseudonym::pseudonym_for_test("alice@example.com", "t_one").unwrap();
        let a2 = pseudonym::pseudonym_for_test("alice@example.com", "t_one").unwrap();
        let b = pseudonym::pseudonym_for_test("alice@example.com", "t_two").unwrap();
        let c = pseudonym::pseudonym_for_test("alice@example.co", "t_one").unwrap();
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
        assert_ne!(a1, c);
        assert_eq!(a1.len(), pseudonym::PSEUDONYM_LEN);
        assert!(a1.bytes().all(|ch| ch.is_ascii_alphanumeric() || ch == b'-' || ch == b'_'));
        // SQL gives the same as Rust
        let sql = Spi::get_one::<String>("SELECT mseg.pseudonym('alice@example.com', 't_one')").unwrap().unwrap();
        assert_eq!(sql, a1);
    }

    #[pg_test]
    fn pseudonym_is_not_an_unkeyed_hash() {
        use sha2::{Digest, Sha256};
        setup_domains();
        let p = pseudonym::pseudonym_for_test("alice@example.com", "t_one").unwrap();
        let mut plain = [0u8; 43];
        let digest: [u8; 32] = Sha256::digest(b"alice@example.com").into();
        pseudonym::encode_tag(&digest, &mut plain);
        assert_ne!(p.as_bytes(), &plain[..]);
    }

    #[pg_test]
    fn pseudonym_of_null_is_null() {
        setup_domains();
        assert_eq!(Spi::get_one::<String>("SELECT mseg.pseudonym(NULL, 't_one')").unwrap(), None);
    }

    #[pg_test(error = "pseudonymisation domain \"no_such\" does not exist")]
    fn pseudonym_unknown_domain_errors() {
        Spi::run("SELECT mseg.pseudonym('x', 'no_such')").unwrap();
    }

    #[pg_test(error = "argument \"domain\" must not be NULL")]
    fn pseudonym_null_domain_errors() {
        Spi::run("SELECT mseg.pseudonym('x', NULL)").unwrap();
    }

    #[pg_test]
    fn rotation_changes_pseudonyms() {
        setup_domains();
        let before = Spi::get_one::<String>("SELECT mseg.pseudonym('v', 't_one')").unwrap().unwrap();
        let v = Spi::get_one::<i32>("SELECT mseg.rotate_domain('t_one')").unwrap().unwrap();
        assert_eq!(v, 2);
        let after = Spi::get_one::<String>("SELECT mseg.pseudonym('v', 't_one')").unwrap().unwrap();
        assert_ne!(before, after);
    }

    #[pg_test]
    fn pseudonym_column_follows_insert_update_and_forgery() {
        Spi::run(
            "CREATE TABLE t_cust(id int primary key, email text, n int);
             INSERT INTO t_cust SELECT g, 'u'||g||'@x.org', g FROM generate_series(1, 500) g;
             SELECT mseg.add_pseudonym_column('t_cust', 'email', 't_col');
             SELECT mseg.add_pseudonym_column('t_cust', 'n', 't_col', column_name => 'n_pn');
             INSERT INTO t_cust VALUES (501, 'new@x.org', 501), (502, NULL, NULL);
             UPDATE t_cust SET email = 'changed@x.org' WHERE id = 1;
             UPDATE t_cust SET email_pseudonym = 'forged' WHERE id = 2;",
        )
        .unwrap();
        let bad = Spi::get_one::<i64>(
            "SELECT count(*) FROM t_cust WHERE email_pseudonym IS DISTINCT FROM mseg.pseudonym(email, 't_col')
                OR n_pn IS DISTINCT FROM mseg.pseudonym(n::text, 't_col')",
        )
        .unwrap();
        assert_eq!(bad, Some(0));
        let nulls = Spi::get_one::<i64>("SELECT count(*) FROM t_cust WHERE email_pseudonym IS NULL").unwrap();
        assert_eq!(nulls, Some(1));
    }

    #[pg_test]
    fn rotation_rewrites_pseudonym_columns() {
        Spi::run(
            "CREATE TABLE t_rot(id int, email text);
             INSERT INTO t_rot SELECT g, 'u'||g FROM generate_series(1, 300) g;
             SELECT mseg.add_pseudonym_column('t_rot', 'email', 't_rot');
             CREATE TEMP TABLE before AS SELECT id, email_pseudonym FROM t_rot;
             SELECT mseg.rotate_domain('t_rot');",
        )
        .unwrap();
        let same =
            Spi::get_one::<i64>("SELECT count(*) FROM t_rot JOIN before USING (id) WHERE t_rot.email_pseudonym = before.email_pseudonym")
                .unwrap();
        assert_eq!(same, Some(0));
        let bad = Spi::get_one::<i64>("SELECT count(*) FROM t_rot WHERE email_pseudonym IS DISTINCT FROM mseg.pseudonym(email, 't_rot')")
            .unwrap();
        assert_eq!(bad, Some(0));
    }

    #[pg_test]
    fn drop_pseudonym_column_removes_column_and_trigger() {
        Spi::run(
            "CREATE TABLE t_drop(id int, email text);
             SELECT mseg.add_pseudonym_column('t_drop', 'email', 't_drop');
             SELECT mseg.drop_pseudonym_column('t_drop', 'email_pseudonym');",
        )
        .unwrap();
        let triggers = Spi::get_one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 't_drop'::regclass").unwrap();
        assert_eq!(triggers, Some(0));
        let cols = Spi::get_one::<i64>("SELECT count(*) FROM mseg.pseudonym_columns WHERE relid = 't_drop'::regclass").unwrap();
        assert_eq!(cols, Some(0));
    }

    #[pg_test]
    fn trigger_refuses_unconfigured_table() {
        Spi::run(
            "CREATE TABLE t_rogue(email text, p text);
                  CREATE TRIGGER rogue BEFORE INSERT ON t_rogue FOR EACH ROW EXECUTE FUNCTION mseg.pseudonym_trigger();",
        )
        .unwrap();
        let r = PgTryBuilder::new(|| Spi::run("INSERT INTO t_rogue VALUES ('x', NULL)").map(|_| true).unwrap_or(false))
            .catch_others(|_| false)
            .execute();
        assert!(!r, "the trigger must refuse a table it was not configured for");
    }
}
