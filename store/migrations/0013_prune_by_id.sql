-- Prune found old finished deliveries through an index on (status,
-- finished_at), which cost every recorded delivery an entry (its status is
-- in the key, so a record is never a HOT update of that index) and about
-- 80 bytes of WAL. Delivery ids are time-ordered (0008, 0012): their first
-- 48 bits are Unix milliseconds no later than the delivery's end (the
-- store's clock, or the source commit's time), so prune walks the primary
-- key up to its cutoff instead.
DROP INDEX {{schema}}.deliveries_finished;

-- Ids stored before 0008 were random (version 4) and say nothing about
-- time: while any is left, prune also reads the whole table for them.
ALTER TABLE {{schema}}.installation ADD COLUMN random_ids boolean NOT NULL DEFAULT false;
UPDATE {{schema}}.installation
    SET random_ids = EXISTS (SELECT 1 FROM {{schema}}.deliveries WHERE substr(id::text, 15, 1) = '4');
