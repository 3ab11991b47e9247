//! The catalog model of the upkeep: segments, sources, the tables whose statements move
//! memberships, read once per catalog generation (and every stored predicate re-checked).

use super::*;

#[derive(Clone, Debug)]
pub(super) struct SegmentDef {
    pub(super) id: i32,
    pub(super) name: String,
    pub(super) purpose: String,
    pub(super) canonical: String,
    pub(super) reads_sensitive: bool,
    pub(super) subject_columns: Vec<String>,
    /// attribute numbers of `subject_columns` in the subject table
    pub(super) subject_attnums: Vec<i16>,
    /// the sources it reads, with their inheritance children (a change to a child's rows is a
    /// change to what a predicate over the parent reads)
    pub(super) sources: Vec<pg_sys::Oid>,
}

#[derive(Clone, Debug)]
pub(super) struct Source {
    pub(super) relid: pg_sys::Oid,
    pub(super) key: String,
    pub(super) key_attnum: i16,
}

/// What a table with the segment triggers is to the upkeep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// the registered subject table itself
    Subject,
    /// a partition (or inheritance child) of the subject table
    SubjectPart,
    /// a registered source (index into `sources`), or a partition or child of one
    Source(usize),
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Member {
    pub(super) role: Role,
    /// the attribute number of the subject key (or the source's key column) in this table
    pub(super) key_attnum: i16,
}

#[derive(Default)]
pub(super) struct SegCatalog {
    pub(super) subject: Option<SubjectTable>,
    /// every table whose statements move memberships: the subject table, the sources, and their
    /// partitions and inheritance children (their own statements fire their own triggers)
    pub(super) members: HashMap<pg_sys::Oid, Member>,
    pub(super) segments: Vec<SegmentDef>,
    pub(super) sources: Vec<Source>,
    pub(super) subject_key_attnum: i16,
    /// the subject table's owner: row locks on the subject table are taken as the owner
    pub(super) subject_owner: pg_sys::Oid,
    /// every subject column some predicate reads (attribute numbers, sorted)
    pub(super) read_columns: Vec<i16>,
    /// per segment (same order as `segments`): the positions in `read_columns` of what it reads
    pub(super) segment_reads: Vec<Vec<usize>>,
    /// the row-only predicates (index = position in `segments`), compiled on first use
    pub(super) row_predicates: OnceCell<Option<RowPredicates>>,
    /// the bulk forms of the predicates with sources (index = position in `segments`), on first use
    pub(super) bulk_predicates: OnceCell<Vec<Option<BulkPredicate>>>,
}

impl SegCatalog {
    /// The compiled row-only predicates, if they fit the subject table's descriptor `desc`.
    /// SAFETY: `desc` is the subject table's current tuple descriptor.
    pub(super) unsafe fn row_predicates(&self, desc: pg_sys::TupleDesc) -> Option<&RowPredicates> {
        let compiled = self.row_predicates.get_or_init(|| {
            let subject = self.subject.as_ref()?;
            let texts: Vec<Option<&str>> = self.segments.iter().map(|s| s.sources.is_empty().then_some(s.canonical.as_str())).collect();
            RowPredicates::compile(&subject.name, desc, &texts).ok()
        });
        compiled.as_ref().filter(|c| c.fits(desc))
    }

    /// The bulk form of segment number `i` (position in `segments`), if it has one.
    pub(super) fn bulk_predicate(&self, i: usize) -> Option<&BulkPredicate> {
        let forms = self.bulk_predicates.get_or_init(|| {
            let Some(subject) = self.subject.as_ref() else {
                return Vec::new();
            };
            let texts: Vec<Option<&str>> = self.segments.iter().map(|s| (!s.sources.is_empty()).then_some(s.canonical.as_str())).collect();
            // a predicate that no longer analyses fails its SQL evaluation anyway; here it is only not rewritten
            crate::bulk_predicates::compile(&subject.name, subject.relid, self.subject_key_attnum, &texts).unwrap_or_default()
        });
        forms.get(i).and_then(|f| f.as_ref())
    }
}

pub(super) fn load_catalog() -> MsegResult<SegCatalog> {
    let subject = subject_table()?;
    let (segments, sources) = catalog::select(|c| {
        let mut segments = Vec::new();
        for row in c.select(
            "SELECT segment_id, name, purpose, canonical, reads_sensitive, subject_columns::pg_catalog.text[], \
                    ARRAY(WITH RECURSIVE r(relid) AS (SELECT pg_catalog.unnest(g.sources)::pg_catalog.oid \
                            UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN r ON i.inhparent OPERATOR(pg_catalog.=) r.relid) \
                          SELECT r.relid::pg_catalog.int8 FROM r) \
             FROM mseg.segments g ORDER BY segment_id",
            None,
            &[],
        )? {
            segments.push(SegmentDef {
                id: row.get::<i32>(1)?.unwrap_or(0),
                name: row.get::<String>(2)?.unwrap_or_default(),
                purpose: row.get::<String>(3)?.unwrap_or_default(),
                canonical: row.get::<String>(4)?.unwrap_or_default(),
                reads_sensitive: row.get::<bool>(5)?.unwrap_or(false),
                subject_columns: row.get::<Vec<String>>(6)?.unwrap_or_default(),
                subject_attnums: Vec::new(),
                sources: row.get::<Vec<i64>>(7)?.unwrap_or_default().into_iter().map(|o| pg_sys::Oid::from(o as u32)).collect(),
            });
        }
        let mut sources = Vec::new();
        for row in c.select("SELECT relid::pg_catalog.oid, key_column::pg_catalog.text FROM mseg.sources", None, &[])? {
            let relid = row.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid);
            let key = row.get::<String>(2)?.unwrap_or_default();
            let key_attnum = attnum(relid, &key).unwrap_or(0);
            sources.push(Source { relid, key, key_attnum });
        }
        Ok((segments, sources))
    })?;
    let mut segments = segments;
    let mut subject_key_attnum = 0;
    let mut subject_owner = pg_sys::InvalidOid;
    if let Some(subject) = &subject {
        subject_key_attnum = attnum(subject.relid, &subject.key).unwrap_or(0);
        subject_owner = catalog::relation_owner(subject.relid)?;
        revalidate(subject, &segments)?;
        for seg in &mut segments {
            seg.subject_attnums = seg.subject_columns.iter().filter_map(|c| attnum(subject.relid, c)).collect();
        }
    }
    let mut members = HashMap::new();
    if let Some(subject) = &subject {
        members.insert(subject.relid, Member { role: Role::Subject, key_attnum: subject_key_attnum });
        for part in descendants(subject.relid)? {
            if let Some(a) = attnum(part, &subject.key) {
                members.insert(part, Member { role: Role::SubjectPart, key_attnum: a });
            }
        }
    }
    for (i, src) in sources.iter().enumerate() {
        members.insert(src.relid, Member { role: Role::Source(i), key_attnum: src.key_attnum });
    }
    for (i, src) in sources.iter().enumerate() {
        for part in descendants(src.relid)? {
            if let (false, Some(a)) = (members.contains_key(&part), attnum(part, &src.key)) {
                members.insert(part, Member { role: Role::Source(i), key_attnum: a });
            }
        }
    }
    let mut read_columns: Vec<i16> = segments.iter().flat_map(|s| s.subject_attnums.iter().copied()).collect();
    read_columns.sort_unstable();
    read_columns.dedup();
    let segment_reads =
        segments.iter().map(|s| s.subject_attnums.iter().filter_map(|a| read_columns.binary_search(a).ok()).collect()).collect();
    Ok(SegCatalog {
        subject,
        members,
        segments,
        sources,
        subject_key_attnum,
        subject_owner,
        read_columns,
        segment_reads,
        row_predicates: OnceCell::new(),
        bulk_predicates: OnceCell::new(),
    })
}

/// Check every stored predicate again with the allowlist, as `mseg_upkeep` (the identity that will
/// evaluate it): a predicate that passed at definition time could mean something else after the
/// catalog changed (a column's type altered to a domain, say). Such a segment stops the upkeep
/// with the reason instead of being evaluated.
pub(super) fn revalidate(subject: &SubjectTable, segments: &[SegmentDef]) -> MsegResult<()> {
    catalog::as_upkeep(|| {
        for seg in segments {
            check_predicate(&subject.name, subject.relid, "s", &seg.canonical).map_err(|e| {
                MsegError::new(
                    Code::InvalidPredicate,
                    format!("segment \"{}\" no longer passes pg_mseg's predicate rules: {}", seg.name, e.message),
                )
                .detail(e.detail.unwrap_or_default())
                .hint("Change it with mseg.alter_segment or drop it with mseg.drop_segment; nothing was maintained.")
            })?;
        }
        Ok(())
    })
}

/// The partitions and inheritance children of `relid`, at every level.
pub(super) fn descendants(relid: pg_sys::Oid) -> MsegResult<Vec<pg_sys::Oid>> {
    catalog::relation_oids(
        "WITH RECURSIVE t(relid) AS (SELECT i.inhrelid FROM pg_catalog.pg_inherits i WHERE i.inhparent OPERATOR(pg_catalog.=) $1 \
             UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN t ON i.inhparent OPERATOR(pg_catalog.=) t.relid) \
         SELECT relid FROM t",
        relid,
    )
}

pub(super) fn attnum(relid: pg_sys::Oid, column: &str) -> Option<i16> {
    let c = CString::new(column).ok()?;
    // SAFETY: a syscache lookup; returns InvalidAttrNumber (0) when there is no such column.
    let n = unsafe { pg_sys::get_attnum(relid, c.as_ptr()) };
    (n > 0).then_some(n)
}
