-- Every change made through the admin API (and every test event sent), for
-- the guide's "history is retained in the audit log". Rows are never
-- updated or deleted by the relay; they outlive the webhooks they describe
-- (no foreign key), and secrets never appear in them: before/after hold the
-- webhook with its secret replaced by a marker and header values masked.
CREATE TABLE {{schema}}.audit_log (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    company_id  bigint,
    action      text        NOT NULL,
    webhook_id  bigint,
    delivery_id uuid,
    before      jsonb,
    after       jsonb,
    details     jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_webhook ON {{schema}}.audit_log (webhook_id, at DESC);
CREATE INDEX audit_log_company ON {{schema}}.audit_log (company_id, at DESC);

-- The admin API lists a webhook's deliveries newest first, by status.
CREATE INDEX deliveries_webhook_status ON {{schema}}.deliveries (webhook_id, status, created_at DESC, id DESC);
