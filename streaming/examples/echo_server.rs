//! A streaming server for interoperability checks with real Kubernetes
//! clients (client-go's SPDY and WebSocket executors and port-forwarders).
//!
//! `cargo run -p krio-streaming --example echo_server -- N` listens on
//! 127.0.0.1 (ephemeral port), prints `addr HOST:PORT`, then N URL paths for
//! each of exec (stdin+stdout+stderr), exec-tty and port-forward, one per
//! line as `KIND PATH`. Exec echoes stdin to stdout, writes "stderr" to
//! stderr and exits 42 (0 for the tty form, which also prints the first
//! resize); port-forward answers each connection with `port N: ` + the
//! first bytes it read.

use std::io::Write as _;

use krio_streaming::protocol::{Operation, Status};
use krio_streaming::server::{Handler, ServerConfig, Session, StreamServer};
use krio_streaming::session::ExecShape;

struct Echo;

impl Handler<i32> for Echo {
    async fn serve(&self, _op: Operation, code: i32, session: Session) {
        match session {
            Session::Exec(mut ch) => {
                if let (Some(resize), Some(out)) = (ch.resize.as_mut(), ch.stdout.as_ref())
                    && let Some(size) = resize.next().await
                {
                    let _ = out
                        .write(format!("{}x{};", size.width, size.height).as_bytes())
                        .await;
                }
                let mut input = Vec::new();
                if let Some(stdin) = ch.stdin.as_mut() {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stdin.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        input.extend_from_slice(&buf[..n]);
                    }
                }
                if let Some(out) = &ch.stdout {
                    let _ = out.write(&input).await;
                    let _ = out.close().await;
                }
                if let Some(err) = &ch.stderr {
                    let _ = err.write(b"stderr").await;
                    let _ = err.close().await;
                }
                let _ = ch.status.finish(&Status::from_exit(code)).await;
            }
            Session::PortForward(mut pf) => {
                while let Some(pair) = pf.next().await {
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        let n = pair.data.read(&mut buf).await.unwrap_or(0);
                        let mut answer = format!("port {}: ", pair.port).into_bytes();
                        answer.extend_from_slice(&buf[..n]);
                        let _ = pair.data.write(&answer).await;
                        let _ = pair.data.close().await;
                        let _ = pair.error.close().await;
                    });
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4);
    let server = StreamServer::new(Echo, ServerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "addr {}", listener.local_addr()?)?;
    let exec = ExecShape {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let tty = ExecShape {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    };
    for _ in 0..n {
        let register = |op, shape, code| {
            server
                .register(op, shape, code)
                .map_err(std::io::Error::other)
        };
        writeln!(out, "exec {}", register(Operation::Exec, exec, 42)?)?;
        writeln!(out, "tty {}", register(Operation::Exec, tty, 0)?)?;
        writeln!(
            out,
            "portforward {}",
            register(Operation::PortForward, ExecShape::default(), 0)?
        )?;
    }
    out.flush()?;
    drop(out);
    server.serve(listener).await
}
