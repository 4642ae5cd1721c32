-- Claims look for due deliveries webhook by webhook (so that a webhook with
-- a large backlog, or one at its concurrency limit, costs the others
-- nothing): the due deliveries of one webhook, oldest first.
CREATE INDEX deliveries_due_by_webhook ON {{schema}}.deliveries (webhook_id, next_attempt_at)
    WHERE status IN ('pending', 'retrying');
