//! What the RabbitMQ backend needs besides its queues: connecting (plain or TLS through rustls,
//! on the tokio runtime), a shared connection that reconnects by itself, publishing with
//! publisher confirms, classifying lapin errors, and converting AMQP field tables to and from
//! JSON.
//!
//! Not for: queue names, consuming, dead letters (see `amqp`).

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::{Confirmation, PublisherConfirm};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Map, Value};

use super::{BrokerError, TlsFiles};
use crate::url::{redact_url, BrokerUrl};

/// How long connecting (TCP, TLS and the AMQP handshake) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long publisher confirms may take before the publish counts as failed (the channel is
/// then presumed dead; the caller reconnects).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// AMQP reply code of a passive declare on a queue that does not exist.
const NOT_FOUND: u16 = 404;

/// Where to connect: the URL and, for `amqps://`, the TLS settings.
#[derive(Clone)]
pub(crate) struct Endpoint {
    url: String,
    tls: Option<TlsParts>,
}

/// The PEM texts of the TLS files (lapin's `OwnedTLSConfig` is built from them per connection).
#[derive(Clone)]
struct TlsParts {
    ca: Option<String>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsParts {
    fn config(&self) -> OwnedTLSConfig {
        OwnedTLSConfig {
            identity: self
                .identity
                .as_ref()
                .map(|(pem, key)| OwnedIdentity::PKCS8 {
                    pem: pem.clone(),
                    key: key.clone(),
                }),
            cert_chain: self.ca.clone(),
        }
    }
}

impl Endpoint {
    /// Check `url` and read the TLS files (`--tls-ca`, `--tls-cert`, `--tls-key`).
    pub(crate) fn new(url: &str, tls: &TlsFiles) -> Result<Endpoint, BrokerError> {
        lapin::uri::AMQPUri::from_str_checked(url)?;
        let has_tls_files = tls.ca.is_some() || tls.cert.is_some() || tls.key.is_some();
        if !has_tls_files {
            return Ok(Endpoint {
                url: url.to_owned(),
                tls: None,
            });
        }
        if !BrokerUrl::Amqp(url.to_owned()).is_tls() {
            return Err(BrokerError::Config(
                "--tls-ca/--tls-cert/--tls-key need an amqps:// broker URL".into(),
            ));
        }
        let read = |path: &std::path::Path, what: &str| {
            std::fs::read(path).map_err(|e| {
                BrokerError::Config(format!(
                    "cannot read the TLS {what} {}: {e}",
                    path.display()
                ))
            })
        };
        let cert_chain = match &tls.ca {
            Some(path) => Some(String::from_utf8(read(path, "CA file")?).map_err(|_| {
                BrokerError::Config(format!(
                    "the TLS CA file {} is not PEM text",
                    path.display()
                ))
            })?),
            None => None,
        };
        let identity = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => {
                Some((read(cert, "client certificate")?, read(key, "client key")?))
            }
            (None, None) => None,
            _ => {
                return Err(BrokerError::Config(
                    "--tls-cert and --tls-key go together: give both or neither".into(),
                ))
            }
        };
        Ok(Endpoint {
            url: url.to_owned(),
            tls: Some(TlsParts {
                ca: cert_chain,
                identity,
            }),
        })
    }

    /// A new connection, driven by the current tokio runtime.
    pub(crate) async fn connect(&self) -> Result<Connection, BrokerError> {
        let properties = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio::current());
        let connecting = async {
            match &self.tls {
                Some(tls) => {
                    Connection::connect_with_config(&self.url, properties, tls.config()).await
                }
                None => Connection::connect(&self.url, properties).await,
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(BrokerError::Unavailable(format!(
                "cannot connect to RabbitMQ at {}: {e}",
                redact_url(&self.url)
            ))),
            Err(_) => Err(BrokerError::Unavailable(format!(
                "cannot connect to RabbitMQ at {} within {}s",
                redact_url(&self.url),
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// A URL lapin cannot parse is a configuration error.
trait CheckedUri {
    fn from_str_checked(url: &str) -> Result<(), BrokerError>;
}

impl CheckedUri for lapin::uri::AMQPUri {
    fn from_str_checked(url: &str) -> Result<(), BrokerError> {
        url.parse::<lapin::uri::AMQPUri>()
            .map(|_| ())
            .map_err(|e| BrokerError::Config(format!("broker URL '{}': {e}", redact_url(url))))
    }
}

/// One connection and one confirm-mode channel, shared by a broker's producer, dead-letter
/// queue and depth probe, re-opened on first use after either closed (a RabbitMQ restart, a
/// channel error).
pub(crate) struct Link {
    endpoint: Endpoint,
    state: tokio::sync::Mutex<Option<(Connection, Channel)>>,
}

impl Link {
    pub(crate) fn new(endpoint: Endpoint) -> Link {
        Link {
            endpoint,
            state: tokio::sync::Mutex::new(None),
        }
    }

    /// The endpoint, for consumers that open connections of their own.
    pub(crate) fn endpoint(&self) -> &Endpoint {
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
    pub(crate) async fn channel(&self) -> Result<Channel, BrokerError> {
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
    pub(crate) async fn scratch_channel(&self) -> Result<Channel, BrokerError> {
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
pub(crate) fn close_now(conn: Connection) {
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
pub(crate) fn close_later(conn: Connection) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = conn.close(200, "geoprov: closing").await;
        });
    }
}

/// A new channel in publisher-confirm mode.
pub(crate) async fn confirm_channel(conn: &Connection) -> Result<Channel, BrokerError> {
    let channel = conn.create_channel().await.map_err(map_err)?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(map_err)?;
    Ok(channel)
}

/// One message to publish.
pub(crate) struct Outgoing<'a> {
    pub(crate) exchange: &'a str,
    pub(crate) routing_key: &'a str,
    pub(crate) body: &'a [u8],
    pub(crate) properties: BasicProperties,
}

/// Publish every message pipelined (`mandatory`, so an unroutable message comes back), then
/// wait for every publisher confirm. `Ok` only when the broker confirmed them all as routed.
pub(crate) async fn publish_confirmed(
    channel: &Channel,
    messages: Vec<Outgoing<'_>>,
) -> Result<(), BrokerError> {
    let mut confirms: Vec<PublisherConfirm> = Vec::with_capacity(messages.len());
    for m in messages {
        let confirm = channel
            .basic_publish(
                m.exchange,
                m.routing_key,
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                m.body,
                m.properties,
            )
            .await
            .map_err(map_err)?;
        confirms.push(confirm);
    }
    let mut failed: Option<BrokerError> = None;
    let deadline = tokio::time::Instant::now() + CONFIRM_TIMEOUT;
    for confirm in confirms {
        let outcome = match tokio::time::timeout_at(deadline, confirm).await {
            Ok(outcome) => outcome.map_err(map_err),
            Err(_) => Err(BrokerError::Unavailable(format!(
                "rabbitmq: no publisher confirm within {}s",
                CONFIRM_TIMEOUT.as_secs()
            ))),
        };
        let problem = match outcome {
            Ok(Confirmation::Ack(None)) => None,
            Ok(Confirmation::Ack(Some(returned))) => Some(BrokerError::Protocol(format!(
                "RabbitMQ could not route a message to '{}' ({}): does the queue exist?",
                returned.delivery.routing_key, returned.reply_text
            ))),
            Ok(Confirmation::Nack(_)) => Some(BrokerError::Unavailable(
                "RabbitMQ refused a message (publisher nack)".into(),
            )),
            Ok(Confirmation::NotRequested) => Some(BrokerError::Protocol(
                "the channel is not in confirm mode".into(),
            )),
            Err(e) => Some(e),
        };
        if failed.is_none() {
            failed = problem;
        }
    }
    failed.map_or(Ok(()), Err)
}

/// lapin error → [`BrokerError`]: a broker that cannot be reached, a closed connection or
/// channel, a protocol failure are all worth retrying later (the worker backs off, the next
/// call reconnects).
pub(crate) fn map_err(e: lapin::Error) -> BrokerError {
    BrokerError::Unavailable(format!("rabbitmq: {e}"))
}

/// True when a passive declare failed because the queue does not exist.
pub(crate) fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p) if p.get_id() == NOT_FOUND)
}

/// An AMQP value as JSON, the way py-amqp hands it to Python: strings (long strings as UTF-8,
/// lossy), booleans, integers, floats, void → `null`, arrays, tables → objects.
pub(crate) fn value_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Timestamp(n) => Value::from(*n),
        AMQPValue::Float(f) => float(f64::from(*f)),
        AMQPValue::Double(f) => float(*f),
        AMQPValue::DecimalValue(d) => float(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into()),
        AMQPValue::ByteArray(b) => Value::String(String::from_utf8_lossy(b.as_slice()).into()),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(value_to_json).collect())
        }
        AMQPValue::FieldTable(t) => table_to_json(t),
        AMQPValue::Void => Value::Null,
    }
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// A field table as a JSON object.
pub(crate) fn table_to_json(t: &FieldTable) -> Value {
    Value::Object(
        t.inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), value_to_json(v)))
            .collect(),
    )
}

/// A JSON value as the AMQP value py-amqp would write for the same Python value: str `S`,
/// bool `t`, int `l`, float `d`, None `V`, list `A`, dict `F`.
pub(crate) fn json_to_value(v: &Value) -> AMQPValue {
    match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => {
            let text = || AMQPValue::LongString(LongString::from(n.to_string().into_bytes()));
            if let Some(i) = n.as_i64() {
                AMQPValue::LongLongInt(i)
            } else if n.is_u64() {
                // Above i64::MAX: AMQP 0-9-1 as RabbitMQ speaks it has no such integer.
                text()
            } else {
                n.as_f64().map_or_else(text, AMQPValue::Double)
            }
        }
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items.iter().map(json_to_value).collect::<Vec<_>>(),
        )),
        Value::Object(m) => AMQPValue::FieldTable(json_to_table(m)),
    }
}

/// A JSON object as a field table.
pub(crate) fn json_to_table(m: &Map<String, Value>) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in m {
        table.insert(ShortString::from(k.as_str()), json_to_value(v));
    }
    table
}

/// An integer header, if it is one (any AMQP integer type, or decimal text).
pub(crate) fn header_u32(headers: Option<&FieldTable>, name: &str) -> Option<u32> {
    let value = headers?.inner().get(name)?;
    match value_to_json(value) {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A text header.
pub(crate) fn header_text(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A long-string header value.
pub(crate) fn text_value(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn celery_headers_round_trip_through_a_field_table_with_voids_in_arrays() {
        let headers = serde_json::json!({
            "task": "lineage_tasks.record_lineage_event",
            "id": "abc",
            "eta": null,
            "retries": 0,
            "timelimit": [null, null],
            "ignore_result": false,
            "stamps": {},
            "big": 1.5,
        });
        let table = json_to_table(headers.as_object().unwrap());
        assert!(matches!(
            table.inner().get("timelimit"),
            Some(AMQPValue::FieldArray(a)) if a.as_slice() == [AMQPValue::Void, AMQPValue::Void]
        ));
        assert_eq!(table_to_json(&table), headers);
    }

    #[test]
    fn integer_headers_of_any_width_are_read() {
        let mut t = FieldTable::default();
        t.insert("a".into(), AMQPValue::LongInt(3));
        t.insert("b".into(), AMQPValue::ShortShortUInt(7));
        t.insert("c".into(), text_value("9"));
        t.insert("d".into(), AMQPValue::LongLongInt(-1));
        assert_eq!(header_u32(Some(&t), "a"), Some(3));
        assert_eq!(header_u32(Some(&t), "b"), Some(7));
        assert_eq!(header_u32(Some(&t), "c"), Some(9));
        assert_eq!(header_u32(Some(&t), "d"), None);
        assert_eq!(header_u32(None, "a"), None);
        assert_eq!(header_text(Some(&t), "c").as_deref(), Some("9"));
    }

    #[test]
    fn tls_files_need_amqps_and_come_in_pairs() {
        let files = TlsFiles {
            ca: Some("/nonexistent/ca.pem".into()),
            ..TlsFiles::default()
        };
        assert!(matches!(
            Endpoint::new("amqp://guest:guest@127.0.0.1:5672/%2f", &files),
            Err(BrokerError::Config(_))
        ));
        let half = TlsFiles {
            cert: Some("/dev/null".into()),
            ..TlsFiles::default()
        };
        assert!(matches!(
            Endpoint::new("amqps://127.0.0.1:5671/%2f", &half),
            Err(BrokerError::Config(_))
        ));
        assert!(Endpoint::new(
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            &TlsFiles::default()
        )
        .is_ok());
    }
}
