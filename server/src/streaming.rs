//! The streaming server: `Exec`, `Attach` and `PortForward` hand out a
//! single-use URL here; the client upgrades a connection on it (SPDY or
//! WebSocket, see `krio-streaming`) and this module serves the session:
//! the OCI runtime's exec, the monitor's attach socket, or a TCP connection
//! dialled inside the pod's network namespace.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use krio_proto::v1;
use krio_runtime::monitor::{AttachClient, AttachEvent};
use krio_streaming::portforward::PortForwardPair;
use krio_streaming::protocol::{Operation, Status, TerminalSize};
use krio_streaming::server::{Handler, ServerConfig, Session, StreamServer};
use krio_streaming::session::{ExecChannels, ExecShape};
use krio_streaming::tls::TlsError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::StreamingConfig;
use crate::container::Containers;
use crate::error::Error;

/// What a token stands for.
#[derive(Debug, Clone)]
pub enum StreamRequest {
    /// Run `cmd` in the container.
    Exec {
        /// The container.
        container_id: String,
        /// The command.
        cmd: Vec<String>,
    },
    /// Join the container's stdio through its monitor.
    Attach {
        /// The monitor's state dir.
        state_dir: PathBuf,
    },
    /// Dial ports inside the pod.
    PortForward {
        /// The pod's network namespace pin (`None`: the node's).
        netns: Option<PathBuf>,
    },
}

/// Serves the sessions.
pub struct Sessions {
    containers: Arc<Containers>,
}

/// The running streaming server and its base URL.
pub struct Streaming {
    server: Arc<StreamServer<StreamRequest, Sessions>>,
    base_url: String,
}

impl std::fmt::Debug for Streaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming")
            .field("base_url", &self.base_url)
            .finish()
    }
}

/// Why the streaming server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The address cannot be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The configured address and port.
        address: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A setting that cannot work.
    #[error("streaming.{key}: {message}")]
    Invalid {
        /// The key under `[streaming]`.
        key: &'static str,
        /// What is wrong.
        message: &'static str,
    },
}

impl Streaming {
    /// Loads the TLS certificate and key (when configured), binds the
    /// configured address and serves in the background.
    pub async fn start(
        config: &StreamingConfig,
        containers: Arc<Containers>,
    ) -> Result<Self, StartError> {
        if config.stream_creation_timeout.is_zero() {
            return Err(StartError::Invalid {
                key: "stream_creation_timeout",
                message: "must be longer than 0s",
            });
        }
        let acceptor = match (config.tls_cert.clone(), config.tls_key.clone()) {
            (Some(cert), Some(key)) => Some(
                tokio::task::spawn_blocking(move || {
                    krio_streaming::tls::load_acceptor(&cert, &key)
                })
                .await
                .map_err(|_| StartError::Invalid {
                    key: "tls_cert",
                    message: "loading the certificate panicked",
                })??,
            ),
            _ => None,
        };
        let address = std::net::SocketAddr::new(config.address, config.port);
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| StartError::Bind { address, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| StartError::Bind { address, source })?;
        let settings = ServerConfig {
            stream_creation_timeout: config.stream_creation_timeout,
            idle_timeout: (!config.stream_idle_timeout.is_zero())
                .then_some(config.stream_idle_timeout),
            ..ServerConfig::default()
        };
        let server = StreamServer::new(Sessions { containers }, settings);
        let serving = server.clone();
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        tokio::spawn(async move {
            let served = match acceptor {
                Some(acceptor) => serving.serve_tls(listener, acceptor).await,
                None => serving.serve(listener).await,
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "streaming server stopped");
            }
        });
        tracing::info!(address = %local, scheme, "streaming server listening");
        Ok(Self {
            server,
            base_url: format!("{scheme}://{local}"),
        })
    }

    /// Registers a request; returns the URL the client upgrades on.
    pub fn url(
        &self,
        operation: Operation,
        shape: ExecShape,
        request: StreamRequest,
    ) -> Result<String, Error> {
        let path = self
            .server
            .register(operation, shape, request)
            .map_err(url_error)?;
        Ok(format!("{}{path}", self.base_url))
    }

    /// Registers a port-forward for `ports` (what a WebSocket-channel
    /// client forwards when its URL names none); returns its URL.
    pub fn port_forward_url(
        &self,
        ports: Vec<u16>,
        request: StreamRequest,
    ) -> Result<String, Error> {
        let path = self
            .server
            .register_port_forward(ports, request)
            .map_err(url_error)?;
        Ok(format!("{}{path}", self.base_url))
    }
}

fn url_error(e: krio_streaming::tokens::TokenError) -> Error {
    Error::Unavailable(format!("cannot hand out a streaming URL: {e}"))
}

/// Checks the stdio shape of an `Exec` or `Attach` request.
pub fn shape(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<ExecShape, Error> {
    if !(stdin || stdout || stderr) {
        return Err(Error::InvalidArgument(
            "one of stdin, stdout and stderr must be set".into(),
        ));
    }
    if tty && stderr {
        return Err(Error::InvalidArgument(
            "tty and stderr cannot both be set".into(),
        ));
    }
    Ok(ExecShape {
        stdin,
        stdout,
        stderr,
        tty,
    })
}

impl Handler<StreamRequest> for Sessions {
    async fn serve(&self, _operation: Operation, request: StreamRequest, session: Session) {
        match (request, session) {
            (StreamRequest::Exec { container_id, cmd }, Session::Exec(channels)) => {
                if let Err((err, Some(channels))) = self.exec(&container_id, &cmd, channels).await {
                    let _ = channels
                        .status
                        .finish(&Status::failure(err.to_string()))
                        .await;
                }
            }
            (StreamRequest::Attach { state_dir }, Session::Exec(channels)) => {
                attach(state_dir, channels).await
            }
            (StreamRequest::PortForward { netns }, Session::PortForward(mut pf)) => {
                while let Some(pair) = pf.next().await {
                    let netns = netns.clone();
                    tokio::spawn(forward(netns, pair));
                }
            }
            _ => tracing::warn!("stream session does not match its request"),
        }
    }
}

impl Sessions {
    /// A non-TTY exec: the runtime's `exec` with pipes, bridged to the
    /// client's channels; the exit code goes to the error channel.
    async fn exec(
        &self,
        container_id: &str,
        cmd: &[String],
        mut channels: ExecChannels,
    ) -> Result<(), (Error, Option<ExecChannels>)> {
        let tty = channels.resize.is_some();
        let containers = self.containers.clone();
        let id = container_id.to_owned();
        let cmd = cmd.to_vec();
        let prepared = tokio::task::spawn_blocking(move || containers.exec_command(&id, &cmd, tty))
            .await
            .map_err(|e| Error::internal("exec", e));
        let mut prepared = match prepared.and_then(|r| r) {
            Ok(p) => p,
            Err(e) => return Err((e, Some(channels))),
        };
        let mut command = tokio::process::Command::from(std::mem::replace(
            &mut prepared.exec.command,
            std::process::Command::new("true"),
        ));
        if tty {
            return exec_tty(command, prepared, channels)
                .await
                .map_err(|e| (e, None));
        }
        command
            .stdin(if channels.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Err((
                    Error::internal("running the OCI runtime's exec", e),
                    Some(channels),
                ));
            }
        };
        let mut stdin_task = None;
        if let (Some(mut input), Some(mut pipe)) = (channels.stdin.take(), child.stdin.take()) {
            stdin_task = Some(tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                while let Ok(n) = input.read(&mut buf).await {
                    if n == 0 || pipe.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                // Dropping the pipe closes the process's stdin.
            }));
        }
        let out = pump(child.stdout.take(), channels.stdout.take());
        let err = pump(child.stderr.take(), channels.stderr.take());
        let mut disconnect = channels.disconnect.clone();
        let waited = tokio::select! {
            status = child.wait() => Some(status),
            () = disconnect.wait() => None,
        };
        let Some(status) = waited else {
            // The client went away: nothing may be left running.
            tracing::debug!(container_id, "streaming client gone, killing the exec");
            prepared.kill();
            let _ = child.kill().await;
            if let Some(t) = stdin_task {
                t.abort();
            }
            return Ok(());
        };
        let _ = tokio::join!(out, err);
        if let Some(t) = stdin_task {
            t.abort();
        }
        let code = match status {
            Ok(s) => s.code().unwrap_or_else(|| {
                use std::os::unix::process::ExitStatusExt;
                128 + s.signal().unwrap_or(0)
            }),
            Err(e) => {
                let _ = channels
                    .status
                    .finish(&Status::failure(format!("waiting for the exec: {e}")))
                    .await;
                return Ok(());
            }
        };
        let _ = channels.status.finish(&Status::from_exit(code)).await;
        Ok(())
    }
}

/// A TTY exec: the runtime hands the pty master over the console socket;
/// it carries stdin and output both ways, and resizes apply to it.
async fn exec_tty(
    mut command: tokio::process::Command,
    mut prepared: crate::container::exec::PreparedExec,
    mut channels: ExecChannels,
) -> Result<(), Error> {
    let listener = prepared
        .console
        .take()
        .ok_or_else(|| Error::internal("exec", std::io::Error::other("no console socket")))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| Error::internal("running the OCI runtime's exec", e))?;
    let master = tokio::task::spawn_blocking(move || {
        krio_runtime::monitor::console::receive_pty_master(
            &listener,
            std::time::Duration::from_secs(10),
            || false,
        )
    })
    .await
    .map_err(|e| Error::internal("exec", e))?;
    let master = match master {
        Ok(m) => std::fs::File::from(m),
        Err(e) => {
            let _ = child.kill().await;
            let message = prepared.exec.log.message();
            let _ = channels
                .status
                .finish(&Status::failure(format!(
                    "the OCI runtime gave no terminal: {e} {message}"
                )))
                .await;
            return Ok(());
        }
    };
    let clone = |f: &std::fs::File| f.try_clone().map_err(|e| Error::internal("exec", e));
    let (reader, writer, sizer) = (clone(&master)?, clone(&master)?, master);
    if let Some(mut resize) = channels.resize.take() {
        tokio::spawn(async move {
            while let Some(TerminalSize { width, height }) = resize.next().await {
                let _ = krio_runtime::monitor::console::set_size(&sizer, width, height);
            }
        });
    }
    let stdin_task = channels.stdin.take().map(|mut input| {
        let mut writer = tokio::fs::File::from_std(writer);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = input.read(&mut buf).await {
                if n == 0 || writer.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                let _ = writer.flush().await;
            }
        })
    });
    // A pty master reads EIO once the process side is gone: that is EOF.
    let output = pump(
        Some(tokio::fs::File::from_std(reader)),
        channels.stdout.take(),
    );
    let mut disconnect = channels.disconnect.clone();
    let status = tokio::select! {
        status = child.wait() => status,
        () = disconnect.wait() => {
            tracing::debug!("streaming client gone, killing the TTY exec");
            prepared.kill();
            let _ = child.kill().await;
            if let Some(t) = stdin_task { t.abort(); }
            return Ok(());
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), output).await;
    if let Some(t) = stdin_task {
        t.abort();
    }
    let code = match status {
        Ok(s) => s.code().unwrap_or(-1),
        Err(e) => return Err(Error::internal("waiting for the exec", e)),
    };
    let _ = channels.status.finish(&Status::from_exit(code)).await;
    Ok(())
}

/// Copies a process pipe to a client channel until EOF, then closes it.
async fn pump(
    pipe: Option<impl tokio::io::AsyncRead + Unpin + Send + 'static>,
    channel: Option<krio_streaming::session::OutputChannel>,
) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(ch) = &channel
                    && ch.write(&buf[..n]).await.is_err()
                {
                    break;
                }
            }
        }
    }
    if let Some(ch) = channel {
        let _ = ch.close().await;
    }
}

/// Attach: the monitor's attach socket bridged to the client's channels.
async fn attach(state_dir: PathBuf, mut channels: ExecChannels) {
    let client = match tokio::task::spawn_blocking(move || AttachClient::connect(&state_dir)).await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let _ = channels
                .status
                .finish(&Status::failure(format!("cannot attach: {e}")))
                .await;
            return;
        }
        Err(_) => return,
    };
    let (writer, resizer) = match (client.try_clone(), client.try_clone()) {
        (Ok(w), Ok(r)) => (Arc::new(w), r),
        _ => return,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<AttachEvent>(64);
    // The monitor's socket is blocking: read it on its own thread.
    std::thread::spawn(move || {
        while let Ok(Some(event)) = client.recv() {
            if tx.blocking_send(event).is_err() {
                break;
            }
        }
    });
    if let Some(mut input) = channels.stdin.take() {
        let writer = writer.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = input.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let data = buf[..n].to_vec();
                let w = writer.clone();
                if tokio::task::spawn_blocking(move || w.send_stdin(&data))
                    .await
                    .map(|r| r.is_err())
                    .unwrap_or(true)
                {
                    return;
                }
            }
            let w = writer.clone();
            let _ = tokio::task::spawn_blocking(move || w.close_stdin()).await;
        });
    }
    if let Some(mut resize) = channels.resize.take() {
        tokio::spawn(async move {
            while let Some(TerminalSize { width, height }) = resize.next().await {
                let _ = resizer.resize(width, height);
            }
        });
    }
    let mut disconnect = channels.disconnect.clone();
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Some(AttachEvent::Stdout(data)) => {
                    if let Some(ch) = &channels.stdout { let _ = ch.write(&data).await; }
                }
                Some(AttachEvent::Stderr(data)) => {
                    let ch = channels.stderr.as_ref().or(channels.stdout.as_ref());
                    if let Some(ch) = ch { let _ = ch.write(&data).await; }
                }
                None => break,
            },
            () = disconnect.wait() => return,
        }
    }
    for ch in [&channels.stdout, &channels.stderr].into_iter().flatten() {
        let _ = ch.close().await;
    }
    let _ = channels.status.finish(&Status::success()).await;
}

/// One port-forward stream pair: a TCP connection to `port` inside the
/// pod's network namespace.
async fn forward(netns: Option<PathBuf>, pair: PortForwardPair) {
    let port = pair.port;
    let dialled = tokio::task::spawn_blocking(move || dial(netns, port)).await;
    let tcp = match dialled {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            let _ = pair
                .error
                .write(format!("cannot connect to port {port} in the pod: {e}").as_bytes())
                .await;
            let _ = pair.error.close().await;
            let _ = pair.data.close().await;
            return;
        }
        Err(_) => return,
    };
    let Ok(tcp) = tokio::net::TcpStream::from_std(tcp) else {
        return;
    };
    let (mut rd, mut wr) = tcp.into_split();
    let data = pair.data.clone();
    let upstream = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n) = data.read(&mut buf).await {
            if n == 0 || wr.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if pair.data.write(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = pair.data.close().await;
    let _ = pair.error.close().await;
    let _ = upstream.await;
}

/// Connects to localhost:`port` in `netns` from a thread that joins it (a
/// socket keeps the namespace it was created in).
fn dial(netns: Option<PathBuf>, port: u16) -> std::io::Result<std::net::TcpStream> {
    std::thread::spawn(move || {
        if let Some(ns) = netns {
            let file = std::fs::File::open(&ns)?;
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
        }
        let tcp = std::net::TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_nonblocking(true)?;
        Ok(tcp)
    })
    .join()
    .map_err(|_| std::io::Error::other("dial thread panicked"))?
}

/// Builds the `Exec`/`Attach`/`PortForward` responses.
pub mod rpc {
    use super::*;

    /// `Exec`.
    pub fn exec(
        daemon: &crate::cri::Daemon,
        req: &v1::ExecRequest,
    ) -> Result<v1::ExecResponse, Error> {
        let shape = shape(req.stdin, req.stdout, req.stderr, req.tty)?;
        if req.cmd.is_empty() {
            return Err(Error::InvalidArgument("cmd is required".into()));
        }
        daemon.containers.running(&req.container_id)?;
        let url = daemon.streaming.url(
            Operation::Exec,
            shape,
            StreamRequest::Exec {
                container_id: req.container_id.clone(),
                cmd: req.cmd.clone(),
            },
        )?;
        Ok(v1::ExecResponse { url })
    }

    /// `Attach`.
    pub fn attach(
        daemon: &crate::cri::Daemon,
        req: &v1::AttachRequest,
    ) -> Result<v1::AttachResponse, Error> {
        let shape = shape(req.stdin, req.stdout, req.stderr, req.tty)?;
        let record = daemon.containers.running(&req.container_id)?;
        let url = daemon.streaming.url(
            Operation::Attach,
            shape,
            StreamRequest::Attach {
                state_dir: record.state_dir,
            },
        )?;
        Ok(v1::AttachResponse { url })
    }

    /// `PortForward`.
    pub fn port_forward(
        daemon: &crate::cri::Daemon,
        req: &v1::PortForwardRequest,
    ) -> Result<v1::PortForwardResponse, Error> {
        let pod = daemon.sandboxes.get(&req.pod_sandbox_id)?.ok_or_else(|| {
            Error::NotFound(format!("pod sandbox {:?} not found", req.pod_sandbox_id))
        })?;
        let ports = req
            .port
            .iter()
            .map(|&port| {
                u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| {
                    Error::InvalidArgument(format!("port {port} is out of range 1-65535"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let url = daemon.streaming.port_forward_url(
            ports,
            StreamRequest::PortForward {
                netns: pod.namespaces.net,
            },
        )?;
        Ok(v1::PortForwardResponse { url })
    }
}
