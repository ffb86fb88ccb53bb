//! kombu body compression (`kombu/compression.py`), decoded with an output cap.
//!
//! Every decoder here is pure Rust (flate2 on miniz_oxide, bzip2 on libbz2-rs-sys, lzma-rs,
//! ruzstd) and writes at most `limit + 1` bytes before giving up, so a small compressed body
//! cannot expand into gigabytes of memory.

use std::io::{self, Read, Write};

use super::CeleryError;

/// A codec named by the `compression` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    /// `application/x-gzip`: despite the name, a zlib (RFC 1950) stream from `zlib.compress`.
    Zlib,
    /// `application/x-bz2`: `bz2.compress`.
    Bz2,
    /// `application/x-lzma`: `lzma.compress` (the `.xz` container), or legacy `.lzma`.
    Lzma,
    /// `application/zstd`: `zstd.compress`.
    Zstd,
}

impl Codec {
    /// Resolve a header value through kombu's aliases. `Err` carries the unsupported name.
    pub(crate) fn from_header(name: &str) -> Result<Codec, CeleryError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "application/x-gzip" | "gzip" | "zlib" => Ok(Codec::Zlib),
            "application/x-bz2" | "bzip2" | "bzip" => Ok(Codec::Bz2),
            "application/x-lzma" | "lzma" | "xz" => Ok(Codec::Lzma),
            "application/zstd" | "zstd" | "zstandard" => Ok(Codec::Zstd),
            _ => Err(CeleryError::UnsupportedCompression(super::error::clip(
                name, 100,
            ))),
        }
    }

    /// The canonical MIME type kombu writes.
    pub(crate) fn mime(self) -> &'static str {
        match self {
            Codec::Zlib => "application/x-gzip",
            Codec::Bz2 => "application/x-bz2",
            Codec::Lzma => "application/x-lzma",
            Codec::Zstd => "application/zstd",
        }
    }
}

/// Decompress `input` with `codec`, failing once the output would exceed `limit` bytes.
pub(crate) fn decompress(codec: Codec, input: &[u8], limit: usize) -> Result<Vec<u8>, CeleryError> {
    let mut out = CappedWriter {
        buf: Vec::new(),
        limit,
        overflowed: false,
    };
    let result = match codec {
        Codec::Zlib => copy(&mut flate2::read::ZlibDecoder::new(input), &mut out),
        Codec::Bz2 => copy(&mut bzip2::read::MultiBzDecoder::new(input), &mut out),
        Codec::Lzma => lzma(input, &mut out),
        Codec::Zstd => zstd(input, &mut out, limit),
    };
    if out.overflowed {
        return Err(CeleryError::DecompressedTooLarge { limit });
    }
    match result {
        Ok(()) => Ok(out.buf),
        Err(_) => Err(CeleryError::Decompress {
            codec: codec.mime(),
        }),
    }
}

/// `io::copy` that also works for decoders that error on a short write.
fn copy(reader: &mut dyn Read, out: &mut CappedWriter) -> io::Result<()> {
    io::copy(reader, out).map(|_| ())
}

/// Python's `lzma.decompress` uses `FORMAT_AUTO`: `.xz` (magic `FD 37 7A 58 5A 00`) or
/// legacy `.lzma` ("alone").
fn lzma(input: &[u8], out: &mut CappedWriter) -> io::Result<()> {
    const XZ_MAGIC: &[u8] = &[0xFD, b'7', b'z', b'X', b'Z', 0x00];
    let mut reader = io::BufReader::new(input);
    let result = if input.starts_with(XZ_MAGIC) {
        lzma_rs::xz_decompress(&mut reader, out)
    } else {
        lzma_rs::lzma_decompress(&mut reader, out)
    };
    result.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// Decode one or more concatenated zstd frames (Python's `zstd.decompress` accepts several).
fn zstd(input: &[u8], out: &mut CappedWriter, limit: usize) -> io::Result<()> {
    // The decoder reserves the frame's declared window up front; a body of `limit` bytes never
    // needs a window larger than itself, so refuse frames that ask for more (8 MiB floor).
    let max_window = u64::try_from(limit).unwrap_or(u64::MAX).max(8 << 20);
    let mut rest = input;
    loop {
        let mut decoder =
            ruzstd::decoding::StreamingDecoder::new_with_max_window_size(&mut rest, max_window)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        io::copy(&mut decoder, out)?;
        if rest.is_empty() {
            return Ok(());
        }
    }
}

/// A `Vec` sink that refuses to grow past `limit` bytes.
struct CappedWriter {
    buf: Vec<u8>,
    limit: usize,
    /// Set when a write was refused for size, so the caller can tell a bomb from corruption.
    overflowed: bool,
}

impl Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.limit {
            self.overflowed = true;
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "decompressed body over the limit",
            ));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
