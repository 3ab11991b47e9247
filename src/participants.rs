//! The last mile at the trusted party: participants, deliveries, responses.
//!
//! Data subjects who choose to hear from the trusted party register with it directly: its own
//! subject table (`mseg.register_subjects`), consent ledger and rights, so the trusted party is the
//! controller of its participants' contact data. `set_participant_columns` names the column whose
//! normalised value, evaluated with this party's OPRF key, is the participant's person (the same
//! value a controller's linkage file carries for the same e-mail address) and the column holding
//! the contact handle. `mseg.participant_persons` is kept exact by a row trigger on the table
//! (`mseg._participant_persons_sync`, sql/participants.sql), so an objection or erasure finds the
//! person at once (src/notices.rs).
//!
//! `deliver(pool_segment, campaign, purpose)` returns the contact handles of the pool segment's
//! persons who are participants with a valid basis here for the purpose **and** all of whose
//! pooled twins (every controller holding one) allow the purpose now; a person once, and not again
//! in the same campaign. Nothing is returned, or kept, for members who are not participants.

use base64::Engine;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use serde_json::json;
use voprf::{OprfServer, Ristretto255};

use crate::catalog;
use crate::error::{boundary, Code, MsegError, Result as MsegResult};
use crate::keys;
use crate::linkage::normalise;

/// The person of an identifier under `server`'s key: the RFC 9497 Evaluate of the normalised
/// identifier (what a controller's blind / evaluate / finalise round gives), base64 as in
/// `mseg.pool_links`. None for an empty identifier.
pub fn person_with(server: &OprfServer<Ristretto255>, identifier: &str) -> MsegResult<Option<String>> {
    let Some(n) = normalise(identifier) else { return Ok(None) };
    let output = server.evaluate(n.as_bytes()).map_err(|_| {
        MsegError::new(Code::Participants, "a participant's identifier cannot be evaluated").detail("It is longer than 65535 bytes.")
    })?;
    Ok(Some(base64::engine::general_purpose::STANDARD.encode(output.as_slice())))
}

/// Internal (the participants trigger): the person of an identifier under this party's OPRF key.
/// Granted to nobody: it would be an oracle of the person keys.
#[pg_extern(volatile, parallel_unsafe, name = "_participant_person")]
fn participant_person(identifier: Option<&str>) -> Option<String> {
    boundary(|| {
        let Some(identifier) = identifier else { return Ok(None) };
        person_with(&keys::oprf_server()?, identifier)
    })
}

/// The participants set-up: the registered table, its identifier and contact columns.
pub(crate) struct Participants {
    pub subject: catalog::SubjectTable,
    pub contact: String,
}

pub(crate) fn participants() -> MsegResult<Participants> {
    let cols: Option<(String, String)> = catalog::select(|c| {
        let t = c.select("SELECT identifier::pg_catalog.text, contact::pg_catalog.text FROM mseg.participant_columns", None, &[])?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok(Some((r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?.unwrap_or_default())))
    })?;
    let Some((_, contact)) = cols else {
        return Err(MsegError::new(Code::Participants, "no participant columns are set").hint(
            "Register the participants table with mseg.register_subjects, then call mseg.set_participant_columns(identifier, contact).",
        ));
    };
    Ok(Participants { subject: catalog::require_subject_table()?, contact })
}

/// Name the registered subject table's identifier column (its normalised value, OPRF-evaluated with
/// this party's key, is the participant's person) and contact column (the handle `deliver`
/// returns); both classified direct. Computes the person of every participant now and keeps them
/// exact by a row trigger from then on. Returns the number of participants with a person.
#[pg_extern(volatile, parallel_unsafe)]
fn set_participant_columns(identifier: Option<&str>, contact: Option<&str>) -> i64 {
    boundary(|| {
        let identifier = identifier.ok_or_else(|| MsegError::null_argument("identifier"))?;
        let contact = contact.ok_or_else(|| MsegError::null_argument("contact"))?;
        let subject = catalog::require_subject_table()?;
        for column in [identifier, contact] {
            crate::linkage::identifier_column(&subject, column).map_err(|e| {
                MsegError { code: Code::Participants, ..e }.hint("Name columns of the participants table classified direct (e.g. email).")
            })?;
        }
        // every participant's person, read as mseg_upkeep
        let sql = format!(
            "SELECT ({k})::pg_catalog.text, pg_catalog.format('%s', s.{col}) FROM {rel} s",
            k = subject.row_key("s"),
            col = quote_identifier(identifier),
            rel = subject.name,
        );
        let rows: Vec<(String, Option<String>)> = catalog::as_upkeep(|| {
            Spi::connect(|c| {
                let mut v = Vec::new();
                for row in c.select(&sql, None, &[])? {
                    v.push((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?));
                }
                Ok(v)
            })
        })?;
        let server = keys::oprf_server()?;
        let (mut subject_keys, mut persons) = (Vec::new(), Vec::new());
        for (key, value) in rows {
            if let Some(person) = value.as_deref().map(|v| person_with(&server, v)).transpose()?.flatten() {
                subject_keys.push(key);
                persons.push(person);
            }
        }
        let linked = persons.len() as i64;
        let table = subject.name.clone();
        let watched = format!("{}, {}", quote_identifier(identifier), quote_identifier(&subject.key));
        catalog::update(|c| {
            c.update(
                "INSERT INTO mseg.participant_columns (relid, identifier, contact) VALUES ($1, $2, $3) \
                 ON CONFLICT (only_row) DO UPDATE SET relid = EXCLUDED.relid, identifier = EXCLUDED.identifier, \
                   contact = EXCLUDED.contact, set_at = pg_catalog.now()",
                None,
                &[subject.relid.into(), identifier.into(), contact.into()],
            )?;
            c.update("DELETE FROM mseg.participant_persons", None, &[])?;
            c.update(
                "INSERT INTO mseg.participant_persons (subject_key, subject_ref, person) \
                 SELECT mseg._subject_id(u.k), mseg._subject_ref(u.k), u.p \
                 FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) AS u(k, p) \
                 WHERE mseg._subject_id(u.k) IS NOT NULL",
                None,
                &[subject_keys.into(), persons.into()],
            )?;
            // the triggers (as owner: EXECUTE on their function is granted to nobody); those of an
            // earlier call are replaced (dropped by name only when present: no NOTICE for the DBA)
            let earlier: Vec<String> = c
                .select(
                    "SELECT tgname::pg_catalog.text FROM pg_catalog.pg_trigger WHERE tgrelid OPERATOR(pg_catalog.=) $1 \
                     AND tgname OPERATOR(pg_catalog.=) ANY ('{zz_mseg_participant_persons,zz_mseg_participant_persons_trunc}'::pg_catalog.name[])",
                    None,
                    &[subject.relid.into()],
                )?
                .filter_map(|row| row.get::<String>(1).ok().flatten())
                .collect();
            for name in earlier {
                c.update(&format!("DROP TRIGGER {} ON {table}", quote_identifier(&name)), None, &[])?;
            }
            c.update(
                &format!(
                    "CREATE TRIGGER zz_mseg_participant_persons AFTER INSERT OR DELETE OR UPDATE OF {watched} ON {table} \
                       FOR EACH ROW EXECUTE FUNCTION mseg._participant_persons_sync(); \
                     CREATE TRIGGER zz_mseg_participant_persons_trunc AFTER TRUNCATE ON {table} \
                       FOR EACH STATEMENT EXECUTE FUNCTION mseg._participant_persons_sync();"
                ),
                None,
                &[],
            )?;
            Ok(())
        })?;
        catalog::audit("participants.columns", &table, json!({"identifier": identifier, "contact": contact, "participants": linked}))?;
        Ok(linked)
    })
}

/// The pool segment's purpose, or the error that it does not exist.
fn pool_segment_purpose(segment: &str) -> MsegResult<String> {
    let purpose = catalog::as_owner(|| {
        catalog::query_one::<String>("SELECT purpose FROM mseg.pool_segments WHERE name OPERATOR(pg_catalog.=) $1", &[segment.into()])
    })?;
    purpose.ok_or_else(|| {
        MsegError::new(Code::UnknownSegment, format!("pool segment \"{}\" does not exist", crate::kanon::short(segment)))
            .hint("mseg.pool_segments lists the pool segments.")
    })
}

/// A campaign or response name: 1 to 63 characters from a-z, 0-9, _ - . : after a letter.
fn check_label(what: &str, value: &str) -> MsegResult<()> {
    let ok = value.len() <= 63
        && value.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.:".contains(c));
    if ok {
        return Ok(());
    }
    Err(MsegError::new(Code::Delivery, format!("invalid {what} \"{}\"", crate::kanon::short(value)))
        .hint(format!("A {what} starts with a lower-case letter and has at most 63 characters from a-z, 0-9, _ - . :")))
}

/// The persons of the segment (linked members), the participants among them, the eligible ones
/// with one participant each (the lowest key), and those not yet reached by the campaign.
const ELIGIBLE: &str = "\
WITH persons AS (SELECT p AS person FROM mseg.pool_segment_persons($1) p), \
participating AS ( \
    SELECT pp.person, pp.subject_key FROM mseg.participant_persons pp JOIN persons USING (person)), \
eligible AS ( \
    SELECT DISTINCT ON (pa.person) pa.person, pa.subject_key FROM participating pa \
    CROSS JOIN mseg.purposes pu \
    LEFT JOIN mseg.legal_basis_state st ON st.subject_key OPERATOR(pg_catalog.=) pa.subject_key \
         AND st.purpose OPERATOR(pg_catalog.=) pu.name \
    LEFT JOIN mseg.subject_state ss ON ss.subject_key OPERATOR(pg_catalog.=) pa.subject_key \
    WHERE pu.name OPERATOR(pg_catalog.=) $2 \
      AND mseg._processable(st, ss.restricted_at IS NOT NULL OR ss.erased_at IS NOT NULL, pu, false, pg_catalog.now()) \
      AND NOT EXISTS ( \
          SELECT 1 FROM mseg.pool_links l \
          LEFT JOIN mseg.pool_twins t ON t.controller OPERATOR(pg_catalog.=) l.controller AND t.pseudonym OPERATOR(pg_catalog.=) l.pseudonym \
          WHERE l.person OPERATOR(pg_catalog.=) pa.person \
            AND (t.pseudonym IS NULL OR NOT ((t.policy OPERATOR(pg_catalog.->) 'purposes') OPERATOR(pg_catalog.?) $2) \
                 OR t.expires_at OPERATOR(pg_catalog.<=) pg_catalog.now())) \
    ORDER BY pa.person, pa.subject_key), \
fresh AS ( \
    SELECT e.person, e.subject_key FROM eligible e \
    WHERE NOT EXISTS (SELECT 1 FROM mseg.deliveries d LEFT JOIN mseg.participant_persons dp ON dp.subject_key OPERATOR(pg_catalog.=) d.subject_key \
                      WHERE d.campaign OPERATOR(pg_catalog.=) $3 \
                        AND (d.subject_key OPERATOR(pg_catalog.=) e.subject_key OR dp.person OPERATOR(pg_catalog.=) e.person))) \
SELECT (SELECT pg_catalog.count(*) FROM persons), \
       (SELECT pg_catalog.count(DISTINCT person) FROM participating), \
       (SELECT pg_catalog.count(*) FROM eligible), \
       (SELECT pg_catalog.array_agg(subject_key ORDER BY subject_key) FROM fresh)";

/// The contact handles of `pool_segment`'s members who are participants here with a valid basis
/// for `purpose` and all of whose pooled twins allow `purpose` now; each person once, and only
/// persons `campaign` has not reached yet. Every delivery is recorded, every call audited (counts).
#[pg_extern(volatile, parallel_unsafe)]
fn deliver(
    pool_segment: Option<&str>,
    campaign: Option<&str>,
    purpose: Option<&str>,
) -> TableIterator<'static, (name!(participant, Option<String>), name!(contact, Option<String>))> {
    let rows = boundary(|| {
        let segment = pool_segment.ok_or_else(|| MsegError::null_argument("pool_segment"))?;
        let campaign = campaign.ok_or_else(|| MsegError::null_argument("campaign"))?;
        let purpose = purpose.ok_or_else(|| MsegError::null_argument("purpose"))?;
        check_label("campaign name", campaign)?;
        let p = participants()?;
        catalog::require_purpose(purpose)?;
        let bound = pool_segment_purpose(segment)?;
        if bound != purpose {
            return Err(MsegError::new(
                Code::Delivery,
                format!("pool segment \"{segment}\" is bound to purpose \"{bound}\", not \"{purpose}\""),
            )
            .hint("Deliver a pool segment for the purpose it was defined for."));
        }
        let members = catalog::as_owner(|| {
            catalog::query_one::<i64>("SELECT pg_catalog.count(*) FROM mseg.pool_segment_members($1)", &[segment.into()])
        })?
        .unwrap_or(0);
        let (persons, participating, eligible, fresh) = catalog::select(|c| {
            let t = c.select(ELIGIBLE, None, &[segment.into(), purpose.into(), campaign.into()])?;
            let r = t.first();
            Ok((
                r.get::<i64>(1)?.unwrap_or(0),
                r.get::<i64>(2)?.unwrap_or(0),
                r.get::<i64>(3)?.unwrap_or(0),
                r.get::<Vec<i64>>(4)?.unwrap_or_default(),
            ))
        })?;
        // the contact handles, read as mseg_upkeep; a participant without one is not reached
        let s = &p.subject;
        let sql = format!(
            "SELECT {id}, ({k})::pg_catalog.text, pg_catalog.format('%s', s.{contact}) FROM {rel} s{join} \
             WHERE {id} OPERATOR(pg_catalog.=) ANY ($1) AND s.{contact} IS NOT NULL ORDER BY 1",
            id = s.id_of_row("s"),
            k = s.row_key("s"),
            contact = quote_identifier(&p.contact),
            rel = s.name,
            join = s.id_join("s"),
        );
        let reached: Vec<(i64, String, String)> = catalog::as_upkeep(|| {
            Spi::connect(|c| {
                let mut v = Vec::new();
                for row in c.select(&sql, None, &[fresh.clone().into()])? {
                    let (Some(id), Some(key), Some(contact)) = (row.get::<i64>(1)?, row.get::<String>(2)?, row.get::<String>(3)?) else {
                        continue;
                    };
                    v.push((id, key, contact));
                }
                Ok(v)
            })
        })?;
        let ids: Vec<i64> = reached.iter().map(|r| r.0).collect();
        catalog::update(|c| {
            c.update(
                "INSERT INTO mseg.deliveries (campaign, subject_key, pool_segment, purpose) \
                 SELECT $1, u, $2, $3 FROM pg_catalog.unnest($4::pg_catalog.int8[]) u",
                None,
                &[campaign.into(), segment.into(), purpose.into(), ids.into()],
            )?;
            Ok(())
        })?;
        catalog::audit(
            "deliver",
            campaign,
            json!({"pool_segment": segment, "purpose": purpose, "members": members, "persons": persons,
                   "participants": participating, "eligible": eligible, "delivered": reached.len()}),
        )?;
        Ok(reached.into_iter().map(|(_, key, contact)| (Some(key), Some(contact))).collect::<Vec<_>>())
    });
    TableIterator::new(rows)
}

/// Internal (mseg.record_response): record `response` of participant `key` (as text) to `campaign`.
#[pg_extern(volatile, parallel_unsafe, name = "_record_response")]
fn record_response(campaign: Option<&str>, participant: Option<&str>, response: Option<&str>) -> bool {
    boundary(|| {
        let campaign = campaign.ok_or_else(|| MsegError::null_argument("campaign"))?;
        let key = participant.ok_or_else(|| MsegError::null_argument("participant"))?;
        let response = response.ok_or_else(|| MsegError::null_argument("response"))?;
        check_label("response", response)?;
        let p = participants()?;
        let known = catalog::as_owner(|| {
            catalog::query_one::<bool>(
                "SELECT EXISTS (SELECT 1 FROM mseg.deliveries WHERE campaign OPERATOR(pg_catalog.=) $1)",
                &[campaign.into()],
            )
        })?
        .unwrap_or(false);
        if !known {
            return Err(MsegError::new(Code::Delivery, format!("campaign \"{}\" reached nobody", crate::kanon::short(campaign)))
                .hint("Responses are recorded for campaigns mseg.deliver has delivered."));
        }
        let id = crate::consent::id_of_key(&p.subject, key)?;
        let reached = match id {
            None => false,
            Some(id) => catalog::as_owner(|| {
                catalog::query_one::<bool>(
                    "SELECT EXISTS (SELECT 1 FROM mseg.deliveries WHERE campaign OPERATOR(pg_catalog.=) $1 AND subject_key OPERATOR(pg_catalog.=) $2)",
                    &[campaign.into(), id.into()],
                )
            })?
            .unwrap_or(false),
        };
        let Some(id) = id.filter(|_| reached) else {
            // the same answer for a participant not reached and for no participant at all
            return Err(MsegError::new(
                Code::Delivery,
                format!("campaign \"{campaign}\" did not reach participant {}", crate::kanon::short(key)),
            )
            .hint("Only a participant the campaign reached can respond to it."));
        };
        let recorded = catalog::update(|c| {
            Ok(!c
                .update(
                    "INSERT INTO mseg.responses (campaign, subject_key, response) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1",
                    None,
                    &[campaign.into(), id.into(), response.into()],
                )?
                .is_empty())
        })?;
        catalog::audit("response", campaign, json!({"response": response, "recorded": recorded}))?;
        Ok(recorded)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use voprf::{BlindedElement, EvaluationElement, OprfClient};

    /// The person a participant gets here (Evaluate, non-oblivious) is the link a controller's
    /// blind / evaluate / finalise round gives for the same address, however it is written.
    #[test]
    fn participant_person_equals_the_controllers_linkage_output() {
        let server = OprfServer::<Ristretto255>::new_from_seed(&[9u8; 32], b"pg_mseg linkage").unwrap();
        let mut rng = rand_core::OsRng;
        let controller_link = |written: &str, rng: &mut rand_core::OsRng| {
            let input = normalise(written).unwrap();
            let b = OprfClient::<Ristretto255>::blind(input.as_bytes(), rng).unwrap();
            let wire = b.message.serialize().to_vec();
            let ev = EvaluationElement::<Ristretto255>::deserialize(
                &server.blind_evaluate(&BlindedElement::deserialize(&wire).unwrap()).serialize(),
            )
            .unwrap();
            base64::engine::general_purpose::STANDARD.encode(b.state.finalize(input.as_bytes(), &ev).unwrap().as_slice())
        };
        let here = person_with(&server, "ann.lee@example.org").unwrap().unwrap();
        assert_eq!(here, controller_link("  Ann.Lee@Example.ORG ", &mut rng));
        assert_eq!(here, controller_link("ann.lee@example.org", &mut rng));
        assert_ne!(here, controller_link("bob@example.org", &mut rng));
        assert_eq!(here.len(), 88); // 64 bytes, base64
        assert!(person_with(&server, "   ").unwrap().is_none());
    }
}
