-- A receiver that answers 429 or 503 with Retry-After asks the relay to
-- wait: until then no relay claims or leases the webhook's deliveries, and
-- new ones are due no earlier. One row per webhook that asked, kept apart
-- from webhooks so that it does not count as an edit of the webhook.
CREATE TABLE {{schema}}.webhook_pauses (
    webhook_id bigint      PRIMARY KEY REFERENCES {{schema}}.webhooks(id),
    until      timestamptz NOT NULL
);
