-- Delivery ids derived from what they deliver: the same source event and
-- webhook give the same id on every replay of the change feed. Events and
-- their deliveries are committed without waiting for the disk, and their
-- first attempts start at once; a PostgreSQL crash can forget such a
-- commit after its deliveries were sent, and the replay that stores them
-- again must send them under the same X-SMTM-Delivery.
--
-- The layout is that of UUID version 7 (RFC 9562): 48 bits of Unix
-- milliseconds first (the source commit's, so new ids still land at the
-- right edge of the primary keys), then the version, 8, since the rest is
-- not random but the first bits of a SHA-256 of the event's place in the
-- feed and the webhook, keyed with this installation's own random key so
-- that nobody outside can work out an id.
CREATE TABLE {{schema}}.installation (
    one          boolean PRIMARY KEY DEFAULT true CHECK (one),
    delivery_key bytea   NOT NULL
);
INSERT INTO {{schema}}.installation (delivery_key)
    VALUES (uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));

-- uuid_from lays out a delivery id: ms, then the first bits of h.
CREATE FUNCTION {{schema}}.uuid_from(h bytea, ms bigint) RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(
        set_byte(set_byte(
            overlay(substring(h FROM 1 FOR 16) PLACING substring(int8send(ms) FROM 3) FROM 1 FOR 6),
            6, (get_byte(h, 6) & 15) | 128),   -- version 8
        8, (get_byte(h, 8) & 63) | 128),       -- variant 10 (RFC 9562)
        'hex')::uuid
$$;

CREATE FUNCTION {{schema}}.delivery_id(key bytea, source text, commit_lsn bigint, seq int, webhook bigint, committed_at timestamptz)
RETURNS uuid LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT {{schema}}.uuid_from(
        sha256(key || int8send(commit_lsn) || int4send(seq) || int8send(webhook) || convert_to(source, 'UTF8')),
        floor(extract(epoch FROM committed_at) * 1000)::bigint)
$$;
