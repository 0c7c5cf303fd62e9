//! SPDY/3 name/value header blocks and their zlib compression.
//!
//! A header block is `count:u32` followed by `count` pairs of
//! `len:u32 name` / `len:u32 value` (all big-endian). Names are lower case;
//! a value may carry several values separated by NUL. Each direction of a
//! connection compresses its header blocks with one zlib stream that starts
//! from the SPDY/3 dictionary and is sync-flushed after every block.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::Limits;
use super::dictionary::dictionary;

/// Errors while encoding or decoding a header block.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The zlib stream could not be inflated.
    #[error("corrupt compressed header block")]
    Inflate(#[source] flate2::DecompressError),
    /// The zlib stream asked for a dictionary other than SPDY/3's.
    #[error("header block wants an unknown zlib dictionary (adler32 {0:#010x})")]
    WrongDictionary(u32),
    /// Deflating failed.
    #[error("cannot compress header block")]
    Deflate(#[source] flate2::CompressError),
    /// The decompressed block is larger than allowed.
    #[error("decompressed header block exceeds {limit} bytes")]
    TooLarge {
        /// The configured bound.
        limit: usize,
    },
    /// The block has more pairs than allowed.
    #[error("header block has {count} pairs, more than {limit}")]
    TooMany {
        /// Pairs announced by the block.
        count: u32,
        /// The configured bound.
        limit: usize,
    },
    /// The block's structure is invalid (lengths, empty names, bad UTF-8).
    #[error("malformed header block: {0}")]
    Malformed(&'static str),
}

/// A decoded name/value header block, in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock {
    pairs: Vec<(String, String)>,
}

impl HeaderBlock {
    /// An empty block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a pair; the name is lower-cased as SPDY/3 requires.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.pairs.push((name.to_ascii_lowercase(), value.into()));
    }

    /// Builder form of [`HeaderBlock::push`].
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.push(name, value);
        self
    }

    /// The first value of `name` (case-insensitive); a NUL-separated list
    /// yields its first element.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split('\0').next().unwrap_or(v))
    }

    /// All pairs, in wire order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the block has no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Serializes the uncompressed block.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_len(&mut out, self.pairs.len());
        for (n, v) in &self.pairs {
            put_len(&mut out, n.len());
            out.extend_from_slice(n.as_bytes());
            put_len(&mut out, v.len());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    /// Parses an uncompressed block, enforcing `limits`.
    pub fn from_bytes(buf: &[u8], limits: &Limits) -> Result<Self, HeaderError> {
        let mut r = Reader { buf };
        let count = r.u32()?;
        if count as usize > limits.max_headers {
            return Err(HeaderError::TooMany {
                count,
                limit: limits.max_headers,
            });
        }
        let mut pairs = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let name = r.string()?;
            if name.is_empty() {
                return Err(HeaderError::Malformed("empty header name"));
            }
            let value = r.string()?;
            pairs.push((name.to_ascii_lowercase(), value));
        }
        if !r.buf.is_empty() {
            return Err(HeaderError::Malformed("trailing bytes after last pair"));
        }
        Ok(Self { pairs })
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn u32(&mut self) -> Result<u32, HeaderError> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<4>()
            .ok_or(HeaderError::Malformed("truncated length"))?;
        self.buf = rest;
        Ok(u32::from_be_bytes(*head))
    }

    fn string(&mut self) -> Result<String, HeaderError> {
        let len = self.u32()? as usize;
        if len > self.buf.len() {
            return Err(HeaderError::Malformed("length past end of block"));
        }
        let (s, rest) = self.buf.split_at(len);
        self.buf = rest;
        String::from_utf8(s.to_vec()).map_err(|_| HeaderError::Malformed("header is not UTF-8"))
    }
}

/// The compressing side of one direction of a connection.
pub struct HeaderCompressor {
    z: Compress,
}

impl std::fmt::Debug for HeaderCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderCompressor").finish_non_exhaustive()
    }
}

impl HeaderCompressor {
    /// A fresh zlib stream primed with the SPDY/3 dictionary.
    pub fn new() -> Result<Self, HeaderError> {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(dictionary())
            .map_err(HeaderError::Deflate)?;
        Ok(Self { z })
    }

    /// Compresses one block and sync-flushes, appending to `out`.
    pub fn compress(&mut self, block: &HeaderBlock, out: &mut Vec<u8>) -> Result<(), HeaderError> {
        let input = block.to_bytes();
        let mut consumed = 0usize;
        loop {
            out.reserve(input.len() / 2 + 64);
            let before_in = self.z.total_in();
            let spare = out.capacity() - out.len();
            let before_out = out.len();
            self.z
                .compress_vec(&input[consumed..], out, FlushCompress::Sync)
                .map_err(HeaderError::Deflate)?;
            consumed += usize::try_from(self.z.total_in() - before_in).unwrap_or(usize::MAX);
            let produced = out.len() - before_out;
            // Done once all input is in and the flush did not fill the buffer.
            if consumed >= input.len() && produced < spare {
                return Ok(());
            }
        }
    }
}

/// The decompressing side of one direction of a connection.
pub struct HeaderDecompressor {
    z: Decompress,
}

impl std::fmt::Debug for HeaderDecompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDecompressor").finish_non_exhaustive()
    }
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecompressor {
    /// A fresh zlib stream; the dictionary is supplied when zlib asks for it.
    pub fn new() -> Self {
        Self {
            z: Decompress::new(true),
        }
    }

    /// Inflates one compressed block and parses it, refusing output larger
    /// than `limits.max_header_block` (a decompression bomb fails here,
    /// after at most that many bytes were produced).
    pub fn decompress(
        &mut self,
        input: &[u8],
        limits: &Limits,
    ) -> Result<HeaderBlock, HeaderError> {
        let limit = limits.max_header_block;
        // One byte of headroom tells "exactly at the limit" from "over it".
        let mut out: Vec<u8> = Vec::with_capacity(limit.min(4096) + 1);
        let mut consumed = 0usize;
        loop {
            if out.capacity() == out.len() {
                if out.len() > limit {
                    return Err(HeaderError::TooLarge { limit });
                }
                let grow = (out.len()).max(4096).min(limit + 1 - out.len());
                out.reserve_exact(grow);
            }
            let spare = out.capacity() - out.len();
            let before_in = self.z.total_in();
            let before_out = out.len();
            let res = self
                .z
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync);
            consumed += usize::try_from(self.z.total_in() - before_in).unwrap_or(usize::MAX);
            let produced = out.len() - before_out;
            match res {
                Ok(Status::Ok) | Ok(Status::BufError) => {}
                Ok(Status::StreamEnd) => {
                    return Err(HeaderError::Malformed("zlib stream ended"));
                }
                Err(e) => match e.needs_dictionary() {
                    Some(adler) => {
                        let want = self
                            .z
                            .set_dictionary(dictionary())
                            .map_err(HeaderError::Inflate)?;
                        if want != adler {
                            return Err(HeaderError::WrongDictionary(adler));
                        }
                        continue;
                    }
                    None => return Err(HeaderError::Inflate(e)),
                },
            }
            if out.len() > limit {
                return Err(HeaderError::TooLarge { limit });
            }
            let progressed = produced > 0 || self.z.total_in() != before_in;
            if (consumed >= input.len() && produced < spare) || !progressed {
                break;
            }
        }
        if consumed < input.len() {
            return Err(HeaderError::Malformed("undecodable bytes in header block"));
        }
        HeaderBlock::from_bytes(&out, limits)
    }
}
