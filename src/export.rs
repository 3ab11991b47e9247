//! Partners, signed Variant Twin export, and the last-mile resolve (controller side).
//!
//! Dump format `mseg-vt/2`: JSON lines. Line 1 is the manifest, then the twins in the order of
//! their pseudonyms, then the tombstones in the order of their pseudonyms, last the trailer:
//! `{"type":"trailer","lines":N,"sha256":H,"signature":S}` where H is the SHA-256 (hex) of the N
//! preceding lines, each followed by `\n`, and S the Ed25519 signature (base64) of H's 32 bytes
//! under the controller's key (`mseg.controller_public_key()`). serde_json writes object keys
//! sorted, so a line's bytes are a function of its content. What a twin says and how twins are
//! grouped so that k holds over everything a partner receives, across every dump: `release`, and
//! docs/architecture.md ("Variant Twins").

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasherDefault;

use base64::Engine;
use ed25519_dalek::Signer;
use kanon::{FxHasher, FxMap};
use pgrx::prelude::*;
use pgrx::spi::quote_literal;
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

use crate::catalog;
use crate::error::{boundary, Code, MsegError, Result as MsegResult};
use crate::kanon as kanon_sql;
use crate::keys;
use crate::pseudonym;

mod release;
use release::{Coverage, Ctx, LegalClass, Record, Sets, Stored, Truth, NONE};

pub const FORMAT: &str = "mseg-vt/2";

pub fn partner_domain(partner: &str) -> String {
    format!("partner.{partner}")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// The controller's public key (base64), which trusted parties register.
#[pg_extern(volatile, parallel_safe)]
fn controller_public_key() -> String {
    boundary(|| Ok(b64(keys::signing_key()?.verifying_key().as_bytes())))
}

struct Partner {
    name: String,
    purposes: Vec<String>,
    k: i32,
    suppression_limit: f64,
    last_sequence: i64,
}

fn partner(name: &str) -> MsegResult<Partner> {
    catalog::select(|c| {
        let t = c.select(
            "SELECT name, purposes, k, suppression_limit, last_sequence FROM mseg.partners WHERE name OPERATOR(pg_catalog.=) $1",
            None,
            &[name.into()],
        )?;
        if t.is_empty() {
            return Err(MsegError::new(Code::UnknownPartner, format!("partner \"{name}\" does not exist"))
                .hint("Add it with mseg.add_partner(name, purposes, k)."));
        }
        let r = t.first();
        Ok(Partner {
            name: r.get::<String>(1)?.unwrap_or_default(),
            purposes: r.get::<Vec<String>>(2)?.unwrap_or_default(),
            k: r.get::<i32>(3)?.unwrap_or(10),
            suppression_limit: r.get::<f64>(4)?.unwrap_or(0.01),
            last_sequence: r.get::<i64>(5)?.unwrap_or(0),
        })
    })
}

fn check_purposes(purposes: &[String]) -> MsegResult<()> {
    if purposes.is_empty() {
        return Err(
            MsegError::new(Code::InvalidArgument, "a partner needs at least one purpose").hint("Pass purposes => '{direct_marketing}'.")
        );
    }
    for p in purposes {
        let ok = catalog::select(|c| {
            Ok(!c.select("SELECT 1 FROM mseg.purposes WHERE name OPERATOR(pg_catalog.=) $1", None, &[p.as_str().into()])?.is_empty())
        })?;
        if !ok {
            return Err(MsegError::new(Code::UnknownPurpose, format!("purpose \"{p}\" does not exist"))
                .hint("Define it with mseg.define_purpose first."));
        }
    }
    Ok(())
}

/// Add a trusted partner: its own pseudonymisation domain, the purposes it may receive, its k.
#[pg_extern(volatile, parallel_unsafe)]
fn add_partner(name: Option<&str>, purposes: Option<Vec<String>>, k: default!(i32, 10), suppression_limit: default!(f64, 0.01)) -> String {
    boundary(|| {
        let name = name.ok_or_else(|| MsegError::null_argument("name"))?;
        let purposes = purposes.ok_or_else(|| MsegError::null_argument("purposes"))?;
        let valid = name.len() <= 63
            && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !valid {
            return Err(MsegError::new(Code::InvalidArgument, format!("invalid partner name \"{name}\""))
                .hint("A partner name starts with a lower-case letter and has at most 63 characters from a-z, 0-9, _ -."));
        }
        if k < 2 {
            return Err(MsegError::new(Code::KAnonymity, format!("k must be at least 2, not {k}")));
        }
        if !(0.0..=1.0).contains(&suppression_limit) {
            return Err(MsegError::new(Code::KAnonymity, format!("suppression limit {suppression_limit} is outside [0, 1]")));
        }
        check_purposes(&purposes)?;
        let inserted = catalog::update(|c| {
            Ok(!c
                .update(
                    "INSERT INTO mseg.partners (name, purposes, k, suppression_limit) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (name) DO NOTHING RETURNING name",
                    None,
                    &[name.into(), purposes.clone().into(), k.into(), suppression_limit.into()],
                )?
                .is_empty())
        })?;
        if !inserted {
            return Err(MsegError::new(Code::DuplicateObject, format!("partner \"{name}\" already exists")));
        }
        // A partner added again after remove_partner must not get the pseudonyms it had: its old
        // dumps could be linked to the new ones (whose history would then not be the one its k
        // guarantee is about). The domain's key version moves on instead, unless a pseudonym
        // column uses the domain (its stored values must keep their version: rotate_domain
        // rewrites them, and is the way to do it then).
        let domain = partner_domain(name);
        let key_version = if keys::current_version(&domain).is_err() {
            catalog::create_domain(&domain, Some("partner domain"))?;
            1
        } else if catalog::pseudonym_columns_in_domain(&domain)?.is_empty() {
            let version = catalog::bump_domain_version(&domain)?.unwrap_or(1);
            catalog::note_catalog_change(); // our own backend sees the new version at once
            version
        } else {
            keys::current_version(&domain)?
        };
        catalog::audit(
            "partner.add",
            name,
            json!({"purposes": purposes, "k": k, "suppression_limit": suppression_limit, "key_version": key_version}),
        )?;
        Ok(name.to_owned())
    })
}

/// Remove a partner; what it holds is forgotten here (it must delete its copy by contract).
#[pg_extern(volatile, parallel_unsafe)]
fn remove_partner(name: Option<&str>) -> bool {
    boundary(|| {
        let name = name.ok_or_else(|| MsegError::null_argument("name"))?;
        partner(name)?;
        catalog::update(|c| {
            c.update("DELETE FROM mseg.partners WHERE name OPERATOR(pg_catalog.=) $1", None, &[name.into()])?;
            Ok(())
        })?;
        catalog::audit("partner.remove", name, json!({}))?;
        Ok(true)
    })
}

// ---------------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------------

/// What the partner holds, one row per subject it was ever sent (mseg.partner_twins).
struct StateRow {
    subject: i64,
    generation: i32,
    pseudonym: [u8; pseudonym::PSEUDONYM_LEN],
    /// the cohort it is in; None once sent as a tombstone
    cohort: Option<i64>,
}

/// A cohort the partner holds after this export.
struct Out {
    id: i64,
    record: Record,
    /// members the partner held before (state rows)
    held: Vec<u32>,
    /// members sent now for the first time under this pseudonym: (truth index, generation, pseudonym)
    new: Vec<(u32, i32, [u8; pseudonym::PSEUDONYM_LEN])>,
    /// the partner gets new lines for it (new, or its record changed)
    changed: bool,
    /// its row in mseg.partner_cohorts is written (new, record or member count changed)
    write: bool,
    /// its held members move to it from another cohort (their cohort column is rewritten)
    moved: bool,
}

impl Out {
    fn size(&self) -> usize {
        self.held.len() + self.new.len()
    }
}

/// A subject ends at the partner: its state row and why (None: looked up; the tombstone line
/// itself never says).
struct Tomb {
    row: u32,
    reason: Option<&'static str>,
}

/// The input of one export: the releasable subjects and everything their truth refers to.
struct Input {
    ctx: Ctx,
    truth: Truth,
    sets: Sets,
    /// processable for at least one of the partner's purposes now
    eligible: usize,
    /// eligible subjects that may not be released, and why (expiring this month, incomplete)
    unreleasable: FxMap<i64, &'static str>,
}

/// Read the subjects (their quasi values, legal basis per purpose, segment sets) the partner may
/// receive, under the calling statement's snapshot.
fn read_input(p: &Partner, now: &str) -> MsegResult<Input> {
    let subject = catalog::subject_table()?.ok_or_else(|| {
        MsegError::new(Code::SubjectTable, "no subject table is registered").hint("Register it first with mseg.register_subjects.")
    })?;
    // the registered table is read as mseg_upkeep, never as the caller or the superuser
    let t = kanon_sql::target(subject.relid, None, catalog::Who::Upkeep)?;
    let cols = kanon_sql::quasi_columns(&t, None)?;
    // the subject id: the key itself, or the id a uuid/text key is mapped to
    let key = subject.id_of_row("s");
    let quasi_exprs = cols.iter().map(|c| kanon_sql::generalized_expr("s", c, 0)).collect::<MsegResult<Vec<_>>>()?;
    // per partner purpose: the basis that applies now (the rule of mseg._processable) and, for a
    // grant, the month it expires in: its first instant (UTC) is what a twin may say
    let purposes: Vec<&str> = p.purposes.iter().map(String::as_str).collect();
    if purposes.len() > 64 {
        return Err(MsegError::new(Code::InvalidArgument, "a partner has more than 64 purposes"));
    }
    let joins = crate::consent::joins(&purposes, &key);
    let mut bases = Vec::new();
    let mut expiries = Vec::new();
    for n in 0..purposes.len() {
        let i = n + 1;
        bases.push(crate::consent::basis_in_force(i));
        // (a grant's expiry; it applies only when the grant is the basis in force, i.e. when the
        // basis is not legitimate interest: see below)
        expiries.push(format!(
            "CASE WHEN b{i}.consent_basis IS NOT NULL THEN pg_catalog.to_char(pg_catalog.date_trunc('month', \
             (b{i}.granted_at OPERATOR(pg_catalog.+) pp{i}.retention) AT TIME ZONE 'UTC'), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') END"
        ));
    }
    // one scalar column per value: key, quasi values, the basis per purpose, its expiry month per
    // purpose. The segment sets are read on their own (below) and found by key.
    let (nq, np) = (quasi_exprs.len(), purposes.len());
    let sql = format!(
        "SELECT {key}, {q}, {b}, {e} FROM {rel} s{id_join} {joins}",
        q = quasi_exprs.iter().map(|x| format!("({x})::pg_catalog.text")).collect::<Vec<_>>().join(", "),
        b = bases.iter().map(|x| format!("({x})::pg_catalog.text")).collect::<Vec<_>>().join(", "),
        e = expiries.join(", "),
        rel = subject.name,
        id_join = subject.id_join("s"),
    );
    // segments bound to one of the partner's purposes
    let seg_names: HashMap<i32, String> = catalog::select(|c| {
        let mut m = HashMap::new();
        for row in c.select(
            "SELECT segment_id, name FROM mseg.segments WHERE purpose OPERATOR(pg_catalog.=) ANY ($1)",
            None,
            &[p.purposes.clone().into()],
        )? {
            m.insert(row.get::<i32>(1)?.unwrap_or(0), row.get::<String>(2)?.unwrap_or_default());
        }
        Ok(m)
    })?;
    // sized for the table up front: growing vectors of a million entries costs copies and page faults
    let estimate = catalog::select(|c| {
        Ok(c.select(
            "SELECT GREATEST(reltuples, 0)::pg_catalog.int8 FROM pg_catalog.pg_class WHERE oid OPERATOR(pg_catalog.=) $1",
            None,
            &[subject.relid.into()],
        )?
        .first()
        .get_one::<i64>()?
        .unwrap_or(0))
    })?;
    let cap = usize::try_from(estimate).unwrap_or(0).min(100_000_000);
    let mut truth = Truth {
        nq,
        subjects: Vec::with_capacity(cap),
        quasi_text: String::new(),
        quasi_end: Vec::with_capacity(cap * nq),
        set: Vec::with_capacity(cap),
        legal: Vec::with_capacity(cap),
    };
    // a column without a hierarchy is categorical over its distinct values in the whole table
    let mut flat_values: Vec<Option<HashSet<String, BuildHasherDefault<FxHasher>>>> =
        cols.iter().map(|c| c.spec.is_none().then(Default::default)).collect();
    let mut basis_names: Vec<String> = Vec::new();
    let mut months: Vec<String> = Vec::new();
    let mut month_index: FxMap<String, u16> = FxMap::default();
    let mut legal_classes: Vec<LegalClass> = Vec::new();
    let mut legal_index: FxMap<Vec<(u8, u16)>, u32> = FxMap::default();
    let mut sets = Sets::default();
    let no_segments = sets.intern(&[]);
    // every subject's segment set (bound to the partner's purposes, an index into `sets`), by key;
    // arrays are decoded once per distinct array, identified by their bytes
    let mut raw_sets: FxMap<Vec<u8>, u32> = FxMap::default();
    let mut member_rows: Vec<(i64, u32)> = Vec::new();
    catalog::for_each_row(catalog::Who::Owner, "SELECT subject_key, segments FROM mseg.memberships", |values, nulls| {
        if values.len() != 2 || nulls.len() != 2 {
            return Err(MsegError::new(Code::General, "memberships: unexpected row shape"));
        }
        // SAFETY: subject_key is int8
        let subject = unsafe { i64::from_polymorphic_datum(values[0], nulls[0], pg_sys::INT8OID) }.unwrap_or(0);
        let set = if nulls[1] {
            no_segments
        } else {
            // SAFETY: segments is int4[], not NULL here; detoasting a short inline value is a
            // no-op, and its bytes identify the array
            let bytes = unsafe { pgrx::varlena::varlena_to_byte_slice(pg_sys::pg_detoast_datum_packed(values[1].cast_mut_ptr())) };
            match raw_sets.get(bytes) {
                Some(&n) => n,
                None => {
                    // SAFETY: as above
                    let all = unsafe { <Vec<i32> as FromDatum>::from_polymorphic_datum(values[1], false, pg_sys::INT4ARRAYOID) }
                        .unwrap_or_default();
                    let mut ids: Vec<i32> = all.into_iter().filter(|id| seg_names.contains_key(id)).collect();
                    ids.sort_unstable();
                    let n = sets.intern(&ids);
                    raw_sets.insert(bytes.to_vec(), n);
                    n
                }
            }
        };
        member_rows.push((subject, set));
        Ok(())
    })?;
    drop(raw_sets);
    let mut memberships = ByKey::new(member_rows);
    let mut eligible = 0usize;
    let mut unreleasable: FxMap<i64, &'static str> = FxMap::default();
    let mut legal_key: Vec<(u8, u16)> = Vec::with_capacity(np);
    let columns = 1 + nq + 2 * np;
    catalog::for_each_row(catalog::Who::Upkeep, &sql, |values, nulls| {
        if values.len() != columns || nulls.len() != columns {
            return Err(MsegError::new(Code::General, format!("export input: {} columns, expected {columns}", values.len())));
        }
        // SAFETY: every column but the first (int8) is cast to text in the query
        let text =
            |n: usize| -> Option<&str> { unsafe { <&str as FromDatum>::from_polymorphic_datum(values[n], nulls[n], pg_sys::TEXTOID) } };
        for (c, seen) in flat_values.iter_mut().enumerate() {
            if let (Some(seen), Some(v)) = (seen.as_mut(), text(1 + c)) {
                if !seen.contains(v) {
                    seen.insert(v.to_owned());
                }
            }
        }
        // per purpose: (basis, expiry month) or none (u8::MAX); a grant that expires this month
        // is not released for the purpose any more
        legal_key.clear();
        let mut any_basis = false;
        let mut mask = 0u64;
        for n in 0..np {
            let Some(b) = text(1 + nq + n) else {
                legal_key.push((u8::MAX, u16::MAX));
                continue;
            };
            any_basis = true;
            // legitimate interest has no expiry (a grant that ran out may still be on record)
            let expiry = if b == "legitimate_interest" { None } else { text(1 + nq + np + n) };
            if expiry.is_some_and(|e| e <= now) {
                legal_key.push((u8::MAX, u16::MAX));
                continue;
            }
            let b = match basis_names.iter().position(|x| x == b) {
                Some(n) => n as u8,
                None => {
                    basis_names.push(b.to_owned());
                    (basis_names.len() - 1) as u8
                }
            };
            let e = match expiry {
                None => u16::MAX,
                Some(e) => match month_index.get(e) {
                    Some(&m) => m,
                    None => {
                        if months.len() >= usize::from(u16::MAX) {
                            return Err(MsegError::new(Code::General, "too many distinct expiry months"));
                        }
                        months.push(e.to_owned());
                        month_index.insert(e.to_owned(), (months.len() - 1) as u16);
                        (months.len() - 1) as u16
                    }
                },
            };
            legal_key.push((b, e));
            mask |= 1 << n;
        }
        if !any_basis {
            return Ok(()); // processable for none of the partner's purposes
        }
        eligible += 1;
        // SAFETY: the first column is int8
        let subject = unsafe { i64::from_polymorphic_datum(values[0], nulls[0], pg_sys::INT8OID) }.unwrap_or(0);
        if mask == 0 {
            unreleasable.insert(subject, "expiring");
            return Ok(());
        }
        if (0..nq).any(|n| nulls[1 + n]) {
            // a NULL quasi value cannot be placed in a class
            unreleasable.insert(subject, "incomplete");
            return Ok(());
        }
        for n in 0..nq {
            truth.quasi_text.push_str(text(1 + n).unwrap_or(""));
            truth.quasi_end.push(truth.quasi_text.len());
        }
        let legal = match legal_index.get(legal_key.as_slice()) {
            Some(&l) => l,
            None => {
                let per = legal_key.iter().map(|&(b, e)| (b != u8::MAX).then_some((b, (e != u16::MAX).then_some(e)))).collect();
                legal_classes.push(LegalClass { per, mask });
                legal_index.insert(legal_key.clone(), (legal_classes.len() - 1) as u32);
                (legal_classes.len() - 1) as u32
            }
        };
        truth.legal.push(legal);
        // no membership row: no segments
        truth.set.push(memberships.position(subject).map(|p| memberships.entries[p].1).unwrap_or(no_segments));
        truth.subjects.push(subject);
        Ok(())
    })?;
    drop(memberships);
    let mut hierarchies = Vec::new();
    for (c, flat) in cols.iter().zip(flat_values) {
        hierarchies.push(match c.spec.as_deref() {
            Some(spec) => (*catalog::as_upkeep(|| kanon_sql::hierarchy(spec))?).clone(),
            None => kanon_sql::flat_hierarchy_of(flat.unwrap_or_default())?,
        });
    }
    let seg_ids = seg_names.iter().map(|(id, n)| (n.clone(), *id)).collect();
    let ctx = Ctx {
        columns: cols.iter().map(|c| c.name.clone()).collect(),
        specs: cols.iter().map(|c| c.spec.clone()).collect(),
        hierarchies,
        purposes: p.purposes.clone(),
        seg_names,
        seg_ids,
        basis_names,
        months,
        legal_classes,
        k: p.k as usize,
    };
    Ok(Input { ctx, truth, sets, eligible, unreleasable })
}

/// What the partner holds (every subject it was ever sent), sorted by subject.
fn read_state(partner: &str) -> MsegResult<Vec<StateRow>> {
    let mut rows = Vec::new();
    catalog::for_each_row(
        catalog::Who::Owner,
        &format!(
            "SELECT subject_key, generation, pseudonym, cohort FROM mseg.partner_twins WHERE partner OPERATOR(pg_catalog.=) {}",
            quote_literal(partner)
        ),
        |values, nulls| {
            if values.len() != 4 || nulls.len() != 4 {
                return Err(MsegError::new(Code::General, "partner state: unexpected row shape"));
            }
            // SAFETY: subject_key int8, generation int4, pseudonym text, cohort int8
            let (subject, generation, pn, cohort) = unsafe {
                (
                    i64::from_polymorphic_datum(values[0], nulls[0], pg_sys::INT8OID),
                    i32::from_polymorphic_datum(values[1], nulls[1], pg_sys::INT4OID),
                    <&str as FromDatum>::from_polymorphic_datum(values[2], nulls[2], pg_sys::TEXTOID),
                    i64::from_polymorphic_datum(values[3], nulls[3], pg_sys::INT8OID),
                )
            };
            let pseudonym: [u8; pseudonym::PSEUDONYM_LEN] = pn
                .and_then(|p| p.as_bytes().try_into().ok())
                .ok_or_else(|| MsegError::new(Code::General, "partner state: a stored pseudonym is malformed"))?;
            rows.push(StateRow { subject: subject.unwrap_or(0), generation: generation.unwrap_or(0), pseudonym, cohort });
            Ok(())
        },
    )?;
    rows.sort_unstable_by_key(|r| r.subject);
    Ok(rows)
}

/// The cohorts' records (None: unreadable, so every member is regrouped).
fn read_cohorts(partner: &str) -> MsegResult<FxMap<i64, Option<Stored>>> {
    catalog::select(|c| {
        let mut m = FxMap::default();
        for row in c.select(
            "SELECT cohort, record::pg_catalog.text FROM mseg.partner_cohorts WHERE partner OPERATOR(pg_catalog.=) $1",
            None,
            &[partner.into()],
        )? {
            let id = row.get::<i64>(1)?.unwrap_or(0);
            let stored = row.get::<String>(2)?.and_then(|t| serde_json::from_str::<Stored>(&t).ok());
            m.insert(id, stored);
        }
        Ok(m)
    })
}

/// The pseudonym of a subject in a partner's domain, generation `g`: generation 0 is the
/// pseudonym of the key's text; a twin that ended (tombstone) and is released again later gets the
/// next generation, the pseudonym of `<key>/<g>`, unlinkable to its earlier one.
fn twin_pseudonym(keys: &keys::DomainKeys, subject: i64, generation: i32) -> [u8; pseudonym::PSEUDONYM_LEN] {
    let mut digits = [0u8; 20];
    let key = decimal(subject, &mut digits);
    if generation == 0 {
        return pseudonym::pseudonym_bytes(keys, key);
    }
    let mut text = Vec::with_capacity(32);
    text.extend_from_slice(key);
    text.push(b'/');
    text.extend_from_slice(generation.to_string().as_bytes());
    pseudonym::pseudonym_bytes(keys, &text)
}

/// The decimal text of `v` (what `v.to_string()` gives), written into `buf`.
fn decimal(v: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut n = v.unsigned_abs();
    let mut pos = buf.len();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        pos -= 1;
        buf[pos] = b'-';
    }
    &buf[pos..]
}

/// Prepare the dump and record what the partner will hold; the lines stream from the result.
///
/// Every twin is in a cohort (see `release`). Per export, for each cohort the partner holds:
/// members that may no longer be released (withdrawn, objected, restricted, erased, expiring,
/// out of scope) end with a tombstone, as a batch when at least k of them leave and at least k
/// stay; otherwise the whole cohort ends, and its other members are released again under new
/// pseudonyms, grouped with the other subjects waiting to be released. A cohort whose record no
/// longer holds for every member (a changed value, a segment left, a basis changed, its expiry
/// reached) is regrouped over its own members: they keep their pseudonyms and all get the new
/// record (parts of at least k each). Subjects not held (new, or ended) are grouped among
/// themselves, per set of purposes, and released only in groups of at least k; the rest wait.
fn build_export(p: &Partner, mode: Mode) -> MsegResult<ExportStream> {
    let delta = mode == Mode::Delta;
    // a restored, cloned or promoted copy must not reuse the original's sequence numbers
    crate::instance::check_before_export()?;
    let controller = crate::gucs::controller_id().ok_or_else(|| {
        MsegError::new(Code::InvalidArgument, "mseg.controller_id is not set")
            .hint("Set mseg.controller_id in postgresql.conf to this controller's name, then reload.")
    })?;
    let now = catalog::query_one::<String>("SELECT pg_catalog.to_char(pg_catalog.now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')", &[])?
        .unwrap_or_default();
    let sequence = p.last_sequence + 1;
    let Input { ctx, truth, mut sets, eligible, unreleasable } = read_input(p, &now)?;
    let k = ctx.k;
    let state = read_state(&p.name)?;
    let stored = read_cohorts(&p.name)?;
    // releasable subject <-> state row
    let mut truth_of_state: Vec<u32> = vec![NONE; state.len()];
    let mut state_of_truth: Vec<u32> = vec![NONE; truth.len()];
    {
        let mut by_key = ByKey::new(state.iter().enumerate().map(|(j, r)| (r.subject, j as u32)).collect());
        for (i, &s) in truth.subjects.iter().enumerate() {
            if let Some(pos) = by_key.position(s) {
                let j = by_key.entries[pos].1;
                state_of_truth[i] = j;
                truth_of_state[j as usize] = i as u32;
            }
        }
    }
    let mask_of = |i: u32| ctx.legal_classes.get(truth.legal[i as usize] as usize).map(|l| l.mask).unwrap_or(0);
    let mut next_id = 0i64;
    let mut new_id = || {
        next_id += 1;
        (sequence << 24) + next_id
    };
    let mut outs: Vec<Out> = Vec::new();
    let mut tombs: Vec<Tomb> = Vec::new();
    let mut tomb_batches: Vec<usize> = Vec::new();
    let mut rejoin: Vec<u32> = Vec::new();
    let mut runs = (0usize, 0f64); // records anonymised, their NCP sum
    let mut regrouped_cohorts = 0usize;
    // the held twins by cohort
    let mut members_of: FxMap<i64, Vec<u32>> = FxMap::default();
    for (j, r) in state.iter().enumerate() {
        if let Some(c) = r.cohort {
            members_of.entry(c).or_default().push(j as u32);
        }
    }
    let mut cohort_ids: Vec<i64> = members_of.keys().copied().collect();
    cohort_ids.sort_unstable();
    {
        let mut coverage = Coverage::new(&ctx, &truth);
        for cid in cohort_ids {
            let rows = members_of.remove(&cid).unwrap_or_default();
            let (stay, leave): (Vec<u32>, Vec<u32>) = rows.iter().partition(|&&j| truth_of_state[j as usize] != NONE);
            // the whole cohort ends; those who may still be released wait for a new group
            let dissolve = |stay: &[u32], leave: &[u32], tombs: &mut Vec<Tomb>, batches: &mut Vec<usize>, rejoin: &mut Vec<u32>| {
                tombs.extend(leave.iter().map(|&row| Tomb { row, reason: None }));
                tombs.extend(stay.iter().map(|&row| Tomb { row, reason: Some("regrouped") }));
                batches.push(stay.len() + leave.len());
                rejoin.extend(stay.iter().map(|&j| truth_of_state[j as usize]));
            };
            let record = stored.get(&cid).and_then(|s| s.as_ref());
            if mode == Mode::Refresh {
                // every cohort ends; everyone is grouped afresh under a new pseudonym
                tombs.extend(leave.iter().map(|&row| Tomb { row, reason: None }));
                tombs.extend(stay.iter().map(|&row| Tomb { row, reason: Some("refreshed") }));
                tomb_batches.push(stay.len() + leave.len());
                rejoin.extend(stay.iter().map(|&j| truth_of_state[j as usize]));
                continue;
            }
            if !leave.is_empty() {
                if leave.len() >= k && stay.len() >= k {
                    tombs.extend(leave.iter().map(|&row| Tomb { row, reason: None }));
                    tomb_batches.push(leave.len());
                } else {
                    dissolve(&stay, &leave, &mut tombs, &mut tomb_batches, &mut rejoin);
                    continue;
                }
            }
            if stay.len() < k {
                dissolve(&stay, &[], &mut tombs, &mut tomb_batches, &mut rejoin);
                continue;
            }
            // is the record still true of every member (and made under the current columns)?
            let current = record.filter(|s| s.columns == ctx.columns && s.hierarchies == ctx.specs && s.purposes == ctx.purposes);
            let mut fresh = current.is_some_and(|s| s.record.expires_at().is_none_or(|e| e > now.as_str()));
            if let (true, Some(s)) = (fresh, current) {
                let resolved = coverage.resolve(&s.record);
                for &j in &stay {
                    if !coverage.covers(&resolved, &sets, truth_of_state[j as usize] as usize)? {
                        fresh = false;
                        break;
                    }
                }
            }
            if let (true, Some(s)) = (fresh, current) {
                outs.push(Out {
                    id: cid,
                    record: s.record.clone(),
                    held: stay,
                    new: Vec::new(),
                    changed: false,
                    write: !leave.is_empty(),
                    moved: false,
                });
                continue;
            }
            // regroup the cohort over its own members: they keep their pseudonyms. A twin never
            // loses a purpose its subject still allows, so members are regrouped per set of
            // purposes; when a set has fewer than k members, or a group cannot be formed, the
            // cohort ends instead and its members are grouped afresh with everyone waiting
            let mut by_mask: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
            for &j in &stay {
                let i = truth_of_state[j as usize];
                by_mask.entry(mask_of(i)).or_default().push(i);
            }
            let mut g = release::Grouping::default();
            for members in by_mask.values() {
                if members.len() < k {
                    g.incompatible = true;
                    break;
                }
                let part = release::group(&ctx, &truth, &mut sets, members, 0.0)?;
                g.incompatible |= part.incompatible || !part.unplaced.is_empty();
                g.records += part.records;
                g.ncp_sum += part.ncp_sum;
                g.parts.extend(part.parts);
            }
            if g.incompatible || g.parts.is_empty() {
                dissolve(&stay, &[], &mut tombs, &mut tomb_batches, &mut rejoin);
                continue;
            }
            regrouped_cohorts += 1;
            runs.0 += g.records;
            runs.1 += g.ncp_sum;
            let mut parts = g.parts;
            parts.sort_by(|a, b| b.1.len().cmp(&a.1.len()));
            let old = current.map(|s| &s.record);
            for (n, (record, part)) in parts.into_iter().enumerate() {
                let changed = old != Some(&record);
                let held: Vec<u32> = part.iter().map(|&i| state_of_truth[i as usize]).collect();
                let (id, moved) = if n == 0 { (cid, false) } else { (new_id(), true) };
                outs.push(Out { id, record, held, new: Vec::new(), changed, write: true, moved });
            }
        }
    }
    // subjects not held: new, ended earlier, or from a cohort that ended now; grouped per set of
    // purposes, released only in groups of at least k
    let keys = keys::domain_keys(&partner_domain(&p.name))?;
    let mut joiners: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for (i, &j) in state_of_truth.iter().enumerate() {
        if j == NONE || state[j as usize].cohort.is_none() {
            joiners.entry(mask_of(i as u32)).or_default().push(i as u32);
        }
    }
    for &i in &rejoin {
        joiners.entry(mask_of(i)).or_default().push(i);
    }
    let mut pending = 0usize;
    let mut first_released = 0usize;
    for members in joiners.values_mut() {
        members.sort_unstable();
        let g = release::group(&ctx, &truth, &mut sets, members, p.suppression_limit)?;
        runs.0 += g.records;
        runs.1 += g.ncp_sum;
        pending += g.unplaced.len();
        for (record, part) in g.parts {
            let new = part
                .iter()
                .map(|&i| {
                    let j = state_of_truth[i as usize];
                    let generation = if j == NONE { 0 } else { state[j as usize].generation.saturating_add(1) };
                    if j == NONE {
                        first_released += 1;
                    }
                    (i, generation, twin_pseudonym(&keys, truth.subjects[i as usize], generation))
                })
                .collect();
            outs.push(Out { id: new_id(), record, held: Vec::new(), new, changed: true, write: true, moved: false });
        }
    }
    // why each leaving subject ended (counted in the manifest; tombstones do not say)
    let leaving: Vec<i64> = tombs
        .iter()
        .filter(|t| t.reason.is_none())
        .map(|t| state[t.row as usize].subject)
        .filter(|s| !unreleasable.contains_key(s))
        .collect();
    let reasons = tombstone_reasons(&leaving)?;
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    let mut erased: Vec<i64> = Vec::new();
    for t in &mut tombs {
        let s = state[t.row as usize].subject;
        let reason = t.reason.or_else(|| unreleasable.get(&s).copied()).unwrap_or_else(|| match reasons.get(&s).map(String::as_str) {
            Some("erased") => "erased",
            Some("restricted") => "restricted",
            Some("objected") => "objected",
            Some("withdrawn") => "withdrawn",
            _ => "out_of_scope",
        });
        t.reason = Some(reason);
        *by_reason.entry(reason).or_default() += 1;
        if reason == "erased" {
            erased.push(s);
        }
    }
    // the lines: twins by pseudonym (a keyed hash: its order says nothing of keys or of the
    // order subjects were added), then tombstones by pseudonym
    let mut emit: Vec<([u8; pseudonym::PSEUDONYM_LEN], u32)> = Vec::new();
    for (n, o) in outs.iter().enumerate() {
        if !delta || o.changed {
            emit.extend(o.held.iter().map(|&j| (state[j as usize].pseudonym, n as u32)));
            emit.extend(o.new.iter().map(|&(_, _, pn)| (pn, n as u32)));
        }
    }
    // by the first 8 bytes as one integer (ASCII, so the same order), the rest only on a tie
    let prefix = |p: &[u8; pseudonym::PSEUDONYM_LEN]| u64::from_be_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]]);
    emit.sort_unstable_by(|a, b| prefix(&a.0).cmp(&prefix(&b.0)).then_with(|| a.cmp(b)));
    // tombstones only in a delta: a full dump lists what the partner holds, and its import
    // replaces everything, so a twin left out has ended
    let mut tomb_pseudonyms: Vec<[u8; pseudonym::PSEUDONYM_LEN]> =
        if delta { tombs.iter().map(|t| state[t.row as usize].pseudonym).collect() } else { Vec::new() };
    tomb_pseudonyms.sort_unstable();
    let tombstone_lines: Vec<String> = tomb_pseudonyms
        .iter()
        .map(|pn| format!("{{\"pseudonym\":\"{}\",\"type\":\"tombstone\"}}", String::from_utf8_lossy(pn)))
        .collect();
    // what the partner holds after this dump, grouped by every released field but the pseudonym
    let mut held_groups: FxMap<&Record, usize> = FxMap::default();
    let mut dump_groups: FxMap<&Record, usize> = FxMap::default();
    let mut k_history = usize::MAX;
    let (mut true_memberships, mut kept_memberships) = (0usize, 0usize);
    let nq = ctx.columns.len();
    let mut levels: Vec<(usize, usize)> = vec![(usize::MAX, 0); nq];
    let mut shown: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for o in &outs {
        let size = o.size();
        *held_groups.entry(&o.record).or_default() += size;
        if !delta || o.changed {
            *dump_groups.entry(&o.record).or_default() += size;
        }
        k_history = k_history.min(size);
        kept_memberships += o.record.segments.len() * size;
        for i in o.held.iter().map(|&j| truth_of_state[j as usize]).chain(o.new.iter().map(|n| n.0)) {
            true_memberships += sets.get(truth.set[i as usize]).len();
        }
        for (c, &l) in o.record.levels.iter().enumerate().take(nq) {
            levels[c] = (levels[c].0.min(usize::from(l)), levels[c].1.max(usize::from(l)));
        }
        shown.extend(o.record.segments.iter().map(String::as_str));
    }
    for &b in &tomb_batches {
        k_history = k_history.min(b);
    }
    let held: usize = held_groups.values().sum();
    let k_reached = held_groups.values().min().copied().unwrap_or(0);
    let k_in_dump = dump_groups.values().min().copied().unwrap_or(0);
    let discernibility: u64 = held_groups.values().map(|&n| (n as u64) * (n as u64)).sum();
    let held_list: Vec<(&Record, usize)> = held_groups.iter().map(|(r, n)| (*r, *n)).collect();
    let ncp_held = release::held_ncp(&ctx, &truth, &held_list)?;
    drop((held_list, held_groups, dump_groups));
    let levels_json: BTreeMap<&str, Json> = ctx
        .columns
        .iter()
        .zip(&ctx.hierarchies)
        .zip(&levels)
        .map(|((c, h), &(min, max))| {
            let top = h.top();
            let (min, max) = if min == usize::MAX { (top, top) } else { (min, max) };
            (c.as_str(), json!({"min": min, "max": max, "top": top}))
        })
        .collect();
    let twin_lines = emit.len();
    let manifest = json!({
        "type": "manifest",
        "format": FORMAT,
        "controller": controller,
        "partner": p.name,
        "sequence": sequence,
        "follows": if p.last_sequence == 0 { Json::Null } else { Json::from(p.last_sequence) },
        "mode": if delta { "delta" } else { "full" },
        "refresh": mode == Mode::Refresh,
        "created_at": now,
        "purposes": p.purposes,
        "time_granularity": "month",
        "k_required": p.k,
        "k_reached": k_reached,
        "k_reached_in_dump": k_in_dump,
        "k_history": if k_history == usize::MAX { 0 } else { k_history },
        "counts": {"twins": twin_lines, "tombstones": tombstone_lines.len(), "eligible": eligible,
                   "releasable": truth.len(), "held": held, "pending": pending, "first_released": first_released,
                   "cohorts": outs.len(), "regrouped_cohorts": regrouped_cohorts},
        "ended_by_reason": by_reason,
        "suppressed": eligible - held,
        "information_loss": {
            "ncp": (ncp_held * 1e6).round() / 1e6,
            "ncp_grouped": if runs.0 == 0 { Json::Null } else { json!((runs.1 / runs.0 as f64 * 1e6).round() / 1e6) },
            "grouped": runs.0,
            "discernibility": discernibility,
        },
        "segment_memberships": {
            "true": true_memberships,
            "kept": kept_memberships,
            "fraction": if true_memberships == 0 { Json::Null } else { json!((kept_memberships as f64 / true_memberships as f64 * 1e6).round() / 1e6) },
        },
        "levels": levels_json,
        "segments": shown,
        "public_key": b64(keys::signing_key()?.verifying_key().as_bytes()),
        // the signed head of the audit chain: the partner keeps it (mseg.controller_anchors), so
        // a later rewrite of this controller's audit log is detectable (mseg.verify_audit_log(anchor))
        "audit_anchor": crate::audit::anchor()?,
    });
    let manifest_line = serde_json::to_string(&manifest).map_err(|e| MsegError::new(Code::General, e.to_string()))?;
    write_state(p, sequence, delta, &ctx, &state, &truth, &outs, &tombs, &erased, &stored, &manifest)?;
    catalog::audit(
        "export",
        &p.name,
        json!({"sequence": sequence, "mode": mode.name(), "twins": twin_lines, "tombstones": tombstone_lines.len()}),
    )?;
    let parts = outs.iter().map(|o| o.record.line_parts(&ctx)).collect::<MsegResult<Vec<_>>>()?;
    Ok(ExportStream {
        partner: p.name.clone(),
        sequence,
        manifest: Some(manifest_line),
        parts,
        emit: emit.into_iter(),
        tombstones: tombstone_lines.into_iter(),
        hasher: Sha256::new(),
        lines: 0,
        finished: false,
    })
}

/// Remember what the partner holds after this export, and the export itself (its digest is
/// recorded when the trailer is written).
#[allow(clippy::too_many_arguments)]
fn write_state(
    p: &Partner,
    sequence: i64,
    delta: bool,
    ctx: &Ctx,
    state: &[StateRow],
    truth: &Truth,
    outs: &[Out],
    tombs: &[Tomb],
    erased: &[i64],
    stored: &FxMap<i64, Option<Stored>>,
    manifest: &Json,
) -> MsegResult<()> {
    let name = p.name.as_str();
    // twins that ended; those released again in this export (under their next generation) are
    // rewritten by the insert below, once
    let again: std::collections::HashSet<i64, std::hash::BuildHasherDefault<FxHasher>> =
        outs.iter().flat_map(|o| o.new.iter().map(|n| truth.subjects[n.0 as usize])).collect();
    let tombstoned: Vec<i64> = tombs.iter().map(|t| state[t.row as usize].subject).filter(|s| !again.contains(s)).collect();
    let kept: std::collections::HashSet<i64> = outs.iter().map(|o| o.id).collect();
    let ended: Vec<i64> = stored.keys().copied().filter(|id| !kept.contains(id)).collect();
    let mut cohort_rows: Vec<(i64, String, i32)> = Vec::new();
    for o in outs.iter().filter(|o| o.write) {
        let s = Stored { columns: ctx.columns.clone(), hierarchies: ctx.specs.clone(), purposes: ctx.purposes.clone(), record: o.record.clone() };
        let text = serde_json::to_string(&s).map_err(|e| MsegError::new(Code::General, e.to_string()))?;
        cohort_rows.push((o.id, text, o.size() as i32));
    }
    catalog::update(|c| {
        // ended twins first (a cohort that ended now may release some of them again below): they
        // stay known (resolve refuses them as not processable) unless the subject was erased, then
        // the link between pseudonym and subject goes too
        c.update(
            "DELETE FROM mseg.partner_twins WHERE partner OPERATOR(pg_catalog.=) $1 AND subject_key OPERATOR(pg_catalog.=) ANY ($2)",
            None,
            &[name.into(), erased.to_vec().into()],
        )?;
        for chunk in tombstoned.chunks(10_000) {
            c.update(
                "UPDATE mseg.partner_twins SET cohort = NULL, tombstoned_at = pg_catalog.now(), sequence = $3 \
                 WHERE partner OPERATOR(pg_catalog.=) $1 AND subject_key OPERATOR(pg_catalog.=) ANY ($2)",
                None,
                &[name.into(), chunk.to_vec().into(), sequence.into()],
            )?;
        }
        // twins sent now for the first time under their pseudonym, in batches of arrays
        let mut new_rows: Vec<(i64, i32, String, i64)> = Vec::new();
        for o in outs {
            for &(i, g, pn) in &o.new {
                new_rows.push((truth.subjects[i as usize], g, String::from_utf8_lossy(&pn).into_owned(), o.id));
            }
        }
        for chunk in new_rows.chunks(10_000) {
            let subjects: Vec<i64> = chunk.iter().map(|r| r.0).collect();
            let generations: Vec<i32> = chunk.iter().map(|r| r.1).collect();
            let pseudonyms: Vec<&str> = chunk.iter().map(|r| r.2.as_str()).collect();
            let cohorts: Vec<i64> = chunk.iter().map(|r| r.3).collect();
            c.update(
                "INSERT INTO mseg.partner_twins (partner, subject_key, generation, pseudonym, cohort, sequence) \
                 SELECT $1, u.s, u.g, u.pn, u.c, $6 FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.int8[]), pg_catalog.unnest($3::pg_catalog.int4[]), \
                   pg_catalog.unnest($4::pg_catalog.text[]), pg_catalog.unnest($5::pg_catalog.int8[])) AS u(s, g, pn, c) \
                 ON CONFLICT (partner, subject_key) DO UPDATE SET generation = EXCLUDED.generation, pseudonym = EXCLUDED.pseudonym, \
                   cohort = EXCLUDED.cohort, sequence = EXCLUDED.sequence, tombstoned_at = NULL",
                None,
                &[name.into(), subjects.into(), generations.into(), pseudonyms.into(), cohorts.into(), sequence.into()],
            )?;
        }
        // held twins whose cohort was split off from the one they were in
        let moved: Vec<(i64, i64)> =
            outs.iter().filter(|o| o.moved).flat_map(|o| o.held.iter().map(move |&j| (state[j as usize].subject, o.id))).collect();
        for chunk in moved.chunks(10_000) {
            let subjects: Vec<i64> = chunk.iter().map(|r| r.0).collect();
            let cohorts: Vec<i64> = chunk.iter().map(|r| r.1).collect();
            c.update(
                "UPDATE mseg.partner_twins t SET cohort = u.c, sequence = $4 \
                 FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.int8[]), pg_catalog.unnest($3::pg_catalog.int8[])) AS u(s, c) \
                 WHERE t.partner OPERATOR(pg_catalog.=) $1 AND t.subject_key OPERATOR(pg_catalog.=) u.s",
                None,
                &[name.into(), subjects.into(), cohorts.into(), sequence.into()],
            )?;
        }
        c.update(
            "DELETE FROM mseg.partner_cohorts WHERE partner OPERATOR(pg_catalog.=) $1 AND cohort OPERATOR(pg_catalog.=) ANY ($2)",
            None,
            &[name.into(), ended.into()],
        )?;
        for chunk in cohort_rows.chunks(10_000) {
            let ids: Vec<i64> = chunk.iter().map(|r| r.0).collect();
            let records: Vec<&str> = chunk.iter().map(|r| r.1.as_str()).collect();
            let sizes: Vec<i32> = chunk.iter().map(|r| r.2).collect();
            c.update(
                "INSERT INTO mseg.partner_cohorts AS pc (partner, cohort, record, members, created_sequence, changed_sequence) \
                 SELECT $1, u.id, u.r::pg_catalog.jsonb, u.n, $5, $5 FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.int8[]), \
                   pg_catalog.unnest($3::pg_catalog.text[]), pg_catalog.unnest($4::pg_catalog.int4[])) AS u(id, r, n) \
                 ON CONFLICT (partner, cohort) DO UPDATE SET members = EXCLUDED.members, record = EXCLUDED.record, \
                   changed_sequence = CASE WHEN pc.record OPERATOR(pg_catalog.=) EXCLUDED.record THEN pc.changed_sequence ELSE EXCLUDED.changed_sequence END",
                None,
                &[name.into(), ids.into(), records.into(), sizes.into(), sequence.into()],
            )?;
        }
        c.update(
            "UPDATE mseg.partners SET last_sequence = $2 WHERE name OPERATOR(pg_catalog.=) $1",
            None,
            &[name.into(), sequence.into()],
        )?;
        c.update(
            "INSERT INTO mseg.partner_exports (partner, sequence, mode, manifest) VALUES ($1, $2, $3, $4)",
            None,
            &[name.into(), sequence.into(), (if delta { "delta" } else { "full" }).into(), pgrx::JsonB(manifest.clone()).into()],
        )?;
        Ok(())
    })
}

/// The dump as it streams out: manifest, twins (each line written only now, from its cohort's
/// line parts and its pseudonym), tombstones, then the trailer with the digest of everything
/// before it and its signature; the digest is recorded in mseg.partner_exports when the trailer is
/// written. Memory: the releasable subjects, the cohorts and the pseudonyms to send, never the
/// dump's lines.
struct ExportStream {
    partner: String,
    sequence: i64,
    manifest: Option<String>,
    /// per cohort: the twin line before and after the pseudonym
    parts: Vec<(String, String)>,
    emit: std::vec::IntoIter<([u8; pseudonym::PSEUDONYM_LEN], u32)>,
    tombstones: std::vec::IntoIter<String>,
    hasher: Sha256,
    lines: usize,
    finished: bool,
}

impl ExportStream {
    fn next_body(&mut self) -> MsegResult<Option<String>> {
        if let Some(m) = self.manifest.take() {
            return Ok(Some(m));
        }
        if let Some((pseudonym, cohort)) = self.emit.next() {
            let (prefix, suffix) =
                self.parts.get(cohort as usize).ok_or_else(|| MsegError::new(Code::General, "twin without a cohort"))?;
            let pseudonym =
                std::str::from_utf8(&pseudonym).map_err(|e| MsegError::new(Code::General, format!("pseudonym is not text: {e}")))?;
            let mut line = String::with_capacity(prefix.len() + pseudonym.len() + suffix.len());
            line.push_str(prefix);
            line.push_str(pseudonym);
            line.push_str(suffix);
            return Ok(Some(line));
        }
        Ok(self.tombstones.next())
    }

    fn trailer(&mut self) -> MsegResult<String> {
        let digest = std::mem::take(&mut self.hasher).finalize();
        let signature = keys::signing_key()?.sign(&digest);
        let sha = hex(&digest);
        catalog::update(|c| {
            c.update(
                "UPDATE mseg.partner_exports SET sha256 = $3 WHERE partner OPERATOR(pg_catalog.=) $1 AND sequence OPERATOR(pg_catalog.=) $2",
                None,
                &[self.partner.as_str().into(), self.sequence.into(), sha.as_str().into()],
            )?;
            Ok(())
        })?;
        catalog::audit("export.signed", &self.partner, json!({"sequence": self.sequence, "lines": self.lines, "sha256": sha}))?;
        serde_json::to_string(&json!({"type": "trailer", "lines": self.lines, "sha256": sha, "signature": b64(&signature.to_bytes())}))
            .map_err(|e| MsegError::new(Code::General, e.to_string()))
    }
}

impl Iterator for ExportStream {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.finished {
            return None;
        }
        boundary(|| match self.next_body()? {
            Some(line) => {
                self.hasher.update(line.as_bytes());
                self.hasher.update(b"\n");
                self.lines += 1;
                Ok(Some(line))
            }
            None => {
                self.finished = true;
                self.trailer().map(Some)
            }
        })
    }
}

/// Why subjects left a partner's scope: erased, restricted, objected, withdrawn or out_of_scope.
fn tombstone_reasons(subjects: &[i64]) -> MsegResult<HashMap<i64, String>> {
    if subjects.is_empty() {
        return Ok(HashMap::new());
    }
    catalog::select(|c| {
        let mut m = HashMap::new();
        for row in c.select(
            "SELECT k, CASE WHEN e.subject_ref IS NOT NULL OR ss.erased_at IS NOT NULL THEN 'erased' \
                            WHEN ss.restricted_at IS NOT NULL THEN 'restricted' \
                            WHEN EXISTS (SELECT 1 FROM mseg.legal_basis_state b WHERE b.subject_key OPERATOR(pg_catalog.=) k AND b.objected_at IS NOT NULL) THEN 'objected' \
                            WHEN EXISTS (SELECT 1 FROM mseg.legal_basis_state b WHERE b.subject_key OPERATOR(pg_catalog.=) k AND b.withdrawn_at IS NOT NULL) THEN 'withdrawn' \
                            ELSE 'out_of_scope' END \
             FROM pg_catalog.unnest($1::pg_catalog.int8[]) k \
             LEFT JOIN mseg.subject_state ss ON ss.subject_key OPERATOR(pg_catalog.=) k \
             LEFT JOIN mseg.erasures e ON e.subject_id OPERATOR(pg_catalog.=) k \
                  OR e.subject_ref OPERATOR(pg_catalog.=) mseg._subject_ref(k::pg_catalog.text)",
            None,
            &[subjects.to_vec().into()],
        )? {
            m.insert(row.get::<i64>(1)?.unwrap_or(0), row.get::<String>(2)?.unwrap_or_default());
        }
        Ok(m)
    })
}

/// How an export is made.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// every twin the partner holds after this export (no tombstones: the import replaces)
    Full,
    /// the twins that are new or changed, and tombstones for those that ended
    Delta,
    /// a full dump in which every twin is grouped afresh under a new pseudonym: precision lost to
    /// regrouping is restored, and nothing links the new twins to the earlier ones
    Refresh,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Delta => "delta",
            Mode::Refresh => "refresh",
        }
    }
}

/// The Variant Twin dump for a partner as JSON lines (mode 'full', 'delta' or 'refresh'), e.g.
/// `COPY (SELECT mseg.export_variant_twins('trustco')) TO '/tmp/x.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02')`.
#[pg_extern(volatile, parallel_unsafe)]
fn export_variant_twins(partner_name: Option<&str>, mode: default!(&str, "'full'")) -> SetOfIterator<'static, String> {
    let lines = boundary(|| {
        let name = partner_name.ok_or_else(|| MsegError::null_argument("partner"))?;
        let mode = match mode {
            "full" => Mode::Full,
            "delta" => Mode::Delta,
            "refresh" => Mode::Refresh,
            other => {
                return Err(MsegError::new(Code::InvalidArgument, format!("unknown export mode \"{other}\""))
                    .hint("mode is full (every twin), delta (changes and tombstones since the last export) or refresh (every twin grouped afresh under a new pseudonym)."))
            }
        };
        let p = partner(name)?;
        build_export(&p, mode)
    });
    SetOfIterator::new(lines)
}

// ---------------------------------------------------------------------------------------------
// Resolve: the last mile
// ---------------------------------------------------------------------------------------------

/// For an offer to a partner's segment: the subjects behind pseudonyms, only for subjects
/// processable for `purpose` now: their id (`subject_key`, the key itself for integer keys) and
/// their key as text (`key`: the uuid or text key of such tables). Unknown pseudonyms are
/// reported, not errors. Audited.
#[pg_extern(volatile, parallel_unsafe)]
fn resolve(
    partner_name: Option<&str>,
    pseudonyms: Option<Vec<Option<String>>>,
    purpose: Option<&str>,
) -> TableIterator<'static, (name!(pseudonym, Option<String>), name!(subject_key, Option<i64>), name!(status, String), name!(key, Option<String>))>
{
    let rows = boundary(|| {
        let name = partner_name.ok_or_else(|| MsegError::null_argument("partner"))?;
        let pseudonyms = pseudonyms.ok_or_else(|| MsegError::null_argument("pseudonyms"))?;
        let purpose = purpose.ok_or_else(|| MsegError::null_argument("purpose"))?;
        let p = partner(name)?;
        if !p.purposes.iter().any(|x| x == purpose) {
            return Err(MsegError::new(Code::InvalidArgument, format!("partner \"{name}\" may not process for purpose \"{purpose}\""))
                .detail(format!("Its purposes are {}.", p.purposes.join(", "))));
        }
        let rows = catalog::select(|c| {
            let mut out = Vec::new();
            for row in c.select(
                "SELECT x.pn, t.subject_key, CASE WHEN t.subject_key IS NULL THEN 'unknown' \
                        WHEN t.tombstoned_at IS NOT NULL OR k.key IS NULL OR NOT mseg._subject_exists(k.key) THEN 'not_processable' \
                        WHEN mseg.is_processable(k.key, $3) THEN 'ok' ELSE 'not_processable' END, k.key \
                 FROM pg_catalog.unnest($2::pg_catalog.text[]) WITH ORDINALITY x(pn, n) \
                 LEFT JOIN mseg.partner_twins t ON t.partner OPERATOR(pg_catalog.=) $1 AND t.pseudonym OPERATOR(pg_catalog.=) x.pn \
                 LEFT JOIN LATERAL (SELECT mseg.subject_key(t.subject_key) AS key) k ON true \
                 ORDER BY x.n",
                None,
                &[name.into(), pseudonyms.clone().into(), purpose.into()],
            )? {
                let status = row.get::<String>(3)?.unwrap_or_default();
                let (id, key) = if status == "ok" { (row.get::<i64>(2)?, row.get::<String>(4)?) } else { (None, None) };
                out.push((row.get::<String>(1)?, id, status, key));
            }
            Ok(out)
        })?;
        let count = |s: &str| rows.iter().filter(|r| r.2 == s).count();
        catalog::audit(
            "resolve",
            name,
            json!({"purpose": purpose, "asked": rows.len(), "ok": count("ok"),
            "not_processable": count("not_processable"), "unknown": count("unknown")}),
        )?;
        Ok(rows)
    });
    TableIterator::new(rows)
}

/// Values by subject key, sorted, for look-ups in (nearly) key order: the input comes in the
/// subject table's physical order, which is its key order when it was filled in key order, so a
/// cursor answers most look-ups at the next entry (reading the entries front to back instead of a
/// probe to a random place per subject); a binary search answers the rest. Keys are unique.
struct ByKey<T> {
    entries: Vec<(i64, T)>,
    cursor: usize,
}

impl<T> ByKey<T> {
    fn new(mut entries: Vec<(i64, T)>) -> ByKey<T> {
        entries.sort_unstable_by_key(|e| e.0);
        ByKey { entries, cursor: 0 }
    }

    /// Where `key` is, if it is there.
    fn position(&mut self, key: i64) -> Option<usize> {
        let c = self.cursor;
        let after_previous = c == 0 || self.entries.get(c - 1).is_some_and(|e| e.0 < key);
        match self.entries.get(c) {
            Some(e) if e.0 == key => {
                self.cursor = c + 1;
                return Some(c);
            }
            Some(e) if e.0 > key && after_previous => return None,
            None if after_previous => return None,
            _ => {}
        }
        match self.entries.binary_search_by_key(&key, |e| e.0) {
            Ok(p) => {
                self.cursor = p + 1;
                Some(p)
            }
            Err(p) => {
                self.cursor = p;
                None
            }
        }
    }
}

