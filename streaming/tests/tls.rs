//! The streaming server over TLS: a certificate generated here, a client
//! that trusts only it, and a SPDY exec round trip through the handshake;
//! and the errors for files that cannot be used.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Client;
use krio_streaming::protocol::{Operation, Status};
use krio_streaming::server::{Handler, ServerConfig, Session, StreamServer};
use krio_streaming::session::ExecShape;
use krio_streaming::spdy::Frame;
use krio_streaming::tls::{TlsError, load_acceptor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// Exec: writes "tls ok" and exits 7.
struct Fixed;

impl Handler<()> for Fixed {
    async fn serve(&self, _op: Operation, _req: (), session: Session) {
        if let Session::Exec(ch) = session {
            let out = ch.stdout.as_ref().expect("stdout");
            out.write(b"tls ok").await.expect("write");
            out.close().await.expect("close");
            ch.status
                .finish(&Status::from_exit(7))
                .await
                .expect("status");
        }
    }
}

struct Files {
    _dir: tempfile::TempDir,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    der: rustls::pki_types::CertificateDer<'static>,
}

fn self_signed() -> Files {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("generate");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, generated.cert.pem()).expect("write cert");
    std::fs::write(&key, generated.signing_key.serialize_pem()).expect("write key");
    Files {
        _dir: dir,
        cert,
        key,
        der: generated.cert.der().clone(),
    }
}

#[tokio::test]
async fn spdy_exec_over_tls() {
    let files = self_signed();
    let acceptor = load_acceptor(&files.cert, &files.key).expect("load");
    let server = StreamServer::new(Fixed, ServerConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server.clone().serve_tls(listener, acceptor));

    let mut roots = RootCertStore::empty();
    roots.add(files.der.clone()).expect("root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));

    // Plain HTTP on the TLS port gets nowhere.
    let mut plain = TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"POST /exec/x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let n = plain.read(&mut buf).await.unwrap_or(0);
    assert!(
        !buf[..n].starts_with(b"HTTP/1.1"),
        "plain HTTP was answered"
    );

    let path = server
        .register(
            Operation::Exec,
            ExecShape {
                stdin: false,
                stdout: true,
                stderr: false,
                tty: false,
            },
            (),
        )
        .expect("register");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).await.expect("request");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(tls.read(&mut b).await.expect("read"), 1);
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut client = Client::new(tls);
    client.open(1, &[("streamType", "error")]).await;
    client.open(3, &[("streamType", "stdout")]).await;
    let (mut stdout, mut error) = (Vec::new(), Vec::new());
    while let Some(f) = client.recv_within(Duration::from_secs(10)).await {
        match f {
            Frame::Data(d) if d.stream_id == 3 => stdout.extend(d.data),
            Frame::Data(d) if d.stream_id == 1 => error.extend(d.data),
            Frame::GoAway(_) => break,
            _ => {}
        }
    }
    assert_eq!(stdout, b"tls ok");
    let status: Status = serde_json::from_slice(&error).expect("status");
    assert_eq!(status.code(), Some(7));
}

#[test]
fn unusable_files_are_reported_by_name() {
    let files = self_signed();
    let other = self_signed();
    let missing = files.cert.with_file_name("missing.pem");
    match load_acceptor(&missing, &files.key) {
        Err(e @ TlsError::Certificate { .. }) => {
            assert!(e.to_string().contains("missing.pem"), "{e}")
        }
        other => panic!("expected a certificate error, got {:?}", other.err()),
    }
    // A key file given as the certificate holds no certificate.
    assert!(matches!(
        load_acceptor(&files.key, &files.key),
        Err(TlsError::NoCertificate { .. })
    ));
    assert!(matches!(
        load_acceptor(&files.cert, &files.cert),
        Err(TlsError::Key { .. })
    ));
    // The key of another certificate.
    assert!(matches!(
        load_acceptor(&files.cert, &other.key),
        Err(TlsError::Rejected { .. })
    ));
    assert!(load_acceptor(&files.cert, &files.key).is_ok());
}
