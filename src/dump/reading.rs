//! Reading signed JSON-lines files (Variant Twin dumps at import, the linkage steps' files): the
//! limits every line and file is held to before it is parsed, the staging table a client loads a
//! file into, and the envelope (manifest, trailer, the digest and signature of the lines).

use ed25519_dalek::{Verifier, VerifyingKey};
use pgrx::prelude::*;
use pgrx::PgRelation;
use serde_json::Value as Json;

use crate::catalog;
use crate::error::{Code, MsegError, Result as MsegResult};

/// At most 64 characters of a value from the dump, for messages: an error never echoes a whole
/// field (a 200 MB manifest field would go to the client and the server log).
pub fn short(text: &str) -> String {
    crate::kanon::short(text)
}

fn over_limit(message: String, detail: String) -> MsegError {
    MsegError::new(Code::ImportLimit, message)
        .detail(detail)
        .hint("Nothing was imported. A superuser may raise the limit (mseg.import_max_*) if the dump is genuine.")
}

/// The deepest nesting of objects and arrays in a JSON text (brackets inside strings do not count).
fn json_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Refuse a line beyond the line-size or depth limit (before it is parsed).
pub fn check_line(n: usize, line: &str) -> MsegResult<()> {
    let limit = crate::gucs::import_max_line_bytes();
    if line.len() > limit {
        return Err(over_limit(
            format!("line {n} of the dump is longer than mseg.import_max_line_size"),
            format!("It has {} bytes; the limit is {limit}.", line.len()),
        ));
    }
    let max_depth = crate::gucs::import_max_json_depth();
    // a line with no more brackets than the limit cannot nest deeper (the count vectorises; the
    // scan that tells brackets in strings apart cost 6 % of an import)
    let brackets = line.bytes().filter(|&b| b == b'{' || b == b'[').count();
    if brackets > max_depth && json_depth(line) > max_depth {
        return Err(over_limit(
            format!("line {n} of the dump nests deeper than mseg.import_max_json_depth"),
            format!("The limit is {max_depth} levels of objects and arrays."),
        ));
    }
    Ok(())
}

/// Refuse a dump of `bytes` bytes beyond the size limit.
pub fn check_dump_size(bytes: u64) -> MsegResult<()> {
    let limit = crate::gucs::import_max_dump_bytes();
    if bytes > limit {
        return Err(over_limit("the dump is larger than mseg.import_max_dump_size".to_owned(), format!("It has more than {limit} bytes.")));
    }
    Ok(())
}

/// The dump's lines without line ends and empty lines (a file ends with a newline).
pub fn dump_lines<S: AsRef<str>>(lines: &[S]) -> Vec<&str> {
    lines.iter().map(|l| l.as_ref().trim_end_matches('\r')).filter(|l| !l.is_empty()).collect()
}

/// The lines of a staging table `(n, line)` the caller may read, in the order of `n`, within the
/// import limits (the dump import and the linkage steps).
pub fn staging_lines(staging: Option<PgRelation>) -> MsegResult<Vec<String>> {
    let relid = staging.map(|r| r.oid()).ok_or_else(|| MsegError::null_argument("staging"))?;
    let name = catalog::relation_name(relid);
    // a relation the caller names is read with the caller's own privileges
    catalog::require_select(relid).map_err(|e| MsegError { code: Code::ImportSource, ..e })?;
    let not_staging = || {
        MsegError::new(Code::ImportSource, format!("{name} is not a staging table (n, line)")).hint(
            "Create it as CREATE TEMP TABLE staging (n bigserial, line text) and load it with \\copy staging(line) FROM 'dump.jsonl' …",
        )
    };
    let shaped = catalog::select(|c| {
        Ok(c.select(
            "SELECT pg_catalog.count(*) FROM pg_catalog.pg_attribute WHERE attrelid OPERATOR(pg_catalog.=) $1 \
             AND attname OPERATOR(pg_catalog.=) ANY ('{n,line}'::pg_catalog.name[]) AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped",
            None,
            &[relid.into()],
        )?
        .first()
        .get_one::<i64>()?
            == Some(2))
    })?;
    if !shaped {
        return Err(not_staging());
    }
    catalog::with_search_path(c"pg_catalog, pg_temp", || {
        Spi::connect(|c| -> MsegResult<Vec<String>> {
            let mut out = Vec::new();
            let mut total = 0u64;
            let mut cursor =
                c.try_open_cursor(&format!("SELECT line::pg_catalog.text FROM {name} ORDER BY n"), &[]).map_err(|_| not_staging())?;
            loop {
                let batch = cursor.fetch(10_000).map_err(|_| not_staging())?;
                if batch.is_empty() {
                    return Ok(out);
                }
                for row in batch {
                    let line = row.get::<String>(1)?.unwrap_or_default();
                    total += line.len() as u64 + 1;
                    check_dump_size(total)?;
                    check_line(out.len() + 1, &line)?;
                    out.push(line);
                }
            }
        })
    })
}

/// How a reader names what it reads in its errors, and the error it gives (its SQLSTATE and hint).
pub struct Reader {
    /// "dump", "file"
    pub noun: &'static str,
    /// the detail when there is no manifest and trailer
    pub too_short: &'static str,
    /// the message for another format, before the format's name
    pub unknown_format: &'static str,
    /// the detail for another format, before the format it reads
    pub reads: &'static str,
    pub invalid: fn(String) -> MsegError,
}

impl Reader {
    fn invalid(&self, message: impl Into<String>) -> MsegError {
        (self.invalid)(message.into())
    }
}

/// A signed file's envelope, its lines within the limits: the manifest (line 1), the trailer (the
/// last line, index `last`) and the digest of the lines before the trailer, which its signature
/// covers ([`check_signature`]).
pub struct Envelope {
    pub manifest: Json,
    pub trailer: Json,
    pub digest: [u8; 32],
    pub last: usize,
}

/// Check every line against the limits, the manifest's type and `format`, the trailer's type;
/// compute the digest. Nothing is trusted until [`check_signature`] passes.
pub fn open(lines: &[&str], format: &str, r: &Reader) -> MsegResult<Envelope> {
    if lines.len() < 2 {
        return Err(r.invalid(format!("the {} is empty or truncated", r.noun)).detail(r.too_short));
    }
    for (i, l) in lines.iter().enumerate() {
        check_line(i + 1, l)?;
    }
    let parse = |i: usize| -> MsegResult<Json> {
        serde_json::from_str::<Json>(lines[i]).map_err(|e| r.invalid(format!("line {} is not valid JSON", i + 1)).detail(e.to_string()))
    };
    let manifest = parse(0)?;
    if manifest.get("type").and_then(Json::as_str) != Some("manifest") {
        return Err(r.invalid("the first line is not a manifest"));
    }
    let found = manifest.get("format").and_then(Json::as_str).unwrap_or("");
    if found != format {
        return Err(r.invalid(format!("{} \"{}\"", r.unknown_format, short(found))).detail(format!("{} {format}.", r.reads)));
    }
    let last = lines.len() - 1;
    let truncated = || r.invalid(format!("the {} is truncated: its last line is not a trailer", r.noun));
    let trailer = parse(last).map_err(|_| truncated())?;
    if trailer.get("type").and_then(Json::as_str) != Some("trailer") {
        return Err(truncated());
    }
    // the signature covers every line before the trailer
    let mut digest = super::LineDigest::default();
    for l in &lines[..last] {
        digest.add(l);
    }
    let (digest, _) = digest.finish();
    Ok(Envelope { manifest, trailer, digest, last })
}

/// The trailer's signature verifies under `key` and its line count is the file's; `mismatch`: the
/// detail of a signature that does not verify.
pub fn check_signature(e: &Envelope, key: &VerifyingKey, r: &Reader, mismatch: String) -> MsegResult<()> {
    let sig = super::trailer_signature(&e.trailer).ok_or_else(|| r.invalid("the trailer carries no valid signature"))?;
    if key.verify(&e.digest, &sig).is_err() {
        return Err(r.invalid(format!("the {}'s signature does not verify", r.noun)).detail(mismatch));
    }
    if e.trailer.get("lines").and_then(Json::as_u64) != Some(e.last as u64) {
        return Err(r.invalid(format!("the trailer's line count does not match the {}", r.noun)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{json_depth, short};

    #[test]
    fn json_depth_counts_brackets_outside_strings() {
        assert_eq!(json_depth(r#"{"a": 1}"#), 1);
        assert_eq!(json_depth(r#"{"a": {"b": [1, {"c": 2}]}}"#), 4);
        assert_eq!(json_depth(r#"{"a": "[[[[{{{{", "b": "\"[["}"#), 1);
        assert_eq!(json_depth(&"[".repeat(100)), 100);
    }

    #[test]
    fn messages_echo_only_a_short_prefix() {
        let long = "x".repeat(1_000_000);
        assert_eq!(short(&long).chars().count(), 65);
        assert_eq!(short("acme-retail"), "acme-retail");
    }
}
