//! SPDY/3.1 frames: parsing and serialization.
//!
//! Control frames: `1 | version:15 | type:16 | flags:8 | length:24 | payload`.
//! Data frames: `0 | stream-id:31 | flags:8 | length:24 | payload`.

use super::Limits;
use super::headers::{HeaderBlock, HeaderCompressor, HeaderDecompressor, HeaderError};

/// The protocol version carried in control frames.
pub const VERSION: u16 = 3;
/// FLAG_FIN: the sender's last frame on this stream.
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL on SYN_STREAM: the receiver must not send.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// FLAG_SETTINGS_CLEAR_SETTINGS on SETTINGS.
pub const FLAG_CLEAR_SETTINGS: u8 = 0x01;
/// Bytes of the common frame header.
pub const HEADER_LEN: usize = 8;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

const STREAM_ID_MASK: u32 = 0x7fff_ffff;

/// RST_STREAM status codes (SPDY/3 section 2.6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RstStatus(pub u32);

impl RstStatus {
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: Self = Self(1);
    /// INVALID_STREAM: a frame for a stream that is not active.
    pub const INVALID_STREAM: Self = Self(2);
    /// REFUSED_STREAM: refused before any processing.
    pub const REFUSED_STREAM: Self = Self(3);
    /// UNSUPPORTED_VERSION.
    pub const UNSUPPORTED_VERSION: Self = Self(4);
    /// CANCEL: the stream is no longer needed.
    pub const CANCEL: Self = Self(5);
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: Self = Self(6);
    /// FLOW_CONTROL_ERROR: the peer overran the window.
    pub const FLOW_CONTROL_ERROR: Self = Self(7);
    /// STREAM_IN_USE: SYN_REPLY for an already open stream.
    pub const STREAM_IN_USE: Self = Self(8);
    /// STREAM_ALREADY_CLOSED: data after a half-close.
    pub const STREAM_ALREADY_CLOSED: Self = Self(9);
    /// FRAME_TOO_LARGE.
    pub const FRAME_TOO_LARGE: Self = Self(11);
}

/// GOAWAY status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoAwayStatus(pub u32);

impl GoAwayStatus {
    /// OK: normal teardown.
    pub const OK: Self = Self(0);
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: Self = Self(1);
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: Self = Self(2);
}

/// SETTINGS identifiers used by this crate.
pub mod settings_id {
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub const MAX_CONCURRENT_STREAMS: u32 = 4;
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub const INITIAL_WINDOW_SIZE: u32 = 7;
}

/// SYN_STREAM: the peer opens a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynStream {
    /// The new stream's id (odd when opened by the client).
    pub stream_id: u32,
    /// The stream this one is associated with, or 0.
    pub associated_id: u32,
    /// Priority, 0 (highest) to 7.
    pub priority: u8,
    /// Credential slot (unused by Kubernetes).
    pub slot: u8,
    /// FLAG_FIN: the opener sends nothing more.
    pub fin: bool,
    /// FLAG_UNIDIRECTIONAL.
    pub unidirectional: bool,
    /// The stream's headers.
    pub headers: HeaderBlock,
}

/// SYN_REPLY: the receiver accepts a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynReply {
    /// The stream being answered.
    pub stream_id: u32,
    /// FLAG_FIN.
    pub fin: bool,
    /// Reply headers.
    pub headers: HeaderBlock,
}

/// RST_STREAM: abnormal end of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RstStream {
    /// The stream.
    pub stream_id: u32,
    /// Why.
    pub status: RstStatus,
}

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Entry flags (PERSIST_VALUE 1, PERSISTED 2).
    pub flags: u8,
    /// The setting's id (24 bits).
    pub id: u32,
    /// Its value.
    pub value: u32,
}

/// SETTINGS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// FLAG_SETTINGS_CLEAR_SETTINGS.
    pub clear: bool,
    /// The entries.
    pub entries: Vec<Setting>,
}

/// GOAWAY: the sender accepts no new streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoAway {
    /// The last stream id the sender processed.
    pub last_good_stream_id: u32,
    /// Why.
    pub status: GoAwayStatus,
}

/// HEADERS: extra headers for an open stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    /// The stream.
    pub stream_id: u32,
    /// FLAG_FIN.
    pub fin: bool,
    /// The headers.
    pub headers: HeaderBlock,
}

/// WINDOW_UPDATE: the receiver grants more send window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowUpdate {
    /// The stream (0: the whole session in SPDY/3.1).
    pub stream_id: u32,
    /// Bytes added to the window (1..=2^31-1).
    pub delta: u32,
}

/// A DATA frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// The stream.
    pub stream_id: u32,
    /// FLAG_FIN: the sender's half of the stream is closed.
    pub fin: bool,
    /// Payload.
    pub data: Vec<u8>,
}

/// Any SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// SYN_STREAM.
    SynStream(SynStream),
    /// SYN_REPLY.
    SynReply(SynReply),
    /// RST_STREAM.
    RstStream(RstStream),
    /// SETTINGS.
    Settings(Settings),
    /// PING with its id.
    Ping(u32),
    /// GOAWAY.
    GoAway(GoAway),
    /// HEADERS.
    Headers(Headers),
    /// WINDOW_UPDATE.
    WindowUpdate(WindowUpdate),
    /// DATA.
    Data(Data),
    /// A control frame of a type we do not know (ignored per the spec).
    Unknown {
        /// Its type field.
        frame_type: u16,
    },
}

/// Errors while parsing or serializing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A frame announced more payload than allowed.
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    TooLong {
        /// Announced length.
        len: usize,
        /// The bound.
        limit: usize,
    },
    /// A control frame of another SPDY version.
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    /// A fixed-size frame with the wrong length or an invalid field.
    #[error("malformed {frame} frame: {reason}")]
    Malformed {
        /// Which frame.
        frame: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The header block failed.
    #[error("header block")]
    Header(#[from] HeaderError),
}

fn malformed(frame: &'static str, reason: &'static str) -> FrameError {
    FrameError::Malformed { frame, reason }
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(x)
}

/// Reads frames from bytes; owns the inbound zlib context.
#[derive(Debug)]
pub struct FrameDecoder {
    inflate: HeaderDecompressor,
    limits: Limits,
}

impl FrameDecoder {
    /// A decoder for one connection direction.
    pub fn new(limits: Limits) -> Self {
        Self {
            inflate: HeaderDecompressor::new(),
            limits,
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Decodes one frame from the front of `buf`. Returns `None` when more
    /// bytes are needed, else the frame and the bytes it used. An over-long
    /// frame is refused from its 8-byte header alone, before buffering it.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let word = be32(buf, 0);
        let flags = buf[4];
        let len = (be32(buf, 4) & 0x00ff_ffff) as usize;
        let control = word & 0x8000_0000 != 0;
        let limit = if control {
            self.limits.max_control_frame
        } else {
            self.limits.max_data_frame
        };
        if len > limit {
            return Err(FrameError::TooLong { len, limit });
        }
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let p = &buf[HEADER_LEN..HEADER_LEN + len];
        let used = HEADER_LEN + len;
        if !control {
            let frame = Frame::Data(Data {
                stream_id: word & STREAM_ID_MASK,
                fin: flags & FLAG_FIN != 0,
                data: p.to_vec(),
            });
            return Ok(Some((frame, used)));
        }
        let version = u16::try_from((word >> 16) & 0x7fff).unwrap_or(u16::MAX);
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        let kind = u16::try_from(word & 0xffff).unwrap_or(u16::MAX);
        let fin = flags & FLAG_FIN != 0;
        let frame = match kind {
            TYPE_SYN_STREAM => {
                if p.len() < 10 {
                    return Err(malformed("SYN_STREAM", "shorter than 10 bytes"));
                }
                Frame::SynStream(SynStream {
                    stream_id: be32(p, 0) & STREAM_ID_MASK,
                    associated_id: be32(p, 4) & STREAM_ID_MASK,
                    priority: p[8] >> 5,
                    slot: p[9],
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers: self.inflate.decompress(&p[10..], &self.limits)?,
                })
            }
            TYPE_SYN_REPLY => {
                if p.len() < 4 {
                    return Err(malformed("SYN_REPLY", "shorter than 4 bytes"));
                }
                Frame::SynReply(SynReply {
                    stream_id: be32(p, 0) & STREAM_ID_MASK,
                    fin,
                    headers: self.inflate.decompress(&p[4..], &self.limits)?,
                })
            }
            TYPE_HEADERS => {
                if p.len() < 4 {
                    return Err(malformed("HEADERS", "shorter than 4 bytes"));
                }
                Frame::Headers(Headers {
                    stream_id: be32(p, 0) & STREAM_ID_MASK,
                    fin,
                    headers: self.inflate.decompress(&p[4..], &self.limits)?,
                })
            }
            TYPE_RST_STREAM => {
                if p.len() != 8 {
                    return Err(malformed("RST_STREAM", "length is not 8"));
                }
                Frame::RstStream(RstStream {
                    stream_id: be32(p, 0) & STREAM_ID_MASK,
                    status: RstStatus(be32(p, 4)),
                })
            }
            TYPE_SETTINGS => {
                if p.len() < 4 {
                    return Err(malformed("SETTINGS", "shorter than 4 bytes"));
                }
                let n = be32(p, 0) as usize;
                if n > self.limits.max_settings {
                    return Err(malformed("SETTINGS", "too many entries"));
                }
                if p.len() != 4 + n * 8 {
                    return Err(malformed("SETTINGS", "length does not match entry count"));
                }
                let entries = (0..n)
                    .map(|i| {
                        let at = 4 + i * 8;
                        let head = be32(p, at);
                        Setting {
                            flags: p[at],
                            id: head & 0x00ff_ffff,
                            value: be32(p, at + 4),
                        }
                    })
                    .collect();
                Frame::Settings(Settings {
                    clear: flags & FLAG_CLEAR_SETTINGS != 0,
                    entries,
                })
            }
            TYPE_PING => {
                if p.len() != 4 {
                    return Err(malformed("PING", "length is not 4"));
                }
                Frame::Ping(be32(p, 0))
            }
            TYPE_GOAWAY => {
                if p.len() != 8 {
                    return Err(malformed("GOAWAY", "length is not 8"));
                }
                Frame::GoAway(GoAway {
                    last_good_stream_id: be32(p, 0) & STREAM_ID_MASK,
                    status: GoAwayStatus(be32(p, 4)),
                })
            }
            TYPE_WINDOW_UPDATE => {
                if p.len() != 8 {
                    return Err(malformed("WINDOW_UPDATE", "length is not 8"));
                }
                Frame::WindowUpdate(WindowUpdate {
                    stream_id: be32(p, 0) & STREAM_ID_MASK,
                    delta: be32(p, 4) & STREAM_ID_MASK,
                })
            }
            other => Frame::Unknown { frame_type: other },
        };
        Ok(Some((frame, used)))
    }
}

/// Writes frames to bytes; owns the outbound zlib context, so frames must be
/// encoded in the order they go on the wire.
#[derive(Debug)]
pub struct FrameEncoder {
    deflate: HeaderCompressor,
}

impl FrameEncoder {
    /// An encoder for one connection direction.
    pub fn new() -> Result<Self, FrameError> {
        Ok(Self {
            deflate: HeaderCompressor::new()?,
        })
    }

    /// Appends the wire form of `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let start = out.len();
        match frame {
            Frame::Data(d) => {
                out.extend_from_slice(&(d.stream_id & STREAM_ID_MASK).to_be_bytes());
                out.extend_from_slice(&[if d.fin { FLAG_FIN } else { 0 }, 0, 0, 0]);
                out.extend_from_slice(&d.data);
            }
            Frame::SynStream(s) => {
                let mut flags = if s.fin { FLAG_FIN } else { 0 };
                if s.unidirectional {
                    flags |= FLAG_UNIDIRECTIONAL;
                }
                control_header(out, TYPE_SYN_STREAM, flags);
                out.extend_from_slice(&(s.stream_id & STREAM_ID_MASK).to_be_bytes());
                out.extend_from_slice(&(s.associated_id & STREAM_ID_MASK).to_be_bytes());
                out.push((s.priority & 0x7) << 5);
                out.push(s.slot);
                self.deflate.compress(&s.headers, out)?;
            }
            Frame::SynReply(s) => {
                control_header(out, TYPE_SYN_REPLY, if s.fin { FLAG_FIN } else { 0 });
                out.extend_from_slice(&(s.stream_id & STREAM_ID_MASK).to_be_bytes());
                self.deflate.compress(&s.headers, out)?;
            }
            Frame::Headers(s) => {
                control_header(out, TYPE_HEADERS, if s.fin { FLAG_FIN } else { 0 });
                out.extend_from_slice(&(s.stream_id & STREAM_ID_MASK).to_be_bytes());
                self.deflate.compress(&s.headers, out)?;
            }
            Frame::RstStream(r) => {
                control_header(out, TYPE_RST_STREAM, 0);
                out.extend_from_slice(&(r.stream_id & STREAM_ID_MASK).to_be_bytes());
                out.extend_from_slice(&r.status.0.to_be_bytes());
            }
            Frame::Settings(s) => {
                control_header(
                    out,
                    TYPE_SETTINGS,
                    if s.clear { FLAG_CLEAR_SETTINGS } else { 0 },
                );
                let n = u32::try_from(s.entries.len())
                    .map_err(|_| malformed("SETTINGS", "too many entries"))?;
                out.extend_from_slice(&n.to_be_bytes());
                for e in &s.entries {
                    let head = (u32::from(e.flags) << 24) | (e.id & 0x00ff_ffff);
                    out.extend_from_slice(&head.to_be_bytes());
                    out.extend_from_slice(&e.value.to_be_bytes());
                }
            }
            Frame::Ping(id) => {
                control_header(out, TYPE_PING, 0);
                out.extend_from_slice(&id.to_be_bytes());
            }
            Frame::GoAway(g) => {
                control_header(out, TYPE_GOAWAY, 0);
                out.extend_from_slice(&(g.last_good_stream_id & STREAM_ID_MASK).to_be_bytes());
                out.extend_from_slice(&g.status.0.to_be_bytes());
            }
            Frame::WindowUpdate(w) => {
                control_header(out, TYPE_WINDOW_UPDATE, 0);
                out.extend_from_slice(&(w.stream_id & STREAM_ID_MASK).to_be_bytes());
                out.extend_from_slice(&(w.delta & STREAM_ID_MASK).to_be_bytes());
            }
            Frame::Unknown { .. } => {
                return Err(malformed("unknown", "cannot serialize an unknown frame"));
            }
        }
        let len = out.len() - start - HEADER_LEN;
        if len > 0x00ff_ffff {
            out.truncate(start);
            return Err(FrameError::TooLong {
                len,
                limit: 0x00ff_ffff,
            });
        }
        let len = u32::try_from(len).unwrap_or(0).to_be_bytes();
        out[start + 5..start + 8].copy_from_slice(&len[1..]);
        Ok(())
    }
}

fn control_header(out: &mut Vec<u8>, kind: u16, flags: u8) {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&[flags, 0, 0, 0]);
}
