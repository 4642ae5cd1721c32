-- Replays: an admin asks for the stored events of a time range to be
-- delivered again to one webhook (a receiver that is new, or was broken).
-- A replay is a job that any relay may run, one at a time (lease_owner and
-- lease_until, as deliveries are claimed); it arms deliveries batch by
-- batch, walking the events by id, and commits each batch with how far it
-- got (cursor_id), so that a relay that dies in the middle leaves the rest to
-- the next one and nothing is armed twice.
CREATE TABLE {{schema}}.replays (
    id            bigserial   PRIMARY KEY,
    webhook_id    bigint      NOT NULL,
    company_id    bigint      NOT NULL,
    range_from    timestamptz NOT NULL,
    range_to      timestamptz NOT NULL,
    requested_by  text        NOT NULL,
    state         text        NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'running', 'done', 'cancelled', 'failed')),
    -- The events the range held when the replay was created: ids up to
    -- last_event (events stored later had their own deliveries), of which
    -- total matched the webhook's subscription then.
    last_event    bigint      NOT NULL,
    total         bigint      NOT NULL,
    -- The last event id looked at; the walk goes on after it.
    cursor_id     bigint      NOT NULL DEFAULT 0,
    -- armed: deliveries made due again or created; skipped: events not
    -- sent (a delivery of theirs to the webhook still pending, a type no
    -- longer subscribed, filtered out).
    armed         bigint      NOT NULL DEFAULT 0,
    skipped       bigint      NOT NULL DEFAULT 0,
    error         text,
    lease_owner   text,
    lease_until   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    CHECK (range_from < range_to)
);
CREATE INDEX replays_webhook ON {{schema}}.replays (webhook_id, id DESC);
-- One replay at a time per webhook: its bound on due deliveries
-- (replay.per_webhook) is the webhook's.
CREATE UNIQUE INDEX replays_one_active ON {{schema}}.replays (webhook_id) WHERE state IN ('queued', 'running');
-- Replays still to run, or cancelled ones whose last deliveries are still
-- to be cancelled (finished_at IS NULL).
CREATE INDEX replays_unfinished ON {{schema}}.replays (id) WHERE finished_at IS NULL;

-- A delivery armed by a replay names it until it is re-fired; every
-- attempt names the replay it was made for. NULL for live deliveries,
-- which so cost the index below nothing.
ALTER TABLE {{schema}}.deliveries ADD COLUMN replay_id bigint;
ALTER TABLE {{schema}}.attempts ADD COLUMN replay_id bigint;
CREATE INDEX deliveries_replay ON {{schema}}.deliveries (replay_id, status) WHERE replay_id IS NOT NULL;

-- A replay counts and walks the events of its range by the time they were
-- committed: a block range index, as for created_at (0009), costs the
-- writes next to nothing.
CREATE INDEX events_committed ON {{schema}}.events USING brin (committed_at) WITH (autosummarize = on);
