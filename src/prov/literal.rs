//! Payload values as PROV literals: sub-objects as standard JSON text in a string, numbers
//! and strings as they are.
//!
//! Not for: identifiers (`names.rs`).

use std::io;

use crate::event::python_json::PyValue;

/// Standard JSON text (RFC 8259) for a payload value, compact, keys in payload order.
///
/// Integers keep their digits whatever their size; finite floats are written in the shortest
/// form that reads back to the same `f64`; the non-finite floats, which JSON cannot hold, become
/// the strings `"NaN"`, `"Infinity"` and `"-Infinity"`. Iterative, so deep nesting cannot
/// overflow the stack.
///
/// # Errors
///
/// Only if `serde_json` fails to escape a string, which it does not do for valid UTF-8.
pub fn json_text(value: &PyValue) -> io::Result<String> {
    enum Frame<'a> {
        Array(std::slice::Iter<'a, PyValue>),
        Object(std::slice::Iter<'a, (String, PyValue)>),
    }
    let mut out = String::new();
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut next = Some(value);
    loop {
        if let Some(value) = next.take() {
            match value {
                PyValue::Array(items) => {
                    out.push('[');
                    stack.push(Frame::Array(items.iter()));
                }
                PyValue::Object(fields) => {
                    out.push('{');
                    stack.push(Frame::Object(fields.iter()));
                }
                scalar => push_scalar(&mut out, scalar)?,
            }
        }
        let Some(frame) = stack.last_mut() else {
            return Ok(out);
        };
        let first = matches!(out.as_bytes().last(), Some(b'[' | b'{'));
        match frame {
            Frame::Array(items) => match items.next() {
                Some(item) => {
                    if !first {
                        out.push(',');
                    }
                    next = Some(item);
                }
                None => {
                    out.push(']');
                    stack.pop();
                }
            },
            Frame::Object(fields) => match fields.next() {
                Some((key, item)) => {
                    if !first {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(key)?);
                    out.push(':');
                    next = Some(item);
                }
                None => {
                    out.push('}');
                    stack.pop();
                }
            },
        }
    }
}

pub(super) fn push_scalar(out: &mut String, value: &PyValue) -> io::Result<()> {
    match value {
        PyValue::Null => out.push_str("null"),
        PyValue::Bool(true) => out.push_str("true"),
        PyValue::Bool(false) => out.push_str("false"),
        PyValue::Int(digits) if is_json_integer(digits) => out.push_str(digits),
        PyValue::Int(text) => out.push_str(&serde_json::to_string(text)?),
        PyValue::Float(float) => match serde_json::Number::from_f64(*float) {
            Some(number) => out.push_str(&number.to_string()),
            None if float.is_nan() => out.push_str("\"NaN\""),
            None if *float > 0.0 => out.push_str("\"Infinity\""),
            None => out.push_str("\"-Infinity\""),
        },
        PyValue::Str(text) => out.push_str(&serde_json::to_string(text)?),
        // Containers are handled by `json_text`; this arm only keeps the match total.
        PyValue::Array(_) | PyValue::Object(_) => out.push_str(&json_text(value)?),
    }
    Ok(())
}

/// `-?(0|[1-9][0-9]*)`: the integers JSON accepts as written.
pub(super) fn is_json_integer(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    match digits.as_bytes() {
        [] => false,
        [b'0'] => true,
        [b'0', ..] => false,
        bytes => bytes.iter().all(u8::is_ascii_digit),
    }
}

/// A value shown in an error message: JSON text, cut to 80 characters.
pub(super) fn short_text(value: &PyValue) -> String {
    let text = json_text(value).unwrap_or_else(|_| "a value".to_owned());
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}
