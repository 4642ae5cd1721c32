-- Each running sender says it is alive every second or so. A relay that
-- knows it is alone may hold deliveries as ids beyond what it keeps in
-- memory (the cheaper path for a burst); with peers, it leaves them for
-- claims, so that every relay shares the work.
CREATE TABLE {{schema}}.senders (
    owner   text        PRIMARY KEY,
    seen_at timestamptz NOT NULL
);
