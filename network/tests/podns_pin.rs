//! Root-only: a pod's net, IPC and UTS namespaces with hostname and sysctls.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use krio_network::podns::{self, Kind, PodNsRequest};

fn skipped(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    let reason = "not running as root (needs CAP_SYS_ADMIN)";
    if std::env::var_os("KRIO_REQUIRE_ROOT_TESTS").is_some() {
        panic!("{test}: cannot run ({reason}) but KRIO_REQUIRE_ROOT_TESTS is set");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
    true
}

/// Removes the pins even when the test fails.
struct Pins(Vec<PathBuf>);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = podns::remove(&self.0);
    }
}

fn nsenter(flag: &str, pin: &Path, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--{flag}={}", pin.display()))
        .args(args)
        .output()
        .expect("run nsenter");
    assert!(
        out.status.success(),
        "nsenter {flag} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn creates_pins_sets_hostname_and_sysctls_and_removes_cleanly() {
    if skipped("creates_pins_sets_hostname_and_sysctls_and_removes_cleanly") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let host_uts = std::fs::metadata("/proc/thread-self/ns/uts")
        .expect("stat")
        .ino();
    let req = PodNsRequest {
        dir: dir.path().join("ns"),
        pod_id: "0123abcd".into(),
        kinds: vec![Kind::Net, Kind::Ipc, Kind::Uts],
        hostname: "krio-pod-test".into(),
        sysctls: vec![
            ("net.ipv4.ip_unprivileged_port_start".into(), "100".into()),
            ("kernel.shm_rmid_forced".into(), "1".into()),
        ],
    };
    let pins = podns::create(&req).expect("create pod namespaces");
    let guard = Pins(pins.iter().map(|(_, p)| p.clone()).collect());
    assert_eq!(pins.len(), 3);
    for (kind, pin) in &pins {
        assert_eq!(
            pin,
            &dir.path().join("ns").join(kind.name()).join("0123abcd")
        );
        assert!(
            krio_network::netns::is_netns(pin),
            "{} is an nsfs pin",
            pin.display()
        );
    }
    assert_eq!(
        std::fs::metadata("/proc/thread-self/ns/uts")
            .expect("stat")
            .ino(),
        host_uts,
        "the caller stays in its namespaces"
    );
    assert_eq!(nsenter("uts", &pins[2].1, &["hostname"]), "krio-pod-test");
    assert_eq!(
        nsenter(
            "net",
            &pins[0].1,
            &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]
        ),
        "100"
    );
    assert_eq!(
        nsenter(
            "ipc",
            &pins[1].1,
            &["cat", "/proc/sys/kernel/shm_rmid_forced"]
        ),
        "1"
    );

    podns::remove(&guard.0).expect("remove");
    for (_, pin) in &pins {
        assert!(!pin.exists(), "{} removed", pin.display());
    }
    podns::remove(&guard.0).expect("remove again is fine");
}

#[test]
fn a_failing_sysctl_leaves_nothing_behind() {
    if skipped("a_failing_sysctl_leaves_nothing_behind") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let req = PodNsRequest {
        dir: dir.path().join("ns"),
        pod_id: "feed".into(),
        kinds: vec![Kind::Net, Kind::Uts],
        hostname: "x".into(),
        sysctls: vec![("net.ipv4.no_such_key".into(), "1".into())],
    };
    let err = podns::create(&req).expect_err("unknown sysctl");
    assert!(err.to_string().contains("net.ipv4.no_such_key"), "{err}");
    assert!(!dir.path().join("ns/net/feed").exists());
    assert!(!dir.path().join("ns/uts/feed").exists());
}
