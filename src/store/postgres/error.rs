//! Mapping tokio-postgres and pool errors to [`StoreError`]s the worker can act on.
//!
//! Not for: deciding what to do about them (the worker's, through [`StoreError::is_transient`]).

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// Map a tokio-postgres error to the [`StoreError`] the worker can act on.
///
/// - [`StoreError::Unavailable`] (hold and retry): no connection (refused, reset, closed, timed
///   out), a server starting or shutting down (`57P01`, `57P02`, `57P03`), any connection
///   exception (class `08`), insufficient resources such as too many connections or a full disk
///   (class `53`), serialization failures and deadlocks (class `40`), lock and statement
///   timeouts, a read-only server (a standby during failover), an I/O error on the server.
/// - [`StoreError::Config`]: authentication and authorization failures, a database that does not
///   exist, missing privileges, a TLS certificate that does not verify or TLS the server does
///   not offer.
/// - [`StoreError::Schema`]: a missing table or column (run `geoprov migrate`).
/// - [`StoreError::Corrupt`]: a stored value of the wrong type.
/// - [`StoreError::Query`]: everything else, i.e. constraint violations (including the
///   append-only triggers) and SQL errors, which will not heal by retrying.
pub fn classify(e: tokio_postgres::Error) -> StoreError {
    use std::error::Error as _;
    let message = describe(&e);
    if let Some(code) = e.code() {
        return classify_code(code, message);
    }
    if e.is_closed() {
        return StoreError::Unavailable(message);
    }
    if let Some(io) = e.source().and_then(|s| s.downcast_ref::<std::io::Error>()) {
        // tokio-rustls reports a failed handshake as an I/O error wrapping rustls' own error.
        if io
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return StoreError::Config(format!("TLS: {message}"));
        }
        return StoreError::Unavailable(message);
    }
    // tokio-postgres exposes no kind for these; its messages are fixed strings.
    if message.starts_with("timeout waiting for server")
        || message.starts_with("error connecting to server")
        || message.starts_with("error communicating with the server")
    {
        return StoreError::Unavailable(message);
    }
    if message.starts_with("error performing TLS handshake") {
        return StoreError::Config(format!("TLS: {message}"));
    }
    if message.starts_with("error deserializing column") {
        return StoreError::Corrupt(message);
    }
    if message.starts_with("authentication error") || message.starts_with("invalid configuration") {
        return StoreError::Config(message);
    }
    StoreError::Query(message)
}

/// The whole message of `e`: the server's own words for a database error (`FATAL 3D000:
/// database "x" does not exist`, with its detail and hint), otherwise tokio-postgres' text and
/// the chain of causes under it (`error connecting to server: Connection refused (os error
/// 111)`), which its `Display` alone leaves out.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    crate::cause::chain(e)
}

pub(super) fn classify_code(code: &SqlState, message: String) -> StoreError {
    let class = &code.code()[..2.min(code.code().len())];
    if matches!(class, "08" | "53" | "40" | "58")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::QUERY_CANCELED
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
    {
        return StoreError::Unavailable(message);
    }
    if matches!(class, "28")
        || *code == SqlState::INVALID_CATALOG_NAME
        || *code == SqlState::INSUFFICIENT_PRIVILEGE
    {
        return StoreError::Config(message);
    }
    if *code == SqlState::UNDEFINED_TABLE
        || *code == SqlState::UNDEFINED_COLUMN
        || *code == SqlState::INVALID_SCHEMA_NAME
        || *code == SqlState::UNDEFINED_FUNCTION
    {
        return StoreError::Schema(message);
    }
    StoreError::Query(message)
}

/// A pool error: timeouts and a closed pool are transient, the backend's own errors are
/// classified by [`classify`].
pub(super) fn classify_pool(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => classify(e),
        PoolError::Timeout(kind) => {
            StoreError::Unavailable(format!("no database connection in time ({kind:?})"))
        }
        PoolError::NoRuntimeSpecified => {
            StoreError::Config("the connection pool has no runtime".into())
        }
        other => StoreError::Unavailable(other.to_string()),
    }
}

pub(super) fn corrupt(e: tokio_postgres::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::mem::discriminant;

    use super::*;

    #[test]
    fn sql_states_are_classified() {
        let transient = [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::CONNECTION_FAILURE,
            SqlState::DISK_FULL,
            SqlState::READ_ONLY_SQL_TRANSACTION,
        ];
        for code in transient {
            assert!(
                classify_code(&code, String::new()).is_transient(),
                "{code:?}"
            );
        }
        let permanent = [
            (
                SqlState::INVALID_PASSWORD,
                StoreError::Config(String::new()),
            ),
            (SqlState::UNDEFINED_TABLE, StoreError::Schema(String::new())),
            (SqlState::RAISE_EXCEPTION, StoreError::Query(String::new())),
            (SqlState::UNIQUE_VIOLATION, StoreError::Query(String::new())),
        ];
        for (code, want) in permanent {
            let got = classify_code(&code, String::new());
            assert_eq!(discriminant(&got), discriminant(&want), "{code:?}: {got:?}");
        }
    }
}
