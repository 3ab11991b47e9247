//! Variant Twin import at the trusted party: every check before anything is applied, then the
//! whole dump in one transaction or nothing.

use pgrx::prelude::*;
use pgrx::PgRelation;
use serde_json::{json, Value as Json};

use crate::catalog;
use crate::dump::reading::{self, check_dump_size, dump_lines, short, staging_lines, Reader};
use crate::dump::{self, FORMAT};
use crate::error::{boundary, Code, MsegError, Result as MsegResult};
use crate::sql_array;
use kanon::FxMap;

fn invalid(message: impl Into<String>) -> MsegError {
    MsegError::new(Code::InvalidDump, message).hint("Nothing was imported. Ask the controller for a fresh, complete dump.")
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

struct Verified<'a> {
    controller: String,
    sequence: i64,
    full: bool,
    /// the twin lines, in pseudonym order, each with the number of its record in `records`;
    /// applied in batches
    twins: Vec<TwinLine<'a>>,
    /// the dump's distinct records: slices of the lines, not parsed documents (a dump of a
    /// million twins never holds a million of those)
    records: Vec<Record<'a>>,
    tombstones: Vec<String>,
    /// the controller's signed audit anchor the manifest carried (checked), kept for its auditors
    anchor: Option<Json>,
}

/// A twin line as verify read it (apply does not parse the lines again): its pseudonym and the
/// number of its record.
struct TwinLine<'a> {
    pseudonym: std::borrow::Cow<'a, str>,
    /// its line number, for the errors
    line: usize,
    record: u32,
}

/// Every field of a twin but its pseudonym, as written in the line: three JSON objects (parsed by
/// PostgreSQL's jsonb input) and the JSON list of segment names (checked by verify). A cohort's
/// twins share one.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Record<'a> {
    quasi: &'a str,
    legal_basis: &'a str,
    policy: &'a str,
    segments: &'a str,
}

fn field<'a>(v: &'a Json, name: &str, line: usize) -> MsegResult<&'a Json> {
    v.get(name).ok_or_else(|| invalid(format!("line {line} has no \"{name}\"")))
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
    segments: Option<&'a serde_json::value::RawValue>,
}

/// A twin's segment names from its JSON list.
fn segment_names(list: &str) -> serde_json::Result<Vec<std::borrow::Cow<'_, str>>> {
    serde_json::from_str(list)
}

/// How the import names a dump in its errors (class MS071, "Nothing was imported").
const DUMP: Reader = Reader {
    noun: "dump",
    too_short: "A dump has at least a manifest and a trailer.",
    unknown_format: "unknown dump format",
    reads: "This pg_mseg reads",
    invalid,
};

fn verify<'a>(lines: &[&'a str]) -> MsegResult<Verified<'a>> {
    let envelope = reading::open(lines, FORMAT, &DUMP)?;
    let manifest = &envelope.manifest;
    let last = envelope.last;
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
    reading::check_signature(
        &envelope,
        &vk,
        &DUMP,
        format!(
            "The lines were changed, removed or added after signing, or the dump was not signed by controller \"{}\"'s registered key.",
            short(&controller)
        ),
    )?;
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
    // the twins sorted by pseudonym are applied in key order (the pool's primary key then grows at
    // one end instead of at random places); a twin line for every line at most, reserved at once
    let mut twins: Vec<TwinLine<'a>> = Vec::with_capacity(last.saturating_sub(1));
    let mut tombstones: Vec<(std::borrow::Cow<'a, str>, usize)> = Vec::new();
    let mut records: Vec<Record<'a>> = Vec::new();
    let mut numbers: FxMap<Record<'a>, u32> = FxMap::default();
    let wrong = |n: usize, e: serde_json::Error| {
        let what = if e.is_data() { format!("line {n} has a field of the wrong type") } else { format!("line {n} is not valid JSON") };
        invalid(what).detail(e.to_string())
    };
    for (i, l) in lines.iter().enumerate().take(last).skip(1) {
        let n = i + 1;
        let v: Shape<'a> = serde_json::from_str(l).map_err(|e| wrong(n, e))?;
        // (43 characters of base64url: what the controller's pseudonyms are, and nothing text cannot hold)
        let pseudonym = v
            .pseudonym
            .filter(|p| p.len() == 43 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
            .ok_or_else(|| invalid(format!("line {n} has no valid pseudonym")))?;
        match v.kind.as_deref() {
            Some("twin") => {
                let object = |f: &str, r: Option<&'a serde_json::value::RawValue>| {
                    r.filter(|r| r.get().starts_with('{'))
                        .map(|r| r.get())
                        .ok_or_else(|| invalid(format!("line {n}: \"{f}\" is not an object")))
                };
                let (quasi, legal_basis, policy) =
                    (object("quasi", v.quasi)?, object("legal_basis", v.legal_basis)?, object("policy", v.policy)?);
                // (a NUL, which the JSON may escape, is no part of a name and cannot be text)
                let not_names = || invalid(format!("line {n}: \"segments\" is not a list of names"));
                let segments = v.segments.ok_or_else(not_names)?.get();
                if segment_names(segments).map_err(|e| wrong(n, e))?.iter().any(|name| name.contains('\0')) {
                    return Err(not_names());
                }
                let record = Record { quasi, legal_basis, policy, segments };
                let record = *numbers.entry(record).or_insert_with(|| {
                    records.push(record);
                    records.len() as u32 - 1
                });
                twins.push(TwinLine { pseudonym, line: n, record });
            }
            Some("tombstone") => tombstones.push((pseudonym, n)),
            _ => return Err(invalid(format!("line {n} is neither a twin nor a tombstone"))),
        }
    }
    twins.sort_unstable_by(|a, b| (&a.pseudonym, a.line).cmp(&(&b.pseudonym, b.line)));
    tombstones.sort_unstable();
    let by_pseudonym = twins.iter().map(|t| (t.pseudonym.as_ref(), t.line));
    if let Some((a, b)) = first_repeat(by_pseudonym, tombstones.iter().map(|(p, n)| (p.as_ref(), *n))) {
        return Err(invalid(format!("line {b} repeats the pseudonym of line {a}")));
    }
    let counts = field(&manifest, "counts", 1)?;
    if counts.get("twins").and_then(Json::as_u64) != Some(twins.len() as u64)
        || counts.get("tombstones").and_then(Json::as_u64) != Some(tombstones.len() as u64)
    {
        return Err(invalid("the manifest's counts do not match the lines"));
    }
    let tombstones = tombstones.into_iter().map(|(p, _)| p.into_owned()).collect();
    Ok(Verified { controller, sequence, full, twins, records, tombstones, anchor })
}

/// The first pseudonym (in pseudonym order) on two lines of `a` and `b`, both sorted by
/// (pseudonym, line): its first two lines, in order.
fn first_repeat<'p>(a: impl Iterator<Item = (&'p str, usize)>, b: impl Iterator<Item = (&'p str, usize)>) -> Option<(usize, usize)> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    let mut previous: Option<(&str, usize)> = None;
    loop {
        // the two lists merged in (pseudonym, line) order
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if y < x => b.next(),
            (Some(_), _) => a.next(),
            (None, _) => b.next(),
        }?;
        if let Some(p) = previous.filter(|p| p.0 == next.0) {
            return Some((p.1, next.1));
        }
        previous = Some(next);
    }
}

/// A batch of twins: $2 their pseudonyms and $4 the number of each one's record in $5..$8 (quasi,
/// legal_basis, policy as jsonb, segments as array literals), each record of the batch once. A
/// record is every field of a twin but its pseudonym: a cohort's twins share one, so a dump has at
/// most one per cohort, and its three objects are parsed once for the whole dump
/// ([`PARSE_RECORDS`]), not once per twin (a fifth of the import) nor once per batch (at 1 M twins
/// a batch of 10 000 holds 8 000 of the 21 700 records). The records are joined by number (hashed,
/// the twins probing in the order given).
const INSERT_TWINS: &str =
    "INSERT INTO mseg.pool_twins (controller, pseudonym, quasi, segments, legal_basis, policy, expires_at, sequence) \
     SELECT $1, u.pseudonym, r.quasi, r.segs, r.legal_basis, r.policy, r.expires_at, $3 \
     FROM (SELECT pg_catalog.unnest($2::pg_catalog.text[]) AS pseudonym, pg_catalog.unnest($4::pg_catalog.int8[]) AS rec OFFSET 0) u \
     JOIN (SELECT x.n, x.quasi, x.segs, x.legal_basis, x.policy, (x.policy OPERATOR(pg_catalog.->>) 'expires_at')::pg_catalog.timestamptz AS expires_at \
           FROM (SELECT pg_catalog.unnest($5::pg_catalog.jsonb[]) AS quasi, pg_catalog.unnest($6::pg_catalog.jsonb[]) AS legal_basis, \
                        pg_catalog.unnest($7::pg_catalog.jsonb[]) AS policy, pg_catalog.unnest($8::pg_catalog.text[])::pg_catalog.text[] AS segs, \
                        pg_catalog.generate_series(1::pg_catalog.int8, pg_catalog.cardinality($5::pg_catalog.jsonb[])::pg_catalog.int8) AS n \
                 OFFSET 0) x) r \
       ON r.n OPERATOR(pg_catalog.=) u.rec";
/// The three objects of records $1..$3 (JSON texts) as jsonb[] arrays, in the order given.
const PARSE_RECORDS: &str = "SELECT pg_catalog.array_agg(x.q::pg_catalog.jsonb ORDER BY x.n), pg_catalog.array_agg(x.l::pg_catalog.jsonb ORDER BY x.n), \
       pg_catalog.array_agg(x.p::pg_catalog.jsonb ORDER BY x.n) \
     FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.text[])) \
       WITH ORDINALITY AS x(q, l, p, n)";
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

fn apply(v: Verified<'_>) -> MsegResult<i64> {
    catalog::update(|c| {
        if v.full {
            c.update("DELETE FROM mseg.pool_twins WHERE controller OPERATOR(pg_catalog.=) $1", None, &[v.controller.as_str().into()])?;
        }
        // in batches of 10 000 lines, in a memory context of its own, from the parts verify
        // split each line into: PostgreSQL's jsonb input parses only the three objects of each
        // distinct record, once (below), not the whole line to take them out of it again. The
        // arrays are unnested in the select list, in step (equal lengths), which streams; ROWS
        // FROM (unnest, …) would first copy each batch into a tuple store.
        // a full dump replaces the controller's twins, all deleted above, and its pseudonyms are
        // distinct (verified): a plain insert, no conflict to look for
        let sql = if v.full { INSERT_TWINS.to_owned() } else { format!("{INSERT_TWINS}{UPSERT_TWINS}") };
        // the dump's distinct records' objects parsed once, kept in a context of their own until the end
        let records = &v.records;
        // each record's segments as an array literal (cheaper than expanding the JSON list in SQL)
        let mut segs = Vec::with_capacity(records.len());
        for r in records {
            let names = segment_names(r.segments).map_err(|e| invalid("a twin line changed while importing").detail(e.to_string()))?;
            segs.push(array_literal(names.iter().map(|c| c.as_ref())));
        }
        let mut parsed = pgrx::PgMemoryContexts::new("mseg import records");
        let mut objects: [Vec<pg_sys::Datum>; 3] = Default::default();
        for chunk in records.chunks(10_000) {
            let t = c.update(
                PARSE_RECORDS,
                None,
                &[
                    sql_array::text(chunk.iter().map(|r| r.quasi)),
                    sql_array::text(chunk.iter().map(|r| r.legal_basis)),
                    sql_array::text(chunk.iter().map(|r| r.policy)),
                ],
            )?;
            let row = t.first();
            for (i, column) in objects.iter_mut().enumerate() {
                let array = row.get_datum_by_ordinal(i + 1)?.ok_or_else(|| invalid("a record of the dump did not parse"))?;
                // SAFETY: a jsonb[] without NULLs (array_agg of jsonb casts of non-NULL texts),
                // copied into `parsed`, which outlives every batch below.
                let elements = unsafe { parsed.switch_to(|_| sql_array::jsonb_elements(array)) };
                if elements.len() != chunk.len() {
                    return Err(invalid("a record of the dump did not parse"));
                }
                column.extend(elements);
            }
        }
        // the records hashed and the twins probing them in pseudonym order: a merge join (which
        // the planner prefers for these sizes) would sort the twins by record
        let insert_batches = || -> MsegResult<()> {
            for chunk in v.twins.chunks(10_000) {
                // the batch's records, numbered from 1 in the order of first use
                let mut local: FxMap<u32, i64> = FxMap::default();
                let mut used: Vec<usize> = Vec::new();
                let numbered: Vec<i64> = chunk
                    .iter()
                    .map(|t| {
                        *local.entry(t.record).or_insert_with(|| {
                            used.push(t.record as usize);
                            used.len() as i64
                        })
                    })
                    .collect();
                let pick = |column: usize| -> Vec<pg_sys::Datum> { used.iter().map(|&r| objects[column][r]).collect() };
                let (quasi, legal_basis, policy) = (pick(0), pick(1), pick(2));
                let mut batch = pgrx::PgMemoryContexts::new("mseg import batch");
                // SAFETY: the context lives until the statement is done; nothing allocated in it escapes.
                unsafe {
                    batch.switch_to(|_| {
                        c.update(
                            sql.as_str(),
                            None,
                            &[
                                v.controller.as_str().into(),
                                sql_array::text(chunk.iter().map(|t| t.pseudonym.as_ref())),
                                v.sequence.into(),
                                sql_array::int8(&numbered),
                                // SAFETY: jsonb values kept in `parsed`, alive until the end
                                sql_array::jsonb(&quasi),
                                sql_array::jsonb(&legal_basis),
                                sql_array::jsonb(&policy),
                                sql_array::text(used.iter().map(|&r| segs[r].as_str())),
                            ],
                        )
                        .map(|_| ())
                    })
                }?;
            }
            Ok(())
        };
        catalog::with_setting(c"enable_mergejoin", c"off", || catalog::with_setting(c"enable_nestloop", c"off", insert_batches))?;
        c.update(
            "DELETE FROM mseg.pool_twins WHERE controller OPERATOR(pg_catalog.=) $1 AND pseudonym OPERATOR(pg_catalog.=) ANY ($2)",
            None,
            &[v.controller.as_str().into(), sql_array::text(v.tombstones.iter().map(String::as_str))],
        )?;
        // a tombstoned twin loses its person link at once; a full dump keeps only the links of
        // the twins it restates (src/linkage.rs)
        c.update(
            "DELETE FROM mseg.pool_links WHERE controller OPERATOR(pg_catalog.=) $1 AND pseudonym OPERATOR(pg_catalog.=) ANY ($2)",
            None,
            &[v.controller.as_str().into(), sql_array::text(v.tombstones.iter().map(String::as_str))],
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
    crate::pool_persons::refresh(crate::pool_persons::Scope::Controller(&v.controller), false)?;
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
        apply(verified)
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
        apply(verified)
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::*;

    /// A dump from controller `pt_self` (this database's own signing key) to partner `pt_party`
    /// with one twin line, signed.
    #[cfg(feature = "pg_test")]
    fn signed_dump(twin: &str) -> Vec<String> {
        signed_lines(&[twin.to_owned()])
    }

    /// [`signed_dump`] with the twin and tombstone lines `body`, counted in the manifest.
    #[cfg(feature = "pg_test")]
    fn signed_lines(body: &[String]) -> Vec<String> {
        use ed25519_dalek::Signer;
        let twins = body.iter().filter(|l| l.contains(r#""type":"twin""#)).count();
        let manifest = json!({"type": "manifest", "format": FORMAT, "controller": "pt_self", "partner": "pt_party",
            "sequence": 1, "follows": 0, "mode": "full", "counts": {"twins": twins, "tombstones": body.len() - twins}});
        let mut lines = vec![dump::to_line(&manifest).unwrap()];
        lines.extend(body.iter().cloned());
        let mut digest = dump::LineDigest::default();
        for l in &lines {
            digest.add(l);
        }
        let (digest, n) = digest.finish();
        let signature = crate::keys::signing_key().unwrap().sign(&digest);
        lines.push(dump::trailer_line(n, &digest, &signature).unwrap());
        lines
    }

    #[cfg(feature = "pg_test")]
    #[pg_test]
    fn import_refuses_what_text_cannot_hold_in_a_signed_dump() {
        let public = dump::b64(crate::keys::signing_key().unwrap().verifying_key().as_bytes());
        Spi::run(&format!("SELECT mseg.register_controller('pt_self', '{public}'); SET mseg.controller_id = 'pt_party'")).unwrap();
        let twin = |pseudonym: &str, segments: &str| {
            format!(
                r#"{{"legal_basis":{{}},"policy":{{"purposes":["direct_marketing"]}},"pseudonym":"{pseudonym}","quasi":{{}},"segments":{segments},"type":"twin"}}"#
            )
        };
        let good = "A".repeat(42) + "_";
        let verified = |line: String| {
            let lines = signed_dump(&line);
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            verify(&lines).map(|v| v.twins.len()).map_err(|e| e.message)
        };
        assert_eq!(verified(twin(&good, r#"["runners"]"#)), Ok(1));
        // a pseudonym of 43 characters outside base64url, one with an escaped NUL
        assert_eq!(verified(twin(&("A".repeat(42) + "+"), "[]")), Err("line 2 has no valid pseudonym".to_owned()));
        assert_eq!(verified(twin(&(r"\u0000".to_owned() + &"A".repeat(42)), "[]")), Err("line 2 has no valid pseudonym".to_owned()));
        // a segment name holding an escaped NUL
        assert_eq!(verified(twin(&good, r#"["run\u0000ners"]"#)), Err("line 2: \"segments\" is not a list of names".to_owned()));
    }

    #[cfg(feature = "pg_test")]
    #[pg_test]
    fn import_names_the_first_repeated_pseudonym_by_its_first_two_lines() {
        let public = dump::b64(crate::keys::signing_key().unwrap().verifying_key().as_bytes());
        Spi::run(&format!("SELECT mseg.register_controller('pt_self', '{public}'); SET mseg.controller_id = 'pt_party'")).unwrap();
        let twin = |c: char| {
            format!(
                r#"{{"legal_basis":{{}},"policy":{{"purposes":["direct_marketing"]}},"pseudonym":"{}","quasi":{{}},"segments":[],"type":"twin"}}"#,
                c.to_string().repeat(43)
            )
        };
        let tomb = |c: char| dump::tombstone_line(&c.to_string().repeat(43));
        let verified = |body: Vec<String>| {
            let lines = signed_lines(&body);
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            verify(&lines).map(|v| (v.twins.iter().map(|t| t.line).collect::<Vec<_>>(), v.tombstones.len())).map_err(|e| e.message)
        };
        // distinct: the twins in pseudonym order, with their line numbers
        assert_eq!(verified(vec![twin('C'), tomb('B'), twin('A')]), Ok((vec![4, 2], 1)));
        // twin and twin, twin and tombstone, tombstone and tombstone (line numbers count the manifest)
        assert_eq!(verified(vec![twin('A'), tomb('B'), twin('A')]), Err("line 4 repeats the pseudonym of line 2".to_owned()));
        assert_eq!(verified(vec![tomb('A'), twin('B'), twin('A')]), Err("line 4 repeats the pseudonym of line 2".to_owned()));
        assert_eq!(verified(vec![tomb('B'), twin('C'), tomb('B')]), Err("line 4 repeats the pseudonym of line 2".to_owned()));
        // two repeated: the first in pseudonym order, on its first two of three lines
        assert_eq!(
            verified(vec![twin('B'), twin('B'), tomb('A'), twin('C'), twin('A'), tomb('A')]),
            Err("line 6 repeats the pseudonym of line 4".to_owned())
        );
    }

    #[test]
    fn first_repeat_merges_both_sorted_lists() {
        let a = [("a", 3), ("c", 1)];
        let b = [("b", 2), ("c", 5)];
        assert_eq!(first_repeat(a.into_iter(), b.into_iter()), Some((1, 5)));
        assert_eq!(first_repeat([("a", 1), ("a", 9)].into_iter(), [("a", 4)].into_iter()), Some((1, 4)));
        assert_eq!(first_repeat([("a", 1)].into_iter(), [("b", 2)].into_iter()), None);
        assert_eq!(first_repeat(std::iter::empty(), [("b", 2), ("b", 3)].into_iter()), Some((2, 3)));
    }

    #[test]
    fn array_literal_quotes_every_element() {
        assert_eq!(array_literal([].into_iter()), "{}");
        assert_eq!(array_literal(["runners", "a b"].into_iter()), r#"{"runners","a b"}"#);
        assert_eq!(array_literal([r#"x"y"#, r"back\slash", "{,}"].into_iter()), r#"{"x\"y","back\\slash","{,}"}"#);
    }
}
