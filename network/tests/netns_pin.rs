//! Root-only tests of pinned network namespaces. Without root each test
//! prints why it is skipped and returns; with `KRIO_REQUIRE_ROOT_TESTS=1` a
//! skip is a failure instead.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use krio_network::netns::{NetnsError, create_pinned, is_netns, remove_pinned};

fn skipped(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    let reason = "not running as root (needs CAP_SYS_ADMIN)";
    if std::env::var_os("KRIO_REQUIRE_ROOT_TESTS").is_some() {
        panic!("{test}: cannot run ({reason}) but KRIO_REQUIRE_ROOT_TESTS is set");
    }
    // Straight to the process's stderr: libtest captures print macros.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
    true
}

fn ns_inode(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat netns").ino()
}

/// Removes the pin even if the test fails.
struct Pin<'a>(&'a Path);

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let _ = remove_pinned(self.0);
    }
}

#[test]
fn pin_creates_a_new_netns_without_moving_the_caller() {
    if skipped("pin_creates_a_new_netns_without_moving_the_caller") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pin = dir.path().join("run/ns/net/sandbox-1");
    let _guard = Pin(&pin);
    let before = ns_inode(Path::new("/proc/thread-self/ns/net"));

    create_pinned(&pin).expect("pin");

    assert!(is_netns(&pin));
    assert_ne!(ns_inode(&pin), before, "pin is the host's netns");
    assert_eq!(
        ns_inode(Path::new("/proc/thread-self/ns/net")),
        before,
        "the calling thread changed netns"
    );
    let parent_mode = std::fs::metadata(pin.parent().expect("parent"))
        .expect("stat")
        .mode();
    assert_eq!(parent_mode & 0o777, 0o700);

    // The namespace is usable: only lo, and it is down.
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", pin.display()))
        .args(["ip", "-o", "link"])
        .output()
        .expect("nsenter");
    let links = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "nsenter: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:"), "{links}");

    // A second pin at the same path is refused; a second pin elsewhere is a
    // different namespace.
    assert!(matches!(create_pinned(&pin), Err(NetnsError::Exists(_))));
    let other = dir.path().join("run/ns/net/sandbox-2");
    let _guard2 = Pin(&other);
    create_pinned(&other).expect("second pin");
    assert_ne!(ns_inode(&other), ns_inode(&pin));

    remove_pinned(&pin).expect("remove");
    assert!(!pin.exists());
    assert!(!is_netns(&pin));
    remove_pinned(&pin).expect("remove again");
    remove_pinned(&other).expect("remove other");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&dir.path().display().to_string()),
        "pins still mounted"
    );
}

#[test]
fn pins_from_many_threads_are_all_distinct() {
    if skipped("pins_from_many_threads_are_all_distinct") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pins: Vec<_> = (0..8).map(|i| dir.path().join(format!("ns{i}"))).collect();
    let _guards: Vec<_> = pins.iter().map(|p| Pin(p)).collect();
    std::thread::scope(|s| {
        for pin in &pins {
            s.spawn(move || create_pinned(pin).expect("pin"));
        }
    });
    let mut inodes: Vec<u64> = pins.iter().map(|p| ns_inode(p)).collect();
    inodes.sort();
    inodes.dedup();
    assert_eq!(inodes.len(), pins.len());
    for pin in &pins {
        remove_pinned(pin).expect("remove");
    }
}
