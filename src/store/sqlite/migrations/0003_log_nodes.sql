-- geoprov SQLite schema, version 3: stored interior nodes of the log's Merkle tree.
--
-- A cache, derived from the leaf hashes: node `node_index` at `height` is the root of the perfect
-- subtree over the leaves `node_index << height .. (node_index + 1) << height`. The checkpointer
-- fills it in (heights 10 and up, only complete subtrees), so that an inclusion or consistency
-- proof reads O(log n) nodes and at most a few thousand leaves instead of every leaf hash of the
-- log. A proof built from these nodes is checked against the signed root before it is served,
-- and rebuilt from the leaves if it does not match, so a wrong row here can slow a proof down but
-- never make geoprov serve a wrong one.
CREATE TABLE log_nodes (
    height      INTEGER NOT NULL CHECK (height BETWEEN 1 AND 63),
    node_index  INTEGER NOT NULL CHECK (node_index >= 0),
    hash        BLOB    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (height, node_index)
) WITHOUT ROWID;

-- Append-only, like the rest of the log.
CREATE TRIGGER log_nodes_no_update BEFORE UPDATE ON log_nodes
BEGIN
    SELECT RAISE(ABORT, 'log_nodes is append-only');
END;
CREATE TRIGGER log_nodes_no_delete BEFORE DELETE ON log_nodes
BEGIN
    SELECT RAISE(ABORT, 'log_nodes is append-only');
END;
