-- pg_mseg last mile at the trusted party: participants (data subjects registered with the trusted
-- party itself), deliveries of a pool segment to them, their responses, and the rights notices
-- that carry their objections and erasures back to the controllers (src/participants.rs,
-- src/notices.rs, docs/architecture.md "The last mile").

-- Trusted-party side: which columns of the registered subject table (the participants) give the
-- person (the matching identifier, OPRF-evaluated with this party's key) and the contact handle.
CREATE TABLE mseg.participant_columns (
    only_row   pg_catalog.bool PRIMARY KEY DEFAULT true CHECK (only_row),
    relid      pg_catalog.regclass NOT NULL,
    identifier pg_catalog.name NOT NULL,
    contact    pg_catalog.name NOT NULL,
    set_at     pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE mseg.participant_columns IS 'pg_mseg: the participants'' identifier and contact columns (trusted party)';

-- Trusted-party side: the person of each participant (the OPRF output of its normalised
-- identifier, as in mseg.pool_links), kept exact by the trigger zz_mseg_participant_persons on the
-- participants table. subject_ref (the ledger's reference) finds the person of an objection.
-- Readable by the owner only.
CREATE TABLE mseg.participant_persons (
    subject_key pg_catalog.int8 PRIMARY KEY,
    subject_ref pg_catalog.text COLLATE "C" NOT NULL,
    person      pg_catalog.text COLLATE "C" NOT NULL
);
CREATE INDEX participant_persons_person ON mseg.participant_persons (person);
CREATE INDEX participant_persons_ref ON mseg.participant_persons (subject_ref);
COMMENT ON TABLE mseg.participant_persons IS 'pg_mseg: the person (OPRF output) of each participant (readable by no role)';

-- Trusted-party side: who each campaign reached (a participant once per campaign).
CREATE TABLE mseg.deliveries (
    campaign     pg_catalog.text NOT NULL,
    subject_key  pg_catalog.int8 NOT NULL,
    pool_segment pg_catalog.text NOT NULL,
    purpose      pg_catalog.text NOT NULL,
    delivered_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (campaign, subject_key)
);
COMMENT ON TABLE mseg.deliveries IS 'pg_mseg: participants each campaign reached (trusted party)';

-- Trusted-party side: responses of reached participants ("raise hand").
CREATE TABLE mseg.responses (
    campaign     pg_catalog.text NOT NULL,
    subject_key  pg_catalog.int8 NOT NULL,
    response     pg_catalog.text NOT NULL,
    responded_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (campaign, subject_key, response),
    FOREIGN KEY (campaign, subject_key) REFERENCES mseg.deliveries (campaign, subject_key) ON DELETE CASCADE
);
COMMENT ON TABLE mseg.responses IS 'pg_mseg: responses of participants a campaign reached (trusted party)';

-- Trusted-party side: rights notices not yet sent, one line each: the pseudonym (in the
-- controller's partner domain) of a twin linked to a participant who objected or asked for
-- erasure. Nothing else of the participant is kept for it; sent lines are deleted.
CREATE TABLE mseg.rights_notice_queue (
    controller pg_catalog.text COLLATE "C" NOT NULL,
    pseudonym  pg_catalog.text COLLATE "C" NOT NULL,
    kind       pg_catalog.text NOT NULL CHECK (kind OPERATOR(pg_catalog.=) ANY ('{objection,erasure}'::pg_catalog.text[])),
    purpose    pg_catalog.text,   -- objections only
    queued_at  pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CHECK ((purpose IS NULL) OPERATOR(pg_catalog.=) (kind OPERATOR(pg_catalog.=) 'erasure'))
);
CREATE INDEX rights_notice_queue_controller ON mseg.rights_notice_queue (controller);
COMMENT ON TABLE mseg.rights_notice_queue IS 'pg_mseg: rights notices waiting to be sent to controllers (readable by no role)';

-- Trusted-party side: the notice files sent, per controller (sequence per controller).
CREATE TABLE mseg.rights_notices_sent (
    controller pg_catalog.text COLLATE "C" NOT NULL,
    sequence   pg_catalog.int8 NOT NULL,
    objections pg_catalog.int4 NOT NULL,
    erasures   pg_catalog.int4 NOT NULL,
    sha256     pg_catalog.text NOT NULL,
    sent_at    pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (controller, sequence)
);
COMMENT ON TABLE mseg.rights_notices_sent IS 'pg_mseg: rights notice files sent to controllers (counts only)';

-- Controller side: subjects a partner must never receive again (a participant's erasure there).
CREATE TABLE mseg.partner_exclusions (
    partner         pg_catalog.text NOT NULL REFERENCES mseg.partners(name) ON DELETE CASCADE,
    subject_key     pg_catalog.int8 NOT NULL,
    notice_sequence pg_catalog.int8 NOT NULL,
    excluded_at     pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (partner, subject_key)
);
COMMENT ON TABLE mseg.partner_exclusions IS 'pg_mseg: subjects never sent to a partner again (erasure notices from it)';

-- Controller side: the rights notice files imported, per partner.
CREATE TABLE mseg.notice_imports (
    partner     pg_catalog.text NOT NULL REFERENCES mseg.partners(name) ON DELETE CASCADE,
    sequence    pg_catalog.int8 NOT NULL,
    sha256      pg_catalog.text NOT NULL,
    counts      pg_catalog.jsonb NOT NULL,
    imported_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (partner, sequence)
);
COMMENT ON TABLE mseg.notice_imports IS 'pg_mseg: rights notice files imported from partners (counts only)';

SELECT pg_catalog.pg_extension_config_dump('mseg.participant_columns', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.participant_persons', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.responses', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.rights_notice_queue', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.rights_notices_sent', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.partner_exclusions', '');
SELECT pg_catalog.pg_extension_config_dump('mseg.notice_imports', '');

-- Row trigger on the participants table: keeps mseg.participant_persons exact (insert, change of
-- the identifier or key, delete, truncate). SECURITY DEFINER: whoever writes participants reaches
-- the owner-only table and the OPRF evaluation (mseg._participant_person), never the key; it runs
-- no caller code (only the key and identifier columns are read, by name, as text through their
-- types' output functions: format('%s'), never a cast, which a type's owner could define).
CREATE FUNCTION mseg._participant_persons_sync()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c mseg.participant_columns;
    t record;
    v_key pg_catalog.text;
    v_identifier pg_catalog.text;
    v_person pg_catalog.text;
    v_id pg_catalog.int8;
BEGIN
    SELECT * INTO c FROM mseg.participant_columns;
    IF c.relid IS NULL OR c.relid OPERATOR(pg_catalog.<>) TG_RELID THEN
        RETURN NULL;   -- only the participants table
    END IF;
    t := mseg._subject_table();
    IF TG_OP OPERATOR(pg_catalog.=) 'TRUNCATE' THEN
        DELETE FROM mseg.participant_persons;
        RETURN NULL;
    END IF;
    IF TG_OP OPERATOR(pg_catalog.=) ANY ('{UPDATE,DELETE}'::pg_catalog.text[]) THEN
        EXECUTE pg_catalog.format('SELECT pg_catalog.format(''%%s'', ($1).%I)', t.key_column) INTO v_key USING OLD;
        DELETE FROM mseg.participant_persons p WHERE p.subject_key OPERATOR(pg_catalog.=) mseg._subject_id(v_key);
    END IF;
    IF TG_OP OPERATOR(pg_catalog.=) ANY ('{INSERT,UPDATE}'::pg_catalog.text[]) THEN
        EXECUTE pg_catalog.format('SELECT pg_catalog.format(''%%s'', ($1).%I), pg_catalog.format(''%%s'', ($1).%I)', t.key_column, c.identifier)
            INTO v_key, v_identifier USING NEW;
        v_person := mseg._participant_person(v_identifier);
        v_id := mseg._subject_id(v_key);
        IF v_person IS NOT NULL AND v_id IS NOT NULL THEN
            INSERT INTO mseg.participant_persons AS p (subject_key, subject_ref, person)
            VALUES (v_id, mseg._subject_ref(v_key), v_person)
            ON CONFLICT (subject_key) DO UPDATE SET subject_ref = EXCLUDED.subject_ref, person = EXCLUDED.person;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

-- Trigger on the ledger: a participant's objection queues an objection notice for every twin
-- linked to the participant's person (every controller holding one). Erasures are queued by
-- mseg.forget itself (src/notices.rs, before the row goes).
CREATE FUNCTION mseg._queue_objection_notices()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO mseg.rights_notice_queue (controller, pseudonym, kind, purpose)
    SELECT DISTINCT l.controller, l.pseudonym, 'objection', NEW.purpose
    FROM mseg.participant_persons p
    JOIN mseg.pool_links l ON l.person OPERATOR(pg_catalog.=) p.person
    WHERE p.subject_ref OPERATOR(pg_catalog.=) NEW.subject_ref
      AND NOT EXISTS (SELECT 1 FROM mseg.rights_notice_queue q
                      WHERE q.controller OPERATOR(pg_catalog.=) l.controller AND q.pseudonym OPERATOR(pg_catalog.=) l.pseudonym
                        AND q.kind OPERATOR(pg_catalog.=) 'objection' AND q.purpose OPERATOR(pg_catalog.=) NEW.purpose);
    RETURN NULL;
END
$$;
CREATE TRIGGER mseg_rights_notices AFTER INSERT ON mseg.consent_events
    FOR EACH ROW WHEN (NEW.event OPERATOR(pg_catalog.=) 'object' AND NEW.purpose IS NOT NULL)
    EXECUTE FUNCTION mseg._queue_objection_notices();

-- A response of a participant the campaign reached (key of any type, like the consent functions).
CREATE FUNCTION mseg.record_response(campaign pg_catalog.text, participant anycompatible,
                                     response pg_catalog.text DEFAULT 'raise_hand')
RETURNS pg_catalog.bool LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN mseg._record_response($1, $2::pg_catalog.text, $3); END $$;
COMMENT ON FUNCTION mseg.record_response(pg_catalog.text, anycompatible, pg_catalog.text) IS
    'pg_mseg: record a response (default raise_hand) of a participant the campaign reached; false if already recorded';
