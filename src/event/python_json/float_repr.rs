//! Python's `float.__repr__`, as `json.dumps` writes a float, and the `NaN`/`Infinity` tokens
//! `json` uses for the values `repr` spells `nan`/`inf`.
//!
//! Not for: reading floats (Rust's correctly rounded `str::parse` does that, as `float()` does) or
//! any other float formatting.

use std::fmt::{self, Write as _};

/// Writes a float as Python's `float.__repr__`, or the `NaN`/`Infinity` tokens `json` uses.
///
/// Python's `repr` (David Gay's `dtoa`, mode 0) prints the shortest digits that read back to the
/// same float, the closest such to the exact value, and breaks exact ties towards an even last
/// digit. Rust's `{:e}` gives the same shortest digits except in ties, which it rounds up
/// (`647340340770998.25` prints `...998.3` in Rust, `...998.2` in Python); [`ShortestDigits`]
/// repairs those. Python then lays the digits out in fixed notation when the decimal exponent is
/// in `-4..16`, else as `d.ddde±XX` with at least two exponent digits, and gives integral values a
/// `.0`.
pub(super) fn write_float(out: &mut String, f: f64) {
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
    use super::super::test_support::*;
    use super::super::{dumps, PyValue};
    use super::write_float;

    /// CPython's `json.dumps(x)` for 2,000 doubles given by their bits; the header says how they
    /// were drawn.
    const CPYTHON_REPRS: &str = include_str!("float_repr_cpython.txt");

    /// Checks every `bits text` line of `table` against [`write_float`]; returns how many.
    fn assert_matches_table(table: &str) -> usize {
        let mut checked = 0;
        for line in table
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let mut columns = line.split(' ');
            let (Some(bits), Some(expected)) = (columns.next(), columns.next()) else {
                panic!("malformed line {line:?}");
            };
            let bits = u64::from_str_radix(bits, 16).expect("hex bits");
            let mut out = String::new();
            write_float(&mut out, f64::from_bits(bits));
            assert_eq!(out, expected, "bits {bits:016x}");
            checked += 1;
        }
        checked
    }

    #[test]
    fn float_repr_matches_cpython_table() {
        assert_eq!(assert_matches_table(CPYTHON_REPRS), 2000);
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
}
