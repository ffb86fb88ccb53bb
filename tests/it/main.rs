//! Integration tests: one binary, one module per backend and feature.

mod embedded_broker;
