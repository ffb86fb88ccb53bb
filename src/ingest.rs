//! Ingest splitting (being written).
