//! AMQP field tables to and from JSON, the way py-amqp reads and writes them, and reading
//! single headers.
//!
//! Not for: which headers geoprov sets (the `HEADER_*` constants in the parent module) or
//! Celery's (see [`crate::celery`]).

use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Map, Value};

/// An AMQP value as JSON, the way py-amqp hands it to Python: strings (long strings as UTF-8,
/// lossy), booleans, integers, floats, void → `null`, arrays, tables → objects.
pub(super) fn value_to_json(v: &AMQPValue) -> Value {
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
pub(super) fn table_to_json(t: &FieldTable) -> Value {
    Value::Object(
        t.inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), value_to_json(v)))
            .collect(),
    )
}

/// A JSON value as the AMQP value py-amqp would write for the same Python value: str `S`,
/// bool `t`, int `l`, float `d`, None `V`, list `A`, dict `F`.
pub(super) fn json_to_value(v: &Value) -> AMQPValue {
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
pub(super) fn json_to_table(m: &Map<String, Value>) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in m {
        table.insert(ShortString::from(k.as_str()), json_to_value(v));
    }
    table
}

/// An integer header, if it is one (any AMQP integer type, or decimal text).
pub(super) fn header_u32(headers: Option<&FieldTable>, name: &str) -> Option<u32> {
    let value = headers?.inner().get(name)?;
    match value_to_json(value) {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A text header.
pub(super) fn header_text(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A long-string header value.
pub(super) fn text_value(s: &str) -> AMQPValue {
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
}
