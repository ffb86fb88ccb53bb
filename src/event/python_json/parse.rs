//! The reader: JSON text to [`PyValue`], as Python's `json.loads` reads it (the rules and the
//! deliberate differences are listed in the [parent module](super)'s docs), with errors that say
//! where the input went wrong.
//!
//! Not for: writing JSON (that is `dumps`) or judging what a payload means (that is
//! `event::validate`).

use super::PyValue;

/// The deepest nesting of arrays and objects [`parse`] accepts; deeper input is refused so that
/// no input can exhaust the stack.
pub const MAX_DEPTH: usize = 512;

/// The most digits an int may have, as CPython's default `sys.get_int_max_str_digits()`; longer
/// ints make `json.loads` raise `ValueError`, so they are refused here too.
pub const MAX_INT_DIGITS: usize = 4300;

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

/// Parses UTF-8 JSON text as Python's `json.loads` does (see the [module docs](super) for the
/// details and the few deliberate differences). Never panics, whatever the input.
///
/// # Errors
///
/// A [`PyJsonError`] saying what was wrong and where, when `input` is not JSON that Python would
/// read, or is one of the few inputs refused on purpose (see the [module docs](super)).
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

#[cfg(test)]
mod tests {
    use super::super::dumps;
    use super::super::test_support::*;
    use super::*;
    use proptest::prelude::*;

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

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }
    }
}
