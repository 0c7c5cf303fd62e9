//! The server side of a SPDY/3.1 session over any async byte stream.
//!
//! [`Connection::new`] returns the connection and its [`Driver`], a future
//! that reads and writes the transport; spawn it (or poll it) for the life of
//! the session. Streams opened by the client arrive through
//! [`Connection::accept`].
//!
//! Flow control: we advertise a 64 KiB window per stream and for the session
//! and credit it back with WINDOW_UPDATE as the application reads. On the
//! send side, Go's spdystream (the library behind kubectl, client-go and the
//! kubelet) neither sends nor honours WINDOW_UPDATE, so a server that waited
//! for one would stall every exec after 64 KiB. [`FlowControl::Auto`] (the
//! default) therefore counts the send window but only waits on it once the
//! peer has shown it speaks flow control (sent a WINDOW_UPDATE or an initial
//! window SETTING); [`FlowControl::Enforce`] always waits.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::DEFAULT_INITIAL_WINDOW;
use super::config::{Config, FlowControl};
use super::frame::{Frame, FrameDecoder, FrameEncoder, FrameError, GoAway, GoAwayStatus};
use super::stream::{Stream, StreamError, StreamShared, StreamState};
use super::transport::{read_loop, write_loop};

/// Errors that end a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The transport failed.
    #[error("spdy transport")]
    Io(#[from] io::Error),
    /// The peer sent a frame we cannot parse or that breaks a bound.
    #[error("spdy framing")]
    Frame(#[from] FrameError),
    /// The peer broke the protocol.
    #[error("spdy protocol error: {0}")]
    Protocol(&'static str),
}

/// What the writer loop is asked to do.
pub(super) enum Out {
    Frame(Frame),
    Close,
}

/// Connection state behind the `Shared` lock.
pub(super) struct ConnState {
    pub(super) streams: HashMap<u32, Arc<StreamShared>>,
    pub(super) last_peer_stream: u32,
    pub(super) closed: bool,
    pub(super) session_unacked: u32,
}

/// What the connection, its streams and the transport loops share.
pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) state: Mutex<ConnState>,
    pub(super) out: mpsc::Sender<Out>,
    pub(super) peer_flow_control: AtomicBool,
    pub(super) peer_initial_window: AtomicI64,
    pub(super) session_send_window: AtomicI64,
    pub(super) last_activity: Mutex<Instant>,
}

/// Locks, ignoring poisoning (no invariant spans a panic here).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(super) fn touch(&self) {
        *lock(&self.last_activity) = Instant::now();
    }

    pub(super) fn idle_for(&self) -> Duration {
        lock(&self.last_activity).elapsed()
    }

    pub(super) fn enforcing(&self) -> bool {
        match self.config.flow_control {
            FlowControl::Enforce => true,
            FlowControl::Ignore => false,
            FlowControl::Auto => self.peer_flow_control.load(Ordering::Acquire),
        }
    }

    pub(super) async fn send(&self, frame: Frame) -> Result<(), StreamError> {
        self.out
            .send(Out::Frame(frame))
            .await
            .map_err(|_| StreamError::ConnectionClosed)
    }

    pub(super) fn remove(&self, id: u32) {
        lock(&self.state).streams.remove(&id);
    }

    pub(super) fn notify_all(&self) {
        let st = lock(&self.state);
        for s in st.streams.values() {
            s.changed.notify_waiters();
        }
    }

    pub(super) fn shutdown(&self) {
        let mut st = lock(&self.state);
        st.closed = true;
        for s in st.streams.values() {
            lock(&s.state).conn_closed = true;
            s.changed.notify_waiters();
        }
        st.streams.clear();
    }
}

/// Waits until `f` yields a value, re-checking after every state change.
pub(super) async fn wait_until<T>(
    s: &StreamShared,
    mut f: impl FnMut(&mut StreamState) -> Option<T>,
) -> T {
    loop {
        let notified = s.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(v) = f(&mut lock(&s.state)) {
            return v;
        }
        notified.await;
    }
}

/// The future that drives a connection's transport. It completes when the
/// peer disconnects, the connection is closed, or a protocol error occurs.
pub struct Driver {
    fut: Pin<Box<dyn Future<Output = Result<(), ConnectionError>> + Send>>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

impl Future for Driver {
    type Output = Result<(), ConnectionError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.fut.as_mut().poll(cx)
    }
}

/// The server side of a SPDY/3.1 session.
pub struct Connection {
    shared: Arc<Shared>,
    incoming: mpsc::Receiver<Stream>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Connection {
    /// Starts a session over `io`. Poll the returned [`Driver`] (for
    /// example with `tokio::spawn`) or nothing moves.
    pub fn new<IO>(io: IO, config: Config) -> Result<(Self, Driver), ConnectionError>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let encoder = FrameEncoder::new()?;
        let decoder = FrameDecoder::new(config.limits.clone());
        let (out_tx, out_rx) = mpsc::channel(config.outbound_queue.max(1));
        let (in_tx, in_rx) = mpsc::channel(config.max_streams.max(1));
        let shared = Arc::new(Shared {
            state: Mutex::new(ConnState {
                streams: HashMap::new(),
                last_peer_stream: 0,
                closed: false,
                session_unacked: 0,
            }),
            out: out_tx,
            peer_flow_control: AtomicBool::new(false),
            peer_initial_window: AtomicI64::new(i64::from(DEFAULT_INITIAL_WINDOW)),
            session_send_window: AtomicI64::new(i64::from(DEFAULT_INITIAL_WINDOW)),
            last_activity: Mutex::new(Instant::now()),
            config,
        });
        let (rd, wr) = tokio::io::split(io);
        let reader_shared = shared.clone();
        let writer_shared = shared.clone();
        let driver_shared = shared.clone();
        let fut = async move {
            let reader = read_loop(rd, decoder, reader_shared, in_tx);
            let writer = write_loop(wr, encoder, out_rx, writer_shared);
            tokio::pin!(reader, writer);
            let result = tokio::select! {
                r = &mut reader => {
                    // Let queued frames (a GOAWAY, say) reach the peer.
                    let w = tokio::time::timeout(std::time::Duration::from_secs(5), &mut writer).await;
                    match (r, w) {
                        (Err(e), _) => Err(e),
                        (Ok(()), Ok(w)) => w,
                        (Ok(()), Err(_)) => Ok(()),
                    }
                }
                w = &mut writer => w,
            };
            driver_shared.shutdown();
            result
        };
        Ok((
            Self {
                shared,
                incoming: in_rx,
            },
            Driver { fut: Box::pin(fut) },
        ))
    }

    /// The next stream the client opened; `None` once the connection is
    /// closed or the client sent GOAWAY.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.incoming.recv().await
    }

    /// Sends GOAWAY: the client should open no more streams.
    pub async fn go_away(&self, status: GoAwayStatus) -> Result<(), StreamError> {
        let last = lock(&self.shared.state).last_peer_stream;
        self.shared
            .send(Frame::GoAway(GoAway {
                last_good_stream_id: last,
                status,
            }))
            .await
    }

    /// Sends GOAWAY(OK), flushes and closes the transport; the driver then
    /// completes and every stream fails with `ConnectionClosed`.
    pub async fn close(&self) -> Result<(), StreamError> {
        self.closer().close().await
    }

    /// A handle that can close the connection after it was moved away.
    pub fn closer(&self) -> Closer {
        Closer {
            shared: self.shared.clone(),
        }
    }

    /// Whether the driver has finished.
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.state).closed
    }

    /// Number of streams currently open.
    pub fn open_streams(&self) -> usize {
        lock(&self.shared.state).streams.len()
    }
}

/// Closes a [`Connection`] from elsewhere (see [`Connection::closer`]).
#[derive(Clone)]
pub struct Closer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Closer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Closer").finish_non_exhaustive()
    }
}

impl Closer {
    /// Sends GOAWAY(OK), flushes and closes the transport.
    pub async fn close(&self) -> Result<(), StreamError> {
        let last = lock(&self.shared.state).last_peer_stream;
        self.shared
            .send(Frame::GoAway(GoAway {
                last_good_stream_id: last,
                status: GoAwayStatus::OK,
            }))
            .await?;
        self.shared
            .out
            .send(Out::Close)
            .await
            .map_err(|_| StreamError::ConnectionClosed)
    }
}
