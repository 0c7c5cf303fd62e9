//! One SPDY stream: the handle the application reads, writes, closes and
//! resets, and the state the transport loops share with it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::HEADER_STREAM_TYPE;
use super::connection::{Out, Shared, lock, wait_until};
use super::frame::{Data, Frame, RstStatus, RstStream, SynReply, WindowUpdate};
use super::headers::HeaderBlock;
use super::transport::reset_local;

/// Errors on one stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The stream was reset (by the peer or by us).
    #[error("stream reset with status {}", .0 .0)]
    Reset(RstStatus),
    /// The connection is gone.
    #[error("connection closed")]
    ConnectionClosed,
    /// Write after our half-close.
    #[error("stream already closed for writing")]
    AlreadyClosed,
    /// A second SYN_REPLY.
    #[error("stream already replied")]
    AlreadyReplied,
    /// More data than the caller's bound (see [`Stream::read_to_end`]).
    #[error("stream data exceeds {limit} bytes")]
    TooLong {
        /// The bound.
        limit: usize,
    },
}

/// One stream's buffers, half-close flags and windows.
pub(super) struct StreamState {
    pub(super) recv: VecDeque<u8>,
    pub(super) remote_fin: bool,
    pub(super) local_fin: bool,
    pub(super) reset: Option<RstStatus>,
    pub(super) conn_closed: bool,
    pub(super) replied: bool,
    pub(super) send_window: i64,
    pub(super) recv_window: i64,
    pub(super) unacked: u32,
}

/// A stream as the connection tracks it.
pub(super) struct StreamShared {
    pub(super) id: u32,
    pub(super) headers: HeaderBlock,
    pub(super) state: Mutex<StreamState>,
    pub(super) changed: Notify,
}

/// The application's hold on a stream; dropping the last one resets it.
pub(super) struct Handle {
    pub(super) stream: Arc<StreamShared>,
    pub(super) conn: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let (finished, reset) = {
            let st = lock(&self.stream.state);
            (
                st.local_fin && st.remote_fin,
                st.reset.is_some() || st.conn_closed,
            )
        };
        let present = lock(&self.conn.state)
            .streams
            .remove(&self.stream.id)
            .is_some();
        if present && !finished && !reset {
            let frame = Frame::RstStream(RstStream {
                stream_id: self.stream.id,
                status: RstStatus::CANCEL,
            });
            let _ = self.conn.out.try_send(Out::Frame(frame));
        }
    }
}

/// One stream the client opened. Clones share the stream; when the last
/// clone is dropped before both sides closed, the stream is reset (CANCEL).
#[derive(Clone)]
pub struct Stream {
    pub(super) handle: Arc<Handle>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.handle.stream.id)
            .field("headers", &self.handle.stream.headers)
            .finish()
    }
}

impl Stream {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.handle.stream.id
    }

    /// The SYN_STREAM headers.
    pub fn headers(&self) -> &HeaderBlock {
        &self.handle.stream.headers
    }

    /// The `streamtype` header (`stdin`, `stdout`, `stderr`, `error`,
    /// `resize`, `data`).
    pub fn stream_type(&self) -> Option<&str> {
        self.headers().get(HEADER_STREAM_TYPE)
    }

    /// Accepts the stream with a SYN_REPLY (the Kubernetes client waits for
    /// it before using the stream).
    pub async fn reply(&self, headers: HeaderBlock) -> Result<(), StreamError> {
        let s = &self.handle.stream;
        {
            let mut st = lock(&s.state);
            check_open(&st)?;
            if st.replied {
                return Err(StreamError::AlreadyReplied);
            }
            st.replied = true;
        }
        self.handle
            .conn
            .send(Frame::SynReply(SynReply {
                stream_id: s.id,
                fin: false,
                headers,
            }))
            .await
    }

    /// Reads received data; `Ok(0)` once the client half-closed and the
    /// buffer is drained.
    pub async fn read(&self, buf: &mut [u8]) -> Result<usize, StreamError> {
        let s = &self.handle.stream;
        let conn = &self.handle.conn;
        let threshold = (conn.config.initial_window / 2).max(1);
        let (n, credit) = wait_until(s, |st| {
            if !st.recv.is_empty() {
                let n = st.recv.len().min(buf.len());
                for (dst, src) in buf.iter_mut().zip(st.recv.drain(..n)) {
                    *dst = src;
                }
                st.unacked += u32::try_from(n).unwrap_or(u32::MAX);
                let mut credit = 0;
                if st.unacked >= threshold && !st.remote_fin {
                    credit = st.unacked;
                    st.recv_window += i64::from(credit);
                    st.unacked = 0;
                }
                return Some(Ok((n, credit)));
            }
            if let Some(r) = st.reset {
                return Some(Err(StreamError::Reset(r)));
            }
            if st.remote_fin {
                return Some(Ok((0, 0)));
            }
            if st.conn_closed {
                return Some(Err(StreamError::ConnectionClosed));
            }
            None
        })
        .await?;
        // Wake a transport reader waiting for buffer space.
        s.changed.notify_waiters();
        if credit > 0 {
            conn.send(Frame::WindowUpdate(WindowUpdate {
                stream_id: s.id,
                delta: credit,
            }))
            .await?;
        }
        let session_credit = {
            let mut st = lock(&conn.state);
            st.session_unacked += u32::try_from(n).unwrap_or(u32::MAX);
            if st.session_unacked >= threshold {
                std::mem::take(&mut st.session_unacked)
            } else {
                0
            }
        };
        if session_credit > 0 {
            conn.send(Frame::WindowUpdate(WindowUpdate {
                stream_id: 0,
                delta: session_credit,
            }))
            .await?;
        }
        Ok(n)
    }

    /// Reads until the client half-closes, failing past `limit` bytes.
    pub async fn read_to_end(&self, limit: usize) -> Result<Vec<u8>, StreamError> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = self.read(&mut buf).await?;
            if n == 0 {
                return Ok(out);
            }
            if out.len() + n > limit {
                return Err(StreamError::TooLong { limit });
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Writes all of `data`, split into DATA frames and, when the peer does
    /// flow control, paced by its window.
    pub async fn write(&self, data: &[u8]) -> Result<(), StreamError> {
        let s = &self.handle.stream;
        let conn = &self.handle.conn;
        let chunk = conn.config.write_chunk.max(1);
        let mut rest = data;
        while !rest.is_empty() {
            let want = rest.len().min(chunk);
            let n = wait_until(s, |st| {
                if let Err(e) = check_open(st) {
                    return Some(Err(e));
                }
                let mut n = want;
                if conn.enforcing() {
                    let session = conn.session_send_window.load(Ordering::Acquire);
                    let window = st.send_window.min(session).max(0);
                    n = n.min(usize::try_from(window).unwrap_or(0));
                    if n == 0 {
                        return None;
                    }
                }
                let n64 = i64::try_from(n).unwrap_or(i64::MAX);
                st.send_window -= n64;
                conn.session_send_window.fetch_sub(n64, Ordering::AcqRel);
                Some(Ok(n))
            })
            .await?;
            conn.send(Frame::Data(Data {
                stream_id: s.id,
                fin: false,
                data: rest[..n].to_vec(),
            }))
            .await?;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Half-closes our side (an empty DATA frame with FLAG_FIN).
    pub async fn close(&self) -> Result<(), StreamError> {
        let s = &self.handle.stream;
        let done = {
            let mut st = lock(&s.state);
            check_open(&st)?;
            st.local_fin = true;
            st.remote_fin
        };
        let sent = self
            .handle
            .conn
            .send(Frame::Data(Data {
                stream_id: s.id,
                fin: true,
                data: Vec::new(),
            }))
            .await;
        if done {
            self.handle.conn.remove(s.id);
        }
        sent
    }

    /// Aborts the stream with RST_STREAM.
    pub async fn reset(&self, status: RstStatus) -> Result<(), StreamError> {
        let s = &self.handle.stream;
        {
            let st = lock(&s.state);
            if st.reset.is_some() || st.conn_closed {
                return Ok(());
            }
        }
        reset_local(&self.handle.conn, s, status).await;
        Ok(())
    }

    /// Whether the client has half-closed and all its data was read.
    pub fn is_remote_closed(&self) -> bool {
        let st = lock(&self.handle.stream.state);
        st.remote_fin && st.recv.is_empty()
    }
}

/// Whether the stream can still be written to.
pub(super) fn check_open(st: &StreamState) -> Result<(), StreamError> {
    if let Some(r) = st.reset {
        return Err(StreamError::Reset(r));
    }
    if st.conn_closed {
        return Err(StreamError::ConnectionClosed);
    }
    if st.local_fin {
        return Err(StreamError::AlreadyClosed);
    }
    Ok(())
}
