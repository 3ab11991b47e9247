//! Partners, signed Variant Twin export, and the last-mile resolve (controller side).
//!
//! The export's steps are in `build`, what it reads in `input`, how twins are grouped in
//! `release`, the streaming and signing in `stream`; the format itself in `crate::dump`.
//!
//! What a twin says and how twins are grouped so that k holds over everything a partner
//! receives, across every dump: `release`, and docs/architecture.md ("Variant Twins").

use pgrx::prelude::*;
use serde_json::json;

use crate::catalog;
use crate::dump;
use crate::error::{boundary, Code, MsegError, Result as MsegResult};
use crate::keys;

mod build;
mod input;
mod release;
mod stream;

pub fn partner_domain(partner: &str) -> String {
    format!("partner.{partner}")
}

/// The controller's public key (base64), which trusted parties register.
#[pg_extern(volatile, parallel_safe)]
fn controller_public_key() -> String {
    boundary(|| Ok(dump::b64(keys::signing_key()?.verifying_key().as_bytes())))
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
        catalog::check_name(catalog::NameKind::Partner, name)?;
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
            // after the partner's row: an export still writing holds that row's lock, so its rows
            // are committed (and seen here) before this delete runs; no foreign key does it
            c.update("DELETE FROM mseg.partner_twins WHERE partner OPERATOR(pg_catalog.=) $1", None, &[name.into()])?;
            Ok(())
        })?;
        catalog::audit("partner.remove", name, json!({}))?;
        Ok(true)
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
        build::build_export(&p, mode)
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
) -> TableIterator<
    'static,
    (name!(pseudonym, Option<String>), name!(subject_key, Option<i64>), name!(status, String), name!(key, Option<String>)),
> {
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
