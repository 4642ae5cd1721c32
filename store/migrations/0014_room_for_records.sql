-- A delivery's record (its status, attempts and times) writes a new
-- version of its row soon after the row was stored. With pages filled to
-- 75%, the room left held the new versions of about a third of a page's
-- rows: the others went to another page, each first marked locked in a
-- WAL record of its own while PostgreSQL looked for room (0.44 per
-- delivery in the fan-out scenario). Filled to half, a page keeps a new
-- version of every row it holds. Applies to pages written from now on.
ALTER TABLE {{schema}}.deliveries SET (fillfactor = 50);
