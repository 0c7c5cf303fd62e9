//! WebSocket channel sessions and SPDY tunnelled in WebSocket, over an
//! in-memory duplex.

mod common;

use std::time::Duration;

use common::Client;
use futures_util::{SinkExt, StreamExt};
use krio_streaming::protocol::{Status, TerminalSize};
use krio_streaming::spdy::{Config, Connection, Frame, HeaderBlock};
use krio_streaming::websocket::{
    self, CLOSE, ChannelEvent, ChannelProtocol, ChannelSession, ERROR, RESIZE, STDIN, STDOUT,
    Tunnel,
};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

async fn pair() -> (
    WebSocketStream<tokio::io::DuplexStream>,
    WebSocketStream<tokio::io::DuplexStream>,
) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
    let server = websocket::server(b, 64 * 1024).await;
    (client, server)
}

async fn next_binary(ws: &mut WebSocketStream<tokio::io::DuplexStream>) -> Option<Vec<u8>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("message within 5s")?
            .expect("message")
        {
            Message::Binary(b) => return Some(b.to_vec()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

#[tokio::test]
async fn v5_exec_session() {
    let (mut client, server) = pair().await;
    let session = ChannelSession::new(server, ChannelProtocol::V5, 64 * 1024);
    let (mut rd, mut wr) = session.split();
    let server = tokio::spawn(async move {
        let mut stdin = Vec::new();
        let mut sizes = Vec::new();
        loop {
            match rd.next().await.expect("event").expect("valid") {
                ChannelEvent::Data {
                    channel: STDIN,
                    data,
                } => stdin.extend(data),
                ChannelEvent::Data {
                    channel: RESIZE,
                    data,
                } => sizes.push(TerminalSize::from_json(&data).expect("resize")),
                ChannelEvent::Close { channel: STDIN } => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        wr.send(STDOUT, &stdin).await.expect("stdout");
        wr.send(ERROR, &Status::success().to_json())
            .await
            .expect("status");
        wr.close().await.expect("close");
        sizes
    });
    let size = TerminalSize {
        width: 120,
        height: 40,
    };
    client
        .send(Message::binary(websocket::encode_channel(
            RESIZE,
            &size.to_json(),
        )))
        .await
        .expect("resize");
    client
        .send(Message::binary(websocket::encode_channel(STDIN, b"ping")))
        .await
        .expect("stdin");
    client
        .send(Message::binary(Vec::new()))
        .await
        .expect("empty message is ignored");
    client
        .send(Message::binary(websocket::encode_close(STDIN)))
        .await
        .expect("close stdin");
    assert_eq!(next_binary(&mut client).await, Some(b"\x01ping".to_vec()));
    let status = next_binary(&mut client).await.expect("status");
    assert_eq!(status[0], ERROR);
    assert_eq!(&status[1..], br#"{"metadata":{},"status":"Success"}"#);
    assert_eq!(next_binary(&mut client).await, None);
    assert_eq!(server.await.expect("join"), vec![size]);
}

#[tokio::test]
async fn v4_rejects_the_close_channel_and_splits_large_output() {
    let (mut client, server) = pair().await;
    let session = ChannelSession::new(server, ChannelProtocol::V4, 1024);
    let (mut rd, mut wr) = session.split();
    client
        .send(Message::binary(vec![CLOSE, STDIN]))
        .await
        .expect("send");
    assert!(rd.next().await.expect("event").is_err());
    wr.send(STDOUT, &[5u8; 2500]).await.expect("send");
    let mut total = 0;
    for _ in 0..3 {
        let m = next_binary(&mut client).await.expect("chunk");
        assert_eq!(m[0], STDOUT);
        assert!(m.len() <= 1024);
        total += m.len() - 1;
    }
    assert_eq!(total, 2500);
    // Client closes: the reader ends.
    client.close(None).await.expect("close");
    assert!(rd.next().await.is_none());
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let (mut client, server) = pair().await;
    let (mut rd, _wr) = ChannelSession::new(server, ChannelProtocol::V5, 64 * 1024).split();
    let _ = client.send(Message::binary(vec![STDIN; 200 * 1024])).await;
    assert!(matches!(rd.next().await, Some(Err(_)) | None));
}

#[tokio::test]
async fn spdy_port_forward_tunnelled_in_websocket() {
    let (client_ws, server_ws) = pair().await;
    let (mut conn, driver) =
        Connection::new(Tunnel::new(server_ws, 64 * 1024), Config::default()).expect("conn");
    tokio::spawn(driver);
    let mut client = Client::new(Tunnel::new(client_ws, 64 * 1024));

    let server = tokio::spawn(async move {
        let error = conn.accept().await.expect("error stream");
        let data = conn.accept().await.expect("data stream");
        error.reply(HeaderBlock::new()).await.expect("reply");
        data.reply(HeaderBlock::new()).await.expect("reply");
        assert_eq!(data.headers().get("port"), Some("8080"));
        // Echo what the "pod" would answer.
        let mut buf = [0u8; 1024];
        let n = data.read(&mut buf).await.expect("read");
        let mut answer = b"echo: ".to_vec();
        answer.extend_from_slice(&buf[..n]);
        data.write(&answer).await.expect("write");
        data.close().await.expect("close");
        (error, data)
    });

    let pf = [
        ("streamType", "error"),
        ("port", "8080"),
        ("requestID", "0"),
    ];
    client.open(1, &pf).await;
    let pf = [("streamType", "data"), ("port", "8080"), ("requestID", "0")];
    client.open(3, &pf).await;
    let mut replies = 0;
    while replies < 2 {
        if let Frame::SynReply(_) = client.recv().await {
            replies += 1;
        }
    }
    client.data(3, b"GET /", false).await;
    assert_eq!(client.read_stream(3).await, b"echo: GET /");
    let _streams = server.await.expect("join");
}
