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

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::frame::{
    Data, Frame, FrameDecoder, FrameEncoder, FrameError, GoAway, GoAwayStatus, RstStatus,
    RstStream, SynReply, WindowUpdate, settings_id,
};
use super::headers::HeaderBlock;
use super::{DEFAULT_INITIAL_WINDOW, HEADER_STREAM_TYPE, Limits};

const MAX_WINDOW: i64 = 0x7fff_ffff;

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

enum Out {
    Frame(Frame),
    Close,
}

struct StreamState {
    recv: VecDeque<u8>,
    remote_fin: bool,
    local_fin: bool,
    reset: Option<RstStatus>,
    conn_closed: bool,
    replied: bool,
    send_window: i64,
    recv_window: i64,
    unacked: u32,
}

struct StreamShared {
    id: u32,
    headers: HeaderBlock,
    state: Mutex<StreamState>,
    changed: Notify,
}

struct ConnState {
    streams: HashMap<u32, Arc<StreamShared>>,
    last_peer_stream: u32,
    closed: bool,
    session_unacked: u32,
}

struct Shared {
    config: Config,
    state: Mutex<ConnState>,
    out: mpsc::Sender<Out>,
    peer_flow_control: AtomicBool,
    peer_initial_window: AtomicI64,
    session_send_window: AtomicI64,
    last_activity: Mutex<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn touch(&self) {
        *lock(&self.last_activity) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        lock(&self.last_activity).elapsed()
    }

    fn enforcing(&self) -> bool {
        match self.config.flow_control {
            FlowControl::Enforce => true,
            FlowControl::Ignore => false,
            FlowControl::Auto => self.peer_flow_control.load(Ordering::Acquire),
        }
    }

    async fn send(&self, frame: Frame) -> Result<(), StreamError> {
        self.out
            .send(Out::Frame(frame))
            .await
            .map_err(|_| StreamError::ConnectionClosed)
    }

    fn remove(&self, id: u32) {
        lock(&self.state).streams.remove(&id);
    }

    fn notify_all(&self) {
        let st = lock(&self.state);
        for s in st.streams.values() {
            s.changed.notify_waiters();
        }
    }

    fn shutdown(&self) {
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
async fn wait_until<T>(s: &StreamShared, mut f: impl FnMut(&mut StreamState) -> Option<T>) -> T {
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

async fn write_loop<W: AsyncWrite>(
    wr: W,
    mut encoder: FrameEncoder,
    mut rx: mpsc::Receiver<Out>,
    shared: Arc<Shared>,
) -> Result<(), ConnectionError> {
    tokio::pin!(wr);
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        buf.clear();
        let mut close = false;
        let mut next = Some(first);
        while let Some(out) = next.take() {
            match out {
                Out::Frame(f) => encoder.encode(&f, &mut buf)?,
                Out::Close => {
                    close = true;
                    break;
                }
            }
            if buf.len() < 64 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        wr.write_all(&buf).await?;
        wr.flush().await?;
        shared.touch();
        if close {
            wr.shutdown().await?;
            return Ok(());
        }
    }
    Ok(())
}

async fn read_loop<R: AsyncRead>(
    rd: R,
    mut decoder: FrameDecoder,
    shared: Arc<Shared>,
    incoming: mpsc::Sender<Stream>,
) -> Result<(), ConnectionError> {
    tokio::pin!(rd);
    let mut incoming = Some(incoming);
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let decoded = decoder.decode(&buf);
        match decoded {
            Ok(Some((frame, used))) => {
                buf.drain(..used);
                shared.touch();
                if let Err(e) = handle_frame(&shared, &mut incoming, frame).await {
                    go_away(&shared, GoAwayStatus::PROTOCOL_ERROR).await;
                    return Err(e);
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, "spdy: bad frame, sending GOAWAY");
                go_away(&shared, GoAwayStatus::PROTOCOL_ERROR).await;
                return Err(e.into());
            }
        }
        buf.reserve(16 * 1024);
        let read = rd.read_buf(&mut buf);
        let n = match shared.config.idle_timeout {
            None => read.await?,
            Some(idle) => match tokio::time::timeout(idle, read).await {
                Ok(n) => n?,
                Err(_) => {
                    if shared.idle_for() >= idle {
                        tracing::debug!(?idle, "spdy: idle connection, sending GOAWAY");
                        go_away(&shared, GoAwayStatus::OK).await;
                        return Ok(());
                    }
                    continue;
                }
            },
        };
        if n == 0 {
            let _ = shared.out.send(Out::Close).await;
            return Ok(());
        }
    }
}

async fn go_away(shared: &Shared, status: GoAwayStatus) {
    let last = lock(&shared.state).last_peer_stream;
    let frame = Frame::GoAway(GoAway {
        last_good_stream_id: last,
        status,
    });
    let _ = shared.out.send(Out::Frame(frame)).await;
    let _ = shared.out.send(Out::Close).await;
}

async fn rst(shared: &Shared, stream_id: u32, status: RstStatus) {
    let _ = shared
        .send(Frame::RstStream(RstStream { stream_id, status }))
        .await;
}

async fn handle_frame(
    shared: &Arc<Shared>,
    incoming: &mut Option<mpsc::Sender<Stream>>,
    frame: Frame,
) -> Result<(), ConnectionError> {
    match frame {
        Frame::SynStream(syn) => {
            let id = syn.stream_id;
            if id == 0 || id % 2 == 0 {
                return Err(ConnectionError::Protocol("client stream id must be odd"));
            }
            let refused = {
                let mut st = lock(&shared.state);
                if id <= st.last_peer_stream {
                    return Err(ConnectionError::Protocol("stream id not increasing"));
                }
                st.last_peer_stream = id;
                st.streams.len() >= shared.config.max_streams || incoming.is_none()
            };
            if refused {
                rst(shared, id, RstStatus::REFUSED_STREAM).await;
                return Ok(());
            }
            let s = Arc::new(StreamShared {
                id,
                headers: syn.headers,
                state: Mutex::new(StreamState {
                    recv: VecDeque::new(),
                    remote_fin: syn.fin,
                    local_fin: syn.unidirectional,
                    reset: None,
                    conn_closed: false,
                    replied: false,
                    send_window: shared.peer_initial_window.load(Ordering::Acquire),
                    recv_window: i64::from(shared.config.initial_window),
                    unacked: 0,
                }),
                changed: Notify::new(),
            });
            lock(&shared.state).streams.insert(id, s.clone());
            let stream = Stream {
                handle: Arc::new(Handle {
                    stream: s,
                    conn: shared.clone(),
                }),
            };
            let sent = incoming.as_ref().map(|tx| tx.try_send(stream));
            if !matches!(sent, Some(Ok(()))) {
                // Dropping the refused stream's handle sends RST CANCEL;
                // say REFUSED_STREAM first so the client knows why.
                shared.remove(id);
                rst(shared, id, RstStatus::REFUSED_STREAM).await;
            }
        }
        Frame::SynReply(r) => {
            rst(shared, r.stream_id, RstStatus::PROTOCOL_ERROR).await;
        }
        Frame::Data(d) => handle_data(shared, d).await,
        Frame::RstStream(r) => {
            let s = lock(&shared.state).streams.remove(&r.stream_id);
            if let Some(s) = s {
                lock(&s.state).reset = Some(r.status);
                s.changed.notify_waiters();
            }
        }
        Frame::Settings(settings) => {
            for e in settings.entries {
                if e.id == settings_id::INITIAL_WINDOW_SIZE {
                    let new = i64::from(e.value).min(MAX_WINDOW);
                    let old = shared.peer_initial_window.swap(new, Ordering::AcqRel);
                    shared.peer_flow_control.store(true, Ordering::Release);
                    let streams: Vec<_> = lock(&shared.state).streams.values().cloned().collect();
                    for s in streams {
                        lock(&s.state).send_window += new - old;
                        s.changed.notify_waiters();
                    }
                }
            }
        }
        Frame::Ping(id) => {
            // Odd ids are the client's; even ones answer ours.
            if id % 2 == 1 {
                let _ = shared.send(Frame::Ping(id)).await;
            }
        }
        Frame::GoAway(_) => {
            *incoming = None;
        }
        Frame::Headers(h) => {
            if !lock(&shared.state).streams.contains_key(&h.stream_id) {
                rst(shared, h.stream_id, RstStatus::INVALID_STREAM).await;
            }
        }
        Frame::WindowUpdate(w) => {
            shared.peer_flow_control.store(true, Ordering::Release);
            let delta = i64::from(w.delta);
            if w.stream_id == 0 {
                let now = shared
                    .session_send_window
                    .fetch_add(delta, Ordering::AcqRel)
                    + delta;
                if now > MAX_WINDOW {
                    return Err(ConnectionError::Protocol("session window overflow"));
                }
                shared.notify_all();
            } else {
                let s = lock(&shared.state).streams.get(&w.stream_id).cloned();
                if let Some(s) = s {
                    let overflow = {
                        let mut st = lock(&s.state);
                        st.send_window += delta;
                        st.send_window > MAX_WINDOW
                    };
                    if overflow {
                        reset_local(shared, &s, RstStatus::FLOW_CONTROL_ERROR).await;
                    } else {
                        s.changed.notify_waiters();
                    }
                }
            }
        }
        Frame::Unknown { frame_type } => {
            tracing::debug!(frame_type, "spdy: ignoring unknown control frame");
        }
    }
    Ok(())
}

async fn reset_local(shared: &Shared, s: &StreamShared, status: RstStatus) {
    shared.remove(s.id);
    lock(&s.state).reset = Some(status);
    s.changed.notify_waiters();
    rst(shared, s.id, status).await;
}

async fn handle_data(shared: &Arc<Shared>, d: Data) {
    let s = lock(&shared.state).streams.get(&d.stream_id).cloned();
    let Some(s) = s else {
        rst(shared, d.stream_id, RstStatus::INVALID_STREAM).await;
        return;
    };
    let len = d.data.len();
    let strict = shared.config.flow_control == FlowControl::Enforce;
    let cap = shared.config.max_stream_buffer;
    enum Verdict {
        Ok,
        Closed,
        Overrun,
        Gone,
    }
    let verdict = wait_until(&s, |st| {
        if st.reset.is_some() || st.conn_closed {
            return Some(Verdict::Gone);
        }
        if st.remote_fin {
            return Some(Verdict::Closed);
        }
        let len64 = i64::try_from(len).unwrap_or(i64::MAX);
        if strict && len64 > st.recv_window {
            return Some(Verdict::Overrun);
        }
        // A peer that ignores our window is slowed down by not reading
        // the transport while this stream's buffer is full.
        if !st.recv.is_empty() && st.recv.len() + len > cap {
            return None;
        }
        st.recv_window -= len64;
        st.recv.extend(&d.data);
        st.remote_fin = d.fin;
        Some(Verdict::Ok)
    })
    .await;
    match verdict {
        Verdict::Ok => {
            s.changed.notify_waiters();
            let done = {
                let st = lock(&s.state);
                st.remote_fin && st.local_fin
            };
            if done {
                shared.remove(s.id);
            }
        }
        Verdict::Closed => reset_local(shared, &s, RstStatus::STREAM_ALREADY_CLOSED).await,
        Verdict::Overrun => reset_local(shared, &s, RstStatus::FLOW_CONTROL_ERROR).await,
        Verdict::Gone => {}
    }
}

struct Handle {
    stream: Arc<StreamShared>,
    conn: Arc<Shared>,
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
    handle: Arc<Handle>,
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

fn check_open(st: &StreamState) -> Result<(), StreamError> {
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
