//! Partners, signed Variant Twin export, and the last-mile resolve (controller side).
//!
//! Dump format `mseg-vt/1`: JSON lines. Line 1 is the manifest, then one line per twin or
//! tombstone, last the trailer: `{"type":"trailer","lines":N,"sha256":H,"signature":S}` where H is
//! the SHA-256 (hex) of the N preceding lines, each followed by `\n`, and S the Ed25519
//! signature (base64) of H's 32 bytes under the controller's key (`mseg.controller_public_key()`).
//! serde_json writes object keys sorted, so a line's bytes are a function of its content.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasherDefault;

use base64::Engine;
use ed25519_dalek::Signer;
use kanon::{Anonymizer, FxHasher, FxMap};
use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, quote_literal};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

use crate::catalog;
use crate::error::{boundary, Code, MsegError, Result as MsegResult};
use crate::kanon as kanon_sql;
use crate::keys;
use crate::pseudonym;

pub const FORMAT: &str = "mseg-vt/1";

/// The anonymiser's extra column for the segment set (reported in the manifest's levels).
const SEGMENTS_COLUMN: &str = "(segments)";

pub fn partner_domain(partner: &str) -> String {
    format!("partner.{partner}")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// 64 hex digits back to 32 bytes; None for anything else.
fn unhex(text: &str) -> Option<[u8; 32]> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = text.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(b[2 * i])? << 4 | digit(b[2 * i + 1])?;
    }
    Some(out)
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
        let domain = partner_domain(name);
        if keys::current_version(&domain).is_err() {
            catalog::create_domain(&domain, Some("partner domain"))?;
        }
        catalog::audit("partner.add", name, json!({"purposes": purposes, "k": k, "suppression_limit": suppression_limit}))?;
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

/// The eligible subjects (processable for at least one of the partner's purposes), column-wise:
/// a few flat vectors instead of several allocations per subject.
struct Eligible {
    /// the partner's purposes
    np: usize,
    subjects: Vec<i64>,
    /// per subject: its segment set (bound to the partner's purposes, sorted), an index into `Sets`
    set: Vec<u32>,
    /// per subject and purpose: the basis in force, an index into `TwinContext::basis_names`
    bases: Vec<Option<u8>>,
    /// per subject and purpose: when that basis expires
    expires: Vec<Option<Box<str>>>,
}

impl Eligible {
    fn len(&self) -> usize {
        self.subjects.len()
    }
    fn bases(&self, i: usize) -> &[Option<u8>] {
        self.bases.get(i * self.np..(i + 1) * self.np).unwrap_or(&[])
    }
    fn expires(&self, i: usize) -> &[Option<Box<str>>] {
        self.expires.get(i * self.np..(i + 1) * self.np).unwrap_or(&[])
    }
}

/// Segment sets (segment ids, sorted), each stored once; equal sets have equal indexes.
#[derive(Default)]
struct Sets {
    list: Vec<Vec<i32>>,
    index: FxMap<Vec<i32>, u32>,
}

impl Sets {
    fn intern(&mut self, ids: &[i32]) -> u32 {
        if let Some(&n) = self.index.get(ids) {
            return n;
        }
        let n = self.list.len() as u32;
        self.list.push(ids.to_vec());
        self.index.insert(ids.to_vec(), n);
        n
    }
    fn get(&self, n: u32) -> &[i32] {
        self.list.get(n as usize).map(Vec::as_slice).unwrap_or(&[])
    }
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
fn build_export(p: &Partner, delta: bool) -> MsegResult<ExportStream> {
    // a restored, cloned or promoted copy must not reuse the original's sequence numbers
    crate::instance::check_before_export()?;
    let subject = catalog::subject_table()?.ok_or_else(|| {
        MsegError::new(Code::SubjectTable, "no subject table is registered").hint("Register it first with mseg.register_subjects.")
    })?;
    let controller = crate::gucs::controller_id().ok_or_else(|| {
        MsegError::new(Code::InvalidArgument, "mseg.controller_id is not set")
            .hint("Set mseg.controller_id in postgresql.conf to this controller's name, then reload.")
    })?;
    let t = kanon_sql::target(subject.relid, None, catalog::Who::Upkeep)?;
    let cols = kanon_sql::quasi_columns(&t, None)?;
    let key = format!("s.{}", quote_identifier(&subject.key));
    let quasi_exprs = cols.iter().map(|c| kanon_sql::generalized_expr("s", c, 0)).collect::<MsegResult<Vec<_>>>()?;
    // per partner purpose: the basis that applies now (the rule of mseg._processable) and its expiry
    let mut bases = Vec::new();
    let mut expiries = Vec::new();
    let purposes: Vec<&str> = p.purposes.iter().map(String::as_str).collect();
    let joins = crate::consent::joins(&purposes, &key);
    for n in 0..purposes.len() {
        let i = n + 1;
        bases.push(crate::consent::basis_in_force(i));
        expiries.push(format!(
            "CASE WHEN b{i}.consent_basis IS NOT NULL THEN pg_catalog.to_char((b{i}.granted_at OPERATOR(pg_catalog.+) pp{i}.retention) \
             AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') END"
        ));
    }
    // one scalar column per value (no arrays to build in SQL and take apart again per row):
    // key, quasi values, the basis per purpose, its expiry per purpose. The segment sets are read
    // on their own (below) and found by key: joined here, each row probed a hash table of every
    // membership at a random place (about a tenth of the export at 1M subjects).
    let (nq, np) = (quasi_exprs.len(), purposes.len());
    let sql = format!(
        "SELECT {key}::pg_catalog.int8, {q}, {b}, {e} FROM {rel} s {joins}",
        q = quasi_exprs.iter().map(|x| format!("({x})::pg_catalog.text")).collect::<Vec<_>>().join(", "),
        b = bases.iter().map(|x| format!("({x})::pg_catalog.text")).collect::<Vec<_>>().join(", "),
        e = expiries.join(", "),
        rel = subject.name,
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
    let mut eligible = Eligible {
        np,
        subjects: Vec::with_capacity(cap),
        set: Vec::with_capacity(cap),
        bases: Vec::with_capacity(cap * np),
        expires: Vec::with_capacity(cap * np),
    };
    // the eligible subjects' raw quasi values end to end in one buffer (`quasi_end`: where each
    // ends); they go to the anonymiser once the hierarchy of the segment sets is known
    let mut quasi_text = String::new();
    let mut quasi_end: Vec<usize> = Vec::with_capacity(cap * nq);
    let mut quasi_null: Vec<bool> = Vec::with_capacity(cap);
    // a column without a hierarchy is categorical over its distinct values in the whole table
    // (kanon_sql::flat_hierarchy, which would scan the table once more)
    let mut flat_values: Vec<Option<HashSet<String, BuildHasherDefault<FxHasher>>>> =
        cols.iter().map(|c| c.spec.is_none().then(Default::default)).collect();
    // the few distinct bases (consent, contract, legitimate_interest…) are stored once
    let mut basis_names: Vec<String> = Vec::new();
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
    let mut row_bases: Vec<Option<u8>> = Vec::with_capacity(np);
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
        row_bases.clear();
        for n in 0..np {
            row_bases.push(match text(1 + nq + n) {
                None => None,
                Some(b) => Some(match basis_names.iter().position(|x| x == b) {
                    Some(n) => n as u8,
                    None => {
                        basis_names.push(b.to_owned());
                        (basis_names.len() - 1) as u8
                    }
                }),
            });
        }
        if !row_bases.iter().any(Option::is_some) {
            return Ok(()); // processable for none of the partner's purposes
        }
        let mut any_null = false;
        for n in 0..nq {
            match text(1 + n) {
                Some(v) => quasi_text.push_str(v),
                None => any_null = true,
            }
            quasi_end.push(quasi_text.len());
        }
        quasi_null.push(any_null);
        for n in 0..np {
            eligible.expires.push(text(1 + nq + np + n).map(Box::from));
        }
        eligible.bases.extend_from_slice(&row_bases);
        // SAFETY: the first column is int8
        let subject = unsafe { i64::from_polymorphic_datum(values[0], nulls[0], pg_sys::INT8OID) }.unwrap_or(0);
        // no membership row: no segments (as a LEFT JOIN with COALESCE(segments, '{}') gave)
        let set = memberships.position(subject).map(|p| memberships.entries[p].1).unwrap_or(no_segments);
        eligible.set.push(set);
        eligible.subjects.push(subject);
        Ok(())
    })?;
    drop(memberships);
    let n = eligible.len();
    // anonymise the eligible subjects' quasi values to the partner's k
    let mut hierarchies = Vec::new();
    for (c, flat) in cols.iter().zip(flat_values) {
        // `flat` holds the values read for every column without a hierarchy
        let h = match c.spec.as_deref() {
            Some(spec) => (*catalog::as_upkeep(|| kanon_sql::hierarchy(spec))?).clone(),
            None => kanon_sql::flat_hierarchy_of(flat.unwrap_or_default())?,
        };
        hierarchies.push((c.name.clone(), h));
    }
    // The segment set is quasi-identifying too: it joins the anonymisation as one more column
    // (the exact set, or * for the class), so the partitioning keeps sets together where it can.
    let set_texts: Vec<String> = sets.list.iter().map(|ids| ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")).collect();
    let with_sets = !seg_names.is_empty();
    if with_sets {
        let mut used = vec![false; set_texts.len()];
        for &s in &eligible.set {
            used[s as usize] = true;
        }
        let mut distinct: Vec<String> = set_texts.iter().zip(&used).filter(|(_, u)| **u).map(|(t, _)| t.clone()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let h = kanon::Hierarchy::categorical(distinct.into_iter().map(|v| (v, "*".to_owned()))).map_err(kanon_sql::kanon_error)?;
        hierarchies.push((SEGMENTS_COLUMN.to_owned(), h));
    }
    let mut a = Anonymizer::new(hierarchies, p.k as usize, None, p.suppression_limit).map_err(kanon_sql::kanon_error)?;
    a.reserve(quasi_null.iter().filter(|x| !**x).count());
    // record r of the anonymiser is eligible subject record_of[r]; rec_of maps back (NONE: not pushed)
    let mut rec_of: Vec<u32> = vec![NONE; n];
    let mut pushed = 0u32;
    let mut texts: Vec<&str> = Vec::with_capacity(nq + 1);
    let mut start = 0usize;
    for i in 0..n {
        texts.clear();
        for &end in quasi_end.get(i * nq..(i + 1) * nq).unwrap_or(&[]) {
            texts.push(quasi_text.get(start..end).unwrap_or(""));
            start = end;
        }
        if quasi_null[i] {
            continue;
        }
        rec_of[i] = pushed;
        pushed += 1;
        if with_sets {
            texts.push(set_texts.get(eligible.set[i] as usize).map(String::as_str).unwrap_or(""));
        }
        a.push_text(eligible.subjects[i], &texts, None).map_err(kanon_sql::kanon_error)?;
    }
    drop(texts);
    drop((quasi_text, quasi_end, quasi_null, set_texts)); // the anonymiser has its own copy
    let out = a.run().map_err(kanon_sql::kanon_error)?;
    let released = Released { out, rec_of };
    // Segment sets are quasi-identifying too: within each released class, members whose set fewer
    // than k share are given a common subset, so every (quasi values, segments) group has >= k.
    // The members of each class, by a counting sort over the class numbers.
    let n_classes = released.out.classes().len();
    let mut class_of: Vec<u32> = vec![NONE; n];
    let mut class_start: Vec<usize> = vec![0; n_classes + 1];
    for (i, c) in class_of.iter_mut().enumerate() {
        if let Some(class) = released.class(i) {
            *c = class as u32;
            class_start[class + 1] += 1;
        }
    }
    for c in 0..n_classes {
        class_start[c + 1] += class_start[c];
    }
    let mut members: Vec<u32> = vec![0; class_start[n_classes]];
    let mut fill = class_start.clone();
    for (i, &c) in class_of.iter().enumerate() {
        if c != NONE {
            members[fill[c as usize]] = i as u32;
            fill[c as usize] += 1;
        }
    }
    drop(fill);
    let mut set_after = eligible.set.clone();
    for c in 0..n_classes {
        k_anonymous_sets(&members[class_start[c]..class_start[c + 1]], &mut set_after, &mut sets, p.k as usize);
    }
    drop((members, class_start));
    // segments the partner may see: bound to one of its purposes, with at least k released members
    // (dropping a segment from every set only merges groups, so k still holds)
    let mut set_count = vec![0usize; sets.list.len()];
    for (i, &c) in class_of.iter().enumerate() {
        if c != NONE {
            set_count[set_after[i] as usize] += 1;
        }
    }
    let mut seg_count: HashMap<i32, usize> = HashMap::new();
    for (s, &count) in set_count.iter().enumerate() {
        if count > 0 {
            for id in sets.get(s as u32) {
                *seg_count.entry(*id).or_default() += count;
            }
        }
    }
    let shown: HashSet<i32> = seg_count.iter().filter(|(_, n)| **n >= p.k as usize).map(|(id, _)| *id).collect();
    // what a twin shows of its set: the shown segments (a view; sets that differ only in hidden
    // segments share one) and their names, sorted
    let mut views = Sets::default();
    let view_of_set: Vec<u32> =
        sets.list.iter().map(|ids| views.intern(&ids.iter().copied().filter(|id| shown.contains(id)).collect::<Vec<_>>())).collect();
    let view_names: Vec<Vec<String>> = views
        .list
        .iter()
        .map(|ids| {
            let mut names: Vec<String> = ids.iter().filter_map(|id| seg_names.get(id).cloned()).collect();
            names.sort_unstable();
            names
        })
        .collect();
    let view_of: Vec<u32> = set_after.iter().map(|&s| view_of_set.get(s as usize).copied().unwrap_or(NONE)).collect();
    drop((set_after, view_of_set, sets));
    // twins: what each says is fixed now; its JSON line is written only when the dump streams out
    let columns: Vec<String> = cols.iter().map(|c| c.name.clone()).collect();
    let mut column_order: Vec<usize> = (0..columns.len()).collect();
    column_order.sort_by(|a, b| columns[*a].cmp(&columns[*b]));
    let twin_ctx =
        TwinContext { columns, column_order, purposes: p.purposes.clone(), names: seg_names, shown, view_of, view_names, basis_names };
    let keys = keys::domain_keys(&partner_domain(&p.name))?;
    // what the partner holds: subject and content hash only (40 bytes a twin); the pseudonyms of
    // the few that become tombstones are read afterwards
    let mut held_rows: Vec<(i64, [u8; 32])> = Vec::with_capacity(n);
    catalog::for_each_row(
        catalog::Who::Owner,
        &format!(
            "SELECT subject_key, content_hash FROM mseg.partner_twins WHERE partner OPERATOR(pg_catalog.=) {} AND tombstoned_at IS NULL",
            quote_literal(&p.name)
        ),
        |values, nulls| {
            if values.len() != 2 || nulls.len() != 2 {
                return Err(MsegError::new(Code::General, "partner state: unexpected row shape"));
            }
            // SAFETY: subject_key is int8, content_hash text
            let (subject, hash) = unsafe {
                (
                    i64::from_polymorphic_datum(values[0], nulls[0], pg_sys::INT8OID),
                    <&str as FromDatum>::from_polymorphic_datum(values[1], nulls[1], pg_sys::TEXTOID),
                )
            };
            held_rows.push((subject.unwrap_or(0), hash.and_then(unhex).unwrap_or([0; 32])));
            Ok(())
        },
    )?;
    let mut held = Held::new(held_rows);
    // (quasi values, shown segments) groups: classes with equal values count as one
    let mut class_key: FxMap<&[String], u32> = FxMap::default();
    let canon_class: Vec<u32> = released
        .out
        .classes()
        .iter()
        .map(|c| {
            let next = class_key.len() as u32;
            *class_key.entry(c.key.as_slice()).or_insert(next)
        })
        .collect();
    drop(class_key);
    let mut emit: Vec<(usize, [u8; pseudonym::PSEUDONYM_LEN])> = Vec::with_capacity(if delta { 0 } else { n });
    let mut state_upserts = Vec::new();
    let mut released_count = 0usize; // twins the partner holds after this export
    let mut with_segments: FxMap<(u32, u32), usize> = FxMap::default();
    let mut digits = [0u8; 20];
    for (i, (&subject, &class)) in eligible.subjects.iter().zip(&class_of).enumerate() {
        let Some(values) = released.values(i) else { continue };
        released_count += 1;
        let content = twin_ctx.content(i, &eligible, values);
        let class = canon_class.get(class as usize).copied().unwrap_or(NONE);
        *with_segments.entry((class, twin_ctx.view_of[i])).or_default() += 1;
        let h = content.hash();
        let pseudonym = pseudonym::pseudonym_bytes(&keys, decimal(subject, &mut digits));
        // what is left in `held` afterwards is no longer eligible: tombstones
        let changed = held.take(subject).map(|old| old != h).unwrap_or(true);
        if changed {
            state_upserts.push((subject, String::from_utf8_lossy(&pseudonym).into_owned(), hex(&h)));
        }
        if !delta || changed {
            emit.push((i, pseudonym));
        }
    }
    drop((class_of, canon_class));
    let k_with_segments = with_segments.values().min().copied().unwrap_or(0);
    drop(with_segments);
    let twin_lines = emit.len();
    let tombstoned: Vec<i64> = held.left();
    let mut tombstones: Vec<(String, i64)> = catalog::select(|c| {
        let mut v = Vec::new();
        for row in c.select(
            "SELECT pseudonym, subject_key FROM mseg.partner_twins \
             WHERE partner OPERATOR(pg_catalog.=) $1 AND subject_key OPERATOR(pg_catalog.=) ANY ($2)",
            None,
            &[p.name.as_str().into(), tombstoned.clone().into()],
        )? {
            v.push((row.get::<String>(1)?.unwrap_or_default(), row.get::<i64>(2)?.unwrap_or(0)));
        }
        Ok(v)
    })?;
    tombstones.sort();
    let reasons = tombstone_reasons(&tombstoned)?;
    let erased: Vec<i64> = tombstoned.iter().copied().filter(|s| reasons.get(s).is_some_and(|r| r == "erased")).collect();
    let mut tombstone_lines = Vec::new();
    for (pn, s) in &tombstones {
        let reason = reasons.get(s).cloned().unwrap_or_else(|| "out_of_scope".into());
        tombstone_lines.push(
            serde_json::to_string(&json!({"type": "tombstone", "pseudonym": pn, "reason": reason}))
                .map_err(|e| MsegError::new(Code::General, format!("tombstone serialisation failed: {e}")))?,
        );
    }
    let report = released.out.report();
    let sequence = p.last_sequence + 1;
    let mut shown_names: Vec<&String> = twin_ctx.shown.iter().filter_map(|id| twin_ctx.names.get(id)).collect();
    shown_names.sort();
    let manifest = json!({
        "type": "manifest",
        "format": FORMAT,
        "controller": controller,
        "partner": p.name,
        "sequence": sequence,
        "follows": if p.last_sequence == 0 { Json::Null } else { Json::from(p.last_sequence) },
        "mode": if delta { "delta" } else { "full" },
        "created_at": Spi::get_one::<String>("SELECT pg_catalog.to_char(pg_catalog.now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")?,
        "purposes": p.purposes,
        "k_required": p.k,
        "k_reached": report.k_reached,
        "k_reached_with_segments": k_with_segments,
        "counts": {"twins": twin_lines, "tombstones": tombstones.len(), "eligible": eligible.len(), "held": released_count},
        "suppressed": eligible.len() - released_count,
        "information_loss": {"ncp": (report.ncp * 1e6).round() / 1e6, "discernibility": report.discernibility},
        "levels": report.levels_used.iter().map(|c| (c.column.clone(), json!({"min": c.min, "max": c.max, "top": c.top}))).collect::<BTreeMap<_, _>>(),
        "segments": shown_names,
        "public_key": b64(keys::signing_key()?.verifying_key().as_bytes()),
        // the signed head of the audit chain: the partner keeps it (mseg.controller_anchors), so
        // a later rewrite of this controller's audit log is detectable (mseg.verify_audit_log(anchor))
        "audit_anchor": crate::audit::anchor()?,
    });
    let manifest_line = serde_json::to_string(&manifest).map_err(|e| MsegError::new(Code::General, e.to_string()))?;
    // remember what the partner now holds, and the export (its digest is recorded when the trailer is written)
    catalog::update(|c| {
        // in batches of arrays: one statement per 10 000 twins, not one per twin
        for chunk in state_upserts.chunks(10_000) {
            let subjects: Vec<i64> = chunk.iter().map(|(s, ..)| *s).collect();
            let pseudonyms: Vec<&str> = chunk.iter().map(|(_, pn, _)| pn.as_str()).collect();
            let hashes: Vec<&str> = chunk.iter().map(|(.., h)| h.as_str()).collect();
            c.update(
                "INSERT INTO mseg.partner_twins (partner, subject_key, pseudonym, content_hash, sequence) \
                 SELECT $1, u.s, u.pn, u.h, $5 FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.int8[]), pg_catalog.unnest($3::pg_catalog.text[]), pg_catalog.unnest($4::pg_catalog.text[])) AS u(s, pn, h) \
                 ON CONFLICT (partner, subject_key) DO UPDATE SET pseudonym = EXCLUDED.pseudonym, content_hash = EXCLUDED.content_hash, sequence = EXCLUDED.sequence, tombstoned_at = NULL",
                None,
                &[p.name.as_str().into(), subjects.into(), pseudonyms.into(), hashes.into(), sequence.into()],
            )?;
        }
        // tombstoned twins stay known (resolve refuses them as not processable) unless the subject
        // was erased: then the link between pseudonym and subject goes too
        c.update(
            "DELETE FROM mseg.partner_twins WHERE partner OPERATOR(pg_catalog.=) $1 AND subject_key OPERATOR(pg_catalog.=) ANY ($2)",
            None,
            &[p.name.as_str().into(), erased.clone().into()],
        )?;
        c.update(
            "UPDATE mseg.partner_twins SET tombstoned_at = pg_catalog.now(), sequence = $3 \
             WHERE partner OPERATOR(pg_catalog.=) $1 AND subject_key OPERATOR(pg_catalog.=) ANY ($2)",
            None,
            &[p.name.as_str().into(), tombstoned.clone().into(), sequence.into()],
        )?;
        c.update(
            "UPDATE mseg.partners SET last_sequence = $2 WHERE name OPERATOR(pg_catalog.=) $1",
            None,
            &[p.name.as_str().into(), sequence.into()],
        )?;
        c.update(
            "INSERT INTO mseg.partner_exports (partner, sequence, mode, manifest) VALUES ($1, $2, $3, $4)",
            None,
            &[p.name.as_str().into(), sequence.into(), (if delta { "delta" } else { "full" }).into(), pgrx::JsonB(manifest.clone()).into()],
        )?;
        Ok(())
    })?;
    drop(state_upserts);
    catalog::audit(
        "export",
        &p.name,
        json!({"sequence": sequence, "mode": if delta {"delta"} else {"full"}, "twins": twin_lines, "tombstones": tombstones.len()}),
    )?;
    Ok(ExportStream {
        partner: p.name.clone(),
        sequence,
        manifest: Some(manifest_line),
        eligible,
        released,
        twin_ctx,
        emit: emit.into_iter(),
        tombstones: tombstone_lines.into_iter(),
        hasher: Sha256::new(),
        lines: 0,
        finished: false,
    })
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

/// What the partner holds (subject, content hash), and which of it this export found eligible again.
struct Held {
    by_key: ByKey<[u8; 32]>,
    taken: Vec<bool>,
}

impl Held {
    fn new(entries: Vec<(i64, [u8; 32])>) -> Held {
        let taken = vec![false; entries.len()];
        Held { by_key: ByKey::new(entries), taken }
    }

    /// The content hash held for `subject`, once (as a map's remove would give it).
    fn take(&mut self, subject: i64) -> Option<[u8; 32]> {
        let pos = self.by_key.position(subject)?;
        if std::mem::replace(&mut self.taken[pos], true) {
            return None;
        }
        Some(self.by_key.entries[pos].1)
    }

    /// The subjects held that were not taken: no longer eligible.
    fn left(&self) -> Vec<i64> {
        self.by_key.entries.iter().zip(&self.taken).filter(|(_, t)| !**t).map(|(e, _)| e.0).collect()
    }
}

/// What the partner may see of one subject, shared by the content hash (delta detection) and the
/// JSON line.
struct TwinContext {
    columns: Vec<String>,
    /// the columns in name order, as a JSON object's keys are written
    column_order: Vec<usize>,
    purposes: Vec<String>,
    names: HashMap<i32, String>,
    shown: HashSet<i32>,
    /// per eligible subject: the view of its segment set after the k step (index into `view_names`)
    view_of: Vec<u32>,
    /// per view: the names of the shown segments, sorted
    view_names: Vec<Vec<String>>,
    basis_names: Vec<String>,
}

const NONE: u32 = u32::MAX;

/// The anonymiser's output, reached by eligible subject index.
struct Released {
    out: kanon::Anonymized,
    rec_of: Vec<u32>,
}

impl Released {
    fn record(&self, i: usize) -> Option<usize> {
        self.rec_of.get(i).copied().filter(|r| *r != NONE).map(|r| r as usize)
    }
    /// The released (generalised) values of eligible subject i; None when suppressed.
    fn values(&self, i: usize) -> Option<&[String]> {
        self.out.record(self.record(i)?)
    }
    fn class(&self, i: usize) -> Option<usize> {
        let r = self.record(i)?;
        self.out.record(r)?;
        self.out.class_of(r)
    }
}

struct TwinContent<'a> {
    values: &'a [String],
    segments: &'a [String],
    /// per allowed purpose: (purpose, basis, expires_at)
    bases: Vec<(&'a str, &'a str, Option<&'a str>)>,
    expires: Option<&'a str>,
}

impl TwinContext {
    fn content<'a>(&'a self, i: usize, e: &'a Eligible, values: &'a [String]) -> TwinContent<'a> {
        let segments = self.view_of.get(i).and_then(|v| self.view_names.get(*v as usize)).map(Vec::as_slice).unwrap_or(&[]);
        let mut bases = Vec::new();
        let mut expires: Option<&str> = None;
        let (e_bases, e_expires) = (e.bases(i), e.expires(i));
        for (n, purpose) in self.purposes.iter().enumerate() {
            if let Some(Some(b)) = e_bases.get(n).map(|b| b.and_then(|b| self.basis_names.get(usize::from(b)))) {
                let exp = e_expires.get(n).and_then(|x| x.as_deref());
                if let Some(x) = exp {
                    expires = Some(match expires {
                        Some(cur) if cur <= x => cur,
                        _ => x,
                    });
                }
                bases.push((purpose.as_str(), b.as_str(), exp));
            }
        }
        TwinContent { values, segments, bases, expires }
    }
}

/// A twin's quasi values as a JSON object, keys in name order (what a BTreeMap of them writes)
/// without building a map per line.
struct QuasiObject<'a> {
    columns: &'a [String],
    order: &'a [usize],
    values: &'a [String],
}

impl serde::Serialize for QuasiObject<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // as `columns.iter().zip(values)` would: only columns that have a value
        s.collect_map(self.order.iter().filter_map(|&c| Some((self.columns.get(c)?.as_str(), self.values.get(c)?.as_str()))))
    }
}

impl TwinContent<'_> {
    /// SHA-256 over every field, length-prefixed: equal iff the twin's line would be equal.
    fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut field = |s: &str| {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        for v in self.values {
            field(v);
        }
        field("|");
        for s in self.segments {
            field(s);
        }
        field("|");
        for (p, b, x) in &self.bases {
            field(p);
            field(b);
            field(x.unwrap_or("\u{0}"));
        }
        field(self.expires.unwrap_or("\u{0}"));
        h.finalize().into()
    }

    fn line(&self, ctx: &TwinContext, pseudonym: &str) -> MsegResult<String> {
        // fields in alphabetical order, as serde_json writes a map's keys: the bytes of a line
        // are a function of its content
        #[derive(serde::Serialize)]
        struct Basis<'a> {
            basis: &'a str,
            expires_at: Option<&'a str>,
        }
        #[derive(serde::Serialize)]
        struct Policy<'a> {
            expires_at: Option<&'a str>,
            purposes: Vec<&'a str>,
        }
        #[derive(serde::Serialize)]
        struct Twin<'a> {
            legal_basis: BTreeMap<&'a str, Basis<'a>>,
            policy: Policy<'a>,
            pseudonym: &'a str,
            quasi: QuasiObject<'a>,
            segments: &'a [String],
            #[serde(rename = "type")]
            kind: &'a str,
        }
        let twin = Twin {
            legal_basis: self.bases.iter().map(|(p, b, x)| (*p, Basis { basis: b, expires_at: *x })).collect(),
            policy: Policy { expires_at: self.expires, purposes: self.bases.iter().map(|(p, ..)| *p).collect() },
            pseudonym,
            quasi: QuasiObject { columns: &ctx.columns, order: &ctx.column_order, values: self.values },
            segments: self.segments,
            kind: "twin",
        };
        // one buffer of the usual size of a line, not a string grown step by step
        let mut out = Vec::with_capacity(384);
        serde_json::to_writer(&mut out, &twin).map_err(|e| MsegError::new(Code::General, format!("twin serialisation failed: {e}")))?;
        String::from_utf8(out).map_err(|e| MsegError::new(Code::General, format!("twin serialisation failed: {e}")))
    }
}

/// The dump as it streams out: manifest, twins (each line written only now), tombstones, then the
/// trailer with the digest of everything before it and its signature; the digest is recorded in
/// mseg.partner_exports when the trailer is written. Memory: the eligible subjects and their
/// released values (the anonymiser's input and output), never the dump's lines.
struct ExportStream {
    partner: String,
    sequence: i64,
    manifest: Option<String>,
    eligible: Eligible,
    released: Released,
    twin_ctx: TwinContext,
    emit: std::vec::IntoIter<(usize, [u8; pseudonym::PSEUDONYM_LEN])>,
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
        if let Some((i, pseudonym)) = self.emit.next() {
            let values = self.released.values(i).unwrap_or(&[]);
            let pseudonym =
                std::str::from_utf8(&pseudonym).map_err(|e| MsegError::new(Code::General, format!("pseudonym is not text: {e}")))?;
            return self.twin_ctx.content(i, &self.eligible, values).line(&self.twin_ctx, pseudonym).map(Some);
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

/// Make the segment sets of one equivalence class (`members`, at least k of them) k-anonymous:
/// the members of every set held by fewer than k take the intersection of those sets, joined,
/// while still fewer than k, by the largest group (which takes the intersection too).
/// `set_of[m]` is member m's set, an index into `sets` (equal sets have equal indexes).
fn k_anonymous_sets(members: &[u32], set_of: &mut [u32], sets: &mut Sets, k: usize) {
    // (set, members holding it): few per class
    let mut groups: Vec<(u32, usize)> = Vec::new();
    for &m in members {
        let s = set_of[m as usize];
        match groups.iter_mut().find(|g| g.0 == s) {
            Some(g) => g.1 += 1,
            None => groups.push((s, 1)),
        }
    }
    // in the order of the sets themselves (ties of the largest group go to the last one)
    groups.sort_by(|a, b| sets.get(a.0).cmp(sets.get(b.0)));
    let (small, big): (Vec<_>, Vec<_>) = groups.into_iter().partition(|g| g.1 < k);
    if small.is_empty() {
        return;
    }
    let mut common: Vec<i32> = sets.get(small[0].0).to_vec();
    let mut moved_sets: Vec<u32> = Vec::new();
    let mut moved = 0usize;
    for &(s, count) in &small {
        let set = sets.get(s);
        common.retain(|id| set.contains(id));
        moved_sets.push(s);
        moved += count;
    }
    if moved < k {
        if let Some(&(s, _)) = big.iter().max_by_key(|g| g.1) {
            let set = sets.get(s);
            common.retain(|id| set.contains(id));
            moved_sets.push(s);
        }
    }
    let common = sets.intern(&common);
    for &m in members {
        if moved_sets.contains(&set_of[m as usize]) {
            set_of[m as usize] = common;
        }
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
             LEFT JOIN mseg.erasures e ON e.subject_ref OPERATOR(pg_catalog.=) mseg._subject_ref(k::pg_catalog.text)",
            None,
            &[subjects.to_vec().into()],
        )? {
            m.insert(row.get::<i64>(1)?.unwrap_or(0), row.get::<String>(2)?.unwrap_or_default());
        }
        Ok(m)
    })
}

/// The Variant Twin dump for a partner as JSON lines (mode 'full' or 'delta'), e.g.
/// `COPY (SELECT mseg.export_variant_twins('trustco')) TO '/tmp/x.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02')`.
#[pg_extern(volatile, parallel_unsafe)]
fn export_variant_twins(partner_name: Option<&str>, mode: default!(&str, "'full'")) -> SetOfIterator<'static, String> {
    let lines = boundary(|| {
        let name = partner_name.ok_or_else(|| MsegError::null_argument("partner"))?;
        let delta = match mode {
            "full" => false,
            "delta" => true,
            other => {
                return Err(MsegError::new(Code::InvalidArgument, format!("unknown export mode \"{other}\""))
                    .hint("mode is full (every twin) or delta (changes and tombstones since the last export)."))
            }
        };
        let p = partner(name)?;
        build_export(&p, delta)
    });
    SetOfIterator::new(lines)
}

// ---------------------------------------------------------------------------------------------
// Resolve: the last mile
// ---------------------------------------------------------------------------------------------

/// For an offer to a partner's segment: the subject keys behind pseudonyms, only for subjects
/// processable for `purpose` now. Unknown pseudonyms are reported, not errors. Audited.
#[pg_extern(volatile, parallel_unsafe)]
fn resolve(
    partner_name: Option<&str>,
    pseudonyms: Option<Vec<Option<String>>>,
    purpose: Option<&str>,
) -> TableIterator<'static, (name!(pseudonym, Option<String>), name!(subject_key, Option<i64>), name!(status, String))> {
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
                        WHEN t.tombstoned_at IS NULL AND mseg.is_processable(t.subject_key, $3) THEN 'ok' ELSE 'not_processable' END \
                 FROM pg_catalog.unnest($2::pg_catalog.text[]) WITH ORDINALITY x(pn, n) \
                 LEFT JOIN mseg.partner_twins t ON t.partner OPERATOR(pg_catalog.=) $1 AND t.pseudonym OPERATOR(pg_catalog.=) x.pn \
                 ORDER BY x.n",
                None,
                &[name.into(), pseudonyms.clone().into(), purpose.into()],
            )? {
                let status = row.get::<String>(3)?.unwrap_or_default();
                let key = if status == "ok" { row.get::<i64>(2)? } else { None };
                out.push((row.get::<String>(1)?, key, status));
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
