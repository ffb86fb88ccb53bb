//! The float repr geoprov used before it took its digits from `ryu`: Rust's shortest `{:e}`
//! digits, with exact ties between two shortest candidates repaired to the even digit, laid out
//! Python's way.
//!
//! Not for: production. It is compiled only for tests, as the oracle the `ryu`-based writer is
//! compared with on random doubles; it was itself checked against CPython on 200,000 doubles.

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
