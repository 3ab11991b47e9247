//! The segment triggers on the subject table, the sources and their partitions.

use super::*;

/// (name, event, transition tables) of the four statement triggers every maintained table gets.
pub(super) const TRIGGERS: [(&str, &str, &str); 4] = [
    ("zz_mseg_segments_ins", "AFTER INSERT", "REFERENCING NEW TABLE AS mseg_new"),
    ("zz_mseg_segments_upd", "AFTER UPDATE", "REFERENCING OLD TABLE AS mseg_old NEW TABLE AS mseg_new"),
    ("zz_mseg_segments_del", "AFTER DELETE", "REFERENCING OLD TABLE AS mseg_old"),
    ("zz_mseg_segments_trunc", "AFTER TRUNCATE", ""),
];

fn trigger_exists(c: &pgrx::spi::SpiClient<'_>, relid: pg_sys::Oid, name: &str) -> MsegResult<bool> {
    Ok(!c
        .select(
            "SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid OPERATOR(pg_catalog.=) $1::pg_catalog.oid \
             AND tgname OPERATOR(pg_catalog.=) $2::pg_catalog.name",
            None,
            &[relid.into(), name.into()],
        )?
        .is_empty())
}

pub(super) fn ensure_triggers(relid: pg_sys::Oid) -> MsegResult<()> {
    let table = catalog::relation_name(relid);
    catalog::update(|c| {
        for (name, event, referencing) in TRIGGERS {
            if !trigger_exists(c, relid, name)? {
                c.update(
                    &format!("CREATE TRIGGER {name} {event} ON {table} {referencing} FOR EACH STATEMENT EXECUTE FUNCTION mseg.segments_trigger()"),
                    None,
                    &[],
                )?;
            }
        }
        Ok(())
    })
}

/// The segment triggers on `relid` and on all its partitions and inheritance children (a
/// statement fires only the triggers of the table it names, the parent or a partition).
pub(super) fn ensure_triggers_tree(relid: pg_sys::Oid) -> MsegResult<()> {
    ensure_triggers(relid)?;
    for part in descendants(relid)? {
        ensure_triggers(part)?;
        remember_partition(part, relid, "segments")?;
    }
    Ok(())
}

pub(super) fn drop_triggers_tree(relid: pg_sys::Oid) -> MsegResult<()> {
    drop_triggers(relid)?;
    // (a descendant registered as a source of its own keeps its triggers)
    let registered: Vec<pg_sys::Oid> = catalog::select(|c| {
        let mut v = Vec::new();
        for row in c.select("SELECT relid::pg_catalog.oid FROM mseg.sources", None, &[])? {
            v.extend(row.get::<pg_sys::Oid>(1)?);
        }
        Ok(v)
    })?;
    for part in descendants(relid)?.into_iter().filter(|p| !registered.contains(p)) {
        drop_triggers(part)?;
    }
    catalog::update(|c| {
        c.update(
            "DELETE FROM mseg.known_partitions WHERE root OPERATOR(pg_catalog.=) $1 AND kind OPERATOR(pg_catalog.=) 'segments'",
            None,
            &[relid.into()],
        )?;
        Ok(())
    })
}

/// Record that partition `part` of `root` is maintained (`kind`: segments or pseudonyms).
pub fn remember_partition(part: pg_sys::Oid, root: pg_sys::Oid, kind: &str) -> MsegResult<()> {
    catalog::update(|c| {
        c.update(
            "INSERT INTO mseg.known_partitions (relid, kind, root) VALUES ($1, $3, $2) \
             ON CONFLICT (relid, kind) DO UPDATE SET root = EXCLUDED.root",
            None,
            &[part.into(), root.into(), kind.into()],
        )?;
        Ok(())
    })
}

pub(super) fn drop_triggers(relid: pg_sys::Oid) -> MsegResult<()> {
    let table = catalog::relation_name(relid);
    catalog::update(|c| {
        for (name, _, _) in TRIGGERS {
            if trigger_exists(c, relid, name)? {
                c.update(&format!("DROP TRIGGER {name} ON {table}"), None, &[])?;
            }
        }
        Ok(())
    })
}

/// Block writers to the subject table and the sources until the definition change commits, so
/// no statement keeps maintaining memberships with the old definitions.
pub(super) fn lock_maintained_tables(subject: &SubjectTable) -> MsegResult<()> {
    let mut tables = vec![subject.relid];
    tables.extend(load_catalog()?.sources.iter().map(|s| s.relid));
    // a lock on a parent does not lock its partitions here: take them one by one
    for t in tables.clone() {
        tables.extend(descendants(t)?);
    }
    // taken directly: LOCK TABLE would need a privilege on each table, and a lock runs no code
    for t in tables {
        // SAFETY: a heavyweight lock on an existing relation, held until the transaction ends.
        unsafe { pg_sys::LockRelationOid(t, pg_sys::ShareRowExclusiveLock as pg_sys::LOCKMODE) };
    }
    Ok(())
}
