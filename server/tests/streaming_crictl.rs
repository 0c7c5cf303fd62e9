//! Streaming end to end with crictl: exec (with a TTY under a
//! pseudo-terminal, with stdin piped), attach and port-forward, each over
//! SPDY and WebSocket; single-use URLs; a client killed mid-exec leaves no
//! process in the container and no fd in the daemon; and the same over TLS.
//! Root-only, needs the local registry and crictl (conformance/install-tools.sh).

mod common;
mod pod_env;

use std::io::{BufRead, Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{RuntimeClient, registry_ready, skip_unless_root};
use krio_proto::v1;

const TRANSPORTS: [&str; 2] = ["spdy", "websocket"];

/// Whether this test can run here (root, the registry, crictl).
fn can_run(test: &str) -> bool {
    if skip_unless_root(test) || !registry_ready(test) {
        return false;
    }
    let found = Command::new("crictl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let reason = "crictl is not installed (conformance/install-tools.sh installs it)";
        if std::env::var_os("KRIO_REQUIRE_ROOT_TESTS").is_some() {
            panic!("{test}: {reason}");
        }
        eprintln!("SKIPPED {test}: {reason}");
    }
    found
}

impl pod_env::Env {
    /// The daemon's log lines that mention `needle`.
    fn log_lines(&self, needle: &str) -> String {
        std::fs::read_to_string(self.sandbox.path("krio.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Starts a busybox container; `stdin` keeps its stdin open for attach
    /// (closed when the first attached client closes it).
    async fn run_stdin(&mut self, name: &str, command: &[&str], stdin: bool) -> String {
        let mut request = self.container(name, command);
        if let Some(config) = request.config.as_mut() {
            config.stdin = stdin;
            config.stdin_once = stdin;
        }
        self.create_and_start(request).await
    }

    /// `crictl` pointed at this daemon.
    fn crictl(&self) -> Command {
        let endpoint = format!("unix://{}", self.socket().display());
        let mut cmd = Command::new("crictl");
        cmd.arg("--runtime-endpoint")
            .arg(&endpoint)
            .arg("--image-endpoint")
            .arg(&endpoint)
            .arg("--timeout")
            .arg("60s");
        cmd
    }
}

/// A single-use exec URL for `true` in container `id`.
async fn exec_url(env: &mut pod_env::Env, id: &str) -> String {
    env.client
        .exec(v1::ExecRequest {
            container_id: id.to_owned(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .expect("exec")
        .into_inner()
        .url
}

/// The processes in a container (`ps -o args` through ExecSync).
async fn container_ps(mut client: RuntimeClient, id: String) -> String {
    let resp = client
        .exec_sync(v1::ExecSyncRequest {
            container_id: id,
            cmd: vec!["ps".into(), "-o".into(), "args".into()],
            timeout: 10,
        })
        .await
        .expect("exec sync")
        .into_inner();
    String::from_utf8_lossy(&resp.stdout).into_owned()
}

/// Runs a blocking command off the test's reactor, feeding `stdin`.
async fn output(mut cmd: Command, stdin: &[u8]) -> Output {
    let stdin = stdin.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(&stdin).expect("write stdin");
        drop(pipe);
        common::wait_bounded(child, Duration::from_secs(60))
    })
    .await
    .expect("join")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls `check` until it holds (up to 20 s); returns whether it did.
async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn crictl_exec_attach_and_port_forward_over_spdy_and_websocket() {
    if !can_run("crictl_exec_attach_and_port_forward_over_spdy_and_websocket") {
        return;
    }
    let mut env = pod_env::env(61, "crictl").await;
    let web = env
        .run_stdin(
            "web",
            &[
                "sh",
                "-c",
                "mkdir -p /www && echo hello-from-the-pod > /www/index.html && exec httpd -f -p 8080 -h /www",
            ],
            false,
        )
        .await;

    for transport in TRANSPORTS {
        // stdin piped through `exec -i`, and the exit code.
        let mut cmd = env.crictl();
        cmd.args(["exec", "-i", "--transport", transport, &web])
            .args(["sh", "-c", "cat; echo; echo to-stderr >&2; exit 3"]);
        let out = output(cmd, b"piped over the stream").await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout,
            "piped over the stream\n",
            "{transport}: {}",
            text(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("to-stderr"),
            "{transport}: {}",
            text(&out)
        );
        // crictl reports the exit code in its error and exits 1.
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("exit code 3"),
            "{transport}: {}",
            text(&out)
        );

        // A TTY exec under a pseudo-terminal (script gives crictl one).
        let endpoint = format!("unix://{}", env.socket().display());
        // The terminal is sized first: crictl sends the size, and the
        // container's terminal must come to report it (the resize may land
        // just after the command starts, so the command polls for it).
        let inner = format!(
            "stty rows 33 cols 111; crictl --runtime-endpoint {endpoint} --image-endpoint {endpoint} --timeout 60s exec -it --transport {transport} {web} sh -c 'for i in $(seq 200); do s=$(stty size 2>/dev/null); [ \"$s\" = \"33 111\" ] && break; sleep 0.05; done; tty; echo size=$s; exit 4'"
        );
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &inner, "/dev/null"]);
        let out = output(cmd, b"").await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("/dev/pts/"), "{transport}: {}", text(&out));
        assert!(
            stdout.contains("size=33 111"),
            "{transport}: {}",
            text(&out)
        );
        assert!(
            !out.status.success() && stdout.contains("exit code 4"),
            "{transport}: {}",
            text(&out)
        );

        // Attach: stdin reaches the container's process, its output comes
        // back, and closing stdin (stdin_once) ends it.
        let name = format!("reader-{transport}");
        let reader = env
            .run_stdin(
                &name,
                &[
                    "sh",
                    "-c",
                    "while read line; do echo got:$line; done; echo bye",
                ],
                true,
            )
            .await;
        let mut cmd = env.crictl();
        cmd.args(["attach", "-i", "--transport", transport, &reader]);
        let out = output(cmd, b"one\ntwo\n").await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("got:one") && stdout.contains("got:two") && stdout.contains("bye"),
            "{transport}: {}",
            text(&out)
        );

        // Port-forward to the pod's HTTP server.
        let mut cmd = env.crictl();
        cmd.args([
            "port-forward",
            "--transport",
            transport,
            &env.pod_id,
            "0:8080",
        ]);
        let body = port_forward_get(cmd).await;
        assert!(body.contains("hello-from-the-pod"), "{transport}: {body}");
    }
    env.remove_pod().await;
}

/// Starts `crictl port-forward`, reads the local port it prints, fetches
/// `/` through it and stops crictl; returns the HTTP response.
async fn port_forward_get(mut cmd: Command) -> String {
    tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn crictl port-forward");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        // "Forwarding from 127.0.0.1:PORT -> 8080"
        let port = lines.by_ref().map_while(Result::ok).find_map(|l| {
            let rest = l.strip_prefix("Forwarding from 127.0.0.1:")?;
            rest.split_whitespace().next()?.parse::<u16>().ok()
        });
        let response = port.map(|port| {
            let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            tcp.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            tcp.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
                .expect("request");
            let mut response = String::new();
            let _ = tcp.read_to_string(&mut response);
            response
        });
        let _ = child.kill();
        let out = child.wait_with_output().expect("wait");
        response.unwrap_or_else(|| {
            format!(
                "no forwarding line; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread")]
async fn urls_are_single_use_and_a_vanished_client_leaves_nothing() {
    if !can_run("urls_are_single_use_and_a_vanished_client_leaves_nothing") {
        return;
    }
    let mut env = pod_env::env(62, "vanish").await;
    let id = env.run("sleeper", &["sleep", "3600"]).await;

    // A URL works once.
    let url = exec_url(&mut env, &id).await;
    assert!(url.starts_with("http://"), "{url}");
    let first = http_status(&url);
    assert_eq!(first, 101, "the first use upgrades");
    assert_eq!(http_status(&url), 404, "the second use is refused");

    let daemon_pid = env.daemon.as_ref().expect("daemon").pid();
    for transport in TRANSPORTS {
        let fds_before = fd_count(daemon_pid);
        let mut cmd = env.crictl();
        cmd.args(["exec", "--transport", transport, &id, "sleep", "1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut crictl = cmd.spawn().expect("spawn crictl");
        let started = eventually(|| {
            let ps = container_ps(env.client.clone(), id.clone());
            async move { ps.await.contains("sleep 1000") }
        })
        .await;
        assert!(started, "{transport}: the exec did not start");
        crictl.kill().expect("kill crictl");
        crictl.wait().expect("reap crictl");
        let gone = eventually(|| {
            let ps = container_ps(env.client.clone(), id.clone());
            async move { !ps.await.contains("sleep 1000") }
        })
        .await;
        assert!(
            gone,
            "{transport}: the exec outlived its client:\n{}\n{}",
            container_ps(env.client.clone(), id.clone()).await,
            env.log_lines("stream")
        );
        let fds_released = eventually(|| {
            let n = fd_count(daemon_pid);
            async move { n <= fds_before }
        })
        .await;
        assert!(
            fds_released,
            "{transport}: the daemon holds {} fds, {fds_before} before the exec",
            fd_count(daemon_pid)
        );
    }
    env.remove_pod().await;
}

/// Sends a SPDY upgrade request to a streaming URL and returns the status
/// code of the answer.
fn http_status(url: &str) -> u16 {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').expect("path");
    let mut tcp = std::net::TcpStream::connect(host).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let upgrade = "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n";
    write!(
        tcp,
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\n{upgrade}Content-Length: 0\r\n\r\n"
    )
    .expect("request");
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).expect("status line");
    String::from_utf8_lossy(&head[9..12])
        .parse()
        .expect("status code")
}

#[tokio::test(flavor = "multi_thread")]
async fn crictl_exec_over_tls() {
    if !can_run("crictl_exec_over_tls") {
        return;
    }
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("generate a certificate");
    let certs = tempfile::tempdir().expect("tempdir");
    let cert = certs.path().join("cert.pem");
    let key = certs.path().join("key.pem");
    std::fs::write(&cert, generated.cert.pem()).expect("write cert");
    std::fs::write(&key, generated.signing_key.serialize_pem()).expect("write key");
    let toml = format!(
        "\n[streaming]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let mut env = pod_env::env_with_config(63, "tls", &toml).await;
    let id = env.run("sleeper", &["sleep", "3600"]).await;
    let url = exec_url(&mut env, &id).await;
    assert!(url.starts_with("https://"), "{url}");

    for transport in TRANSPORTS {
        let mut cmd = env.crictl();
        cmd.args(["exec", "-i", "--transport", transport])
            .arg("--tls-ca")
            .arg(&cert)
            // crictl insists on a client certificate; the server asks for
            // none, so any will do.
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .args(["--tls-server-name", "localhost", &id, "cat"]);
        let out = output(cmd, b"over tls").await;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "over tls",
            "{transport}: {}",
            text(&out)
        );
        assert!(out.status.success(), "{transport}: {}", text(&out));
    }
    // Without TLS flags crictl does not verify (as the kubelet's proxy);
    // a client that trusts another CA gets nothing.
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .expect("generate another certificate");
    let stranger_ca = certs.path().join("stranger.pem");
    std::fs::write(&stranger_ca, stranger.cert.pem()).expect("write");
    let mut cmd = env.crictl();
    cmd.args(["exec", "--tls-ca"])
        .arg(&stranger_ca)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .args([
            "--tls-server-name",
            "localhost",
            &id,
            "echo",
            "should-not-run",
        ]);
    let out = output(cmd, b"").await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("should-not-run"),
        "{}",
        text(&out)
    );
    env.remove_pod().await;
}
