//! SPDY/3.1 as the Kubernetes streaming protocols use it.
//!
//! The client (kubectl through the API server, crictl, critest) upgrades an
//! HTTP connection to `SPDY/3.1` and then opens one stream per channel with a
//! SYN_STREAM whose `streamtype` header names it (`error`, `stdin`,
//! `stdout`, `stderr`, `resize`; `data`/`error` with `port` and `requestid`
//! for port-forward). The server answers each with a SYN_REPLY and exchanges
//! DATA frames; FLAG_FIN half-closes, RST_STREAM aborts.
//!
//! [`frame`] holds the wire format, [`headers`] the zlib-compressed
//! name/value blocks, [`Connection`] the server side of a session.

mod config;
mod connection;
mod dictionary;
pub mod frame;
pub mod headers;
mod stream;
mod transport;

pub use config::{Config, FlowControl};
pub use connection::{Closer, Connection, ConnectionError, Driver};
pub use dictionary::{DICTIONARY_LEN, dictionary};
pub use frame::{Frame, FrameDecoder, FrameEncoder, FrameError, GoAwayStatus, RstStatus};
pub use headers::{HeaderBlock, HeaderCompressor, HeaderDecompressor, HeaderError};
pub use stream::{Stream, StreamError};

/// The `Upgrade` token of the protocol.
pub const UPGRADE: &str = "SPDY/3.1";

/// Initial per-stream flow-control window (SPDY/3 default).
pub const DEFAULT_INITIAL_WINDOW: u32 = 64 * 1024;

/// Header naming a stream's role.
pub const HEADER_STREAM_TYPE: &str = "streamtype";
/// Port-forward: the pod port a stream pair is for.
pub const HEADER_PORT: &str = "port";
/// Port-forward: pairs the `data` and `error` streams of one connection.
pub const HEADER_REQUEST_ID: &str = "requestid";

/// Bounds applied to everything a peer sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest DATA payload accepted.
    pub max_data_frame: usize,
    /// Largest control-frame payload accepted (compressed headers included).
    pub max_control_frame: usize,
    /// Largest decompressed header block.
    pub max_header_block: usize,
    /// Most name/value pairs in one header block.
    pub max_headers: usize,
    /// Most entries in one SETTINGS frame.
    pub max_settings: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_data_frame: 1024 * 1024,
            max_control_frame: 64 * 1024,
            max_header_block: 64 * 1024,
            max_headers: 64,
            max_settings: 32,
        }
    }
}
