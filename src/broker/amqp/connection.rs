//! Connecting to RabbitMQ: the endpoint (URL and TLS files, plain or TLS through rustls, on
//! the tokio runtime), the shared connection that reconnects by itself, closing connections,
//! confirm-mode channels, and classifying lapin errors.
//!
//! Not for: publishing (see `publish`), queue names and declarations (see the parent module),
//! or a consumer's own connection (see `consumer`, which opens it through [`Endpoint`]).

use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Channel, Connection, ConnectionProperties};

use crate::broker::{BrokerError, ClientIdentity, TlsFiles};
use crate::url::BrokerUrl;

/// How long connecting (TCP, TLS and the AMQP handshake) may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// AMQP reply code of a passive declare on a queue that does not exist.
const NOT_FOUND: u16 = 404;

/// Where to connect: the URL and, for `amqps://`, the TLS settings.
#[derive(Clone)]
pub(super) struct Endpoint {
    url: BrokerUrl,
    tls: Option<TlsParts>,
}

/// The PEM texts of the TLS files (lapin's `OwnedTLSConfig` is built from them per connection).
#[derive(Clone)]
struct TlsParts {
    ca: Option<String>,
    identity: Option<ClientIdentity>,
}

impl TlsParts {
    fn config(&self) -> OwnedTLSConfig {
        OwnedTLSConfig {
            identity: self.identity.as_ref().map(|id| OwnedIdentity::PKCS8 {
                pem: id.cert.clone(),
                key: id.key.clone(),
            }),
            cert_chain: self.ca.clone(),
        }
    }
}

impl Endpoint {
    /// Check `url` and read the TLS files (`--tls-ca`, `--tls-cert`, `--tls-key`).
    pub(super) fn new(url: &BrokerUrl, tls: &TlsFiles) -> Result<Endpoint, BrokerError> {
        lapin::uri::AMQPUri::from_str_checked(url)?;
        if tls.is_empty() {
            return Ok(Endpoint {
                url: url.clone(),
                tls: None,
            });
        }
        if !url.is_tls() {
            return Err(BrokerError::Config(
                "--tls-ca/--tls-cert/--tls-key need an amqps:// broker URL".into(),
            ));
        }
        let not_pem = || {
            let path = tls.ca.as_deref().unwrap_or(std::path::Path::new(""));
            BrokerError::Config(format!(
                "the TLS CA file {} is not PEM text",
                path.display()
            ))
        };
        let ca = tls
            .read_ca()?
            .map(|pem| String::from_utf8(pem).map_err(|_| not_pem()))
            .transpose()?;
        let identity = tls.read_identity()?;
        Ok(Endpoint {
            url: url.clone(),
            tls: Some(TlsParts { ca, identity }),
        })
    }

    /// A new connection, driven by the current tokio runtime.
    pub(super) async fn connect(&self) -> Result<Connection, BrokerError> {
        let properties = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio::current());
        let url = self.url.as_str();
        let connecting = async {
            match &self.tls {
                Some(tls) => Connection::connect_with_config(url, properties, tls.config()).await,
                None => Connection::connect(url, properties).await,
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(BrokerError::Unavailable(format!(
                "cannot connect to RabbitMQ at {}: {e}",
                self.url
            ))),
            Err(_) => Err(BrokerError::Unavailable(format!(
                "cannot connect to RabbitMQ at {} within {}s",
                self.url,
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// A URL lapin cannot parse is a configuration error.
trait CheckedUri {
    fn from_str_checked(url: &BrokerUrl) -> Result<(), BrokerError>;
}

impl CheckedUri for lapin::uri::AMQPUri {
    fn from_str_checked(url: &BrokerUrl) -> Result<(), BrokerError> {
        url.as_str()
            .parse::<lapin::uri::AMQPUri>()
            .map(|_| ())
            .map_err(|e| BrokerError::Config(format!("broker URL '{url}': {e}")))
    }
}

/// One connection and one confirm-mode channel, shared by a broker's producer, dead-letter
/// queue and depth probe, re-opened on first use after either closed (a RabbitMQ restart, a
/// channel error).
pub(super) struct Link {
    endpoint: Endpoint,
    state: tokio::sync::Mutex<Option<(Connection, Channel)>>,
}

impl Link {
    pub(super) fn new(endpoint: Endpoint) -> Link {
        Link {
            endpoint,
            state: tokio::sync::Mutex::new(None),
        }
    }

    /// The endpoint, for consumers that open connections of their own.
    pub(super) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Make sure `state` holds a live connection, (re)opening it if needed.
    async fn ensure(&self, state: &mut Option<(Connection, Channel)>) -> Result<(), BrokerError> {
        if state
            .as_ref()
            .is_some_and(|(conn, _)| conn.status().connected())
        {
            return Ok(());
        }
        let conn = self.endpoint.connect().await?;
        let channel = match confirm_channel(&conn).await {
            Ok(channel) => channel,
            Err(e) => {
                close_later(conn);
                return Err(e);
            }
        };
        if let Some((old, _)) = state.replace((conn, channel)) {
            close_later(old);
        }
        Ok(())
    }

    /// The shared confirm-mode channel, for publishing.
    pub(super) async fn channel(&self) -> Result<Channel, BrokerError> {
        let mut state = self.state.lock().await;
        self.ensure(&mut state).await?;
        let Some((conn, channel)) = state.as_mut() else {
            return Err(BrokerError::Unavailable("rabbitmq: not connected".into()));
        };
        if !channel.status().connected() {
            *channel = confirm_channel(conn).await?;
        }
        Ok(channel.clone())
    }

    /// A new channel of its own on the shared connection, for operations that may close it
    /// (a passive declare of a missing queue) or that hold messages unacked (browsing the dead
    /// letters). Close it after use.
    pub(super) async fn scratch_channel(&self) -> Result<Channel, BrokerError> {
        let mut state = self.state.lock().await;
        self.ensure(&mut state).await?;
        let Some((conn, _)) = state.as_ref() else {
            return Err(BrokerError::Unavailable("rabbitmq: not connected".into()));
        };
        conn.create_channel().await.map_err(map_err)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some((conn, _)) = self.state.get_mut().take() {
            close_now(conn);
        }
    }
}

/// Close a connection before returning, where the runtime allows it (multi-threaded: the CLI
/// and the worker), so that a command ending right after does not tear the connection down
/// mid-flight; in the background otherwise. Bounded by 2 s.
pub(super) fn close_now(conn: Connection) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        close_later(conn);
        return;
    }
    tokio::task::block_in_place(|| {
        runtime.block_on(async {
            let closing = conn.close(200, "geoprov: closing");
            let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
        });
    });
}

/// Close a connection in the background (best effort; the server requeues whatever it held).
pub(super) fn close_later(conn: Connection) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = conn.close(200, "geoprov: closing").await;
        });
    }
}

/// A new channel in publisher-confirm mode.
pub(super) async fn confirm_channel(conn: &Connection) -> Result<Channel, BrokerError> {
    let channel = conn.create_channel().await.map_err(map_err)?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(map_err)?;
    Ok(channel)
}

/// lapin error → [`BrokerError`]: a broker that cannot be reached, a closed connection or
/// channel, a protocol failure are all worth retrying later (the worker backs off, the next
/// call reconnects).
pub(super) fn map_err(e: lapin::Error) -> BrokerError {
    BrokerError::Unavailable(format!("rabbitmq: {e}"))
}

/// True when a passive declare failed because the queue does not exist.
pub(super) fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p) if p.get_id() == NOT_FOUND)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> BrokerUrl {
        text.parse().unwrap()
    }

    #[test]
    fn tls_files_need_amqps_and_come_in_pairs() {
        let plain = url("amqp://guest:guest@127.0.0.1:5672/%2f");
        let ca_only = TlsFiles {
            ca: Some("/nonexistent/ca.pem".into()),
            ..TlsFiles::default()
        };
        let half = TlsFiles {
            cert: Some("/dev/null".into()),
            ..TlsFiles::default()
        };
        let tls = url("amqps://127.0.0.1:5671/%2f");
        for (url, files) in [(&plain, &ca_only), (&tls, &half)] {
            let endpoint = Endpoint::new(url, files);
            assert!(matches!(endpoint, Err(BrokerError::Config(_))), "{url}");
        }
        assert!(Endpoint::new(&plain, &TlsFiles::default()).is_ok());
    }
}
