//! Shared helpers of the integration tests: the local registry, a store in
//! a temp dir, and the skip-or-fail rule for tests that need root and the
//! registry.
#![allow(dead_code)]

pub mod extra;
pub mod fake;

use krio_image::{ImageStore, ImageStoreOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The local registry's address.
pub const REGISTRY: &str = "127.0.0.1:5000";

/// The busybox test image (an OCI index, amd64 + arm64).
pub const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";

/// registries.conf pointing the upstream names at the local registry, as
/// the critest setup does.
pub fn mirrors_conf() -> String {
    let mut s = String::new();
    for host in ["registry.k8s.io", "k8s.gcr.io", "gcr.io", "public.ecr.aws"] {
        s.push_str(&format!(
            "[[registry]]\nprefix = \"{host}\"\nlocation = \"{host}\"\n[[registry.mirror]]\nlocation = \"{REGISTRY}/{host}\"\ninsecure = true\n\n"
        ));
    }
    s
}

/// Prints SKIPPED (or fails when `KRIO_REQUIRE_ROOT_TESTS=1`) and returns
/// false when the environment cannot run a registry test.
pub fn registry_available(test: &str) -> bool {
    static STATE: OnceLock<Result<(), String>> = OnceLock::new();
    let state = STATE.get_or_init(prepare_registry);
    match state {
        Ok(()) => true,
        Err(why) => {
            if std::env::var("KRIO_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
                panic!(
                    "{test}: the local registry is required (KRIO_REQUIRE_ROOT_TESTS=1) but {why}"
                );
            }
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn prepare_registry() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("the test is not running as root".into());
    }
    const PROBE: &str = "/v2/registry.k8s.io/e2e-test-images/busybox/manifests/1.29-2";
    if http_status(PROBE) == Some(200) {
        // A registry with the test images already answers.
        return Ok(());
    }
    if !Path::new("/usr/bin/docker-registry").exists() {
        return Err(
            "/usr/bin/docker-registry is not installed (apt-get install docker-registry)".into(),
        );
    }
    let script = repo_root().join("conformance/registry.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("start")
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} start failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if http_status(PROBE) != Some(200) {
        // Build the test images if the tool is at hand.
        if let Some(bin) = std::env::var_os("KRIO_TESTIMAGES_BIN") {
            let st = std::process::Command::new(&bin)
                .args(["build", "--registry", REGISTRY])
                .status()
                .map_err(|e| format!("running {bin:?}: {e}"))?;
            if !st.success() {
                return Err(format!("{bin:?} build failed"));
            }
        }
        if http_status("/v2/registry.k8s.io/e2e-test-images/busybox/manifests/1.29-2") != Some(200)
        {
            return Err(format!(
                "the test images are not in the registry at {REGISTRY}; run \
                 `cargo run -p krio-testimages -- build --registry {REGISTRY}` (or set KRIO_TESTIMAGES_BIN)"
            ));
        }
    }
    Ok(())
}

/// The status code of a HEAD to the local registry.
pub fn http_status(path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(REGISTRY).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        s,
        "HEAD {path} HTTP/1.1\r\nHost: {REGISTRY}\r\nAccept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.split(' ').nth(1)?.parse().ok()
}

/// A store in a temp dir, with its own database and registries.conf.
pub struct TestStore {
    /// Holds everything.
    pub dir: tempfile::TempDir,
    /// The store.
    pub store: ImageStore,
}

impl TestStore {
    /// A new store using `registries_conf`.
    pub fn new(registries_conf: &str) -> Self {
        Self::with_options(registries_conf, |_| {})
    }

    /// A new store using `registries_conf`, its options changed by `f`.
    pub fn with_options(registries_conf: &str, f: impl FnOnce(&mut ImageStoreOptions)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("registries.conf"), registries_conf)
            .expect("write registries.conf");
        let store = open_store_with(dir.path(), f);
        Self { dir, store }
    }

    /// Reopens the store (a daemon restart).
    pub fn reopen(&mut self) {
        // The old handle must release the database file first.
        let placeholder = tempfile::tempdir().expect("tempdir");
        let tmp = open_store(placeholder.path());
        drop(std::mem::replace(&mut self.store, tmp));
        self.store = open_store(self.dir.path());
    }

    /// The images dir.
    pub fn images_dir(&self) -> PathBuf {
        self.dir.path().join("images")
    }
}

/// Opens the store under `root` (`root/krio.redb`, `root/images`).
pub fn open_store(root: &Path) -> ImageStore {
    open_store_with(root, |_| {})
}

/// Opens the store under `root` (`root/krio.redb`, `root/images`,
/// `root/certs.d`), its options changed by `f`.
pub fn open_store_with(root: &Path, f: impl FnOnce(&mut ImageStoreOptions)) -> ImageStore {
    let db = Arc::new(redb::Database::create(root.join("krio.redb")).expect("open redb"));
    let mut opts = ImageStoreOptions::new(root.join("images"));
    opts.registries_conf = root.join("registries.conf");
    opts.auth_file = root.join("auth.json");
    opts.certs_dir = root.join("certs.d");
    opts.platform = krio_image::Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        variant: None,
    };
    opts.progress_timeout = std::time::Duration::from_secs(30);
    f(&mut opts);
    ImageStore::open(db, opts).expect("open store")
}

/// Entries (files and dirs) directly in `dir`.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
