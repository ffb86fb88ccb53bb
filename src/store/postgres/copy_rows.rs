//! Rows in PostgreSQL's binary `COPY ... FROM STDIN (FORMAT binary)` format, encoded before a
//! commit takes the log lock and finished under it.
//!
//! Not for: anything but the PostgreSQL store's commit. The values themselves are encoded by
//! `postgres-types` (`ToSql`, the same encoders tokio-postgres uses for parameters); only the
//! framing is written here (the file header, then per row an `i16` field count and per field an
//! `i32` length, -1 for NULL, followed by the value; an `i16` -1 at the end; see "Binary Format"
//! on the `COPY` page of the PostgreSQL manual).
//!
//! Why not tokio-postgres's `BinaryCopyInWriter`: it encodes each row when it is written and
//! sends every 4 KiB. A commit knows all of a row but its record time, log position and leaf
//! hash before it takes the log lock, and everything it does under the lock delays every other
//! worker. [`EncodedRows`] encodes the known fields of every row beforehand;
//! [`EncodedRows::finish_row`] then appends the last fields, and the caller sends the result in
//! large chunks.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{IsNull, ToSql, Type};

/// The binary COPY header: signature, flags (none), header extension length (none).
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The binary COPY trailer: a field count of -1.
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// The leading fields of many rows, encoded back to back.
#[derive(Debug, Default)]
pub struct EncodedRows {
    bytes: BytesMut,
    /// Where each row starts in `bytes`, plus the end of the last one.
    bounds: Vec<usize>,
}

impl EncodedRows {
    /// Room for about `rows` rows of `row_bytes` bytes.
    pub fn with_capacity(rows: usize, row_bytes: usize) -> Self {
        let mut bounds = Vec::with_capacity(rows + 1);
        bounds.push(0);
        Self {
            bytes: BytesMut::with_capacity(rows.saturating_mul(row_bytes)),
            bounds,
        }
    }

    /// Append one row's field count (`fields`, the leading ones given here plus those
    /// [`EncodedRows::finish_row`] will append) and its leading `values`, each encoded as `ty`.
    ///
    /// # Errors
    ///
    /// A value that cannot be encoded as its type, or longer than an `i32` length can say.
    pub fn push(
        &mut self,
        fields: i16,
        values: &[(&(dyn ToSql + Sync), &Type)],
    ) -> Result<(), Box<dyn Error + Sync + Send>> {
        let start = self.bytes.len();
        self.bytes.put_i16(fields);
        for &(value, ty) in values {
            if let Err(e) = encode_field(&mut self.bytes, value, ty) {
                self.bytes.truncate(start);
                return Err(e);
            }
        }
        self.bounds.push(self.bytes.len());
        Ok(())
    }

    /// Copy row `i`'s leading fields to `out`, then append `tail`, each value encoded as its
    /// type, in order. `None` when there is no row `i`.
    ///
    /// # Errors
    ///
    /// As [`EncodedRows::push`].
    pub fn finish_row(
        &self,
        i: usize,
        tail: &[(&(dyn ToSql + Sync), &Type)],
        out: &mut BytesMut,
    ) -> Result<Option<()>, Box<dyn Error + Sync + Send>> {
        let (Some(&start), Some(&end)) = (self.bounds.get(i), self.bounds.get(i + 1)) else {
            return Ok(None);
        };
        out.extend_from_slice(&self.bytes[start..end]);
        for &(value, ty) in tail {
            encode_field(out, value, ty)?;
        }
        Ok(Some(()))
    }
}

/// One field: its `i32` length (-1 for NULL), then its value as `ty`.
fn encode_field(
    out: &mut BytesMut,
    value: &(dyn ToSql + Sync),
    ty: &Type,
) -> Result<(), Box<dyn Error + Sync + Send>> {
    let at = out.len();
    out.put_i32(0);
    let length = match value.to_sql_checked(ty, out)? {
        IsNull::Yes => -1,
        IsNull::No => i32::try_from(out.len() - at - 4)
            .map_err(|_| format!("a {ty} value is too large for COPY"))?,
    };
    out[at..at + 4].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_framed_as_binary_copy_wants() {
        let mut rows = EncodedRows::with_capacity(2, 16);
        let none: Option<&str> = None;
        rows.push(3, &[(&"ab", &Type::TEXT), (&none, &Type::TEXT)])
            .expect("row 0");
        rows.push(3, &[(&"c", &Type::TEXT), (&"", &Type::TEXT)])
            .expect("row 1");
        assert_eq!(rows.bounds.len(), 3, "two rows");
        let mut out = BytesMut::new();
        rows.finish_row(1, &[(&7_i64, &Type::INT8)], &mut out)
            .expect("encode")
            .expect("row 1 exists");
        let want: Vec<u8> = [
            &[0, 3][..],
            &[0, 0, 0, 1, b'c'],
            &[0, 0, 0, 0],
            &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7],
        ]
        .concat();
        assert_eq!(&out[..], &want[..]);
        out.clear();
        rows.finish_row(0, &[], &mut out).expect("encode");
        assert_eq!(
            &out[..],
            &[0, 3, 0, 0, 0, 2, b'a', b'b', 0xff, 0xff, 0xff, 0xff][..]
        );
        assert_eq!(rows.finish_row(2, &[], &mut out).expect("encode"), None);
    }

    #[test]
    fn a_value_of_the_wrong_type_is_an_error_and_leaves_no_partial_row() {
        let mut rows = EncodedRows::with_capacity(1, 16);
        let err = rows.push(2, &[(&"ok", &Type::TEXT), (&1_i64, &Type::TEXT)]);
        assert!(err.is_err());
        assert_eq!(rows.bounds.len(), 1, "no row");
        assert_eq!(rows.bytes.len(), 0);
    }

    #[test]
    fn the_header_is_the_documented_signature() {
        assert_eq!(HEADER.len(), 19);
        assert_eq!(&HEADER[..11], b"PGCOPY\n\xff\r\n\0");
    }
}
