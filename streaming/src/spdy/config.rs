//! SPDY session settings.

use std::time::Duration;

use super::{DEFAULT_INITIAL_WINDOW, Limits};

/// How the send side treats the peer's flow-control window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowControl {
    /// Wait for window once the peer has shown it does flow control.
    Auto,
    /// Always wait for window (strict SPDY/3.1).
    Enforce,
    /// Never wait for window.
    Ignore,
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bounds on what the peer sends.
    pub limits: Limits,
    /// Most streams open at once; more are refused with REFUSED_STREAM.
    pub max_streams: usize,
    /// Window we advertise per stream and for the session.
    pub initial_window: u32,
    /// Send-side flow-control policy.
    pub flow_control: FlowControl,
    /// Most bytes buffered per stream for a peer that ignores our window;
    /// past it the connection stops reading (TCP backpressure).
    pub max_stream_buffer: usize,
    /// Largest DATA payload we send.
    pub write_chunk: usize,
    /// Frames queued for the transport before writers wait.
    pub outbound_queue: usize,
    /// Close the connection (GOAWAY) after this long without a frame in
    /// either direction; `None` never times out.
    pub idle_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_streams: 64,
            initial_window: DEFAULT_INITIAL_WINDOW,
            flow_control: FlowControl::Auto,
            max_stream_buffer: 256 * 1024,
            write_chunk: 32 * 1024,
            outbound_queue: 64,
            idle_timeout: None,
        }
    }
}
