//! Recomputing every subject (refresh) and comparing with a from-scratch evaluation (verify).

use super::*;

/// Recompute every subject's set in batches (progress in mseg.progress); returns subjects changed.
pub(super) fn refresh_all(label: &str, scope: &Scope, mode: LockMode) -> MsegResult<i64> {
    // SAFETY: pick up definition changes committed by other sessions before using the cache.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    catalog::note_catalog_change();
    let cat = cached_catalog()?;
    let subject = require_subject_table()?;
    let total = catalog::as_upkeep(|| {
        Spi::connect(|c| {
            Ok(c.select(&format!("SELECT pg_catalog.count(*) FROM {}", subject.name), None, &[])?.first().get_one::<i64>()?.unwrap_or(0))
        })
    })?;
    let slot = progress::start(progress::Operation::Refresh, subject.relid, label, total);
    let batch = crate::gucs::refresh_batch_subjects() as i64;
    let key = quote_identifier(&subject.key);
    let next_batch = if subject.mapped {
        // every id (an id whose subject is gone gets the empty set)
        "SELECT pg_catalog.array_agg(k ORDER BY k) FROM (SELECT i.subject_id AS k FROM mseg.subject_ids i \
         WHERE i.subject_id OPERATOR(pg_catalog.>) $1 ORDER BY i.subject_id LIMIT $2) x"
            .to_owned()
    } else {
        format!(
            "SELECT pg_catalog.array_agg(k ORDER BY k) FROM (SELECT s.{key}::pg_catalog.int8 AS k FROM {} s \
             WHERE s.{key} OPERATOR(pg_catalog.>) $1 ORDER BY s.{key} LIMIT $2) x",
            subject.name
        )
    };
    let before = events_count()?;
    let mut done = 0i64;
    catalog::as_upkeep(|| {
        without_jit(|| {
            Spi::connect_mut(|client| -> MsegResult<()> {
                let mut last = i64::MIN;
                loop {
                    let t = client.update(&next_batch, None, &[last.into(), batch.into()])?;
                    let keys = t.first().get_one::<Vec<i64>>()?.unwrap_or_default();
                    let Some(&max) = keys.last() else { break };
                    if mode != LockMode::Table {
                        // (definitions have locked the whole table instead)
                        lock_subject_rows(client, &cat, &subject, &keys)?;
                    }
                    apply_batch(client, &cat, &subject, &keys, scope, mode)?;
                    last = max;
                    done += keys.len() as i64;
                    progress::advance(slot, done, done);
                    pgrx::check_for_interrupts!();
                }
                // sets of subjects that no longer exist (ids without a subject row)
                empty_orphans(client, &cat, &subject, mode)?;
                Ok(())
            })
        })
    })?;
    progress::finish(slot, done);
    Ok(events_count()? - before)
}

pub(super) fn events_count() -> MsegResult<i64> {
    catalog::select(|c| {
        Ok(c.select("SELECT pg_catalog.count(*) FROM mseg.membership_events", None, &[])?.first().get_one::<i64>()?.unwrap_or(0))
    })
}

pub(super) fn segment_size(id: i32) -> MsegResult<i64> {
    catalog::select(|c| {
        Ok(c.select("SELECT pg_catalog.count(*) FROM mseg.memberships WHERE $1 OPERATOR(pg_catalog.=) ANY (segments)", None, &[id.into()])?
            .first()
            .get_one::<i64>()?
            .unwrap_or(0))
    })
}

/// Recompute every subject's set (after time passes: time-dependent predicates and consent
/// expiry); returns the number of membership events it wrote. Schedulable: it blocks no writer,
/// taking part in the same row-lock protocol as the triggers. With `segment`, only that segment is
/// recomputed. Ends by publishing the segment sizes (`mseg.publish_segment_sizes()`).
#[pg_extern(volatile, parallel_unsafe)]
pub(super) fn refresh_segments(segment: default!(Option<&str>, "NULL")) -> i64 {
    boundary(|| {
        require_subject_table()?;
        let scope = match segment {
            Some(name) => Scope::Only(vec![segment_id(name)?]),
            None => Scope::All,
        };
        let label = segment.unwrap_or("*").to_owned();
        let changed = refresh_all(&label, &scope, LockMode::Rows)?;
        catalog::audit("segments.refresh", &label, serde_json::json!({"events": changed}))?;
        // the sizes application roles see, from the refreshed sets (they show after commit)
        crate::sizes::publish()?;
        Ok(changed)
    })
}

/// Differences between stored memberships and a from-scratch evaluation (none when exact).
#[pg_extern(volatile, parallel_unsafe)]
pub(super) fn verify_segments() -> TableIterator<'static, (name!(segment, String), name!(subject_key, i64), name!(should_be_member, bool))>
{
    let rows = boundary(|| {
        unsafe { pg_sys::AcceptInvalidationMessages() };
        let cat = cached_catalog()?;
        let Some(subject) = cat.subject.clone() else {
            return Ok(Vec::new());
        };
        let names: HashMap<i32, String> = cat.segments.iter().map(|s| (s.id, s.name.clone())).collect();
        let sql = format!(
            "WITH n AS ({eval}) \
             SELECT COALESCE(n.subject_key, m.subject_key), COALESCE(n.segs, '{{}}'::pg_catalog.int4[]), COALESCE(m.segments, '{{}}'::pg_catalog.int4[]) \
             FROM n FULL JOIN mseg.memberships m ON m.subject_key OPERATOR(pg_catalog.=) n.subject_key \
             WHERE COALESCE(n.segs, '{{}}'::pg_catalog.int4[]) IS DISTINCT FROM COALESCE(m.segments, '{{}}'::pg_catalog.int4[]) \
             ORDER BY 1",
            eval = eval_select(&cat, &subject, &subject.name, &Scope::All)
        );
        without_jit(|| {
            catalog::as_upkeep(|| {
                Spi::connect(|c| {
                    let mut out = Vec::new();
                    for row in c.select(&sql, None, &[])? {
                        let key = row.get::<i64>(1)?.unwrap_or(0);
                        let expected = row.get::<Vec<i32>>(2)?.unwrap_or_default();
                        let stored = row.get::<Vec<i32>>(3)?.unwrap_or_default();
                        for id in expected.iter().filter(|i| !stored.contains(i)) {
                            out.push((names.get(id).cloned().unwrap_or_else(|| format!("#{id}")), key, true));
                        }
                        for id in stored.iter().filter(|i| !expected.contains(i)) {
                            out.push((names.get(id).cloned().unwrap_or_else(|| format!("#{id}")), key, false));
                        }
                    }
                    Ok(out)
                })
            })
        })
    });
    TableIterator::new(rows)
}
