//! What a segment predicate reads and needs (on top of the shared front end in predicate.rs).

use super::*;

#[derive(Debug)]
pub struct Analysis {
    pub canonical: String,
    pub sources: Vec<pg_sys::Oid>,
    pub time_dependent: bool,
    pub reads_sensitive: bool,
    pub subject_columns: Vec<String>,
}

/// A predicate that parsed, analysed and passed the allowlist as one boolean expression over
/// `relation` (alias `alias`), with what it reads and its canonical (deparsed, schema-qualified) text.
pub struct CheckedPredicate {
    pub(super) facts: predicate::Facts,
    pub canonical: String,
}

impl CheckedPredicate {
    /// Relations the predicate reads, other than the one it is evaluated over.
    pub fn other_relations(&self, relid: pg_sys::Oid) -> Vec<pg_sys::Oid> {
        self.facts.relations.iter().map(|(r, _)| *r).filter(|r| *r != relid).collect()
    }
    /// The column numbers the predicate reads of `relid` (0: the whole row).
    pub fn columns_read(&self, relid: pg_sys::Oid) -> Vec<i32> {
        self.facts.relations.iter().filter(|(r, _)| *r == relid).flat_map(|(_, cols)| cols.iter().copied()).collect()
    }
    pub fn time_dependent(&self) -> bool {
        self.facts.time_dependent
    }
}

/// Parse, analyse and check `predicate` over `relation` (alias `alias`) with the shared front end
/// (predicate.rs), in a memory context of its own; return what it reads and its canonical text.
pub fn check_predicate(relation: &str, relid: pg_sys::Oid, alias: &str, text: &str) -> MsegResult<CheckedPredicate> {
    // SAFETY: the parse trees live in a context deleted when the check is done.
    unsafe {
        let context = catalog::memory_context(pg_sys::CurrentMemoryContext, c"mseg predicate check");
        let previous = pg_sys::MemoryContextSwitchTo(context);
        let checked = predicate::parse_and_check(relation, alias, text).and_then(|(parsed, facts)| {
            let canonical = predicate::canonical(&parsed, relid, alias)?;
            Ok(CheckedPredicate { facts, canonical })
        });
        pg_sys::MemoryContextSwitchTo(previous);
        pg_sys::MemoryContextDelete(context);
        checked
    }
}

/// Parse, analyse and check a segment predicate over the subject row (alias s) and registered
/// sources; return its canonical form and what it reads.
pub fn analyze(subject: &SubjectTable, predicate: &str) -> MsegResult<Analysis> {
    let checked = check_predicate(&subject.name, subject.relid, "s", predicate)?;
    let w = &checked.facts;
    unsafe {
        let mut sources = Vec::new();
        let mut subject_columns = Vec::new();
        let mut reads_sensitive = false;
        for (relid, cols) in &w.relations {
            let is_subject = *relid == subject.relid;
            if !is_subject {
                let registered = catalog::select(|c| {
                    let t = c.select(
                        "SELECT 1 FROM mseg.sources WHERE relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid",
                        None,
                        &[(*relid).into()],
                    )?;
                    Ok(!t.is_empty())
                })?;
                if !registered {
                    return Err(MsegError::new(
                        Code::InvalidPredicate,
                        format!("the predicate reads {}, which is not a registered source", catalog::relation_name(*relid)),
                    )
                    .hint("Register it with mseg.register_source(table, subject_key_column) so its changes maintain the segment."));
                }
                if !sources.contains(relid) {
                    sources.push(*relid);
                }
            }
            let classes = column_classes(*relid)?;
            for &attno in cols {
                if attno < 0 {
                    continue;
                }
                if attno == 0 {
                    if let Some((c, _)) = classes.iter().find(|(_, k)| k == "direct") {
                        return Err(MsegError::new(Code::InvalidPredicate, "the predicate reads whole rows")
                            .detail(format!("{} has the direct identifier column {c}.", catalog::relation_name(*relid)))
                            .hint("Name the columns you need."));
                    }
                    continue;
                }
                let name_ptr = pg_sys::get_attname(*relid, attno as i16, true);
                if name_ptr.is_null() {
                    continue;
                }
                let col = CStr::from_ptr(name_ptr).to_string_lossy().into_owned();
                match classes.iter().find(|(c, _)| *c == col).map(|(_, k)| k.as_str()) {
                    Some("direct") => {
                        return Err(MsegError::new(
                            Code::InvalidPredicate,
                            format!("column {col} of {} is a direct identifier", catalog::relation_name(*relid)),
                        )
                        .detail("Segments describe people by what they do and roughly who they are, never by name, e-mail or phone.")
                        .hint("Use quasi or attribute columns, or reclassify the column if it is not identifying."));
                    }
                    Some("sensitive") => reads_sensitive = true,
                    _ => {}
                }
                if is_subject && !subject_columns.contains(&col) {
                    subject_columns.push(col);
                }
            }
        }
        Ok(Analysis { canonical: checked.canonical.clone(), sources, time_dependent: w.time_dependent, reads_sensitive, subject_columns })
    }
}

pub(super) fn column_classes(relid: pg_sys::Oid) -> MsegResult<Vec<(String, String)>> {
    catalog::select(|c| {
        let mut out = Vec::new();
        for row in c.select(
            "SELECT column_name::pg_catalog.text, class FROM mseg.column_classes WHERE relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid",
            None,
            &[relid.into()],
        )? {
            out.push((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default()));
        }
        Ok(out)
    })
}
