-- With secrets.key set, the relay stores each header value sealed, as it
-- does secrets ("enc:v1:<key id>:<base64>"); header names stay in clear. The
-- key is the relay's, not the database's, so the relay itself seals the
-- values already stored, at its next start (ResealSecrets); this migration
-- makes every stored value one it can seal: text.
--
-- A value stored as another JSON type (a number written in SQL) becomes
-- the text the relay sent for it; a null, never sent, is dropped; a column
-- that is not an object, which sent nothing, becomes the empty object.
UPDATE {{schema}}.webhooks
SET headers = CASE
        WHEN jsonb_typeof(headers) <> 'object' THEN '{}'::jsonb
        ELSE coalesce((
            SELECT jsonb_object_agg(key, CASE jsonb_typeof(value) WHEN 'string' THEN value ELSE to_jsonb(value::text) END)
            FROM jsonb_each(headers)
            WHERE jsonb_typeof(value) <> 'null'), '{}'::jsonb)
    END
WHERE jsonb_typeof(headers) <> 'object'
   OR jsonb_path_exists(headers, '$.* ? (@.type() != "string")');

-- From now on a write that would store anything else is refused.
ALTER TABLE {{schema}}.webhooks ADD CONSTRAINT webhooks_headers_are_text
    CHECK (jsonb_typeof(headers) = 'object' AND NOT jsonb_path_exists(headers, '$.* ? (@.type() != "string")'));

COMMENT ON COLUMN {{schema}}.webhooks.headers IS
    'Extra request headers: name (in clear) to value; each value sealed with secrets.key when one is set';
