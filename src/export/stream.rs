//! The dump as it streams out of `mseg.export_variant_twins`, signed at its end.

use ed25519_dalek::Signer;
use serde_json::json;

use crate::catalog;
use crate::dump;
use crate::error::{boundary, Code, MsegError, Result as MsegResult};
use crate::keys;
use crate::pseudonym;

/// The dump as it streams out: manifest, twins (each line written only now, from its cohort's
/// line parts and its pseudonym), tombstones, then the trailer with the digest of everything
/// before it and its signature; the digest is recorded in mseg.partner_exports when the trailer is
/// written. Memory: the releasable subjects, the cohorts and the pseudonyms to send, never the
/// dump's lines.
pub(super) struct ExportStream {
    partner: String,
    sequence: i64,
    manifest: Option<String>,
    /// per cohort: the twin line before and after the pseudonym
    parts: Vec<(String, String)>,
    emit: std::vec::IntoIter<([u8; pseudonym::PSEUDONYM_LEN], u32)>,
    tombstones: std::vec::IntoIter<String>,
    digest: dump::LineDigest,
    finished: bool,
}

impl ExportStream {
    pub(super) fn new(
        partner: String,
        sequence: i64,
        manifest: String,
        parts: Vec<(String, String)>,
        twins: Vec<([u8; pseudonym::PSEUDONYM_LEN], u32)>,
        tombstones: Vec<String>,
    ) -> ExportStream {
        ExportStream {
            partner,
            sequence,
            manifest: Some(manifest),
            parts,
            emit: twins.into_iter(),
            tombstones: tombstones.into_iter(),
            digest: dump::LineDigest::default(),
            finished: false,
        }
    }

    fn next_body(&mut self) -> MsegResult<Option<String>> {
        if let Some(m) = self.manifest.take() {
            return Ok(Some(m));
        }
        if let Some((pseudonym, cohort)) = self.emit.next() {
            let (prefix, suffix) = self.parts.get(cohort as usize).ok_or_else(|| MsegError::new(Code::General, "twin without a cohort"))?;
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
        let (digest, lines) = std::mem::take(&mut self.digest).finish();
        let signature = keys::signing_key()?.sign(&digest);
        let sha = dump::hex(&digest);
        catalog::update(|c| {
            c.update(
                "UPDATE mseg.partner_exports SET sha256 = $3 WHERE partner OPERATOR(pg_catalog.=) $1 AND sequence OPERATOR(pg_catalog.=) $2",
                None,
                &[self.partner.as_str().into(), self.sequence.into(), sha.as_str().into()],
            )?;
            Ok(())
        })?;
        catalog::audit("export.signed", &self.partner, json!({"sequence": self.sequence, "lines": lines, "sha256": sha}))?;
        dump::trailer_line(lines, &digest, &signature)
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
                self.digest.add(&line);
                Ok(Some(line))
            }
            None => {
                self.finished = true;
                self.trailer().map(Some)
            }
        })
    }
}
