//! The HTTP streaming server end to end over loopback TCP: token handling,
//! protocol negotiation, SPDY and WebSocket exec, SPDY and tunnelled
//! port-forward.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::Client;
use futures_util::{SinkExt, StreamExt};
use krio_streaming::protocol::{Operation, Status, TerminalSize};
use krio_streaming::server::{Handler, ServerConfig, Session, StreamServer};
use krio_streaming::session::ExecShape;
use krio_streaming::spdy::Frame;
use krio_streaming::websocket::{self, Tunnel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Exec: echoes stdin to stdout, reports the first resize on stderr-less
/// tty sessions, exits with the code in the request. Port-forward: answers
/// each connection with "port N: " + what it read.
struct Echo;

impl Handler<i32> for Echo {
    async fn serve(&self, _op: Operation, code: i32, session: Session) {
        match session {
            Session::Exec(mut ch) => {
                if let Some(resize) = ch.resize.as_mut() {
                    let size = resize.next().await.expect("a resize");
                    let out = ch.stdout.as_ref().expect("stdout");
                    out.write(format!("{}x{};", size.width, size.height).as_bytes())
                        .await
                        .expect("write");
                }
                let mut input = Vec::new();
                if let Some(stdin) = ch.stdin.as_mut() {
                    let mut buf = [0u8; 1024];
                    loop {
                        let n = stdin.read(&mut buf).await.expect("stdin");
                        if n == 0 {
                            break;
                        }
                        input.extend_from_slice(&buf[..n]);
                    }
                }
                if let Some(out) = &ch.stdout {
                    out.write(&input).await.expect("stdout");
                    out.close().await.expect("close");
                }
                ch.status
                    .finish(&Status::from_exit(code))
                    .await
                    .expect("status");
            }
            Session::PortForward(mut pf) => {
                while let Some(pair) = pf.next().await {
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        let n = pair.data.read(&mut buf).await.expect("read");
                        let mut answer = format!("port {}: ", pair.port).into_bytes();
                        answer.extend_from_slice(&buf[..n]);
                        pair.data.write(&answer).await.expect("write");
                        pair.data.close().await.expect("close");
                        pair.error.close().await.expect("close error");
                    });
                }
            }
        }
    }
}

async fn start(config: ServerConfig) -> (Arc<StreamServer<i32, Echo>>, SocketAddr) {
    let server = StreamServer::new(Echo, config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server.clone().serve(listener));
    (server, addr)
}

/// Sends a raw upgrade request; returns the status line + headers and the
/// connection.
async fn upgrade(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> (String, TcpStream) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("request");
    // Read byte by byte so no SPDY bytes are consumed with the headers.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if tcp.read(&mut b).await.expect("read") == 0 {
            break;
        }
        head.push(b[0]);
    }
    (String::from_utf8(head).expect("utf8"), tcp)
}

/// A WebSocket handshake on `path` offering `protocol` (a comma-separated
/// list), answer included.
async fn ws_connect(
    addr: SocketAddr,
    path: &str,
    protocol: &str,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<TcpStream>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().expect("header"));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tokio_tungstenite::client_async(req, tcp).await
}

fn exec_shape() -> ExecShape {
    ExecShape {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: false,
    }
}

#[tokio::test]
async fn spdy_exec_end_to_end() {
    let (server, addr) = start(ServerConfig::default()).await;
    let path = server
        .register(Operation::Exec, exec_shape(), 42)
        .expect("register");
    assert!(path.starts_with("/exec/"));
    let (head, tcp) = upgrade(
        addr,
        &path,
        &[
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
            ("X-Stream-Protocol-Version", "v3.channel.k8s.io"),
        ],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );
    assert!(lower.contains("upgrade: spdy/3.1"), "{head}");

    let mut client = Client::new(tcp);
    client.open(1, &[("streamType", "error")]).await;
    client.open(3, &[("streamType", "stdin")]).await;
    client.open(5, &[("streamType", "stdout")]).await;
    client.data(3, b"echo me", true).await;
    let mut stdout = Vec::new();
    let mut error = Vec::new();
    let mut replies = 0;
    let mut fins = 0;
    while fins < 2 {
        match client.recv().await {
            Frame::SynReply(_) => replies += 1,
            Frame::Data(d) => {
                if d.stream_id == 5 {
                    stdout.extend_from_slice(&d.data);
                } else if d.stream_id == 1 {
                    error.extend_from_slice(&d.data);
                }
                if d.fin {
                    fins += 1;
                }
            }
            _ => {}
        }
    }
    assert_eq!(replies, 3);
    assert_eq!(stdout, b"echo me");
    let status: Status = serde_json::from_slice(&error).expect("status");
    assert_eq!(status.code(), Some(42));
    // The server then says GOAWAY and closes.
    let mut saw_goaway = false;
    while let Some(f) = client.recv_within(Duration::from_secs(2)).await {
        saw_goaway |= matches!(f, Frame::GoAway(_));
    }
    assert!(saw_goaway);

    // The token was single-use.
    let (head, _) = upgrade(
        addr,
        &path,
        &[("X-Stream-Protocol-Version", "v4.channel.k8s.io")],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

#[tokio::test]
async fn unknown_protocols_and_tokens_are_refused() {
    let config = ServerConfig {
        token_ttl: Duration::from_millis(100),
        ..ServerConfig::default()
    };
    let (server, addr) = start(config).await;
    let path = server
        .register(Operation::Exec, exec_shape(), 0)
        .expect("register");
    let (head, _) = upgrade(
        addr,
        &path,
        &[("X-Stream-Protocol-Version", "v9.channel.k8s.io")],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-accepted-stream-protocol-versions: v4.channel.k8s.io"),
        "{head}"
    );
    let (head, _) = upgrade(addr, "/exec/not-a-token", &[]).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    // A token for exec does not open an attach.
    let path = server
        .register(Operation::Exec, exec_shape(), 0)
        .expect("register");
    let attach = path.replace("/exec/", "/attach/");
    let (head, _) = upgrade(
        addr,
        &attach,
        &[("X-Stream-Protocol-Version", "v4.channel.k8s.io")],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    // Expired.
    let path = server
        .register(Operation::Exec, exec_shape(), 0)
        .expect("register");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (head, _) = upgrade(
        addr,
        &path,
        &[("X-Stream-Protocol-Version", "v4.channel.k8s.io")],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

#[tokio::test]
async fn websocket_v5_tty_exec_end_to_end() {
    let (server, addr) = start(ServerConfig::default()).await;
    let shape = ExecShape {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    };
    let path = server
        .register(Operation::Exec, shape, 0)
        .expect("register");
    let (mut ws, resp) = ws_connect(addr, &path, "v5.channel.k8s.io, v4.channel.k8s.io")
        .await
        .expect("handshake");
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.as_bytes()),
        Some(&b"v5.channel.k8s.io"[..])
    );
    let size = TerminalSize {
        width: 100,
        height: 30,
    };
    ws.send(Message::binary(websocket::encode_channel(
        websocket::RESIZE,
        &size.to_json(),
    )))
    .await
    .expect("resize");
    ws.send(Message::binary(websocket::encode_channel(
        websocket::STDIN,
        b"hi",
    )))
    .await
    .expect("stdin");
    ws.send(Message::binary(websocket::encode_close(websocket::STDIN)))
        .await
        .expect("close stdin");
    let mut stdout = Vec::new();
    let mut status = None;
    let mut first = None;
    while let Some(msg) = ws.next().await {
        match msg.expect("message") {
            Message::Binary(b) => {
                first.get_or_insert_with(|| b.to_vec());
                match b.first() {
                    Some(&websocket::STDOUT) => stdout.extend_from_slice(&b[1..]),
                    Some(&websocket::ERROR) if b.len() > 1 => status = Some(b[1..].to_vec()),
                    _ => {}
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    // The "connection established" message: empty, on stdout.
    assert_eq!(first, Some(vec![websocket::STDOUT]));
    assert_eq!(stdout, b"100x30;hi");
    assert_eq!(
        status.as_deref(),
        Some(&br#"{"metadata":{},"status":"Success"}"#[..])
    );
}

#[tokio::test]
async fn spdy_and_tunnelled_port_forward_end_to_end() {
    let (server, addr) = start(ServerConfig::default()).await;

    // SPDY.
    let path = server
        .register(Operation::PortForward, ExecShape::default(), 0)
        .expect("register");
    let (head, tcp) = upgrade(
        addr,
        &path,
        &[("X-Stream-Protocol-Version", "portforward.k8s.io")],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut client = Client::new(tcp);
    for (id, rid) in [(1u32, "0"), (5, "1")] {
        client
            .open(
                id,
                &[("streamType", "error"), ("port", "80"), ("requestID", rid)],
            )
            .await;
        client
            .open(
                id + 2,
                &[("streamType", "data"), ("port", "80"), ("requestID", rid)],
            )
            .await;
    }
    client.data(3, b"one", false).await;
    client.data(7, b"two", false).await;
    let mut answers = std::collections::HashMap::<u32, Vec<u8>>::new();
    let mut fins = 0;
    while fins < 4 {
        if let Frame::Data(d) = client.recv().await {
            answers.entry(d.stream_id).or_default().extend(d.data);
            if d.fin {
                fins += 1;
            }
        }
    }
    assert_eq!(
        answers.get(&3).map(Vec::as_slice),
        Some(&b"port 80: one"[..])
    );
    assert_eq!(
        answers.get(&7).map(Vec::as_slice),
        Some(&b"port 80: two"[..])
    );

    // SPDY tunnelled in WebSocket.
    let path = server
        .register(Operation::PortForward, ExecShape::default(), 0)
        .expect("register");
    let (ws, _) = ws_connect(addr, &path, "SPDY/3.1+portforward.k8s.io")
        .await
        .expect("handshake");
    let mut client = Client::new(Tunnel::new(ws, 64 * 1024));
    client
        .open(
            1,
            &[
                ("streamType", "error"),
                ("port", "8080"),
                ("requestID", "0"),
            ],
        )
        .await;
    client
        .open(
            3,
            &[("streamType", "data"), ("port", "8080"), ("requestID", "0")],
        )
        .await;
    client.data(3, b"tunnel", false).await;
    assert_eq!(client.read_stream(3).await, b"port 8080: tunnel");
}

/// Reports whether the client's disconnect reached the handler.
struct Watcher(tokio::sync::mpsc::Sender<bool>);

impl Handler<()> for Watcher {
    async fn serve(&self, _op: Operation, _req: (), session: Session) {
        let Session::Exec(mut ch) = session else {
            return;
        };
        let gone = tokio::time::timeout(Duration::from_secs(5), ch.disconnect.wait())
            .await
            .is_ok();
        let _ = self.0.send(gone && ch.disconnect.is_gone()).await;
    }
}

#[tokio::test]
async fn a_vanished_client_is_reported_to_the_handler() {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let server = StreamServer::new(Watcher(tx), ServerConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server.clone().serve(listener));

    // SPDY: open the streams, then drop the TCP connection.
    let path = server
        .register(Operation::Exec, exec_shape(), ())
        .expect("register");
    let (head, tcp) = upgrade(
        addr,
        &path,
        &[("X-Stream-Protocol-Version", "v4.channel.k8s.io")],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut client = Client::new(tcp);
    for (id, t) in [(1, "error"), (3, "stdin"), (5, "stdout")] {
        client.open(id, &[("streamType", t)]).await;
    }
    for _ in 0..3 {
        assert!(matches!(client.recv().await, Frame::SynReply(_)));
    }
    drop(client);
    assert_eq!(rx.recv().await, Some(true));

    // WebSocket: connect, then drop.
    let path = server
        .register(Operation::Attach, exec_shape(), ())
        .expect("register");
    let (mut ws, _) = ws_connect(addr, &path, "v4.channel.k8s.io")
        .await
        .expect("handshake");
    // Wait for the "connection established" message, then vanish.
    assert!(ws.next().await.is_some());
    drop(ws);
    assert_eq!(rx.recv().await, Some(true));
}

#[tokio::test]
async fn websocket_channel_port_forward_end_to_end() {
    let (server, addr) = start(ServerConfig::default()).await;
    let connect = |path: String, protocol: &'static str| async move {
        ws_connect(addr, &path, protocol).await
    };

    // Without a port the upgrade is refused.
    let path = server
        .register(Operation::PortForward, ExecShape::default(), 0)
        .expect("register");
    let refused = connect(path, "v4.channel.k8s.io").await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 400),
        "{refused:?}"
    );

    // The URL's ports win over the RPC's.
    let path = server.register_port_forward(vec![22], 0).expect("register");
    let (mut ws, resp) = connect(format!("{path}?port=80&port=8080"), "v4.channel.k8s.io")
        .await
        .expect("handshake");
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.as_bytes()),
        Some(&b"v4.channel.k8s.io"[..])
    );
    // Each channel opens with its port, little-endian.
    let mut announced = Vec::new();
    while announced.len() < 4 {
        match ws.next().await.expect("message").expect("ok") {
            Message::Binary(b) => announced.push(b.to_vec()),
            other => panic!("unexpected {other:?}"),
        }
    }
    announced.sort();
    assert_eq!(
        announced,
        vec![
            vec![0, 80, 0],
            vec![1, 80, 0],
            vec![2, 0x90, 0x1f],
            vec![3, 0x90, 0x1f]
        ]
    );
    for (channel, text) in [(0u8, &b"first"[..]), (2, b"second")] {
        ws.send(Message::binary(websocket::encode_channel(channel, text)))
            .await
            .expect("send");
    }
    let mut answers = std::collections::BTreeMap::<u8, Vec<u8>>::new();
    while let Some(msg) = ws.next().await {
        match msg.expect("message") {
            Message::Binary(b) => answers.entry(b[0]).or_default().extend_from_slice(&b[1..]),
            Message::Close(_) => break,
            _ => {}
        }
    }
    // Both connections answered, and the session closed after them.
    assert_eq!(
        answers.get(&0).map(Vec::as_slice),
        Some(&b"port 80: first"[..])
    );
    assert_eq!(
        answers.get(&2).map(Vec::as_slice),
        Some(&b"port 8080: second"[..])
    );
}

#[tokio::test]
async fn websocket_channel_port_forward_takes_the_rpc_ports() {
    let (server, addr) = start(ServerConfig::default()).await;
    let path = server
        .register_port_forward(vec![8443], 0)
        .expect("register");
    let (mut ws, _) = ws_connect(addr, &path, "v4.channel.k8s.io")
        .await
        .expect("handshake");
    let mut announced = Vec::new();
    while announced.len() < 2 {
        if let Message::Binary(b) = ws.next().await.expect("message").expect("ok") {
            announced.push(b.to_vec());
        }
    }
    announced.sort();
    assert_eq!(announced, vec![vec![0, 0xfb, 0x20], vec![1, 0xfb, 0x20]]);
    ws.send(Message::binary(websocket::encode_channel(0, b"x")))
        .await
        .expect("send");
    let mut data = Vec::new();
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Binary(b) if b[0] == 0 => data.extend_from_slice(&b[1..]),
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(data, b"port 8443: x");
}
