-- Every delivery insert checked its webhook's row (a FOR KEY SHARE lookup
-- through a trigger, about a tenth of the insert's cost). Webhooks are
-- never deleted, only marked deleted (deleted_at), and deliveries are
-- created only for webhooks read in the same statement.
ALTER TABLE {{schema}}.deliveries DROP CONSTRAINT deliveries_webhook_id_fkey;

-- Only prune reads events by age, and their ages follow the order in which
-- they are written: a block range index answers it, at a fraction of a
-- B-tree's cost per insert.
DROP INDEX {{schema}}.events_created;
CREATE INDEX events_created ON {{schema}}.events USING brin (created_at) WITH (autosummarize = on);
