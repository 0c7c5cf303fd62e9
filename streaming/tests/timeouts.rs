//! The server's idle and creation timeouts, with short settings, over
//! loopback TCP: each must close the connection (and report the client as
//! gone to the handler) without the client doing anything.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::Client;
use futures_util::StreamExt;
use krio_streaming::protocol::Operation;
use krio_streaming::server::{Handler, ServerConfig, Session, StreamServer};
use krio_streaming::session::ExecShape;
use krio_streaming::spdy::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A hang guard only: every close below happens after a fraction of a
/// second; this just turns a hang into a failure.
const GUARD: Duration = Duration::from_secs(60);

/// Tells the test when the session's client was reported gone.
struct Watcher(mpsc::Sender<&'static str>);

impl Handler<()> for Watcher {
    async fn serve(&self, _op: Operation, _req: (), session: Session) {
        match session {
            Session::Exec(mut ch) => {
                ch.disconnect.wait().await;
                let _ = self.0.send("exec gone").await;
            }
            Session::PortForward(mut pf) => {
                while pf.next().await.is_some() {}
                let _ = self.0.send("port-forward gone").await;
            }
        }
    }
}

async fn start(
    config: ServerConfig,
) -> (
    Arc<StreamServer<(), Watcher>>,
    SocketAddr,
    mpsc::Receiver<&'static str>,
) {
    let (tx, rx) = mpsc::channel(4);
    let server = StreamServer::new(Watcher(tx), config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server.clone().serve(listener));
    (server, addr, rx)
}

fn shape() -> ExecShape {
    ExecShape {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: false,
    }
}

async fn spdy_upgrade(addr: SocketAddr, path: &str, protocol: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.expect("request");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(
            tcp.read(&mut b).await.expect("read"),
            1,
            "connection closed early"
        );
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

async fn ws_connect(
    addr: SocketAddr,
    path: &str,
    protocol: &str,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().expect("header"));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("handshake")
        .0
}

/// Reads until EOF or an error: the server closed the connection.
async fn until_closed(tcp: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn idle_sessions_are_closed_over_spdy_and_websocket() {
    let (server, addr, mut gone) = start(ServerConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        ..ServerConfig::default()
    })
    .await;
    tokio::time::timeout(GUARD, async {
        // SPDY exec: all streams open, then silence.
        let path = server
            .register(Operation::Exec, shape(), ())
            .expect("register");
        let tcp = spdy_upgrade(addr, &path, "v4.channel.k8s.io").await;
        let mut client = Client::new(tcp);
        for (id, t) in [(1, "error"), (3, "stdin"), (5, "stdout")] {
            client.open(id, &[("streamType", t)]).await;
        }
        assert_eq!(gone.recv().await, Some("exec gone"));
        let mut saw_goaway = false;
        while let Some(f) = client.recv_within(Duration::from_secs(5)).await {
            saw_goaway |= matches!(f, Frame::GoAway(_));
        }
        assert!(saw_goaway, "an idle SPDY session ends with GOAWAY");

        // WebSocket exec: connected, then silence.
        let path = server
            .register(Operation::Exec, shape(), ())
            .expect("register");
        let mut ws = ws_connect(addr, &path, "v5.channel.k8s.io").await;
        assert_eq!(gone.recv().await, Some("exec gone"));
        while let Some(Ok(_)) = ws.next().await {}

        // WebSocket port-forward over channels.
        let path = server
            .register(Operation::PortForward, ExecShape::default(), ())
            .expect("register");
        let mut ws = ws_connect(addr, &format!("{path}?port=80"), "v4.channel.k8s.io").await;
        assert_eq!(gone.recv().await, Some("port-forward gone"));
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await
    .expect("idle sessions were not closed");
}

#[tokio::test]
async fn clients_that_do_not_finish_setting_up_are_dropped() {
    let (server, addr, mut gone) = start(ServerConfig {
        stream_creation_timeout: Duration::from_millis(300),
        idle_timeout: None,
        ..ServerConfig::default()
    })
    .await;
    tokio::time::timeout(GUARD, async {
        // A connection that never sends its request.
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        until_closed(&mut tcp).await;

        // Half a request.
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"POST /exec/x HTTP/1.1\r\nHost: a\r\n")
            .await
            .expect("write");
        until_closed(&mut tcp).await;

        // A SPDY exec that opens only one of its three streams.
        let path = server
            .register(Operation::Exec, shape(), ())
            .expect("register");
        let tcp = spdy_upgrade(addr, &path, "v4.channel.k8s.io").await;
        let mut client = Client::new(tcp);
        client.open(1, &[("streamType", "error")]).await;
        let mut saw_goaway = false;
        while let Some(f) = client.recv_within(Duration::from_secs(5)).await {
            saw_goaway |= matches!(f, Frame::GoAway(_));
        }
        assert!(saw_goaway, "the half-set-up session is closed");
    })
    .await
    .expect("the server kept waiting for the client");
    // The handler never saw the incomplete session.
    assert!(gone.try_recv().is_err());
}
