//! Mapping rusqlite errors to [`StoreError`]s the worker can act on.
//!
//! Not for: deciding what to do about them (that is the worker's, through
//! [`StoreError::is_transient`]).

use rusqlite::ErrorCode;

use crate::store::StoreError;

/// Map a rusqlite error to the [`StoreError`] the worker can act on.
///
/// - [`StoreError::Unavailable`] (hold and retry): busy or locked database, I/O error, disk full,
///   read-only or unopenable file, lock-protocol failure, schema changed under a prepared
///   statement, out of memory, interrupted. All of them can clear without any change to the
///   batch.
/// - [`StoreError::Corrupt`]: a damaged database file, or a stored value of the wrong type or
///   range.
/// - [`StoreError::Config`]: the file is not a SQLite database.
/// - [`StoreError::Query`]: everything else, i.e. constraint violations (including the
///   append-only triggers) and SQL errors, which are geoprov's bug and will not heal by retrying.
pub fn classify(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::ReadOnly
            | ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::SchemaChanged
            | ErrorCode::OutOfMemory
            | ErrorCode::OperationInterrupted => StoreError::Unavailable(e.to_string()),
            ErrorCode::DatabaseCorrupt => StoreError::Corrupt(e.to_string()),
            ErrorCode::NotADatabase => {
                StoreError::Config(format!("the file is not a SQLite database: {e}"))
            }
            _ => StoreError::Query(e.to_string()),
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::Utf8Error(_) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Query(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::mem::discriminant;

    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn classify_separates_transient_from_permanent() {
        for code in [
            rusqlite::ffi::SQLITE_BUSY,
            rusqlite::ffi::SQLITE_LOCKED,
            rusqlite::ffi::SQLITE_IOERR,
            rusqlite::ffi::SQLITE_FULL,
            rusqlite::ffi::SQLITE_READONLY,
            rusqlite::ffi::SQLITE_CANTOPEN,
        ] {
            assert!(classify(failure(code)).is_transient(), "code {code}");
        }
        for (code, want) in [
            (
                rusqlite::ffi::SQLITE_CONSTRAINT_TRIGGER,
                StoreError::Query(String::new()),
            ),
            (
                rusqlite::ffi::SQLITE_ERROR,
                StoreError::Query(String::new()),
            ),
            (
                rusqlite::ffi::SQLITE_CORRUPT,
                StoreError::Corrupt(String::new()),
            ),
            (
                rusqlite::ffi::SQLITE_NOTADB,
                StoreError::Config(String::new()),
            ),
        ] {
            let got = classify(failure(code));
            assert_eq!(
                discriminant(&got),
                discriminant(&want),
                "code {code}: {got:?}"
            );
        }
    }
}
