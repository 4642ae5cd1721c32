-- Standard Webhooks, per webhook: requests also carry webhook-id,
-- webhook-timestamp and webhook-signature (docs/SIGNATURES.md).
ALTER TABLE {{schema}}.webhooks ADD COLUMN standard_webhooks boolean NOT NULL DEFAULT false;

-- Secret rotation without downtime: the secret a rotation replaced, sealed
-- as secret is, still signs (beside the new one) until previous_secret_until.
-- The relay sets both to NULL once that time has passed.
ALTER TABLE {{schema}}.webhooks ADD COLUMN previous_secret text;
ALTER TABLE {{schema}}.webhooks ADD COLUMN previous_secret_until timestamptz;
ALTER TABLE {{schema}}.webhooks ADD CONSTRAINT webhooks_previous_secret_has_end
    CHECK ((previous_secret IS NULL) = (previous_secret_until IS NULL));

COMMENT ON COLUMN {{schema}}.webhooks.previous_secret IS
    'The secret replaced by the last rotation, sealed with secrets.key when one is set; signs beside secret until previous_secret_until';
