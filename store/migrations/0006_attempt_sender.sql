-- Which relay process made each attempt (its lease owner name: host, pid and
-- a random suffix), so that an operator running several relays can tell
-- which instance called a receiver. NULL for attempts recorded before.
ALTER TABLE {{schema}}.attempts ADD COLUMN sent_by text;
