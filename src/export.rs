//! Partners, signed Variant Twin export, and the last-mile resolve (controller side).
//!
//! Dump format `mseg-vt/1`: JSON lines. Line 1 is the manifest, then one line per twin or
//! tombstone, last the trailer: `{"type":"trailer","lines":N,"sha256":H,"signature":S}` where H is
//! the SHA-256 (hex) of the N preceding lines, each followed by `\n`, and S the Ed25519
//! signature (base64) of H's 32 bytes under the controller's key (`mseg.controller_public_key()`).
//! serde_json writes object keys sorted, so a line's bytes are a function of its content.

use std::collections::{BTreeMap, HashMap, HashSet};

use base64::Engine;
use ed25519_dalek::Signer;
use kanon::Anonymizer;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

use crate::catalog;
use crate::error::{boundary, Code, MsegError, Result as MsegResult};
use crate::kanon as kanon_sql;
use crate::keys;
use crate::pseudonym;
use crate::segments;

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
        return Err(MsegError::new(Code::InvalidArgument, "a partner needs at least one purpose")
            .hint("Pass purposes => '{direct_marketing}'."));
    }
    for p in purposes {
        let ok = catalog::select(|c| Ok(!c.select("SELECT 1 FROM mseg.purposes WHERE name OPERATOR(pg_catalog.=) $1", None, &[p.as_str().into()])?.is_empty()))?;
        if !ok {
            return Err(MsegError::new(Code::UnknownPurpose, format!("purpose \"{p}\" does not exist"))
                .hint("Define it with mseg.define_purpose first."));
        }
    }
    Ok(())
}

/// Add a trusted partner: its own pseudonymisation domain, the purposes it may receive, its k.
#[pg_extern(volatile, parallel_unsafe)]
fn add_partner(
    name: Option<&str>,
    purposes: Option<Vec<String>>,
    k: default!(i32, 10),
    suppression_limit: default!(f64, 0.01),
) -> String {
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

struct Eligible {
    subject: i64,
    /// raw quasi values, emptied once they are in the anonymiser
    quasi: Vec<Option<String>>,
    /// per partner purpose: the basis in force, an index into `TwinContext::basis_names`
    bases: Vec<Option<u8>>,
    expires: Vec<Option<String>>,
    segments: Vec<i32>,
}

/// Prepare the dump and record what the partner will hold; the lines stream from the result.
fn build_export(p: &Partner, delta: bool) -> MsegResult<ExportStream> {
    let subject = segments::subject_table()?.ok_or_else(|| {
        MsegError::new(Code::SubjectTable, "no subject table is registered").hint("Register it first with mseg.register_subjects.")
    })?;
    let controller = crate::gucs::controller_id().ok_or_else(|| {
        MsegError::new(Code::InvalidArgument, "mseg.controller_id is not set")
            .hint("Set mseg.controller_id in postgresql.conf to this controller's name, then reload.")
    })?;
    let t = kanon_sql::target(subject.relid, None)?;
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
    // key, quasi values, the basis per purpose, its expiry per purpose, the segment set
    let (nq, np) = (quasi_exprs.len(), purposes.len());
    let sql = format!(
        "SELECT {key}::pg_catalog.int8, {q}, {b}, {e}, COALESCE(m.segments, '{{}}'::pg_catalog.int4[]) \
         FROM {rel} s LEFT JOIN mseg.memberships m ON m.subject_key OPERATOR(pg_catalog.=) {key} {joins}",
        q = quasi_exprs.iter().map(|x| format!("({x})::pg_catalog.text")).collect::<Vec<_>>().join(", "),
        b = bases.iter().map(|x| format!("({x})::pg_catalog.text")).collect::<Vec<_>>().join(", "),
        e = expiries.join(", "),
        rel = subject.name,
    );
    // sized for the table up front: growing vectors of a million entries costs copies and page faults
    let estimate = catalog::select(|c| {
        Ok(c.select("SELECT GREATEST(reltuples, 0)::pg_catalog.int8 FROM pg_catalog.pg_class WHERE oid OPERATOR(pg_catalog.=) $1", None, &[subject.relid.into()])?
            .first()
            .get_one::<i64>()?
            .unwrap_or(0))
    })?;
    let mut eligible = Vec::with_capacity(usize::try_from(estimate).unwrap_or(0).min(100_000_000));
    // the few distinct bases (consent, contract, legitimate_interest…) are stored once
    let mut basis_names: Vec<String> = Vec::new();
    catalog::stream_as_owner(&sql, |row| {
        let mut bases = Vec::with_capacity(np);
        for n in 0..np {
            let b = row.get::<&str>(2 + nq + n)?;
            bases.push(match b {
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
        if bases.iter().any(Option::is_some) {
            // processable for at least one of the partner's purposes
            let mut quasi = Vec::with_capacity(nq);
            for n in 0..nq {
                quasi.push(row.get::<String>(2 + n)?);
            }
            let mut expires = Vec::with_capacity(np);
            for n in 0..np {
                expires.push(row.get::<String>(2 + nq + np + n)?);
            }
            eligible.push(Eligible {
                subject: row.get::<i64>(1)?.unwrap_or(0),
                quasi,
                bases,
                expires,
                segments: row.get::<Vec<i32>>(2 + nq + 2 * np)?.unwrap_or_default(),
            });
        }
        Ok(())
    })?;
    // anonymise the eligible subjects' quasi values to the partner's k
    let mut hierarchies = Vec::new();
    for c in &cols {
        let h = match c.spec.as_deref() {
            Some(spec) => (*kanon_sql::hierarchy(spec)?).clone(),
            None => kanon_sql::flat_hierarchy(&t, c)?,
        };
        hierarchies.push((c.name.clone(), h));
    }
    // segments bound to one of the partner's purposes
    let seg_names: HashMap<i32, String> = catalog::select(|c| {
        let mut m = HashMap::new();
        for row in c.select("SELECT segment_id, name FROM mseg.segments WHERE purpose OPERATOR(pg_catalog.=) ANY ($1)", None, &[p.purposes.clone().into()])? {
            m.insert(row.get::<i32>(1)?.unwrap_or(0), row.get::<String>(2)?.unwrap_or_default());
        }
        Ok(m)
    })?;
    // The segment set is quasi-identifying too: it joins the anonymisation as one more column
    // (the exact set, or * for the class), so the partitioning keeps sets together where it can.
    let set_text = |e: &Eligible| {
        let mut ids: Vec<i32> = e.segments.iter().copied().filter(|id| seg_names.contains_key(id)).collect();
        ids.sort_unstable();
        ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
    };
    let with_sets = !seg_names.is_empty();
    if with_sets {
        let mut distinct: Vec<String> = eligible.iter().map(set_text).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let h = kanon::Hierarchy::categorical(distinct.into_iter().map(|v| (v, "*".to_owned()))).map_err(kanon_sql::kanon_error)?;
        hierarchies.push((SEGMENTS_COLUMN.to_owned(), h));
    }
    let mut a = Anonymizer::new(hierarchies, p.k as usize, None, p.suppression_limit).map_err(kanon_sql::kanon_error)?;
    // record r of the anonymiser is eligible subject record_of[r]; rec_of maps back (NONE: not pushed)
    let mut rec_of: Vec<u32> = vec![NONE; eligible.len()];
    let mut pushed = 0u32;
    for (i, e) in eligible.iter_mut().enumerate() {
        if e.quasi.iter().any(Option::is_none) {
            continue;
        }
        rec_of[i] = pushed;
        pushed += 1;
        let set = set_text(e);
        let mut texts: Vec<&str> = e.quasi.iter().map(|v| v.as_deref().unwrap_or("")).collect();
        if with_sets {
            texts.push(&set);
        }
        a.push_text(e.subject, &texts, None).map_err(kanon_sql::kanon_error)?;
        drop(texts);
        e.quasi = Vec::new(); // the anonymiser has its own copy
    }
    let out = a.run().map_err(kanon_sql::kanon_error)?;
    let released = Released { out, rec_of };
    // Segment sets are quasi-identifying too: within each released class, members whose set fewer
    // than k share are given a common subset, so every (quasi values, segments) group has >= k.
    let mut sets: Vec<Vec<i32>> = vec![Vec::new(); eligible.len()];
    let mut classes: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, e) in eligible.iter().enumerate() {
        let Some(class) = released.class(i) else { continue };
        let mut ids: Vec<i32> = e.segments.iter().copied().filter(|id| seg_names.contains_key(id)).collect();
        ids.sort_unstable();
        sets[i] = ids;
        classes.entry(class).or_default().push(i);
    }
    for members in classes.values() {
        k_anonymous_sets(members, &mut sets, p.k as usize);
    }
    drop(classes);
    // segments the partner may see: bound to one of its purposes, with at least k released members
    // (dropping a segment from every set only merges groups, so k still holds)
    let mut seg_count: HashMap<i32, usize> = HashMap::new();
    for ids in &sets {
        for id in ids {
            *seg_count.entry(*id).or_default() += 1;
        }
    }
    let shown: HashSet<i32> = seg_count.iter().filter(|(_, n)| **n >= p.k as usize).map(|(id, _)| *id).collect();
    // twins: what each says is fixed now; its JSON line is written only when the dump streams out
    let twin_ctx = TwinContext {
        columns: cols.iter().map(|c| c.name.clone()).collect(),
        purposes: p.purposes.clone(),
        names: seg_names,
        shown,
        sets,
        basis_names,
    };
    let keys = keys::domain_keys(&partner_domain(&p.name))?;
    // what the partner holds: subject and content hash only (40 bytes a twin); the pseudonyms of
    // the few that become tombstones are read afterwards
    let mut held: HashMap<i64, [u8; 32]> = catalog::select(|c| {
        let mut m = HashMap::new();
        for row in c.select(
            "SELECT subject_key, content_hash FROM mseg.partner_twins WHERE partner OPERATOR(pg_catalog.=) $1 AND tombstoned_at IS NULL",
            None,
            &[p.name.as_str().into()],
        )? {
            let hash = row.get::<&str>(2)?.and_then(unhex).unwrap_or([0; 32]);
            m.insert(row.get::<i64>(1)?.unwrap_or(0), hash);
        }
        Ok(m)
    })?;
    let mut emit: Vec<(usize, String)> = Vec::new(); // eligible index, pseudonym
    let mut state_upserts = Vec::new();
    let mut released_count = 0usize; // twins the partner holds after this export
    let mut with_segments: HashMap<(&[String], Vec<i32>), usize> = HashMap::new();
    for (i, e) in eligible.iter().enumerate() {
        let Some(values) = released.values(i) else { continue };
        released_count += 1;
        let content = twin_ctx.content(i, e, values);
        *with_segments.entry((values, content.segment_ids.clone())).or_default() += 1;
        let h = content.hash();
        let pseudonym = pseudonym::pseudonym_string(&keys, &e.subject.to_string());
        // what is left in `held` afterwards is no longer eligible: tombstones
        let changed = held.remove(&e.subject).map(|old| old != h).unwrap_or(true);
        if changed {
            state_upserts.push((e.subject, pseudonym.clone(), hex(&h)));
        }
        if !delta || changed {
            emit.push((i, pseudonym));
        }
    }
    let k_with_segments = with_segments.values().min().copied().unwrap_or(0);
    drop(with_segments);
    let twin_lines = emit.len();
    let tombstoned: Vec<i64> = held.into_keys().collect();
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
        tombstone_lines.push(serde_json::to_string(&json!({"type": "tombstone", "pseudonym": pn, "reason": reason}))
            .map_err(|e| MsegError::new(Code::General, format!("tombstone serialisation failed: {e}")))?);
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
        c.update("UPDATE mseg.partners SET last_sequence = $2 WHERE name OPERATOR(pg_catalog.=) $1", None, &[p.name.as_str().into(), sequence.into()])?;
        c.update(
            "INSERT INTO mseg.partner_exports (partner, sequence, mode, manifest) VALUES ($1, $2, $3, $4)",
            None,
            &[p.name.as_str().into(), sequence.into(), (if delta { "delta" } else { "full" }).into(), pgrx::JsonB(manifest.clone()).into()],
        )?;
        Ok(())
    })?;
    drop(state_upserts);
    catalog::audit("export", &p.name, json!({"sequence": sequence, "mode": if delta {"delta"} else {"full"}, "twins": twin_lines, "tombstones": tombstones.len()}))?;
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

/// What the partner may see of one subject, shared by the content hash (delta detection) and the
/// JSON line.
struct TwinContext {
    columns: Vec<String>,
    purposes: Vec<String>,
    names: HashMap<i32, String>,
    shown: HashSet<i32>,
    /// per eligible subject: its segment set after the k step
    sets: Vec<Vec<i32>>,
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
    segment_ids: Vec<i32>,
    segments: Vec<&'a str>,
    /// per allowed purpose: (purpose, basis, expires_at)
    bases: Vec<(&'a str, &'a str, Option<&'a str>)>,
    expires: Option<&'a str>,
}

impl TwinContext {
    fn content<'a>(&'a self, i: usize, e: &'a Eligible, values: &'a [String]) -> TwinContent<'a> {
        let segment_ids: Vec<i32> =
            self.sets.get(i).map(|ids| ids.iter().copied().filter(|id| self.shown.contains(id)).collect()).unwrap_or_default();
        let mut segments: Vec<&str> = segment_ids.iter().filter_map(|id| self.names.get(id).map(String::as_str)).collect();
        segments.sort_unstable();
        let mut bases = Vec::new();
        let mut expires: Option<&str> = None;
        for (i, purpose) in self.purposes.iter().enumerate() {
            if let Some(Some(b)) = e.bases.get(i).map(|b| b.and_then(|n| self.basis_names.get(usize::from(n)))) {
                let exp = e.expires.get(i).and_then(|x| x.as_deref());
                if let Some(x) = exp {
                    expires = Some(match expires {
                        Some(cur) if cur <= x => cur,
                        _ => x,
                    });
                }
                bases.push((purpose.as_str(), b.as_str(), exp));
            }
        }
        TwinContent { values, segment_ids, segments, bases, expires }
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
        for s in &self.segments {
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

    fn line(&self, columns: &[String], pseudonym: &str) -> MsegResult<String> {
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
            quasi: BTreeMap<&'a str, &'a str>,
            segments: &'a [&'a str],
            #[serde(rename = "type")]
            kind: &'a str,
        }
        let twin = Twin {
            legal_basis: self.bases.iter().map(|(p, b, x)| (*p, Basis { basis: b, expires_at: *x })).collect(),
            policy: Policy { expires_at: self.expires, purposes: self.bases.iter().map(|(p, ..)| *p).collect() },
            pseudonym,
            quasi: columns.iter().map(String::as_str).zip(self.values.iter().map(String::as_str)).collect(),
            segments: &self.segments,
            kind: "twin",
        };
        serde_json::to_string(&twin).map_err(|e| MsegError::new(Code::General, format!("twin serialisation failed: {e}")))
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
    eligible: Vec<Eligible>,
    released: Released,
    twin_ctx: TwinContext,
    emit: std::vec::IntoIter<(usize, String)>,
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
            let e = &self.eligible[i];
            let values = self.released.values(i).unwrap_or(&[]);
            return self.twin_ctx.content(i, e, values).line(&self.twin_ctx.columns, &pseudonym).map(Some);
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
fn k_anonymous_sets(members: &[usize], sets: &mut [Vec<i32>], k: usize) {
    let mut groups: BTreeMap<&[i32], Vec<usize>> = BTreeMap::new();
    for &m in members {
        groups.entry(sets[m].as_slice()).or_default().push(m);
    }
    let (small, big): (Vec<_>, Vec<_>) = groups.into_iter().partition(|(_, m)| m.len() < k);
    if small.is_empty() {
        return;
    }
    let mut common: Vec<i32> = small[0].0.to_vec();
    let mut moved: Vec<usize> = Vec::new();
    for (set, m) in &small {
        common.retain(|id| set.contains(id));
        moved.extend(m);
    }
    if moved.len() < k {
        if let Some((set, m)) = big.iter().max_by_key(|(_, m)| m.len()) {
            common.retain(|id| set.contains(id));
            moved.extend(m);
        }
    }
    for m in moved {
        sets[m] = common.clone();
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
             LEFT JOIN mseg.erasures e ON e.subject_ref OPERATOR(pg_catalog.=) mseg._subject_ref(k)",
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
        catalog::audit("resolve", name, json!({"purpose": purpose, "asked": rows.len(), "ok": count("ok"),
            "not_processable": count("not_processable"), "unknown": count("unknown")}))?;
        Ok(rows)
    });
    TableIterator::new(rows)
}
