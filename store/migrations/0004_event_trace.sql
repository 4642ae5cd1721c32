-- The W3C traceparent of the trace each event belongs to, written when the
-- event is stored. Every attempt of every delivery of the event continues
-- that trace, also minutes later and after a restart. NULL when the event
-- was stored while tracing was off.
ALTER TABLE {{schema}}.events
    ADD COLUMN traceparent text;
