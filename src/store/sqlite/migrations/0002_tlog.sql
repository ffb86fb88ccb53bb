-- geoprov SQLite schema, version 2: the transparency log.
--
-- Applied by `geoprov migrate` inside one transaction, together with its row in
-- schema_migrations. Rows stored before this migration (by a pre-release geoprov, with a NULL
-- leaf_hash) get their leaf hashes and the frontier from the Rust side in the same transaction
-- (see `sqlite.rs`, `backfill_leaves`).

-- The frontier (RFC 6962 compact range over positions 0..size): the roots of the perfect
-- subtrees making up the log, largest first, as 32-byte hashes concatenated, one per set bit of
-- `size`. Written with `size` in every commit, so the root at the current size is O(1) to read
-- and an append is O(log n).
ALTER TABLE log_head ADD COLUMN frontier BLOB NOT NULL DEFAULT x'';

-- Signed checkpoints (C2SP tlog-checkpoint, Ed25519 signed note), one per tree size.
CREATE TABLE log_checkpoints (
    tree_size   INTEGER PRIMARY KEY CHECK (tree_size >= 0),
    root_hash   BLOB NOT NULL CHECK (length(root_hash) = 32),
    note        TEXT NOT NULL,          -- the whole signed note, as served
    created_at  TEXT NOT NULL           -- RFC 3339 UTC, microseconds, 'Z'
);

-- Append-only, like the events.
CREATE TRIGGER log_checkpoints_no_update BEFORE UPDATE ON log_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'log_checkpoints is append-only');
END;
CREATE TRIGGER log_checkpoints_no_delete BEFORE DELETE ON log_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'log_checkpoints is append-only');
END;
