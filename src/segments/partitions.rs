//! Partitions attached, detached, created and dropped under a maintained table.

use super::*;

/// Internal: after DDL, bring the partitions of the subject table, of every source and of every
/// table with pseudonym columns in line: a new partition gets the segment triggers and its rows
/// are taken into the memberships (its subjects evaluated, or the subjects its source rows name
/// recomputed) or its pseudonym columns computed; a detached partition's subjects (or those its
/// rows named) are recomputed without it and it loses the triggers; a dropped one's are recomputed
/// from what is left. Called by the event trigger `mseg_partitions` (sql/finalize.sql).
#[pg_extern(volatile, parallel_unsafe, name = "_partitions_changed")]
pub(super) fn partitions_changed() -> bool {
    boundary(|| {
        unsafe { pg_sys::AcceptInvalidationMessages() };
        catalog::note_catalog_change();
        let subject = subject_table()?;
        let sources: Vec<(pg_sys::Oid, String)> = catalog::select(|c| {
            let mut v = Vec::new();
            for row in c.select("SELECT relid::pg_catalog.oid, key_column::pg_catalog.text FROM mseg.sources", None, &[])? {
                v.push((row.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid), row.get::<String>(2)?.unwrap_or_default()));
            }
            Ok(v)
        })?;
        let pseudonym_roots: Vec<pg_sys::Oid> = catalog::select(|c| {
            let mut v = Vec::new();
            for row in c.select(
                "SELECT DISTINCT p.relid::pg_catalog.oid FROM mseg.pseudonym_columns p JOIN pg_catalog.pg_class c \
                 ON c.oid OPERATOR(pg_catalog.=) p.relid WHERE c.relkind OPERATOR(pg_catalog.=) 'p'",
                None,
                &[],
            )? {
                if let Some(r) = row.get::<pg_sys::Oid>(1)? {
                    v.push(r);
                }
            }
            Ok(v)
        })?;
        let mut changed = false;
        if let Some(subject) = &subject {
            changed |= sync_tree(subject.relid, &subject.key, Some(subject), None)?;
        }
        for (relid, key) in &sources {
            changed |= sync_tree(*relid, key, subject.as_ref(), Some(*relid))?;
        }
        for relid in pseudonym_roots {
            changed |= sync_pseudonym_tree(relid)?;
        }
        Ok(changed)
    })
}

pub(super) fn known_partitions(root: pg_sys::Oid, kind: &str) -> MsegResult<Vec<(pg_sys::Oid, bool)>> {
    catalog::select(|c| {
        let mut v = Vec::new();
        for row in c.select(
            "SELECT k.relid, EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) k.relid) \
             FROM mseg.known_partitions k WHERE k.root OPERATOR(pg_catalog.=) $1 AND k.kind OPERATOR(pg_catalog.=) $2",
            None,
            &[root.into(), kind.into()],
        )? {
            v.push((row.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid), row.get::<bool>(2)?.unwrap_or(false)));
        }
        Ok(v)
    })
}

pub(super) fn forget_partition(part: pg_sys::Oid, kind: &str) -> MsegResult<()> {
    catalog::update(|c| {
        c.update(
            "DELETE FROM mseg.known_partitions WHERE relid OPERATOR(pg_catalog.=) $1 AND kind OPERATOR(pg_catalog.=) $2",
            None,
            &[part.into(), kind.into()],
        )?;
        Ok(())
    })
}

/// The distinct keys in column `key` of table `relid`, read as its owner (a detached partition is a
/// table of its own, on which mseg_upkeep holds no privilege).
pub(super) fn keys_in(relid: pg_sys::Oid, key: &str) -> MsegResult<Vec<i64>> {
    let subject = require_subject_table()?;
    let value = if subject.mapped { "pg_catalog.text" } else { "pg_catalog.int8" };
    let sql = format!(
        "SELECT pg_catalog.array_agg(DISTINCT t.{k}::{value}) FROM ONLY {rel} t WHERE t.{k} IS NOT NULL",
        k = quote_identifier(key),
        rel = catalog::relation_name(relid)
    );
    if !subject.mapped {
        return catalog::as_table_owner(relid, || catalog::query_one::<Vec<i64>>(&sql, &[]).map(Option::unwrap_or_default));
    }
    // mapped keys: read as the owner, given their ids (new ones for a subject partition's rows) as mseg_upkeep
    let texts = catalog::as_table_owner(relid, || catalog::query_one::<Vec<String>>(&sql, &[]).map(Option::unwrap_or_default))?;
    catalog::as_upkeep(|| {
        Spi::connect_mut(|c| {
            c.update(
                "INSERT INTO mseg.subject_ids (subject_key) SELECT pg_catalog.unnest($1::pg_catalog.text[]) ON CONFLICT (subject_key) DO NOTHING",
                None,
                &[texts.clone().into()],
            )?;
            let t = c.update(
                "SELECT pg_catalog.array_agg(subject_id ORDER BY subject_id) FROM mseg.subject_ids \
                 WHERE subject_key OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[])",
                None,
                &[texts.into()],
            )?;
            Ok(t.first().get_one::<Vec<i64>>()?.unwrap_or_default())
        })
    })
}

/// Recompute `keys` for `scope` (subject partitions: all segments; source partitions: the segments
/// over that source), taking part in the lock protocol.
pub(super) fn recompute(keys: &[i64], scope: &Scope) -> MsegResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let cat = cached_catalog()?;
    let Some(subject) = cat.subject.clone() else { return Ok(()) };
    if cat.segments.is_empty() {
        return Ok(());
    }
    catalog::as_upkeep(|| {
        without_jit(|| {
            Spi::connect_mut(|client| {
                for chunk in keys.chunks(crate::gucs::refresh_batch_subjects()) {
                    apply_keys(client, &cat, &subject, chunk, scope, LockMode::RowsOrTable)?;
                }
                Ok(())
            })
        })
    })
}

/// One maintained tree (the subject table, or source `source`): new partitions in, gone ones out.
pub(super) fn sync_tree(root: pg_sys::Oid, key: &str, subject: Option<&SubjectTable>, source: Option<pg_sys::Oid>) -> MsegResult<bool> {
    let tree = descendants(root)?;
    let known = known_partitions(root, "segments")?;
    let scope = match source {
        None => Scope::All,
        Some(src) => {
            let cat = cached_catalog()?;
            Scope::Only(cat.segments.iter().filter(|s| s.sources.contains(&src)).map(|s| s.id).collect())
        }
    };
    let mut changed = false;
    for &part in tree.iter().filter(|p| !known.iter().any(|(k, _)| k == *p)) {
        ensure_triggers(part)?;
        remember_partition(part, root, "segments")?;
        // its rows (attached with the partition) enter the tree
        let col = if source.is_none() { subject.map(|s| s.key.clone()).unwrap_or_default() } else { key.to_owned() };
        recompute(&keys_in(part, &col)?, &scope)?;
        changed = true;
    }
    for &(part, exists) in known.iter().filter(|(k, _)| !tree.contains(k)) {
        if exists {
            // detached: its rows left the tree
            let col = if source.is_none() { subject.map(|s| s.key.clone()).unwrap_or_default() } else { key.to_owned() };
            let keys = keys_in(part, &col)?;
            drop_triggers(part)?;
            forget_partition(part, "segments")?;
            unsafe { pg_sys::AcceptInvalidationMessages() };
            catalog::note_catalog_change();
            recompute(&keys, &scope)?;
        } else {
            // dropped: its rows are gone without a trace of which subjects they concerned
            forget_partition(part, "segments")?;
            match (source, subject) {
                (None, Some(subject)) => {
                    let cat = cached_catalog()?;
                    catalog::as_upkeep(|| Spi::connect_mut(|c| empty_orphans(c, &cat, subject, LockMode::RowsOrTable)))?;
                }
                (Some(_), Some(_)) => {
                    refresh_all("dropped partition", &scope, LockMode::Rows)?;
                }
                _ => {}
            }
        }
        changed = true;
    }
    Ok(changed)
}

/// A table with pseudonym columns: a new partition's pseudonym columns are computed (its rows may
/// hold anything: it was filled outside the trigger, or forged).
pub(super) fn sync_pseudonym_tree(root: pg_sys::Oid) -> MsegResult<bool> {
    let tree = crate::pseudonym::leaves(root)?;
    let known = known_partitions(root, "pseudonyms")?;
    let columns = catalog::pseudonym_columns_of(root)?;
    let mut changed = false;
    for &part in tree.iter().filter(|p| **p != root && !known.iter().any(|(k, _)| k == *p)) {
        // as the partition's owner: its triggers must not run with elevated rights
        catalog::as_table_owner(part, || {
            for col in &columns {
                crate::pseudonym::rewrite_relation_in_batches(col, part, progress::Operation::Backfill, false)?;
            }
            Ok(())
        })?;
        remember_partition(part, root, "pseudonyms")?;
        changed = true;
    }
    for &(part, _) in known.iter().filter(|(k, _)| !tree.contains(k)) {
        forget_partition(part, "pseudonyms")?;
        changed = true;
    }
    Ok(changed)
}
