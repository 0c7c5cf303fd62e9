//! Operating krio: the metrics endpoint, the client's deadline, SIGHUP
//! reload and `krio status`, against the real daemon.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{MountGuard, Sandbox, image_client, registry_ready, runtime_client, skip_unless_root};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use krio_proto::v1;
use prost::Message;

/// Upper bound for waiting on something the daemon does asynchronously.
const PATIENCE: Duration = Duration::from_secs(20);

/// A serving command without `--log-level`, so the config file decides it.
fn serve_command_without_log_level(sandbox: &Sandbox, log: &Path) -> Command {
    let mut cmd = sandbox.command();
    cmd.arg("--root")
        .arg(sandbox.path("root"))
        .arg("--runroot")
        .arg(sandbox.path("run"))
        .arg("--listen")
        .arg(sandbox.socket())
        .arg("--cni-config-dir")
        .arg(sandbox.path("cni"))
        .stderr(Stdio::from(std::fs::File::create(log).expect("log file")));
    cmd
}

/// Waits until `check` returns `Some`, or panics naming `what`.
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Sends one unary gRPC request over a raw HTTP/2 connection, so that the
/// `grpc-timeout` header is not also enforced by a client (tonic's client
/// would race the server with its own timer). Returns the gRPC code.
async fn raw_unary(socket: &Path, path: &str, message: &impl Message, timeout: &str) -> i32 {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let payload = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&payload);
    let request = http::Request::post(format!("http://krio{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(http_body_util::Full::new(hyper::body::Bytes::from(frame)))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let header_status = response.headers().get("grpc-status").cloned();
    let collected = response.into_body().collect().await.expect("body");
    let status = header_status
        .or_else(|| {
            collected
                .trailers()
                .and_then(|t| t.get("grpc-status").cloned())
        })
        .expect("a grpc-status in headers or trailers");
    status
        .to_str()
        .expect("ascii")
        .parse()
        .expect("numeric code")
}

/// A registry that accepts connections and never answers, so a pull from
/// it can only end by its deadline (an unroutable address could fail at
/// once, before the deadline). Lives as long as the process.
fn silent_registry() -> std::net::SocketAddr {
    static ADDR: std::sync::OnceLock<std::net::SocketAddr> = std::sync::OnceLock::new();
    *ADDR.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming().flatten() {
                held.push(conn);
            }
        });
        addr
    })
}

/// A PullImage that cannot finish in a millisecond.
fn slow_pull() -> v1::PullImageRequest {
    v1::PullImageRequest {
        image: Some(v1::ImageSpec {
            image: format!("{}/never/answers:1", silent_registry()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_expired_client_deadline_is_deadline_exceeded() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start();
    for _ in 0..5 {
        let code = raw_unary(
            &daemon.socket,
            "/runtime.v1.ImageService/PullImage",
            &slow_pull(),
            "1m",
        )
        .await;
        assert_eq!(
            tonic::Code::from(code),
            tonic::Code::DeadlineExceeded,
            "a 1 ms deadline must answer DEADLINE_EXCEEDED, not CANCELLED"
        );
    }
    // A deadline that leaves time changes nothing.
    let mut client = runtime_client(&daemon.socket).await;
    let mut req = tonic::Request::new(v1::VersionRequest::default());
    req.set_timeout(Duration::from_secs(30));
    client.version(req).await.expect("Version within 30 s");
}

/// A port nothing listens on now (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// `GET /metrics` over plain HTTP/1.1.
fn scrape(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect metrics");
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: krio\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut out = String::new();
    stream.read_to_string(&mut out).expect("read");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

#[tokio::test]
async fn metrics_endpoint_counts_rpcs_and_errors_by_code() {
    let sandbox = Sandbox::new();
    let port = free_port();
    std::fs::write(
        sandbox.path("krio.toml"),
        format!("[metrics]\nenable = true\naddress = \"127.0.0.1:{port}\"\n"),
    )
    .expect("write config");
    let daemon = sandbox.start();

    // Families with labels appear once they have a series.
    let before = scrape(port);
    for family in [
        "# TYPE krio_image_pull_bytes counter",
        "# TYPE krio_image_pull_duration_seconds histogram",
        "# TYPE krio_containers gauge",
        "# TYPE krio_monitors gauge",
    ] {
        assert!(before.contains(family), "{family} missing:\n{before}");
    }
    assert!(
        before.contains("krio_containers{state=\"running\"} 0"),
        "{before}"
    );
    assert!(before.contains("krio_monitors 0"), "{before}");
    assert!(!before.contains("method=\"Version\""), "{before}");

    let mut client = runtime_client(&daemon.socket).await;
    for _ in 0..3 {
        client
            .version(v1::VersionRequest::default())
            .await
            .expect("Version");
    }
    let err = client
        .container_status(v1::ContainerStatusRequest::default())
        .await
        .expect_err("an empty id is invalid");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let code = raw_unary(
        &daemon.socket,
        "/runtime.v1.ImageService/PullImage",
        &slow_pull(),
        "1m",
    )
    .await;
    assert_eq!(tonic::Code::from(code), tonic::Code::DeadlineExceeded);

    // The server records an RPC when its answer's body is done, which may
    // be just after the client has it.
    let wanted = [
        "krio_grpc_requests_total{method=\"Version\"} 3",
        "krio_grpc_request_duration_seconds_count{method=\"Version\"} 3",
        "krio_grpc_requests_total{method=\"ContainerStatus\"} 1",
        "krio_grpc_errors_total{method=\"ContainerStatus\",code=\"INVALID_ARGUMENT\"} 1",
        "krio_grpc_errors_total{method=\"PullImage\",code=\"DEADLINE_EXCEEDED\"} 1",
    ];
    let after = eventually("the RPCs to be counted", || {
        let text = scrape(port);
        wanted.iter().all(|w| text.contains(w)).then_some(text)
    })
    .await;
    for family in [
        "# TYPE krio_grpc_requests counter",
        "# TYPE krio_grpc_errors counter",
        "# TYPE krio_grpc_request_duration_seconds histogram",
    ] {
        assert!(after.contains(family), "{family} missing:\n{after}");
    }
    assert!(
        !after.contains("krio_grpc_errors_total{method=\"Version\""),
        "successful RPCs are not errors:\n{after}"
    );
}

#[tokio::test]
async fn sighup_changes_the_log_level() {
    let sandbox = Sandbox::new();
    let log = sandbox.path("krio.log");
    std::fs::write(sandbox.path("krio.toml"), "log_level = \"info\"\n").expect("write config");
    let daemon = sandbox.start_command(serve_command_without_log_level(&sandbox, &log));
    let mut client = runtime_client(&daemon.socket).await;
    client
        .version(v1::VersionRequest::default())
        .await
        .expect("Version");

    std::fs::write(sandbox.path("krio.toml"), "log_level = \"debug\"\n").expect("write config");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("send SIGHUP");
    eventually("the reload", || {
        read(&log).contains("configuration reloaded").then_some(())
    })
    .await;
    client
        .version(v1::VersionRequest::default())
        .await
        .expect("Version after the reload");
    let text = eventually("a debug line for the second Version", || {
        let text = read(&log);
        text.contains("rpc finished method=Version").then_some(text)
    })
    .await;
    let (before, after) = text
        .split_once("configuration reloaded")
        .expect("reload logged");
    assert!(
        !before.contains("DEBUG"),
        "no debug lines at info level:\n{before}"
    );
    assert!(before.contains("log_level: info -> debug"), "{before}");
    assert!(after.contains("DEBUG"), "{after}");
    assert!(daemon.terminate().status.success());
}

#[tokio::test]
async fn an_invalid_config_on_sighup_keeps_the_daemon_serving() {
    let sandbox = Sandbox::new();
    let log = sandbox.path("krio.log");
    std::fs::write(sandbox.path("krio.toml"), "log_level = \"info\"\n").expect("write config");
    let daemon = sandbox.start_command(serve_command_without_log_level(&sandbox, &log));

    std::fs::write(sandbox.path("krio.toml"), "log_level = \"loud\"\n").expect("write config");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("send SIGHUP");
    let text = eventually("the rejected reload", || {
        let text = read(&log);
        text.contains("keeping the one in effect").then_some(text)
    })
    .await;
    assert!(
        text.contains("log_level"),
        "the error names the key:\n{text}"
    );

    let mut client = runtime_client(&daemon.socket).await;
    let status = client
        .status(v1::StatusRequest { verbose: true })
        .await
        .expect("Status after a rejected reload")
        .into_inner();
    let config: serde_json::Value =
        serde_json::from_str(&status.info["config"]).expect("config JSON");
    assert_eq!(
        config["log_level"], "info",
        "the old config stays in effect"
    );
    assert!(daemon.terminate().status.success());
}

#[tokio::test]
async fn sighup_adds_a_runtime_handler_and_keeps_restart_only_keys() {
    let sandbox = Sandbox::new();
    let log = sandbox.path("krio.log");
    let daemon = sandbox.start_command(serve_command_without_log_level(&sandbox, &log));
    let handlers = |status: &v1::StatusResponse| -> Vec<String> {
        status
            .runtime_handlers
            .iter()
            .map(|h| h.name.clone())
            .collect()
    };
    let mut client = runtime_client(&daemon.socket).await;
    let before = client
        .status(v1::StatusRequest::default())
        .await
        .expect("Status")
        .into_inner();
    assert!(!handlers(&before).contains(&"extra".to_owned()));

    std::fs::create_dir(sandbox.path("krio.d")).expect("mkdir krio.d");
    std::fs::write(
        sandbox.path("krio.d/50-extra.toml"),
        "[runtime.handlers.extra]\npath = \"/usr/sbin/runc\"\n[image]\npause_image = \"example.com/pause:1\"\n",
    )
    .expect("write drop-in");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("send SIGHUP");
    let text = eventually("the reload", || {
        let text = read(&log);
        text.contains("configuration reloaded").then_some(text)
    })
    .await;
    assert!(
        text.contains("image.pause_image"),
        "restart-only key reported:\n{text}"
    );

    let after = client
        .status(v1::StatusRequest { verbose: true })
        .await
        .expect("Status after the reload")
        .into_inner();
    assert!(
        handlers(&after).contains(&"extra".to_owned()),
        "{:?}",
        handlers(&after)
    );
    let config: serde_json::Value =
        serde_json::from_str(&after.info["config"]).expect("config JSON");
    assert_eq!(
        config["runtime"]["handlers"]["extra"]["path"],
        "/usr/sbin/runc"
    );
    assert_eq!(
        config["image"]["pause_image"], "registry.k8s.io/pause:3.9",
        "a restart-only key keeps its running value"
    );
    let files: Vec<String> = serde_json::from_str(&after.info["configFiles"]).expect("files");
    assert!(
        files.iter().any(|f| f.ends_with("50-extra.toml")),
        "{files:?}"
    );
    assert!(daemon.terminate().status.success());
}

#[test]
fn status_names_the_socket_when_the_daemon_is_not_running() {
    let sandbox = Sandbox::new();
    let out = sandbox
        .command()
        .arg("--listen")
        .arg(sandbox.socket())
        .arg("status")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("run krio status");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&sandbox.socket().display().to_string()),
        "{err}"
    );
    assert!(err.contains("cannot reach krio"), "{err}");
}

const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";

#[tokio::test]
async fn status_prints_pods_containers_and_images() {
    if skip_unless_root("status_prints_pods_containers_and_images")
        || !registry_ready("status_prints_pods_containers_and_images")
    {
        return;
    }
    let sandbox = Sandbox::new();
    let _mounts = MountGuard(sandbox.dir.path().to_path_buf());
    sandbox.use_local_registry();
    let daemon = sandbox.start();
    image_client(&daemon.socket)
        .await
        .pull_image(v1::PullImageRequest {
            image: Some(v1::ImageSpec {
                image: BUSYBOX.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("pull busybox");
    let mut client = runtime_client(&daemon.socket).await;
    // Host network: no CNI needed.
    let pod_config = v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: "status-pod".into(),
            uid: "uid-status".into(),
            namespace: "ops".into(),
            attempt: 0,
        }),
        log_directory: sandbox.path("logs").display().to_string(),
        linux: Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption {
                    network: v1::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod_id = client
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("run pod")
        .into_inner()
        .pod_sandbox_id;
    let container_id = client
        .create_container(v1::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(v1::ContainerConfig {
                metadata: Some(v1::ContainerMetadata {
                    name: "status-ctr".into(),
                    attempt: 0,
                }),
                image: Some(v1::ImageSpec {
                    image: BUSYBOX.into(),
                    ..Default::default()
                }),
                command: vec!["sleep".into(), "60".into()],
                log_path: "status-ctr.log".into(),
                ..Default::default()
            }),
            sandbox_config: Some(pod_config),
        })
        .await
        .expect("create container")
        .into_inner()
        .container_id;

    let status = |json: bool| {
        let mut cmd = sandbox.command();
        cmd.arg("--listen").arg(&daemon.socket).arg("status");
        if json {
            cmd.arg("--json");
        }
        cmd.output().expect("run krio status")
    };
    let text = status(false);
    let json = status(true);

    client
        .stop_pod_sandbox(v1::StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .expect("stop pod");
    client
        .remove_pod_sandbox(v1::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .expect("remove pod");

    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    let text = String::from_utf8_lossy(&text.stdout);
    for wanted in [
        "Pods (1):",
        "status-pod",
        &pod_id[..13],
        "Containers (1):",
        "status-ctr",
        &container_id[..13],
        "Created",
        BUSYBOX,
        "Images (1):",
        "RuntimeReady",
        "runc (default)",
        "Configuration in effect",
    ] {
        assert!(text.contains(wanted), "{wanted:?} missing:\n{text}");
    }

    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(json["pods"][0]["id"], pod_id.as_str());
    assert_eq!(json["containers"][0]["name"], "status-ctr");
    assert_eq!(json["containers"][0]["podSandboxId"], pod_id.as_str());
    assert_eq!(json["images"][0]["repoTags"][0], BUSYBOX);
    assert_eq!(json["configFromDaemon"], true);
}
