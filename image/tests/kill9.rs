//! kill -9 in the middle of a pull, then a restart: the store is
//! consistent (no partial blob or layer, no record of the half image, the
//! images pulled before are whole). The pull runs in a child process (this
//! test binary re-executed on `kill9_child`). Needs root: SKIPPED
//! otherwise, failed when KRIO_REQUIRE_ROOT_TESTS=1.

mod common;

use common::fake::{Routes, multi_image, serve, tar_with_file};
use common::{entries, open_store};
use std::path::Path;
use std::time::{Duration, Instant};

fn conf(addr: &str) -> String {
    format!("[[registry]]\nlocation = \"{addr}\"\ninsecure = true\n")
}

/// The child: pulls `KRIO_KILL9_REF` into the store at `KRIO_KILL9_DIR`
/// and never returns (the registry stalls). A no-op in normal runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_child() {
    let (Some(dir), Some(reference)) = (
        std::env::var_os("KRIO_KILL9_DIR"),
        std::env::var("KRIO_KILL9_REF").ok(),
    ) else {
        return;
    };
    let store = open_store(Path::new(&dir));
    let r = store.pull(&reference, None).await;
    panic!("the stalled pull returned: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_pull_then_restart_is_consistent() {
    if !rustix::process::geteuid().is_root() {
        if std::env::var("KRIO_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
            panic!(
                "kill9_mid_pull_then_restart_is_consistent needs root (KRIO_REQUIRE_ROOT_TESTS=1)"
            );
        }
        eprintln!("SKIPPED kill9_mid_pull_then_restart_is_consistent: needs root");
        return;
    }
    let mut routes: Routes = multi_image("test/good", &[(tar_with_file("good", 10), None)]);
    routes.extend(multi_image(
        "test/img",
        &[
            (tar_with_file("one", 4096), None),
            (tar_with_file("two", 256 * 1024), Some(100_000)),
        ],
    ));
    let addr = serve(routes).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("registries.conf"), conf(&addr)).expect("write");
    let good = {
        let store = open_store(dir.path());
        store
            .pull(&format!("{addr}/test/good:v1"), None)
            .await
            .expect("pull good")
    };
    let images = dir.path().join("images");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "kill9_child", "--nocapture", "--test-threads=1"])
        .env("KRIO_KILL9_DIR", dir.path())
        .env("KRIO_KILL9_REF", format!("{addr}/test/img:v1"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn child");
    // Wait until the first layer is in place and the second is half
    // downloaded.
    let started = Instant::now();
    loop {
        let partial = entries(&images.join("tmp")).iter().any(|n| {
            std::fs::metadata(images.join("tmp").join(n)).is_ok_and(|m| m.len() >= 50_000)
        });
        if partial && entries(&images.join("layers")).len() >= 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "child made no progress"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    assert!(
        !entries(&images.join("tmp")).is_empty(),
        "the kill left partial files"
    );
    let store = open_store(dir.path());
    assert!(
        entries(&images.join("tmp")).is_empty(),
        "partial files cleaned"
    );
    let list = store.list().expect("list");
    assert_eq!(list, vec![good.clone()], "only the whole image is listed");
    assert_eq!(
        entries(&images.join("layers")).len(),
        good.layers.len(),
        "orphan layer collected"
    );
    assert_eq!(
        entries(&images.join("blobs/sha256")).len(),
        1,
        "only the good config blob"
    );
}
