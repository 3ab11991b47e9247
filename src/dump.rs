//! The Variant Twin dump format `mseg-vt/2`, shared by the controller's export and the trusted
//! party's import (neither imports the other).
//!
//! A dump is JSON lines. Line 1 is the manifest (`"type":"manifest"`), then the twins
//! (`"type":"twin"`) in the order of their pseudonyms, then the tombstones
//! (`{"pseudonym":P,"type":"tombstone"}`) in the order of their pseudonyms, last the trailer:
//! `{"type":"trailer","lines":N,"sha256":H,"signature":S}` where H is the SHA-256 (hex) of the N
//! preceding lines, each followed by `\n`, and S the Ed25519 signature (base64) of H's 32 bytes
//! under the controller's key (`mseg.controller_public_key()`). serde_json writes object keys
//! sorted, so a line's bytes are a function of its content.

use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

use crate::error::{Code, MsegError, Result as MsegResult};

pub mod reading;

/// The format name a manifest carries; an import refuses any other.
pub const FORMAT: &str = "mseg-vt/2";

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// A line's canonical text (object keys sorted by serde_json).
pub fn to_line(value: &Json) -> MsegResult<String> {
    serde_json::to_string(value).map_err(|e| MsegError::new(Code::General, e.to_string()))
}

/// The tombstone line of a pseudonym.
pub fn tombstone_line(pseudonym: &str) -> String {
    format!("{{\"pseudonym\":\"{pseudonym}\",\"type\":\"tombstone\"}}")
}

/// The trailer line: the count and digest of the lines before it and the signature of the digest.
pub fn trailer_line(lines: usize, digest: &[u8], signature: &Signature) -> MsegResult<String> {
    to_line(&json!({"type": "trailer", "lines": lines, "sha256": hex(digest), "signature": b64(&signature.to_bytes())}))
}

/// The digest a trailer signs: every line before it, each followed by `\n`.
#[derive(Default)]
pub struct LineDigest {
    hasher: Sha256,
    lines: usize,
}

impl LineDigest {
    pub fn add(&mut self, line: &str) {
        self.hasher.update(line.as_bytes());
        self.hasher.update(b"\n");
        self.lines += 1;
    }

    /// Lines added so far.
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// The digest of the lines added, and their count.
    pub fn finish(self) -> ([u8; 32], usize) {
        (self.hasher.finalize().into(), self.lines)
    }
}

/// A base64 Ed25519 public key (as `mseg.controller_public_key()` prints it).
pub fn decode_public_key(text: &str) -> Option<VerifyingKey> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).ok()?;
    let arr: [u8; 32] = bytes.try_into().ok()?;
    VerifyingKey::from_bytes(&arr).ok()
}

/// The signature a trailer carries, if it is a well-formed one.
pub fn trailer_signature(trailer: &Json) -> Option<Signature> {
    let text = trailer.get("signature")?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
    <[u8; 64]>::try_from(bytes).ok().map(|b| Signature::from_bytes(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_covers_each_line_and_its_newline() {
        let mut d = LineDigest::default();
        d.add("a");
        d.add("b");
        let (digest, n) = d.finish();
        assert_eq!(n, 2);
        assert_eq!(hex(&digest), hex(&Sha256::digest(b"a\nb\n")));
    }

    #[test]
    fn tombstone_lines_are_canonical_json() {
        let line = tombstone_line("P1");
        let parsed: Json = serde_json::from_str(&line).unwrap();
        assert_eq!(to_line(&parsed).unwrap(), line);
    }
}
