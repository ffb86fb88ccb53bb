//! Shutdown signal (being written).
