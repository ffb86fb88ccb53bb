//! The writer: [`PyValue`] to the exact text of Python's `json.dumps` (default separators,
//! `ensure_ascii=True`), in insertion order or with `sort_keys=True`.
//!
//! Not for: float digits (that is `float_repr`), reading JSON, or pretty-printing; no other
//! `json.dumps` options are offered.

use super::float_repr::write_float;
use super::PyValue;

/// Python's `json.dumps(v, sort_keys=True)`, byte for byte: the canonical text event ids hash.
pub fn dumps_sorted(v: &PyValue) -> String {
    let mut out = String::with_capacity(256);
    write_value(&mut out, v, true);
    out
}

/// Python's `json.dumps(v)` (keys in insertion order), byte for byte.
pub fn dumps(v: &PyValue) -> String {
    let mut out = String::with_capacity(256);
    write_value(&mut out, v, false);
    out
}

/// Appends [`dumps_sorted`]`(v)` to `out`, to reuse a buffer on a hot path.
pub fn write_dumps_sorted(out: &mut String, v: &PyValue) {
    write_value(out, v, true);
}

/// Appends [`dumps`]`(v)` to `out`, to reuse a buffer on a hot path.
pub fn write_dumps(out: &mut String, v: &PyValue) {
    write_value(out, v, false);
}

/// Writes `v` with Python's default separators `", "` and `": "`.
///
/// Recursive: nesting is bounded by [`MAX_DEPTH`](super::MAX_DEPTH) for parsed values; hand-built
/// values nested many thousands deep could exhaust the stack (Python raises `RecursionError` for
/// them).
fn write_value(out: &mut String, v: &PyValue, sort_keys: bool) {
    match v {
        PyValue::Null => out.push_str("null"),
        PyValue::Bool(true) => out.push_str("true"),
        PyValue::Bool(false) => out.push_str("false"),
        PyValue::Int(text) => out.push_str(text),
        PyValue::Float(f) => write_float(out, *f),
        PyValue::Str(s) => write_str(out, s),
        PyValue::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item, sort_keys);
            }
            out.push(']');
        }
        PyValue::Object(entries) => {
            out.push('{');
            if sort_keys && !entries.windows(2).all(|w| w[0].0 <= w[1].0) {
                // Byte order of UTF-8 is code point order, which is how Python sorts str keys.
                let mut sorted: Vec<&(String, PyValue)> = entries.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                write_entries(out, sorted.into_iter(), sort_keys);
            } else {
                write_entries(out, entries.iter(), sort_keys);
            }
            out.push('}');
        }
    }
}

fn write_entries<'v>(
    out: &mut String,
    entries: impl Iterator<Item = &'v (String, PyValue)>,
    sort_keys: bool,
) {
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_str(out, key);
        out.push_str(": ");
        write_value(out, value, sort_keys);
    }
}

/// Writes a string with `ensure_ascii=True` escaping, as CPython's `ascii_escape_unicode`.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    let mut rest = s;
    loop {
        // Every byte >= 0x80 needs escaping, so `n` is at an ASCII byte or a character's first
        // byte: always a character boundary, and `split_at` cannot panic.
        let n = rest
            .bytes()
            .position(|b| !(0x20..0x7F).contains(&b) || b == b'"' || b == b'\\')
            .unwrap_or(rest.len());
        let (plain, tail) = rest.split_at(n);
        out.push_str(plain);
        let mut chars = tail.chars();
        let Some(c) = chars.next() else { break };
        write_escaped_char(out, c);
        rest = chars.as_str();
    }
    out.push('"');
}

fn write_escaped_char(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        _ => {
            let code = u32::from(c);
            if code >= 0x10000 {
                let v = code - 0x10000;
                write_u_escape(out, 0xD800 | (v >> 10));
                write_u_escape(out, 0xDC00 | (v & 0x3FF));
            } else {
                write_u_escape(out, code);
            }
        }
    }
}

fn write_u_escape(out: &mut String, unit: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str("\\u");
    for shift in [12, 8, 4, 0] {
        // The mask keeps the index below 16.
        out.push(char::from(HEX[((unit >> shift) & 0xF) as usize]));
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::PyValue;
    use super::*;

    /// Expected strings are Python 3.11's `json.dumps(s)` (`ensure_ascii=True`).
    #[test]
    fn string_escaping_matches_python() {
        let cases: &[(&str, &str)] = &[
            ("a/b", r#""a/b""#),
            ("~ ", r#""~ ""#),
            (
                "\u{0}\u{1f}\u{7f}\u{80}\u{9f}",
                r#""\u0000\u001f\u007f\u0080\u009f""#,
            ),
            ("\"\\\u{8}\u{c}\n\r\t", r#""\"\\\b\f\n\r\t""#),
            ("\u{e9}", r#""\u00e9""#),
            ("\u{2028}\u{2029}\u{feff}", r#""\u2028\u2029\ufeff""#),
            ("\u{d7ff}\u{e000}\u{ffff}", r#""\ud7ff\ue000\uffff""#),
            ("\u{1f600}", r#""\ud83d\ude00""#),
            ("\u{10ffff}", r#""\udbff\udfff""#),
            ("\u{65e5}\u{672c}", r#""\u65e5\u672c""#),
            ("</script>&amp;", r#""</script>&amp;""#),
        ];
        for &(s, expected) in cases {
            let v = PyValue::Str(s.to_owned());
            assert_eq!(dumps(&v), expected, "{s:?}");
            assert_eq!(parse_ok(expected), v, "{expected} reads back");
        }
    }

    #[test]
    fn sorted_keys_use_code_point_order() {
        let v = parse_ok(
            r#"{"b": 1, "a": {"z": 1, "\u00e9": 2, "Z": 3, "\ud83c\udf0d": 4, "\uff01": 5}, "": 0}"#,
        );
        assert_eq!(
            dumps_sorted(&v),
            r#"{"": 0, "a": {"Z": 3, "z": 1, "\u00e9": 2, "\uff01": 5, "\ud83c\udf0d": 4}, "b": 1}"#
        );
        assert_eq!(
            dumps(&v),
            r#"{"b": 1, "a": {"z": 1, "\u00e9": 2, "Z": 3, "\ud83c\udf0d": 4, "\uff01": 5}, "": 0}"#
        );
        let mut buf = String::from("x");
        write_dumps_sorted(&mut buf, &v);
        assert_eq!(buf, format!("x{}", dumps_sorted(&v)));
        buf.clear();
        write_dumps(&mut buf, &v);
        assert_eq!(buf, dumps(&v));
    }
}
