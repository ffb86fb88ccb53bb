-- geoprov PostgreSQL schema, version 2: the transparency log.
--
-- Applied by `geoprov migrate` inside one transaction, under the migration's advisory lock,
-- together with its row in schema_migrations. Rows that already have a log position (written by
-- a schema-1 geoprov, or adopted by one) have a NULL leaf_hash: the Rust side gives them their
-- leaf hashes, in position order, and sets the frontier in the same transaction (see
-- `postgres.rs`, `backfill_leaves`). Stop schema-1 workers before upgrading: they would keep
-- appending rows without leaf hashes.

-- The frontier (RFC 6962 compact range over positions 0..size): the roots of the perfect
-- subtrees making up the log, largest first, as 32-byte hashes concatenated, one per set bit of
-- `size` (at most 63 * 32 bytes, so the row is never TOASTed). Written with `size` in every
-- commit, under the row lock every commit takes, so the root at the current size is O(1) to read
-- and an append is O(log n).
ALTER TABLE log_head ADD COLUMN frontier bytea NOT NULL DEFAULT ''::bytea;

-- Signed checkpoints (C2SP tlog-checkpoint, Ed25519 signed note), one per tree size.
CREATE TABLE log_checkpoints (
    tree_size   bigint PRIMARY KEY CHECK (tree_size >= 0),
    root_hash   bytea NOT NULL CHECK (length(root_hash) = 32),
    note        text NOT NULL,          -- the whole signed note, as served
    created_at  timestamptz NOT NULL
);

-- Append-only, like the events.
CREATE TRIGGER log_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON log_checkpoints
    FOR EACH ROW EXECUTE FUNCTION geoprov_append_only();
CREATE TRIGGER log_checkpoints_no_truncate
    BEFORE TRUNCATE ON log_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION geoprov_append_only();
