-- Time-ordered delivery ids (UUID version 7, RFC 9562): 48 bits of Unix
-- milliseconds, then the version, then random bits. New deliveries' ids,
-- and so their attempts' keys, land at the right edge of the primary keys
-- instead of on random pages of ever larger indexes; recording an attempt
-- touches pages its delivery's insert touched moments before. The ids stay
-- unique and unguessable enough for what they are (an idempotency key and
-- a handle in the admin API, which checks the company on every lookup).
CREATE FUNCTION {{schema}}.uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1),
        53, 1),
        'hex')::uuid
$$;
