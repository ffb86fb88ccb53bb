-- geoprov SQLite schema, version 1.
--
-- Applied by `geoprov migrate` inside one transaction, together with its row in
-- schema_migrations. Never edit a migration that has shipped: add 0002_*.sql instead.

-- The seed's table (the reference Celery task's columns, same names and types), plus what
-- geoprov needs. Column order matters to nobody; names do.
CREATE TABLE lineage_events (
    -- Seed columns.
    event_id      TEXT PRIMARY KEY,  -- lowercase hex SHA-256 of payload_json
    dataset_uuid  TEXT,
    operation     TEXT,
    crs_from      TEXT,
    crs_to        TEXT,
    processor_id  TEXT,
    timestamp     TEXT,              -- when the row was recorded: RFC 3339 UTC, microseconds, 'Z'
    payload_json  TEXT,              -- Python's json.dumps(payload, sort_keys=True)
    -- geoprov columns.
    log_position  INTEGER NOT NULL UNIQUE,  -- 0-based, dense, commit order
    started_at    TEXT,              -- event time, normalised to the timestamp format, if sent
    ended_at      TEXT,
    leaf_hash     BLOB               -- RFC 6962 leaf hash; filled by the tlog in the same insert
);

-- The lineage graph: one row per distinct (input, output) pair of an event; an event without
-- inputs has no edges. lineage_edges_to serves the upstream walk (to_uuid -> from_uuid),
-- lineage_edges_from the downstream one.
--
-- Edges are most of the write work: their uuids are random, so each index entry lands on a
-- random page, and every page a commit dirties is written whole to the WAL. Hence a plain rowid
-- table (appended in order) with two one-column indexes of ~45-byte entries, rather than a
-- (to_uuid, from_uuid, event_id) key of ~165 bytes per entry; this measured 1.4-1.6x faster
-- commits. No foreign key either (like PostgreSQL): the check costs an index probe per edge,
-- and a commit inserts an event's edges right after the event, in the same transaction.
CREATE TABLE lineage_edges (
    from_uuid  TEXT NOT NULL,
    to_uuid    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    operation  TEXT NOT NULL
);
CREATE INDEX lineage_edges_to ON lineage_edges (to_uuid);
CREATE INDEX lineage_edges_from ON lineage_edges (from_uuid);

-- The log size, kept in one row so that appending never scans and count() is O(1).
CREATE TABLE log_head (
    id    INTEGER PRIMARY KEY CHECK (id = 0),
    size  INTEGER NOT NULL CHECK (size >= 0)
);
INSERT INTO log_head (id, size) VALUES (0, 0);

-- Append-only: nothing may change or remove a stored event or edge. A later migration that must
-- backfill a column drops and recreates these triggers inside its own transaction.
CREATE TRIGGER lineage_events_no_update BEFORE UPDATE ON lineage_events
BEGIN
    SELECT RAISE(ABORT, 'lineage_events is append-only');
END;
CREATE TRIGGER lineage_events_no_delete BEFORE DELETE ON lineage_events
BEGIN
    SELECT RAISE(ABORT, 'lineage_events is append-only');
END;
CREATE TRIGGER lineage_edges_no_update BEFORE UPDATE ON lineage_edges
BEGIN
    SELECT RAISE(ABORT, 'lineage_edges is append-only');
END;
CREATE TRIGGER lineage_edges_no_delete BEFORE DELETE ON lineage_edges
BEGIN
    SELECT RAISE(ABORT, 'lineage_edges is append-only');
END;
