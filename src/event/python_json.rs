//! PLACEHOLDER (being replaced): Python-compatible JSON.
/// A JSON value as Python's json module sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    Null,
    Bool(bool),
    Int(String),
    Float(f64),
    Str(String),
    Array(Vec<PyValue>),
    Object(Vec<(String, PyValue)>),
}
/// Parse error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PyJsonError(pub String);
/// json.loads
pub fn parse(input: &[u8]) -> Result<PyValue, PyJsonError> {
    let v: serde_json::Value =
        serde_json::from_slice(input).map_err(|e| PyJsonError(e.to_string()))?;
    Ok(from_serde(v))
}
fn from_serde(v: serde_json::Value) -> PyValue {
    match v {
        serde_json::Value::Null => PyValue::Null,
        serde_json::Value::Bool(b) => PyValue::Bool(b),
        serde_json::Value::Number(n) => {
            if n.is_f64() {
                PyValue::Float(n.as_f64().unwrap_or(0.0))
            } else {
                PyValue::Int(n.to_string())
            }
        }
        serde_json::Value::String(s) => PyValue::Str(s),
        serde_json::Value::Array(a) => PyValue::Array(a.into_iter().map(from_serde).collect()),
        serde_json::Value::Object(o) => {
            PyValue::Object(o.into_iter().map(|(k, v)| (k, from_serde(v))).collect())
        }
    }
}
/// json.dumps(v, sort_keys=True)
pub fn dumps_sorted(v: &PyValue) -> String {
    dumps_inner(v, true)
}
/// json.dumps(v)
pub fn dumps(v: &PyValue) -> String {
    dumps_inner(v, false)
}
fn dumps_inner(v: &PyValue, sort: bool) -> String {
    match v {
        PyValue::Null => "null".into(),
        PyValue::Bool(b) => b.to_string(),
        PyValue::Int(s) => s.clone(),
        PyValue::Float(f) => format!("{f:?}"),
        PyValue::Str(s) => serde_json::to_string(s).unwrap_or_default(),
        PyValue::Array(a) => format!(
            "[{}]",
            a.iter()
                .map(|x| dumps_inner(x, sort))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        PyValue::Object(o) => {
            let mut items: Vec<&(String, PyValue)> = o.iter().collect();
            if sort {
                items.sort_by(|a, b| a.0.cmp(&b.0));
            }
            format!(
                "{{{}}}",
                items
                    .iter()
                    .map(|(k, v)| format!(
                        "{}: {}",
                        serde_json::to_string(k).unwrap_or_default(),
                        dumps_inner(v, sort)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }
}
