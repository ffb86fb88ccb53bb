//! JSON read and written exactly as Python's `json` module does it.
//!
//! The event id is the SHA-256 of `json.dumps(payload, sort_keys=True)`, so geoprov must produce
//! the very bytes CPython produces, and must read payloads the way `json.loads` reads them.
//!
//! Why this is hand-written: no crate reproduces Python's `json.dumps`. `serde_json` writes
//! `1e16` and `1e-7` where Python writes `1e+16` and `1e-07`; it emits raw UTF-8 where
//! `ensure_ascii` escapes; it has no `NaN`/`Infinity` tokens, which Python reads and writes; it
//! has other separators and no arbitrary-size ints. What we reuse is Rust's shortest round-trip
//! float formatting (`{:e}`); we lay the digits out Python's way and break exact ties between two
//! shortest candidates to the even digit, as Python's `repr` does and Rust does not.
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
//! Not for: general-purpose JSON handling. Use `serde_json` for our own documents; use this module
//! only where the bytes must agree with Python.

use std::fmt::{self, Write as _};

/// The deepest nesting of arrays and objects [`parse`] accepts; deeper input is refused so that
/// no input can exhaust the stack.
pub const MAX_DEPTH: usize = 512;

/// The most digits an int may have, as CPython's default `sys.get_int_max_str_digits()`; longer
/// ints make `json.loads` raise `ValueError`, so they are refused here too.
pub const MAX_INT_DIGITS: usize = 4300;

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

/// Why [`parse`] refused its input, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} at line {line} column {column} (byte {offset})")]
pub struct PyJsonError {
    reason: String,
    offset: usize,
    line: usize,
    column: usize,
}

impl PyJsonError {
    /// Builds the error for `reason` at byte `offset` of `input`, working out line and column.
    #[cold]
    fn at(input: &[u8], offset: usize, reason: impl Into<String>) -> PyJsonError {
        let before = input.get(..offset).unwrap_or(input);
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        // Columns count characters, as Python's do: skip UTF-8 continuation bytes.
        let column = 1 + before[line_start..]
            .iter()
            .filter(|&&b| b & 0xC0 != 0x80)
            .count();
        PyJsonError {
            reason: reason.into(),
            offset,
            line,
            column,
        }
    }

    /// What was wrong, without the position.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Byte offset into the input where the problem was found.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// 1-based line of [`PyJsonError::offset`].
    pub fn line(&self) -> usize {
        self.line
    }

    /// 1-based column of [`PyJsonError::offset`], in characters as Python counts them.
    pub fn column(&self) -> usize {
        self.column
    }
}

/// Parses UTF-8 JSON text as Python's `json.loads` does (see the module docs for the details and
/// the few deliberate differences). Never panics, whatever the input.
///
/// # Errors
///
/// A [`PyJsonError`] saying what was wrong and where, when `input` is not JSON that Python would
/// read, or is one of the few inputs refused on purpose (see the module docs).
pub fn parse(input: &[u8]) -> Result<PyValue, PyJsonError> {
    if input.starts_with(b"\xEF\xBB\xBF") {
        return Err(PyJsonError::at(
            input,
            0,
            "unexpected UTF-8 BOM (decode using utf-8-sig)",
        ));
    }
    let text = std::str::from_utf8(input).map_err(|e| {
        let at = e.valid_up_to();
        let byte = input.get(at).copied().unwrap_or_default();
        PyJsonError::at(input, at, format!("invalid UTF-8 (byte 0x{byte:02x})"))
    })?;
    let mut parser = Parser {
        text,
        bytes: input,
        pos: 0,
        depth: 0,
    };
    parser.skip_ws();
    let value = parser.value()?;
    parser.skip_ws();
    if parser.pos != input.len() {
        return Err(parser.error_at(parser.pos, "extra data after the JSON value"));
    }
    Ok(value)
}

/// Recursive-descent reader over text already checked to be UTF-8.
///
/// Every position where `text` is sliced is either an ASCII byte (quote, backslash) or the end of
/// the text, so slices always fall on character boundaries.
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    #[cold]
    fn error_at(&self, offset: usize, reason: impl Into<String>) -> PyJsonError {
        PyJsonError::at(self.bytes, offset, reason)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn slice(&self, start: usize, end: usize) -> Result<&'a str, PyJsonError> {
        self.text
            .get(start..end)
            .ok_or_else(|| self.error_at(start, "internal error: slice off a character boundary"))
    }

    fn eat_literal(&mut self, literal: &[u8]) -> bool {
        let found = self
            .bytes
            .get(self.pos..)
            .is_some_and(|rest| rest.starts_with(literal));
        if found {
            self.pos += literal.len();
        }
        found
    }

    fn value(&mut self) -> Result<PyValue, PyJsonError> {
        let start = self.pos;
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(PyValue::Str),
            Some(b'-' | b'0'..=b'9') => {
                if self.eat_literal(b"-Infinity") {
                    Ok(PyValue::Float(f64::NEG_INFINITY))
                } else {
                    self.number()
                }
            }
            _ if self.eat_literal(b"null") => Ok(PyValue::Null),
            _ if self.eat_literal(b"true") => Ok(PyValue::Bool(true)),
            _ if self.eat_literal(b"false") => Ok(PyValue::Bool(false)),
            _ if self.eat_literal(b"NaN") => Ok(PyValue::Float(f64::NAN)),
            _ if self.eat_literal(b"Infinity") => Ok(PyValue::Float(f64::INFINITY)),
            _ => Err(self.error_at(start, "expected a value")),
        }
    }

    fn enter(&mut self) -> Result<(), PyJsonError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_at(
                self.pos,
                format!("arrays and objects nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn array(&mut self) -> Result<PyValue, PyJsonError> {
        self.enter()?;
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(PyValue::Array(items));
        }
        loop {
            items.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b']') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.error_at(self.pos, "expected ',' or ']'")),
            }
        }
        self.depth -= 1;
        Ok(PyValue::Array(items))
    }

    fn object(&mut self) -> Result<PyValue, PyJsonError> {
        self.enter()?;
        self.pos += 1; // '{'
        let mut entries = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(PyValue::Object(entries));
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.error_at(self.pos, "expected a property name in double quotes"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.error_at(self.pos, "expected ':'"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value()?;
            entries.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.error_at(self.pos, "expected ',' or '}'")),
            }
        }
        self.depth -= 1;
        dedupe_keys(&mut entries);
        Ok(PyValue::Object(entries))
    }

    /// Reads a number the way CPython's scanner matches
    /// `-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?`: a `.` or `e` that does not begin a valid fraction
    /// or exponent is left for the caller (and then fails as extra data or a missing delimiter).
    fn number(&mut self) -> Result<PyValue, PyJsonError> {
        let start = self.pos;
        let b = self.bytes;
        let digit_at = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
        let mut i = start;
        let negative = b.get(i) == Some(&b'-');
        if negative {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while digit_at(i) {
                    i += 1;
                }
            }
            _ => return Err(self.error_at(start, "expected a value")),
        }
        let int_end = i;
        let mut is_float = false;
        if b.get(i) == Some(&b'.') && digit_at(i + 1) {
            i += 1;
            while digit_at(i) {
                i += 1;
            }
            is_float = true;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            let mut j = i + 1;
            if let Some(b'+' | b'-') = b.get(j) {
                j += 1;
            }
            if digit_at(j) {
                while digit_at(j) {
                    j += 1;
                }
                i = j;
                is_float = true;
            }
        }
        self.pos = i;
        let text = self.slice(start, i)?;
        if is_float {
            // Rust's parser is correctly rounded like Python's float(), and overflows to ±inf.
            return text
                .parse::<f64>()
                .map(PyValue::Float)
                .map_err(|_| self.error_at(start, format!("cannot read float {text}")));
        }
        let digits = int_end - start - usize::from(negative);
        if digits > MAX_INT_DIGITS {
            return Err(self.error_at(
                start,
                format!(
                    "integer has {digits} digits, over Python's {MAX_INT_DIGITS}-digit limit \
                     for int conversion"
                ),
            ));
        }
        // JSON forbids leading zeros, so "-0" is the only text Python would print differently.
        let canonical = if text == "-0" { "0" } else { text };
        Ok(PyValue::Int(canonical.to_owned()))
    }

    /// Reads a string starting at its opening quote.
    fn string(&mut self) -> Result<String, PyJsonError> {
        let open = self.pos;
        let start = open + 1;
        let mut i = start;
        // Fast path: no escapes, one copy.
        loop {
            match self.bytes.get(i) {
                None => return Err(self.error_at(open, "unterminated string")),
                Some(b'"') => {
                    let s = self.slice(start, i)?;
                    self.pos = i + 1;
                    return Ok(s.to_owned());
                }
                Some(b'\\') => break,
                Some(&c) if c < 0x20 => return Err(self.control_char(i, c)),
                Some(_) => i += 1,
            }
        }
        let mut out = String::with_capacity(i - start + 16);
        out.push_str(self.slice(start, i)?);
        let mut run = i;
        loop {
            match self.bytes.get(i) {
                None => return Err(self.error_at(open, "unterminated string")),
                Some(b'"') => {
                    out.push_str(self.slice(run, i)?);
                    self.pos = i + 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    out.push_str(self.slice(run, i)?);
                    i = self.escape(i, &mut out)?;
                    run = i;
                }
                Some(&c) if c < 0x20 => return Err(self.control_char(i, c)),
                Some(_) => i += 1,
            }
        }
    }

    #[cold]
    fn control_char(&self, at: usize, c: u8) -> PyJsonError {
        self.error_at(
            at,
            format!("invalid control character U+{c:04X} in string (escape it)"),
        )
    }

    /// Decodes the escape whose backslash is at `at` into `out`; returns the index after it.
    fn escape(&self, at: usize, out: &mut String) -> Result<usize, PyJsonError> {
        let simple = match self.bytes.get(at + 1) {
            None => return Err(self.error_at(at, "unterminated string")),
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => return self.unicode_escape(at, out),
            Some(_) => {
                let shown: String = self
                    .text
                    .get(at + 1..)
                    .and_then(|rest| rest.chars().next())
                    .map(|c| c.escape_debug().collect())
                    .unwrap_or_default();
                return Err(self.error_at(at, format!("invalid escape '\\{shown}'")));
            }
        };
        out.push(simple);
        Ok(at + 2)
    }

    /// Decodes `\uHHHH` (and a following low surrogate escape) at `at`.
    fn unicode_escape(&self, at: usize, out: &mut String) -> Result<usize, PyJsonError> {
        let first = self.hex4(at)?;
        if (0xDC00..=0xDFFF).contains(&first) {
            return Err(self.lone_surrogate(at, first));
        }
        if !(0xD800..=0xDBFF).contains(&first) {
            // Not a surrogate, so always a valid scalar value.
            let c = char::from_u32(first).ok_or_else(|| self.lone_surrogate(at, first))?;
            out.push(c);
            return Ok(at + 6);
        }
        let next = at + 6;
        let low = if self.bytes.get(next..next + 2) == Some(b"\\u") {
            Some(self.hex4(next)?)
        } else {
            None
        };
        match low {
            Some(low @ 0xDC00..=0xDFFF) => {
                let code = 0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00);
                let c = char::from_u32(code).ok_or_else(|| self.lone_surrogate(at, first))?;
                out.push(c);
                Ok(next + 6)
            }
            _ => Err(self.lone_surrogate(at, first)),
        }
    }

    /// The four hex digits after the `\u` whose backslash is at `at`.
    fn hex4(&self, at: usize) -> Result<u32, PyJsonError> {
        let digits = self
            .bytes
            .get(at + 2..at + 6)
            .ok_or_else(|| self.error_at(at, "invalid \\u escape: expected four hex digits"))?;
        digits.iter().try_fold(0u32, |acc, &d| {
            char::from(d)
                .to_digit(16)
                .map(|v| (acc << 4) | v)
                .ok_or_else(|| self.error_at(at, "invalid \\u escape: expected four hex digits"))
        })
    }

    #[cold]
    fn lone_surrogate(&self, at: usize, unit: u32) -> PyJsonError {
        self.error_at(
            at,
            format!(
                "lone UTF-16 surrogate \\u{unit:04x} is not supported (Python keeps it, a Rust \
                 string cannot)"
            ),
        )
    }
}

/// Resolves repeated keys as `dict` does: the last value wins, at the first occurrence's position.
fn dedupe_keys(entries: &mut Vec<(String, PyValue)>) {
    const LINEAR_MAX: usize = 16;
    if entries.len() < 2 {
        return;
    }
    if entries.len() <= LINEAR_MAX {
        let mut i = 1;
        while i < entries.len() {
            let (seen, rest) = entries.split_at(i);
            match seen.iter().position(|(k, _)| *k == rest[0].0) {
                Some(first) => {
                    let (_, value) = entries.remove(i);
                    entries[first].1 = value;
                }
                None => i += 1,
            }
        }
        return;
    }
    // Large objects: sort indices by (key, position) so repeats sit together, O(n log n).
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_unstable_by(|&a, &b| entries[a].0.cmp(&entries[b].0).then(a.cmp(&b)));
    if order.windows(2).all(|w| entries[w[0]].0 != entries[w[1]].0) {
        return;
    }
    let mut keep = vec![true; entries.len()];
    let mut moves = Vec::new();
    for group in order.chunk_by(|&a, &b| entries[a].0 == entries[b].0) {
        if let [first, .., last] = *group {
            moves.push((first, last));
            for &dup in &group[1..] {
                keep[dup] = false;
            }
        }
    }
    for (first, last) in moves {
        let value = std::mem::replace(&mut entries[last].1, PyValue::Null);
        entries[first].1 = value;
    }
    let mut index = 0;
    entries.retain(|_| {
        let kept = keep[index];
        index += 1;
        kept
    });
}

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
/// Recursive: nesting is bounded by [`MAX_DEPTH`] for parsed values; hand-built values nested
/// many thousands deep could exhaust the stack (Python raises `RecursionError` for them).
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

/// Writes a float as Python's `float.__repr__`, or the `NaN`/`Infinity` tokens `json` uses.
///
/// Python's `repr` (David Gay's `dtoa`, mode 0) prints the shortest digits that read back to the
/// same float, the closest such to the exact value, and breaks exact ties towards an even last
/// digit. Rust's `{:e}` gives the same shortest digits except in ties, which it rounds up
/// (`647340340770998.25` prints `...998.3` in Rust, `...998.2` in Python); [`ShortestDigits`]
/// repairs those. Python then lays the digits out in fixed notation when the decimal exponent is
/// in `-4..16`, else as `d.ddde±XX` with at least two exponent digits, and gives integral values a
/// `.0`.
fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if f.is_sign_negative() {
        out.push('-');
    }
    if f == 0.0 {
        out.push_str("0.0");
        return;
    }
    let Some(shortest) = ShortestDigits::of(f.abs()) else {
        // Unreachable: `{:e}` of a finite non-zero f64 always has this shape.
        let _ = write!(out, "{:?}", f.abs());
        return;
    };
    let digits = shortest.digits();
    let exp10 = shortest.exp10;
    let push_digits = |out: &mut String, d: &[u8]| {
        for &b in d {
            out.push(char::from(b));
        }
    };
    // Python's decpt: the value is 0.DIGITS × 10^decpt.
    let decpt = exp10 + 1;
    if !(-3..=16).contains(&decpt) {
        push_digits(out, &digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            push_digits(out, &digits[1..]);
        }
        let sign = if exp10 < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exp10.unsigned_abs());
    } else if decpt <= 0 {
        out.push_str("0.");
        for _ in decpt..0 {
            out.push('0');
        }
        push_digits(out, digits);
    } else {
        let point = usize::try_from(decpt).unwrap_or(0);
        if point >= digits.len() {
            push_digits(out, digits);
            for _ in digits.len()..point {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            push_digits(out, &digits[..point]);
            out.push('.');
            push_digits(out, &digits[point..]);
        }
    }
}

/// The digits Python's `repr` prints for a finite, positive float: `D.DDD × 10^exp10`.
struct ShortestDigits {
    /// ASCII digits, no leading or trailing zeros; at most 17.
    ascii: [u8; 17],
    len: usize,
    exp10: i32,
}

impl ShortestDigits {
    fn of(f: f64) -> Option<ShortestDigits> {
        let mut buf = StackBuf::default();
        write!(buf, "{f:e}").ok()?;
        let text = buf.as_bytes();
        let e_at = text.iter().position(|&b| b == b'e')?;
        let exp10: i32 = std::str::from_utf8(&text[e_at + 1..]).ok()?.parse().ok()?;
        let mut digits = ShortestDigits {
            ascii: [b'0'; 17],
            len: 0,
            exp10,
        };
        for &b in text[..e_at].iter().filter(|b| b.is_ascii_digit()) {
            *digits.ascii.get_mut(digits.len)? = b;
            digits.len += 1;
        }
        if digits.len == 0 {
            return None;
        }
        digits.break_tie_to_even(f);
        Some(digits)
    }

    fn digits(&self) -> &[u8] {
        &self.ascii[..self.len]
    }

    /// Rust rounds a tie between two shortest candidates up; Python takes the even one. A tie
    /// needs an odd last digit here, `f` exactly half-way to a neighbour, and the neighbour to
    /// read back as `f` (not always so next to a power of two, where the gaps differ).
    fn break_tie_to_even(&mut self, f: f64) {
        let Some(&last) = self.digits().last() else {
            return;
        };
        // b'0' is even, so the ASCII byte's parity is the digit's.
        if last & 1 == 0 {
            return;
        }
        let mut d: u64 = 0;
        for &b in self.digits() {
            d = d * 10 + u64::from(b - b'0');
        }
        let Ok(count) = i32::try_from(self.len) else {
            return;
        };
        let q = self.exp10 - (count - 1);
        // A neighbour ending in 0 would be a shorter representation, which `{:e}` would have
        // found had it read back; so only `last ± 1` within 1..=9 can be candidates.
        for (neighbour, new_last) in [(d - 1, last - 1), (d + 1, last + 1)] {
            if new_last == b'0' || new_last > b'9' {
                continue;
            }
            if is_half_way(f, d + neighbour, q) && format!("{neighbour}e{q}").parse() == Ok(f) {
                self.ascii[self.len - 1] = new_last;
                return;
            }
        }
    }
}

/// Whether the finite, positive `f` equals `k/2 × 10^q` exactly, for odd `k`.
///
/// With `f = m × 2^e`, that is `m × 2^(e+1) = k × 5^q × 2^q`; both sides split into an odd part
/// and a power of two, which must match separately.
fn is_half_way(f: f64, k: u64, q: i32) -> bool {
    let bits = f.to_bits();
    let biased = i64::try_from((bits >> 52) & 0x7FF).unwrap_or(0);
    let fraction = bits & ((1 << 52) - 1);
    let (m, e) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1 << 52), biased - 1075)
    };
    if m == 0 {
        return false;
    }
    let zeros = m.trailing_zeros();
    if e + 1 + i64::from(zeros) != i64::from(q) {
        return false;
    }
    let m_odd = u128::from(m >> zeros);
    let Some(five) = 5u128.checked_pow(q.unsigned_abs()) else {
        return false;
    };
    let (lhs, rhs) = if q >= 0 {
        (Some(m_odd), u128::from(k).checked_mul(five))
    } else {
        (m_odd.checked_mul(five), Some(u128::from(k)))
    };
    matches!((lhs, rhs), (Some(a), Some(b)) if a == b)
}

/// A small fixed buffer to format a float into without allocating.
#[derive(Default)]
struct StackBuf {
    buf: [u8; 32],
    len: usize,
}

impl StackBuf {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::event_id::{event_id_of, EventId};
    use proptest::prelude::*;

    fn parse_ok(text: &str) -> PyValue {
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
    }

    fn parse_err(input: &[u8]) -> PyJsonError {
        match parse(input) {
            Ok(v) => panic!(
                "{:?} should be refused, got {v:?}",
                String::from_utf8_lossy(input)
            ),
            Err(e) => e,
        }
    }

    fn obj(entries: &[(&str, PyValue)]) -> PyValue {
        PyValue::Object(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    fn int(text: &str) -> PyValue {
        PyValue::Int(text.to_owned())
    }

    /// Every vector made by real Python: the id matches, and `dumps` gives back the exact text.
    #[test]
    fn fixture_event_id_vectors() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/event_id_vectors.json");
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

    /// Expected strings are Python 3.11's `json.dumps(x)`.
    #[test]
    fn float_repr_matches_python() {
        #[allow(clippy::excessive_precision, clippy::approx_constant)]
        let cases: &[(f64, &str)] = &[
            (5e-324, "5e-324"),
            (4.9406564584124654e-324, "5e-324"),
            (5e-310, "5e-310"),
            (2.2250738585072014e-308, "2.2250738585072014e-308"),
            (2.225073858507201e-308, "2.225073858507201e-308"),
            (1.7976931348623157e+308, "1.7976931348623157e+308"),
            (1.5e300, "1.5e+300"),
            (1e16, "1e+16"),
            (-1e16, "-1e+16"),
            (12345678901234567.0, "1.2345678901234568e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (9007199254740993.0, "9007199254740992.0"),
            (1234567890123456.0, "1234567890123456.0"),
            (123456789012345.0, "123456789012345.0"),
            (1e15, "1000000000000000.0"),
            (1e22, "1e+22"),
            (1e23, "1e+23"),
            (8.41e21, "8.41e+21"),
            (0.1 + 0.2, "0.30000000000000004"),
            // Exact ties between two shortest candidates: Python takes the even digit.
            (647340340770998.25, "647340340770998.2"),
            (875686708737749.25, "875686708737749.2"),
            (1434395266257445.25, "1434395266257445.2"),
            (1.5e-323, "1.5e-323"),
            (1.0 / 3.0, "0.3333333333333333"),
            (123456789.123456789, "123456789.12345679"),
            (100.0, "100.0"),
            (3.0, "3.0"),
            (2.5, "2.5"),
            (0.1, "0.1"),
            (0.001, "0.001"),
            (0.0001, "0.0001"),
            (0.00012345, "0.00012345"),
            (1e-5, "1e-05"),
            (1.1e-5, "1.1e-05"),
            (1.2345e-5, "1.2345e-05"),
            (1e-7, "1e-07"),
            (-1.5e-10, "-1.5e-10"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
        ];
        for &(f, expected) in cases {
            assert_eq!(dumps(&PyValue::Float(f)), expected, "{f:e}");
            if f.is_finite() {
                assert_eq!(
                    parse_ok(expected),
                    PyValue::Float(f),
                    "{expected} reads back exactly"
                );
            }
        }
    }

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
    fn escapes_are_decoded() {
        assert_eq!(
            parse_ok(r#""\"\\\/\b\f\n\r\t\u00e9\u00E9\ud83d\ude00\uD83D\uDE00x""#),
            PyValue::Str("\"\\/\u{8}\u{c}\n\r\t\u{e9}\u{e9}\u{1f600}\u{1f600}x".to_owned())
        );
        // Raw UTF-8 (what ensure_ascii=False writes) reads the same as the escapes.
        assert_eq!(
            parse_ok("\"Z\u{fc}rich \u{1f30d}\""),
            parse_ok(r#""Z\u00fcrich \ud83c\udf0d""#)
        );
        assert_eq!(parse_ok("\"\u{7f}\""), PyValue::Str("\u{7f}".to_owned()));
    }

    #[test]
    fn numbers_follow_python() {
        assert_eq!(parse_ok("-0"), int("0"));
        assert_eq!(parse_ok("0"), int("0"));
        assert_eq!(parse_ok("-12"), int("-12"));
        let big = "-123456789012345678901234567890123456789";
        assert_eq!(parse_ok(big), int(big));
        assert_eq!(parse_ok("-0.0"), PyValue::Float(-0.0));
        assert!(matches!(parse_ok("-0.0"), PyValue::Float(f) if f.is_sign_negative()));
        assert_eq!(parse_ok("1.0"), PyValue::Float(1.0));
        assert_eq!(parse_ok("1E2"), PyValue::Float(100.0));
        assert_eq!(parse_ok("1e-2"), PyValue::Float(0.01));
        assert_eq!(parse_ok("1e+2"), PyValue::Float(100.0));
        assert_eq!(parse_ok("1e400"), PyValue::Float(f64::INFINITY));
        assert_eq!(parse_ok("-1e400"), PyValue::Float(f64::NEG_INFINITY));
        assert_eq!(parse_ok("1e-400"), PyValue::Float(0.0));
        assert_eq!(
            parse_ok("1e99999999999999999999999"),
            PyValue::Float(f64::INFINITY)
        );
        assert_eq!(parse_ok("NaN").type_name(), "float");
        assert!(matches!(parse_ok(" NaN "), PyValue::Float(f) if f.is_nan()));
        assert_eq!(parse_ok("Infinity"), PyValue::Float(f64::INFINITY));
        assert_eq!(parse_ok("-Infinity"), PyValue::Float(f64::NEG_INFINITY));
        // A float's digits are not limited; an int's are (CPython's int_max_str_digits).
        assert_eq!(
            parse_ok(&format!("{}.0", "1".repeat(5000))),
            PyValue::Float(f64::INFINITY)
        );
        let max = "9".repeat(MAX_INT_DIGITS);
        assert_eq!(parse_ok(&format!("-{max}")), int(&format!("-{max}")));
        let err = parse_err(format!("[{max}9]").as_bytes());
        assert_eq!(
            err.to_string(),
            "integer has 4301 digits, over Python's 4300-digit limit for int conversion at line 1 \
             column 2 (byte 1)"
        );
    }

    #[test]
    fn python_loads_refusals() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "expected a value at line 1 column 1 (byte 0)"),
            (b"  \n ", "expected a value at line 2 column 2 (byte 4)"),
            (b"01", "extra data after the JSON value at line 1 column 2 (byte 1)"),
            (b"[01]", "expected ',' or ']' at line 1 column 3 (byte 2)"),
            (b"1.", "extra data after the JSON value at line 1 column 2 (byte 1)"),
            (b"1e", "extra data after the JSON value at line 1 column 2 (byte 1)"),
            (b"1.5e+", "extra data after the JSON value at line 1 column 4 (byte 3)"),
            (b".5", "expected a value at line 1 column 1 (byte 0)"),
            (b"+1", "expected a value at line 1 column 1 (byte 0)"),
            (b"-", "expected a value at line 1 column 1 (byte 0)"),
            (b"-NaN", "expected a value at line 1 column 1 (byte 0)"),
            (b"nan", "expected a value at line 1 column 1 (byte 0)"),
            (b"-infinity", "expected a value at line 1 column 1 (byte 0)"),
            (b"nul", "expected a value at line 1 column 1 (byte 0)"),
            (b"True", "expected a value at line 1 column 1 (byte 0)"),
            (b"[1,]", "expected a value at line 1 column 4 (byte 3)"),
            (b"[1 2]", "expected ',' or ']' at line 1 column 4 (byte 3)"),
            (b"{\"a\":1,}", "expected a property name in double quotes at line 1 column 8 (byte 7)"),
            (b"{'a': 1}", "expected a property name in double quotes at line 1 column 2 (byte 1)"),
            (b"{\"a\" 1}", "expected ':' at line 1 column 6 (byte 5)"),
            (b"{\"a\": 1 \"b\": 2}", "expected ',' or '}' at line 1 column 9 (byte 8)"),
            (b"{\"a\": 1", "expected ',' or '}' at line 1 column 8 (byte 7)"),
            (b"\"abc", "unterminated string at line 1 column 1 (byte 0)"),
            (b"\"abc\\", "unterminated string at line 1 column 5 (byte 4)"),
            (b"\"a\nb\"", "invalid control character U+000A in string (escape it) at line 1 column 3 (byte 2)"),
            (b"\"a\tb\"", "invalid control character U+0009 in string (escape it) at line 1 column 3 (byte 2)"),
            (b"\"\\x\"", "invalid escape '\\x' at line 1 column 2 (byte 1)"),
            (b"\"\\'\"", "invalid escape '\\\\'' at line 1 column 2 (byte 1)"),
            (b"\"\\u12g4\"", "invalid \\u escape: expected four hex digits at line 1 column 2 (byte 1)"),
            (b"\"\\u12\"", "invalid \\u escape: expected four hex digits at line 1 column 2 (byte 1)"),
            (b"\"\\ud83d\\u12\"", "invalid \\u escape: expected four hex digits at line 1 column 8 (byte 7)"),
            (b"\xEF\xBB\xBF{}", "unexpected UTF-8 BOM (decode using utf-8-sig) at line 1 column 1 (byte 0)"),
            (b"\"\xff\"", "invalid UTF-8 (byte 0xff) at line 1 column 2 (byte 1)"),
            (b"\"\xed\xa0\x80\"", "invalid UTF-8 (byte 0xed) at line 1 column 2 (byte 1)"),
            (b"{} x", "extra data after the JSON value at line 1 column 4 (byte 3)"),
            (b"\x0c1", "expected a value at line 1 column 1 (byte 0)"),
            ("[\"\u{e9}\", x]".as_bytes(), "expected a value at line 1 column 7 (byte 7)"),
        ];
        for &(input, expected) in cases {
            let err = parse_err(input);
            assert_eq!(
                err.to_string(),
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let err = parse_err(b"[\n  1,\n  2 3]");
        assert_eq!((err.line(), err.column(), err.offset()), (3, 5, 11));
        assert_eq!(err.reason(), "expected ',' or ']'");
    }

    #[test]
    fn lone_surrogates_are_refused() {
        for (input, unit, offset) in [
            (r#""\ud800""#, "\\ud800", 1),
            (r#""ab\udc00""#, "\\udc00", 3),
            (r#""\ud83dx""#, "\\ud83d", 1),
            (r#""\ud83d\u0041""#, "\\ud83d", 1),
            (r#""\ud83d\ud83d\ude00""#, "\\ud83d", 1),
        ] {
            let err = parse_err(input.as_bytes());
            assert_eq!(
                err.reason(),
                format!(
                    "lone UTF-16 surrogate {unit} is not supported (Python keeps it, a Rust \
                     string cannot)"
                ),
                "{input}"
            );
            assert_eq!(err.offset(), offset, "{input}");
        }
    }

    #[test]
    fn whitespace_and_literals() {
        assert_eq!(parse_ok(" \t\r\n null \t\r\n"), PyValue::Null);
        assert_eq!(
            parse_ok("[true,false,null]"),
            PyValue::Array(vec![true.into(), false.into(), PyValue::Null])
        );
        assert_eq!(
            dumps(&parse_ok("[ 1 ,{ \"a\" :[ ] } ]")),
            "[1, {\"a\": []}]"
        );
    }

    #[test]
    fn duplicate_keys_behave_like_dict() {
        let v = parse_ok(r#"{"a": 1, "b": 2, "a": 3, "c": 4, "b": 5, "a": 6}"#);
        assert_eq!(v, obj(&[("a", int("6")), ("b", int("5")), ("c", int("4"))]));
        assert_eq!(v.get("a"), Some(&int("6")));
        // Past the linear-scan size too.
        let mut text = String::from("{");
        for i in 0..100 {
            text.push_str(&format!("\"k{}\": {i}, ", i % 40));
        }
        text.push_str("\"k0\": \"last\"}");
        let v = parse_ok(&text);
        let entries = v.as_object().expect("object");
        assert_eq!(entries.len(), 40);
        assert_eq!(entries[0], ("k0".to_owned(), PyValue::from("last")));
        assert_eq!(entries[1], ("k1".to_owned(), int("81")));
        assert_eq!(entries[39], ("k39".to_owned(), int("79")));
        assert_eq!(
            entries.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            (0..40).map(|i| format!("k{i}")).collect::<Vec<_>>()
        );
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

    #[test]
    fn nesting_is_bounded() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(dumps(&parse_ok(&ok)), ok);
        let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let err = parse_err(too_deep.as_bytes());
        assert_eq!(
            err.reason(),
            "arrays and objects nested deeper than 512 levels"
        );
        assert_eq!(err.offset(), MAX_DEPTH);
        let objects = "{\"a\": ".repeat(MAX_DEPTH + 1);
        assert!(parse_err(objects.as_bytes())
            .reason()
            .contains("deeper than 512"));
        // Far deeper input is refused without recursing further.
        assert!(parse(&vec![b'['; 1_000_000]).is_err());
        assert!(parse(&b"{\"a\":[".repeat(100_000)).is_err());
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

    /// Random bytes, and random edits of valid payloads, never panic; whatever parses writes out
    /// text that parses back to the same value.
    #[test]
    fn random_bytes_never_panic() {
        let seeds: Vec<&[u8]> = vec![
            br#"{"dataset_uuid": "6f1c2a9e-3b7d-4c1e-9a55-0d2f7e8b4c11", "n": [1, -0, 1.5e3, NaN, -Infinity], "s": "a\u00e9\ud83d\ude00\n"}"#,
            b"[[[{\"a\": {\"b\": [true, false, null, \"\\\"\"]}}]]]",
            "\"Z\u{fc}rich \u{1f30d}\"".as_bytes(),
        ];
        let alphabet = b"{}[]\",:\\/ \t\n0123456789.eE+-uabfnrtNIaInfinityulsd\xc3\xa9\xff\xed\x80";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let pick = |r: u64, n: usize| usize::try_from(r % n as u64).unwrap_or(0);
        for round in 0..20_000 {
            let mut input: Vec<u8> = if round & 1 == 0 {
                seeds[pick(next(), seeds.len())].to_vec()
            } else {
                Vec::new()
            };
            for _ in 0..=pick(next(), 8) {
                let at = pick(next(), input.len() + 1);
                let byte = if next() % 3 == 0 {
                    next().to_le_bytes()[0]
                } else {
                    alphabet[pick(next(), alphabet.len())]
                };
                match next() % 3 {
                    0 if at < input.len() => input[at] = byte,
                    1 if at < input.len() => {
                        input.remove(at);
                    }
                    _ => input.insert(at, byte),
                }
            }
            if let Ok(v) = parse(&input) {
                let text = dumps(&v);
                let again = parse(text.as_bytes()).expect("dumps output parses");
                assert_eq!(dumps(&again), text);
                assert!(text.is_ascii());
            }
        }
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
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }

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
