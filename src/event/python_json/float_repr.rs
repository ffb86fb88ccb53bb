//! Python's `float.__repr__`, as `json.dumps` writes a float, and the `NaN`/`Infinity` tokens
//! `json` uses for the values `repr` spells `nan`/`inf`.
//!
//! The digits come from `ryu`: the shortest that read back to the same float, the closest such
//! to the exact value, an exact tie between two of them going to the even digit. That is the
//! choice Python's `repr` (David Gay's `dtoa`, mode 0) makes, so only the layout is written
//! here, and `ryu`'s own layout (`1e16`, `1e-7`) is read back into digits and a decimal point.
//!
//! Not for: reading floats (Rust's correctly rounded `str::parse` does that, as `float()` does) or
//! any other float formatting.

use std::fmt::Write as _;

/// Writes a float as Python's `float.__repr__`, or the `NaN`/`Infinity` tokens `json` uses.
///
/// Python lays the shortest round-trip digits out in fixed notation when the decimal exponent is
/// in `-4..16`, else as `d.ddde±XX` with at least two exponent digits, and gives integral values a
/// `.0`: `1e-05`, `0.0001`, `123456789012345.0`, `1e+16`, `1.5e+300`, `-0.0`.
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
    let mut buffer = ryu::Buffer::new();
    let shortest = Shortest::read(buffer.format_finite(f.abs()));
    let digits = shortest.digits();
    let decpt = shortest.decpt;
    let push_digits = |out: &mut String, d: &[u8]| {
        for &b in d {
            out.push(char::from(b));
        }
    };
    if !(-3..=16).contains(&decpt) {
        let (first, rest) = digits.split_at(digits.len().min(1));
        push_digits(out, first);
        if !rest.is_empty() {
            out.push('.');
            push_digits(out, rest);
        }
        let exp10 = decpt - 1;
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
            let (whole, fraction) = digits.split_at(point);
            push_digits(out, whole);
            out.push('.');
            push_digits(out, fraction);
        }
    }
}

/// The digits Python's `repr` prints for a finite, positive float, and where the point goes: the
/// value is `0.DIGITS × 10^decpt` (the `decpt` of Python's `dtoa`).
struct Shortest {
    /// ASCII digits without leading or trailing zeros. As long as the longest text `ryu` writes
    /// for an `f64`, so every digit of it fits.
    ascii: [u8; 24],
    len: usize,
    decpt: i32,
}

impl Shortest {
    /// Reads `ryu`'s text for a finite, positive float: `DDD.DDD`, `0.000DDD` or `DDD.0` in fixed
    /// notation, `D.DDDeX` or `DeX` (`X` may have a `-`) otherwise.
    fn read(text: &str) -> Shortest {
        let (mantissa, exponent) = text.split_once('e').unwrap_or((text, ""));
        let (negative, magnitude) = match exponent.strip_prefix('-') {
            Some(magnitude) => (true, magnitude),
            None => (false, exponent),
        };
        let magnitude = magnitude
            .bytes()
            .filter(u8::is_ascii_digit)
            .fold(0i32, |acc, b| acc * 10 + i32::from(b - b'0'));
        let int_digits = mantissa.find('.').unwrap_or(mantissa.len());
        let mut shortest = Shortest {
            ascii: [b'0'; 24],
            len: 0,
            decpt: i32::try_from(int_digits).unwrap_or(0)
                + if negative { -magnitude } else { magnitude },
        };
        for b in mantissa.bytes().filter(u8::is_ascii_digit) {
            if b == b'0' && shortest.len == 0 {
                // A leading zero: `0.001` is `0.1 × 10^-2`.
                shortest.decpt -= 1;
            } else if let Some(slot) = shortest.ascii.get_mut(shortest.len) {
                *slot = b;
                shortest.len += 1;
            }
        }
        while let [.., b'0'] = shortest.digits() {
            shortest.len -= 1;
        }
        shortest
    }

    /// The significant digits, in ASCII.
    fn digits(&self) -> &[u8] {
        &self.ascii[..self.len]
    }
}

#[cfg(test)]
mod oracle;

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{dumps, PyValue};
    use super::{oracle, write_float};
    use proptest::prelude::*;

    /// CPython's `json.dumps(x)` for 2,000 doubles given by their bits; the header says how they
    /// were drawn.
    const CPYTHON_REPRS: &str = include_str!("float_repr/cpython.txt");

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

    /// What the writer before `ryu` printed for `f`.
    fn old_repr(f: f64) -> String {
        let mut out = String::new();
        oracle::write_float(&mut out, f);
        out
    }

    /// What [`write_float`] prints for `f`.
    fn new_repr(f: f64) -> String {
        let mut out = String::new();
        write_float(&mut out, f);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Any bit pattern: normal, subnormal, zero, infinite or NaN, either sign.
        #[test]
        fn same_as_the_old_writer_for_any_bits(bits in any::<u64>()) {
            let f = f64::from_bits(bits);
            prop_assert_eq!(new_repr(f), old_repr(f), "bits {:016x}", bits);
        }

        /// `N + 0.25` and `N + 0.75` in `[2^49, 2^51)`: exact ties between two shortest
        /// candidates, which must go to the even digit.
        #[test]
        fn same_as_the_old_writer_on_ties(n in (1u64 << 49)..(1u64 << 51), up: bool) {
            // Exact: below 2^53 every integer is an f64, and the quarters fit in these binades.
            let f = n as f64 + if up { 0.75 } else { 0.25 };
            prop_assert_eq!(new_repr(f), old_repr(f), "{:?}", f);
            prop_assert_eq!(new_repr(-f), old_repr(-f), "{:?}", -f);
        }
    }
}
