-- A large source transaction's events are stored in parts, each committed
-- with how far into the transaction it got, while the transaction's row
-- state and the slot's position are committed at its end. A relay that
-- streams the transaction again after a crash maps the changes before
-- that point for their row state only and numbers the rest from next_seq,
-- so that no event is stored twice or skipped. The row goes with the
-- commit that moves the position past the transaction.
CREATE TABLE {{schema}}.parts (
    slot       text   NOT NULL,
    commit_lsn bigint NOT NULL,
    changes    bigint NOT NULL,
    next_seq   int    NOT NULL,
    PRIMARY KEY (slot, commit_lsn)
);
