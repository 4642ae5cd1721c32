-- A re-fired delivery starts a new series of attempts under the retry
-- schedule while its attempt numbers keep increasing. retry_base is the
-- number of attempts made before the current series began (0 until the
-- first re-fire); the schedule counts attempts - retry_base.
ALTER TABLE {{schema}}.deliveries
    ADD COLUMN retry_base integer NOT NULL DEFAULT 0;
