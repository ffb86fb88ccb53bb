-- geoprov PostgreSQL schema, version 1.
--
-- Applied by `geoprov migrate` inside one transaction, under a transaction-scoped advisory lock,
-- together with its row in schema_migrations. Never edit a migration that has shipped: add
-- 0002_*.sql instead.
--
-- ADOPTION. When `lineage_events` already exists (the reference Celery task's table, already
-- holding rows), `CREATE TABLE IF NOT EXISTS` leaves it alone and the `ADD COLUMN` statements
-- below only add nullable columns without defaults: a catalog change, no table rewrite, the
-- existing rows and their columns untouched. The Rust side checked the table's shape before this
-- file runs, and gives the adopted rows their log positions and edges after it (see
-- `postgres.rs`, "Adoption").

-- The seed's table: the reference task's columns, same names and types.
CREATE TABLE IF NOT EXISTS lineage_events (
    event_id      text PRIMARY KEY,  -- lowercase hex SHA-256 of payload_json
    dataset_uuid  text,
    operation     text,
    crs_from      text,
    crs_to        text,
    processor_id  text,
    "timestamp"   timestamptz,       -- when the row was recorded
    payload_json  text               -- Python's json.dumps(payload, sort_keys=True)
);

-- geoprov's columns. Nullable: rows written by another writer (the Python task during a
-- migration) have no position until `geoprov migrate` adopts them.
ALTER TABLE lineage_events
    ADD COLUMN IF NOT EXISTS log_position bigint,       -- 0-based, dense, commit order
    ADD COLUMN IF NOT EXISTS started_at   timestamptz,  -- event time, if sent
    ADD COLUMN IF NOT EXISTS ended_at     timestamptz,
    ADD COLUMN IF NOT EXISTS leaf_hash    bytea;        -- RFC 6962 leaf hash, filled by the tlog

ALTER TABLE lineage_events
    ADD CONSTRAINT lineage_events_log_position_check CHECK (log_position >= 0);
CREATE UNIQUE INDEX lineage_events_log_position ON lineage_events (log_position);
-- Rows waiting for adoption, in adoption order. Empty (and never touched by geoprov's own
-- inserts, which always carry a position) once every row is in the log.
CREATE INDEX lineage_events_unlogged ON lineage_events ("timestamp", event_id)
    WHERE log_position IS NULL;

-- The lineage graph: one row per (input, output) pair of an event, as in SQLite.
-- lineage_edges_to serves the upstream walk (to_uuid -> from_uuid), lineage_edges_from the
-- downstream one.
--
-- Unlike SQLite, no primary key and no foreign key, because edges are most of the write work
-- (two random uuid index entries each) and commits insert them before taking the log lock, in
-- parallel with other workers: a (to_uuid, from_uuid, event_id) key is a ~100-byte index entry
-- where a uuid is 16 bytes, and a foreign key check would lock every referenced event row FOR KEY
-- SHARE. Neither constraint can be broken anyway: a commit inserts the edges of the events it is
-- about to insert, made distinct first, and rolls everything back if any of those events turns
-- out to be stored already once it holds the log lock.
CREATE TABLE lineage_edges (
    from_uuid  uuid NOT NULL,
    to_uuid    uuid NOT NULL,
    event_id   text NOT NULL,
    operation  text NOT NULL
);
CREATE INDEX lineage_edges_to ON lineage_edges (to_uuid);
CREATE INDEX lineage_edges_from ON lineage_edges (from_uuid);

-- The log size, in one row. Every commit locks it (SELECT ... FOR UPDATE) for the few
-- milliseconds of its insert, which serializes appends across all workers and keeps positions
-- dense; count() reads it in O(1). Updated in place at every commit, hence the fill factor that
-- leaves room for HOT updates.
CREATE TABLE log_head (
    id    integer PRIMARY KEY CHECK (id = 0),
    size  bigint NOT NULL CHECK (size >= 0)
) WITH (fillfactor = 10);
INSERT INTO log_head (id, size) VALUES (0, 0);

-- Append-only. Nothing may change or remove a stored event or edge, nor empty the tables.
--
-- One exception, for adoption: a lineage_events row that is not in the log yet (log_position
-- IS NULL, i.e. written by another writer) may be given its geoprov columns once, provided
-- every seed column stays exactly as it was. From then on the row is frozen like any other.
CREATE OR REPLACE FUNCTION geoprov_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND OLD.log_position IS NULL
       AND NEW.log_position IS NOT NULL
       AND (NEW.event_id, NEW.dataset_uuid, NEW.operation, NEW.crs_from, NEW.crs_to,
            NEW.processor_id, NEW."timestamp", NEW.payload_json)
           IS NOT DISTINCT FROM
           (OLD.event_id, OLD.dataset_uuid, OLD.operation, OLD.crs_from, OLD.crs_to,
            OLD.processor_id, OLD."timestamp", OLD.payload_json)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END;
$$;

CREATE OR REPLACE FUNCTION geoprov_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END;
$$;

CREATE TRIGGER lineage_events_append_only
    BEFORE UPDATE OR DELETE ON lineage_events
    FOR EACH ROW EXECUTE FUNCTION geoprov_events_append_only();
CREATE TRIGGER lineage_events_no_truncate
    BEFORE TRUNCATE ON lineage_events
    FOR EACH STATEMENT EXECUTE FUNCTION geoprov_append_only();
CREATE TRIGGER lineage_edges_append_only
    BEFORE UPDATE OR DELETE ON lineage_edges
    FOR EACH ROW EXECUTE FUNCTION geoprov_append_only();
CREATE TRIGGER lineage_edges_no_truncate
    BEFORE TRUNCATE ON lineage_edges
    FOR EACH STATEMENT EXECUTE FUNCTION geoprov_append_only();
