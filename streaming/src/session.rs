//! Transport-neutral exec/attach and port-forward sessions.
//!
//! The server crate runs a command once, whatever the client spoke: an
//! [`ExecChannels`] has the same stdin / stdout / stderr / resize / status
//! handles over SPDY (one stream each) and over WebSocket (one channel
//! each); port-forward sessions are in [`crate::portforward`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Mutex, mpsc, watch};
use tokio_tungstenite::WebSocketStream;

use crate::protocol::{ResizeDecoder, Status, StreamProtocol, TerminalSize};
use crate::spdy::{Connection, HeaderBlock, RstStatus, Stream, StreamError};
use crate::websocket::{
    self, ChannelEvent, ChannelProtocol, ChannelSession, ChannelWriter, WsError,
};

/// Which streams an exec/attach request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecShape {
    /// The client sends stdin.
    pub stdin: bool,
    /// The client wants stdout.
    pub stdout: bool,
    /// The client wants stderr (never with a tty).
    pub stderr: bool,
    /// A terminal: stderr is merged into stdout and resize is available.
    pub tty: bool,
}

/// Errors while setting up a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client did not open the expected streams in time.
    #[error("timed out waiting for the client to create streams")]
    Timeout,
    /// The connection ended during setup.
    #[error("connection closed while waiting for streams")]
    Closed,
    /// A stream operation failed.
    #[error("stream")]
    Stream(#[from] StreamError),
    /// The WebSocket failed.
    #[error("websocket")]
    WebSocket(#[from] WsError),
}

enum InputInner {
    Spdy(Stream),
    Ws {
        rx: mpsc::Receiver<Vec<u8>>,
        pending: VecDeque<u8>,
    },
}

/// The client's stdin.
pub struct InputChannel(InputInner);

impl std::fmt::Debug for InputChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InputChannel")
    }
}

impl InputChannel {
    /// Reads stdin data; `Ok(0)` when the client closed stdin (or left).
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, StreamError> {
        match &mut self.0 {
            InputInner::Spdy(s) => match s.read(buf).await {
                Err(StreamError::Reset(_) | StreamError::ConnectionClosed) => Ok(0),
                other => other,
            },
            InputInner::Ws { rx, pending } => {
                while pending.is_empty() {
                    match rx.recv().await {
                        Some(d) => pending.extend(d),
                        None => return Ok(0),
                    }
                }
                let n = pending.len().min(buf.len());
                for (dst, src) in buf.iter_mut().zip(pending.drain(..n)) {
                    *dst = src;
                }
                Ok(n)
            }
        }
    }
}

type SharedWriter<S> = Arc<Mutex<ChannelWriter<S>>>;

/// A boxed future borrowing its sender.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The writing half of a WebSocket channel session, without its transport
/// type: what output channels share.
pub(crate) trait WsOut: Send + Sync {
    /// Sends `data` on `channel`.
    fn send<'a>(&'a self, channel: u8, data: &'a [u8]) -> BoxFuture<'a, Result<(), WsError>>;
    /// Sends a normal close.
    fn close(&self) -> BoxFuture<'_, ()>;
}

impl<S> WsOut for Mutex<ChannelWriter<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn send<'a>(&'a self, channel: u8, data: &'a [u8]) -> BoxFuture<'a, Result<(), WsError>> {
        Box::pin(async move { self.lock().await.send(channel, data).await })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.lock().await.close().await;
        })
    }
}

#[derive(Clone)]
enum OutputInner {
    Spdy(Stream),
    Ws(Arc<dyn WsOut>, u8),
}

/// stdout or stderr toward the client.
#[derive(Clone)]
pub struct OutputChannel(OutputInner);

impl std::fmt::Debug for OutputChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputChannel")
    }
}

impl OutputChannel {
    /// Writes all of `data`.
    pub async fn write(&self, data: &[u8]) -> Result<(), StreamError> {
        match &self.0 {
            OutputInner::Spdy(s) => s.write(data).await,
            OutputInner::Ws(w, ch) => w
                .send(*ch, data)
                .await
                .map_err(|_| StreamError::ConnectionClosed),
        }
    }

    /// Half-closes the channel (SPDY FIN; a no-op over WebSocket, whose
    /// channels end with the socket).
    pub async fn close(&self) -> Result<(), StreamError> {
        match &self.0 {
            OutputInner::Spdy(s) => match s.close().await {
                Err(StreamError::AlreadyClosed) => Ok(()),
                other => other,
            },
            OutputInner::Ws(..) => Ok(()),
        }
    }
}

enum ResizeInner {
    Spdy {
        stream: Stream,
        decoder: ResizeDecoder,
        queue: VecDeque<TerminalSize>,
    },
    Ws(watch::Receiver<Option<TerminalSize>>),
}

/// Terminal resize events from the client.
pub struct ResizeChannel(ResizeInner);

impl std::fmt::Debug for ResizeChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResizeChannel")
    }
}

impl ResizeChannel {
    /// The next size; `None` when the client stops sending (or sent an
    /// invalid message, which ends resizing).
    pub async fn next(&mut self) -> Option<TerminalSize> {
        match &mut self.0 {
            ResizeInner::Spdy {
                stream,
                decoder,
                queue,
            } => loop {
                if let Some(s) = queue.pop_front() {
                    return Some(s);
                }
                let mut buf = [0u8; 512];
                let n = stream.read(&mut buf).await.ok()?;
                if n == 0 {
                    return None;
                }
                queue.extend(decoder.push(&buf[..n]).ok()?);
            },
            // Only the latest size matters; older ones are overwritten.
            ResizeInner::Ws(rx) => {
                rx.changed().await.ok()?;
                *rx.borrow_and_update()
            }
        }
    }
}

enum StatusInner {
    Spdy(Stream),
    Ws(Arc<dyn WsOut>),
}

/// The error stream: reports how the command ended, then ends the session.
pub struct StatusChannel {
    inner: StatusInner,
    protocol: StreamProtocol,
}

impl std::fmt::Debug for StatusChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusChannel")
            .field("protocol", &self.protocol)
            .finish()
    }
}

impl StatusChannel {
    /// Sends `status` in the protocol's form (JSON for v4+, text before)
    /// and closes the error stream (WebSocket: closes the socket).
    pub async fn finish(self, status: &Status) -> Result<(), StreamError> {
        let payload = status.error_stream_payload(self.protocol);
        match self.inner {
            StatusInner::Spdy(s) => {
                if let Some(p) = payload {
                    s.write(&p).await?;
                }
                s.close().await
            }
            StatusInner::Ws(w) => {
                if let Some(p) = payload {
                    w.send(websocket::ERROR, &p)
                        .await
                        .map_err(|_| StreamError::ConnectionClosed)?;
                }
                w.close().await;
                Ok(())
            }
        }
    }
}

/// Resolves when the client's transport has gone away.
#[derive(Debug, Clone)]
pub struct Disconnect(watch::Receiver<bool>);

impl Disconnect {
    /// A handle and the sender that fires it.
    pub fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// Waits until the client is gone.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|gone| *gone).await;
    }

    /// Whether the client is gone.
    pub fn is_gone(&self) -> bool {
        *self.0.borrow()
    }
}

/// The negotiated channels of an exec or attach.
#[derive(Debug)]
pub struct ExecChannels {
    /// The protocol spoken.
    pub protocol: StreamProtocol,
    /// stdin, when requested.
    pub stdin: Option<InputChannel>,
    /// stdout, when requested.
    pub stdout: Option<OutputChannel>,
    /// stderr, when requested (never with a tty).
    pub stderr: Option<OutputChannel>,
    /// Resize events, with a tty (v3+).
    pub resize: Option<ResizeChannel>,
    /// The error/status stream.
    pub status: StatusChannel,
    /// Fires when the client disconnects: stop the command then.
    pub disconnect: Disconnect,
}

/// Which SPDY stream types an exec expects for `shape`.
pub fn expected_stream_types(protocol: StreamProtocol, shape: ExecShape) -> Vec<&'static str> {
    let mut t = vec!["error"];
    if shape.stdin {
        t.push("stdin");
    }
    if shape.stdout {
        t.push("stdout");
    }
    if shape.stderr && !shape.tty {
        t.push("stderr");
    }
    if shape.tty && protocol.has_resize() {
        t.push("resize");
    }
    t
}

impl ExecChannels {
    /// Gathers the SPDY streams the client opens for an exec/attach,
    /// replying to each, until every expected one is there or `timeout`
    /// passes. Unexpected or duplicate streams are reset.
    pub async fn from_spdy(
        conn: &mut Connection,
        protocol: StreamProtocol,
        shape: ExecShape,
        timeout: Duration,
        disconnect: Disconnect,
    ) -> Result<Self, SessionError> {
        let expected = expected_stream_types(protocol, shape);
        let mut got: HashMap<&'static str, Stream> = HashMap::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while got.len() < expected.len() {
            let s = tokio::time::timeout_at(deadline, conn.accept())
                .await
                .map_err(|_| SessionError::Timeout)?
                .ok_or(SessionError::Closed)?;
            let kind = s
                .stream_type()
                .and_then(|t| expected.iter().find(|e| **e == t).copied());
            match kind {
                Some(k) if !got.contains_key(k) => {
                    s.reply(HeaderBlock::new()).await?;
                    got.insert(k, s);
                }
                _ => {
                    tracing::debug!(stream_type = ?s.stream_type(), "unexpected exec stream");
                    s.reset(RstStatus::REFUSED_STREAM).await?;
                }
            }
        }
        let error = got.remove("error").ok_or(SessionError::Closed)?;
        Ok(Self {
            protocol,
            stdin: got
                .remove("stdin")
                .map(|s| InputChannel(InputInner::Spdy(s))),
            stdout: got
                .remove("stdout")
                .map(|s| OutputChannel(OutputInner::Spdy(s))),
            stderr: got
                .remove("stderr")
                .map(|s| OutputChannel(OutputInner::Spdy(s))),
            resize: got.remove("resize").map(|stream| {
                ResizeChannel(ResizeInner::Spdy {
                    stream,
                    decoder: ResizeDecoder::default(),
                    queue: VecDeque::new(),
                })
            }),
            status: StatusChannel {
                inner: StatusInner::Spdy(error),
                protocol,
            },
            disconnect,
        })
    }

    /// Sets up an exec/attach over an upgraded WebSocket: sends the empty
    /// "connection established" message on the lowest writable channel
    /// (as Kubernetes does) and starts demultiplexing client messages.
    pub async fn from_websocket<S>(
        ws: WebSocketStream<S>,
        protocol: ChannelProtocol,
        shape: ExecShape,
        max_message: usize,
    ) -> Result<Self, SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut reader, writer) = ChannelSession::new(ws, protocol, max_message).split();
        let writer: SharedWriter<S> = Arc::new(Mutex::new(writer));
        let first = if shape.stdout {
            websocket::STDOUT
        } else if shape.stderr && !shape.tty {
            websocket::STDERR
        } else {
            websocket::ERROR
        };
        writer.lock().await.send(first, &[]).await?;
        let out: Arc<dyn WsOut> = writer;

        let (stdin_tx, stdin_rx) = mpsc::channel::<Vec<u8>>(16);
        let (resize_tx, resize_rx) = watch::channel(None);
        let (gone_tx, disconnect) = Disconnect::new();
        let want_stdin = shape.stdin;
        tokio::spawn(async move {
            let mut stdin_tx = want_stdin.then_some(stdin_tx);
            while let Some(ev) = reader.next().await {
                match ev {
                    Ok(ChannelEvent::Data {
                        channel: websocket::STDIN,
                        data,
                    }) => {
                        if let Some(tx) = &stdin_tx {
                            // Backpressure: stop reading the socket while
                            // the command does not consume stdin.
                            if tx.send(data).await.is_err() {
                                stdin_tx = None;
                            }
                        }
                    }
                    Ok(ChannelEvent::Data {
                        channel: websocket::RESIZE,
                        data,
                    }) => match TerminalSize::from_json(&data) {
                        Ok(size) => {
                            let _ = resize_tx.send(Some(size));
                        }
                        Err(e) => tracing::debug!(error = %e, "ignoring bad resize message"),
                    },
                    Ok(ChannelEvent::Close {
                        channel: websocket::STDIN,
                    }) => stdin_tx = None,
                    Ok(other) => tracing::debug!(?other, "ignoring websocket channel message"),
                    Err(e) => {
                        tracing::debug!(error = %e, "websocket session ended");
                        break;
                    }
                }
            }
            let _ = gone_tx.send(true);
        });

        let stream_protocol = match protocol {
            ChannelProtocol::V5 => StreamProtocol::ChannelV5,
            ChannelProtocol::V4 | ChannelProtocol::PortForward => StreamProtocol::ChannelV4,
        };
        Ok(Self {
            protocol: stream_protocol,
            stdin: shape.stdin.then(|| {
                InputChannel(InputInner::Ws {
                    rx: stdin_rx,
                    pending: VecDeque::new(),
                })
            }),
            stdout: shape
                .stdout
                .then(|| OutputChannel(OutputInner::Ws(out.clone(), websocket::STDOUT))),
            stderr: (shape.stderr && !shape.tty)
                .then(|| OutputChannel(OutputInner::Ws(out.clone(), websocket::STDERR))),
            resize: shape.tty.then(|| ResizeChannel(ResizeInner::Ws(resize_rx))),
            status: StatusChannel {
                inner: StatusInner::Ws(out),
                protocol: stream_protocol,
            },
            disconnect,
        })
    }
}
