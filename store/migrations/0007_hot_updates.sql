-- Leave room in each page so that the updates made most often can be HOT
-- (heap-only: no index entry written) when they change no indexed column:
-- a claim of a delivery (lease columns only) and a row state change (vals
-- only). Applies to pages written from now on.
ALTER TABLE {{schema}}.deliveries SET (fillfactor = 75);
ALTER TABLE {{schema}}.row_state SET (fillfactor = 75);

-- deliveries_due_by_webhook (0005) has the same predicate and leads with
-- webhook_id: claims and the pending counts use it; this one only cost
-- writes.
DROP INDEX {{schema}}.deliveries_due;

-- Attempts are written once per attempt, the relay's most frequent insert:
-- keep one index for lookups by delivery (now the primary key, replacing a
-- surrogate id nothing read), and no foreign key, whose check locked the
-- delivery row for every attempt. Prune deletes a delivery's attempts with
-- it.
ALTER TABLE {{schema}}.attempts DROP CONSTRAINT attempts_delivery_id_fkey;
ALTER TABLE {{schema}}.attempts DROP CONSTRAINT attempts_pkey;
ALTER TABLE {{schema}}.attempts DROP COLUMN id;
ALTER TABLE {{schema}}.attempts DROP CONSTRAINT attempts_delivery_id_attempt_key;
ALTER TABLE {{schema}}.attempts ADD PRIMARY KEY (delivery_id, attempt);

-- The same for deliveries' reference to their event, checked on every
-- delivery insert: the relay is the only writer of both tables, and prune
-- deletes an event only once no delivery refers to it.
ALTER TABLE {{schema}}.deliveries DROP CONSTRAINT deliveries_event_id_fkey;

-- Deliveries stored by one transaction share their next_attempt_at, so
-- their entries in the claims' index are equal: deduplicated into one
-- posting list, an entry whose delivery was sent cannot be marked dead on
-- its own, and every claim walks all the sent ones again until vacuum runs
-- (a cost that grows with the backlog). Kept apart, each is skipped once.
ALTER INDEX {{schema}}.deliveries_due_by_webhook SET (deduplicate_items = off);
REINDEX INDEX {{schema}}.deliveries_due_by_webhook;

-- Listing a webhook's deliveries newest first reads one range of
-- deliveries_webhook_status per status and merges them, so this index only
-- cost every stored and every recorded delivery an entry.
DROP INDEX {{schema}}.deliveries_webhook;
