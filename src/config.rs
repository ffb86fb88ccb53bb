//! Configuration: flags, then environment variables, then defaults (clap resolves that order in
//! `cli`), validated once into a [`Config`]. Nothing past this module sees an unchecked URL,
//! address or token.
//!
//! Also the one place that decides the data dir's layout ([`store_db_path`],
//! [`queue_db_path`], [`default_key_path`]).
//!
//! Not for: the meaning of URL schemes (that is [`crate::url`]) or opening anything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::url::{BrokerUrl, StoreUrl};

/// A configuration value that cannot be used. Shown to the user as one line, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A secret (bearer token) that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for comparison only. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where everything lives and how to reach it.
#[derive(Debug, Clone)]
pub struct Config {
    /// Broker URL: `embedded` (default) or a server URL.
    pub broker: BrokerUrl,
    /// Store URL. Defaults to `sqlite://<data dir>/lineage.db` ([`store_db_path`]).
    pub store: StoreUrl,
    /// Directory for the embedded queue, the SQLite store and keys. Defaults to `./geoprov-data`.
    pub data_dir: PathBuf,
    /// HTTP listen address, resolved: the first address `--listen` names is bound. Defaults to
    /// `127.0.0.1:8700`.
    pub listen: SocketAddr,
    /// Every address `--listen` resolved to (a host name may name several); each must pass
    /// [`Config::check_listen_is_safe`].
    pub listen_addrs: Vec<SocketAddr>,
    /// Bearer token required by the HTTP API, if any.
    pub token: Option<Secret>,
    /// Broker options beyond the URL (queue, Celery mode, TLS files, result backend).
    pub broker_settings: BrokerSettings,
    /// The log signing key file (`--log-key`). Defaults to `<data dir>/log-signing.key`; see
    /// [`Config::log_key_path`].
    pub log_key: Option<PathBuf>,
}

/// Broker options beyond the URL, from `--queue`, `--celery`, `--celery-task`,
/// `--celery-key-prefix`, `--result-backend`, `--tls-ca`, `--tls-cert` and `--tls-key`.
#[derive(Debug, Clone, Default)]
pub struct BrokerSettings {
    /// Queue name. Defaults to `geoprov` (native) or `celery` (with `celery`).
    pub queue: Option<String>,
    /// Read and write Celery protocol messages (kombu lists on Redis).
    pub celery: bool,
    /// The Celery task name processed. Defaults to `lineage_tasks.record_lineage_event`.
    pub celery_task: Option<String>,
    /// kombu's `global_keyprefix`. Defaults to none.
    pub key_prefix: Option<String>,
    /// Celery result backend URL (`redis://...`); no results are written without one.
    pub result_backend: Option<String>,
    /// CA file for `rediss://`.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    /// Client key for mutual TLS.
    pub tls_key: Option<PathBuf>,
}

/// Default HTTP listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8700";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./geoprov-data";

/// The SQLite store of a data dir (the default store): `<data dir>/lineage.db`.
pub fn store_db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("lineage.db")
}

/// The embedded broker's queue file of a data dir: `<data dir>/queue.db`.
pub fn queue_db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("queue.db")
}

/// Creates the directory `dir` if it is missing, but only `dir` itself: its parent must exist
/// (no `mkdir -p` of a mistyped path). Returns whether it was created.
///
/// # Errors
///
/// A one-line reason naming `dir` (and its missing parent) for the user.
pub fn ensure_dir(dir: &Path) -> Result<bool, String> {
    if dir.is_dir() {
        return Ok(false);
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        if !parent.is_dir() {
            return Err(format!(
                "cannot create {}: its parent {} does not exist (geoprov creates only the last \
                 directory; create the parent first, or pick another --data-dir)",
                dir.display(),
                parent.display()
            ));
        }
    }
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        // Another process created it meanwhile.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
        Err(e) => Err(format!("cannot create {}: {e}", dir.display())),
    }
}

/// The log signing key file of a data dir (the default `--log-key`):
/// `<data dir>/log-signing.key`.
pub fn default_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("log-signing.key")
}

impl Config {
    /// Validate raw values (already merged from flags and environment by clap).
    pub fn new(
        broker: Option<String>,
        store: Option<String>,
        data_dir: Option<PathBuf>,
        listen: Option<String>,
        token: Option<String>,
    ) -> Result<Config, ConfigError> {
        let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let broker: BrokerUrl = match broker {
            Some(text) => text
                .parse()
                .map_err(|e: crate::url::UrlError| ConfigError(format!("--broker {e}")))?,
            None => BrokerUrl::Embedded,
        };
        let store: StoreUrl = match store {
            Some(text) => text
                .parse()
                .map_err(|e: crate::url::UrlError| ConfigError(format!("--store {e}")))?,
            None => StoreUrl::Sqlite(store_db_path(&data_dir)),
        };
        let listen_text = listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen_addrs = resolve_listen(&listen_text)?;
        let listen = listen_addrs[0];
        let token = match token {
            Some(t) if t.trim().is_empty() => {
                return Err(ConfigError(
                    "--token is empty: give a real token or none".into(),
                ))
            }
            Some(t) => Some(Secret::new(t)),
            None => None,
        };
        Ok(Config {
            broker,
            store,
            data_dir,
            listen,
            listen_addrs,
            token,
            broker_settings: BrokerSettings::default(),
            log_key: None,
        })
    }

    /// The log signing key file and whether it is the default location
    /// (`<data dir>/log-signing.key`, created on first start of `serve`/`worker`).
    pub fn log_key_path(&self) -> (PathBuf, bool) {
        match &self.log_key {
            Some(path) => (path.clone(), false),
            None => (default_key_path(&self.data_dir), true),
        }
    }

    /// Refuse to serve HTTP on a non-loopback address without a token (guarantee 6).
    pub fn check_listen_is_safe(&self) -> Result<(), ConfigError> {
        if self.token.is_some() {
            return Ok(());
        }
        if let Some(open) = self.listen_addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(ConfigError(format!(
                "refusing to listen on {open} without a token: set --token (or GEOPROV_TOKEN), \
                 or listen on 127.0.0.1"
            )));
        }
        Ok(())
    }
}

/// The addresses `--listen` names: `host:port` with an IP address or a host name (resolved
/// now; IPv4 first, so that `localhost:8700` binds 127.0.0.1 as most clients expect).
fn resolve_listen(text: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    use std::net::ToSocketAddrs as _;
    let bad = |why: String| {
        ConfigError(format!(
            "--listen '{text}' {why}; use host:port, e.g. 127.0.0.1:8700 or localhost:8700"
        ))
    };
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    if !text.contains(':') {
        return Err(bad("has no port".into()));
    }
    let mut addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| bad(format!("does not resolve ({e})")))?
        .collect();
    addrs.sort_by_key(|a| a.is_ipv6());
    addrs.dedup();
    if addrs.is_empty() {
        return Err(bad("resolves to no address".into()));
    }
    Ok(addrs)
}

/// Parse a duration: plain seconds (`30`, `0.5`) or humantime (`30s`, `250ms`, `5m`).
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(t).map_err(|_| {
        ConfigError(format!(
            "'{text}' is not a duration: use seconds (30) or a unit (30s, 250ms, 5m)"
        ))
    })
}

/// A rate limit like Celery's `rate_limit`: `N/s`, `N/m` or `N/h` (a bare `N` means per second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Events allowed per second.
    pub per_second: f64,
}

/// Parse `N/s`, `N/m`, `N/h` or `N`.
pub fn parse_rate(text: &str) -> Result<Rate, ConfigError> {
    let err = || {
        ConfigError(format!(
            "'{text}' is not a rate: use N/s, N/m or N/h (e.g. 500/s)"
        ))
    };
    let (n, unit) = match text.trim().split_once('/') {
        Some((n, u)) => (n.trim(), u.trim()),
        None => (text.trim(), "s"),
    };
    let n: f64 = n.parse().map_err(|_| err())?;
    if !n.is_finite() || n <= 0.0 {
        return Err(err());
    }
    let per_second = match unit {
        "s" => n,
        "m" => n / 60.0,
        "h" => n / 3600.0,
        _ => return Err(err()),
    };
    Ok(Rate { per_second })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_seconds_and_units() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn rates_follow_celery() {
        assert_eq!(parse_rate("100/s").unwrap().per_second, 100.0);
        assert_eq!(parse_rate("60/m").unwrap().per_second, 1.0);
        assert_eq!(parse_rate("3600/h").unwrap().per_second, 1.0);
        assert_eq!(parse_rate("10").unwrap().per_second, 10.0);
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("5/d").is_err());
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn defaults_and_listen_safety() {
        let c = Config::new(None, None, None, None, None).unwrap();
        assert_eq!(c.broker, BrokerUrl::Embedded);
        assert_eq!(
            c.store,
            StoreUrl::Sqlite(store_db_path(Path::new(DEFAULT_DATA_DIR)))
        );
        assert!(c.check_listen_is_safe().is_ok());
        let c = Config::new(None, None, None, Some("0.0.0.0:8700".into()), None).unwrap();
        assert!(c.check_listen_is_safe().is_err());
        let c = Config::new(
            None,
            None,
            None,
            Some("0.0.0.0:8700".into()),
            Some("t".into()),
        )
        .unwrap();
        assert!(c.check_listen_is_safe().is_ok());
        assert!(Config::new(Some("kafka://x".into()), None, None, None, None).is_err());
        let c = Config::new(None, None, None, Some("localhost:8700".into()), None).unwrap();
        assert!(c.listen.ip().is_loopback() && c.listen.port() == 8700);
        assert!(c.check_listen_is_safe().is_ok());
        assert!(Config::new(None, None, None, Some("8700".into()), None).is_err());
        assert!(Config::new(None, Some("mysql://x".into()), None, None, None).is_err());
    }
}
