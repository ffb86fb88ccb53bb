//! The store URL taken apart: what tokio-postgres understands, and geoprov's own parameters
//! (`sslmode`, `sslrootcert`, `schema`, `pool_size`; see "Connecting" in the module
//! documentation).
//!
//! Not for: building the TLS connector (`tls.rs`).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::store::StoreError;

/// Connection timeout when the URL does not set `connect_timeout`. Short, because an outage is
/// the worker's backoff's business, not a blocked connect's.
pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// TCP keepalive idle time when the URL does not set `keepalives_idle` (tokio-postgres' default
/// is two hours): a peer that vanished without a reset is noticed in well under a minute.
pub(super) const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(15);

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Where trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RootCerts {
    /// No `sslrootcert`: `~/.postgresql/root.crt` when a mode needs roots, as in libpq.
    Default,
    /// `sslrootcert=system`: the Mozilla root set (webpki-roots).
    System,
    /// `sslrootcert=PATH`: every certificate in that PEM file.
    File(PathBuf),
}

/// The TLS half of a store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TlsSettings {
    pub(super) mode: SslMode,
    pub(super) roots: RootCerts,
}

/// A store URL taken apart: what tokio-postgres understands, and geoprov's own parameters.
pub(super) struct ConnectSettings {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: TlsSettings,
    pub(super) schema: Option<String>,
    pub(super) pool_size: Option<usize>,
    pub(super) describe: String,
}

impl ConnectSettings {
    pub(super) fn parse(url: &str) -> Result<ConnectSettings, StoreError> {
        if !matches!(url.parse(), Ok(crate::url::StoreUrl::Postgres(_))) {
            return Err(StoreError::Config(format!(
                "'{}' is not a PostgreSQL URL (postgres://user@host:port/db)",
                crate::url::redact_url(url)
            )));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let describe = crate::url::redact_url(base);
        let mut kept = Vec::new();
        let mut mode = SslMode::Prefer;
        let mut roots = RootCerts::Default;
        let mut schema = None;
        let mut pool_size = None;
        let mut has_connect_timeout = false;
        let mut has_keepalives_idle = false;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(raw_key)?;
            let value = || percent_decode(raw_value);
            match key.as_str() {
                "sslmode" => {
                    mode = match value()?.as_str() {
                        "disable" => SslMode::Disable,
                        // libpq's `allow` tries without TLS first; geoprov prefers TLS.
                        "allow" | "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(StoreError::Config(format!(
                                "sslmode={other} is not one of disable, prefer, require, \
                                 verify-ca, verify-full"
                            )))
                        }
                    };
                }
                "sslrootcert" => {
                    let value = value()?;
                    roots = if value == "system" {
                        RootCerts::System
                    } else {
                        RootCerts::File(PathBuf::from(value))
                    };
                }
                "schema" => {
                    let value = value()?;
                    if !is_plain_identifier(&value) {
                        return Err(StoreError::Config(format!(
                            "schema={value} is not a plain identifier (letters, digits and _, \
                             not starting with a digit, at most 63 bytes)"
                        )));
                    }
                    schema = Some(value);
                }
                "pool_size" => {
                    let value = value()?;
                    match value.parse::<usize>() {
                        Ok(n) if n >= 1 => pool_size = Some(n),
                        _ => {
                            return Err(StoreError::Config(format!(
                                "pool_size={value} is not a positive number of connections"
                            )))
                        }
                    }
                }
                "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => {
                    return Err(StoreError::Config(format!(
                        "{key} (client certificates and CRLs) is not supported by geoprov's \
                         PostgreSQL store"
                    )));
                }
                _ => {
                    has_connect_timeout |= key == "connect_timeout";
                    has_keepalives_idle |= key == "keepalives_idle";
                    kept.push(pair);
                }
            }
        }
        let rebuilt = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config = tokio_postgres::Config::from_str(&rebuilt)
            .map_err(|e| StoreError::Config(format!("bad PostgreSQL URL {describe}: {e}")))?;
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        if !has_connect_timeout {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if !has_keepalives_idle {
            config.keepalives_idle(DEFAULT_KEEPALIVES_IDLE);
        }
        if config.get_application_name().is_none() {
            config.application_name("geoprov");
        }
        if let Some(schema) = &schema {
            let options = match config.get_options() {
                Some(existing) if !existing.is_empty() => {
                    format!("{existing} -c search_path={schema}")
                }
                _ => format!("-c search_path={schema}"),
            };
            config.options(&options);
        }
        Ok(ConnectSettings {
            config,
            tls: TlsSettings { mode, roots },
            schema,
            pool_size,
            describe,
        })
    }
}

/// Letters, digits and `_`, not starting with a digit, at most 63 bytes: safe to put in
/// `search_path` and in `CREATE SCHEMA "..."` without quoting rules.
pub(super) fn is_plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Decode `%XX` escapes (and `+` as a space is NOT applied: libpq URLs do not use it).
pub(super) fn percent_decode(text: &str) -> Result<String, StoreError> {
    // percent-encoding passes a malformed escape through as it is; a URL parameter with one
    // is a mistake worth saying, as libpq does.
    let well_formed = text.split('%').skip(1).all(|rest| {
        rest.as_bytes()
            .get(..2)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return Err(StoreError::Config(format!(
            "bad percent-encoding in the store URL parameter '{text}'"
        )));
    }
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| {
            StoreError::Config(format!(
                "the store URL parameter '{text}' is not UTF-8 once decoded"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<ConnectSettings, StoreError> {
        ConnectSettings::parse(url)
    }

    #[test]
    fn geoprov_parameters_are_taken_out_of_the_url() {
        let s = match parse(
            "postgres://alice:secret@db.example:6543/lineage?sslmode=verify-full&\
             sslrootcert=%2Fetc%2Fca%20dir%2Fca.pem&schema=geo_1&pool_size=9&\
             application_name=etl&connect_timeout=3",
        ) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(s.tls.mode, SslMode::VerifyFull);
        assert_eq!(
            s.tls.roots,
            RootCerts::File(PathBuf::from("/etc/ca dir/ca.pem"))
        );
        assert_eq!(s.schema.as_deref(), Some("geo_1"));
        assert_eq!(s.pool_size, Some(9));
        assert_eq!(s.config.get_application_name(), Some("etl"));
        assert_eq!(
            s.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        assert_eq!(s.config.get_options(), Some("-c search_path=geo_1"));
        assert_eq!(s.config.get_dbname(), Some("lineage"));
        assert_eq!(s.config.get_user(), Some("alice"));
        assert!(!s.describe.contains("secret"), "{}", s.describe);
        assert_eq!(
            s.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn defaults_are_libpq_like() {
        let s = match parse("postgresql://postgres@127.0.0.1/test") {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(s.tls.mode, SslMode::Prefer);
        assert_eq!(s.tls.roots, RootCerts::Default);
        assert_eq!(s.schema, None);
        assert_eq!(s.pool_size, None);
        assert_eq!(
            s.config.get_connect_timeout(),
            Some(&DEFAULT_CONNECT_TIMEOUT)
        );
        assert_eq!(s.config.get_application_name(), Some("geoprov"));
    }

    #[test]
    fn bad_parameters_are_configuration_errors() {
        for url in [
            "postgres://h/db?sslmode=sometimes",
            "postgres://h/db?schema=a;drop",
            "postgres://h/db?schema=1abc",
            "postgres://h/db?pool_size=0",
            "postgres://h/db?sslcert=/x.pem",
            "postgres://h/db?sslrootcert=%zz",
            "postgres://h/db?no_such_option=1",
            "mysql://h/db",
        ] {
            assert!(
                matches!(parse(url), Err(StoreError::Config(_))),
                "{url} was accepted"
            );
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%20c").ok().as_deref(), Some("a/b c"));
        assert!(percent_decode("%4").is_err());
        assert!(percent_decode("%ff").is_err());
    }
}
