//! Published segment sizes: all that application roles learn about how many subjects a segment
//! (or a pool segment at a trusted party) holds.
//!
//! Sizes are never computed live for an application role. `mseg.publish_segment_sizes()` (run
//! by `mseg_admin`, at the end of every `refresh_segments()` and every Variant Twin import, and on
//! a schedule) counts the members as its own transaction sees them, adds noise, suppresses what
//! falls below `mseg.min_group_size` after the noise, and writes the result into
//! `mseg.published_sizes` / `mseg.published_pool_sizes` in the same transaction. The views
//! `mseg.segment_sizes` and `mseg.pool_segment_sizes` read only those tables, so
//! - a reader sees the last *committed* publication: its own uncommitted changes (a `restrict`,
//!   dummy rows inserted and rolled back) never show;
//! - asking again returns the same value until the next publication: repeated queries carry no
//!   new information;
//! - each published size is `max(0, true + X)` with X two-sided geometric noise of parameter
//!   `alpha = exp(-epsilon)` (`mseg.size_epsilon`, default 0.5): the discrete Laplace mechanism,
//!   epsilon-differentially private for one subject joining or leaving (sensitivity 1: a subject
//!   counts once per segment; a pooled twin once per (controller, segment) and once across
//!   controllers). Pooled sizes are published in twins and in persons (distinct linked persons,
//!   `mseg.pool_links`; an unlinked twin is one), each with its own noise; suppression is
//!   decided on the noisy persons, and twins are shown only where the persons pass. Suppression is decided on the noisy value, so it is post-processing and costs
//!   nothing more.
//!
//! The noise is derived, not drawn: X is a function of HMAC-SHA256(size-noise key, segment, true
//! count, publication epoch), the key derived from the master key with HKDF (`keys::SIZE_NOISE_INFO`)
//! and never leaving Rust. Recomputing a publication (a rolled-back publish run again over the
//! same data) gives the same values, so no one can average fresh draws by repeating it; a new
//! epoch or a different count gives an independent draw.

use pgrx::prelude::*;

use crate::catalog;
use crate::error::{boundary, Result as MsegResult};
use crate::gucs;
use crate::keys::{self, KeyedMac};

/// A number in (0, 1) from 8 bytes: the top 53 bits, centred in their cell (never 0 or 1).
fn unit(bytes: &[u8]) -> f64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    ((u64::from_le_bytes(b) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// A geometric variable on {0, 1, 2, …} with P(G >= g) = alpha^g, by inversion of `u`.
fn geometric(u: f64, alpha: f64) -> i64 {
    // ln u < 0 and ln alpha < 0; the quotient is at most about 37 / epsilon
    (u.ln() / alpha.ln()).floor() as i64
}

/// Two-sided geometric noise, P(X = x) = (1 - alpha) / (1 + alpha) * alpha^|x| with alpha =
/// exp(-epsilon), seeded by HMAC(key, message): the difference of two independent geometric
/// variables made from the two halves of the MAC's first 16 bytes.
pub(crate) fn geometric_noise(key: &KeyedMac, message: &[u8], epsilon: f64) -> i64 {
    let h = key.mac(message);
    let alpha = (-epsilon).exp();
    geometric(unit(&h[0..8]), alpha) - geometric(unit(&h[8..16]), alpha)
}

/// What a true count becomes when published: (shown size, suppressed). Never negative;
/// suppressed (shown as NULL) when the noisy size is below k.
pub(crate) fn release(count: i64, noise: i64, k: i64) -> (Option<i64>, bool) {
    let noisy = count.saturating_add(noise).max(0);
    if noisy < k {
        (None, true)
    } else {
        (Some(noisy), false)
    }
}

/// The MAC input of a local segment's size: kind, segment id, true count, epoch.
fn segment_message(segment_id: i32, count: i64, epoch: i64) -> Vec<u8> {
    format!("segment\0{segment_id}\0{count}\0{epoch}").into_bytes()
}

/// The MAC input of a pooled size: (controller or all), kind, segment, true count, epoch.
/// Text cannot hold NUL, so the fields cannot run into each other.
fn pool_message(controller: Option<&str>, kind: &str, segment: &str, count: i64, epoch: i64) -> Vec<u8> {
    let who = match controller {
        Some(c) => format!("controller={c}"),
        None => "all".to_owned(),
    };
    format!("pool\0{who}\0{kind}\0{segment}\0{count}\0{epoch}").into_bytes()
}

/// The MAC input of a pooled size in persons: as [`pool_message`], under its own label, so the
/// persons' noise is drawn independently of the twins'.
fn persons_message(controller: Option<&str>, kind: &str, segment: &str, count: i64, epoch: i64) -> Vec<u8> {
    let mut m = b"persons\0".to_vec();
    m.extend(pool_message(controller, kind, segment, count, epoch));
    m
}

/// The true sizes of the local segments: every defined segment, 0 when it has no member.
const SEGMENT_COUNTS: &str = "SELECT s.segment_id, COALESCE(c.subjects, 0)::pg_catalog.int8 \
     FROM mseg.segments s \
     LEFT JOIN (SELECT seg, pg_catalog.count(*) AS subjects FROM mseg.memberships m, pg_catalog.unnest(m.segments) seg GROUP BY seg) c \
            ON c.seg OPERATOR(pg_catalog.=) s.segment_id \
     ORDER BY s.segment_id";

/// The true pooled sizes: twins per (controller, kind, segment) and per (kind, segment) across
/// controllers (controller NULL), expired twins excluded; a person-level pool segment counts the
/// twins of its member persons (a person with an expired twin is no member); over a key set that never shrinks while
/// its objects exist (what was published before, as long as its controller is registered — any
/// controller, for the sizes across controllers — and its pool segment defined; every registered
/// controller and the across-controllers row for each pool segment), so a size falling to 0 is
/// published as a noisy 0, most likely suppressed, instead of a row that disappears.
///
/// Persons are counted without building a person key per twin: an unlinked twin is a person of
/// its own (`twin:controller:pseudonym` in `mseg.pool_twin_persons`, which no OPRF output equals),
/// so a group's persons are its unlinked twins plus its distinct linked persons. Without any link
/// the distinct count is left out (and the aggregate can hash); without a person-level segment
/// (`mseg.pool_persons` is then empty) its join is left out; without a twin-level pool segment
/// (no twin is then in one: `mseg.pool::recompute`) the scan for them is left out.
fn pool_counts_sql(any_link: bool, any_person: bool, any_twin_segment: bool) -> String {
    let (link_join, persons) = if any_link {
        (
            "LEFT JOIN mseg.pool_links l ON l.controller OPERATOR(pg_catalog.=) t.controller \
                                        AND l.pseudonym OPERATOR(pg_catalog.=) t.pseudonym ",
            "pg_catalog.count(*) FILTER (WHERE x.person IS NULL) OPERATOR(pg_catalog.+) pg_catalog.count(DISTINCT x.person)",
        )
    } else {
        ("", "pg_catalog.sum(x.n)::pg_catalog.int8")
    };
    // the person key of mseg.pool_twin_persons, for the join with mseg.pool_persons
    let twin_key = "'twin:' OPERATOR(pg_catalog.||) t.controller OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) t.pseudonym";
    let person_key = if any_link { format!("COALESCE(l.person, {twin_key})") } else { format!("({twin_key})") };
    let person_join =
        if any_person { format!("JOIN mseg.pool_persons pp ON pp.person OPERATOR(pg_catalog.=) {person_key} ") } else { String::new() };
    // Rows (controller, person, kind, segment, n): n twins of the controller (and person) in the
    // segment. Each kind's segments come from a set-returning function in the select list:
    // PostgreSQL runs it in step with the scan; a LATERAL UNION ALL of unnest() rescans an Append
    // and fills a tuple store per twin (a fifth of a 190 000-twin import).
    let live = "(t.expires_at IS NULL OR t.expires_at OPERATOR(pg_catalog.>) pg_catalog.now())";
    let person = if any_link { "l.person" } else { "NULL::pg_catalog.text" };
    // Without links only the number of twins counts: they are counted per distinct array of
    // segments first (a few dozen), and only those arrays are unnested (a third of the time of
    // unnesting every twin's array, 190 000 twins). With links each twin is a row of its own.
    let twin_rows = |kind: &str, segments: &str| {
        if any_link {
            format!(
                "SELECT t.controller, {person} AS person, '{kind}'::pg_catalog.text AS kind, pg_catalog.unnest(t.{segments}) AS segment, \
                        1::pg_catalog.int8 AS n \
                 FROM mseg.pool_twins t {link_join}WHERE {live} "
            )
        } else {
            format!(
                "SELECT g.controller, NULL::pg_catalog.text AS person, '{kind}'::pg_catalog.text AS kind, pg_catalog.unnest(g.segments) AS segment, g.n \
                 FROM (SELECT t.controller, t.{segments} AS segments, pg_catalog.count(*) AS n FROM mseg.pool_twins t WHERE {live} \
                       GROUP BY t.controller, t.{segments}) g "
            )
        }
    };
    let person_rows = if any_person {
        format!(
            "UNION ALL \
             SELECT t.controller, {person}, 'pool'::pg_catalog.text, pg_catalog.unnest(pp.person_segments), 1::pg_catalog.int8 \
             FROM mseg.pool_twins t {link_join}{person_join}\
             WHERE {live} AND (pp.expires_at IS NULL OR pp.expires_at OPERATOR(pg_catalog.>) pg_catalog.now()) "
        )
    } else {
        String::new()
    };
    let controller_rows = twin_rows("controller", "segments");
    let twin_segment_rows = if any_twin_segment { format!("UNION ALL {}", twin_rows("pool", "pool_segments")) } else { String::new() };
    format!(
        "WITH counts AS ( \
           SELECT x.controller, x.kind, x.segment, pg_catalog.sum(x.n)::pg_catalog.int8 AS twins, {persons} AS persons \
           FROM ({controller_rows}{twin_segment_rows}{person_rows}) x \
           GROUP BY GROUPING SETS ((x.controller, x.kind, x.segment), (x.kind, x.segment))), \
         keys AS ( \
           SELECT c.controller, c.kind, c.segment FROM counts c \
           UNION \
           SELECT p.controller, p.kind, p.segment FROM mseg.published_pool_sizes p \
           WHERE (p.kind OPERATOR(pg_catalog.<>) 'pool' \
                  OR EXISTS (SELECT 1 FROM mseg.pool_segments s WHERE s.name OPERATOR(pg_catalog.=) p.segment)) \
             AND CASE WHEN p.controller IS NULL THEN EXISTS (SELECT 1 FROM mseg.controllers r) \
                      ELSE EXISTS (SELECT 1 FROM mseg.controllers r WHERE r.id OPERATOR(pg_catalog.=) p.controller) END \
           UNION \
           SELECT r.id COLLATE \"C\", 'pool', s.name FROM mseg.controllers r, mseg.pool_segments s \
           UNION \
           SELECT NULL, 'pool', s.name FROM mseg.pool_segments s) \
         SELECT k.controller, k.kind, k.segment, COALESCE(c.twins, 0)::pg_catalog.int8, COALESCE(c.persons, 0)::pg_catalog.int8 \
         FROM keys k LEFT JOIN counts c \
           ON c.kind OPERATOR(pg_catalog.=) k.kind AND c.segment OPERATOR(pg_catalog.=) k.segment \
          AND (c.controller OPERATOR(pg_catalog.=) k.controller OR (c.controller IS NULL AND k.controller IS NULL)) \
         ORDER BY k.kind, k.segment, k.controller NULLS LAST"
    )
}

/// Publish every segment size and pooled size as one epoch; returns the epoch.
pub fn publish() -> MsegResult<i64> {
    let epsilon = gucs::size_epsilon();
    let k = gucs::min_group_size();
    let key = keys::size_noise_key()?;
    let (epoch, segments, pooled) = catalog::update(|c| {
        // one publisher at a time: epochs are consecutive and each is published once
        c.update("LOCK TABLE mseg.size_publications IN EXCLUSIVE MODE", None, &[])?;
        let epoch = c
            .update("SELECT COALESCE(pg_catalog.max(epoch), 0) OPERATOR(pg_catalog.+) 1 FROM mseg.size_publications", None, &[])?
            .first()
            .get_one::<i64>()?
            .unwrap_or(1);

        let (mut ids, mut shown, mut suppressed) = (Vec::new(), Vec::new(), Vec::new());
        for row in c.select(SEGMENT_COUNTS, None, &[])? {
            let id = row.get::<i32>(1)?.unwrap_or(0);
            let count = row.get::<i64>(2)?.unwrap_or(0);
            let (s, sup) = release(count, geometric_noise(&key, &segment_message(id, count, epoch), epsilon), k);
            ids.push(id);
            shown.push(s);
            suppressed.push(sup);
        }
        c.update("DELETE FROM mseg.published_sizes", None, &[])?;
        c.update(
            "INSERT INTO mseg.published_sizes (segment_id, epoch, subjects, suppressed) \
             SELECT u.id, $1, u.shown, u.suppressed \
             FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.int4[]), pg_catalog.unnest($3::pg_catalog.int8[]), pg_catalog.unnest($4::pg_catalog.bool[])) \
             AS u(id, shown, suppressed)",
            None,
            &[epoch.into(), ids.clone().into(), shown.into(), suppressed.into()],
        )?;

        let (mut controllers, mut kinds, mut names, mut twins, mut pool_suppressed, mut persons) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let any = |table: &str| -> MsegResult<bool> {
            Ok(c.select(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), None, &[])?.first().get_one::<bool>()?.unwrap_or(true))
        };
        // (a statement apart from the counts, yet the same links: every writer of mseg.pool_links,
        // an import or a linkage import, publishes before it commits, so it waits for the lock
        // this publication holds and none of its links can become visible in between)
        let pool_counts = pool_counts_sql(
            any("mseg.pool_links")?,
            any("mseg.pool_persons")?,
            any("mseg.pool_segments WHERE level OPERATOR(pg_catalog.=) 'twin'")?,
        );
        for row in c.select(&pool_counts, None, &[])? {
            let controller = row.get::<String>(1)?;
            let kind = row.get::<String>(2)?.unwrap_or_default();
            let segment = row.get::<String>(3)?.unwrap_or_default();
            let count = row.get::<i64>(4)?.unwrap_or(0);
            let people = row.get::<i64>(5)?.unwrap_or(0);
            // k is checked in persons (a person with twins at two controllers counts once); twins
            // are shown only when the persons pass
            let person_noise = geometric_noise(&key, &persons_message(controller.as_deref(), &kind, &segment, people, epoch), epsilon);
            let (p, sup) = release(people, person_noise, k);
            let noise = geometric_noise(&key, &pool_message(controller.as_deref(), &kind, &segment, count, epoch), epsilon);
            let s = if sup { None } else { release(count, noise, 0).0 };
            controllers.push(controller);
            kinds.push(kind);
            names.push(segment);
            twins.push(s);
            persons.push(p);
            pool_suppressed.push(sup);
        }
        let pooled = kinds.len();
        c.update("DELETE FROM mseg.published_pool_sizes", None, &[])?;
        c.update(
            "INSERT INTO mseg.published_pool_sizes (controller, kind, segment, epoch, twins, suppressed, persons) \
             SELECT u.controller, u.kind, u.segment, $1, u.twins, u.suppressed, u.persons \
             FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.text[]), pg_catalog.unnest($4::pg_catalog.text[]), \
                            pg_catalog.unnest($5::pg_catalog.int8[]), pg_catalog.unnest($6::pg_catalog.bool[]), pg_catalog.unnest($7::pg_catalog.int8[])) \
             AS u(controller, kind, segment, twins, suppressed, persons)",
            None,
            &[epoch.into(), controllers.into(), kinds.into(), names.into(), twins.into(), pool_suppressed.into(), persons.into()],
        )?;
        c.update(
            "INSERT INTO mseg.size_publications (epoch, epsilon, min_group_size, segment_sizes, pool_sizes) VALUES ($1, $2, $3, $4, $5)",
            None,
            &[epoch.into(), epsilon.into(), (k as i32).into(), (ids.len() as i32).into(), (pooled as i32).into()],
        )?;
        Ok((epoch, ids.len(), pooled))
    })?;
    catalog::audit(
        "sizes.publish",
        &epoch.to_string(),
        serde_json::json!({"epoch": epoch, "epsilon": epsilon, "min_group_size": k, "segment_sizes": segments, "pool_sizes": pooled}),
    )?;
    Ok(epoch)
}

/// Publish the noisy, k-suppressed sizes of every segment and pooled segment as they are now
/// (what `mseg.segment_sizes` and `mseg.pool_segment_sizes` show until the next publication);
/// returns the publication's epoch. Each published size costs `mseg.size_epsilon` of privacy
/// budget per subject (see docs/security.md).
#[pg_extern(volatile, parallel_unsafe)]
fn publish_segment_sizes() -> i64 {
    boundary(publish)
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::*;

    /// The persons as the person key counts them (the query before pool_counts_sql): distinct
    /// `mseg.pool_twin_persons.person` per group, every twin through the view.
    #[cfg(feature = "pg_test")]
    const PERSONS_BY_KEY: &str =
        "SELECT t.controller, s.kind, s.segment, pg_catalog.count(*) AS twins, pg_catalog.count(DISTINCT t.person) AS persons \
         FROM mseg.pool_twin_persons t \
         LEFT JOIN mseg.pool_persons pp ON pp.person OPERATOR(pg_catalog.=) t.person \
         CROSS JOIN LATERAL (SELECT 'controller'::pg_catalog.text AS kind, c AS segment FROM pg_catalog.unnest(t.segments) c \
                             UNION ALL SELECT 'pool'::pg_catalog.text, p FROM pg_catalog.unnest(t.pool_segments) p \
                             UNION ALL SELECT 'pool'::pg_catalog.text, q FROM pg_catalog.unnest(pp.person_segments) q \
                             WHERE pp.expires_at IS NULL OR pp.expires_at OPERATOR(pg_catalog.>) pg_catalog.now()) s \
         WHERE t.expires_at IS NULL OR t.expires_at OPERATOR(pg_catalog.>) pg_catalog.now() \
         GROUP BY GROUPING SETS ((t.controller, s.kind, s.segment), (s.kind, s.segment))";

    /// (controller, kind, segment, twins, persons) of the groups with a twin, sorted.
    #[cfg(feature = "pg_test")]
    fn counted(sql: &str) -> Vec<(Option<String>, String, String, i64, i64)> {
        let query =
            format!("SELECT * FROM ({sql}) q (controller, kind, segment, twins, persons) WHERE q.twins > 0 ORDER BY 2, 3, 1 NULLS LAST");
        Spi::connect(|c| {
            c.select(&query, None, &[])
                .unwrap()
                .map(|r| {
                    (
                        r.get::<String>(1).unwrap(),
                        r.get::<String>(2).unwrap().unwrap(),
                        r.get::<String>(3).unwrap().unwrap(),
                        r.get::<i64>(4).unwrap().unwrap(),
                        r.get::<i64>(5).unwrap().unwrap(),
                    )
                })
                .collect()
        })
    }

    #[cfg(feature = "pg_test")]
    #[pg_test]
    fn pooled_persons_are_counted_as_the_person_key_counts_them() {
        // 60 twins at two controllers: every third linked (persons shared across the controllers
        // and within one), every seventh expired; a twin-level and a person-level pool segment
        Spi::run(
            "INSERT INTO mseg.controllers (id, public_key) VALUES ('pc_one', 'k1'), ('pc_two', 'k2'); \
             INSERT INTO mseg.pool_twins (controller, pseudonym, quasi, segments, legal_basis, policy, expires_at, sequence) \
             SELECT CASE WHEN g % 2 = 0 THEN 'pc_one' ELSE 'pc_two' END, 'p' || g, '{}', \
                    CASE WHEN g % 3 = 0 THEN '{runners,cyclists}'::text[] ELSE '{cyclists}'::text[] END, '{}', \
                    '{\"purposes\": [\"direct_marketing\"]}', CASE WHEN g % 7 = 0 THEN now() - interval '1 day' END, 1 \
             FROM generate_series(1, 60) g;",
        )
        .unwrap();
        // no pool segment at all: the shortest form agrees with the person key
        let reference = counted(PERSONS_BY_KEY);
        assert!(reference.iter().all(|r| r.1 == "controller") && reference.len() >= 6, "{reference:?}");
        assert_eq!(counted(&pool_counts_sql(false, false, false)), reference);
        Spi::run("SELECT mseg.define_pool_segment('pc_runners', 'direct_marketing', $$'runners' = ANY (t.segments)$$)").unwrap();
        // no link, no person segment: the short forms agree with the person key
        let reference = counted(PERSONS_BY_KEY);
        assert!(
            reference.iter().any(|r| r.0.is_none()) && reference.iter().any(|r| r.1 == "pool") && reference.len() >= 6,
            "{reference:?}"
        );
        assert_eq!(counted(&pool_counts_sql(false, false, true)), reference);
        assert_eq!(counted(&pool_counts_sql(false, true, true)), reference);
        assert_eq!(counted(&pool_counts_sql(true, true, true)), reference);

        Spi::run(
            "INSERT INTO mseg.pool_links (controller, pseudonym, person, sequence) \
             SELECT t.controller, t.pseudonym, 'person' || (substr(t.pseudonym, 2)::int % 9), 1 \
             FROM mseg.pool_twins t WHERE substr(t.pseudonym, 2)::int % 3 = 0; \
             SELECT mseg.define_person_segment('pc_both', 'direct_marketing', $$'pc_one:cyclists' = ANY (p.segments)$$);",
        )
        .unwrap();
        let reference = counted(PERSONS_BY_KEY);
        // the links make persons fewer than twins somewhere, and the person segment has members
        assert!(reference.iter().any(|r| r.4 < r.3), "{reference:?}");
        assert!(reference.iter().any(|r| r.2 == "pc_both" && r.3 > 0), "{reference:?}");
        assert_eq!(counted(&pool_counts_sql(true, true, true)), reference);
    }

    fn sample(epsilon: f64, n: u32) -> Vec<i64> {
        let key = KeyedMac::new(b"a test key for the size noise, 32+ bytes");
        (0..n).map(|i| geometric_noise(&key, &segment_message(7, 1000, i64::from(i)), epsilon)).collect()
    }

    #[test]
    fn noise_has_the_two_sided_geometric_distribution() {
        for epsilon in [0.1, 0.5, 1.0] {
            let n = 200_000;
            let xs = sample(epsilon, n);
            let alpha = f64::exp(-epsilon);
            let mean = xs.iter().sum::<i64>() as f64 / f64::from(n);
            let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / f64::from(n);
            let want_var = 2.0 * alpha / (1.0 - alpha).powi(2);
            let zero = xs.iter().filter(|&&x| x == 0).count() as f64 / f64::from(n);
            let want_zero = (1.0 - alpha) / (1.0 + alpha);
            // standard error of the mean is sqrt(var / n); allow 5 of them
            assert!(mean.abs() < 5.0 * (want_var / f64::from(n)).sqrt(), "epsilon {epsilon}: mean {mean}");
            assert!((var / want_var - 1.0).abs() < 0.05, "epsilon {epsilon}: variance {var}, expected {want_var}");
            assert!((zero - want_zero).abs() < 0.01, "epsilon {epsilon}: P(0) {zero}, expected {want_zero}");
            // P(X >= 1) = alpha / (1 + alpha): the tail has the right weight, on both sides
            let pos = xs.iter().filter(|&&x| x >= 1).count() as f64 / f64::from(n);
            let neg = xs.iter().filter(|&&x| x <= -1).count() as f64 / f64::from(n);
            assert!((pos - alpha / (1.0 + alpha)).abs() < 0.01 && (neg - alpha / (1.0 + alpha)).abs() < 0.01, "{pos} {neg}");
        }
    }

    #[test]
    fn noise_is_derived_not_drawn() {
        let key = KeyedMac::new(b"a test key for the size noise, 32+ bytes");
        let other = KeyedMac::new(b"another key for the size noise, 32 bytes");
        let m = segment_message(3, 41, 9);
        assert_eq!(geometric_noise(&key, &m, 0.5), geometric_noise(&key, &m, 0.5));
        // another key, epoch, count or segment gives an independent draw: over many messages the
        // draws under two keys agree only as often as two independent draws would
        let same = (0..10_000)
            .filter(|&i| geometric_noise(&key, &segment_message(3, 41, i), 0.5) == geometric_noise(&other, &segment_message(3, 41, i), 0.5))
            .count();
        let alpha = f64::exp(-0.5);
        let p_equal = (1.0 - alpha).powi(2) / (1.0 + alpha).powi(2) * (1.0 + alpha * alpha) / (1.0 - alpha * alpha);
        assert!((same as f64 / 10_000.0 - p_equal).abs() < 0.02, "{same}");
        assert_ne!(segment_message(3, 41, 9), segment_message(3, 4, 19));
        assert_ne!(pool_message(Some("a"), "pool", "x", 1, 1), pool_message(None, "pool", "x", 1, 1));
    }

    #[test]
    fn release_suppresses_below_k_after_noise_and_never_goes_negative() {
        assert_eq!(release(12, -3, 10), (None, true));
        assert_eq!(release(8, 2, 10), (Some(10), false));
        assert_eq!(release(0, -5, 2), (None, true));
        assert_eq!(release(100, 0, 10), (Some(100), false));
        assert_eq!(release(i64::MAX, 5, 10), (Some(i64::MAX), false));
    }
}
