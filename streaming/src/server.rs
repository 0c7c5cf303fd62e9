//! The streaming HTTP server: `/exec/{token}`, `/attach/{token}` and
//! `/portforward/{token}`, upgraded to SPDY/3.1 or WebSocket.
//!
//! `Exec`, `Attach` and `PortForward` RPCs call [`StreamServer::register`]
//! and return the server's base URL joined with the path it gives back. When
//! the client comes, the server takes the token (once), negotiates the
//! protocol, answers `101 Switching Protocols`, sets up the session and hands
//! it to the caller's [`Handler`].
//!
//! Timeouts: a client has `stream_creation_timeout` to finish the TLS
//! handshake, send its request headers and (SPDY exec/attach) open the
//! streams it asked for; an upgraded connection with no traffic either way
//! for `idle_timeout` is closed (SPDY with GOAWAY, WebSocket by failing
//! its transport), which ends the session as if the client had left.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderMap, HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::idle::IdleTimeout;
use crate::portforward::{MAX_WEBSOCKET_PORTS, PortForwardStreams, PortsError, ports_from_query};
use crate::protocol::{
    HEADER_ACCEPTED_STREAM_PROTOCOL_VERSIONS, HEADER_STREAM_PROTOCOL_VERSION,
    HEADER_WEBSOCKET_PROTOCOL, Operation, StreamProtocol, Transport, negotiate,
};
use crate::session::{Disconnect, ExecChannels, ExecShape};
use crate::spdy::{self, Connection};
use crate::tokens::{DEFAULT_CAPACITY, DEFAULT_TTL, TokenError, TokenStore};
use crate::websocket::{self, ChannelProtocol, Tunnel};

/// The kubelet's default stream idle timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4 * 60 * 60);
/// The kubelet's default stream creation timeout.
pub const DEFAULT_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Streaming server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Token lifetime.
    pub token_ttl: Duration,
    /// Most tokens outstanding.
    pub max_tokens: usize,
    /// How long a client may take to finish the TLS handshake, send its
    /// request headers, and (SPDY exec/attach) open the streams it asked for.
    pub stream_creation_timeout: Duration,
    /// Close an upgraded connection after this long without traffic in
    /// either direction; `None` never does.
    pub idle_timeout: Option<Duration>,
    /// How long a port-forward `data`/`error` pair may stay half-open.
    pub port_forward_pair_timeout: Duration,
    /// Bound on one WebSocket message.
    pub max_ws_message: usize,
    /// SPDY session settings (their `idle_timeout` is replaced by the
    /// server's).
    pub spdy: spdy::Config,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            token_ttl: DEFAULT_TTL,
            max_tokens: DEFAULT_CAPACITY,
            stream_creation_timeout: DEFAULT_CREATION_TIMEOUT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            port_forward_pair_timeout: Duration::from_secs(30),
            max_ws_message: websocket::DEFAULT_MAX_MESSAGE,
            spdy: spdy::Config::default(),
        }
    }
}

/// A negotiated session handed to the [`Handler`].
#[derive(Debug)]
pub enum Session {
    /// Exec or attach.
    Exec(ExecChannels),
    /// Port-forward.
    PortForward(PortForwardStreams),
}

/// What runs a session: the server crate implements it (run the exec in the
/// container, join the attach socket, dial the pod port).
pub trait Handler<T>: Send + Sync + 'static {
    /// Serves one session for `request` (the value given to
    /// [`StreamServer::register`]); the connection closes when it returns.
    fn serve(
        &self,
        operation: Operation,
        request: T,
        session: Session,
    ) -> impl Future<Output = ()> + Send;
}

/// An upgraded request on its way to its session.
struct Upgraded<T> {
    transport: Transport,
    protocol: StreamProtocol,
    pending: Pending<T>,
    /// WebSocket-channel port-forward: the ports from the query.
    ports: Vec<u16>,
}

struct Pending<T> {
    operation: Operation,
    shape: ExecShape,
    request: T,
    /// Port-forward: the ports the RPC named (may be empty).
    ports: Vec<u16>,
}

/// The streaming server.
pub struct StreamServer<T, H> {
    tokens: TokenStore<Pending<T>>,
    handler: H,
    config: ServerConfig,
}

impl<T, H> std::fmt::Debug for StreamServer<T, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamServer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn path_segment(op: Operation) -> &'static str {
    match op {
        Operation::Exec => "exec",
        Operation::Attach => "attach",
        Operation::PortForward => "portforward",
    }
}

fn response(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

impl<T, H> StreamServer<T, H>
where
    T: Send + 'static,
    H: Handler<T>,
{
    /// A server that hands sessions to `handler`.
    pub fn new(handler: H, config: ServerConfig) -> Arc<Self> {
        Arc::new(Self {
            tokens: TokenStore::new(config.token_ttl, config.max_tokens),
            handler,
            config,
        })
    }

    /// Registers a request and returns its URL path
    /// (`/exec/{token}`, ...). `shape` is ignored for port-forward.
    pub fn register(
        &self,
        operation: Operation,
        shape: ExecShape,
        request: T,
    ) -> Result<String, TokenError> {
        let token = self.tokens.insert(Pending {
            operation,
            shape,
            request,
            ports: Vec::new(),
        })?;
        Ok(format!("/{}/{token}", path_segment(operation)))
    }

    /// Registers a port-forward whose request named `ports` (the CRI
    /// `PortForward` RPC's); returns its URL path. A WebSocket-channel
    /// client forwards these unless its URL names ports itself.
    pub fn register_port_forward(&self, ports: Vec<u16>, request: T) -> Result<String, TokenError> {
        let token = self.tokens.insert(Pending {
            operation: Operation::PortForward,
            shape: ExecShape::default(),
            request,
            ports,
        })?;
        Ok(format!("/{}/{token}", path_segment(Operation::PortForward)))
    }

    /// Accepts connections on `listener` until it fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (io, peer) = listener.accept().await?;
            let server = self.clone();
            tokio::spawn(async move {
                tracing::debug!(%peer, "streaming connection");
                server.serve_connection(io).await;
            });
        }
    }

    /// Accepts TLS connections on `listener` until it fails; a handshake
    /// that fails or takes longer than the creation timeout drops only
    /// that connection.
    pub async fn serve_tls(
        self: Arc<Self>,
        listener: TcpListener,
        acceptor: TlsAcceptor,
    ) -> std::io::Result<()> {
        loop {
            let (io, peer) = listener.accept().await?;
            let server = self.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let limit = server.config.stream_creation_timeout;
                match tokio::time::timeout(limit, acceptor.accept(io)).await {
                    Ok(Ok(tls)) => {
                        tracing::debug!(%peer, "streaming TLS connection");
                        server.serve_connection(tls).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "streaming TLS handshake"),
                    Err(_) => tracing::debug!(%peer, "streaming TLS handshake timed out"),
                }
            });
        }
    }

    /// Serves HTTP/1.1 on one accepted connection (plain TCP or TLS).
    pub async fn serve_connection<IO>(self: Arc<Self>, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let header_timeout = self.config.stream_creation_timeout;
        let service = hyper::service::service_fn(move |req| {
            let server = self.clone();
            async move { Ok::<_, std::convert::Infallible>(server.route(req)) }
        });
        if let Err(e) = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades()
            .await
        {
            tracing::debug!(error = %e, "streaming http connection");
        }
    }

    fn route(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().trim_start_matches('/');
        let (op, token) = match path.split_once('/') {
            Some(("exec", t)) => (Operation::Exec, t),
            Some(("attach", t)) => (Operation::Attach, t),
            Some(("portforward", t)) => (Operation::PortForward, t),
            _ => return response(StatusCode::NOT_FOUND, "not found\n"),
        };
        let pending = match self.tokens.take(token) {
            Ok(p) if p.operation == op => p,
            _ => return response(StatusCode::NOT_FOUND, "unknown or expired token\n"),
        };
        let upgrade = req
            .headers()
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let transport = if upgrade.eq_ignore_ascii_case(spdy::UPGRADE) {
            Transport::Spdy
        } else if upgrade.eq_ignore_ascii_case("websocket") {
            Transport::WebSocket
        } else {
            return response(
                StatusCode::BAD_REQUEST,
                "streaming requires Upgrade: SPDY/3.1 or websocket\n",
            );
        };
        let offers = match transport {
            Transport::Spdy => header_values(req.headers(), HEADER_STREAM_PROTOCOL_VERSION),
            Transport::WebSocket => header_values(req.headers(), HEADER_WEBSOCKET_PROTOCOL),
        };
        let protocol = match negotiate(op, transport, offers) {
            Ok(p) => p,
            Err(e) => {
                let mut r = response(StatusCode::FORBIDDEN, format!("{e}\n"));
                if let Ok(v) = HeaderValue::from_str(e.accepted()) {
                    r.headers_mut()
                        .insert(HEADER_ACCEPTED_STREAM_PROTOCOL_VERSIONS, v);
                }
                return r;
            }
        };
        let ports = if protocol == StreamProtocol::PortForwardChannels {
            // The URL's ports win; else those of the RPC.
            match ports_from_query(req.uri().query()) {
                Ok(p) => p,
                Err(PortsError::Missing) if !pending.ports.is_empty() => {
                    if pending.ports.len() > MAX_WEBSOCKET_PORTS {
                        let e = PortsError::TooMany;
                        return response(StatusCode::BAD_REQUEST, format!("{e}\n"));
                    }
                    pending.ports.clone()
                }
                Err(e) => return response(StatusCode::BAD_REQUEST, format!("{e}\n")),
            }
        } else {
            Vec::new()
        };
        let mut resp = response(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
        let h = resp.headers_mut();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        match transport {
            Transport::Spdy => {
                h.insert(UPGRADE, HeaderValue::from_static(spdy::UPGRADE));
                h.insert(
                    HEADER_STREAM_PROTOCOL_VERSION,
                    HeaderValue::from_static(protocol.name()),
                );
            }
            Transport::WebSocket => {
                let key = req.headers().get("Sec-WebSocket-Key").map(|k| k.as_bytes());
                let version = req.headers().get("Sec-WebSocket-Version");
                let (Some(key), Some(b"13")) = (key, version.map(|v| v.as_bytes())) else {
                    return response(StatusCode::BAD_REQUEST, "bad websocket handshake\n");
                };
                let accept = websocket::derive_accept_key(key);
                h.insert(UPGRADE, HeaderValue::from_static("websocket"));
                if let Ok(v) = HeaderValue::from_str(&accept) {
                    h.insert("Sec-WebSocket-Accept", v);
                }
                h.insert(
                    HEADER_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_static(protocol.name()),
                );
            }
        }
        let server = self.clone();
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    let io = TokioIo::new(upgraded);
                    let session = Upgraded {
                        transport,
                        protocol,
                        pending,
                        ports,
                    };
                    match (transport, server.config.idle_timeout) {
                        // SPDY has its own idle timeout (with GOAWAY).
                        (Transport::WebSocket, Some(t)) => {
                            server.run_session(IdleTimeout::new(io, t), session).await
                        }
                        _ => server.run_session(io, session).await,
                    }
                }
                Err(e) => tracing::debug!(error = %e, "streaming upgrade failed"),
            }
        });
        resp
    }

    async fn run_session<IO>(&self, io: IO, session: Upgraded<T>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Upgraded {
            transport,
            protocol,
            pending:
                Pending {
                    operation,
                    shape,
                    request,
                    ..
                },
            ports,
        } = session;
        let ws_protocol = match protocol {
            StreamProtocol::ChannelV5 => ChannelProtocol::V5,
            _ => ChannelProtocol::V4,
        };
        match (transport, operation) {
            (Transport::WebSocket, Operation::Exec | Operation::Attach) => {
                let ws = websocket::server(io, self.config.max_ws_message).await;
                match ExecChannels::from_websocket(
                    ws,
                    ws_protocol,
                    shape,
                    self.config.max_ws_message,
                )
                .await
                {
                    Ok(ch) => {
                        self.handler
                            .serve(operation, request, Session::Exec(ch))
                            .await
                    }
                    Err(e) => tracing::debug!(error = %e, "websocket exec setup failed"),
                }
            }
            (Transport::WebSocket, Operation::PortForward)
                if protocol == StreamProtocol::PortForwardChannels =>
            {
                let ws = websocket::server(io, self.config.max_ws_message).await;
                match PortForwardStreams::from_websocket(ws, &ports, self.config.max_ws_message)
                    .await
                {
                    Ok(pf) => {
                        let closer = pf.closer();
                        self.handler
                            .serve(operation, request, Session::PortForward(pf))
                            .await;
                        closer.close().await;
                    }
                    Err(e) => tracing::debug!(error = %e, "websocket port-forward setup failed"),
                }
            }
            (Transport::WebSocket, Operation::PortForward) => {
                let ws = websocket::server(io, self.config.max_ws_message).await;
                let tunnel = Tunnel::new(ws, self.config.max_ws_message);
                self.spdy_session(tunnel, operation, protocol, shape, request)
                    .await;
            }
            (Transport::Spdy, _) => {
                self.spdy_session(io, operation, protocol, shape, request)
                    .await;
            }
        }
    }

    async fn spdy_session<IO>(
        &self,
        io: IO,
        operation: Operation,
        protocol: StreamProtocol,
        shape: ExecShape,
        request: T,
    ) where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let config = spdy::Config {
            idle_timeout: self.config.idle_timeout,
            ..self.config.spdy.clone()
        };
        let (mut conn, driver) = match Connection::new(io, config) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start spdy session");
                return;
            }
        };
        let (gone_tx, disconnect) = Disconnect::new();
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                tracing::debug!(error = %e, "spdy session ended");
            }
            let _ = gone_tx.send(true);
        });
        match operation {
            Operation::PortForward => {
                let pf = PortForwardStreams::new(
                    conn,
                    self.config.port_forward_pair_timeout,
                    disconnect,
                );
                let closer = pf.closer();
                self.handler
                    .serve(operation, request, Session::PortForward(pf))
                    .await;
                closer.close().await;
            }
            Operation::Exec | Operation::Attach => {
                let channels = ExecChannels::from_spdy(
                    &mut conn,
                    protocol,
                    shape,
                    self.config.stream_creation_timeout,
                    disconnect,
                )
                .await;
                match channels {
                    Ok(ch) => {
                        self.handler
                            .serve(operation, request, Session::Exec(ch))
                            .await;
                    }
                    Err(e) => tracing::debug!(error = %e, "spdy exec setup failed"),
                }
                let _ = conn.close().await;
            }
        }
    }
}
