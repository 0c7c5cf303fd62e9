//! Starting the real `krio` binary on a temp socket and temp dirs, and a
//! generated CRI client connected to it.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use krio_proto::v1::image_service_client::ImageServiceClient;
use krio_proto::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// The krio binary under test.
pub const KRIO: &str = env!("CARGO_BIN_EXE_krio");

/// A temp tree with root, runroot, socket and config paths for one daemon.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn socket(&self) -> PathBuf {
        self.path("run/krio.sock")
    }

    /// A `krio` command isolated from the host's /etc/krio and KRIO_* env.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(KRIO);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("KRIO_") {
                cmd.env_remove(key);
            }
        }
        cmd.env_remove("NOTIFY_SOCKET")
            .arg("--config")
            .arg(self.path("krio.toml"))
            .arg("--config-dir")
            .arg(self.path("krio.d"));
        if !self.path("krio.toml").exists() {
            std::fs::write(self.path("krio.toml"), "").expect("write empty config");
        }
        cmd
    }

    /// The serving command with every path under the sandbox.
    pub fn serve_command(&self) -> Command {
        self.serve_command_at(&self.socket())
    }

    /// The serving command listening on `socket`.
    pub fn serve_command_at(&self, socket: &Path) -> Command {
        let mut cmd = self.command();
        cmd.arg("--root")
            .arg(self.path("root"))
            .arg("--runroot")
            .arg(self.path("run"))
            .arg("--listen")
            .arg(socket)
            .arg("--cni-config-dir")
            .arg(self.path("cni"))
            .arg("--log-level")
            .arg("debug");
        cmd
    }

    /// Starts the daemon, its log appended to `krio.log` in the sandbox (a
    /// pipe nobody reads would stall a chatty daemon), and waits for its
    /// socket.
    pub fn start(&self) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open krio.log");
        let child = self
            .serve_command()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn krio");
        let mut daemon = Daemon {
            child: Some(child),
            socket: self.socket(),
        };
        if let Err(status) = daemon.wait_for_socket() {
            panic!(
                "krio stopped early ({status}): {}",
                std::fs::read_to_string(self.log_path()).unwrap_or_default()
            );
        }
        daemon
    }

    /// The log of the daemons [`Sandbox::start`] started.
    pub fn log_path(&self) -> PathBuf {
        self.path("krio.log")
    }
}

impl Sandbox {
    /// Starts `cmd` (a serving command listening on [`Sandbox::socket`])
    /// and waits for the socket.
    pub fn start_command(&self, mut cmd: Command) -> Daemon {
        let child = cmd.stdout(Stdio::null()).spawn().expect("spawn krio");
        let mut daemon = Daemon {
            child: Some(child),
            socket: self.socket(),
        };
        if let Err(status) = daemon.wait_for_socket() {
            panic!("krio stopped early ({status})");
        }
        daemon
    }
}

/// A running daemon; killed on drop so a failing test leaves nothing behind.
pub struct Daemon {
    pub child: Option<Child>,
    pub socket: PathBuf,
}

impl Daemon {
    /// Waits (at most 20 s) for the socket; the exit status when the
    /// daemon stops first.
    fn wait_for_socket(&mut self) -> Result<(), std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("try_wait"))
            {
                self.child = None;
                return Err(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("krio did not create {} in time", self.socket.display());
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().expect("running").id()).expect("pid fits")
    }

    /// Sends SIGTERM and returns the exit output (bounded wait).
    pub fn terminate(mut self) -> Output {
        let child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("send SIGTERM");
        wait_bounded(child, Duration::from_secs(10))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for a child for at most `limit`, killing it after that.
pub fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    panic!(
        "process did not exit within {limit:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A channel to the daemon's unix socket.
pub async fn channel(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .expect("connect to krio")
}

/// The generated runtime client over the test channel.
pub type RuntimeClient = RuntimeServiceClient<Channel>;

pub async fn runtime_client(socket: &Path) -> RuntimeServiceClient<Channel> {
    RuntimeServiceClient::new(channel(socket).await)
}

pub async fn image_client(socket: &Path) -> ImageServiceClient<Channel> {
    ImageServiceClient::new(channel(socket).await)
}

/// Whether a root-only test must be skipped (printing why); with
/// `KRIO_REQUIRE_ROOT_TESTS=1` a skip is a failure instead.
pub fn skip_unless_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    let reason = "not running as root (needs namespaces, mounts and CNI)";
    if std::env::var_os("KRIO_REQUIRE_ROOT_TESTS").is_some() {
        panic!("{test}: cannot run ({reason}) but KRIO_REQUIRE_ROOT_TESTS is set");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
    true
}

impl Sandbox {
    /// Writes a bridge network config with its own bridge, subnet and IPAM
    /// store, so tests can run side by side; returns the bridge name.
    pub fn write_bridge_network(&self, subnet_octet: u8) -> String {
        let bridge = format!("krt{}{}", std::process::id() % 10000, subnet_octet);
        std::fs::create_dir_all(self.path("cni")).expect("mkdir cni");
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("krio-test-{subnet_octet}"),
            "plugins": [
                {
                    "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": self.path("ipam"),
                        "ranges": [[{"subnet": format!("10.201.{subnet_octet}.0/24")}]],
                        "routes": [{"dst": "0.0.0.0/0"}]
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "loopback"}
            ]
        });
        std::fs::write(self.path("cni/10-test.conflist"), conf.to_string())
            .expect("write conflist");
        bridge
    }

    /// Mount points under the sandbox dir (pins, shm), to check cleanup.
    pub fn mounts(&self) -> Vec<String> {
        let prefix = self.dir.path().display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .map(str::to_owned)
            .collect()
    }
}

/// Removes a test bridge even when the test fails.
pub struct BridgeGuard(pub String);

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// Unmounts whatever a failed test left under a dir (after the daemon died).
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let prefix = self.0.display().to_string();
        // Containers a failed test left running (runc's default root): their
        // bundles are under the dir. `delete --force` kills them and removes
        // their cgroups and runc state.
        let listed = Command::new("runc")
            .args(["list", "--format", "json"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        let containers: Vec<serde_json::Value> =
            serde_json::from_slice(&listed).unwrap_or_default();
        for c in containers {
            if c["bundle"].as_str().is_some_and(|b| b.starts_with(&prefix))
                && let Some(id) = c["id"].as_str()
            {
                let _ = Command::new("runc")
                    .args(["delete", "--force", id])
                    .output();
            }
        }
        // Pod infra processes of a failed test name the dir in their args.
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&prefix)
                && pid != std::process::id() as i32
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .map(str::to_owned)
            .collect();
        mounts.sort();
        for m in mounts.iter().rev() {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Whether the local registry serves the test images; without it a test is
/// skipped, or fails under KRIO_REQUIRE_ROOT_TESTS.
pub fn registry_ready(test: &str) -> bool {
    let ok = Command::new("curl")
        .args([
            "-fsS",
            "-o",
            "/dev/null",
            "http://127.0.0.1:5000/v2/registry.k8s.io/e2e-test-images/busybox/tags/list",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let reason = "the local registry with the test images is not running (conformance/test-all.sh starts it)";
        if std::env::var_os("KRIO_REQUIRE_ROOT_TESTS").is_some() {
            panic!("{test}: {reason}");
        }
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
    }
    ok
}

impl Sandbox {
    /// Points krio at the local registry as a mirror of the upstream
    /// registries the test images come from.
    pub fn use_local_registry(&self) {
        let mut conf = String::new();
        for upstream in ["registry.k8s.io", "gcr.io"] {
            conf.push_str(&format!(
                "[[registry]]\nprefix = \"{upstream}\"\nlocation = \"{upstream}\"\n\n[[registry.mirror]]\nlocation = \"127.0.0.1:5000/{upstream}\"\ninsecure = true\n\n"
            ));
        }
        std::fs::write(self.path("registries.conf"), conf).expect("write registries.conf");
        std::fs::write(
            self.path("krio.toml"),
            format!(
                "[image]\nregistries_conf = \"{}\"\n",
                self.path("registries.conf").display()
            ),
        )
        .expect("write krio.toml");
    }
}
