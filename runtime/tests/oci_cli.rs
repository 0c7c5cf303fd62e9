//! `OciCli` against fake runtimes (shell scripts) and, when present, the
//! real runc.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use krio_runtime::oci::{OciCli, OciError, OciRuntime, Status};

/// Writes an executable fake runtime: it records its arguments in
/// `args` beside it, finds `--log FILE`, then runs `body`.
fn fake(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("fake-runtime");
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$(dirname \"$0\")/args\"\nlog=\nprev=\nfor a in \"$@\"; do [ \"$prev\" = --log ] && log=$a; prev=$a; done\n{body}\n"
    );
    std::fs::write(&path, script).expect("write fake");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn args(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("args"))
        .expect("args")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn cli(dir: &Path, body: &str) -> OciCli {
    OciCli::new(fake(dir, body))
        .with_root(Some(dir.join("root")))
        .with_log_dir(dir)
}

#[test]
fn passes_root_and_json_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = cli(dir.path(), "exit 0");
    rt.kill("c1", 15, true).expect("kill");
    let a = args(dir.path());
    assert_eq!(a[0], "--root");
    assert_eq!(a[1], dir.path().join("root").to_string_lossy());
    assert_eq!(a[2], "--log");
    assert_eq!(
        &a[4..],
        ["--log-format", "json", "kill", "--all", "c1", "15"]
    );
    // The per-call log file is gone afterwards.
    assert!(!Path::new(&a[3]).exists());
    rt.delete("c1", true).expect("delete");
    assert_eq!(&args(dir.path())[6..], ["delete", "--force", "c1"]);
}

#[test]
fn failure_carries_the_runtimes_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = cli(
        dir.path(),
        r#"echo '{"level":"error","msg":"cannot start: permission denied by policy","time":"t"}' >> "$log"; echo 'stderr words' >&2; exit 1"#,
    );
    let err = rt.start("c1").expect_err("must fail");
    let text = err.to_string();
    assert!(matches!(err, OciError::Failed { .. }), "{err:?}");
    assert!(
        text.contains("cannot start: permission denied by policy"),
        "{text}"
    );
    assert!(text.contains("stderr words"), "{text}");
}

#[test]
fn not_found_and_unsupported_are_typed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = cli(dir.path(), "echo 'container does not exist' >&2; exit 1");
    assert!(matches!(rt.state("c9"), Err(OciError::NotFound { .. })));
    let rt = cli(
        dir.path(),
        "echo \"No help topic for 'features'\" >&2; exit 3",
    );
    let err = rt.features().expect_err("unsupported");
    assert!(matches!(err, OciError::Unsupported { .. }), "{err:?}");
}

#[test]
fn state_and_features_parse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = cli(
        dir.path(),
        r#"case "$*" in *state*) echo '{"ociVersion":"1.0.2","id":"c1","pid":42,"status":"running","bundle":"/b","rootfs":"/b/rootfs"}';; *features*) echo '{"mountOptions":["ro","rro"],"linux":{"namespaces":["pid","user"]}}';; esac"#,
    );
    let st = rt.state("c1").expect("state");
    assert_eq!(st.status, Status::Running);
    assert_eq!(st.pid, Some(42));
    assert_eq!(st.bundle, PathBuf::from("/b"));
    let f = rt.features().expect("features");
    assert!(f.recursive_read_only_mounts && f.user_namespaces);
}

#[test]
fn update_sends_resources_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = cli(
        dir.path(),
        r#"prev=; for a in "$@"; do [ "$prev" = --resources ] && cp "$a" "$(dirname "$0")/res"; prev=$a; done"#,
    );
    rt.update("c1", br#"{"memory":{"limit":1000}}"#)
        .expect("update");
    let res = std::fs::read_to_string(dir.path().join("res")).expect("res");
    assert_eq!(res, r#"{"memory":{"limit":1000}}"#);
}

#[test]
fn hung_runtime_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = cli(dir.path(), "exec sleep 30").with_timeout(Duration::from_millis(300));
    let start = Instant::now();
    let err = rt.pause("c1").expect_err("timeout");
    assert!(matches!(err, OciError::Timeout { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn missing_binary_is_a_spawn_error() {
    let rt = OciCli::new("/nonexistent/runtime");
    assert!(matches!(rt.start("x"), Err(OciError::Spawn { .. })));
}

#[test]
fn real_runc_features_and_unknown_container() {
    let runc = Path::new("/usr/sbin/runc");
    if !runc.exists() {
        println!("SKIPPED: /usr/sbin/runc is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = OciCli::new(runc)
        .with_root(Some(dir.path().join("root")))
        .with_log_dir(dir.path());
    let f = rt.features().expect("runc features");
    assert!(f.recursive_read_only_mounts, "{f:?}");
    assert!(f.user_namespaces, "{f:?}");
    let err = rt.state("krio-no-such-container").expect_err("unknown");
    assert!(matches!(err, OciError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("krio-no-such-container"), "{err}");
}

#[test]
fn real_crun_features_is_typed() {
    let crun = Path::new("/usr/bin/crun");
    if !crun.exists() {
        println!("SKIPPED: /usr/bin/crun is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = OciCli::new(crun).with_log_dir(dir.path());
    // crun 1.8 has no `features`; newer ones do.
    match rt.features() {
        Ok(f) => println!("crun features: {f:?}"),
        Err(OciError::Unsupported { message, .. }) => {
            println!("crun has no features command: {message}")
        }
        Err(e) => panic!("unexpected error: {e:?}"),
    }
}
