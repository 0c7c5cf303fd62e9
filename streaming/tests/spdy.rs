//! SPDY/3.1 framing, header compression, flow control and the server
//! `Connection`, exercised by a small client built from the frame types.

mod common;

use std::time::Duration;

use common::Client;
use krio_streaming::protocol::Status;
use krio_streaming::spdy::frame::{
    Data, GoAway, Headers, RstStream, Setting, Settings, SynReply, SynStream, WindowUpdate,
};
use krio_streaming::spdy::{
    Config, Connection, FlowControl, Frame, FrameDecoder, FrameEncoder, FrameError, GoAwayStatus,
    HeaderBlock, HeaderCompressor, HeaderDecompressor, HeaderError, Limits, RstStatus, StreamError,
};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn round_trip(frames: &[Frame]) {
    let mut enc = FrameEncoder::new().expect("encoder");
    let mut dec = FrameDecoder::new(Limits::default());
    let mut wire = Vec::new();
    for f in frames {
        enc.encode(f, &mut wire).expect("encode");
    }
    let mut at = 0;
    for f in frames {
        let (got, used) = dec.decode(&wire[at..]).expect("decode").expect("complete");
        assert_eq!(&got, f);
        at += used;
    }
    assert_eq!(at, wire.len());
    // Every strict prefix of a frame asks for more bytes.
    let mut dec = FrameDecoder::new(Limits::default());
    let (_, first) = dec.decode(&wire).expect("decode").expect("complete");
    let mut dec = FrameDecoder::new(Limits::default());
    for cut in 0..first {
        assert!(dec.decode(&wire[..cut]).expect("prefix").is_none());
    }
}

#[test]
fn every_frame_type_round_trips() {
    let headers = HeaderBlock::new()
        .with("streamType", "stdin")
        .with("port", "8080")
        .with("multi", "a\0b");
    round_trip(&[
        Frame::SynStream(SynStream {
            stream_id: 1,
            associated_id: 0,
            priority: 3,
            slot: 0,
            fin: false,
            unidirectional: true,
            headers: headers.clone(),
        }),
        Frame::SynReply(SynReply {
            stream_id: 1,
            fin: true,
            headers: HeaderBlock::new(),
        }),
        Frame::RstStream(RstStream {
            stream_id: 7,
            status: RstStatus::CANCEL,
        }),
        Frame::Settings(Settings {
            clear: true,
            entries: vec![
                Setting {
                    flags: 1,
                    id: 7,
                    value: 65536,
                },
                Setting {
                    flags: 0,
                    id: 4,
                    value: 100,
                },
            ],
        }),
        Frame::Ping(0x0102_0304),
        Frame::GoAway(GoAway {
            last_good_stream_id: 9,
            status: GoAwayStatus::PROTOCOL_ERROR,
        }),
        Frame::Headers(Headers {
            stream_id: 3,
            fin: false,
            headers: headers.clone(),
        }),
        Frame::WindowUpdate(WindowUpdate {
            stream_id: 3,
            delta: 0x7fff_ffff,
        }),
        Frame::Data(Data {
            stream_id: 5,
            fin: true,
            data: b"hello".to_vec(),
        }),
        Frame::Data(Data {
            stream_id: 5,
            fin: false,
            data: vec![],
        }),
        // A second header block reuses the compression context.
        Frame::SynStream(SynStream {
            stream_id: 11,
            associated_id: 1,
            priority: 7,
            slot: 2,
            fin: true,
            unidirectional: false,
            headers,
        }),
    ]);
}

#[test]
fn wire_layout_matches_the_spec() {
    let mut enc = FrameEncoder::new().expect("encoder");
    let mut out = Vec::new();
    enc.encode(&Frame::Ping(5), &mut out).expect("ping");
    assert_eq!(out, [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 5]);
    out.clear();
    enc.encode(
        &Frame::Data(Data {
            stream_id: 3,
            fin: true,
            data: b"ab".to_vec(),
        }),
        &mut out,
    )
    .expect("data");
    assert_eq!(out, [0, 0, 0, 3, 1, 0, 0, 2, b'a', b'b']);
    out.clear();
    enc.encode(
        &Frame::RstStream(RstStream {
            stream_id: 1,
            status: RstStatus::REFUSED_STREAM,
        }),
        &mut out,
    )
    .expect("rst");
    assert_eq!(out, [0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 3]);
}

#[test]
fn decodes_header_blocks_from_an_independent_zlib() {
    // Produced by CPython's zlib (the C library) with the SPDY/3 dictionary
    // as zdict, one stream, Z_SYNC_FLUSH after each block; the zlib header
    // carries the dictionary's Adler-32 (e3c6a7c2).
    let b1 = hex("78f9e3c6a7c202a62346703a2b294a4dcc851625acc525c03c01000000ffff");
    let b2 = hex("02a54748d15c04ce0516061606409ab308129599a024ce6880a119540e2502000000ffff");
    let limits = Limits::default();
    let mut d = HeaderDecompressor::new();
    let h1 = d.decompress(&b1, &limits).expect("first block");
    assert_eq!(h1, HeaderBlock::new().with("streamtype", "stdin"));
    let h2 = d.decompress(&b2, &limits).expect("second block");
    assert_eq!(h2.get("port"), Some("8080"));
    assert_eq!(h2.get("requestID"), Some("0"));
    assert_eq!(h2.get("streamtype"), Some("data"));

    // The same bytes inside a SYN_STREAM frame.
    let mut frame = vec![0x80, 3, 0, 1, 0, 0, 0, 0];
    frame.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    frame.extend_from_slice(&b1);
    let len = u8::try_from(frame.len() - 8).expect("short");
    frame[7] = len;
    let mut dec = FrameDecoder::new(Limits::default());
    match dec.decode(&frame).expect("decode").expect("complete").0 {
        Frame::SynStream(s) => {
            assert_eq!(s.stream_id, 1);
            assert_eq!(s.headers.get("streamType"), Some("stdin"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn our_header_blocks_decode_with_a_fresh_context() {
    let mut c = HeaderCompressor::new().expect("compressor");
    let mut d = HeaderDecompressor::new();
    let limits = Limits::default();
    for i in 0..50 {
        let block = HeaderBlock::new()
            .with("streamtype", "error")
            .with("requestid", i.to_string());
        let mut out = Vec::new();
        c.compress(&block, &mut out).expect("compress");
        assert_eq!(d.decompress(&out, &limits).expect("decompress"), block);
    }
}

#[test]
fn decompression_bomb_is_refused() {
    // 8 MiB of one value compresses to a few KiB.
    let block = HeaderBlock::new().with("x", "a".repeat(8 * 1024 * 1024));
    let mut c = HeaderCompressor::new().expect("compressor");
    let mut bomb = Vec::new();
    c.compress(&block, &mut bomb).expect("compress");
    assert!(bomb.len() < 64 * 1024, "bomb is {} bytes", bomb.len());
    let mut d = HeaderDecompressor::new();
    match d.decompress(&bomb, &Limits::default()) {
        Err(HeaderError::TooLarge { limit }) => assert_eq!(limit, 64 * 1024),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Too many pairs is refused too.
    let mut many = HeaderBlock::new();
    for i in 0..100 {
        many.push(&format!("h{i}"), "v");
    }
    let mut out = Vec::new();
    HeaderCompressor::new()
        .expect("compressor")
        .compress(&many, &mut out)
        .expect("compress");
    assert!(matches!(
        HeaderDecompressor::new().decompress(&out, &Limits::default()),
        Err(HeaderError::TooMany { count: 100, .. })
    ));
    // Garbage is an error, not a panic.
    assert!(
        HeaderDecompressor::new()
            .decompress(b"\x78\x9cnot zlib at all", &Limits::default())
            .is_err()
    );
}

#[test]
fn over_long_frames_are_refused_from_the_header() {
    let mut dec = FrameDecoder::new(Limits::default());
    // A DATA frame announcing 16 MiB - 1: refused with only 8 bytes seen.
    let data = [0, 0, 0, 1, 0, 0xff, 0xff, 0xff];
    assert!(matches!(
        dec.decode(&data),
        Err(FrameError::TooLong { len: 0xff_ffff, .. })
    ));
    // A control frame over the control bound.
    let syn = [0x80, 3, 0, 1, 0, 0x02, 0, 0];
    assert!(matches!(dec.decode(&syn), Err(FrameError::TooLong { .. })));
    // Wrong version.
    let v2 = [0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
    assert!(matches!(
        dec.decode(&v2),
        Err(FrameError::UnsupportedVersion(2))
    ));
    // Fixed-size frames with the wrong length.
    let ping = [0x80, 3, 0, 6, 0, 0, 0, 5, 0, 0, 0, 1, 0];
    assert!(matches!(
        dec.decode(&ping),
        Err(FrameError::Malformed { .. })
    ));
    // Unknown control types are skipped.
    let noop = [0x80, 3, 0, 5, 0, 0, 0, 0];
    assert!(matches!(
        dec.decode(&noop).expect("noop"),
        Some((Frame::Unknown { frame_type: 5 }, 8))
    ));
}

fn start(config: Config) -> (Client<tokio::io::DuplexStream>, Connection) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let (conn, driver) = Connection::new(b, config).expect("connection");
    tokio::spawn(driver);
    (Client::new(a), conn)
}

async fn expect_reply(client: &mut Client<tokio::io::DuplexStream>, id: u32) {
    match client.recv().await {
        Frame::SynReply(r) => assert_eq!(r.stream_id, id),
        other => panic!("expected SYN_REPLY, got {other:?}"),
    }
}

#[tokio::test]
async fn exec_loopback_stdin_stdout_error() {
    let (mut client, mut conn) = start(Config::default());
    let server = tokio::spawn(async move {
        let mut stdin = None;
        let mut stdout = None;
        let mut error = None;
        for _ in 0..3 {
            let s = conn.accept().await.expect("stream");
            s.reply(HeaderBlock::new()).await.expect("reply");
            match s.stream_type() {
                Some("stdin") => stdin = Some(s),
                Some("stdout") => stdout = Some(s),
                Some("error") => error = Some(s),
                other => panic!("unexpected stream type {other:?}"),
            }
        }
        let (stdin, stdout, error) = (
            stdin.expect("stdin"),
            stdout.expect("stdout"),
            error.expect("error"),
        );
        // "cat": echo stdin to stdout until the client half-closes.
        let input = stdin.read_to_end(1 << 20).await.expect("stdin");
        stdout.write(&input).await.expect("stdout");
        stdout.close().await.expect("close stdout");
        error
            .write(&Status::exit_code(3).to_json())
            .await
            .expect("status");
        error.close().await.expect("close error");
        conn
    });

    client.open(1, &[("streamType", "error")]).await;
    client.open(3, &[("streamType", "stdin")]).await;
    client.open(5, &[("streamType", "stdout")]).await;
    for id in [1, 3, 5] {
        expect_reply(&mut client, id).await;
    }
    client.data(3, b"hello ", false).await;
    client.data(3, b"world", true).await;
    let mut stdout = Vec::new();
    let mut error = Vec::new();
    let mut open = 2;
    while open > 0 {
        match client.recv().await {
            Frame::Data(d) => {
                let buf = if d.stream_id == 5 {
                    &mut stdout
                } else {
                    &mut error
                };
                buf.extend_from_slice(&d.data);
                if d.fin {
                    open -= 1;
                }
            }
            Frame::WindowUpdate(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(stdout, b"hello world");
    let status: Status = serde_json::from_slice(&error).expect("status json");
    assert_eq!(status.code(), Some(3));
    let conn = server.await.expect("server");
    // The client half-closes error and stdout; stdin is done both ways
    // once the server closes its side.
    client.data(1, b"", true).await;
    client.data(5, b"", true).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        conn.open_streams() <= 1,
        "{} streams open",
        conn.open_streams()
    );
}

#[tokio::test]
async fn writes_stop_at_the_window_and_resume_on_window_update() {
    let config = Config {
        flow_control: FlowControl::Enforce,
        ..Config::default()
    };
    let (mut client, mut conn) = start(config);
    client.open(1, &[("streamtype", "stdout")]).await;
    let s = conn.accept().await.expect("stream");
    s.reply(HeaderBlock::new()).await.expect("reply");
    let writer = tokio::spawn({
        let s = s.clone();
        async move { s.write(&vec![7u8; 100 * 1024]).await }
    });
    expect_reply(&mut client, 1).await;
    let mut got = 0usize;
    while let Some(f) = client.recv_within(Duration::from_millis(300)).await {
        if let Frame::Data(d) = f {
            got += d.data.len();
        }
    }
    assert_eq!(got, 64 * 1024, "stops exactly at the initial window");
    assert!(!writer.is_finished());
    // Stream window alone is not enough: the session window is spent too.
    client.window_update(1, 64 * 1024).await;
    assert!(
        client
            .recv_within(Duration::from_millis(200))
            .await
            .is_none()
    );
    client.window_update(0, 64 * 1024).await;
    while got < 100 * 1024 {
        if let Frame::Data(d) = client.recv().await {
            got += d.data.len();
        }
    }
    assert_eq!(got, 100 * 1024);
    writer.await.expect("join").expect("write");
}

#[tokio::test]
async fn auto_flow_control_does_not_wait_for_spdystream_peers() {
    // Go's spdystream never sends WINDOW_UPDATE: the default must not stall.
    let (mut client, mut conn) = start(Config::default());
    client.open(1, &[("streamtype", "stdout")]).await;
    let s = conn.accept().await.expect("stream");
    s.reply(HeaderBlock::new()).await.expect("reply");
    let writer = tokio::spawn({
        let s = s.clone();
        async move {
            s.write(&vec![1u8; 300 * 1024]).await?;
            s.close().await
        }
    });
    expect_reply(&mut client, 1).await;
    assert_eq!(client.read_stream(1).await.len(), 300 * 1024);
    writer.await.expect("join").expect("write");
}

#[tokio::test]
async fn reading_credits_the_client_with_window_updates() {
    let (mut client, mut conn) = start(Config::default());
    client.open(1, &[("streamtype", "stdin")]).await;
    let s = conn.accept().await.expect("stream");
    s.reply(HeaderBlock::new()).await.expect("reply");
    expect_reply(&mut client, 1).await;
    client.data(1, &vec![0u8; 40 * 1024], false).await;
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0;
    while n < 40 * 1024 {
        n += s.read(&mut buf).await.expect("read");
    }
    let mut stream_credit = 0;
    let mut session_credit = 0;
    while let Some(f) = client.recv_within(Duration::from_millis(200)).await {
        if let Frame::WindowUpdate(w) = f {
            if w.stream_id == 1 {
                stream_credit += w.delta;
            } else if w.stream_id == 0 {
                session_credit += w.delta;
            }
        }
    }
    assert_eq!(stream_credit, 40 * 1024);
    assert_eq!(session_credit, 40 * 1024);
}

#[tokio::test]
async fn overrunning_the_window_is_a_flow_control_error_when_strict() {
    let config = Config {
        flow_control: FlowControl::Enforce,
        ..Config::default()
    };
    let (mut client, mut conn) = start(config);
    client.open(1, &[("streamtype", "stdin")]).await;
    let s = conn.accept().await.expect("stream");
    for _ in 0..3 {
        client.data(1, &vec![0u8; 30 * 1024], false).await;
    }
    let mut saw_rst = false;
    while let Some(f) = client.recv_within(Duration::from_millis(300)).await {
        if let Frame::RstStream(r) = f {
            assert_eq!(r.stream_id, 1);
            assert_eq!(r.status, RstStatus::FLOW_CONTROL_ERROR);
            saw_rst = true;
        }
    }
    assert!(saw_rst);
    let mut buf = [0u8; 16];
    // Buffered data is still readable, then the reset shows.
    let mut result = s.read(&mut buf).await;
    while let Ok(n) = result {
        assert!(n > 0);
        result = s.read(&mut buf).await;
    }
    assert_eq!(
        result,
        Err(StreamError::Reset(RstStatus::FLOW_CONTROL_ERROR))
    );
}

#[tokio::test]
async fn rst_from_the_client_fails_reads_and_writes() {
    let (mut client, mut conn) = start(Config::default());
    client.open(1, &[("streamtype", "stdin")]).await;
    let s = conn.accept().await.expect("stream");
    let reader = tokio::spawn({
        let s = s.clone();
        async move {
            let mut buf = [0u8; 8];
            s.read(&mut buf).await
        }
    });
    client
        .send(Frame::RstStream(RstStream {
            stream_id: 1,
            status: RstStatus::CANCEL,
        }))
        .await;
    assert_eq!(
        reader.await.expect("join"),
        Err(StreamError::Reset(RstStatus::CANCEL))
    );
    assert_eq!(
        s.write(b"x").await,
        Err(StreamError::Reset(RstStatus::CANCEL))
    );
    assert_eq!(conn.open_streams(), 0);
}

#[tokio::test]
async fn server_reset_and_dropped_streams_send_rst() {
    let (mut client, mut conn) = start(Config::default());
    client.open(1, &[("streamtype", "stdout")]).await;
    client.open(3, &[("streamtype", "stderr")]).await;
    let a = conn.accept().await.expect("stream 1");
    let b = conn.accept().await.expect("stream 3");
    a.reset(RstStatus::INTERNAL_ERROR).await.expect("reset");
    drop(b);
    let mut rsts = Vec::new();
    while let Some(f) = client.recv_within(Duration::from_millis(200)).await {
        if let Frame::RstStream(r) = f {
            rsts.push((r.stream_id, r.status));
        }
    }
    assert_eq!(
        rsts,
        vec![(1, RstStatus::INTERNAL_ERROR), (3, RstStatus::CANCEL)]
    );
    assert_eq!(conn.open_streams(), 0);
}

#[tokio::test]
async fn goaway_from_the_client_ends_accept() {
    let (mut client, mut conn) = start(Config::default());
    client.open(1, &[("streamtype", "error")]).await;
    client
        .send(Frame::GoAway(GoAway {
            last_good_stream_id: 0,
            status: GoAwayStatus::OK,
        }))
        .await;
    let s = conn.accept().await.expect("stream opened before GOAWAY");
    assert_eq!(s.stream_type(), Some("error"));
    assert!(conn.accept().await.is_none());
    // Streams opened after GOAWAY are refused.
    client.open(3, &[("streamtype", "stdin")]).await;
    match client.recv().await {
        Frame::RstStream(r) => assert_eq!((r.stream_id, r.status), (3, RstStatus::REFUSED_STREAM)),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn server_close_sends_goaway_and_ends_the_driver() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (conn, driver) = Connection::new(b, Config::default()).expect("connection");
    let driver = tokio::spawn(driver);
    let mut client = Client::new(a);
    client.open(1, &[("streamtype", "error")]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    conn.close().await.expect("close");
    match client.recv().await {
        Frame::GoAway(g) => {
            assert_eq!(g.last_good_stream_id, 1);
            assert_eq!(g.status, GoAwayStatus::OK);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(client.recv_within(Duration::from_secs(1)).await.is_none());
    driver.await.expect("join").expect("clean end");
    assert!(conn.is_closed());
}

#[tokio::test]
async fn protocol_errors_send_goaway() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (_conn, driver) = Connection::new(b, Config::default()).expect("connection");
    let driver = tokio::spawn(driver);
    let mut client = Client::new(a);
    // An over-long DATA frame header.
    client.send_raw(&[0, 0, 0, 1, 0, 0xff, 0xff, 0xff]).await;
    match client.recv().await {
        Frame::GoAway(g) => assert_eq!(g.status, GoAwayStatus::PROTOCOL_ERROR),
        other => panic!("unexpected {other:?}"),
    }
    assert!(driver.await.expect("join").is_err());

    // Even stream ids belong to the server.
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (_conn, driver) = Connection::new(b, Config::default()).expect("connection");
    let driver = tokio::spawn(driver);
    let mut client = Client::new(a);
    client.open(2, &[("streamtype", "stdin")]).await;
    assert!(matches!(client.recv().await, Frame::GoAway(_)));
    assert!(driver.await.expect("join").is_err());
}

#[tokio::test]
async fn stream_count_is_bounded() {
    let config = Config {
        max_streams: 2,
        ..Config::default()
    };
    let (mut client, mut conn) = start(config);
    for id in [1, 3, 5] {
        client.open(id, &[("streamtype", "data")]).await;
    }
    match client.recv().await {
        Frame::RstStream(r) => assert_eq!((r.stream_id, r.status), (5, RstStatus::REFUSED_STREAM)),
        other => panic!("unexpected {other:?}"),
    }
    let _a = conn.accept().await.expect("1");
    let _b = conn.accept().await.expect("3");
    assert_eq!(conn.open_streams(), 2);
}

#[tokio::test]
async fn ping_is_echoed() {
    let (mut client, _conn) = start(Config::default());
    client.send(Frame::Ping(7)).await;
    assert_eq!(client.recv().await, Frame::Ping(7));
}

#[tokio::test]
async fn port_forward_headers_are_visible() {
    let (mut client, mut conn) = start(Config::default());
    client
        .open(
            1,
            &[("streamType", "error"), ("port", "80"), ("requestID", "0")],
        )
        .await;
    client
        .open(
            3,
            &[("streamType", "data"), ("port", "80"), ("requestID", "0")],
        )
        .await;
    let e = conn.accept().await.expect("error");
    let d = conn.accept().await.expect("data");
    assert_eq!(e.stream_type(), Some("error"));
    assert_eq!(d.stream_type(), Some("data"));
    assert_eq!(d.headers().get("port"), Some("80"));
    assert_eq!(d.headers().get("requestid"), Some("0"));
    // Port-forward clients may send SETTINGS; the initial window applies.
    client
        .send(Frame::Settings(Settings {
            clear: false,
            entries: vec![Setting {
                flags: 0,
                id: 7,
                value: 1024,
            }],
        }))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    d.reply(HeaderBlock::new()).await.expect("reply");
    let w = tokio::spawn(async move { d.write(&[9u8; 4096]).await });
    expect_reply(&mut client, 3).await;
    let mut got = 0;
    while let Some(f) = client.recv_within(Duration::from_millis(200)).await {
        if let Frame::Data(x) = f {
            got += x.data.len();
        }
    }
    assert_eq!(got, 1024, "SETTINGS_INITIAL_WINDOW_SIZE shrinks the window");
    client.window_update(3, 8192).await;
    w.await.expect("join").expect("write");
}

#[tokio::test(start_paused = true)]
async fn idle_connections_are_closed() {
    let config = Config {
        idle_timeout: Some(Duration::from_secs(60)),
        ..Config::default()
    };
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (conn, driver) = Connection::new(b, config).expect("connection");
    let driver = tokio::spawn(driver);
    let mut client = Client::new(a);
    // Activity keeps it open.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(40)).await;
        client.send(Frame::Ping(1)).await;
        assert_eq!(client.recv().await, Frame::Ping(1));
    }
    assert!(!conn.is_closed());
    // Silence closes it with GOAWAY(OK).
    match client.recv_within(Duration::from_secs(120)).await {
        Some(Frame::GoAway(g)) => assert_eq!(g.status, GoAwayStatus::OK),
        other => panic!("expected GOAWAY, got {other:?}"),
    }
    driver.await.expect("join").expect("clean end");
    assert!(conn.is_closed());
}
