//! The statement's transition tables, read directly: which subjects changed, and for an
//! UPDATE of the subject table which read columns changed and which predicates moved.

use super::*;

/// A scan of one transition table (a tuplestore of the statement's old or new rows) with its own
/// read pointer, so the SQL that reads the same table through SPI is not disturbed. Finding which
/// subjects and columns a statement changed this way costs no query at all.
pub(super) struct TransitionScan {
    pub(super) store: *mut pg_sys::Tuplestorestate,
    pub(super) slot: *mut pg_sys::TupleTableSlot,
    pub(super) pointer: i32,
}

impl TransitionScan {
    /// SAFETY: `store` is a live transition table of a relation with descriptor `desc`.
    pub(super) unsafe fn open(store: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc) -> Option<Self> {
        if store.is_null() {
            return None;
        }
        let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsMinimalTuple);
        let pointer = pg_sys::tuplestore_alloc_read_pointer(store, pg_sys::EXEC_FLAG_REWIND as i32);
        pg_sys::tuplestore_select_read_pointer(store, pointer);
        pg_sys::tuplestore_rescan(store);
        Some(TransitionScan { store, slot, pointer })
    }

    pub(super) unsafe fn next(&mut self) -> bool {
        pg_sys::tuplestore_select_read_pointer(self.store, self.pointer);
        pg_sys::tuplestore_gettupleslot(self.store, true, false, self.slot)
    }

    /// The current row's value of attribute `attnum` (1-based), None when NULL.
    pub(super) unsafe fn value(&self, attnum: i16) -> Option<pg_sys::Datum> {
        if i32::from((*self.slot).tts_nvalid) < i32::from(attnum) {
            pg_sys::slot_getsomeattrs_int(self.slot, i32::from(attnum));
        }
        let i = (attnum - 1) as usize;
        if *(*self.slot).tts_isnull.add(i) {
            None
        } else {
            Some(*(*self.slot).tts_values.add(i))
        }
    }

    /// The current row's key in attribute `attnum` of type `typid`: an integer key itself, any
    /// other key (uuid, text…) a stand-in from `texts` until the statement's keys are mapped to
    /// subject ids ([`MappedKeys::ids`]).
    pub(super) unsafe fn key(&self, attnum: i16, typid: pg_sys::Oid, texts: &mut MappedKeys) -> Option<i64> {
        let d = self.value(attnum)?;
        match typid {
            pg_sys::INT8OID => Some(d.value() as i64),
            pg_sys::INT4OID => Some(i64::from(d.value() as i32)),
            pg_sys::INT2OID => Some(i64::from(d.value() as i16)),
            _ => {
                let mut output = pg_sys::InvalidOid;
                let mut varlena = false;
                pg_sys::getTypeOutputInfo(typid, &mut output, &mut varlena);
                let c = pg_sys::OidOutputFunctionCall(output, d);
                let text = CStr::from_ptr(c).to_string_lossy().into_owned();
                pg_sys::pfree(c.cast());
                Some(texts.stand_in(text))
            }
        }
    }

    pub(super) unsafe fn close(self) {
        pg_sys::ExecDropSingleTupleTableSlot(self.slot);
    }
}

/// Whether two values of one type have the same binary image. Equal images mean equal values;
/// different images (a TOAST pointer, another header form) are taken as a change, which only
/// recomputes more than needed.
/// SAFETY: both are valid datums of a type with `byval` and `len`.
pub(super) unsafe fn same_image(x: pg_sys::Datum, y: pg_sys::Datum, byval: bool, len: i16) -> bool {
    if byval {
        return x == y;
    }
    let (px, py) = (x.cast_mut_ptr::<u8>() as *const u8, y.cast_mut_ptr::<u8>() as *const u8);
    let (nx, ny) = match len {
        l if l > 0 => (l as usize, l as usize),
        -1 => (pgrx::varlena::varsize_any(px.cast()), pgrx::varlena::varsize_any(py.cast())),
        -2 => (CStr::from_ptr(px.cast()).to_bytes().len(), CStr::from_ptr(py.cast()).to_bytes().len()),
        _ => return false,
    };
    nx == ny && std::slice::from_raw_parts(px, nx) == std::slice::from_raw_parts(py, ny)
}

/// SAFETY: `desc` is a valid tuple descriptor and `attnum` one of its attributes.
pub(super) unsafe fn attr(desc: pg_sys::TupleDesc, attnum: i16) -> Option<&'static pg_sys::FormData_pg_attribute> {
    if attnum < 1 || i32::from(attnum) > (*desc).natts {
        return None;
    }
    Some(&*crate::compat::tuple_desc_attr(desc, (attnum - 1) as usize))
}

/// The keys of a statement whose subject table has non-integer keys, before they are mapped to
/// subject ids: each distinct key text stands in as a negative number (ids are positive).
#[derive(Default)]
pub(super) struct MappedKeys {
    texts: Vec<String>,
    index: HashMap<String, i64>,
}

impl MappedKeys {
    pub(super) fn stand_in(&mut self, text: String) -> i64 {
        if let Some(&k) = self.index.get(&text) {
            return k;
        }
        let k = -(self.texts.len() as i64) - 1;
        self.index.insert(text.clone(), k);
        self.texts.push(text);
        k
    }

    /// Replace the stand-ins in `keys` by subject ids (sorted, distinct), as `how` says.
    pub(super) fn ids(&self, client: &mut SpiClient<'_>, keys: Vec<i64>, how: MapKeys) -> MsegResult<Vec<i64>> {
        if self.texts.is_empty() {
            return Ok(keys);
        }
        let wanted: Vec<String> = keys.iter().filter(|k| **k < 0).map(|k| self.texts[(-k - 1) as usize].clone()).collect();
        let mut out: Vec<i64> = keys.into_iter().filter(|k| *k >= 0).collect();
        out.extend(map_texts(client, wanted, how)?);
        Ok(sort_dedup(out))
    }
}

/// What the upkeep does with non-integer keys (their text forms) on the way to subject ids.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum MapKeys {
    /// look the ids up; a key without one is dropped (no such subject): statements on subjects
    /// that exist (UPDATE, DELETE), whose ids' membership rows are their locks
    Lookup,
    /// lock the keys ([`lock_key_texts`]), then look the ids up with a snapshot taken after the
    /// lock: source statements, whose keys may have no subject, or one being inserted
    Lock,
    /// lock the keys, give those without an id one, look the ids up: statements that make
    /// subjects (a changed key, rows inserted into a subject partition)
    Create,
}

/// Subject ids of the key texts `wanted` (distinct), as `how` says.
pub(super) fn map_texts(client: &mut SpiClient<'_>, wanted: Vec<String>, how: MapKeys) -> MsegResult<Vec<i64>> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    if how != MapKeys::Lookup {
        lock_key_texts(client, &wanted)?;
    }
    if how == MapKeys::Create {
        client.update(
            "INSERT INTO mseg.subject_ids (subject_key) SELECT k FROM pg_catalog.unnest($1::pg_catalog.text[]) k ORDER BY k \
             ON CONFLICT (subject_key) DO NOTHING",
            None,
            &[wanted.clone().into()],
        )?;
    }
    let t = client.update(
        "SELECT pg_catalog.array_agg(subject_id) FROM mseg.subject_ids WHERE subject_key OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[])",
        None,
        &[wanted.into()],
    )?;
    Ok(t.first().get_one::<Vec<i64>>()?.unwrap_or_default())
}

/// The key locks of non-integer keys: a key may have no id yet (source rows before their subject;
/// an erased key, whose id went), so it has no membership row to lock. Its lock is a row of
/// `mseg.key_locks`, one of 65,536 buckets by the hash of the key's text (no key is stored;
/// keys sharing a bucket only wait for each other). Every statement that writes source rows, or
/// gives keys their ids (an INSERT of subjects, a changed key), writes its keys' bucket rows, in
/// bucket order, before it looks up or creates their ids and before any membership row: READ
/// COMMITTED waits for the other writer and then sees it; REPEATABLE READ fails to serialize. A
/// READ COMMITTED statement with `mseg.bulk_statement_subjects` keys or more locks the table.
pub(super) fn lock_key_texts(client: &mut SpiClient<'_>, texts: &[String]) -> MsegResult<()> {
    if read_committed() && texts.len() >= bulk_subjects() {
        client.update(KEY_TABLE_LOCK_SQL, None, &[])?;
        return Ok(());
    }
    let lock = plan(client, &PlanKind::KeyLock, &[pgrx::PgOid::BuiltIn(pgrx::PgBuiltInOids::TEXTARRAYOID)], || KEY_LOCK_SQL.to_owned())?;
    client.update(&*lock, None, &[crate::sql_array::text(texts.iter().map(String::as_str))])?;
    Ok(())
}

/// Every key of one transition table (stand-ins for mapped keys); None if the key cannot be read.
pub(super) unsafe fn transition_keys(
    store: *mut pg_sys::Tuplestorestate,
    desc: pg_sys::TupleDesc,
    attnum: i16,
    out: &mut Vec<i64>,
    texts: &mut MappedKeys,
) -> Option<()> {
    let typid = attr(desc, attnum)?.atttypid;
    let mut scan = TransitionScan::open(store, desc)?;
    while scan.next() {
        if let Some(k) = scan.key(attnum, typid, texts) {
            out.push(k);
        }
    }
    scan.close();
    Some(())
}

pub(super) fn sort_dedup(mut v: Vec<i64>) -> Vec<i64> {
    v.sort_unstable();
    v.dedup();
    v
}

/// What an UPDATE of the subject table changed: subjects whose key stayed and whose set may have
/// moved (recomputed for the `affected` segments), and subjects whose key changed (old and new key
/// recomputed in full).
pub(super) struct SubjectUpdate {
    pub(super) changed: Vec<i64>,
    pub(super) rekeyed: Vec<i64>,
    pub(super) affected: Vec<i32>,
    /// the texts behind the stand-ins of a non-integer key (see [`SubjectUpdate::resolve`])
    pub(super) texts: MappedKeys,
}

impl SubjectUpdate {
    /// Turn the stand-ins of non-integer keys into subject ids (a key that appeared gets one).
    pub(super) fn resolve(&mut self, client: &mut SpiClient<'_>) -> MsegResult<()> {
        if self.texts.texts.is_empty() {
            return Ok(());
        }
        self.changed = self.texts.ids(client, std::mem::take(&mut self.changed), MapKeys::Lookup)?;
        self.rekeyed = self.texts.ids(client, std::mem::take(&mut self.rekeyed), MapKeys::Create)?;
        self.texts = MappedKeys::default();
        Ok(())
    }
}

/// Compare each row's old and new version: a segment can move only if the row changed a column
/// it reads, and a compiled row-only segment only if its predicate's truth value changed (its
/// legal basis is the same before and after). Subjects where nothing can move are left out.
/// SAFETY: `td` is the trigger data of an UPDATE statement trigger on the subject table.
pub(super) unsafe fn scan_subject_update(td: &pg_sys::TriggerData, cat: &SegCatalog) -> Option<SubjectUpdate> {
    let desc = (*td.tg_relation).rd_att;
    let key_typ = attr(desc, cat.subject_key_attnum)?.atttypid;
    let (columns, reads) = (&cat.read_columns, &cat.segment_reads);
    let kinds: Vec<(bool, i16)> = columns.iter().map(|&a| attr(desc, a).map(|t| (t.attbyval, t.attlen))).collect::<Option<_>>()?;
    let compiled = cat.row_predicates(desc);
    let mut old = TransitionScan::open(td.tg_oldtable, desc)?;
    let Some(mut new) = TransitionScan::open(td.tg_newtable, desc) else {
        old.close();
        return None;
    };
    let mut row_changed = vec![false; columns.len()];
    let mut affected = vec![false; cat.segments.len()];
    let (mut changed, mut rekeyed) = (Vec::new(), Vec::new());
    let mut texts = MappedKeys::default();
    let mut paired = true;
    loop {
        // an UPDATE appends each row's old and new versions together: the two tables pair up
        let (a, b) = (old.next(), new.next());
        if a != b {
            paired = false;
            break;
        }
        if !a {
            break;
        }
        let (ko, kn) = (old.key(cat.subject_key_attnum, key_typ, &mut texts), new.key(cat.subject_key_attnum, key_typ, &mut texts));
        if ko != kn {
            rekeyed.extend(ko);
            rekeyed.extend(kn);
            continue;
        }
        let Some(k) = kn else { continue };
        let mut differs = false;
        for (i, &attnum) in columns.iter().enumerate() {
            let same = match (old.value(attnum), new.value(attnum)) {
                (None, None) => true,
                (Some(x), Some(y)) => same_image(x, y, kinds[i].0, kinds[i].1),
                _ => false,
            };
            row_changed[i] = !same;
            differs |= !same;
        }
        if !differs {
            continue;
        }
        let mut moves = false;
        for (j, r) in reads.iter().enumerate() {
            if !r.iter().any(|&i| row_changed[i]) {
                continue;
            }
            let kept = match compiled {
                Some(c) if c.is_compiled(j) => c.holds(j, old.slot) == c.holds(j, new.slot),
                _ => false,
            };
            if !kept {
                affected[j] = true;
                moves = true;
            }
        }
        if let Some(c) = compiled {
            c.reset();
        }
        if moves {
            changed.push(k);
        }
    }
    old.close();
    new.close();
    if !paired {
        return None;
    }
    let affected = cat.segments.iter().zip(&affected).filter(|(_, a)| **a).map(|(s, _)| s.id).collect();
    let rekeyed = sort_dedup(rekeyed);
    let changed = sort_dedup(changed).into_iter().filter(|k| rekeyed.binary_search(k).is_err()).collect();
    Some(SubjectUpdate { changed, rekeyed, affected, texts })
}

/// Subject ids of every row of both transition tables through SQL: the fallback when a table cannot
/// be read directly (it recomputes more than needed, never less). Mapped keys as `how` says.
pub(super) fn keys_by_sql(
    client: &mut SpiClient<'_>,
    subject: &SubjectTable,
    key: &str,
    old: bool,
    new: bool,
    how: MapKeys,
) -> MsegResult<Vec<i64>> {
    let key = quote_identifier(key);
    let mut parts = Vec::new();
    let value = if subject.mapped { format!("{key}::pg_catalog.text") } else { format!("{key}::pg_catalog.int8") };
    if new {
        parts.push(format!("SELECT {value} AS k FROM mseg_new"));
    }
    if old {
        parts.push(format!("SELECT {value} AS k FROM mseg_old"));
    }
    let rows = format!("SELECT k FROM ({}) x WHERE k IS NOT NULL", parts.join(" UNION ALL "));
    if !subject.mapped {
        let t = client.update(&format!("SELECT pg_catalog.array_agg(DISTINCT k ORDER BY k) FROM ({rows}) y"), None, &[])?;
        return Ok(t.first().get_one::<Vec<i64>>()?.unwrap_or_default());
    }
    let t = client.update(&format!("SELECT pg_catalog.array_agg(DISTINCT k ORDER BY k) FROM ({rows}) y"), None, &[])?;
    let texts = t.first().get_one::<Vec<String>>()?.unwrap_or_default();
    Ok(sort_dedup(map_texts(client, texts, how)?))
}

/// Subject ids of the rows of the transition tables `old`/`new`, read directly, else through SQL;
/// mapped keys as `how` says.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn statement_keys(
    client: &mut SpiClient<'_>,
    td: &pg_sys::TriggerData,
    subject: &SubjectTable,
    key: &str,
    attnum: i16,
    old: bool,
    new: bool,
    how: MapKeys,
) -> MsegResult<Vec<i64>> {
    let desc = (*td.tg_relation).rd_att;
    let mut keys = Vec::new();
    let mut texts = MappedKeys::default();
    let direct = (!old || transition_keys(td.tg_oldtable, desc, attnum, &mut keys, &mut texts).is_some())
        && (!new || transition_keys(td.tg_newtable, desc, attnum, &mut keys, &mut texts).is_some());
    if direct {
        texts.ids(client, sort_dedup(keys), how)
    } else {
        keys_by_sql(client, subject, key, old, new, how)
    }
}
