-- A live delivery's first attempt that the receiver answered with a 2xx,
-- the fate of nearly every delivery, is recorded in the delivery's own row
-- (first_*) instead of a row of its own: a row and its primary key entry
-- less for each such delivery (279 bytes of WAL with its two index
-- entries, against 38 more in the delivery's row and an 80-byte entry in
-- deliveries_first_attempt). Every other attempt (a first one that
-- failed, was cut short or was made for a replay, and every later one) is
-- a row of attempt_rows, the former attempts table.
--
-- attempts stays what it was to anyone who reads it: every attempt of
-- every delivery, now a view of both. A delivery's first attempt is in
-- exactly one of them: the row and its first_* columns are written by the
-- one statement that records the attempt (or stores the delivery with it).
ALTER TABLE {{schema}}.attempts RENAME TO attempt_rows;

ALTER TABLE {{schema}}.deliveries
    ADD COLUMN first_started_at   timestamptz,
    ADD COLUMN first_duration_ms  double precision,
    ADD COLUMN first_status_code  integer,
    ADD COLUMN first_snippet      text,
    ADD COLUMN first_sent_by      text;

-- Last fired and the 24-hour success rate read a webhook's attempts by
-- time: the rows' through attempts_webhook_time, the folded ones through
-- this index, which holds only deliveries with a folded first attempt.
CREATE INDEX deliveries_first_attempt ON {{schema}}.deliveries (webhook_id, first_started_at) INCLUDE (first_status_code)
    WHERE first_started_at IS NOT NULL;

CREATE VIEW {{schema}}.attempts AS
    SELECT delivery_id, webhook_id, attempt, started_at, duration_ms, status_code, error,
           response_snippet, sent_by, replay_id
    FROM {{schema}}.attempt_rows
    UNION ALL
    SELECT id, webhook_id, 1, first_started_at, first_duration_ms, first_status_code, NULL::text,
           first_snippet, first_sent_by, NULL::bigint
    FROM {{schema}}.deliveries
    WHERE first_started_at IS NOT NULL;

-- A relay of an earlier version, still running beside one that applied
-- this migration (an upgrade one process at a time), inserts its attempts
-- into attempts and prunes them from there: the view takes both, into and
-- from attempt_rows, so that it records and prunes as before until it is
-- replaced.
CREATE FUNCTION {{schema}}.attempts_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {{schema}}.attempt_rows (delivery_id, webhook_id, attempt, started_at, duration_ms, status_code, error,
                                             response_snippet, sent_by, replay_id)
        VALUES (NEW.delivery_id, NEW.webhook_id, NEW.attempt, NEW.started_at, NEW.duration_ms, NEW.status_code, NEW.error,
                NEW.response_snippet, NEW.sent_by, NEW.replay_id);
        RETURN NEW;
    END IF;
    DELETE FROM {{schema}}.attempt_rows WHERE delivery_id = OLD.delivery_id AND attempt = OLD.attempt;
    RETURN OLD;
END
$$;
CREATE TRIGGER attempts_insert INSTEAD OF INSERT ON {{schema}}.attempts
    FOR EACH ROW EXECUTE FUNCTION {{schema}}.attempts_write();
CREATE TRIGGER attempts_delete INSTEAD OF DELETE ON {{schema}}.attempts
    FOR EACH ROW EXECUTE FUNCTION {{schema}}.attempts_write();

-- Whoever could read the attempts table (a dashboard's role, say) can
-- read the view.
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT DISTINCT a.grantee
             FROM pg_class c, aclexplode(c.relacl) a
             WHERE c.oid = '{{schema}}.attempt_rows'::regclass AND a.privilege_type = 'SELECT' AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT SELECT ON {{schema}}.attempts TO %s',
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END);
    END LOOP;
END
$$;
