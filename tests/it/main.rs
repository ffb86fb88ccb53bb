//! Integration tests: one binary, one module per backend and feature.

mod embedded_broker;
mod cli;
mod e2e_embedded;
mod support;
mod sqlite_store;
mod store_suite;
