//! Extra instances of the real registry (Debian's docker-registry, through
//! conformance/registry.sh) on other loopback ports: with htpasswd basic
//! auth and/or TLS. Each serves the shared registry's storage read-only, so
//! the test images are there without pushing; each is stopped when its
//! handle drops (also when the test panics). The shared registry on
//! 127.0.0.1:5000 is never touched.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The shared registry's state dir (registry.sh's default).
const SHARED_STATE: &str = "/var/cache/krio-conformance/registry";

/// How an extra instance is set up.
#[derive(Debug, Default, Clone)]
pub struct Setup {
    /// Basic auth with this user and password (bcrypt htpasswd).
    pub htpasswd: Option<(String, String)>,
    /// HTTPS with a certificate from a fresh test CA.
    pub tls: bool,
}

/// A running extra registry.
pub struct ExtraRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    state: tempfile::TempDir,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/registry.sh")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl ExtraRegistry {
    /// Starts an instance; Err says why it cannot run here.
    pub fn start(setup: &Setup) -> Result<Self, String> {
        let storage = Path::new(SHARED_STATE).join("storage");
        if !storage
            .join("docker/registry/v2/repositories/registry.k8s.io/pause")
            .is_dir()
        {
            return Err(format!(
                "the shared registry's storage {} has no test images",
                storage.display()
            ));
        }
        let mut last = String::new();
        // A port picked free can be taken before the registry binds it.
        for _ in 0..3 {
            let state = tempfile::Builder::new()
                .prefix("krio-extra-registry.")
                .tempdir()
                .map_err(|e| format!("tempdir: {e}"))?;
            let addr = format!("127.0.0.1:{}", free_port());
            let mut cmd = Command::new("bash");
            cmd.arg(script())
                .arg("start")
                .arg(state.path())
                .env("KRIO_REGISTRY_ADDR", &addr)
                .env("KRIO_REGISTRY_STORAGE", &storage)
                .env("KRIO_REGISTRY_READONLY", "1");
            if let Some((user, password)) = &setup.htpasswd {
                cmd.env("KRIO_REGISTRY_HTPASSWD_USER", user)
                    .env("KRIO_REGISTRY_HTPASSWD_PASSWORD", password);
            }
            if setup.tls {
                cmd.env("KRIO_REGISTRY_TLS", "1");
            }
            let out = cmd
                .output()
                .map_err(|e| format!("running registry.sh: {e}"))?;
            // From here on the handle stops it, whatever happens next.
            let reg = Self { addr, state };
            if out.status.success() {
                return Ok(reg);
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        Err(format!("registry.sh start failed: {last}"))
    }

    /// The test CA's certificate (TLS instances).
    pub fn ca_cert(&self) -> PathBuf {
        self.state.path().join("tls/ca.crt")
    }
}

impl Drop for ExtraRegistry {
    fn drop(&mut self) {
        let out = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.state.path())
            .env("KRIO_REGISTRY_ADDR", &self.addr)
            .output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            eprintln!(
                "stopping the extra registry on {} failed: {out:?}",
                self.addr
            );
        }
    }
}
