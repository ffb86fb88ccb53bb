//! Integration tests: one binary, one module per backend and feature.

mod amqp;
mod embedded_broker;
mod cli;
mod e2e_embedded;
mod redis_celery;
mod redis_streams;
mod redis_support;
mod support;
mod postgres_store;
mod sqlite_store;
mod store_suite;
mod tlog_sqlite;
mod prov_export;
