-- How a webhook's requests carry the event: 'raw' is the guide's payload,
-- byte for byte (every webhook saved before this migration); 'slack' and
-- 'teams' render it as a Slack incoming-webhook message or a Microsoft
-- Teams message with an Adaptive Card (package message). The relay renders
-- at each attempt, signs what it renders and sends that.
ALTER TABLE {{schema}}.webhooks
    ADD COLUMN format text NOT NULL DEFAULT 'raw'
    CONSTRAINT webhooks_format_known CHECK (format IN ('raw', 'slack', 'teams'));

COMMENT ON COLUMN {{schema}}.webhooks.format IS
    'Request body: raw (the event payload as stored), slack or teams (a chat message rendered from it)';
