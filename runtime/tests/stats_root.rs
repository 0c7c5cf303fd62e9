//! `krio_runtime::stats` against the real kernel: a cgroup of our own with
//! a process that burns CPU or holds memory, a network namespace made with
//! `ip netns add`, a tmpfs mounted inside a writable layer.
//!
//! Root only: SKIPPED (and passed) when not root, unless
//! `KRIO_REQUIRE_ROOT_TESTS=1`, which turns a skip into a failure. Every
//! cgroup, namespace and mount is removed by a guard, also when a test
//! fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use krio_runtime::stats::{
    CgroupDirs, CgroupStats, CpuRate, CpuStats, MemoryStats, PidsStats, fs_usage, netns_stats,
    parse_mountinfo,
};

/// Whether the root-only tests can run here; prints why not.
fn can_run(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let reason = "not running as root";
    if std::env::var("KRIO_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("{test}: KRIO_REQUIRE_ROOT_TESTS=1 but {reason}");
    }
    println!("SKIPPED {test}: {reason}");
    false
}

/// A name no other test run uses.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}{}{:04}",
        std::process::id() % 100_000,
        nanos % 10_000
    )
}

/// A cgroup made for one test: v1 `memory`, `cpuacct` and `pids` when the
/// memory controller is on v1 (legacy or hybrid hosts), else one directory
/// in the unified hierarchy. Drop kills everything in it and removes it.
struct TestCgroup {
    /// `/<name>`, the OCI cgroupsPath of this cgroup.
    cgroups_path: String,
    dirs: Vec<PathBuf>,
    unified: bool,
    children: Vec<Child>,
}

impl TestCgroup {
    fn create() -> Self {
        let name = unique("krio-stats-");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let mounts = parse_mountinfo(&mountinfo);
        let v1_mount = |controller: &str| {
            mounts
                .iter()
                .find(|m| m.fs_type == "cgroup" && m.super_options.iter().any(|o| o == controller))
                .map(|m| m.mount_point.clone())
        };
        let mut cg = Self {
            cgroups_path: format!("/{name}"),
            dirs: Vec::new(),
            unified: false,
            children: Vec::new(),
        };
        if v1_mount("memory").is_some() {
            for c in ["memory", "cpuacct", "pids"] {
                if let Some(m) = v1_mount(c) {
                    let dir = m.join(&name);
                    if !cg.dirs.contains(&dir) {
                        std::fs::create_dir(&dir).expect("mkdir v1 cgroup");
                        cg.dirs.push(dir);
                    }
                }
            }
            // Hybrid: also join the unified hierarchy, as runc does, so
            // that v2 `cpu.stat` can be checked against v1 `cpuacct`.
            if let Some(m) = mounts.iter().find(|m| m.fs_type == "cgroup2") {
                let dir = m.mount_point.join(&name);
                if std::fs::create_dir(&dir).is_ok() {
                    cg.dirs.push(dir);
                }
            }
        } else {
            let m = mounts
                .iter()
                .find(|m| m.fs_type == "cgroup2")
                .expect("no cgroup file system mounted");
            // The root's subtree_control usually has these already.
            let _ = std::fs::write(
                m.mount_point.join("cgroup.subtree_control"),
                "+cpu +memory +pids",
            );
            let dir = m.mount_point.join(&name);
            std::fs::create_dir(&dir).expect("mkdir v2 cgroup");
            cg.dirs.push(dir);
            cg.unified = true;
        }
        cg
    }

    /// Starts `sh -c script` with stdin piped and moves it into the
    /// cgroup; the script should `read` a line (written to the returned
    /// stdin) before it does anything that must be accounted here.
    fn spawn(&mut self, script: &str) -> ChildStdin {
        let mut child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sh");
        for dir in &self.dirs {
            std::fs::write(dir.join("cgroup.procs"), child.id().to_string())
                .expect("move into cgroup");
        }
        let stdin = child.stdin.take().expect("stdin");
        self.children.push(child);
        stdin
    }

    /// Writes a memory limit (bytes) to the cgroup.
    fn limit_memory(&self, bytes: u64) {
        let (dir, file) = if self.unified {
            (&self.dirs[0], "memory.max")
        } else {
            (
                self.dirs
                    .iter()
                    .find(|d| d.join("memory.limit_in_bytes").exists())
                    .expect("memory dir"),
                "memory.limit_in_bytes",
            )
        };
        std::fs::write(dir.join(file), bytes.to_string()).expect("set memory limit");
    }

    fn stats_dirs(&self) -> CgroupDirs {
        let by_path = CgroupDirs::for_cgroups_path(&self.cgroups_path).expect("for_cgroups_path");
        if let Some(child) = self.children.first() {
            let by_pid = CgroupDirs::for_pid(child.id()).expect("for_pid");
            for c in ["memory", "cpuacct", "pids"] {
                if by_path.v1(c).is_some_and(Path::is_dir) {
                    assert_eq!(by_pid.v1(c), by_path.v1(c), "{c}");
                }
            }
            if self.unified {
                assert_eq!(by_pid.unified(), by_path.unified());
            }
        }
        by_path
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in self.dirs.iter().rev() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn root_cpu_stats_rise_while_burning() {
    if !can_run("root_cpu_stats_rise_while_burning") {
        return;
    }
    let mut cg = TestCgroup::create();
    let mut go = cg.spawn("read x; while :; do :; done");
    go.write_all(b"go\n").expect("start the loop");
    let dirs = cg.stats_dirs();
    let rate = CpuRate::with_min_window(Duration::ZERO);
    let t0 = Instant::now();
    let u0 = CpuStats::read(&dirs)
        .usage_core_nanoseconds
        .expect("cpu usage");
    assert_eq!(rate.sample("burner", t0, u0), None);
    std::thread::sleep(Duration::from_millis(1500));
    let t1 = Instant::now();
    let u1 = CpuStats::read(&dirs)
        .usage_core_nanoseconds
        .expect("cpu usage");
    let nano_cores = rate.sample("burner", t1, u1).expect("rate");
    println!("cpu: {u0} -> {u1} ns, {nano_cores} nano cores");
    // The machine may be busy: a tenth of a core is plenty to tell.
    assert!(u1 - u0 >= 150_000_000, "{u0} -> {u1}");
    assert!(nano_cores >= 100_000_000, "{nano_cores}");
    let pids = PidsStats::read(&dirs);
    assert_eq!(pids.current, Some(1), "{pids:?}");
    if !cg.unified && dirs.unified().is_some_and(Path::is_dir) {
        // Hybrid host: the unified hierarchy's `cpu.stat` of the same
        // cgroup counts the same CPU time.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let v2_only =
            CgroupDirs::from_proc_cgroup(&format!("0::{}\n", cg.cgroups_path), &mountinfo);
        let v1 = CpuStats::read(&dirs)
            .usage_core_nanoseconds
            .expect("v1 usage");
        let v2 = CpuStats::read(&v2_only)
            .usage_core_nanoseconds
            .expect("v2 usage");
        println!("cpu: v1 cpuacct {v1} ns, v2 cpu.stat {v2} ns");
        // `usage_usec` is truncated to microseconds; the two reads are
        // a moment apart.
        assert!(
            v2 >= 150_000_000 && v2.abs_diff(v1) < 500_000_000,
            "v1 {v1} v2 {v2}"
        );
    }
}

#[test]
fn root_memory_stats_track_an_allocation() {
    if !can_run("root_memory_stats_track_an_allocation") {
        return;
    }
    const LIMIT: u64 = 256 << 20;
    const HELD: u64 = 40 << 20;
    let mut cg = TestCgroup::create();
    cg.limit_memory(LIMIT);
    // `tail` keeps the whole newline-free input, then blocks writing it to
    // a `sleep` that never reads: 50 MiB held until killed.
    let mut go = cg.spawn("read x; head -c 50m /dev/zero | tail | sleep 1000");
    let dirs = cg.stats_dirs();
    let before = MemoryStats::read(&dirs);
    go.write_all(b"go\n").expect("start the allocation");
    let m = poll("50 MiB to be charged", Duration::from_secs(30), || {
        let m = MemoryStats::read(&dirs);
        (m.rss_bytes? >= HELD).then_some(m)
    });
    println!("memory before: {before:?}\nmemory after: {m:?}");
    let usage = m.usage_bytes.expect("usage");
    let ws = m.working_set_bytes.expect("working set");
    assert!(usage >= HELD && ws >= HELD && ws <= usage, "{m:?}");
    assert!(usage > before.usage_bytes.unwrap_or(0), "{before:?} {m:?}");
    assert_eq!(m.limit_bytes, Some(LIMIT));
    let available = m.available_bytes.expect("available");
    assert!(available <= LIMIT - HELD, "{m:?}");
    assert!(m.page_faults.is_some_and(|f| f > 0), "{m:?}");
    assert_eq!(m.oom_kills.unwrap_or(0), 0);
    let all = CgroupStats::read(&dirs);
    assert!(all.pids.current.is_some_and(|n| n >= 3), "{all:?}");
}

/// A network namespace from `ip netns add`, deleted on drop, with a veth
/// pair whose namespace end is `eth0`.
struct TestNetns {
    name: String,
    veth: String,
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn root_netns_stats_of_a_new_namespace() {
    if !can_run("root_netns_stats_of_a_new_namespace") {
        return;
    }
    let ns = TestNetns {
        name: unique("krst"),
        veth: unique("krsv"),
    };
    assert!(ip(&["netns", "add", &ns.name]), "ip netns add {}", ns.name);
    let pin = PathBuf::from("/run/netns").join(&ns.name);
    let has_veth = ip(&[
        "link", "add", &ns.veth, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
    ]);
    if !has_veth {
        println!("note: veth pairs unavailable, checking lo only");
    }
    assert!(ip(&["-n", &ns.name, "link", "set", "lo", "up"]));

    // Traffic on the namespace's lo, sent from a thread inside it.
    let pin2 = pin.clone();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&pin2).expect("open netns");
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = sock.local_addr().expect("addr");
        for _ in 0..10 {
            sock.send_to(&[7u8; 1000], to).expect("send");
        }
    })
    .join()
    .expect("traffic thread");

    let own_ns = std::fs::read_link("/proc/thread-self/ns/net").expect("own netns");
    let stats = netns_stats(&pin).expect("netns_stats");
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").expect("own netns"),
        own_ns,
        "the calling thread changed namespace"
    );
    println!("{stats:?}");
    let lo = stats.interface("lo").expect("lo");
    assert!(lo.rx_bytes >= 10_000 && lo.tx_bytes >= 10_000, "{lo:?}");
    assert!(lo.rx_packets >= 10, "{lo:?}");
    if has_veth {
        assert_eq!(stats.interfaces.len(), 2, "{stats:?}");
        assert_eq!(
            stats.default_interface().map(|i| i.name.as_str()),
            Some("eth0")
        );
    } else {
        assert_eq!(stats.default_interface(), None);
    }
    // A file that is not a network namespace.
    assert!(netns_stats(Path::new("/proc/self/ns/uts")).is_err());
}

/// A tmpfs mounted under a temp dir, unmounted on drop.
struct TestMount(PathBuf);

impl Drop for TestMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn root_fs_usage_stats_do_not_cross_mounts() {
    if !can_run("root_fs_usage_stats_do_not_cross_mounts") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("file"), vec![1u8; 64 * 1024]).expect("write");
    let sub = dir.path().join("mnt");
    std::fs::create_dir(&sub).expect("mkdir");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "krio-stats-test"])
        .arg(&sub)
        .status()
        .expect("mount");
    assert!(status.success(), "mount tmpfs");
    let _mount = TestMount(sub.clone());
    std::fs::write(sub.join("big"), vec![1u8; 4 << 20]).expect("write into tmpfs");
    for i in 0..20 {
        std::fs::write(sub.join(format!("f{i}")), b"x").expect("write into tmpfs");
    }
    let u = fs_usage(dir.path(), 10_000).expect("fs_usage");
    // The temp dir and `file`; the tmpfs and everything in it are not ours.
    assert_eq!(u.inodes_used, 2, "{u:?}");
    assert!(u.used_bytes < 1 << 20, "{u:?}");
}
