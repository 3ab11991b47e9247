//! Linkage: a person's twins from different controllers linked at the trusted party only, with an
//! oblivious PRF (RFC 9497, mode OPRF, ristretto255-SHA512) whose key the trusted party alone holds.
//!
//! 1. controller: `linkage_request(partner, identifier)` blinds the normalised matching identifier
//!    (trimmed, lower-cased) of every subject whose twin the partner holds; the blinds stay in
//!    `mseg.link_blinds` (nobody but the extension reads it); the request file carries only the
//!    blinded elements (uniformly random group elements).
//! 2. trusted party: `linkage_evaluate(staging)` verifies the request and evaluates every element
//!    with its OPRF key (`keys::oprf_server`, derived from its master key, never in SQL).
//! 3. controller: `linkage_finalize(partner, staging)` verifies the response (signed by the
//!    partner's registered key, naming the request's digest), unblinds and finalises, deletes the
//!    blinds and emits the linkage file: the twin's pseudonym in the partner's domain and the OPRF
//!    output, one line per held twin.
//! 4. trusted party: `import_linkage(staging)` verifies it and replaces the controller's person
//!    links in `mseg.pool_links` (readable by the owner and `mseg_linkage` only).
//!
//! All three files are JSON lines in the layout of the Variant Twin dumps (`crate::dump`): a
//! manifest, the lines, a trailer with the line count, the SHA-256 of the lines and an Ed25519
//! signature of it, checked before anything is used.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use ed25519_dalek::{Signer, VerifyingKey};
use pgrx::prelude::*;
use pgrx::PgRelation;
use serde_json::{json, Value as Json};
use voprf::{BlindedElement, EvaluationElement, OprfClient, Ristretto255};
use zeroize::Zeroizing;

use crate::catalog;
use crate::dump;
use crate::dump::reading::{self, dump_lines, short, staging_lines, Reader};
use crate::error::{boundary, Code, MsegError, Result as MsegResult};
use crate::keys;

pub const REQUEST_FORMAT: &str = "mseg-link-request/1";
pub const RESPONSE_FORMAT: &str = "mseg-link-response/1";
pub const LINKAGE_FORMAT: &str = "mseg-link/1";

fn invalid(message: impl Into<String>) -> MsegError {
    MsegError::new(Code::InvalidLinkage, message).hint("Nothing was used from the file. Ask its sender for a fresh, complete one.")
}

/// The matching identifier as every controller normalises it: trimmed, lower-cased (Unicode, in
/// Rust, so no database locale changes it). None for an empty one.
pub fn normalise(identifier: &str) -> Option<Zeroizing<String>> {
    let n = Zeroizing::new(identifier.trim().to_lowercase());
    if n.is_empty() {
        None
    } else {
        Some(n)
    }
}

pub(crate) fn b64decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// Sign `body` (manifest first) with this party's key: the lines and their trailer, and the
/// SHA-256 (hex) of the lines.
pub(crate) fn signed(body: Vec<String>) -> MsegResult<(Vec<String>, String)> {
    let mut digest = dump::LineDigest::default();
    for l in &body {
        digest.add(l);
    }
    let (digest, n) = digest.finish();
    let signature = keys::signing_key()?.sign(&digest);
    let mut lines = body;
    lines.push(dump::trailer_line(n, &digest, &signature)?);
    Ok((lines, dump::hex(&digest)))
}

/// A verified file: its manifest, its body lines (between manifest and trailer), the SHA-256 of
/// the lines the trailer signs.
struct Checked<'a> {
    manifest: Json,
    body: Vec<&'a str>,
    sha256: String,
}

/// How the linkage steps name a file in their errors (class MS076, "Nothing was used").
const FILE: Reader = Reader {
    noun: "file",
    too_short: "It has at least a manifest and a trailer.",
    unknown_format: "unknown format",
    reads: "This step reads",
    invalid,
};

/// Check a signed file's shape, format and signature; `key_of` names the key from the manifest.
fn check_signed<'a>(lines: &[&'a str], format: &str, key_of: impl FnOnce(&Json) -> MsegResult<VerifyingKey>) -> MsegResult<Checked<'a>> {
    let envelope = reading::open(lines, format, &FILE)?;
    let key = key_of(&envelope.manifest)?;
    reading::check_signature(
        &envelope,
        &key,
        &FILE,
        "The lines were changed, removed or added after signing, or the file was not signed by its sender's registered key.".to_owned(),
    )?;
    let last = envelope.last;
    Ok(Checked { sha256: dump::hex(&envelope.digest), manifest: envelope.manifest, body: lines[1..last].to_vec() })
}

fn text_field<'a>(v: &'a Json, name: &str) -> MsegResult<&'a str> {
    v.get(name).and_then(Json::as_str).ok_or_else(|| invalid(format!("the manifest has no \"{name}\"")))
}

fn number_field(v: &Json, name: &str) -> MsegResult<i64> {
    v.get(name).and_then(Json::as_i64).ok_or_else(|| invalid(format!("the manifest's \"{name}\" is not a number")))
}

fn count_field(v: &Json, name: &str) -> Option<u64> {
    v.get("counts").and_then(|c| c.get(name)).and_then(Json::as_u64)
}

/// This party's name (`mseg.controller_id`).
pub(crate) fn me() -> MsegResult<String> {
    crate::gucs::controller_id().filter(|s| !s.is_empty()).ok_or_else(|| {
        MsegError::new(Code::InvalidArgument, "mseg.controller_id is not set")
            .hint("Set mseg.controller_id in postgresql.conf to this party's name, then reload.")
    })
}

/// The body line `n` (1-based in the file) as an object with `"type": kind` and the string fields asked.
fn body_fields<'a>(line: &'a str, n: usize, kind: &str, names: &[&str]) -> MsegResult<Vec<String>> {
    let v: Json = serde_json::from_str(line).map_err(|e| invalid(format!("line {n} is not valid JSON")).detail(e.to_string()))?;
    if v.get("type").and_then(Json::as_str) != Some(kind) {
        return Err(invalid(format!("line {n} is not a {kind} line")));
    }
    names
        .iter()
        .map(|name| {
            v.get(*name).and_then(Json::as_str).map(str::to_owned).ok_or_else(|| invalid(format!("line {n} has no valid \"{name}\"")))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Controller side
// ---------------------------------------------------------------------------------------------

pub(crate) fn require_partner(partner: &str) -> MsegResult<()> {
    let exists = catalog::select(|c| {
        Ok(!c.select("SELECT 1 FROM mseg.partners WHERE name OPERATOR(pg_catalog.=) $1", None, &[partner.into()])?.is_empty())
    })?;
    if !exists {
        return Err(MsegError::new(Code::UnknownPartner, format!("partner \"{partner}\" does not exist"))
            .hint("Add it with mseg.add_partner(name, purposes, k)."));
    }
    Ok(())
}

/// The identifier column, checked: a column of the subject table classified `direct`.
pub(crate) fn identifier_column(subject: &catalog::SubjectTable, column: &str) -> MsegResult<()> {
    let class: Option<Option<String>> = catalog::select(|c| {
        let t = c.select(
            "SELECT cc.class FROM pg_catalog.pg_attribute a LEFT JOIN mseg.column_classes cc \
               ON cc.relid OPERATOR(pg_catalog.=) a.attrelid AND cc.column_name OPERATOR(pg_catalog.=) a.attname \
             WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attname OPERATOR(pg_catalog.=) $2 \
               AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped",
            None,
            &[subject.relid.into(), column.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        Ok(Some(t.first().get::<String>(1)?))
    })?;
    match class {
        None => Err(MsegError::new(Code::InvalidTable, format!("column \"{column}\" of {} does not exist", subject.name))
            .hint("Name the subject table's column holding the matching identifier, e.g. email.")),
        Some(Some(c)) if c == "direct" => Ok(()),
        Some(_) => Err(MsegError::new(Code::InvalidTable, format!("column \"{column}\" is not classified as direct"))
            .detail("Only a direct identifier (e.g. the e-mail address) is a matching identifier.")
            .hint(format!("Classify it first: SELECT mseg.classify('{}', '{column}', 'direct').", subject.name))),
    }
}

/// The normalised identifiers of `ids` (subject ids), read as mseg_upkeep.
fn identifiers(subject: &catalog::SubjectTable, column: &str, ids: Vec<i64>) -> MsegResult<HashMap<i64, Zeroizing<String>>> {
    let id = subject.id_of_row("s");
    let sql = format!(
        "SELECT {id}, (s.{col})::pg_catalog.text FROM {rel} s{join} WHERE {id} OPERATOR(pg_catalog.=) ANY ($1)",
        col = pgrx::spi::quote_identifier(column),
        rel = subject.name,
        join = subject.id_join("s"),
    );
    catalog::as_upkeep(|| {
        Spi::connect(|c| {
            let mut out = HashMap::new();
            for row in c.select(&sql, None, &[ids.into()])? {
                let (Some(id), Some(text)) = (row.get::<i64>(1)?, row.get::<String>(2)?) else { continue };
                let text = Zeroizing::new(text);
                if let Some(n) = normalise(&text) {
                    out.insert(id, n);
                }
            }
            Ok(out)
        })
    })
}

/// Links written by one statement of `import_linkage`.
const LINK_BATCH: usize = 100_000;

/// The RNG that draws the blinds of one request: ChaCha20 seeded once from the operating system,
/// so a failing OS generator is an error here (`OsRng` itself would panic inside `blind`).
fn blinding_rng() -> MsegResult<rand_chacha::ChaCha20Rng> {
    use rand_core::{RngCore, SeedableRng};
    let mut seed = Zeroizing::new([0u8; 32]);
    rand_core::OsRng.try_fill_bytes(&mut *seed).map_err(|e| {
        MsegError::new(Code::General, "the operating system's random number generator failed")
            .detail(e.to_string())
            .hint("The blinds of a linkage request must be secret random values; try again once getrandom works.")
    })?;
    Ok(rand_chacha::ChaCha20Rng::from_seed(*seed))
}

/// Register (or replace) the public key a trusted partner signs its linkage responses with (its
/// `mseg.controller_public_key()`).
#[pg_extern(volatile, parallel_unsafe)]
fn set_partner_public_key(partner: Option<&str>, public_key: Option<&str>) -> String {
    boundary(|| {
        let partner = partner.ok_or_else(|| MsegError::null_argument("partner"))?;
        let key = public_key.ok_or_else(|| MsegError::null_argument("public_key"))?;
        require_partner(partner)?;
        if dump::decode_public_key(key).is_none() {
            return Err(MsegError::new(Code::InvalidArgument, "the public key is not a base64 Ed25519 public key")
                .hint("Use the value of SELECT mseg.controller_public_key() at the trusted party."));
        }
        catalog::update(|c| {
            c.update(
                "INSERT INTO mseg.partner_keys (partner, public_key) VALUES ($1, $2) \
                 ON CONFLICT (partner) DO UPDATE SET public_key = EXCLUDED.public_key, set_at = pg_catalog.now()",
                None,
                &[partner.into(), key.trim().into()],
            )?;
            Ok(())
        })?;
        catalog::audit("linkage.partner_key", partner, json!({"public_key": key.trim()}))?;
        Ok(partner.to_owned())
    })
}

/// The linkage request for `partner`: the blinded matching identifiers (column `identifier` of the
/// subject table, trimmed and lower-cased) of every subject whose twin the partner holds now, as
/// signed JSON lines. The blinds stay here until `linkage_finalize`.
#[pg_extern(volatile, parallel_unsafe)]
fn linkage_request(partner: Option<&str>, identifier: Option<&str>) -> SetOfIterator<'static, String> {
    let lines = boundary(|| {
        let partner = partner.ok_or_else(|| MsegError::null_argument("partner"))?;
        let column = identifier.ok_or_else(|| MsegError::null_argument("identifier"))?;
        require_partner(partner)?;
        let controller = me()?;
        let subject = catalog::require_subject_table()?;
        identifier_column(&subject, column)?;
        let held: Vec<(i64, String)> = catalog::select(|c| {
            let mut v = Vec::new();
            for row in c.select(
                "SELECT subject_key, pseudonym FROM mseg.partner_twins WHERE partner OPERATOR(pg_catalog.=) $1 AND cohort IS NOT NULL \
                 ORDER BY pseudonym",
                None,
                &[partner.into()],
            )? {
                v.push((row.get::<i64>(1)?.unwrap_or(0), row.get::<String>(2)?.unwrap_or_default()));
            }
            Ok(v)
        })?;
        if held.is_empty() {
            return Err(MsegError::new(Code::InvalidLinkage, format!("partner \"{partner}\" holds no twins"))
                .hint("Export the Variant Twins first: a linkage request covers the twins the partner holds."));
        }
        let ids = identifiers(&subject, column, held.iter().map(|(k, _)| *k).collect())?;
        let sequence = catalog::as_owner(|| {
            catalog::query_one::<i64>(
                "SELECT COALESCE(pg_catalog.max(sequence), 0) OPERATOR(pg_catalog.+) 1 FROM mseg.link_requests \
                 WHERE partner OPERATOR(pg_catalog.=) $1",
                &[partner.into()],
            )
        })?
        .unwrap_or(1);
        let mut rng = blinding_rng()?;
        let (mut ns, mut keys_, mut pseudonyms, mut blinds, mut body) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        body.push(String::new()); // the manifest, once the count is known
        for (key, pseudonym) in &held {
            let Some(input) = ids.get(key) else { continue };
            let blinded = OprfClient::<Ristretto255>::blind(input.as_bytes(), &mut rng).map_err(|_| {
                MsegError::new(Code::InvalidLinkage, "a matching identifier cannot be blinded").detail("It is longer than 65535 bytes.")
            })?;
            ns.push(ns.len() as i32 + 1);
            keys_.push(*key);
            pseudonyms.push(pseudonym.clone());
            blinds.push(blinded.state.serialize().to_vec());
            body.push(dump::to_line(&json!({"type": "blinded", "element": dump::b64(&blinded.message.serialize())}))?);
        }
        let elements = ns.len();
        body[0] = dump::to_line(&json!({"type": "manifest", "format": REQUEST_FORMAT, "controller": controller, "partner": partner,
            "sequence": sequence, "counts": {"elements": elements}}))?;
        let (lines, sha256) = signed(body)?;
        catalog::update(|c| {
            c.update(
                "INSERT INTO mseg.link_requests (partner, sequence, identifier, subjects, sha256) VALUES ($1, $2, $3, $4, $5)",
                None,
                &[partner.into(), sequence.into(), column.into(), (elements as i32).into(), sha256.as_str().into()],
            )?;
            c.update(
                "INSERT INTO mseg.link_blinds (partner, sequence, n, subject_key, pseudonym, blind) \
                 SELECT $1, $2, u.n, u.k, u.p, u.b FROM ROWS FROM (pg_catalog.unnest($3::pg_catalog.int4[]), pg_catalog.unnest($4::pg_catalog.int8[]), \
                      pg_catalog.unnest($5::pg_catalog.text[]), pg_catalog.unnest($6::pg_catalog.bytea[])) AS u(n, k, p, b)",
                None,
                &[partner.into(), sequence.into(), ns.into(), keys_.into(), pseudonyms.into(), blinds.into()],
            )?;
            Ok(())
        })?;
        catalog::audit(
            "linkage.request",
            partner,
            json!({"sequence": sequence, "elements": elements, "without_identifier": held.len() - elements, "sha256": sha256}),
        )?;
        Ok(lines)
    });
    SetOfIterator::new(lines)
}

/// Finalise the trusted party's response (in a staging table `(n, line)`) to this controller's
/// request: verified, unblinded; returns the signed linkage file (the held twins' pseudonyms and
/// their OPRF outputs). The request's blinds are deleted.
#[pg_extern(volatile, parallel_unsafe)]
fn linkage_finalize(partner: Option<&str>, response: Option<PgRelation>) -> SetOfIterator<'static, String> {
    let lines = boundary(|| {
        let partner = partner.ok_or_else(|| MsegError::null_argument("partner"))?;
        require_partner(partner)?;
        let controller = me()?;
        let subject = catalog::require_subject_table()?;
        let key = catalog::as_owner(|| {
            catalog::query_one::<String>(
                "SELECT public_key FROM mseg.partner_keys WHERE partner OPERATOR(pg_catalog.=) $1",
                &[partner.into()],
            )
        })?;
        let key = key.and_then(|k| dump::decode_public_key(&k)).ok_or_else(|| {
            MsegError::new(Code::InvalidLinkage, format!("partner \"{partner}\" has no public key registered")).hint(
                "Register it with mseg.set_partner_public_key(partner, key), the value of mseg.controller_public_key() at the partner.",
            )
        })?;
        let raw = staging_lines(response)?;
        let lines = dump_lines(&raw);
        let checked = check_signed(&lines, RESPONSE_FORMAT, |_| Ok(key))?;
        let m = &checked.manifest;
        let party = text_field(m, "party")?;
        if party != partner {
            return Err(invalid(format!("the response comes from \"{}\", not from partner \"{partner}\"", short(party))));
        }
        let to = text_field(m, "controller")?;
        if to != controller {
            return Err(invalid(format!("the response is for controller \"{}\", not for this one (\"{controller}\")", short(to))));
        }
        let sequence = number_field(m, "sequence")?;
        let request: Option<(String, String, i32, bool)> = catalog::select(|c| {
            let t = c.select(
                "SELECT identifier::pg_catalog.text, sha256, subjects, finalized_at IS NOT NULL FROM mseg.link_requests \
                 WHERE partner OPERATOR(pg_catalog.=) $1 AND sequence OPERATOR(pg_catalog.=) $2",
                None,
                &[partner.into(), sequence.into()],
            )?;
            if t.is_empty() {
                return Ok(None);
            }
            let r = t.first();
            Ok(Some((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<i32>(3)?.unwrap_or(0),
                r.get::<bool>(4)?.unwrap_or(false),
            )))
        })?;
        let Some((column, request_sha, subjects, finalized)) = request else {
            return Err(invalid(format!("the response answers request {sequence}, which was never made to partner \"{partner}\"")));
        };
        if finalized {
            return Err(invalid(format!("request {sequence} to partner \"{partner}\" was already finalised (replay)")));
        }
        if m.get("request_sha256").and_then(Json::as_str) != Some(request_sha.as_str()) {
            return Err(invalid(format!("the response does not answer request {sequence} as it was sent"))
                .detail("The request digest it names differs from the request's."));
        }
        if count_field(m, "elements") != Some(subjects as u64) || checked.body.len() != subjects as usize {
            return Err(invalid("the response's counts do not match the request"));
        }
        let blinds: Vec<(i64, String, Vec<u8>)> = catalog::select(|c| {
            let mut v = Vec::new();
            for row in c.select(
                "SELECT subject_key, pseudonym, blind FROM mseg.link_blinds WHERE partner OPERATOR(pg_catalog.=) $1 \
                 AND sequence OPERATOR(pg_catalog.=) $2 ORDER BY n",
                None,
                &[partner.into(), sequence.into()],
            )? {
                v.push((
                    row.get::<i64>(1)?.unwrap_or(0),
                    row.get::<String>(2)?.unwrap_or_default(),
                    row.get::<Vec<u8>>(3)?.unwrap_or_default(),
                ));
            }
            Ok(v)
        })?;
        // a twin the partner no longer holds (tombstoned since) is not linked
        let still_held: HashSet<String> = catalog::select(|c| {
            let mut s = HashSet::new();
            for row in c.select(
                "SELECT pseudonym FROM mseg.partner_twins WHERE partner OPERATOR(pg_catalog.=) $1 AND cohort IS NOT NULL",
                None,
                &[partner.into()],
            )? {
                s.insert(row.get::<String>(1)?.unwrap_or_default());
            }
            Ok(s)
        })?;
        let ids = identifiers(&subject, &column, blinds.iter().map(|(k, _, _)| *k).collect())?;
        let mut links: Vec<String> = Vec::new();
        let mut skipped = 0usize;
        for (i, ((key, pseudonym, blind), line)) in blinds.iter().zip(&checked.body).enumerate() {
            let n = i + 2;
            let element = &body_fields(line, n, "evaluated", &["element"])?[0];
            let element = b64decode(element)
                .and_then(|b| EvaluationElement::<Ristretto255>::deserialize(&b).ok())
                .ok_or_else(|| invalid(format!("line {n} has no valid \"element\"")))?;
            let client =
                OprfClient::<Ristretto255>::deserialize(blind).map_err(|_| MsegError::new(Code::General, "a stored blind is unusable"))?;
            let (Some(input), true) = (ids.get(key), still_held.contains(pseudonym)) else {
                skipped += 1;
                continue;
            };
            let output = client.finalize(input.as_bytes(), &element).map_err(|_| invalid(format!("line {n} cannot be finalised")))?;
            links.push(dump::to_line(&json!({"type": "link", "pseudonym": pseudonym, "link": dump::b64(&output)}))?);
        }
        let mut body = vec![dump::to_line(&json!({"type": "manifest", "format": LINKAGE_FORMAT, "controller": controller,
            "partner": partner, "sequence": sequence, "counts": {"links": links.len()}}))?];
        let count = links.len();
        body.extend(links);
        let (lines, sha256) = signed(body)?;
        catalog::update(|c| {
            c.update(
                "DELETE FROM mseg.link_blinds WHERE partner OPERATOR(pg_catalog.=) $1 AND sequence OPERATOR(pg_catalog.=) $2",
                None,
                &[partner.into(), sequence.into()],
            )?;
            c.update(
                "UPDATE mseg.link_requests SET finalized_at = pg_catalog.now() WHERE partner OPERATOR(pg_catalog.=) $1 \
                 AND sequence OPERATOR(pg_catalog.=) $2",
                None,
                &[partner.into(), sequence.into()],
            )?;
            Ok(())
        })?;
        catalog::audit("linkage.finalize", partner, json!({"sequence": sequence, "links": count, "skipped": skipped, "sha256": sha256}))?;
        Ok(lines)
    });
    SetOfIterator::new(lines)
}

// ---------------------------------------------------------------------------------------------
// Trusted-party side
// ---------------------------------------------------------------------------------------------

/// The registered key of controller `id`, and its linkage sequences (last evaluated, last imported).
fn controller_key(id: &str) -> MsegResult<(VerifyingKey, i64, i64)> {
    let row: Option<(String, i64, i64)> = catalog::select(|c| {
        let t = c.select(
            "SELECT r.public_key, COALESCE(s.last_evaluated, 0), COALESCE(s.last_imported, 0) FROM mseg.controllers r \
             LEFT JOIN mseg.link_sequences s ON s.controller OPERATOR(pg_catalog.=) r.id WHERE r.id OPERATOR(pg_catalog.=) $1",
            None,
            &[id.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok(Some((r.get::<String>(1)?.unwrap_or_default(), r.get::<i64>(2)?.unwrap_or(0), r.get::<i64>(3)?.unwrap_or(0))))
    })?;
    let Some((key, evaluated, imported)) = row else {
        return Err(MsegError::new(Code::UnknownController, format!("controller \"{}\" is not registered", short(id)))
            .hint("Register it with mseg.register_controller(id, public_key). Nothing was used from the file."));
    };
    let key = dump::decode_public_key(&key).ok_or_else(|| invalid("the registered public key is unusable"))?;
    Ok((key, evaluated, imported))
}

/// Check the manifest's controller and partner (this party) and return the controller's key and sequences.
fn sender(m: &Json, found: &mut Option<(i64, i64)>) -> MsegResult<VerifyingKey> {
    let controller = text_field(m, "controller")?;
    let (key, evaluated, imported) = controller_key(controller)?;
    *found = Some((evaluated, imported));
    Ok(key)
}

fn for_me(m: &Json) -> MsegResult<()> {
    let me = me()?;
    let partner = text_field(m, "partner")?;
    if partner != me {
        return Err(invalid(format!("the file is for partner \"{}\", not for this party (\"{me}\")", short(partner)))
            .hint("Use only files made for this party; mseg.controller_id names it."));
    }
    Ok(())
}

/// Evaluate a controller's linkage request (in a staging table `(n, line)`) with this trusted
/// party's OPRF key; returns the signed response for the controller.
#[pg_extern(volatile, parallel_unsafe)]
fn linkage_evaluate(request: Option<PgRelation>) -> SetOfIterator<'static, String> {
    let lines = boundary(|| {
        let raw = staging_lines(request)?;
        let lines = dump_lines(&raw);
        let mut seqs = None;
        let checked = check_signed(&lines, REQUEST_FORMAT, |m| sender(m, &mut seqs))?;
        let m = &checked.manifest;
        for_me(m)?;
        let controller = text_field(m, "controller")?.to_owned();
        let (last_evaluated, _) = seqs.unwrap_or((0, 0));
        let sequence = number_field(m, "sequence")?;
        if sequence <= last_evaluated {
            return Err(invalid(format!("request {sequence} of controller \"{controller}\" was already evaluated (replay)"))
                .detail(format!("The last request evaluated for it is number {last_evaluated}.")));
        }
        if count_field(m, "elements") != Some(checked.body.len() as u64) {
            return Err(invalid("the manifest's counts do not match the lines"));
        }
        let server = keys::oprf_server()?;
        let mut body = vec![dump::to_line(&json!({"type": "manifest", "format": RESPONSE_FORMAT, "party": me()?,
            "controller": controller, "sequence": sequence, "request_sha256": checked.sha256,
            "counts": {"elements": checked.body.len()}}))?];
        for (i, line) in checked.body.iter().enumerate() {
            let n = i + 2;
            let element = &body_fields(line, n, "blinded", &["element"])?[0];
            let element = b64decode(element)
                .and_then(|b| BlindedElement::<Ristretto255>::deserialize(&b).ok())
                .ok_or_else(|| invalid(format!("line {n} has no valid \"element\"")))?;
            let evaluated = server.blind_evaluate(&element);
            body.push(dump::to_line(&json!({"type": "evaluated", "element": dump::b64(&evaluated.serialize())}))?);
        }
        let elements = body.len() - 1;
        let (lines, sha256) = signed(body)?;
        catalog::update(|c| {
            c.update(
                "INSERT INTO mseg.link_sequences (controller, last_evaluated) VALUES ($1, $2) \
                 ON CONFLICT (controller) DO UPDATE SET last_evaluated = EXCLUDED.last_evaluated",
                None,
                &[controller.as_str().into(), sequence.into()],
            )?;
            Ok(())
        })?;
        catalog::audit("linkage.evaluate", &controller, json!({"sequence": sequence, "elements": elements, "sha256": sha256}))?;
        Ok(lines)
    });
    SetOfIterator::new(lines)
}

/// Import a controller's linkage file (in a staging table `(n, line)`): it replaces that
/// controller's person links; returns the number of links.
#[pg_extern(volatile, parallel_unsafe)]
fn import_linkage(staging: Option<PgRelation>) -> i64 {
    boundary(|| {
        let raw = staging_lines(staging)?;
        let lines = dump_lines(&raw);
        let mut seqs = None;
        let checked = check_signed(&lines, LINKAGE_FORMAT, |m| sender(m, &mut seqs))?;
        let m = &checked.manifest;
        for_me(m)?;
        let controller = text_field(m, "controller")?.to_owned();
        let (last_evaluated, last_imported) = seqs.unwrap_or((0, 0));
        let sequence = number_field(m, "sequence")?;
        if sequence <= last_imported {
            return Err(invalid(format!("linkage {sequence} of controller \"{controller}\" was already imported (replay)"))
                .detail(format!("The last linkage imported from it is number {last_imported}.")));
        }
        if sequence > last_evaluated {
            return Err(invalid(format!("linkage {sequence} of controller \"{controller}\" answers no request evaluated here"))
                .detail(format!("The last request evaluated for it is number {last_evaluated}.")));
        }
        let (mut pseudonyms, mut persons) = (Vec::with_capacity(checked.body.len()), Vec::with_capacity(checked.body.len()));
        for (i, line) in checked.body.iter().enumerate() {
            let n = i + 2;
            let f = body_fields(line, n, "link", &["pseudonym", "link"])?;
            if f[0].len() != 43 {
                return Err(invalid(format!("line {n} has no valid \"pseudonym\"")));
            }
            if b64decode(&f[1]).map(|b| b.len()) != Some(64) {
                return Err(invalid(format!("line {n} has no valid \"link\"")));
            }
            let [p, l]: [String; 2] = f.try_into().map_err(|_| invalid(format!("line {n} is not a link line")))?;
            pseudonyms.push(p);
            persons.push(l);
        }
        let mut sorted: Vec<&String> = pseudonyms.iter().collect();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(invalid("the file links one pseudonym twice"));
        }
        if count_field(m, "links") != Some(pseudonyms.len() as u64) {
            return Err(invalid("the manifest's counts do not match the lines"));
        }
        let links = pseudonyms.len() as i64;
        catalog::update(|c| {
            c.update("DELETE FROM mseg.pool_links WHERE controller OPERATOR(pg_catalog.=) $1", None, &[controller.as_str().into()])?;
            // in batches: one text[] parameter is limited to 1 GB (about 11 million links)
            for (ps, ls) in pseudonyms.chunks(LINK_BATCH).zip(persons.chunks(LINK_BATCH)) {
                let ps: Vec<&str> = ps.iter().map(String::as_str).collect();
                let ls: Vec<&str> = ls.iter().map(String::as_str).collect();
                c.update(
                    "INSERT INTO mseg.pool_links (controller, pseudonym, person, sequence) \
                     SELECT $1, u.p, u.l, $2 FROM ROWS FROM (pg_catalog.unnest($3::pg_catalog.text[]), pg_catalog.unnest($4::pg_catalog.text[])) AS u(p, l)",
                    None,
                    &[controller.as_str().into(), sequence.into(), ps.into(), ls.into()],
                )?;
            }
            c.update(
                "UPDATE mseg.link_sequences SET last_imported = $2 WHERE controller OPERATOR(pg_catalog.=) $1",
                None,
                &[controller.as_str().into(), sequence.into()],
            )?;
            Ok(())
        })?;
        // the persons of this controller's twins, before and after, and their person segments
        crate::pool_persons::refresh(crate::pool_persons::Scope::Controller(&controller), false)?;
        catalog::audit("linkage.import", &controller, json!({"sequence": sequence, "links": links, "sha256": checked.sha256}))?;
        // persons in the published pooled sizes
        crate::sizes::publish()?;
        Ok(links)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_trims_and_lowercases() {
        assert_eq!(normalise("  Ann.Lee@Example.ORG \n").as_deref().map(String::as_str), Some("ann.lee@example.org"));
        assert!(normalise("   ").is_none());
        assert_eq!(normalise("ÄRGER@x.de").as_deref().map(String::as_str), Some("ärger@x.de"));
    }

    #[test]
    fn oprf_round_trip_matches_across_blinds_and_differs_across_inputs() {
        let server = voprf::OprfServer::<Ristretto255>::new_from_seed(&[7u8; 32], b"pg_mseg linkage").unwrap();
        let mut rng = rand_core::OsRng;
        let run = |input: &[u8], rng: &mut rand_core::OsRng| {
            let b = OprfClient::<Ristretto255>::blind(input, rng).unwrap();
            // the blinded element carries nothing of the input: two blinds of one input differ
            let wire = b.message.serialize().to_vec();
            let state = OprfClient::<Ristretto255>::deserialize(&b.state.serialize()).unwrap();
            let ev = EvaluationElement::<Ristretto255>::deserialize(
                &server.blind_evaluate(&BlindedElement::deserialize(&wire).unwrap()).serialize(),
            )
            .unwrap();
            (wire, state.finalize(input, &ev).unwrap().to_vec())
        };
        let (w1, o1) = run(b"ann@example.org", &mut rng);
        let (w2, o2) = run(b"ann@example.org", &mut rng);
        let (_, o3) = run(b"bob@example.org", &mut rng);
        assert_ne!(w1, w2);
        assert_eq!(o1, o2);
        assert_ne!(o1, o3);
        assert_eq!(o1.len(), 64);
        // the output is the server's own evaluation (RFC 9497 Evaluate)
        assert_eq!(o1, server.evaluate(b"ann@example.org").unwrap().to_vec());
    }
}
