//! Rights notices: a participant's objection or erasure at the trusted party reaches every
//! controller holding a twin linked to the participant's person.
//!
//! 1. trusted party: an objection (`mseg.object`, the ledger trigger `mseg._queue_objection_notices`)
//!    or an erasure (`mseg.forget`, [`before_erasure`] before the row goes) queues one line per
//!    linked twin in `mseg.rights_notice_queue`: the controller and the twin's pseudonym (in that
//!    controller's partner domain), the purpose of an objection. Nothing else of the participant
//!    stays for it: the person key goes with the participant's row.
//! 2. trusted party: `rights_notices(controller)` emits the controller's queued lines as a signed
//!    file (`mseg-rights-notice/1`, a sequence per controller) and deletes them.
//! 3. controller: `import_rights_notices(staging)` verifies it (the partner's registered key,
//!    addressed to this controller, the next sequence) and applies each line to the subject the
//!    partner holds under the pseudonym (`mseg.partner_twins`): an objection is recorded with
//!    `mseg.object` (source naming the partner); an erasure puts the subject in
//!    `mseg.partner_exclusions`, so no export to that partner releases it again: the next delta
//!    carries its tombstone, whose import at the trusted party removes the twin and its link.
//!    Pseudonyms the controller no longer knows are counted, not fatal.

use pgrx::prelude::*;
use pgrx::PgRelation;
use serde_json::{json, Value as Json};

use crate::catalog;
use crate::dump;
use crate::dump::reading::{self, dump_lines, short, staging_lines, Reader};
use crate::error::{boundary, Code, MsegError, Result as MsegResult};
use crate::linkage::{me, require_partner, signed};

pub const NOTICE_FORMAT: &str = "mseg-rights-notice/1";

fn invalid(message: impl Into<String>) -> MsegError {
    MsegError::new(Code::InvalidNotice, message).hint("Nothing was applied from the file. Ask the partner for a fresh, complete one.")
}

/// How the notice import names a file in its errors (class MS078, "Nothing was applied").
const NOTICE: Reader = Reader {
    noun: "notice file",
    too_short: "It has at least a manifest and a trailer.",
    unknown_format: "unknown format",
    reads: "This step reads",
    invalid,
};

/// Trusted party, inside `mseg.forget` before the subject row goes: queue an erasure notice for
/// every twin linked to the participant's person, and delete the participant's deliveries and
/// responses. Nothing happens where no participant columns are set (every controller).
pub fn before_erasure(key: &str) -> MsegResult<()> {
    catalog::update(|c| {
        let configured = !c.select("SELECT 1 FROM mseg.participant_columns", None, &[])?.is_empty();
        if !configured {
            return Ok(());
        }
        let queued = c
            .update(
                "INSERT INTO mseg.rights_notice_queue (controller, pseudonym, kind) \
                 SELECT DISTINCT l.controller, l.pseudonym, 'erasure' FROM mseg.participant_persons p \
                 JOIN mseg.pool_links l ON l.person OPERATOR(pg_catalog.=) p.person \
                 WHERE p.subject_key OPERATOR(pg_catalog.=) mseg._subject_id($1) \
                   AND NOT EXISTS (SELECT 1 FROM mseg.rights_notice_queue q WHERE q.controller OPERATOR(pg_catalog.=) l.controller \
                                   AND q.pseudonym OPERATOR(pg_catalog.=) l.pseudonym AND q.kind OPERATOR(pg_catalog.=) 'erasure') \
                 RETURNING 1",
                None,
                &[key.into()],
            )?
            .len();
        let delivered = c
            .update(
                "DELETE FROM mseg.deliveries WHERE subject_key OPERATOR(pg_catalog.=) mseg._subject_id($1) RETURNING 1",
                None,
                &[key.into()],
            )?
            .len();
        c.update(
            "SELECT mseg._audit('rights.queue', 'erasure', $1)",
            None,
            &[pgrx::JsonB(json!({"notices": queued, "deliveries_removed": delivered})).into()],
        )?;
        Ok(())
    })
}

/// The pending rights notices for `controller` as a signed file (JSON lines: manifest, one line
/// per notice, trailer); they are deleted here once emitted. A file is made even when nothing is
/// pending (the sequence tells the controller none was lost).
#[pg_extern(volatile, parallel_unsafe)]
fn rights_notices(controller: Option<&str>) -> SetOfIterator<'static, String> {
    let lines = boundary(|| {
        let controller = controller.ok_or_else(|| MsegError::null_argument("controller"))?;
        let party = me()?;
        let registered = catalog::as_owner(|| {
            catalog::query_one::<bool>(
                "SELECT EXISTS (SELECT 1 FROM mseg.controllers WHERE id OPERATOR(pg_catalog.=) $1)",
                &[controller.into()],
            )
        })?
        .unwrap_or(false);
        if !registered {
            return Err(MsegError::new(Code::UnknownController, format!("controller \"{}\" is not registered", short(controller)))
                .hint("mseg.controllers lists the controllers this party pools."));
        }
        let (sequence, pending) = catalog::select(|c| {
            let sequence = c
                .select(
                    "SELECT COALESCE(pg_catalog.max(sequence), 0) OPERATOR(pg_catalog.+) 1 FROM mseg.rights_notices_sent \
                     WHERE controller OPERATOR(pg_catalog.=) $1",
                    None,
                    &[controller.into()],
                )?
                .first()
                .get_one::<i64>()?
                .unwrap_or(1);
            let mut pending = Vec::new();
            for row in c.select(
                "SELECT kind, pseudonym, purpose FROM mseg.rights_notice_queue WHERE controller OPERATOR(pg_catalog.=) $1 \
                 ORDER BY kind, pseudonym, purpose",
                None,
                &[controller.into()],
            )? {
                pending.push((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default(), row.get::<String>(3)?));
            }
            Ok((sequence, pending))
        })?;
        let (mut objections, mut erasures) = (0i32, 0i32);
        let mut body = vec![String::new()]; // the manifest, once counted
        for (kind, pseudonym, purpose) in &pending {
            let line = if kind == "objection" {
                objections += 1;
                json!({"type": "objection", "pseudonym": pseudonym, "purpose": purpose})
            } else {
                erasures += 1;
                json!({"type": "erasure", "pseudonym": pseudonym})
            };
            body.push(dump::to_line(&line)?);
        }
        body[0] = dump::to_line(&json!({"type": "manifest", "format": NOTICE_FORMAT, "party": party, "controller": controller,
            "sequence": sequence, "counts": {"objections": objections, "erasures": erasures}}))?;
        let (lines, sha256) = signed(body)?;
        catalog::update(|c| {
            c.update("DELETE FROM mseg.rights_notice_queue WHERE controller OPERATOR(pg_catalog.=) $1", None, &[controller.into()])?;
            c.update(
                "INSERT INTO mseg.rights_notices_sent (controller, sequence, objections, erasures, sha256) VALUES ($1, $2, $3, $4, $5)",
                None,
                &[controller.into(), sequence.into(), objections.into(), erasures.into(), sha256.as_str().into()],
            )?;
            Ok(())
        })?;
        catalog::audit(
            "rights.notices",
            controller,
            json!({"sequence": sequence, "objections": objections, "erasures": erasures, "sha256": sha256}),
        )?;
        Ok(lines)
    });
    SetOfIterator::new(lines)
}

fn manifest_text<'a>(m: &'a Json, name: &str) -> MsegResult<&'a str> {
    m.get(name).and_then(Json::as_str).ok_or_else(|| invalid(format!("the manifest has no \"{name}\"")))
}

/// One notice line: (kind, pseudonym, purpose of an objection).
fn notice_line(line: &str, n: usize) -> MsegResult<(String, String, Option<String>)> {
    let v: Json = serde_json::from_str(line).map_err(|e| invalid(format!("line {n} is not valid JSON")).detail(e.to_string()))?;
    let field = |name: &str| v.get(name).and_then(Json::as_str).map(str::to_owned);
    let pseudonym = field("pseudonym").filter(|p| p.len() == 43).ok_or_else(|| invalid(format!("line {n} has no valid \"pseudonym\"")))?;
    match v.get("type").and_then(Json::as_str) {
        Some("objection") => {
            let purpose = field("purpose").ok_or_else(|| invalid(format!("line {n} has no valid \"purpose\"")))?;
            Ok(("objection".to_owned(), pseudonym, Some(purpose)))
        }
        Some("erasure") => Ok(("erasure".to_owned(), pseudonym, None)),
        _ => Err(invalid(format!("line {n} is neither an objection nor an erasure"))),
    }
}

/// Import a partner's rights notice file (in a staging table `(n, line)`): every line checked
/// before any is applied; objections recorded with `mseg.object`, erasures as exclusions from the
/// partner. Returns the number of notices applied (unknown pseudonyms and repeated notices are
/// counted in the audit entry, not applied).
#[pg_extern(volatile, parallel_unsafe)]
fn import_rights_notices(staging: Option<PgRelation>) -> i64 {
    boundary(|| {
        let raw = staging_lines(staging)?;
        let lines = dump_lines(&raw);
        let envelope = reading::open(&lines, NOTICE_FORMAT, &NOTICE)?;
        let m = &envelope.manifest;
        let partner = manifest_text(m, "party")?.to_owned();
        require_partner(&partner).map_err(|e| e.hint("Add it with mseg.add_partner(name, purposes, k). Nothing was applied."))?;
        let key = catalog::as_owner(|| {
            catalog::query_one::<String>(
                "SELECT public_key FROM mseg.partner_keys WHERE partner OPERATOR(pg_catalog.=) $1",
                &[partner.as_str().into()],
            )
        })?;
        let key = key.and_then(|k| dump::decode_public_key(&k)).ok_or_else(|| {
            MsegError::new(Code::InvalidNotice, format!("partner \"{partner}\" has no public key registered")).hint(
                "Register it with mseg.set_partner_public_key(partner, key), the value of mseg.controller_public_key() at the partner.",
            )
        })?;
        reading::check_signature(
            &envelope,
            &key,
            &NOTICE,
            "The lines were changed, removed or added after signing, or the file was not signed by the partner's registered key."
                .to_owned(),
        )?;
        let controller = me()?;
        let to = manifest_text(m, "controller")?;
        if to != controller {
            return Err(invalid(format!("the notice file is for controller \"{}\", not for this one (\"{controller}\")", short(to)))
                .hint("Import only notice files made for this controller; mseg.controller_id names it."));
        }
        let sequence = m.get("sequence").and_then(Json::as_i64).ok_or_else(|| invalid("the manifest's \"sequence\" is not a number"))?;
        let last = catalog::as_owner(|| {
            catalog::query_one::<i64>(
                "SELECT COALESCE(pg_catalog.max(sequence), 0) FROM mseg.notice_imports WHERE partner OPERATOR(pg_catalog.=) $1",
                &[partner.as_str().into()],
            )
        })?
        .unwrap_or(0);
        if sequence <= last {
            return Err(invalid(format!("notice file {sequence} of partner \"{partner}\" was already imported (replay)"))
                .detail(format!("The last notice file imported from it is number {last}.")));
        }
        if sequence != last + 1 {
            return Err(invalid(format!("notice file {sequence} of partner \"{partner}\" is out of order"))
                .detail(format!("Expected notice file {} next (the last imported is {last}); import the missing ones first.", last + 1)));
        }
        let mut notices = Vec::with_capacity(envelope.last.saturating_sub(1));
        for (i, line) in lines[1..envelope.last].iter().enumerate() {
            notices.push(notice_line(line, i + 2)?);
        }
        let count = |kind: &str| notices.iter().filter(|n| n.0 == kind).count() as u64;
        let counts = m.get("counts");
        let counted = |name: &str| counts.and_then(|c| c.get(name)).and_then(Json::as_u64);
        if counted("objections") != Some(count("objection")) || counted("erasures") != Some(count("erasure")) {
            return Err(invalid("the manifest's counts do not match the lines"));
        }
        let source = format!("rights notice {sequence} from partner {partner}");
        let evidence = json!({"partner": partner, "notice_sequence": sequence});
        let (mut objected, mut excluded, mut unknown, mut unknown_purpose, mut already) = (0i64, 0i64, 0i64, 0i64, 0i64);
        catalog::update(|c| {
            for (kind, pseudonym, purpose) in &notices {
                // the subject the partner holds under the pseudonym (tombstoned twins included);
                // gone (erased here) or never known: counted
                let subject = c.select(
                    "SELECT t.subject_key, mseg.subject_key(t.subject_key) FROM mseg.partner_twins t \
                     WHERE t.partner OPERATOR(pg_catalog.=) $1 AND t.pseudonym OPERATOR(pg_catalog.=) $2",
                    None,
                    &[partner.as_str().into(), pseudonym.as_str().into()],
                )?;
                let found = if subject.is_empty() {
                    None
                } else {
                    let r = subject.first();
                    r.get::<i64>(1)?.zip(r.get::<String>(2)?)
                };
                let Some((id, key)) = found else {
                    unknown += 1;
                    continue;
                };
                if kind == "erasure" {
                    let inserted = c
                        .update(
                            "INSERT INTO mseg.partner_exclusions (partner, subject_key, notice_sequence) VALUES ($1, $2, $3) \
                             ON CONFLICT DO NOTHING RETURNING 1",
                            None,
                            &[partner.as_str().into(), id.into(), sequence.into()],
                        )?
                        .len();
                    if inserted == 0 {
                        already += 1;
                    } else {
                        excluded += 1;
                    }
                    continue;
                }
                let purpose = purpose.as_deref().unwrap_or("");
                // the state an objection needs: the subject here, not erased, the purpose defined
                let state = c.select(
                    "SELECT EXISTS (SELECT 1 FROM mseg.purposes WHERE name OPERATOR(pg_catalog.=) $2), \
                            mseg._subject_exists($1) AND NOT EXISTS (SELECT 1 FROM mseg.erasures e \
                                WHERE e.subject_ref OPERATOR(pg_catalog.=) mseg._subject_ref($1)), \
                            EXISTS (SELECT 1 FROM mseg.legal_basis_state s WHERE s.subject_key OPERATOR(pg_catalog.=) $3 \
                                AND s.purpose OPERATOR(pg_catalog.=) $2 AND s.objected_at IS NOT NULL)",
                    None,
                    &[key.as_str().into(), purpose.into(), id.into()],
                )?;
                let r = state.first();
                let (defined, present, objected_already) =
                    (r.get::<bool>(1)?.unwrap_or(false), r.get::<bool>(2)?.unwrap_or(false), r.get::<bool>(3)?.unwrap_or(false));
                if !defined {
                    unknown_purpose += 1;
                } else if !present {
                    unknown += 1;
                } else if objected_already {
                    already += 1;
                } else {
                    c.update(
                        "SELECT mseg._choose($1, $2, 'object', $3, NULL, NULL, $4, $5)",
                        None,
                        &[id.into(), key.as_str().into(), purpose.into(), source.as_str().into(), pgrx::JsonB(evidence.clone()).into()],
                    )?;
                    objected += 1;
                }
            }
            let counts = json!({"objections": count("objection"), "erasures": count("erasure"), "objected": objected,
                "excluded": excluded, "already": already, "unknown": unknown, "unknown_purpose": unknown_purpose});
            c.update(
                "INSERT INTO mseg.notice_imports (partner, sequence, sha256, counts) VALUES ($1, $2, $3, $4)",
                None,
                &[partner.as_str().into(), sequence.into(), dump::hex(&envelope.digest).into(), pgrx::JsonB(counts).into()],
            )?;
            Ok(())
        })?;
        catalog::audit(
            "rights.import",
            &partner,
            json!({"sequence": sequence, "objected": objected, "excluded": excluded, "already": already,
                   "unknown": unknown, "unknown_purpose": unknown_purpose, "sha256": dump::hex(&envelope.digest)}),
        )?;
        Ok(objected + excluded)
    })
}
