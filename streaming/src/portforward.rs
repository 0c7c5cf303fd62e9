//! Port-forward sessions, whatever the client spoke: a
//! [`PortForwardStreams`] yields one [`PortForwardPair`] (data and error
//! streams) per forwarded connection.
//!
//! - SPDY (plain, or tunnelled in WebSocket): the client opens a `data` and
//!   an `error` stream per connection, paired by their `requestID` header;
//!   any number of connections per session.
//! - WebSocket channels (`v4.channel.k8s.io`): one connection per port
//!   named in the URL's `port` query parameters, opened with the session;
//!   the server first writes the port (2 bytes, little-endian) on both of
//!   the port's channels.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_tungstenite::WebSocketStream;

use crate::session::{Disconnect, WsOut};
use crate::spdy::{
    self, Connection, HEADER_PORT, HEADER_REQUEST_ID, HeaderBlock, RstStatus, Stream, StreamError,
};
use crate::websocket::{ChannelEvent, ChannelProtocol, ChannelSession};

/// Most ports one WebSocket port-forward may name: two channels each, and
/// a channel number is one byte.
pub const MAX_WEBSOCKET_PORTS: usize = 128;

/// Messages queued per port from the client.
const WS_INPUT_QUEUE: usize = 16;

/// Bytes from the client buffered for all ports of a WebSocket session
/// together (at least one whole message); past it the socket is no longer
/// read until a port's connection takes some (backpressure).
const WS_INPUT_BUDGET: usize = 4 * 1024 * 1024;

/// Errors in a port-forward request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortsError {
    /// No `port` query parameter.
    #[error("query parameter \"port\" is required")]
    Missing,
    /// A value that is not a port.
    #[error("invalid port {0:?}: must be 1-65535")]
    Invalid(String),
    /// More ports than channels.
    #[error("at most {MAX_WEBSOCKET_PORTS} ports may be forwarded at once")]
    TooMany,
}

/// The ports of a WebSocket port-forward, from the request's query string
/// (`port=80&port=8080`; a value may also list ports separated by commas).
pub fn ports_from_query(query: Option<&str>) -> Result<Vec<u16>, PortsError> {
    let mut ports = Vec::new();
    for pair in query.unwrap_or_default().split('&') {
        let Some(("port", value)) = pair.split_once('=') else {
            continue;
        };
        for v in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
            match v.parse::<u16>() {
                Ok(p) if p > 0 => ports.push(p),
                _ => return Err(PortsError::Invalid(v.to_owned())),
            }
        }
    }
    if ports.is_empty() {
        return Err(PortsError::Missing);
    }
    if ports.len() > MAX_WEBSOCKET_PORTS {
        return Err(PortsError::TooMany);
    }
    Ok(ports)
}

/// A client message and its share of the session's input budget.
type Chunk = (Vec<u8>, OwnedSemaphorePermit);

/// Data from the client for one port.
struct Input {
    rx: mpsc::Receiver<Chunk>,
    /// What is left of the last message...
    pending: VecDeque<u8>,
    /// ...and its budget, given back once it is read.
    held: Option<OwnedSemaphorePermit>,
}

/// One port's channel pair over WebSocket.
struct WsPort {
    out: Arc<dyn WsOut>,
    channel: u8,
    input: Option<Mutex<Input>>,
    /// Held while the pair is in use; the session ends once every pair
    /// has been dropped.
    _alive: mpsc::Sender<()>,
}

#[derive(Clone)]
enum PortStreamInner {
    Spdy(Stream),
    Ws(Arc<WsPort>),
}

/// One stream of a [`PortForwardPair`]. Clones share it.
#[derive(Clone)]
pub struct PortStream(PortStreamInner);

impl std::fmt::Debug for PortStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            PortStreamInner::Spdy(s) => f.debug_tuple("PortStream").field(&s.id()).finish(),
            PortStreamInner::Ws(p) => f.debug_tuple("PortStream").field(&p.channel).finish(),
        }
    }
}

impl PortStream {
    /// Reads what the client sent; `Ok(0)` once it closed the stream or
    /// left. The error stream carries nothing from the client.
    pub async fn read(&self, buf: &mut [u8]) -> Result<usize, StreamError> {
        match &self.0 {
            PortStreamInner::Spdy(s) => s.read(buf).await,
            PortStreamInner::Ws(p) => {
                let Some(input) = &p.input else {
                    return Ok(0);
                };
                let mut input = input.lock().await;
                while input.pending.is_empty() {
                    input.held = None;
                    match input.rx.recv().await {
                        Some((data, permit)) => {
                            input.pending.extend(data);
                            input.held = Some(permit);
                        }
                        None => return Ok(0),
                    }
                }
                let n = input.pending.len().min(buf.len());
                for (dst, src) in buf.iter_mut().zip(input.pending.drain(..n)) {
                    *dst = src;
                }
                Ok(n)
            }
        }
    }

    /// Writes all of `data` to the client.
    pub async fn write(&self, data: &[u8]) -> Result<(), StreamError> {
        match &self.0 {
            PortStreamInner::Spdy(s) => s.write(data).await,
            PortStreamInner::Ws(p) => p
                .out
                .send(p.channel, data)
                .await
                .map_err(|_| StreamError::ConnectionClosed),
        }
    }

    /// Half-closes our side (SPDY FIN; a no-op over WebSocket channels,
    /// which end with the socket).
    pub async fn close(&self) -> Result<(), StreamError> {
        match &self.0 {
            PortStreamInner::Spdy(s) => match s.close().await {
                Err(StreamError::AlreadyClosed) => Ok(()),
                other => other,
            },
            PortStreamInner::Ws(_) => Ok(()),
        }
    }
}

/// The two streams of one forwarded connection.
#[derive(Debug)]
pub struct PortForwardPair {
    /// The pod port.
    pub port: u16,
    /// What pairs `data` and `error`: the client's `requestID` over SPDY,
    /// the port's position in the query over WebSocket channels.
    pub request_id: String,
    /// The forwarded bytes.
    pub data: PortStream,
    /// Where to write a failure message (e.g. "connection refused").
    pub error: PortStream,
}

type Partial = HashMap<String, (Option<Stream>, Option<Stream>, tokio::time::Instant)>;

enum Inner {
    Spdy {
        conn: Connection,
        partial: Partial,
        pair_timeout: Duration,
        max_partial: usize,
    },
    Channels {
        ready: VecDeque<PortForwardPair>,
        all_dropped: mpsc::Receiver<()>,
        out: Arc<dyn WsOut>,
    },
}

enum CloserInner {
    /// A SPDY session: GOAWAY and close.
    Spdy(spdy::Closer),
    /// A WebSocket: a normal close.
    WebSocket(Arc<dyn WsOut>),
}

/// Closes a port-forward session's transport once its handler is done.
pub struct Closer(CloserInner);

impl std::fmt::Debug for Closer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("port-forward Closer")
    }
}

impl Closer {
    /// Closes the session.
    pub async fn close(&self) {
        match &self.0 {
            CloserInner::Spdy(c) => {
                let _ = c.close().await;
            }
            CloserInner::WebSocket(out) => out.close().await,
        }
    }
}

/// A port-forward session: yields one [`PortForwardPair`] per forwarded
/// connection.
pub struct PortForwardStreams {
    inner: Inner,
    /// Fires when the client disconnects.
    pub disconnect: Disconnect,
}

impl std::fmt::Debug for PortForwardStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortForwardStreams").finish_non_exhaustive()
    }
}

impl PortForwardStreams {
    /// Port-forward over a SPDY connection; a half-open pair older than
    /// `pair_timeout` is dropped (its stream reset).
    pub fn new(conn: Connection, pair_timeout: Duration, disconnect: Disconnect) -> Self {
        Self {
            inner: Inner::Spdy {
                conn,
                partial: HashMap::new(),
                pair_timeout,
                max_partial: 32,
            },
            disconnect,
        }
    }

    /// Port-forward over WebSocket channels for `ports` (at most
    /// [`MAX_WEBSOCKET_PORTS`]): announces each port on its two channels
    /// and starts routing the client's messages to the data streams.
    pub async fn from_websocket<S>(
        ws: WebSocketStream<S>,
        ports: &[u16],
        max_message: usize,
    ) -> Result<Self, crate::websocket::WsError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ports = &ports[..ports.len().min(MAX_WEBSOCKET_PORTS)];
        let (mut reader, writer) =
            ChannelSession::new(ws, ChannelProtocol::PortForward, max_message).split();
        let out: Arc<dyn WsOut> = Arc::new(Mutex::new(writer));
        let (alive, all_dropped) = mpsc::channel(1);
        let mut inputs = Vec::with_capacity(ports.len());
        let mut ready = VecDeque::with_capacity(ports.len());
        for (i, &port) in ports.iter().enumerate() {
            let data_channel = u8::try_from(2 * i).unwrap_or(u8::MAX - 1);
            for channel in [data_channel, data_channel + 1] {
                out.send(channel, &port.to_le_bytes()).await?;
            }
            let (tx, rx) = mpsc::channel(WS_INPUT_QUEUE);
            inputs.push(Some(tx));
            let stream = |channel, input| {
                PortStream(PortStreamInner::Ws(Arc::new(WsPort {
                    out: out.clone(),
                    channel,
                    input,
                    _alive: alive.clone(),
                })))
            };
            ready.push_back(PortForwardPair {
                port,
                request_id: i.to_string(),
                data: stream(
                    data_channel,
                    Some(Mutex::new(Input {
                        rx,
                        pending: VecDeque::new(),
                        held: None,
                    })),
                ),
                error: stream(data_channel + 1, None),
            });
        }
        drop(alive);
        let budget = Arc::new(Semaphore::new(WS_INPUT_BUDGET.max(max_message)));
        let (gone_tx, disconnect) = Disconnect::new();
        tokio::spawn(async move {
            while let Some(ev) = reader.next().await {
                match ev {
                    Ok(ChannelEvent::Data { channel, data }) if channel % 2 == 0 => {
                        let slot = inputs.get_mut(usize::from(channel / 2));
                        let Some(Some(tx)) = slot.as_deref() else {
                            continue;
                        };
                        let want = u32::try_from(data.len()).unwrap_or(u32::MAX);
                        let Ok(permit) = budget.clone().acquire_many_owned(want).await else {
                            break;
                        };
                        if tx.send((data, permit)).await.is_err() {
                            // That port's connection is done.
                            if let Some(s) = inputs.get_mut(usize::from(channel / 2)) {
                                *s = None;
                            }
                        }
                    }
                    Ok(other) => tracing::debug!(?other, "ignoring port-forward channel message"),
                    Err(e) => {
                        tracing::debug!(error = %e, "websocket port-forward ended");
                        break;
                    }
                }
            }
            let _ = gone_tx.send(true);
        });
        Ok(Self {
            inner: Inner::Channels {
                ready,
                all_dropped,
                out,
            },
            disconnect,
        })
    }

    /// What closes the transport after the handler returns.
    pub fn closer(&self) -> Closer {
        match &self.inner {
            Inner::Spdy { conn, .. } => Closer(CloserInner::Spdy(conn.closer())),
            Inner::Channels { out, .. } => Closer(CloserInner::WebSocket(out.clone())),
        }
    }

    /// The next complete pair; `None` when the session is over: the client
    /// is gone or, over WebSocket channels, every port's pair was handed
    /// out and dropped.
    pub async fn next(&mut self) -> Option<PortForwardPair> {
        match &mut self.inner {
            Inner::Spdy {
                conn,
                partial,
                pair_timeout,
                max_partial,
            } => next_spdy(conn, partial, *pair_timeout, *max_partial).await,
            Inner::Channels {
                ready, all_dropped, ..
            } => {
                if let Some(pair) = ready.pop_front() {
                    return Some(pair);
                }
                let mut disconnect = self.disconnect.clone();
                tokio::select! {
                    _ = all_dropped.recv() => {}
                    () = disconnect.wait() => {}
                }
                None
            }
        }
    }
}

async fn next_spdy(
    conn: &mut Connection,
    partial: &mut Partial,
    pair_timeout: Duration,
    max_partial: usize,
) -> Option<PortForwardPair> {
    loop {
        let s = conn.accept().await?;
        let now = tokio::time::Instant::now();
        partial.retain(|_, (_, _, t)| now.duration_since(*t) < pair_timeout);
        let port = s
            .headers()
            .get(HEADER_PORT)
            .and_then(|p| p.parse::<u16>().ok());
        let id = s.headers().get(HEADER_REQUEST_ID).map(str::to_owned);
        let kind = s.stream_type().map(str::to_owned);
        let (Some(port), Some(id), Some(kind)) = (port, id, kind) else {
            let _ = s.reset(RstStatus::PROTOCOL_ERROR).await;
            continue;
        };
        if kind != "data" && kind != "error" {
            let _ = s.reset(RstStatus::PROTOCOL_ERROR).await;
            continue;
        }
        if !partial.contains_key(&id) && partial.len() >= max_partial {
            let _ = s.reset(RstStatus::REFUSED_STREAM).await;
            continue;
        }
        if s.reply(HeaderBlock::new()).await.is_err() {
            continue;
        }
        let entry = partial.entry(id.clone()).or_insert((None, None, now));
        let slot = if kind == "data" {
            &mut entry.0
        } else {
            &mut entry.1
        };
        if slot.is_some() {
            let _ = s.reset(RstStatus::PROTOCOL_ERROR).await;
            continue;
        }
        *slot = Some(s);
        let complete = entry.0.is_some() && entry.1.is_some();
        if complete && let Some((Some(data), Some(error), _)) = partial.remove(&id) {
            return Some(PortForwardPair {
                port,
                request_id: id,
                data: PortStream(PortStreamInner::Spdy(data)),
                error: PortStream(PortStreamInner::Spdy(error)),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_query() {
        assert_eq!(ports_from_query(Some("port=80")), Ok(vec![80]));
        assert_eq!(
            ports_from_query(Some("port=80&x=1&port=8080,9090")),
            Ok(vec![80, 8080, 9090])
        );
        assert_eq!(ports_from_query(None), Err(PortsError::Missing));
        assert_eq!(ports_from_query(Some("x=1")), Err(PortsError::Missing));
        assert_eq!(
            ports_from_query(Some("port=0")),
            Err(PortsError::Invalid("0".into()))
        );
        assert_eq!(
            ports_from_query(Some("port=70000")),
            Err(PortsError::Invalid("70000".into()))
        );
        let many = vec!["port=1"; MAX_WEBSOCKET_PORTS + 1].join("&");
        assert_eq!(ports_from_query(Some(&many)), Err(PortsError::TooMany));
    }
}
