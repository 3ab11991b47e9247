//! The legal-basis rule as SQL fragments, for queries that evaluate it for many subjects at once
//! (segment upkeep, Variant Twin export). The SQL function `mseg._processable` (sql/consent.sql)
//! states the same rule for one subject; the pg_regress files consent and segments and the twins
//! round trip check that they agree.
//!
//! A query using these fragments joins, for purpose number `i` (aliases are numbered so one query
//! can evaluate several purposes), `pp{i}` (the purpose's legal bases and retention), `b{i}` (the
//! subject's state for it) and once `ss` (the subject's restriction and erasure): see [`joins`].
//! A subject is processable for a purpose when it is not blocked (restricted, erased, objected)
//! and either has a valid grant (a basis the purpose accepts, within its retention) or the purpose
//! accepts legitimate interest; for sensitive data only an explicit consent counts (Art. 9).

use pgrx::spi::quote_literal;

/// The joins for `purposes` (aliases pp1/b1, pp2/b2, … in order) and the subject state `ss` of the
/// subject whose key is the SQL expression `key`.
pub fn joins(purposes: &[&str], key: &str) -> String {
    let mut sql = format!(" LEFT JOIN mseg.subject_state ss ON ss.subject_key OPERATOR(pg_catalog.=) {key}");
    for (n, p) in purposes.iter().enumerate() {
        let i = n + 1;
        let lit = quote_literal(p);
        sql.push_str(&format!(
            " CROSS JOIN (SELECT legal_bases, retention, 'legitimate_interest' OPERATOR(pg_catalog.=) ANY (legal_bases) AS li \
                          FROM mseg.purposes WHERE name OPERATOR(pg_catalog.=) {lit} OFFSET 0) pp{i} \
              LEFT JOIN mseg.legal_basis_state b{i} ON b{i}.subject_key OPERATOR(pg_catalog.=) {key} \
              AND b{i}.purpose OPERATOR(pg_catalog.=) {lit}"
        ));
    }
    sql
}

/// Restricted, erased, or objected to purpose `i`: nothing else matters.
pub fn blocked(i: usize) -> String {
    format!("(ss.restricted_at IS NOT NULL OR ss.erased_at IS NOT NULL OR b{i}.objected_at IS NOT NULL)")
}

/// A recorded grant the purpose accepts, within its retention (for sensitive data: a consent).
pub fn granted(i: usize, sensitive: bool) -> String {
    let kind = if sensitive { format!("b{i}.consent_basis OPERATOR(pg_catalog.=) 'consent' AND ") } else { String::new() };
    format!(
        "({kind}b{i}.consent_basis OPERATOR(pg_catalog.=) ANY (pp{i}.legal_bases) \
         AND b{i}.granted_at OPERATOR(pg_catalog.+) pp{i}.retention OPERATOR(pg_catalog.>) pg_catalog.now())"
    )
}

/// The purpose accepts legitimate interest (never enough for sensitive data); tested once per
/// query in the `pp{i}` subquery, not once per segment and subject.
pub fn legitimate_interest(i: usize) -> String {
    format!("pp{i}.li")
}

/// Processable for purpose `i` now.
pub fn processable(i: usize, sensitive: bool) -> String {
    if sensitive {
        format!("(NOT {} AND {})", blocked(i), granted(i, true))
    } else {
        // legitimate interest first: when the purpose accepts it, the grant is never looked at
        format!("(NOT {} AND ({} OR {}))", blocked(i), legitimate_interest(i), granted(i, false))
    }
}

/// The basis that makes the subject processable for purpose `i` now (its grant's basis, or
/// legitimate_interest), NULL when none does.
pub fn basis_in_force(i: usize) -> String {
    format!(
        "CASE WHEN {} THEN NULL WHEN {} THEN b{i}.consent_basis WHEN {} THEN 'legitimate_interest' END",
        blocked(i),
        granted(i, false),
        legitimate_interest(i)
    )
}
