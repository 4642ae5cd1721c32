-- The relay's record of a row is written and read only by the relay, as
-- the JSON text it encodes and parses itself (appendRow, parseRow): kept
-- as text, PostgreSQL no longer parses it into jsonb on every write and
-- prints it back on every read, about a microsecond of its CPU per row
-- (a large transaction writes and reads one per changed row). The values
-- already stored are kept as jsonb printed them, which the relay parses
-- alike. This rewrites the table once.
ALTER TABLE {{schema}}.row_state ALTER COLUMN vals TYPE text USING vals::text;
