//! Broker and store URLs, parsed once into typed values ([`BrokerUrl`], [`StoreUrl`]), and
//! [`redact_url`] for showing any URL without its password.
//!
//! The one place that knows the schemes: `config` parses the user's text into these values,
//! `broker::open` and `store::open` match on them. Depends on nothing else in the crate, so
//! every module may use it without an import cycle.
//!
//! Not for: the backends' own URL parameters (PostgreSQL's `sslmode`, `schema`, ...), which the
//! backends read from [`StoreUrl::Postgres`] text themselves.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A URL that names no broker or store geoprov knows, with the reason to show the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(pub String);

/// Where events wait between the pipeline and the worker.
#[derive(Clone, PartialEq, Eq)]
pub enum BrokerUrl {
    /// `embedded`: the on-disk queue under the data dir.
    Embedded,
    /// `redis://host:port/db` or `rediss://...` (TLS), as given.
    Redis(String),
    /// `amqp://user:pass@host:port/vhost` or `amqps://...` (TLS), as given.
    Amqp(String),
}

impl BrokerUrl {
    /// The URL as the user gave it (with its password): for connecting only, never for logs.
    pub fn as_str(&self) -> &str {
        match self {
            BrokerUrl::Embedded => "embedded",
            BrokerUrl::Redis(url) | BrokerUrl::Amqp(url) => url,
        }
    }

    /// Whether the connection uses TLS (`rediss://`, `amqps://`).
    pub fn is_tls(&self) -> bool {
        match self {
            BrokerUrl::Embedded => false,
            BrokerUrl::Redis(url) => url.starts_with("rediss://"),
            BrokerUrl::Amqp(url) => url.starts_with("amqps://"),
        }
    }
}

impl FromStr for BrokerUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url == "embedded" {
            return Ok(BrokerUrl::Embedded);
        }
        if has_authority(url, &["redis", "rediss"]) {
            return Ok(BrokerUrl::Redis(url.to_owned()));
        }
        if has_authority(url, &["amqp", "amqps"]) {
            return Ok(BrokerUrl::Amqp(url.to_owned()));
        }
        Err(UrlError(format!(
            "'{}' is not a broker URL: use embedded, redis://host:port/db, rediss://..., \
             amqp://user:pass@host:port/vhost or amqps://...",
            redact_url(url)
        )))
    }
}

/// Shows the URL without its password.
impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(self.as_str()))
    }
}

/// Shows the URL without its password.
impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrl({self})")
    }
}

/// Where events are stored.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite://PATH`: the file at PATH (relative to the working directory unless absolute).
    Sqlite(PathBuf),
    /// `postgres://...` or `postgresql://...`, as given (libpq-style parameters included).
    Postgres(String),
}

impl StoreUrl {
    /// The SQLite store at `path`.
    pub fn sqlite(path: impl Into<PathBuf>) -> StoreUrl {
        StoreUrl::Sqlite(path.into())
    }

    /// The URL as text (with its password): for connecting only, never for logs.
    pub fn to_url_string(&self) -> String {
        match self {
            StoreUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            StoreUrl::Postgres(url) => url.clone(),
        }
    }
}

impl FromStr for StoreUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if !path.is_empty() {
                return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
            }
        }
        if has_authority(url, &["postgres", "postgresql"]) {
            return Ok(StoreUrl::Postgres(url.to_owned()));
        }
        Err(UrlError(format!(
            "'{}' is not a store URL: use sqlite://PATH or postgres://user@host/db",
            redact_url(url)
        )))
    }
}

/// Shows the URL without its password.
impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.to_url_string()))
    }
}

/// Shows the URL without its password.
impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

/// Whether `url` is `SCHEME://...` for one of `schemes` (compared case-sensitively, as given).
fn has_authority(url: &str, schemes: &[&str]) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| schemes.contains(&scheme))
}

/// Hide the password of a URL (`scheme://user:***@host/...`) so that it can be logged or shown.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://{user}@{host}{path}")
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("amqp://guest:pw@localhost:5672/vh"),
            "amqp://guest:***@localhost:5672/vh"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
    }

    #[test]
    fn broker_urls_parse_by_scheme_and_never_show_a_password() {
        assert_eq!("embedded".parse(), Ok(BrokerUrl::Embedded));
        let redis: BrokerUrl = "rediss://:pw@h:6380/0".parse().unwrap();
        assert!(matches!(redis, BrokerUrl::Redis(_)) && redis.is_tls());
        let amqp: BrokerUrl = "amqp://guest:secret@h:5672/vh".parse().unwrap();
        assert!(matches!(amqp, BrokerUrl::Amqp(_)) && !amqp.is_tls());
        assert_eq!(amqp.as_str(), "amqp://guest:secret@h:5672/vh");
        assert!(!format!("{amqp} {amqp:?}").contains("secret"));
        let err = "kafka://u:secret@x".parse::<BrokerUrl>().unwrap_err();
        assert!(err.0.contains("not a broker URL") && !err.0.contains("secret"));
    }

    #[test]
    fn store_urls_parse_by_scheme_and_never_show_a_password() {
        assert_eq!(
            "sqlite://data/lineage.db".parse(),
            Ok(StoreUrl::sqlite("data/lineage.db"))
        );
        assert!("sqlite://".parse::<StoreUrl>().is_err());
        for url in ["postgres://u:secret@h/db", "postgresql://u:secret@h/db"] {
            let store: StoreUrl = url.parse().unwrap();
            assert_eq!(store.to_url_string(), url);
            assert!(!format!("{store} {store:?}").contains("secret"));
        }
        assert!("mysql://x".parse::<StoreUrl>().is_err());
    }
}
