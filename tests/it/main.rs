//! Integration tests: one binary, one module per backend and feature.

mod amqp;
mod broker_suite;
mod cli;
mod deploy;
mod e2e_embedded;
mod embedded_broker;
mod layout;
mod newcomer;
mod postgres_store;
mod prov_export;
mod redis_celery;
mod redis_streams;
mod redis_support;
mod reference_adoption;
mod search;
mod sqlite_store;
mod store_suite;
mod support;
mod tlog_postgres;
mod tlog_sqlite;
mod tlog_suite;
