-- The version of the webhooks and their pauses: every change to
-- webhooks or webhook_pauses moves it, so a relay that decides which
-- webhooks take an event from a copy of them held in memory (to send the
-- first attempts before the deliveries are stored) can check that its copy
-- is still the current one, and read it again when it is not. Where
-- logical decoding can see it, the change is also announced in the change
-- feed (a logical decoding message with the prefix smtm_relay_webhooks).
--
-- The triggers fire once per statement. A statement that changes no row
-- (an UPDATE whose WHERE matches nothing, such as the periodic forgetting
-- of ended secret rotations when none has ended) leaves the version alone,
-- so that it does not make every copy stale for nothing; TRUNCATE always
-- moves it.
CREATE TABLE {{schema}}.webhooks_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint  NOT NULL
);
INSERT INTO {{schema}}.webhooks_version (version) VALUES (1);

-- changed is the statement's transition table (see the triggers below);
-- a TRUNCATE has none, and the query of it must not even be planned then.
CREATE FUNCTION {{schema}}.webhooks_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'TRUNCATE' THEN
        IF NOT EXISTS (SELECT 1 FROM changed) THEN
            RETURN NULL;
        END IF;
    END IF;
    UPDATE {{schema}}.webhooks_version SET version = version + 1;
    -- Said in the change feed too, in the change's place among the
    -- platform's transactions: a relay whose state is in the database it
    -- streams learns of the change before any transaction committed after
    -- it, without asking.
    IF current_setting('wal_level') = 'logical' THEN
        PERFORM pg_logical_emit_message(true, 'smtm_relay_webhooks', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER webhooks_version_insert AFTER INSERT ON {{schema}}.webhooks
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.webhooks_version_bump();
CREATE TRIGGER webhooks_version_update AFTER UPDATE ON {{schema}}.webhooks
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.webhooks_version_bump();
CREATE TRIGGER webhooks_version_delete AFTER DELETE ON {{schema}}.webhooks
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.webhooks_version_bump();
CREATE TRIGGER webhooks_version_truncate AFTER TRUNCATE ON {{schema}}.webhooks
    FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.webhooks_version_bump();

CREATE TRIGGER webhooks_version_insert AFTER INSERT ON {{schema}}.webhook_pauses
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.webhooks_version_bump();
CREATE TRIGGER webhooks_version_update AFTER UPDATE ON {{schema}}.webhook_pauses
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.webhooks_version_bump();
CREATE TRIGGER webhooks_version_delete AFTER DELETE ON {{schema}}.webhook_pauses
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.webhooks_version_bump();
CREATE TRIGGER webhooks_version_truncate AFTER TRUNCATE ON {{schema}}.webhook_pauses
    FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.webhooks_version_bump();
