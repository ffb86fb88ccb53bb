-- geoprov PostgreSQL schema, version 3: the lineage edges move into the events' rows.
--
-- Applied by `geoprov migrate` inside one transaction, under the migration's advisory lock,
-- together with its row in schema_migrations. Stop schema-2 workers before upgrading (they
-- refuse a newer schema anyway).
--
-- WHY. Schema 1 kept one lineage_edges row per (input, output) pair, with a btree index on each
-- end: about two heap rows and four random uuid index entries per event, which was most of the
-- database's work on the write path (measured: 200,000 events with their edges took 2.8 s of
-- server time, the events alone 1.2-1.3 s). An event's edges are exactly its distinct inputs x
-- its distinct outputs, so the row itself can carry them as two uuid[] columns, written by the
-- same COPY as the rest of the row, and indexed by GIN, whose fast-update pending list turns
-- each insert into an append and merges the keys in sorted bulk later (the same 200,000 events:
-- 1.9 s). A walk looks a frontier of datasets up with `outputs && $1` (upstream) or
-- `inputs && $1` (downstream). The lineage_edges view below shows the same pairs as the old
-- table, for ad-hoc SQL.
--
-- The columns are covered by the events' append-only trigger like every other column; the
-- adoption exception (a row without a position gets its geoprov columns once) covers them too.

ALTER TABLE lineage_events
    ADD COLUMN IF NOT EXISTS inputs  uuid[],   -- distinct, sorted; edges = inputs x outputs
    ADD COLUMN IF NOT EXISTS outputs uuid[];   -- distinct, sorted (the dataset when not sent)

-- Rows written by schema 2 take their pairs from lineage_edges. A row that had no edges (an
-- event without inputs) keeps NULL in both columns, which a walk reads as "no edges", as before.
-- The trigger is disabled for this one update and enabled again before the commit, so nobody
-- ever sees it off.
ALTER TABLE lineage_events DISABLE TRIGGER lineage_events_append_only;
UPDATE lineage_events AS e
SET inputs = x.inputs, outputs = x.outputs
FROM (
    SELECT event_id,
           array_agg(DISTINCT from_uuid ORDER BY from_uuid) AS inputs,
           array_agg(DISTINCT to_uuid ORDER BY to_uuid) AS outputs
    FROM lineage_edges
    GROUP BY event_id
) AS x
WHERE e.event_id = x.event_id;
ALTER TABLE lineage_events ENABLE TRIGGER lineage_events_append_only;

DROP TABLE lineage_edges;

-- GIN's fast update appends each new row's keys to a pending list, which must later be merged
-- into the index proper. Left to itself, the insert that overflows the list (4 MB by default)
-- merges it, and in geoprov that insert holds the log lock, so every other worker waits for
-- the merge. Instead the store merges the lists itself, from a connection that holds no lock,
-- every few thousand events (geoprov_clean_edge_indexes below; measured: +15% end to end), and
-- the larger limit here is only the backstop for when that does not keep up. A walk reads the
-- pending list too, so it stays small: a few MB at most in normal running.
CREATE INDEX lineage_events_inputs ON lineage_events USING gin (inputs)
    WITH (gin_pending_list_limit = 16384);
CREATE INDEX lineage_events_outputs ON lineage_events USING gin (outputs)
    WITH (gin_pending_list_limit = 16384);

-- gin_clean_pending_list() may only be run by an index's owner; this function lets a
-- least-privilege worker role run it on these two indexes and nothing else (EXECUTE is granted
-- to PUBLIC, as for any function). The index names are fixed, with their schema, when the
-- function is created, and the search path is pinned, so a caller cannot point it elsewhere.
DO $$
BEGIN
    EXECUTE format(
        'CREATE FUNCTION geoprov_clean_edge_indexes() RETURNS bigint '
        'LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS %L',
        format(
            'SELECT pg_catalog.gin_clean_pending_list(%L::pg_catalog.regclass) '
            '+ pg_catalog.gin_clean_pending_list(%L::pg_catalog.regclass)',
            format('%I.%I', current_schema(), 'lineage_events_inputs'),
            format('%I.%I', current_schema(), 'lineage_events_outputs')
        )
    );
END;
$$;

-- The old table's rows, computed: one per (input, output) pair of every event. Read-only.
CREATE VIEW lineage_edges AS
SELECT i AS from_uuid, o AS to_uuid, e.event_id, e.operation
FROM lineage_events AS e
CROSS JOIN LATERAL unnest(e.inputs) AS i
CROSS JOIN LATERAL unnest(e.outputs) AS o;
