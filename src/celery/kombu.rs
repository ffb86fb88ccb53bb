//! kombu's tagged JSON values (`kombu/utils/json.py`) → plain JSON values.

use crate::event::python_json::PyValue;

/// Replace every kombu tagged value `{"__type__": T, "__value__": V}` in `v`, at any depth, by
/// the plain JSON value described in the [module docs](super#kombu-tagged-values-and-the-event-id).
///
/// An object is a tag only if it has exactly the keys `__type__` and `__value__` (kombu's
/// `object_hook` test), `T` is one of `datetime`, `date`, `time`, `decimal`, `uuid`, `bytes`,
/// `base64`, and `V` has the shape kombu writes; anything else is returned unchanged.
#[must_use]
pub fn untag_kombu_values(v: PyValue) -> PyValue {
    match v {
        PyValue::Array(items) => {
            PyValue::Array(items.into_iter().map(untag_kombu_values).collect())
        }
        PyValue::Object(fields) => {
            let fields: Vec<(String, PyValue)> = fields
                .into_iter()
                .map(|(k, v)| (k, untag_kombu_values(v)))
                .collect();
            match plain_value(&fields) {
                Some(plain) => plain,
                None => PyValue::Object(fields),
            }
        }
        other => other,
    }
}

/// The plain value of a tag, or `None` if `fields` is not a well-formed kombu tag.
fn plain_value(fields: &[(String, PyValue)]) -> Option<PyValue> {
    let [(k1, v1), (k2, v2)] = fields else {
        return None;
    };
    let (tag, value) = match (k1.as_str(), k2.as_str()) {
        ("__type__", "__value__") => (v1, v2),
        ("__value__", "__type__") => (v2, v1),
        _ => return None,
    };
    let PyValue::Str(tag) = tag else {
        return None;
    };
    match (tag.as_str(), value) {
        (
            "datetime" | "date" | "time" | "decimal" | "bytes" | "base64" | "uuid",
            PyValue::Str(s),
        ) => {
            if tag == "uuid" {
                // Pre-5.3 kombu wrote `str(uuid)`; normalise it like the `hex` form.
                canonical_uuid(s).map(PyValue::Str)
            } else {
                Some(PyValue::Str(s.clone()))
            }
        }
        // kombu ≥ 5.3: `{"hex": uuid.hex}`, decoded with `uuid.UUID(**value)`.
        ("uuid", PyValue::Object(inner)) => match inner.as_slice() {
            [(key, PyValue::Str(hex))] if key == "hex" => canonical_uuid(hex).map(PyValue::Str),
            _ => None,
        },
        _ => None,
    }
}

/// `str(uuid.UUID(s))`: 32 hex digits (hyphens, braces and a `urn:uuid:` prefix allowed, as
/// Python allows them) → lowercase `8-4-4-4-12`.
fn canonical_uuid(s: &str) -> Option<String> {
    let s = s.strip_prefix("urn:uuid:").unwrap_or(s);
    let s = s.trim_start_matches('{').trim_end_matches('}');
    let digits: Vec<char> = s
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if digits.len() != 32 || !digits.iter().all(char::is_ascii_hexdigit) {
        return None;
    }
    let mut out = String::with_capacity(36);
    for (i, c) in digits.iter().enumerate() {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push('-');
        }
        out.push(*c);
    }
    Some(out)
}
