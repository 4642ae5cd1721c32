-- Cancelling a replay gives the deliveries it armed but had not sent yet
-- back the state they had before it: a delivered event stays delivered, a
-- failed one failed with its earlier error, so that a cancel rewrites
-- neither the history nor the failed list. replay_prior is that state,
-- kept when a replay re-arms a finished delivery (status, retry_base,
-- finished_at, next_attempt_at, last_status_code, last_error and the
-- replay_id it had); NULL for live deliveries and for those a replay
-- created, which a cancel removes when no attempt of theirs was made. It
-- is left in place once the replay's attempt is made (the next replay
-- overwrites it; no statement reads it then).
ALTER TABLE {{schema}}.deliveries ADD COLUMN replay_prior jsonb;

-- How many of a replay's deliveries its cancel gave back their earlier
-- state or removed, unsent.
ALTER TABLE {{schema}}.replays ADD COLUMN withdrawn bigint NOT NULL DEFAULT 0;
