//! The Kubernetes streaming protocols over WebSocket (RFC 6455).
//!
//! Exec and attach (`v4.channel.k8s.io`, `v5.channel.k8s.io`): every binary
//! message starts with a channel byte — 0 stdin, 1 stdout, 2 stderr, 3 error,
//! 4 resize — followed by the data. v5 adds channel 255, "close", whose one
//! data byte names the channel the client closed (stdin).
//!
//! Port-forward over channels (`v4.channel.k8s.io`, the older kubectl and
//! kubelet form): ports come from the `port` query parameters; port *i* has
//! data channel 2*i* and error channel 2*i*+1, and the server's first message
//! on each carries the port number (2 bytes, little-endian).
//!
//! Port-forward (`SPDY/3.1+portforward.k8s.io`): the WebSocket carries a
//! SPDY/3.1 session; each binary message is a chunk of the SPDY byte stream,
//! with no channel byte. [`Tunnel`] turns the WebSocket back into a byte
//! stream for [`crate::spdy::Connection`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, Stream as _, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

pub use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Channel 0: stdin (client to server).
pub const STDIN: u8 = 0;
/// Channel 1: stdout.
pub const STDOUT: u8 = 1;
/// Channel 2: stderr.
pub const STDERR: u8 = 2;
/// Channel 3: error (the exec result `Status`).
pub const ERROR: u8 = 3;
/// Channel 4: resize (`{"Width":W,"Height":H}`).
pub const RESIZE: u8 = 4;
/// Channel 255 (v5): close the channel named by the data byte.
pub const CLOSE: u8 = 255;

/// Default bound on one WebSocket message.
pub const DEFAULT_MAX_MESSAGE: usize = 1024 * 1024;

/// The WebSocket channel protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelProtocol {
    /// `v4.channel.k8s.io`.
    V4,
    /// `v5.channel.k8s.io`: adds the close channel.
    V5,
    /// `v4.channel.k8s.io` for port-forward: a data and an error channel
    /// per port (0 and 1 for the first port, 2 and 3 for the second...).
    PortForward,
}

/// Errors on a WebSocket session.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The WebSocket layer failed.
    #[error("websocket")]
    WebSocket(#[from] Box<tungstenite::Error>),
    /// A message that is not valid for the channel protocol.
    #[error("invalid channel message: {0}")]
    Invalid(&'static str),
}

impl From<tungstenite::Error> for WsError {
    fn from(e: tungstenite::Error) -> Self {
        Self::WebSocket(Box::new(e))
    }
}

/// One decoded channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// Data on a channel.
    Data {
        /// The channel number.
        channel: u8,
        /// The payload (may be empty).
        data: Vec<u8>,
    },
    /// v5: the client closed this channel (stdin).
    Close {
        /// The closed channel.
        channel: u8,
    },
}

/// Frames `data` for `channel`.
pub fn encode_channel(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(data.len() + 1);
    m.push(channel);
    m.extend_from_slice(data);
    m
}

/// The v5 message closing `channel`.
pub fn encode_close(channel: u8) -> Vec<u8> {
    vec![CLOSE, channel]
}

/// Decodes one binary message; `None` for an empty message (ignored, as
/// Kubernetes does).
pub fn decode_channel(
    protocol: ChannelProtocol,
    message: &[u8],
) -> Result<Option<ChannelEvent>, WsError> {
    let Some((&channel, data)) = message.split_first() else {
        return Ok(None);
    };
    if channel == CLOSE && protocol == ChannelProtocol::V5 {
        return match data {
            [c] => Ok(Some(ChannelEvent::Close { channel: *c })),
            _ => Err(WsError::Invalid("close message must name one channel")),
        };
    }
    if channel > RESIZE && protocol != ChannelProtocol::PortForward {
        return Err(WsError::Invalid("unknown channel"));
    }
    Ok(Some(ChannelEvent::Data {
        channel,
        data: data.to_vec(),
    }))
}

/// A WebSocket configuration bounding messages and frames to `max_message`.
pub fn config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Wraps an already-upgraded connection (after our 101 response) as the
/// server side of a WebSocket with bounded messages.
pub async fn server<S>(io: S, max_message: usize) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    WebSocketStream::from_raw_socket(io, Role::Server, Some(config(max_message))).await
}

/// An exec/attach session over WebSocket.
#[derive(Debug)]
pub struct ChannelSession<S> {
    ws: WebSocketStream<S>,
    protocol: ChannelProtocol,
    max_message: usize,
}

impl<S> ChannelSession<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// A session speaking `protocol` over `ws`; outgoing data is split into
    /// messages of at most `max_message` bytes.
    pub fn new(ws: WebSocketStream<S>, protocol: ChannelProtocol, max_message: usize) -> Self {
        Self {
            ws,
            protocol,
            max_message: max_message.max(2),
        }
    }

    /// Splits into a reading half (client to server) and a writing half.
    pub fn split(self) -> (ChannelReader<S>, ChannelWriter<S>) {
        let (sink, stream) = self.ws.split();
        (
            ChannelReader {
                stream,
                protocol: self.protocol,
            },
            ChannelWriter {
                sink,
                max_message: self.max_message,
            },
        )
    }
}

/// The reading half of a [`ChannelSession`].
#[derive(Debug)]
pub struct ChannelReader<S> {
    stream: SplitStream<WebSocketStream<S>>,
    protocol: ChannelProtocol,
}

impl<S> ChannelReader<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// The next channel event; `None` when the client closed the socket.
    pub async fn next(&mut self) -> Option<Result<ChannelEvent, WsError>> {
        loop {
            let msg = match self.stream.next().await? {
                Ok(m) => m,
                Err(e) => return Some(Err(e.into())),
            };
            match msg {
                Message::Binary(b) => match decode_channel(self.protocol, &b) {
                    Ok(Some(ev)) => return Some(Ok(ev)),
                    Ok(None) => continue,
                    Err(e) => return Some(Err(e)),
                },
                Message::Text(_) => {
                    return Some(Err(WsError::Invalid("text message on a binary protocol")));
                }
                Message::Close(_) => return None,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            }
        }
    }
}

/// The writing half of a [`ChannelSession`].
#[derive(Debug)]
pub struct ChannelWriter<S> {
    sink: SplitSink<WebSocketStream<S>, Message>,
    max_message: usize,
}

impl<S> ChannelWriter<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Sends `data` on `channel`, split to the message bound. Empty data
    /// sends one empty channel message.
    pub async fn send(&mut self, channel: u8, data: &[u8]) -> Result<(), WsError> {
        let chunk = self.max_message - 1;
        if data.is_empty() {
            self.sink
                .send(Message::binary(encode_channel(channel, data)))
                .await?;
            return Ok(());
        }
        for part in data.chunks(chunk) {
            self.sink
                .feed(Message::binary(encode_channel(channel, part)))
                .await?;
        }
        self.sink.flush().await?;
        Ok(())
    }

    /// Sends a normal WebSocket close.
    pub async fn close(&mut self) -> Result<(), WsError> {
        let frame = CloseFrame {
            code: tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "".into(),
        };
        match self.sink.send(Message::Close(Some(frame))).await {
            Ok(()) | Err(tungstenite::Error::ConnectionClosed) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A WebSocket as a byte stream: reads concatenate binary messages, each
/// write sends one binary message (at most `max_message` bytes). This is
/// the transport of `SPDY/3.1+portforward.k8s.io`.
#[derive(Debug)]
pub struct Tunnel<S> {
    ws: WebSocketStream<S>,
    pending: Vec<u8>,
    offset: usize,
    max_message: usize,
    eof: bool,
}

impl<S> Tunnel<S> {
    /// Wraps `ws`.
    pub fn new(ws: WebSocketStream<S>, max_message: usize) -> Self {
        Self {
            ws,
            pending: Vec::new(),
            offset: 0,
            max_message: max_message.max(1),
            eof: false,
        }
    }
}

fn to_io(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, e)
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<S> AsyncRead for Tunnel<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.offset < this.pending.len() {
                let n = (this.pending.len() - this.offset).min(buf.remaining());
                buf.put_slice(&this.pending[this.offset..this.offset + n]);
                this.offset += n;
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => {
                    this.eof = true;
                }
                Some(Ok(Message::Binary(b))) => {
                    this.pending = b.into();
                    this.offset = 0;
                }
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text message in a binary tunnel",
                    )));
                }
                Some(Ok(_)) => {}
                Some(Err(tungstenite::Error::ConnectionClosed)) => this.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl<S> AsyncWrite for Tunnel<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(to_io)?;
        let n = buf.len().min(this.max_message);
        Pin::new(&mut this.ws)
            .start_send(Message::binary(buf[..n].to_vec()))
            .map_err(to_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.get_mut().ws).poll_close(cx)) {
            Ok(()) | Err(tungstenite::Error::ConnectionClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(to_io(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_framing_round_trip() {
        for proto in [ChannelProtocol::V4, ChannelProtocol::V5] {
            for ch in [STDIN, STDOUT, STDERR, ERROR, RESIZE] {
                let m = encode_channel(ch, b"hello");
                assert_eq!(m[0], ch);
                assert_eq!(
                    decode_channel(proto, &m).expect("decode"),
                    Some(ChannelEvent::Data {
                        channel: ch,
                        data: b"hello".to_vec()
                    })
                );
            }
            assert_eq!(decode_channel(proto, &[]).expect("empty"), None);
            assert_eq!(
                decode_channel(proto, &[STDOUT]).expect("no data"),
                Some(ChannelEvent::Data {
                    channel: STDOUT,
                    data: vec![]
                })
            );
            assert!(decode_channel(proto, &[7, 1]).is_err());
        }
        assert_eq!(
            decode_channel(ChannelProtocol::V5, &encode_close(STDIN)).expect("close"),
            Some(ChannelEvent::Close { channel: STDIN })
        );
        // v4 has no close channel.
        assert!(decode_channel(ChannelProtocol::V4, &encode_close(STDIN)).is_err());
        assert!(decode_channel(ChannelProtocol::V5, &[CLOSE]).is_err());
        assert!(decode_channel(ChannelProtocol::V5, &[CLOSE, 0, 1]).is_err());
    }

    #[test]
    fn accept_key_matches_rfc6455_example() {
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
