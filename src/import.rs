//! Variant Twin import at the trusted party: every check before anything is applied, then the
//! whole dump in one transaction or nothing.

use ed25519_dalek::Verifier;
use pgrx::prelude::*;
use pgrx::PgRelation;
use serde_json::{json, Value as Json};

use crate::catalog;
use crate::dump::{self, FORMAT};
use crate::error::{boundary, Code, MsegError, Result as MsegResult};

fn invalid(message: impl Into<String>) -> MsegError {
    MsegError::new(Code::InvalidDump, message).hint("Nothing was imported. Ask the controller for a fresh, complete dump.")
}

/// At most 64 characters of a value from the dump, for messages: an error never echoes a whole
/// field (a 200 MB manifest field would go to the client and the server log).
pub(crate) fn short(text: &str) -> String {
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
pub(crate) fn check_line(n: usize, line: &str) -> MsegResult<()> {
    let limit = crate::gucs::import_max_line_bytes();
    if line.len() > limit {
        return Err(over_limit(
            format!("line {n} of the dump is longer than mseg.import_max_line_size"),
            format!("It has {} bytes; the limit is {limit}.", line.len()),
        ));
    }
    let max_depth = crate::gucs::import_max_json_depth();
    if json_depth(line) > max_depth {
        return Err(over_limit(
            format!("line {n} of the dump nests deeper than mseg.import_max_json_depth"),
            format!("The limit is {max_depth} levels of objects and arrays."),
        ));
    }
    Ok(())
}

/// Refuse a dump of `bytes` bytes beyond the size limit.
fn check_dump_size(bytes: u64) -> MsegResult<()> {
    let limit = crate::gucs::import_max_dump_bytes();
    if bytes > limit {
        return Err(over_limit("the dump is larger than mseg.import_max_dump_size".to_owned(), format!("It has more than {limit} bytes.")));
    }
    Ok(())
}

/// Register a controller whose dumps this trusted party accepts, with its public key.
#[pg_extern(volatile, parallel_unsafe)]
fn register_controller(id: Option<&str>, public_key: Option<&str>) -> String {
    boundary(|| {
        let id = id.ok_or_else(|| MsegError::null_argument("id"))?;
        let key = public_key.ok_or_else(|| MsegError::null_argument("public_key"))?;
        if id.is_empty() || id.len() > 63 {
            return Err(MsegError::new(Code::InvalidArgument, format!("invalid controller id \"{id}\"")));
        }
        if dump::decode_public_key(key).is_none() {
            return Err(MsegError::new(Code::InvalidArgument, "the public key is not a base64 Ed25519 public key")
                .hint("Use the value of SELECT mseg.controller_public_key() at the controller."));
        }
        let inserted = catalog::update(|c| {
            Ok(!c
                .update(
                    "INSERT INTO mseg.controllers (id, public_key) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING RETURNING id",
                    None,
                    &[id.into(), key.into()],
                )?
                .is_empty())
        })?;
        if !inserted {
            return Err(MsegError::new(Code::DuplicateObject, format!("controller \"{id}\" is already registered")));
        }
        catalog::audit("controller.register", id, json!({"public_key": key}))?;
        Ok(id.to_owned())
    })
}

struct Verified {
    controller: String,
    sequence: i64,
    full: bool,
    /// indexes of the twin lines: they are parsed again, in batches, when applied, so a dump of a
    /// million twins never holds a million parsed documents at once
    twins: Vec<usize>,
    tombstones: Vec<String>,
    /// the controller's signed audit anchor the manifest carried (checked), kept for its auditors
    anchor: Option<Json>,
}

fn field<'a>(v: &'a Json, name: &str, line: usize) -> MsegResult<&'a Json> {
    v.get(name).ok_or_else(|| invalid(format!("line {line} has no \"{name}\"")))
}

/// The dump's lines without line ends and empty lines (a file ends with a newline).
pub(crate) fn dump_lines<S: AsRef<str>>(lines: &[S]) -> Vec<&str> {
    lines.iter().map(|l| l.as_ref().trim_end_matches('\r')).filter(|l| !l.is_empty()).collect()
}

/// What the import reads of a line: borrowed fields, objects left raw (never a whole document).
#[derive(serde::Deserialize)]
struct Shape<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pseudonym: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    quasi: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    legal_basis: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    policy: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    segments: Option<Vec<std::borrow::Cow<'a, str>>>,
}

fn verify(lines: &[&str]) -> MsegResult<Verified> {
    if lines.len() < 2 {
        return Err(invalid("the dump is empty or truncated").detail("A dump has at least a manifest and a trailer."));
    }
    for (i, l) in lines.iter().enumerate() {
        check_line(i + 1, l)?;
    }
    let parse = |i: usize| -> MsegResult<Json> {
        serde_json::from_str::<Json>(lines[i]).map_err(|e| invalid(format!("line {} is not valid JSON", i + 1)).detail(e.to_string()))
    };
    let manifest = parse(0)?;
    if manifest.get("type").and_then(Json::as_str) != Some("manifest") {
        return Err(invalid("the first line is not a manifest"));
    }
    let format = manifest.get("format").and_then(Json::as_str).unwrap_or("");
    if format != FORMAT {
        return Err(invalid(format!("unknown dump format \"{}\"", short(format))).detail(format!("This pg_mseg reads {FORMAT}.")));
    }
    let last = lines.len() - 1;
    let trailer = parse(last).map_err(|_| invalid("the dump is truncated: its last line is not a trailer"))?;
    if trailer.get("type").and_then(Json::as_str) != Some("trailer") {
        return Err(invalid("the dump is truncated: its last line is not a trailer"));
    }
    // the signature covers every line before the trailer
    let mut digest = dump::LineDigest::default();
    for l in &lines[..last] {
        digest.add(l);
    }
    let (digest, _) = digest.finish();
    let controller = field(&manifest, "controller", 1)?.as_str().unwrap_or("").to_owned();
    let key: Option<(String, i64)> = catalog::select(|c| {
        let t = c.select(
            "SELECT public_key, last_sequence FROM mseg.controllers WHERE id OPERATOR(pg_catalog.=) $1",
            None,
            &[controller.as_str().into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok(Some((r.get::<String>(1)?.unwrap_or_default(), r.get::<i64>(2)?.unwrap_or(0))))
    })?;
    let Some((key, last_sequence)) = key else {
        return Err(MsegError::new(Code::UnknownController, format!("controller \"{}\" is not registered", short(&controller)))
            .hint("Register it with mseg.register_controller(id, public_key). Nothing was imported."));
    };
    let vk = dump::decode_public_key(&key).ok_or_else(|| invalid("the registered public key is unusable"))?;
    let sig = dump::trailer_signature(&trailer).ok_or_else(|| invalid("the trailer carries no valid signature"))?;
    if vk.verify(&digest, &sig).is_err() {
        return Err(invalid("the dump's signature does not verify").detail(format!(
            "The lines were changed, removed or added after signing, or the dump was not signed by controller \"{}\"'s registered key.",
            short(&controller)
        )));
    }
    if trailer.get("lines").and_then(Json::as_u64) != Some(last as u64) {
        return Err(invalid("the trailer's line count does not match the dump"));
    }
    let anchor = manifest.get("audit_anchor").cloned();
    if let Some(a) = &anchor {
        crate::audit::check_manifest_anchor(a, &vk, &controller)?;
    }
    // the manifest: for us, in sequence
    let me = crate::gucs::controller_id().unwrap_or_default();
    let partner = field(&manifest, "partner", 1)?.as_str().unwrap_or("");
    if partner != me {
        return Err(invalid(format!("the dump is for partner \"{}\", not for this party (\"{me}\")", short(partner)))
            .hint("Import only dumps made for this party; mseg.controller_id names it."));
    }
    let sequence = field(&manifest, "sequence", 1)?.as_i64().ok_or_else(|| invalid("the manifest's sequence is not a number"))?;
    let follows = manifest.get("follows").and_then(Json::as_i64).unwrap_or(0);
    if sequence <= last_sequence {
        return Err(invalid(format!("dump {sequence} of controller \"{controller}\" was already imported (replay)"))
            .detail(format!("The last dump imported from it is number {last_sequence}.")));
    }
    if sequence != last_sequence + 1 || follows != last_sequence {
        return Err(invalid(format!("dump {sequence} of controller \"{controller}\" is out of order"))
            .detail(format!("Expected dump {} next (the last imported is {last_sequence}).", last_sequence + 1)));
    }
    let full = match manifest.get("mode").and_then(Json::as_str) {
        Some("full") => true,
        Some("delta") => false,
        _ => return Err(invalid("the manifest's mode is neither full nor delta")),
    };
    // every line's shape, read without building a document (borrowed fields, raw objects)
    let is_object = |r: Option<&serde_json::value::RawValue>| r.is_some_and(|r| r.get().starts_with('{'));
    // (pseudonym, line index) of every twin: sorted by pseudonym they are applied in key order
    // (the pool's primary key then grows at one end instead of at random places)
    let mut keyed: Vec<(std::borrow::Cow<'_, str>, usize)> = Vec::new();
    let mut tombstones = Vec::new();
    for (i, l) in lines.iter().enumerate().take(last).skip(1) {
        let n = i + 1;
        let v: Shape<'_> = serde_json::from_str(l).map_err(|e| {
            let what = if e.is_data() { format!("line {n} has a field of the wrong type") } else { format!("line {n} is not valid JSON") };
            invalid(what).detail(e.to_string())
        })?;
        let pseudonym = v.pseudonym.filter(|p| p.len() == 43).ok_or_else(|| invalid(format!("line {n} has no valid pseudonym")))?;
        match v.kind.as_deref() {
            Some("twin") => {
                for (f, r) in [("quasi", v.quasi), ("legal_basis", v.legal_basis), ("policy", v.policy)] {
                    if !is_object(r) {
                        return Err(invalid(format!("line {n}: \"{f}\" is not an object")));
                    }
                }
                if v.segments.is_none() {
                    return Err(invalid(format!("line {n}: \"segments\" is not a list of names")));
                }
                keyed.push((pseudonym, i));
            }
            Some("tombstone") => {
                tombstones.push(pseudonym.to_string());
                keyed.push((pseudonym, usize::MAX - i));
            }
            _ => return Err(invalid(format!("line {n} is neither a twin nor a tombstone"))),
        }
    }
    keyed.sort_unstable();
    let line_of = |i: usize| if i > last { usize::MAX - i + 1 } else { i + 1 };
    if let Some(w) = keyed.windows(2).find(|w| w[0].0 == w[1].0) {
        let (a, b) = (line_of(w[0].1).min(line_of(w[1].1)), line_of(w[0].1).max(line_of(w[1].1)));
        return Err(invalid(format!("line {b} repeats the pseudonym of line {a}")));
    }
    let twins: Vec<usize> = keyed.into_iter().map(|(_, i)| i).filter(|i| *i <= last).collect();
    let counts = field(&manifest, "counts", 1)?;
    if counts.get("twins").and_then(Json::as_u64) != Some(twins.len() as u64)
        || counts.get("tombstones").and_then(Json::as_u64) != Some(tombstones.len() as u64)
    {
        return Err(invalid("the manifest's counts do not match the lines"));
    }
    Ok(Verified { controller, sequence, full, twins, tombstones, anchor })
}

const INSERT_TWINS: &str =
    "INSERT INTO mseg.pool_twins (controller, pseudonym, quasi, segments, legal_basis, policy, expires_at, sequence) \
     SELECT $1, x.d OPERATOR(pg_catalog.->>) 'pseudonym', x.d OPERATOR(pg_catalog.->) 'quasi', \
            u.segs::pg_catalog.text[], \
            x.d OPERATOR(pg_catalog.->) 'legal_basis', x.d OPERATOR(pg_catalog.->) 'policy', \
            (x.d OPERATOR(pg_catalog.->) 'policy' OPERATOR(pg_catalog.->>) 'expires_at')::pg_catalog.timestamptz, $3 \
     FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($4::pg_catalog.text[])) AS u(line, segs) \
     CROSS JOIN LATERAL (SELECT u.line::pg_catalog.jsonb AS d OFFSET 0) x";
const UPSERT_TWINS: &str = " ON CONFLICT (controller, pseudonym) DO UPDATE SET quasi = EXCLUDED.quasi, segments = EXCLUDED.segments, \
     legal_basis = EXCLUDED.legal_basis, policy = EXCLUDED.policy, expires_at = EXCLUDED.expires_at, sequence = EXCLUDED.sequence";

/// A PostgreSQL text[] literal of `items`, each element quoted and escaped.
fn array_literal<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::from("{");
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for ch in item.chars() {
            if ch == '"' || ch == '\\' {
                out.push('\\');
            }
            out.push(ch);
        }
        out.push('"');
    }
    out.push('}');
    out
}

fn apply(lines: &[&str], v: Verified) -> MsegResult<i64> {
    catalog::update(|c| {
        if v.full {
            c.update("DELETE FROM mseg.pool_twins WHERE controller OPERATOR(pg_catalog.=) $1", None, &[v.controller.as_str().into()])?;
        }
        // in batches of 10 000 lines, each parsed by PostgreSQL's jsonb input once (OFFSET 0 keeps
        // the cast from being inlined into every reference), in a memory context of its own
        // a full dump replaces the controller's twins, all deleted above, and its pseudonyms are
        // distinct (verified): a plain insert, no conflict to look for
        let sql = if v.full { INSERT_TWINS.to_owned() } else { format!("{INSERT_TWINS}{UPSERT_TWINS}") };
        for chunk in v.twins.chunks(10_000) {
            let texts: Vec<&str> = chunk.iter().map(|&i| lines[i]).collect();
            // each twin's segments as an array literal (cheaper than expanding the JSON list in SQL)
            let segs: Vec<String> = texts
                .iter()
                .map(|l| {
                    let shape: Shape<'_> =
                        serde_json::from_str(l).map_err(|e| invalid("a twin line changed while importing").detail(e.to_string()))?;
                    Ok(array_literal(shape.segments.unwrap_or_default().iter().map(|c| c.as_ref())))
                })
                .collect::<MsegResult<_>>()?;
            let mut batch = pgrx::PgMemoryContexts::new("mseg import batch");
            // SAFETY: the context lives until the statement is done; nothing allocated in it escapes.
            unsafe {
                batch.switch_to(|_| {
                    c.update(sql.as_str(), None, &[v.controller.as_str().into(), texts.into(), v.sequence.into(), segs.into()]).map(|_| ())
                })?;
            }
        }
        c.update(
            "DELETE FROM mseg.pool_twins WHERE controller OPERATOR(pg_catalog.=) $1 AND pseudonym OPERATOR(pg_catalog.=) ANY ($2)",
            None,
            &[v.controller.as_str().into(), v.tombstones.clone().into()],
        )?;
        // a tombstoned twin loses its person link at once; a full dump keeps only the links of
        // the twins it restates (src/linkage.rs)
        c.update(
            "DELETE FROM mseg.pool_links WHERE controller OPERATOR(pg_catalog.=) $1 AND pseudonym OPERATOR(pg_catalog.=) ANY ($2)",
            None,
            &[v.controller.as_str().into(), v.tombstones.clone().into()],
        )?;
        if v.full {
            c.update(
                "DELETE FROM mseg.pool_links l WHERE l.controller OPERATOR(pg_catalog.=) $1 AND NOT EXISTS \
                 (SELECT 1 FROM mseg.pool_twins t WHERE t.controller OPERATOR(pg_catalog.=) l.controller \
                  AND t.pseudonym OPERATOR(pg_catalog.=) l.pseudonym)",
                None,
                &[v.controller.as_str().into()],
            )?;
        }
        c.update(
            "UPDATE mseg.controllers SET last_sequence = $2 WHERE id OPERATOR(pg_catalog.=) $1",
            None,
            &[v.controller.as_str().into(), v.sequence.into()],
        )?;
        if let Some(anchor) = &v.anchor {
            c.update(
                "INSERT INTO mseg.controller_anchors (controller, dump_sequence, anchor) VALUES ($1, $2, $3) \
                 ON CONFLICT (controller, dump_sequence) DO UPDATE SET anchor = EXCLUDED.anchor, received_at = pg_catalog.now()",
                None,
                &[v.controller.as_str().into(), v.sequence.into(), pgrx::JsonB(anchor.clone()).into()],
            )?;
        }
        Ok(())
    })?;
    crate::pool::recompute(Some(&v.controller))?;
    catalog::audit(
        "import",
        &v.controller,
        json!({"sequence": v.sequence, "mode": if v.full {"full"} else {"delta"},
        "twins": v.twins.len(), "tombstones": v.tombstones.len()}),
    )?;
    // the pooled sizes application roles see, from the imported twins (they show after commit)
    crate::sizes::publish()?;
    Ok(v.twins.len() as i64)
}

/// Import a dump from a server-side file (checked entirely before anything is applied).
#[pg_extern(volatile, parallel_unsafe)]
fn import_variant_twins(path: Option<&str>) -> i64 {
    boundary(|| {
        let path = path.ok_or_else(|| MsegError::null_argument("path"))?;
        // like COPY FROM a file: reading server files is for those allowed to read any of them
        let allowed = Spi::get_one::<bool>("SELECT pg_catalog.pg_has_role(pg_catalog.current_user(), 'pg_read_server_files', 'USAGE')")?
            .unwrap_or(false);
        if !allowed {
            return Err(MsegError::new(Code::ImportSource, "reading a dump from a server file needs pg_read_server_files")
                .detail("Like COPY FROM a file, this function can read any file the server can.")
                .hint(
                    "Load the dump client-side into a staging table with psql's \\copy and call mseg.import_variant_twins_from(staging).",
                ));
        }
        let unreadable = |e: std::io::Error| {
            MsegError::new(Code::ImportSource, "the dump file cannot be read").detail(format!("The operating system reported: {e}."))
        };
        check_dump_size(std::fs::metadata(path).map_err(unreadable)?.len())?;
        let text = std::fs::read_to_string(path).map_err(unreadable)?;
        let raw: Vec<&str> = text.split('\n').collect();
        let lines = dump_lines(&raw);
        let verified = verify(&lines)?;
        apply(&lines, verified)
    })
}

/// The lines of a staging table `(n, line)` the caller may read, in the order of `n`, within the
/// import limits (shared by the dump import and the linkage steps, src/linkage.rs).
pub(crate) fn staging_lines(staging: Option<PgRelation>) -> MsegResult<Vec<String>> {
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

/// Import a dump loaded client-side into a staging table (n bigint, line text), e.g. with
/// `\copy staging(line) FROM 'dump.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02')`.
#[pg_extern(volatile, parallel_unsafe)]
fn import_variant_twins_from(staging: Option<PgRelation>) -> i64 {
    boundary(|| {
        let lines = staging_lines(staging)?;
        let lines = dump_lines(&lines);
        let verified = verify(&lines)?;
        apply(&lines, verified)
    })
}

#[cfg(test)]
mod tests {
    use super::array_literal;

    #[test]
    fn array_literal_quotes_every_element() {
        assert_eq!(array_literal([].into_iter()), "{}");
        assert_eq!(array_literal(["runners", "a b"].into_iter()), r#"{"runners","a b"}"#);
        assert_eq!(array_literal([r#"x"y"#, r"back\slash", "{,}"].into_iter()), r#"{"x\"y","back\\slash","{,}"}"#);
    }
}

#[cfg(test)]
mod limit_tests {
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
