//! krio's streaming wire protocols: what `kubectl exec`, `attach` and
//! `port-forward` (and crictl, critest) speak to a runtime's streaming server.
//!
//! - [`spdy`]: SPDY/3.1 framing, zlib header blocks and a server-side
//!   [`spdy::Connection`].
//! - [`websocket`]: the `v4`/`v5.channel.k8s.io` channel protocols and
//!   SPDY tunnelled in WebSocket (`SPDY/3.1+portforward.k8s.io`).
//! - [`protocol`]: upgrade negotiation, the exec result `Status` and resize
//!   messages.
//! - [`tokens`]: single-use, expiring URL tokens.
//! - [`session`]: transport-neutral exec/attach channels.
//! - [`portforward`]: port-forward stream pairs over SPDY or WebSocket
//!   channels.
//! - [`idle`]: the idle timeout of WebSocket sessions.
//! - [`tls`]: loading the server's certificate and key.
//! - [`server`]: the hyper HTTP server that upgrades `/exec`, `/attach` and
//!   `/portforward` requests and hands sessions to a [`server::Handler`].

pub mod idle;
pub mod portforward;
pub mod protocol;
pub mod server;
pub mod session;
pub mod spdy;
pub mod tls;
pub mod tokens;
pub mod websocket;
