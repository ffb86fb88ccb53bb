//! Versioned schema migrations: the bookkeeping every backend shares.
//!
//! A backend keeps its own list of [`Migration`]s (SQL files compiled in) and applies the
//! pending ones in its own transaction under its own lock; this module decides which are
//! pending, words the errors the same way for every backend, and remembers once per store that
//! the schema was seen current ([`SchemaGate`]).
//!
//! Not for: running SQL, or recording a migration in `schema_migrations` (the column types
//! differ per backend).

use std::sync::atomic::{AtomicBool, Ordering};

use super::StoreError;

/// One schema migration, compiled into the binary (each backend keeps its own list).
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its number; migrations apply in increasing order and each exactly once.
    pub version: u32,
    /// The file it came from (`0001_init`), for `schema_migrations`, logs and errors.
    pub name: &'static str,
    /// The SQL, run inside the migration's transaction.
    pub sql: &'static str,
}

/// A backend's list of [`Migration`]s, oldest first, each compiled in from
/// `migrations/<name>.sql` beside the file that names it: `migrations![1 => "0001_init", ...]`.
macro_rules! migrations {
    ($($version:literal => $name:literal),+ $(,)?) => {
        &[$(
            $crate::store::migration::Migration {
                version: $version,
                name: $name,
                sql: include_str!(concat!("migrations/", $name, ".sql")),
            }
        ),+]
    };
}

pub(crate) use migrations;

/// The newest version of `migrations` (oldest first): the schema version a binary reads and
/// writes. 0 for an empty list.
pub const fn newest(migrations: &[Migration]) -> u32 {
    match migrations.last() {
        Some(m) => m.version,
        None => 0,
    }
}

/// The migrations of `migrations` newer than `current`, in order.
pub fn pending(migrations: &[Migration], current: u32) -> impl Iterator<Item = &Migration> {
    migrations.iter().filter(move |m| m.version > current)
}

/// The error for a store (`describe`: its path or redacted URL) at schema version `found` when
/// this binary knows `known`: upgrade geoprov when newer, run `geoprov migrate` when older.
pub fn version_mismatch(describe: &str, found: u32, known: u32) -> StoreError {
    if found > known {
        StoreError::Schema(format!(
            "{describe} has schema version {found}, newer than version {known} that this geoprov \
             knows; upgrade geoprov (an older binary refuses to touch a newer schema)"
        ))
    } else {
        StoreError::Schema(format!(
            "{describe} has schema version {found} but this geoprov needs version {known}; run \
             `geoprov migrate`"
        ))
    }
}

/// Refuses to touch a store whose schema is newer than `known`.
///
/// # Errors
///
/// [`version_mismatch`] when `found > known`.
pub fn refuse_newer(describe: &str, found: u32, known: u32) -> Result<(), StoreError> {
    if found > known {
        Err(version_mismatch(describe, found, known))
    } else {
        Ok(())
    }
}

/// A migration's SQL failed: a query error becomes a schema error naming the migration and the
/// store; an outage stays an outage (it may be retried).
pub fn failed(migration: &Migration, describe: &str, error: StoreError) -> StoreError {
    match error {
        StoreError::Query(detail) => StoreError::Schema(format!(
            "migration {} failed on {describe}: {detail}",
            migration.name
        )),
        other => other,
    }
}

/// Logs one applied migration.
pub fn applied(migration: &Migration, describe: &str) {
    tracing::info!(
        message = "Applied store migration.",
        migration = migration.name,
        store = %describe
    );
}

/// The version read from `schema_migrations` (`max(version)`, 0 when none), checked.
///
/// # Errors
///
/// [`StoreError::Schema`] for a negative or oversized value.
pub fn version_from_column(version: i64) -> Result<u32, StoreError> {
    u32::try_from(version).map_err(|_| {
        StoreError::Schema(format!(
            "schema_migrations holds an impossible version {version}"
        ))
    })
}

/// Remembers that a store's schema was seen at the version this binary knows, so the check
/// costs one query per store, not one per call.
#[derive(Debug)]
pub struct SchemaGate {
    known: u32,
    ready: AtomicBool,
}

impl SchemaGate {
    /// A gate for a binary that knows schema version `known`; closed until checked.
    pub const fn new(known: u32) -> SchemaGate {
        SchemaGate {
            known,
            ready: AtomicBool::new(false),
        }
    }

    /// Whether the schema was already seen current.
    pub fn is_open(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Checks a version read from the store: opens the gate when it is the known one.
    ///
    /// # Errors
    ///
    /// [`version_mismatch`] otherwise.
    pub fn admit(&self, describe: &str, found: u32) -> Result<(), StoreError> {
        if found != self.known {
            return Err(version_mismatch(describe, found, self.known));
        }
        self.open();
        Ok(())
    }

    /// Opens the gate (after `migrate` brought the schema to the known version).
    pub fn open(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &[Migration] = &[
        Migration {
            version: 1,
            name: "0001_a",
            sql: "",
        },
        Migration {
            version: 2,
            name: "0002_b",
            sql: "",
        },
    ];

    #[test]
    fn pending_migrations_and_mismatches() {
        assert_eq!(newest(LIST), 2);
        let names: Vec<&str> = pending(LIST, 1).map(|m| m.name).collect();
        assert_eq!(names, ["0002_b"]);
        assert!(version_mismatch("db", 3, 2)
            .to_string()
            .contains("upgrade geoprov"));
        assert!(version_mismatch("db", 1, 2)
            .to_string()
            .contains("geoprov migrate"));
        assert!(refuse_newer("db", 3, 2).is_err() && refuse_newer("db", 1, 2).is_ok());
        assert!(version_from_column(-1).is_err());
        let gate = SchemaGate::new(2);
        assert!(!gate.is_open());
        assert!(gate.admit("db", 1).is_err() && !gate.is_open());
        assert!(gate.admit("db", 2).is_ok() && gate.is_open());
    }
}
