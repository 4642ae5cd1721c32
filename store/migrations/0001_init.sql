-- The relay's own state. Every name is qualified with the relay's schema,
-- written here as {{schema}} and substituted (quoted) when the migration runs.

-- Where the change feed stands, per replication slot. state is 'seeding'
-- while the relay creates its slot and records the rows it watches, 'ready'
-- once the slot's starting point and that record are committed together.
CREATE TABLE {{schema}}.checkpoints (
    slot        text        PRIMARY KEY,
    lsn         bigint      NOT NULL DEFAULT 0,
    state       text        NOT NULL CHECK (state IN ('seeding', 'ready')),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The relay's own record of the columns its rules compare (old vs new), per
-- watched row, so that transitions are detected under the platform's default
-- REPLICA IDENTITY. Kept in step with the checkpoint.
CREATE TABLE {{schema}}.row_state (
    slot  text  NOT NULL,
    tbl   text  NOT NULL,
    pk    text  NOT NULL,
    vals  jsonb NOT NULL,
    PRIMARY KEY (slot, tbl, pk)
);

CREATE TABLE {{schema}}.webhooks (
    id           bigserial   PRIMARY KEY,
    company_id   bigint      NOT NULL,
    name         text        NOT NULL,
    url          text        NOT NULL,
    events       text[]      NOT NULL,
    secret       text,
    headers      jsonb       NOT NULL DEFAULT '{}',
    description  text        NOT NULL DEFAULT '',
    active       boolean     NOT NULL DEFAULT true,
    managed_by   text        NOT NULL DEFAULT 'table' CHECK (managed_by IN ('file', 'table')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz
);
CREATE UNIQUE INDEX webhooks_company_name ON {{schema}}.webhooks (company_id, name) WHERE deleted_at IS NULL;
CREATE INDEX webhooks_company ON {{schema}}.webhooks (company_id) WHERE deleted_at IS NULL;

-- One row per mapped event, with its payload bytes fixed at creation.
-- (source, commit_lsn, seq) identifies it across replays of a transaction.
CREATE TABLE {{schema}}.events (
    id            bigserial   PRIMARY KEY,
    source        text        NOT NULL,
    commit_lsn    bigint      NOT NULL,
    seq           integer     NOT NULL,
    event_type    text        NOT NULL,
    company_id    bigint      NOT NULL,
    source_table  text        NOT NULL,
    op            text        NOT NULL,
    committed_at  timestamptz NOT NULL,
    body          bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, commit_lsn, seq)
);
CREATE INDEX events_created ON {{schema}}.events (created_at);

-- One row per (event, webhook): the unit that is delivered, retried and
-- re-fired. id is the X-SMTM-Delivery header, the same for every attempt.
CREATE TABLE {{schema}}.deliveries (
    id                uuid        PRIMARY KEY,
    event_id          bigint      NOT NULL REFERENCES {{schema}}.events(id) ON DELETE CASCADE,
    webhook_id        bigint      NOT NULL REFERENCES {{schema}}.webhooks(id),
    company_id        bigint      NOT NULL,
    event_type        text        NOT NULL,
    status            text        NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'retrying', 'delivered', 'failed')),
    attempts          integer     NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    lease_owner       text,
    lease_until       timestamptz,
    last_status_code  integer,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    UNIQUE (event_id, webhook_id)
);
CREATE INDEX deliveries_due ON {{schema}}.deliveries (next_attempt_at) WHERE status IN ('pending', 'retrying');
CREATE INDEX deliveries_webhook ON {{schema}}.deliveries (webhook_id, created_at DESC);
CREATE INDEX deliveries_finished ON {{schema}}.deliveries (status, finished_at) WHERE status IN ('delivered', 'failed');

-- Every attempt of every delivery.
CREATE TABLE {{schema}}.attempts (
    id                bigserial   PRIMARY KEY,
    delivery_id       uuid        NOT NULL REFERENCES {{schema}}.deliveries(id) ON DELETE CASCADE,
    webhook_id        bigint      NOT NULL,
    attempt           integer     NOT NULL,
    started_at        timestamptz NOT NULL,
    duration_ms       double precision NOT NULL,
    status_code       integer,
    error             text,
    response_snippet  text,
    UNIQUE (delivery_id, attempt)
);
CREATE INDEX attempts_webhook_time ON {{schema}}.attempts (webhook_id, started_at);

-- Admins may edit webhooks with plain SQL: keep updated_at true regardless.
CREATE FUNCTION {{schema}}.touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER webhooks_touch BEFORE UPDATE ON {{schema}}.webhooks
    FOR EACH ROW EXECUTE FUNCTION {{schema}}.touch_updated_at();
