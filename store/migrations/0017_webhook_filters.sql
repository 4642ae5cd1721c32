-- A webhook's filter: a condition over the event (mapper.CompileFilter)
-- that the relay evaluates before it creates a delivery; NULL sends every
-- event the webhook subscribes to. Each write of events checks, in the
-- statement that fans them out, that the filters it evaluated are the
-- webhooks' current ones, through the index below (empty when no webhook
-- has a filter, so the check costs the others one probe).
ALTER TABLE {{schema}}.webhooks ADD COLUMN filter text;
CREATE INDEX webhooks_filtered ON {{schema}}.webhooks (company_id) WHERE filter IS NOT NULL AND deleted_at IS NULL;
COMMENT ON COLUMN {{schema}}.webhooks.filter IS
    'Condition over the event payload (event, company_id, company_name, timestamp, data.*); NULL: every subscribed event';
