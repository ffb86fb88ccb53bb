//! Decoding the real captures in `tests/fixtures/celery/`, and every refusal path.

use std::io::Write as _;
use std::path::PathBuf;

use base64::Engine as _;
use chrono::{DateTime, TimeZone as _, Utc};
use serde_json::{json, Value};

use super::*;
use crate::event::python_json::{self, PyValue};
use crate::event::EventId;

/// The `db_uri` every captured message carries; it must never leak.
const DB_URI: &str = "postgresql+psycopg2://root:lineage@127.0.0.1:5432/lineage";
const SECRET: &str = "root:lineage@";
const TASK: &str = DEFAULT_TASK_NAME;
const LIMIT: usize = DEFAULT_MAX_BODY_BYTES;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/celery")
}

fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn fixtures(prefix: &str) -> Vec<(String, Value)> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.starts_with(prefix) && n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 6,
        "expected 6 {prefix}*.json fixtures, got {names:?}"
    );
    names
        .into_iter()
        .map(|n| (n.clone(), fixture(&n)))
        .collect()
}

/// Shortly before the captures' countdown ETAs, after every capture.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 2, 50, 0).unwrap()
}

/// A fixture's JSON value as the `PyValue` Python's `json.loads` would give.
fn py(v: &Value) -> PyValue {
    python_json::parse(serde_json::to_string(v).unwrap().as_bytes()).unwrap()
}

fn same_payload(a: &PyValue, b: &PyValue) -> bool {
    python_json::dumps_sorted(a) == python_json::dumps_sorted(b)
}

fn event_id(payload: &PyValue) -> String {
    EventId::of_canonical_json(&python_json::dumps_sorted(payload)).to_hex()
}

fn assert_no_secret(what: &str) {
    assert!(!what.contains(SECRET), "db_uri leaked into: {what}");
}

fn assert_err_clean(err: &CeleryError) {
    assert_no_secret(&err.to_string());
    assert_no_secret(&format!("{err:?}"));
}

fn assert_task_clean(task: &CeleryTask) {
    assert_no_secret(&format!("{task:?}"));
    assert_no_secret(&format!("{task:#?}"));
}

/// The headers of a real capture (their `argsrepr` contains `db_uri`).
fn real_headers() -> Value {
    fixture("redis_message_1.json")["envelope"]["headers"].clone()
}

fn embed_null() -> Value {
    json!({"callbacks": null, "errbacks": null, "chain": null, "chord": null})
}

fn args_body(payload: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!([[payload, DB_URI], {}, embed_null()])).unwrap()
}

fn sample_payload() -> Value {
    fixture("redis_message_1.json")["body_decoded"][0][0].clone()
}

/// A kombu Redis envelope around `body` (base64), like the captures.
fn envelope(headers: &Value, body: &[u8], content_type: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "body": base64::engine::general_purpose::STANDARD.encode(body),
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": headers,
        "properties": {
            "correlation_id": headers.get("id"),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": "celery"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": "8c3f4a8e-1a4e-4a43-9f3e-7a1d7b2c9d10"
        }
    }))
    .unwrap()
}

fn redis(headers: &Value, body: &[u8]) -> Result<CeleryTask, CeleryError> {
    decode_redis_envelope(
        &envelope(headers, body, "application/json"),
        TASK,
        LIMIT,
        now(),
    )
}

fn amqp(headers: &Value, body: &[u8]) -> Result<CeleryTask, CeleryError> {
    amqp_with(headers, body, Some("application/json"), LIMIT)
}

fn amqp_with(
    headers: &Value,
    body: &[u8],
    content_type: Option<&str>,
    limit: usize,
) -> Result<CeleryTask, CeleryError> {
    let delivery = AmqpDelivery {
        body,
        content_type,
        content_encoding: Some("utf-8"),
        headers: Some(headers),
        priority: None,
        delivery_tag: Some(1),
        redelivered: false,
    };
    decode_amqp(&delivery, TASK, limit, now())
}

/// Decode through both transports; both must agree.
fn both(headers: &Value, body: &[u8]) -> Result<CeleryTask, CeleryError> {
    let via_redis = redis(headers, body);
    let via_amqp = amqp(headers, body);
    match (&via_redis, &via_amqp) {
        (Ok(a), Ok(b)) => assert!(same_payload(&a.payload, &b.payload)),
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("transports disagree: {via_redis:?} vs {via_amqp:?}"),
    }
    if let Err(e) = &via_redis {
        assert_err_clean(e);
    }
    if let Ok(t) = &via_redis {
        assert_task_clean(t);
    }
    via_redis
}

fn headers_with(changes: &[(&str, Value)]) -> Value {
    let mut h = real_headers();
    for (k, v) in changes {
        match v {
            Value::String(s) if s == "<remove>" => {
                h.as_object_mut().unwrap().remove(*k);
            }
            _ => h[*k] = v.clone(),
        }
    }
    h
}

// ---------------------------------------------------------------- real captures

#[test]
fn every_redis_capture_decodes() {
    for (name, f) in fixtures("redis_message_") {
        let raw = f["raw"].as_str().unwrap();
        let task = decode_redis_envelope(raw.as_bytes(), TASK, LIMIT, now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let env = &f["envelope"];
        assert_eq!(task.id, env["headers"]["id"].as_str().unwrap(), "{name}");
        assert_eq!(task.task, TASK);
        assert_eq!(task.retries, 0);
        assert!(!task.redelivered);
        assert!(!task.ignore_result);
        assert_eq!(task.expires, None);
        assert_eq!(
            task.delivery_tag.as_deref(),
            env["properties"]["delivery_tag"].as_str(),
            "{name}"
        );
        assert!(
            same_payload(&task.payload, &py(&f["body_decoded"][0][0])),
            "{name}: payload differs"
        );
        assert_task_clean(&task);
        match name.as_str() {
            "redis_message_countdown.json" => {
                let eta = Utc.with_ymd_and_hms(2026, 11, 26, 2, 57, 31).unwrap()
                    + chrono::Duration::microseconds(578_136);
                assert_eq!(task.eta, Some(eta));
            }
            "redis_message_priority.json" => {
                assert_eq!(task.priority, 5);
                assert_eq!(task.eta, None);
            }
            _ => {
                assert_eq!(task.priority, 0);
                assert_eq!(task.eta, None);
            }
        }
    }
}

#[test]
fn every_amqp_capture_decodes() {
    for (name, f) in fixtures("amqp_message_") {
        let body = base64::engine::general_purpose::STANDARD
            .decode(f["body_base64"].as_str().unwrap())
            .unwrap();
        let props = &f["properties"];
        let priority = props["priority"].as_u64().map(|p| u8::try_from(p).unwrap());
        let delivery = AmqpDelivery {
            body: &body,
            content_type: props["content_type"].as_str(),
            content_encoding: props["content_encoding"].as_str(),
            headers: Some(&f["headers"]),
            priority,
            delivery_tag: f["delivery_tag"].as_u64(),
            redelivered: f["redelivered"].as_bool().unwrap(),
        };
        assert_no_secret(&format!("{delivery:?}"));
        let task =
            decode_amqp(&delivery, TASK, LIMIT, now()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(task.id, f["headers"]["id"].as_str().unwrap(), "{name}");
        assert_eq!(task.id, props["correlation_id"].as_str().unwrap());
        assert_eq!(
            task.delivery_tag,
            f["delivery_tag"].as_u64().map(|t| t.to_string())
        );
        assert!(
            same_payload(&task.payload, &py(&f["body_decoded"][0][0])),
            "{name}"
        );
        assert_task_clean(&task);
        match name.as_str() {
            "amqp_message_countdown.json" => assert!(task.eta.is_some()),
            "amqp_message_priority.json" => assert_eq!(task.priority, 5),
            _ => {
                assert_eq!(task.eta, None);
                assert_eq!(task.priority, 0);
            }
        }
    }
}

/// The reference worker stored `SUCCESS:<event_id>` for the task-id capture; the decoded payload
/// hashes to the same id.
#[test]
fn task_id_capture_hashes_to_the_reference_event_id() {
    let results = fixture("redis_result_backend.json");
    let stored = results["results_sample"]["celery-task-meta-lineage-fixture-task-id-0001"]
        ["value"]["result"]
        .as_str()
        .unwrap();
    let raw = fixture("redis_message_task_id.json")["raw"]
        .as_str()
        .unwrap()
        .to_owned();
    let task = decode_redis_envelope(raw.as_bytes(), TASK, LIMIT, now()).unwrap();
    assert_eq!(task.id, "lineage-fixture-task-id-0001");
    assert_eq!(format!("SUCCESS:{}", event_id(&task.payload)), stored);
}

#[test]
fn peek_reads_routing_facts() {
    let f = fixture("redis_message_priority.json");
    let info = peek_redis_envelope(f["raw"].as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(
        info.delivery_tag.as_deref(),
        f["envelope"]["properties"]["delivery_tag"].as_str()
    );
    assert_eq!(info.exchange.as_deref(), Some(""));
    assert_eq!(info.routing_key.as_deref(), Some("celery"));
    assert_eq!(info.task.as_deref(), Some(TASK));
    assert_eq!(
        info.task_id.as_deref(),
        f["envelope"]["headers"]["id"].as_str()
    );
    assert_no_secret(&format!("{info:?}"));
    assert_eq!(peek_redis_envelope(b"not json"), None);
}

#[test]
fn redelivery_flags_are_reported() {
    let f = fixture("redis_message_1.json");
    let mut env = f["envelope"].clone();
    env["headers"]["redelivered"] = json!(true);
    env["properties"]["delivery_info"]["redelivered"] = json!(true);
    let task =
        decode_redis_envelope(&serde_json::to_vec(&env).unwrap(), TASK, LIMIT, now()).unwrap();
    assert!(task.redelivered);

    let body = args_body(&sample_payload());
    let headers = headers_with(&[("x-delivery-count", json!(2))]);
    assert!(amqp(&headers, &body).unwrap().redelivered);
    assert!(!amqp(&real_headers(), &body).unwrap().redelivered);
}

#[test]
fn ignore_result_and_retries_are_read() {
    let headers = headers_with(&[("ignore_result", json!(true)), ("retries", json!(3))]);
    let task = both(&headers, &args_body(&sample_payload())).unwrap();
    assert!(task.ignore_result);
    assert_eq!(task.retries, 3);
    let bad = headers_with(&[("retries", json!(-1))]);
    let err = both(&bad, &args_body(&sample_payload())).unwrap_err();
    assert_eq!(err.kind(), CeleryErrorKind::InvalidTask);
}

// ---------------------------------------------------------------- argument forms

#[test]
fn args_form_and_kwargs_form_give_the_same_payload() {
    let p = sample_payload();
    let forms = [
        json!([[p, DB_URI], {}, embed_null()]),
        json!([[], {"payload": p, "db_uri": DB_URI}, embed_null()]),
        json!([[p], {"db_uri": DB_URI}, embed_null()]),
        json!([[p], {}, embed_null()]),
        json!([[], {"payload": p}, null]),
        json!([[p, DB_URI], {}, {}]),
    ];
    let expected = py(&p);
    for form in forms {
        let task = both(&real_headers(), &serde_json::to_vec(&form).unwrap())
            .unwrap_or_else(|e| panic!("{form}: {e}"));
        assert!(same_payload(&task.payload, &expected), "{form}");
    }
}

#[test]
fn arguments_that_python_would_reject_are_refused() {
    let p = sample_payload();
    let cases = [
        (json!([[p, DB_URI, 3], {}, embed_null()]), "3 were given"),
        (
            json!([[p], {"payload": p}, embed_null()]),
            "multiple values for argument 'payload'",
        ),
        (
            json!([[p, DB_URI], {"db_uri": DB_URI}, embed_null()]),
            "multiple values for argument 'db_uri'",
        ),
        (
            json!([[], {"db_uri": DB_URI}, embed_null()]),
            "missing required argument 'payload'",
        ),
        (
            json!([[p], {"dsn": DB_URI}, embed_null()]),
            "unexpected keyword argument 'dsn'",
        ),
    ];
    for (body, reason) in cases {
        let err = both(&real_headers(), &serde_json::to_vec(&body).unwrap()).unwrap_err();
        assert!(matches!(err, CeleryError::BadArguments(_)), "{err:?}");
        assert!(err.to_string().contains(reason), "{err}");
        assert_eq!(err.kind(), CeleryErrorKind::InvalidTask);
    }
}

#[test]
fn bad_body_shapes_are_refused() {
    let p = sample_payload();
    let cases: [(Value, CeleryError); 5] = [
        (json!({"args": [p]}), CeleryError::BadBodyShape),
        (json!([[p], {}]), CeleryError::BadBodyShape),
        (json!([{"payload": p}, {}, null]), CeleryError::ArgsNotList),
        (
            json!([[p, DB_URI], [DB_URI], null]),
            CeleryError::KwargsNotMapping,
        ),
        (
            json!([[p, DB_URI], {}, [DB_URI]]),
            CeleryError::EmbedNotMapping,
        ),
    ];
    for (body, expected) in cases {
        let err = both(&real_headers(), &serde_json::to_vec(&body).unwrap()).unwrap_err();
        assert_eq!(err, expected);
        assert_eq!(err.kind(), CeleryErrorKind::InvalidTask);
    }
    assert_eq!(CeleryError::ArgsNotList.to_string(), "args is not a list");
    let err = both(&real_headers(), b"[[1], {}, nul").unwrap_err();
    assert_eq!(err, CeleryError::BodyNotJson);
    assert_eq!(err.kind(), CeleryErrorKind::Undecodable);
}

#[test]
fn embed_with_a_chain_or_callback_is_refused() {
    let p = sample_payload();
    let link = json!({"task": "lineage_tasks.notify", "args": [DB_URI], "kwargs": {}, "options": {},
                      "subtask_type": null, "immutable": false, "chord_size": null});
    for key in ["callbacks", "errbacks", "chain", "chord"] {
        let mut embed = embed_null();
        embed[key] = if key == "chord" {
            link.clone()
        } else {
            json!([link])
        };
        let body = json!([[p, DB_URI], {}, embed]);
        let err = both(&real_headers(), &serde_json::to_vec(&body).unwrap()).unwrap_err();
        assert_eq!(err, CeleryError::EmbedUnsupported(key));
        assert_eq!(err.kind(), CeleryErrorKind::Unsupported);
        assert!(err
            .to_string()
            .starts_with("embed (callbacks/chain/chord) not supported"));
    }
    // Empty lists are as good as null.
    let body =
        json!([[p, DB_URI], {}, {"callbacks": [], "errbacks": [], "chain": [], "chord": null}]);
    both(&real_headers(), &serde_json::to_vec(&body).unwrap()).unwrap();
}

// ---------------------------------------------------------------- protocol and content

#[test]
fn non_json_content_types_are_refused_without_deserializing() {
    // A pickle that would run `os.system` if it were ever unpickled.
    let pickle = b"\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x05id -a\x94\x85\x94R\x94.";
    for ct in [
        "application/x-python-serialize",
        "application/x-yaml",
        "application/x-msgpack",
        "text/plain",
    ] {
        let err = amqp_with(&real_headers(), pickle, Some(ct), LIMIT).unwrap_err();
        assert_eq!(err, CeleryError::ContentDisallowed(ct.to_owned()));
        assert_eq!(err.kind(), CeleryErrorKind::ContentDisallowed);
        let raw = envelope(&real_headers(), pickle, ct);
        assert_eq!(
            decode_redis_envelope(&raw, TASK, LIMIT, now()).unwrap_err(),
            err
        );
        assert_err_clean(&err);
    }
    assert_eq!(
        CeleryError::ContentDisallowed("application/x-python-serialize".into()).to_string(),
        "content type application/x-python-serialize refused: only JSON is accepted (pickle is never deserialized)"
    );
    let err = amqp_with(&real_headers(), pickle, None, LIMIT).unwrap_err();
    assert_eq!(err, CeleryError::ContentDisallowed("(none)".into()));
    // Parameters and case do not matter for JSON itself.
    let body = args_body(&sample_payload());
    amqp_with(
        &real_headers(),
        &body,
        Some("Application/JSON; charset=utf-8"),
        LIMIT,
    )
    .unwrap();
}

#[test]
fn non_utf8_content_encoding_is_refused() {
    let body = args_body(&sample_payload());
    let delivery = AmqpDelivery {
        body: &body,
        content_type: Some("application/json"),
        content_encoding: Some("latin-1"),
        headers: Some(&real_headers()),
        priority: None,
        delivery_tag: None,
        redelivered: false,
    };
    let err = decode_amqp(&delivery, TASK, LIMIT, now()).unwrap_err();
    assert_eq!(
        err,
        CeleryError::ContentEncodingUnsupported("latin-1".into())
    );
}

#[test]
fn protocol_v1_is_refused() {
    let v1 = json!({"task": TASK, "id": "0b8e0c0e-2b7f-4d7e-9e5e-1d0c6c3b8f00",
                    "args": [sample_payload(), DB_URI], "kwargs": {}, "retries": 0, "eta": null,
                    "expires": null, "utc": true, "callbacks": null, "errbacks": null,
                    "timelimit": [null, null], "taskset": null, "chord": null});
    let body = serde_json::to_vec(&v1).unwrap();
    let err = both(&json!({}), &body).unwrap_err();
    assert_eq!(err, CeleryError::ProtocolV1);
    assert_eq!(err.to_string(), "protocol v1 message unsupported");
    assert_eq!(err.kind(), CeleryErrorKind::Unsupported);
    // AMQP messages without application_headers at all.
    let delivery = AmqpDelivery {
        body: &body,
        content_type: Some("application/json"),
        content_encoding: None,
        headers: None,
        priority: None,
        delivery_tag: None,
        redelivered: false,
    };
    assert_eq!(
        decode_amqp(&delivery, TASK, LIMIT, now()).unwrap_err(),
        CeleryError::ProtocolV1
    );
    // Neither v1 nor v2.
    let err = both(&json!({"lang": "py"}), &args_body(&sample_payload())).unwrap_err();
    assert_eq!(err, CeleryError::NotATask);
}

#[test]
fn headers_that_are_not_a_mapping_are_refused() {
    for headers in [json!([1, 2]), json!("task"), json!(7)] {
        let err = both(&headers, &args_body(&sample_payload())).unwrap_err();
        assert_eq!(err, CeleryError::HeadersNotMapping);
        assert_eq!(err.kind(), CeleryErrorKind::InvalidTask);
    }
    let err = both(
        &headers_with(&[("task", json!(12))]),
        &args_body(&sample_payload()),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        CeleryError::InvalidHeader { name: "task", .. }
    ));
    let err = both(
        &headers_with(&[("id", json!("<remove>"))]),
        &args_body(&sample_payload()),
    )
    .unwrap_err();
    assert!(matches!(err, CeleryError::InvalidHeader { name: "id", .. }));
}

#[test]
fn unknown_task_is_reported_before_the_body_is_judged() {
    let headers = headers_with(&[("task", json!("billing.tasks.charge"))]);
    let err = both(&headers, &args_body(&sample_payload())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown task 'billing.tasks.charge' (this worker runs 'lineage_tasks.record_lineage_event')"
    );
    assert_eq!(err.kind(), CeleryErrorKind::UnknownTask);
    assert_eq!(err.task_id(), headers["id"].as_str());
    // Another application's pickle task on a shared queue is its business, not a poison message.
    let err = amqp_with(
        &headers,
        b"\x80\x04.",
        Some("application/x-python-serialize"),
        LIMIT,
    )
    .unwrap_err();
    assert_eq!(err.kind(), CeleryErrorKind::UnknownTask);
}

#[test]
fn expired_tasks_are_refused_and_future_expiry_is_kept() {
    let body = args_body(&sample_payload());
    let headers = headers_with(&[("expires", json!("2026-11-26T02:41:22.680109+00:00"))]);
    let err = both(&headers, &body).unwrap_err();
    assert_eq!(
        err.to_string(),
        "task expired at 2026-11-26T02:41:22.680109+00:00"
    );
    assert_eq!(err.kind(), CeleryErrorKind::Expired);
    assert_eq!(err.task_id(), headers["id"].as_str());

    // A naive value is UTC; 02:49:59 is one second before `now()`.
    let headers = headers_with(&[("expires", json!("2026-11-26T02:49:59"))]);
    assert_eq!(
        both(&headers, &body).unwrap_err().kind(),
        CeleryErrorKind::Expired
    );

    let headers = headers_with(&[("expires", json!("2026-11-26T04:50:00+02:00"))]);
    let task = both(&headers, &body).unwrap();
    assert_eq!(task.expires, Some(now()));
    let headers = headers_with(&[("expires", json!("2026-11-26 03:00:00.5"))]);
    let task = both(&headers, &body).unwrap();
    assert_eq!(
        task.expires,
        Some(
            Utc.with_ymd_and_hms(2026, 11, 26, 3, 0, 0).unwrap()
                + chrono::Duration::milliseconds(500)
        )
    );
}

#[test]
fn unparsable_eta_or_expires_is_refused() {
    let body = args_body(&sample_payload());
    for (name, value) in [
        ("eta", json!("tomorrow")),
        ("expires", json!("2026-13-01T00:00:00")),
        ("eta", json!(1_700_000_000)),
    ] {
        let err = both(&headers_with(&[(name, value)]), &body).unwrap_err();
        assert!(
            matches!(err, CeleryError::InvalidHeader { name: n, .. } if n == name),
            "{err:?}"
        );
        assert_eq!(err.kind(), CeleryErrorKind::InvalidTask);
    }
    let headers = headers_with(&[("eta", json!("2026-11-26T02:57:31Z"))]);
    assert_eq!(
        both(&headers, &body).unwrap().eta,
        Some(Utc.with_ymd_and_hms(2026, 11, 26, 2, 57, 31).unwrap())
    );
}

// ---------------------------------------------------------------- body encoding and compression

#[test]
fn bad_base64_is_refused() {
    let f = fixture("redis_message_1.json");
    let mut env = f["envelope"].clone();
    env["body"] = json!("W1t7!!not*base64");
    let err =
        decode_redis_envelope(&serde_json::to_vec(&env).unwrap(), TASK, LIMIT, now()).unwrap_err();
    assert_eq!(err, CeleryError::BadBase64);
    assert_eq!(err.to_string(), "body is not valid base64");
    assert_eq!(err.kind(), CeleryErrorKind::Undecodable);
}

#[test]
fn envelope_without_body_encoding_carries_the_body_as_text() {
    let f = fixture("redis_message_1.json");
    let mut env = f["envelope"].clone();
    env["body"] = json!(String::from_utf8(args_body(&sample_payload())).unwrap());
    env["properties"]
        .as_object_mut()
        .unwrap()
        .remove("body_encoding");
    let task =
        decode_redis_envelope(&serde_json::to_vec(&env).unwrap(), TASK, LIMIT, now()).unwrap();
    assert!(same_payload(&task.payload, &py(&sample_payload())));
    env["properties"]["body_encoding"] = json!("rot13");
    let err =
        decode_redis_envelope(&serde_json::to_vec(&env).unwrap(), TASK, LIMIT, now()).unwrap_err();
    assert_eq!(err, CeleryError::BodyEncodingUnsupported("rot13".into()));
}

#[test]
fn malformed_envelopes_are_refused() {
    for raw in [&b"{\"body\": "[..], b"[]", b"", b"\xff\xfe"] {
        let err = decode_redis_envelope(raw, TASK, LIMIT, now()).unwrap_err();
        assert!(matches!(err, CeleryError::EnvelopeNotJson(_)), "{err:?}");
    }
    let err =
        decode_redis_envelope(br#"{"body": 5, "headers": {}}"#, TASK, LIMIT, now()).unwrap_err();
    assert_eq!(err, CeleryError::BadEnvelopeField("body"));
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn bz2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    lzma_rs::xz_compress(&mut std::io::BufReader::new(data), &mut out).unwrap();
    out
}

fn lzma_alone(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    lzma_rs::lzma_compress(&mut std::io::BufReader::new(data), &mut out).unwrap();
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

/// A test-side compressor, one per codec family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Packer {
    Zlib,
    Bz2,
    Xz,
    LzmaAlone,
    Zstd,
}

impl Packer {
    fn pack(self, data: &[u8]) -> Vec<u8> {
        match self {
            Packer::Zlib => zlib(data),
            Packer::Bz2 => bz2(data),
            Packer::Xz => xz(data),
            Packer::LzmaAlone => lzma_alone(data),
            Packer::Zstd => zstd(data),
        }
    }
}

/// `compression` header values (kombu's MIME types and aliases) and how to make such a body.
const CODECS: [(&str, Packer); 10] = [
    ("application/x-gzip", Packer::Zlib),
    ("zlib", Packer::Zlib),
    ("gzip", Packer::Zlib),
    ("application/x-bz2", Packer::Bz2),
    ("bzip2", Packer::Bz2),
    ("application/x-lzma", Packer::Xz),
    ("xz", Packer::Xz),
    ("lzma", Packer::LzmaAlone),
    ("application/zstd", Packer::Zstd),
    ("zstandard", Packer::Zstd),
];

#[test]
fn compressed_bodies_are_decompressed() {
    let body = args_body(&sample_payload());
    assert_eq!(zlib(&body)[0], 0x78, "kombu's x-gzip is a zlib stream");
    for (name, packer) in CODECS {
        let headers = headers_with(&[("compression", json!(name))]);
        let task = both(&headers, &packer.pack(&body)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            same_payload(&task.payload, &py(&sample_payload())),
            "{name}"
        );
    }
}

/// Python's `lzma.compress(b" " * (2 << 20) + b"[[0], {}, null]")`: 456 bytes that expand to
/// 2 MiB. (lzma-rs only writes stored LZMA2 chunks, useless for a bomb.)
const PYTHON_XZ_BOMB: [&str; 7] = [
    "/Td6WFoAAATm1rRGAgAhARYAAAB0L+Wj//8RAWxdABBv+7/+o7Fe5fg/sqomVfhocEFwFQ+N/R5MG4pCtxn0aRhx",
    "rmYjiopNL6MN2X+m44wjEVPgWRjFdYrid/i2lH8MasDedElk4ulcU7IE2PdEDKtfDW1G6eXDdoi3llestk3haR1v",
    "+0uIEGxCy4g/XACP0E6vJiiUcR89jyThcJ6nI1/sKMuF0ZWYin4qkfIndfcZwAaYTZj92K/VkA/EJVP49ZE2MQWl",
    "sO5vwXBNRwzRkRGqrWAdus6xJxhcWYbpZlJYvul2rFnk5VsFCPnH2q38+1IrdM0eWyBC+d1TPfgpZAk7gMsqbN+1",
    "O/DEvS5fqg8+S2ZCkBMO/xCT+HF4WfgLzf+VKEYPqfx83vuaMC5WwI+F84OBwGXEJVP49ZE2MQWlsO5vwXBNRwzR",
    "kRGqrWAdus6xJxhcWYbpZlJYvul2rFnk5VsFCPnH2q38+1IrdM0eWyBC+d1TPfgpZAk7gMsqbN+1O/DEvEgn5liA",
    "APwAFQAcpksNQxoBr6sxnTaUlmaVz4vyegAAANwNZ6Vz2zLlAAGjA4+AgAF92PYDscRn+wIAAAAABFla",
];

/// Python's `lzma.compress` of a small `[args, kwargs, embed]` body (real LZMA2 chunks).
const PYTHON_XZ_BODY: &str = "/Td6WFoAAATm1rRGAgAhARYAAAB0L+Wj4AEqAMddAC3h6ERkMQ2X/mNOdb4ovCXv6ixkUdrkqMf4tY6PNuPqrtKo431CvEef7XYdh5Cm8527GZcj/wINGKapYUguoLZu6cXd1E7KQJoINVJl5PyGyjKPN7YjUPYjKgfpIGYBElQCwQKAuNwBl14BaCaAVAyo1GafepqO6U5TK71vds8iifduJzNGRCL+38DL2ACQC2C6XfTSRwau4EgpYeygexa3OfFpuA5xyzQ4sdNQxL5+ndhCe2tHoHOfkZIEPuYIoRHp0yxqUxgAADk/+0f3rWlvAAHjAasCAAAr3gv3scRn+wIAAAAABFla";

fn b64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

#[test]
fn python_made_xz_bodies_decode() {
    let headers = headers_with(&[("compression", json!("application/x-lzma"))]);
    let task = both(&headers, &b64(PYTHON_XZ_BODY)).unwrap();
    assert_eq!(
        event_id(&task.payload),
        event_id(&py(&json!({
        "dataset_uuid": "965eda32-dae4-4550-8201-e2bd73ab4876", "operation": "simplify",
        "processor_id": "etl-worker-15", "note": "simplify simplify simplify simplify"})))
    );
    // Under a 4 MiB cap the bomb is just a padded body whose payload is 0.
    let bomb = b64(&PYTHON_XZ_BOMB.concat());
    let task = amqp_with(&headers, &bomb, Some("application/json"), 4 << 20).unwrap();
    assert_eq!(task.payload, PyValue::Int("0".into()));
}

#[test]
fn compression_bombs_are_stopped_at_the_cap() {
    // 2 MiB of JSON whitespace around a tiny body, a few KiB compressed: over the 1 MiB cap.
    let mut huge = vec![b' '; 2 << 20];
    huge.extend_from_slice(b"[[0], {}, null]");
    let mut packed_by = std::collections::HashMap::new();
    packed_by.insert(Packer::Xz, b64(&PYTHON_XZ_BOMB.concat()));
    for (name, packer) in CODECS {
        let packed = packed_by
            .entry(packer)
            .or_insert_with(|| packer.pack(&huge))
            .clone();
        assert!(packed.len() < LIMIT / 4, "{name}: {}", packed.len());
        let headers = headers_with(&[("compression", json!(name))]);
        let err = both(&headers, &packed).unwrap_err();
        assert_eq!(
            err,
            CeleryError::DecompressedTooLarge { limit: LIMIT },
            "{name}"
        );
        assert_eq!(
            err.to_string(),
            "decompressed body over the 1048576-byte limit"
        );
        assert_eq!(err.kind(), CeleryErrorKind::Undecodable);
    }
}

#[test]
fn corrupt_or_unknown_compression_is_refused() {
    let body = args_body(&sample_payload());
    for (name, packer) in CODECS {
        let mut packed = packer.pack(&body);
        packed.truncate(packed.len() / 2);
        let headers = headers_with(&[("compression", json!(name))]);
        let err = both(&headers, &packed).unwrap_err();
        assert!(
            matches!(err, CeleryError::Decompress { .. }),
            "{name}: {err:?}"
        );
    }
    let headers = headers_with(&[("compression", json!("application/x-brotli"))]);
    let err = both(&headers, &body).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported compression 'application/x-brotli'"
    );
    assert_eq!(err.kind(), CeleryErrorKind::Unsupported);
}

#[test]
fn uncompressed_bodies_over_the_limit_are_refused() {
    let body = args_body(&sample_payload());
    let err = amqp_with(&real_headers(), &body, Some("application/json"), 100).unwrap_err();
    assert!(
        matches!(err, CeleryError::BodyTooLarge { limit: 100, .. }),
        "{err:?}"
    );
    let raw = envelope(&real_headers(), &body, "application/json");
    let err = decode_redis_envelope(&raw, TASK, 100, now()).unwrap_err();
    assert!(
        matches!(err, CeleryError::BodyTooLarge { limit: 100, .. }),
        "{err:?}"
    );
}

// ---------------------------------------------------------------- kombu tagged values

#[test]
fn tagged_values_are_untagged() {
    let tagged = json!({
        "started_at": {"__type__": "datetime", "__value__": "2024-03-01T00:00:01.193630+00:00"},
        "day": {"__type__": "date", "__value__": "2024-03-01"},
        "at": {"__type__": "time", "__value__": "12:30:00"},
        "tolerance": {"__type__": "decimal", "__value__": "0.50"},
        "dataset_uuid": {"__type__": "uuid", "__value__": {"hex": "965EDA32DAE445508201E2BD73AB4876"}},
        "old_uuid": {"__type__": "uuid", "__value__": "965eda32-dae4-4550-8201-e2bd73ab4876"},
        "note": {"__type__": "bytes", "__value__": "h\u{e9}llo"},
        "blob": {"__type__": "base64", "__value__": "/w=="},
        "inputs": [{"__type__": "uuid", "__value__": {"hex": "2fa91425cb0048539d2c67eda13ffe79"}}],
        "nested": {"deep": [{"__value__": "2024-01-01", "__type__": "date"}]},
    });
    let plain = json!({
        "started_at": "2024-03-01T00:00:01.193630+00:00",
        "day": "2024-03-01",
        "at": "12:30:00",
        "tolerance": "0.50",
        "dataset_uuid": "965eda32-dae4-4550-8201-e2bd73ab4876",
        "old_uuid": "965eda32-dae4-4550-8201-e2bd73ab4876",
        "note": "h\u{e9}llo",
        "blob": "/w==",
        "inputs": ["2fa91425-cb00-4853-9d2c-67eda13ffe79"],
        "nested": {"deep": ["2024-01-01"]},
    });
    let untagged = untag_kombu_values(py(&tagged));
    assert_eq!(
        python_json::dumps(&untagged),
        python_json::dumps(&py(&plain))
    );
    assert_eq!(event_id(&untagged), event_id(&py(&plain)));
}

#[test]
fn things_that_only_look_like_tags_are_kept() {
    let kept = json!([
        {"__type__": "datetime", "__value__": "x", "extra": 1},
        {"__type__": "pickle", "__value__": "gASV"},
        {"__type__": "datetime", "__value__": 5},
        {"__type__": "uuid", "__value__": {"hex": "not-hex"}},
        {"__type__": "uuid", "__value__": {"int": 5}},
        {"__type__": 1, "__value__": "x"},
        {"__type__": "decimal"},
    ]);
    let v = py(&kept);
    assert_eq!(untag_kombu_values(v.clone()), v);
}

#[test]
fn a_tagged_payload_gets_the_id_of_its_plain_twin() {
    let mut tagged = sample_payload();
    let started = tagged["started_at"].as_str().unwrap().to_owned();
    let uuid = tagged["dataset_uuid"].as_str().unwrap().replace('-', "");
    tagged["started_at"] = json!({"__type__": "datetime", "__value__": started});
    tagged["dataset_uuid"] = json!({"__type__": "uuid", "__value__": {"hex": uuid}});
    let task = both(&real_headers(), &args_body(&tagged)).unwrap();
    assert_eq!(event_id(&task.payload), event_id(&py(&sample_payload())));
}

// ---------------------------------------------------------------- db_uri never leaks

#[test]
fn db_uri_never_appears_in_errors_or_debug() {
    let p = sample_payload();
    let bodies = [
        json!([[p, DB_URI], {}, {"chain": [{"task": "x", "args": [DB_URI]}]}]),
        json!([[p, DB_URI, DB_URI], {}, null]),
        json!([[p], {DB_URI: DB_URI}, null]),
        json!([DB_URI, {}, null]),
        json!({"task": DB_URI, "args": [DB_URI]}),
        json!([[p, DB_URI], DB_URI, null]),
        json!([[p, DB_URI], {}, DB_URI]),
    ];
    for body in bodies {
        let body = serde_json::to_vec(&body).unwrap();
        for headers in [real_headers(), json!({"argsrepr": DB_URI})] {
            if let Err(e) = both(&headers, &body) {
                assert_err_clean(&e);
            }
        }
    }
    // Reasons quote names (task, content type, codec), never values; argsrepr is never read.
    let headers = headers_with(&[("eta", json!(DB_URI))]);
    let err = both(&headers, &args_body(&p)).unwrap_err();
    assert!(matches!(
        err,
        CeleryError::InvalidHeader { name: "eta", .. }
    ));
    let task = both(&real_headers(), &args_body(&p)).unwrap();
    assert_task_clean(&task);
}

#[test]
fn no_input_panics() {
    let raw = fixture("redis_message_1.json")["raw"]
        .as_str()
        .unwrap()
        .as_bytes()
        .to_vec();
    for cut in (0..raw.len()).step_by(7) {
        let _ = decode_redis_envelope(&raw[..cut], TASK, LIMIT, now());
        let mut flipped = raw.clone();
        flipped[cut] ^= 0x55;
        let _ = decode_redis_envelope(&flipped, TASK, LIMIT, now());
    }
    let body = args_body(&sample_payload());
    for (name, packer) in CODECS {
        let packed = packer.pack(&body);
        let headers = headers_with(&[("compression", json!(name))]);
        for i in 0..packed.len() {
            let mut bad = packed.clone();
            bad[i] = bad[i].wrapping_add(1);
            let _ = amqp(&headers, &bad);
        }
    }
}

// ---------------------------------------------------------------- results

#[test]
fn success_record_matches_celery_byte_for_byte() {
    let results = fixture("redis_result_backend.json");
    for (key, entry) in results["results_sample"].as_object().unwrap() {
        let value = &entry["value"];
        let id = value["task_id"].as_str().unwrap();
        assert_eq!(result_key(id), *key);
        let now = value["date_done"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap();
        let text = result_meta_success(id, value["result"].as_str().unwrap(), now);
        // Python's json.dumps of the record, in Celery's key order.
        let expected = format!(
            "{{\"status\": \"SUCCESS\", \"result\": \"{}\", \"traceback\": null, \"children\": [], \"date_done\": \"{}\", \"task_id\": \"{}\"}}",
            value["result"].as_str().unwrap(),
            value["date_done"].as_str().unwrap(),
            id
        );
        assert_eq!(text, expected);
    }
    let whole_second = Utc.with_ymd_and_hms(2026, 11, 26, 2, 57, 6).unwrap();
    assert!(result_meta_success("t", "SUCCESS:x", whole_second)
        .contains("\"date_done\": \"2026-11-26T02:57:06+00:00\""));
}

#[test]
fn failure_and_revoked_records() {
    let t =
        Utc.with_ymd_and_hms(2026, 11, 26, 2, 57, 6).unwrap() + chrono::Duration::microseconds(7);
    let v: Value =
        serde_json::from_str(&result_meta_failure("id-1", "ValueError", "bad payload", t)).unwrap();
    assert_eq!(v["status"], "FAILURE");
    assert_eq!(
        v["result"],
        json!({"exc_type": "ValueError", "exc_message": ["bad payload"], "exc_module": "builtins"})
    );
    assert_eq!(v["date_done"], "2026-11-26T02:57:06.000007+00:00");
    assert_eq!(v["task_id"], "id-1");
    assert_eq!(v["children"], json!([]));
    assert!(v["traceback"]
        .as_str()
        .unwrap()
        .contains("ValueError: bad payload"));

    let v: Value = serde_json::from_str(&result_meta_failure(
        "id-2",
        "celery.exceptions.NotRegistered",
        "'x.y'",
        t,
    ))
    .unwrap();
    assert_eq!(v["result"]["exc_module"], "celery.exceptions");
    assert_eq!(v["result"]["exc_type"], "NotRegistered");

    let v: Value = serde_json::from_str(&result_meta_revoked("id-3", "expired", t)).unwrap();
    assert_eq!(v["status"], "REVOKED");
    assert_eq!(
        v["result"],
        json!({"exc_type": "TaskRevokedError", "exc_message": ["expired"], "exc_module": "celery.exceptions"})
    );
    assert_eq!(v["traceback"], Value::Null);
}

// ---------------------------------------------------------------- builders

#[test]
fn built_redis_envelope_round_trips_and_has_kombu_shape() {
    let f = fixture("redis_message_1.json");
    let payload = decode_redis_envelope(f["raw"].as_str().unwrap().as_bytes(), TASK, LIMIT, now())
        .unwrap()
        .payload;
    let raw = build_redis_envelope(&payload, TASK, "celery", "task-1", "tag-1");
    assert_no_secret(&raw);
    let task = decode_redis_envelope(raw.as_bytes(), TASK, LIMIT, now()).unwrap();
    assert_eq!(task.id, "task-1");
    assert_eq!(task.delivery_tag.as_deref(), Some("tag-1"));
    assert!(same_payload(&task.payload, &payload));

    // Same keys, in the same order, as the capture (python_json keeps the order).
    let keys = |v: &PyValue| -> Vec<String> {
        match v {
            PyValue::Object(fields) => fields.iter().map(|(k, _)| k.clone()).collect(),
            _ => Vec::new(),
        }
    };
    let field = |v: &PyValue, name: &str| -> PyValue {
        match v {
            PyValue::Object(fields) => fields.iter().find(|(k, _)| k == name).unwrap().1.clone(),
            _ => PyValue::Null,
        }
    };
    let ours = python_json::parse(raw.as_bytes()).unwrap();
    let theirs = python_json::parse(f["raw"].as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(keys(&ours), keys(&theirs));
    assert_eq!(
        keys(&field(&ours, "headers")),
        keys(&field(&theirs, "headers"))
    );
    let mut their_props = keys(&field(&theirs, "properties"));
    their_props.retain(|k| k != "reply_to");
    assert_eq!(keys(&field(&ours, "properties")), their_props);

    let PyValue::Str(ours_repr) = field(&field(&ours, "headers"), "argsrepr") else {
        panic!()
    };
    assert!(
        ours_repr.starts_with("({'") && ours_repr.ends_with("},)"),
        "{ours_repr}"
    );
}

/// `argsrepr` is Python's `repr((payload,))`: the capture's `repr((payload, db_uri))` minus the
/// `db_uri`. The payload is spelled out in the capture's key order.
#[test]
fn argsrepr_is_python_repr() {
    let s = |v: &str| PyValue::Str(v.to_owned());
    let obj = |fields: Vec<(&str, PyValue)>| {
        PyValue::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    };
    let payload = obj(vec![
        ("dataset_uuid", s("965eda32-dae4-4550-8201-e2bd73ab4876")),
        ("operation", s("simplify")),
        ("crs_from", s("EPSG:5070")),
        ("crs_to", s("EPSG:5070")),
        ("processor_id", s("etl-worker-15")),
        ("started_at", s("2024-03-01T00:00:01.193630Z")),
        (
            "inputs",
            PyValue::Array(vec![
                s("2fa91425-cb00-4853-9d2c-67eda13ffe79"),
                s("244caf9c-4dab-4481-b253-edc618187993"),
            ]),
        ),
        (
            "parameters",
            obj(vec![
                ("tolerance", PyValue::Float(0.5)),
                ("preserve_topology", PyValue::Bool(true)),
            ]),
        ),
        (
            "bbox",
            PyValue::Array(
                [9.004034, 58.008976, 12.179954, 60.990204]
                    .map(PyValue::Float)
                    .to_vec(),
            ),
        ),
        ("output_uri", s("file:///data/gis/simplify/965eda32.gpkg")),
        (
            "software",
            obj(vec![("gdal", s("3.6.2")), ("pipeline", s("geo-etl/2.4.9"))]),
        ),
    ]);
    let msg = build_amqp_message(&payload, TASK, "t");
    let ours = msg.headers["argsrepr"].as_str().unwrap();
    let theirs = real_headers()["argsrepr"].as_str().unwrap().to_owned();
    let stem = ours.strip_suffix(",)").unwrap();
    assert_eq!(theirs, format!("{stem}, '{DB_URI}')"));

    let tricky = PyValue::Array(vec![
        s("it's"),
        s("say \"hi\""),
        s("both ' and \""),
        s("tab\tnew\nline\u{1}"),
        PyValue::Null,
        PyValue::Int("10000000000000000000000".into()),
    ]);
    let msg = build_amqp_message(&tricky, TASK, "t");
    assert_eq!(
        msg.headers["argsrepr"],
        json!(
            r#"(["it's", 'say "hi"', 'both \' and "', 'tab\tnew\nline\x01', None, 10000000000000000000000],)"#
        )
    );
}

#[test]
fn built_amqp_message_round_trips() {
    let payload = py(&sample_payload());
    let msg = build_amqp_message(&payload, TASK, "task-2");
    assert_no_secret(&String::from_utf8_lossy(&msg.body));
    let headers = Value::Object(msg.headers.clone());
    assert_eq!(headers["retries"], json!(0));
    assert_eq!(headers["timelimit"], json!([null, null]));
    let delivery = AmqpDelivery {
        body: &msg.body,
        content_type: Some(msg.content_type),
        content_encoding: Some(msg.content_encoding),
        headers: Some(&headers),
        priority: Some(0),
        delivery_tag: Some(9),
        redelivered: false,
    };
    let task = decode_amqp(&delivery, TASK, LIMIT, now()).unwrap();
    assert_eq!(task.id, "task-2");
    assert_eq!(msg.correlation_id, "task-2");
    assert!(same_payload(&task.payload, &payload));
}
