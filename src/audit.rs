//! What makes the audit log evidence against a superuser, beyond its own hash chain
//! (sql/audit.sql appends and checks the chain):
//! - **signed anchors**: `mseg.audit_anchor()` signs (seq, hash) of the chain's head with the
//!   controller's Ed25519 key; every Variant Twin manifest carries one, and the trusted party keeps
//!   it (`mseg.controller_anchors`). `mseg.verify_audit_log(anchor)` then proves that the log still
//!   holds that entry with that hash: a re-hashed chain, a truncated tail or a wiped log cannot
//!   match an anchor someone else holds, even for a superuser who can read the key file (an anchor
//!   given out earlier cannot be taken back);
//! - **the ledger and the current state inside the chain**: each ledger event's audit entry
//!   carries its SHA-256 (checked in SQL), and the current state (`legal_basis_state`,
//!   `subject_state`) must equal a replay of the ledger ([`state_problem`]).

use std::collections::HashMap;

use base64::Engine;
use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};
use pgrx::prelude::*;
use serde_json::{json, Value as Json};

use crate::catalog::{self, Who};
use crate::error::{boundary, Code, MsegError, Result};
use crate::keys;

/// The format of a signed anchor (and the domain separation of its signature).
pub const ANCHOR_FORMAT: &str = "mseg-audit-anchor/1";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The exact bytes an anchor's signature covers.
fn anchor_message(controller: &str, seq: i64, hash: &str, at: &str) -> Vec<u8> {
    format!("{ANCHOR_FORMAT}\ncontroller={controller}\nseq={seq}\nhash={hash}\nat={at}\n").into_bytes()
}

/// The chain's head now, signed: what a partner keeps to detect later rewriting.
pub fn anchor() -> Result<Json> {
    let (seq, hash, at) = catalog::select(|c| {
        let t = c.select(
            "SELECT h.seq, pg_catalog.encode(h.hash, 'hex'), \
                    COALESCE(pg_catalog.to_char(l.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), '') \
             FROM (SELECT COALESCE((SELECT seq FROM mseg.audit_head), 0) AS seq, \
                          COALESCE((SELECT hash FROM mseg.audit_head), '\\x'::pg_catalog.bytea) AS hash) h \
             LEFT JOIN mseg.audit_log l ON l.seq OPERATOR(pg_catalog.=) h.seq",
            None,
            &[],
        )?;
        let r = t.first();
        Ok((r.get::<i64>(1)?.unwrap_or(0), r.get::<String>(2)?.unwrap_or_default(), r.get::<String>(3)?.unwrap_or_default()))
    })?;
    let controller = crate::gucs::controller_id().unwrap_or_default();
    let key = keys::signing_key()?;
    let signature = key.sign(&anchor_message(&controller, seq, &hash, &at));
    Ok(json!({
        "format": ANCHOR_FORMAT,
        "controller": controller,
        "seq": seq,
        "hash": hash,
        "at": at,
        "public_key": b64(key.verifying_key().as_bytes()),
        "signature": b64(&signature.to_bytes()),
    }))
}

/// A checked anchor: what it claims, once its signature verified under `key`.
#[derive(Debug)]
pub struct Anchor {
    pub controller: String,
    pub seq: i64,
    pub hash: String,
}

/// Check an anchor's shape and signature under `key`; the message says what is wrong.
pub fn check_anchor(anchor: &Json, key: &VerifyingKey) -> std::result::Result<Anchor, String> {
    let text = |f: &str| anchor.get(f).and_then(Json::as_str).map(str::to_owned);
    if text("format").as_deref() != Some(ANCHOR_FORMAT) {
        return Err(format!("the anchor is not in format {ANCHOR_FORMAT}"));
    }
    let (Some(controller), Some(hash), Some(at), Some(seq), Some(sig)) =
        (text("controller"), text("hash"), text("at"), anchor.get("seq").and_then(Json::as_i64), text("signature"))
    else {
        return Err("the anchor lacks controller, seq, hash, at or signature".to_owned());
    };
    let sig = base64::engine::general_purpose::STANDARD
        .decode(sig)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b))
        .ok_or_else(|| "the anchor's signature is not an Ed25519 signature".to_owned())?;
    key.verify(&anchor_message(&controller, seq, &hash, &at), &sig)
        .map_err(|_| "the anchor's signature does not verify with this controller's key".to_owned())?;
    Ok(Anchor { controller, seq, hash })
}

/// The signed head of the audit chain: `{format, controller, seq, hash, at, public_key, signature}`.
/// Every Variant Twin manifest carries one; keep anchors outside the database and check the log
/// against them with `mseg.verify_audit_log(anchor)`.
#[pg_extern(volatile, parallel_unsafe)]
fn audit_anchor() -> pgrx::JsonB {
    pgrx::JsonB(boundary(anchor))
}

/// Internal (verify_audit_log): the anchored (seq, hash) when `anchor` was signed by this
/// controller's key for this controller, else the problem.
#[pg_extern(stable, parallel_safe, name = "_anchor_claim")]
fn anchor_claim(
    anchor: Option<pgrx::JsonB>,
) -> TableIterator<'static, (name!(seq, Option<i64>), name!(hash, Option<String>), name!(problem, Option<String>))> {
    let row = boundary(|| {
        let anchor = anchor.ok_or_else(|| MsegError::null_argument("anchor"))?.0;
        let key = keys::signing_key()?.verifying_key();
        Ok(match check_anchor(&anchor, &key) {
            Err(problem) => (None, None, Some(problem)),
            Ok(a) => {
                let me = crate::gucs::controller_id().unwrap_or_default();
                if a.controller != me {
                    (None, None, Some(format!("the anchor is of controller \"{}\", not of this one", crate::kanon::short(&a.controller))))
                } else {
                    (Some(a.seq), Some(a.hash), None)
                }
            }
        })
    });
    TableIterator::once(row)
}

// ---------------------------------------------------------------------------------------------
// The current state as a replay of the ledger
// ---------------------------------------------------------------------------------------------

/// One (subject, purpose) state as the ledger implies it; times in microseconds since the epoch.
#[derive(Default, Clone, PartialEq, Debug)]
struct BasisState {
    consent_basis: Option<String>,
    granted_at: Option<i64>,
    notice_version: Option<String>,
    withdrawn_at: Option<i64>,
    objected_at: Option<i64>,
    last_event_id: i64,
    updated_at: i64,
}

#[derive(Default, Clone, PartialEq, Debug)]
struct SubjectState {
    restricted_at: Option<i64>,
    erased_at: Option<i64>,
    last_event_id: i64,
    updated_at: i64,
}

#[derive(Default)]
struct Replay {
    bases: HashMap<(String, String), BasisState>,
    subjects: HashMap<String, SubjectState>,
}

impl Replay {
    /// Apply one ledger event, exactly as the consent functions change the state (sql/consent.sql).
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        id: i64,
        subject: String,
        purpose: Option<String>,
        event: &str,
        basis: Option<String>,
        notice: Option<String>,
        mode: Option<String>,
        at: i64,
    ) {
        let key = |p: &Option<String>| (subject.clone(), p.clone().unwrap_or_default());
        match event {
            "grant" => {
                let s = self.bases.entry(key(&purpose)).or_default();
                *s = BasisState {
                    consent_basis: basis,
                    granted_at: Some(at),
                    notice_version: notice,
                    withdrawn_at: None,
                    objected_at: None,
                    last_event_id: id,
                    updated_at: at,
                };
            }
            "withdraw" => {
                let s = self.bases.entry(key(&purpose)).or_default();
                s.consent_basis = None;
                s.withdrawn_at = Some(at);
                s.last_event_id = id;
                s.updated_at = at;
            }
            "object" => {
                let s = self.bases.entry(key(&purpose)).or_default();
                s.objected_at = Some(at);
                s.last_event_id = id;
                s.updated_at = at;
            }
            "lift_objection" => {
                let s = self.bases.entry(key(&purpose)).or_default();
                s.objected_at = None;
                s.last_event_id = id;
                s.updated_at = at;
            }
            "restrict" | "lift_restriction" => {
                let s = self.subjects.entry(subject.clone()).or_default();
                s.restricted_at = (event == "restrict").then_some(at);
                s.last_event_id = id;
                s.updated_at = at;
            }
            "erase" => {
                self.bases.retain(|(s, _), _| *s != subject);
                if mode.as_deref() == Some("nullify") {
                    self.subjects
                        .insert(subject, SubjectState { restricted_at: None, erased_at: Some(at), last_event_id: id, updated_at: at });
                } else {
                    self.subjects.remove(&subject);
                }
            }
            _ => {}
        }
    }
}

const MICROS: &str = "(EXTRACT(epoch FROM {}) OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8";

fn micros(column: &str) -> String {
    MICROS.replace("{}", column)
}

/// The first difference between the stored current state and a replay of the ledger, or None.
pub fn state_problem() -> Result<Option<String>> {
    let mut replay = Replay::default();
    let sql = format!(
        "SELECT event_id, subject_ref, purpose, event, legal_basis, notice_version, evidence OPERATOR(pg_catalog.->>) 'mode', {} \
         FROM mseg.consent_events ORDER BY event_id",
        micros("recorded_at")
    );
    catalog::stream_rows(Who::Owner, &sql, |r| {
        let event = r.get::<String>(4)?.unwrap_or_default();
        replay.apply(
            r.get::<i64>(1)?.unwrap_or(0),
            r.get::<String>(2)?.unwrap_or_default(),
            r.get::<String>(3)?,
            &event,
            r.get::<String>(5)?,
            r.get::<String>(6)?,
            r.get::<String>(7)?,
            r.get::<i64>(8)?.unwrap_or(0),
        );
        Ok(())
    })?;
    let mut problem = None;
    // every stored row must be the replayed one (the subject's reference is computed from its key)
    let sql = format!(
        "SELECT mseg._subject_ref(mseg.subject_key(subject_key)), purpose, consent_basis, {}, notice_version, {}, {}, last_event_id, {}, subject_key \
         FROM mseg.legal_basis_state ORDER BY subject_key, purpose",
        micros("granted_at"),
        micros("withdrawn_at"),
        micros("objected_at"),
        micros("updated_at")
    );
    catalog::stream_rows(Who::Owner, &sql, |r| {
        if problem.is_some() {
            return Ok(());
        }
        let key = (r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?.unwrap_or_default());
        let stored = BasisState {
            consent_basis: r.get::<String>(3)?,
            granted_at: r.get::<i64>(4)?,
            notice_version: r.get::<String>(5)?,
            withdrawn_at: r.get::<i64>(6)?,
            objected_at: r.get::<i64>(7)?,
            last_event_id: r.get::<i64>(8)?.unwrap_or(0),
            updated_at: r.get::<i64>(9)?.unwrap_or(0),
        };
        let subject = r.get::<i64>(10)?.unwrap_or(0);
        match replay.bases.remove(&key) {
            None => {
                problem = Some(format!(
                    "the legal-basis state of subject {subject} for purpose \"{}\" has no ledger events (inserted outside pg_mseg)",
                    key.1
                ))
            }
            Some(expected) if expected != stored => {
                problem =
                    Some(format!("the legal-basis state of subject {subject} for purpose \"{}\" differs from its ledger (edited)", key.1))
            }
            _ => {}
        }
        Ok(())
    })?;
    if problem.is_some() {
        return Ok(problem);
    }
    if let Some(((_, purpose), s)) = replay.bases.iter().min_by_key(|(_, s)| s.last_event_id) {
        return Ok(Some(format!(
            "the legal-basis state for purpose \"{purpose}\" recorded by ledger event {} is missing (deleted)",
            s.last_event_id
        )));
    }
    let sql = format!(
        "SELECT mseg._subject_ref(mseg.subject_key(subject_key)), {}, {}, last_event_id, {}, subject_key FROM mseg.subject_state ORDER BY subject_key",
        micros("restricted_at"),
        micros("erased_at"),
        micros("updated_at")
    );
    catalog::stream_rows(Who::Owner, &sql, |r| {
        if problem.is_some() {
            return Ok(());
        }
        let key = r.get::<String>(1)?.unwrap_or_default();
        let stored = SubjectState {
            restricted_at: r.get::<i64>(2)?,
            erased_at: r.get::<i64>(3)?,
            last_event_id: r.get::<i64>(4)?.unwrap_or(0),
            updated_at: r.get::<i64>(5)?.unwrap_or(0),
        };
        let subject = r.get::<i64>(6)?.unwrap_or(0);
        match replay.subjects.remove(&key) {
            None => problem = Some(format!("the restriction state of subject {subject} has no ledger events (inserted outside pg_mseg)")),
            Some(expected) if expected != stored => {
                problem = Some(format!("the restriction state of subject {subject} differs from its ledger (edited)"))
            }
            _ => {}
        }
        Ok(())
    })?;
    if problem.is_some() {
        return Ok(problem);
    }
    if let Some(s) = replay.subjects.values().min_by_key(|s| s.last_event_id) {
        return Ok(Some(format!("the restriction state recorded by ledger event {} is missing (deleted)", s.last_event_id)));
    }
    Ok(None)
}

/// Internal (verify_audit_log): the first difference between the current state and a replay of
/// the ledger, or NULL.
#[pg_extern(stable, parallel_unsafe, name = "_state_problem")]
fn state_problem_sql() -> Option<String> {
    boundary(state_problem)
}

/// Trusted-party side: check the anchor a dump's manifest carries under the controller's key.
pub fn check_manifest_anchor(anchor: &Json, key: &VerifyingKey, controller: &str) -> Result<()> {
    let a = check_anchor(anchor, key).map_err(|why| {
        MsegError::new(Code::InvalidDump, "the manifest's audit anchor does not verify")
            .detail(why)
            .hint("Nothing was imported. Ask the controller for a fresh, complete dump.")
    })?;
    if a.controller != controller {
        return Err(MsegError::new(Code::InvalidDump, "the manifest's audit anchor is of another controller")
            .hint("Nothing was imported. Ask the controller for a fresh, complete dump."));
    }
    Ok(())
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::*;

    #[test]
    fn replay_follows_the_consent_transitions() {
        let mut r = Replay::default();
        let s = || "ref1".to_owned();
        let p = || Some("dm".to_owned());
        r.apply(1, s(), p(), "grant", Some("consent".into()), Some("v1".into()), None, 100);
        r.apply(2, s(), p(), "object", Some("legitimate_interest".into()), None, None, 200);
        r.apply(3, s(), p(), "withdraw", Some("consent".into()), None, None, 300);
        let st = r.bases.get(&("ref1".to_owned(), "dm".to_owned())).cloned().unwrap();
        assert_eq!(st.consent_basis, None);
        assert_eq!((st.granted_at, st.withdrawn_at, st.objected_at), (Some(100), Some(300), Some(200)));
        assert_eq!((st.last_event_id, st.updated_at, st.notice_version.as_deref()), (3, 300, Some("v1")));
        // a new grant clears the withdrawal and the objection
        r.apply(4, s(), p(), "grant", Some("contract".into()), None, None, 400);
        let st = r.bases.get(&("ref1".to_owned(), "dm".to_owned())).cloned().unwrap();
        assert_eq!((st.consent_basis.as_deref(), st.withdrawn_at, st.objected_at), (Some("contract"), None, None));
        r.apply(5, s(), None, "restrict", None, None, None, 500);
        assert_eq!(r.subjects.get("ref1").map(|x| x.restricted_at), Some(Some(500)));
        // erasure: the bases go; nullify keeps an erased subject state, delete removes it
        r.apply(6, s(), None, "erase", None, None, Some("nullify".into()), 600);
        assert!(r.bases.is_empty());
        assert_eq!(r.subjects.get("ref1").map(|x| (x.restricted_at, x.erased_at)), Some((None, Some(600))));
        r.apply(7, "ref2".into(), p(), "object", None, None, None, 700);
        r.apply(8, "ref2".into(), None, "erase", None, None, Some("delete".into()), 800);
        assert!(!r.subjects.contains_key("ref2") && !r.bases.keys().any(|(s, _)| s == "ref2"));
    }

    #[pg_test]
    fn anchors_verify_and_refuse_any_change() {
        let key = keys::signing_key().unwrap();
        let a = anchor().unwrap();
        let good = check_anchor(&a, &key.verifying_key()).unwrap();
        assert_eq!(good.seq, a["seq"].as_i64().unwrap());
        for (field, value) in [("seq", json!(good.seq + 1)), ("hash", json!("00")), ("controller", json!("other")), ("at", json!("x"))] {
            let mut t = a.clone();
            t[field] = value;
            assert!(check_anchor(&t, &key.verifying_key()).unwrap_err().contains("does not verify"), "{field}");
        }
        let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key();
        assert!(check_anchor(&a, &other).is_err());
        let mut t = a.clone();
        t["format"] = json!("mseg-audit-anchor/0");
        assert!(check_anchor(&t, &key.verifying_key()).unwrap_err().contains("format"));
    }
}
