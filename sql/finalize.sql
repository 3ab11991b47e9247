-- pg_mseg finalize: runs after the generated function definitions.

CREATE VIEW mseg.progress AS
SELECT s.pid,
       s.operation,
       s.relid::pg_catalog.regclass AS relation,
       s.target,
       s.done,
       s.total,
       s.unit,
       s.rows_done,
       pg_catalog.round(CASE WHEN s.total OPERATOR(pg_catalog.>) 0
                             THEN 100.0 OPERATOR(pg_catalog.*) s.done OPERATOR(pg_catalog./) s.total
                             ELSE 100.0 END, 1) AS percent,
       CASE WHEN s.finished THEN 'waiting for commit' ELSE 'running' END AS state,
       pg_catalog.to_timestamp(0) OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => 946684800)
           OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => s.started_us OPERATOR(pg_catalog./) 1000000.0) AS started_at
FROM mseg.progress_slots() s;
COMMENT ON VIEW mseg.progress IS 'pg_mseg operations in progress in any session (backfills, key rotations)';

-- Every backend drops its cached domain versions, pseudonym rules and segment plans when these change.
CREATE TRIGGER mseg_config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON mseg.domains
    FOR EACH STATEMENT EXECUTE FUNCTION mseg.config_changed();
CREATE TRIGGER mseg_config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON mseg.pseudonym_columns
    FOR EACH STATEMENT EXECUTE FUNCTION mseg.config_changed();
CREATE TRIGGER mseg_config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON mseg.segments
    FOR EACH STATEMENT EXECUTE FUNCTION mseg.config_changed();
CREATE TRIGGER mseg_config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON mseg.sources
    FOR EACH STATEMENT EXECUTE FUNCTION mseg.config_changed();
CREATE TRIGGER mseg_config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON mseg.subject_tables
    FOR EACH STATEMENT EXECUTE FUNCTION mseg.config_changed();
CREATE TRIGGER mseg_config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON mseg.column_classes
    FOR EACH STATEMENT EXECUTE FUNCTION mseg.config_changed();
CREATE TRIGGER mseg_config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON mseg.purposes
    FOR EACH STATEMENT EXECUTE FUNCTION mseg.config_changed();

-- Partitions attached, detached, created or dropped under a maintained table (src/segments.rs,
-- _partitions_changed). SECURITY DEFINER so any role's DDL can reach the internal function; it
-- runs no user code with those rights (triggers are created by name, rows are read as mseg_upkeep
-- or the partition's owner).
CREATE FUNCTION mseg._on_partition_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM mseg.subject_tables) AND NOT EXISTS (SELECT 1 FROM mseg.pseudonym_columns) THEN
        RETURN;
    END IF;
    PERFORM mseg._partitions_changed();
END
$$;
CREATE EVENT TRIGGER mseg_partitions ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'CREATE TABLE AS', 'SELECT INTO')
    EXECUTE FUNCTION mseg._on_partition_ddl();
CREATE EVENT TRIGGER mseg_partitions_dropped ON sql_drop
    WHEN TAG IN ('DROP TABLE', 'ALTER TABLE')
    EXECUTE FUNCTION mseg._on_partition_ddl();

-- mseg.segment_sizes and mseg.pool_segment_sizes: published sizes only, see sql/sizes.sql.

-- Privileges: nothing for PUBLIC; each role gets exactly what its job needs.
REVOKE ALL ON SCHEMA mseg FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA mseg FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA mseg FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA mseg FROM PUBLIC;

GRANT USAGE ON SCHEMA mseg TO mseg_admin, mseg_app, mseg_export, mseg_reidentify;

-- mseg_upkeep (no login, no members): what segment upkeep, refresh, verification and exports read
-- and write, and nothing more. The registered subject table and sources are granted to it by
-- register_subjects / register_source, a category mapping table by classify.
GRANT USAGE ON SCHEMA mseg TO mseg_upkeep;
GRANT SELECT ON mseg.subject_tables, mseg.sources, mseg.segments, mseg.column_classes, mseg.purposes,
                mseg.legal_basis_state, mseg.subject_state
TO mseg_upkeep;
GRANT SELECT, INSERT, UPDATE, DELETE ON mseg.memberships TO mseg_upkeep;
GRANT SELECT, INSERT, UPDATE ON mseg.key_locks TO mseg_upkeep;
GRANT INSERT ON mseg.membership_events TO mseg_upkeep;
GRANT USAGE ON SEQUENCE mseg.membership_event_seq TO mseg_upkeep;
GRANT SELECT, INSERT ON mseg.subject_ids TO mseg_upkeep;
GRANT USAGE ON SEQUENCE mseg.subject_id_seq TO mseg_upkeep;
-- (trusted party) pool-segment predicates are evaluated as mseg_upkeep too
GRANT SELECT, UPDATE (pool_segments) ON mseg.pool_twins TO mseg_upkeep;
GRANT SELECT ON mseg.pool_segments TO mseg_upkeep;
GRANT EXECUTE ON FUNCTION
    mseg._segments_merge(pg_catalog.int4[], pg_catalog.int4[], pg_catalog.int4[]),
    mseg._segments_minus(pg_catalog.int4[], pg_catalog.int4[]),
    mseg.generalize(pg_catalog.text, pg_catalog.text, pg_catalog.int4),
    mseg.generalize(pg_catalog.date, pg_catalog.text, pg_catalog.int4),
    mseg.generalize(pg_catalog.int8, pg_catalog.text, pg_catalog.int4)
TO mseg_upkeep;

-- administration: domains, pseudonym columns, key checks; may compute pseudonyms and tokens
GRANT SELECT ON mseg.domains, mseg.pseudonym_columns, mseg.progress TO mseg_admin;
GRANT EXECUTE ON FUNCTION
    mseg.key_fingerprint(),
    mseg.create_domain(pg_catalog.text, pg_catalog.text),
    mseg.drop_domain(pg_catalog.text),
    mseg.rotate_domain(pg_catalog.text),
    mseg.add_pseudonym_column(pg_catalog.regclass, pg_catalog.text, pg_catalog.text, pg_catalog.text),
    mseg.drop_pseudonym_column(pg_catalog.regclass, pg_catalog.text),
    mseg.pseudonym(pg_catalog.text, pg_catalog.text),
    mseg.token(pg_catalog.text, pg_catalog.text),
    mseg.progress_slots()
TO mseg_admin;

-- re-identification (GDPR Art. 4(5)): reversing tokens, nothing else
GRANT EXECUTE ON FUNCTION mseg.detoken(pg_catalog.text, pg_catalog.text) TO mseg_reidentify;

-- consent: application code records choices and asks whether it may process
GRANT SELECT ON mseg.purposes TO mseg_app, mseg_admin;
GRANT EXECUTE ON FUNCTION
    mseg.grant_consent(anycompatible, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.jsonb, pg_catalog.text),
    mseg.withdraw_consent(anycompatible, pg_catalog.text, pg_catalog.text, pg_catalog.jsonb),
    mseg.object(anycompatible, pg_catalog.text, pg_catalog.text, pg_catalog.jsonb),
    mseg.lift_objection(anycompatible, pg_catalog.text, pg_catalog.text, pg_catalog.jsonb),
    mseg.restrict(anycompatible, pg_catalog.text, pg_catalog.jsonb),
    mseg.lift_restriction(anycompatible, pg_catalog.text, pg_catalog.jsonb),
    mseg.is_processable(anycompatible, pg_catalog.text, pg_catalog.bool)
TO mseg_app, mseg_admin;

-- consent and audit: the DBA / DPO configures, erases, reports and verifies
GRANT SELECT ON mseg.subject_tables, mseg.subject_ids, mseg.column_classes, mseg.consent_events, mseg.legal_basis_state,
                mseg.subject_state, mseg.erasures, mseg.audit_log, mseg.audit_head
TO mseg_admin;
GRANT EXECUTE ON FUNCTION
    mseg.register_subjects(pg_catalog.regclass, pg_catalog.text),
    mseg.classify(pg_catalog.regclass, pg_catalog.text, pg_catalog.text, pg_catalog.text),
    mseg.unclassified_columns(pg_catalog.regclass),
    mseg.define_purpose(pg_catalog.text, pg_catalog.text[], pg_catalog.interval, pg_catalog.text),
    mseg.alter_purpose(pg_catalog.text, pg_catalog.text[], pg_catalog.interval, pg_catalog.text),
    mseg.drop_purpose(pg_catalog.text),
    mseg.forget(anycompatible, pg_catalog.text, pg_catalog.text, pg_catalog.jsonb),
    mseg.subject_report(anycompatible),
    mseg.verify_audit_log(pg_catalog.jsonb),
    mseg.audit_head()
TO mseg_admin;
GRANT EXECUTE ON FUNCTION mseg.audit_anchor() TO mseg_admin, mseg_export;

-- segments: the DBA defines; application roles read k-suppressed sizes; export reads members
GRANT SELECT ON mseg.segment_sizes TO mseg_app, mseg_admin, mseg_export;
GRANT SELECT ON mseg.sources, mseg.segments, mseg.memberships, mseg.membership_events TO mseg_admin;
GRANT SELECT ON mseg.segments, mseg.membership_events TO mseg_export;
GRANT EXECUTE ON FUNCTION
    mseg.define_segment(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text),
    mseg.alter_segment(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text),
    mseg.drop_segment(pg_catalog.text),
    mseg.register_source(pg_catalog.regclass, pg_catalog.text),
    mseg.unregister_source(pg_catalog.regclass),
    mseg.refresh_segments(pg_catalog.text),
    mseg.verify_segments()
TO mseg_admin;
GRANT EXECUTE ON FUNCTION mseg.segment_members(pg_catalog.text) TO mseg_admin, mseg_export;
-- the key behind a subject id (ids are keys for integer-keyed tables)
GRANT EXECUTE ON FUNCTION mseg.subject_key(pg_catalog.int8) TO mseg_admin, mseg_export;
-- sizes reach application roles only as published (noisy, k-suppressed) by the administrator
GRANT SELECT ON mseg.size_publications, mseg.published_sizes, mseg.published_pool_sizes TO mseg_admin;
GRANT EXECUTE ON FUNCTION mseg.publish_segment_sizes() TO mseg_admin;

-- k-anonymity: generalize is harmless (no key) and k-views call it for their readers
GRANT EXECUTE ON FUNCTION
    mseg.generalize(pg_catalog.text, pg_catalog.text, pg_catalog.int4),
    mseg.generalize(pg_catalog.date, pg_catalog.text, pg_catalog.int4),
    mseg.generalize(pg_catalog.int8, pg_catalog.text, pg_catalog.int4)
TO mseg_app, mseg_admin, mseg_export;
-- k-views: their readers need EXECUTE on the function computing the rows (it checks SELECT on
-- the view itself, so calling it directly yields no more than the view); the definitions are
-- for administrators
GRANT EXECUTE ON FUNCTION mseg.kanon_view_rows(pg_catalog.int4) TO mseg_app, mseg_admin, mseg_export;
GRANT SELECT ON mseg.kanon_views TO mseg_admin;
GRANT EXECUTE ON FUNCTION
    mseg.k_anonymity(pg_catalog.regclass, pg_catalog.text[], pg_catalog.int4[], pg_catalog.text),
    mseg.equivalence_classes(pg_catalog.regclass, pg_catalog.text[], pg_catalog.int4[], pg_catalog.text),
    mseg.l_diversity(pg_catalog.regclass, pg_catalog.text, pg_catalog.text[], pg_catalog.int4[], pg_catalog.text),
    mseg.create_kanon_view(pg_catalog.text, pg_catalog.regclass, pg_catalog.int4, pg_catalog.int4[], pg_catalog.text[], pg_catalog.text[], pg_catalog.text)
TO mseg_admin;
GRANT EXECUTE ON FUNCTION
    mseg.anonymize(pg_catalog.regclass, pg_catalog.int4, pg_catalog.text[], pg_catalog.int4, pg_catalog.text, pg_catalog.float8, pg_catalog.text),
    mseg.anonymize_report(pg_catalog.regclass, pg_catalog.int4, pg_catalog.text[], pg_catalog.int4, pg_catalog.text, pg_catalog.float8, pg_catalog.text, pg_catalog.text)
TO mseg_admin, mseg_export;

-- Variant Twins: export and resolve at the controller, import and pooling at the trusted party
GRANT SELECT ON mseg.partners, mseg.partner_exports TO mseg_admin, mseg_export;
GRANT SELECT ON mseg.instance_identity TO mseg_admin;
GRANT EXECUTE ON FUNCTION mseg.accept_copy() TO mseg_admin;
GRANT SELECT ON mseg.controllers, mseg.controller_anchors, mseg.pool_twins, mseg.pool_segments TO mseg_admin;
GRANT SELECT ON mseg.pool_segment_sizes TO mseg_app, mseg_admin, mseg_export;
GRANT EXECUTE ON FUNCTION
    mseg.add_partner(pg_catalog.text, pg_catalog.text[], pg_catalog.int4, pg_catalog.float8),
    mseg.remove_partner(pg_catalog.text),
    mseg.register_controller(pg_catalog.text, pg_catalog.text),
    mseg.import_variant_twins(pg_catalog.text),
    mseg.import_variant_twins_from(pg_catalog.regclass),
    mseg.purge_expired_twins(),
    mseg.define_pool_segment(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text),
    mseg.drop_pool_segment(pg_catalog.text)
TO mseg_admin;
GRANT EXECUTE ON FUNCTION mseg.pool_segment_members(pg_catalog.text) TO mseg_admin, mseg_export;
GRANT EXECUTE ON FUNCTION
    mseg.controller_public_key(),
    mseg.export_variant_twins(pg_catalog.text, pg_catalog.text),
    mseg.resolve(pg_catalog.text, pg_catalog.text[], pg_catalog.text)
TO mseg_admin, mseg_export;

-- linkage (trusted party: OPRF person links; controller: requests and linkage files). The blinds
-- (mseg.link_blinds) are granted to nobody; person links only to mseg_linkage.
GRANT USAGE ON SCHEMA mseg TO mseg_linkage;
GRANT SELECT ON mseg.pool_links TO mseg_linkage;
GRANT SELECT ON mseg.partner_keys, mseg.link_requests, mseg.link_sequences TO mseg_admin;
GRANT EXECUTE ON FUNCTION
    mseg.set_partner_public_key(pg_catalog.text, pg_catalog.text),
    mseg.linkage_evaluate(pg_catalog.regclass),
    mseg.import_linkage(pg_catalog.regclass)
TO mseg_admin;
GRANT EXECUTE ON FUNCTION
    mseg.linkage_request(pg_catalog.text, pg_catalog.text),
    mseg.linkage_finalize(pg_catalog.text, pg_catalog.regclass)
TO mseg_admin, mseg_export;

-- person-level pool segments (trusted party, sql/pool_persons.sql): the persons table shows which
-- twins are one person, so it is read by mseg_linkage only, which also defines person segments
-- (their memberships are computed from the links); their predicates run as mseg_upkeep. The view
-- mseg.pool_twin_persons is the owner's only.
GRANT SELECT, UPDATE (person_segments) ON mseg.pool_persons TO mseg_upkeep;
GRANT SELECT ON mseg.pool_persons, mseg.pool_segments TO mseg_linkage;
GRANT EXECUTE ON FUNCTION
    mseg.define_person_segment(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text),
    mseg.drop_pool_segment(pg_catalog.text),
    mseg.pool_segment_persons(pg_catalog.text)
TO mseg_linkage;
-- the last mile (trusted party: participants, deliveries, responses, rights notices; controller:
-- notice imports and exclusions). The participants' persons (mseg.participant_persons) and the
-- pending notices are granted to nobody; contact handles reach mseg_delivery only, through deliver.
GRANT USAGE ON SCHEMA mseg TO mseg_delivery;
GRANT SELECT ON mseg.partner_exclusions TO mseg_upkeep;
GRANT SELECT ON mseg.participant_columns, mseg.rights_notices_sent, mseg.partner_exclusions, mseg.notice_imports TO mseg_admin;
GRANT SELECT ON mseg.deliveries, mseg.responses TO mseg_admin, mseg_delivery;
GRANT EXECUTE ON FUNCTION
    mseg.set_participant_columns(pg_catalog.text, pg_catalog.text),
    mseg.rights_notices(pg_catalog.text),
    mseg.import_rights_notices(pg_catalog.regclass)
TO mseg_admin;
GRANT EXECUTE ON FUNCTION
    mseg.deliver(pg_catalog.text, pg_catalog.text, pg_catalog.text),
    mseg.record_response(pg_catalog.text, anycompatible, pg_catalog.text)
TO mseg_delivery;
COMMENT ON FUNCTION mseg.set_participant_columns(pg_catalog.text, pg_catalog.text) IS
    'pg_mseg: the participants'' identifier column (its OPRF output is the person) and contact column (trusted party)';
COMMENT ON FUNCTION mseg.deliver(pg_catalog.text, pg_catalog.text, pg_catalog.text) IS
    'pg_mseg: contact handles of a pool segment''s participants processable for the purpose here and at every controller; each person once per campaign; audited';
COMMENT ON FUNCTION mseg.rights_notices(pg_catalog.text) IS
    'pg_mseg: the pending objection and erasure notices for a controller, as a signed file (trusted party)';
COMMENT ON FUNCTION mseg.import_rights_notices(pg_catalog.regclass) IS
    'pg_mseg: verify and apply a partner''s rights notice file: objections recorded, erased subjects never sent to it again (controller)';
