//! JSON read and written exactly as Python's `json` module does it.
//!
//! The event id is the SHA-256 of `json.dumps(payload, sort_keys=True)`, so geoprov must produce
//! the very bytes CPython produces, and must read payloads the way `json.loads` reads them.
//!
//! Why this is hand-written: no crate reproduces Python's `json.dumps`. `serde_json` writes
//! `1e16` and `1e-7` where Python writes `1e+16` and `1e-07`; it emits raw UTF-8 where
//! `ensure_ascii` escapes; it has no `NaN`/`Infinity` tokens, which Python reads and writes; it
//! has other separators and no arbitrary-size ints; and its objects (sorted maps, as this crate
//! builds it) keep neither a `dict`'s insertion order nor its handling of a repeated key (the last
//! value, at the first key's position). What we reuse is `ryu`'s shortest round-trip digits,
//! which are the digits Python's `repr` picks, exact ties to the even digit included (Rust's own
//! `{:e}` rounds those up); we lay them out Python's way.
//!
//! What [`parse`] mirrors from `json.loads` (CPython 3.11, strict mode):
//! - whitespace is only space, tab, LF and CR; anything after the value is an error;
//! - `NaN`, `Infinity` and `-Infinity` are accepted as floats;
//! - a number with a fraction or an exponent is a float (`1e400` overflows to infinity, as
//!   `float()` does); other numbers are ints kept as exact decimal text (`-0` becomes `0`), with
//!   CPython's 4300-digit limit on int conversion;
//! - raw control characters inside strings are refused; `\uHHHH` surrogate pairs combine;
//! - duplicate object keys behave like `dict`: the last value wins, at the first key's position.
//!
//! Where it deliberately differs (each refusal has a clear reason):
//! - a lone UTF-16 surrogate escape (`"\ud800"`) is refused: Python keeps it, but a Rust `String`
//!   cannot hold it;
//! - a leading UTF-8 byte order mark is refused, as `json.loads` does for a `str` (for `bytes`
//!   Python would strip it);
//! - only UTF-8 input is read (Python also sniffs UTF-16/32 in `bytes`);
//! - nesting deeper than [`MAX_DEPTH`] is refused, where Python raises `RecursionError` at about
//!   1000 levels.
//!
//! The parts: `parse` is the reader, `dumps` the writer (separators, `ensure_ascii` escaping, key
//! sorting), `float_repr` Python's float `repr`; this file holds [`PyValue`] and the public API.
//!
//! Not for: general-purpose JSON handling. Use `serde_json` for our own documents; use this module
//! only where the bytes must agree with Python.

mod dumps;
mod float_repr;
mod parse;

pub use dumps::{dumps, dumps_sorted, write_dumps, write_dumps_sorted};
pub use parse::{parse, PyJsonError, MAX_DEPTH, MAX_INT_DIGITS};

/// A JSON value as Python's `json` module sees it.
///
/// Values built by [`parse`] uphold the invariants below; values built by hand must too, or
/// [`dumps`] will not match Python.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// `null` (`None`).
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An int, as the canonical decimal text Python prints for it (`"0"`, `"-12"`, any size).
    Int(String),
    /// A float, including NaN and the infinities.
    Float(f64),
    /// A string.
    Str(String),
    /// An array (`list`).
    Array(Vec<PyValue>),
    /// An object (`dict`): keys in first-insertion order, each key once.
    Object(Vec<(String, PyValue)>),
}

impl PyValue {
    /// The value of `key` if `self` is an object holding it (the last one if a hand-built object
    /// repeats the key, as a `dict` would keep).
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Object(entries) => {
                entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    /// The text if `self` is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The elements if `self` is an array.
    pub fn as_array(&self) -> Option<&[PyValue]> {
        match self {
            PyValue::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The entries if `self` is an object.
    pub fn as_object(&self) -> Option<&[(String, PyValue)]> {
        match self {
            PyValue::Object(entries) => Some(entries),
            _ => None,
        }
    }

    /// Whether `self` is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, PyValue::Null)
    }

    /// The JSON type's name, for messages: `null`, `boolean`, `integer`, `float`, `string`,
    /// `array` or `object`.
    pub fn type_name(&self) -> &'static str {
        match self {
            PyValue::Null => "null",
            PyValue::Bool(_) => "boolean",
            PyValue::Int(_) => "integer",
            PyValue::Float(_) => "float",
            PyValue::Str(_) => "string",
            PyValue::Array(_) => "array",
            PyValue::Object(_) => "object",
        }
    }
}

impl From<bool> for PyValue {
    fn from(b: bool) -> Self {
        PyValue::Bool(b)
    }
}

impl From<i64> for PyValue {
    fn from(i: i64) -> Self {
        PyValue::Int(i.to_string())
    }
}

impl From<u64> for PyValue {
    fn from(i: u64) -> Self {
        PyValue::Int(i.to_string())
    }
}

impl From<f64> for PyValue {
    fn from(f: f64) -> Self {
        PyValue::Float(f)
    }
}

impl From<&str> for PyValue {
    fn from(s: &str) -> Self {
        PyValue::Str(s.to_owned())
    }
}

impl From<String> for PyValue {
    fn from(s: String) -> Self {
        PyValue::Str(s)
    }
}

/// Helpers shared by the tests of this module and its parts.
#[cfg(test)]
mod test_support {
    use super::{parse, PyJsonError, PyValue};

    pub(super) fn parse_ok(text: &str) -> PyValue {
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
    }

    pub(super) fn parse_err(input: &[u8]) -> PyJsonError {
        match parse(input) {
            Ok(v) => panic!(
                "{:?} should be refused, got {v:?}",
                String::from_utf8_lossy(input)
            ),
            Err(e) => e,
        }
    }

    pub(super) fn obj(entries: &[(&str, PyValue)]) -> PyValue {
        PyValue::Object(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    pub(super) fn int(text: &str) -> PyValue {
        PyValue::Int(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::event::event_id::{event_id_of, EventId};
    use proptest::prelude::*;

    /// Every vector made by real Python: the id matches, and `dumps` gives back the exact text.
    #[test]
    fn fixture_event_id_vectors() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/event_id_vectors.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).expect("fixture JSON");
        assert_eq!(vectors.len(), 40, "the fixture has 40 vectors");
        for vector in &vectors {
            let name = vector["name"].as_str().expect("name");
            let payload = vector["payload_json"].as_str().expect("payload_json");
            let expected = vector["event_id"].as_str().expect("event_id");
            let value = parse(payload.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                dumps(&value),
                payload,
                "{name}: dumps must reproduce payload_json"
            );
            let (id, canonical) = event_id_of(&value);
            assert_eq!(
                id.to_hex(),
                expected,
                "{name}: canonical text was {canonical}"
            );
            assert_eq!(dumps_sorted(&parse_ok(&canonical)), canonical, "{name}");
        }
        let id = |name: &str| {
            let v = vectors.iter().find(|v| v["name"] == name).expect(name);
            EventId::from_hex(v["event_id"].as_str().expect("id")).expect("hex")
        };
        assert_eq!(
            id("required_fields_only"),
            id("required_fields_reversed_insertion_order_same_id")
        );
    }

    #[test]
    fn accessors() {
        let v = parse_ok(r#"{"s": "x", "a": [1], "n": null}"#);
        assert_eq!(v.get("s").and_then(PyValue::as_str), Some("x"));
        assert_eq!(
            v.get("a").and_then(PyValue::as_array),
            Some(&[int("1")][..])
        );
        assert!(v.get("n").is_some_and(PyValue::is_null));
        assert_eq!(v.get("missing"), None);
        assert_eq!(int("1").get("s"), None);
        assert_eq!(PyValue::from(-3i64), int("-3"));
        assert_eq!(PyValue::from(u64::MAX), int("18446744073709551615"));
        assert_eq!(PyValue::from(String::from("s")).type_name(), "string");
        assert_eq!(PyValue::from(1.5).type_name(), "float");
    }

    fn py_value() -> impl Strategy<Value = PyValue> {
        let leaf = prop_oneof![
            Just(PyValue::Null),
            any::<bool>().prop_map(PyValue::Bool),
            any::<i64>().prop_map(PyValue::from),
            "-?[1-9][0-9]{0,60}".prop_map(PyValue::Int),
            any::<f64>()
                .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
                .prop_map(PyValue::Float),
            any::<String>().prop_map(PyValue::Str),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(PyValue::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| PyValue::Object(m.into_iter().rev().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn dumps_then_parse_round_trips(v in py_value()) {
            let text = dumps(&v);
            prop_assert!(text.is_ascii());
            prop_assert_eq!(&parse(text.as_bytes()).expect("own output parses"), &v);
            let sorted = dumps_sorted(&v);
            prop_assert_eq!(dumps(&parse(sorted.as_bytes()).expect("sorted parses")), sorted);
        }
    }
}
