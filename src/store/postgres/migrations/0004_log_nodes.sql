-- geoprov PostgreSQL schema, version 4: stored interior nodes of the log's Merkle tree.
--
-- A cache, derived from the leaf hashes: node `node_index` at `height` is the root of the perfect
-- subtree over the leaves `node_index << height .. (node_index + 1) << height`. The checkpointer
-- fills it in (heights 10 and up, only complete subtrees), so that an inclusion or consistency
-- proof reads O(log n) nodes and at most a few thousand leaves instead of every leaf hash of the
-- log. A proof built from these nodes is checked against the signed root before it is served,
-- and rebuilt from the leaves if it does not match, so a wrong row here can slow a proof down but
-- never make geoprov serve a wrong one. Workers need INSERT and SELECT on it (see the README).
CREATE TABLE log_nodes (
    height      smallint NOT NULL CHECK (height BETWEEN 1 AND 63),
    node_index  bigint   NOT NULL CHECK (node_index >= 0),
    hash        bytea    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (height, node_index)
);

-- Append-only, like the rest of the log.
CREATE TRIGGER log_nodes_append_only
    BEFORE UPDATE OR DELETE ON log_nodes
    FOR EACH ROW EXECUTE FUNCTION geoprov_append_only();
CREATE TRIGGER log_nodes_no_truncate
    BEFORE TRUNCATE ON log_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION geoprov_append_only();
