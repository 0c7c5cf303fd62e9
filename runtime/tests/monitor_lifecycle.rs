//! `krio-monitor` end to end with runc and a busybox bundle (root only).
//!
//! Each test builds a bundle in a temp dir from the static busybox, runs its
//! own runc root, and cleans up in `Drop` (runc delete --force, the cgroup
//! dirs, the temp dir) even when it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use krio_runtime::monitor::{
    self, AttachClient, AttachEvent, ExitInfo, MonitorConfig, MonitorError,
};

const RUNC: &str = "/usr/sbin/runc";
const BUSYBOX: &str = "/bin/busybox";
const MONITOR: &str = env!("CARGO_BIN_EXE_krio-monitor");

/// The monitor binary: `KRIO_TEST_MONITOR_BIN` (e.g. a release build, to
/// measure its memory) or the one cargo built for this test.
fn monitor_bin() -> PathBuf {
    std::env::var_os("KRIO_TEST_MONITOR_BIN").map_or_else(|| PathBuf::from(MONITOR), PathBuf::from)
}
const WAIT: Duration = Duration::from_secs(30);

/// Whether the root-only tests can run here; prints why not.
fn can_run(test: &str) -> bool {
    let require = std::env::var("KRIO_REQUIRE_ROOT_TESTS").is_ok_and(|v| v == "1");
    let reason = if !nix::unistd::geteuid().is_root() {
        Some("not running as root".to_owned())
    } else if !Path::new(RUNC).exists() {
        Some(format!("{RUNC} is missing (apt-get install runc)"))
    } else if !Path::new(BUSYBOX).exists() {
        Some(format!(
            "{BUSYBOX} is missing (apt-get install busybox-static)"
        ))
    } else {
        None
    };
    match reason {
        None => true,
        Some(reason) if require => panic!("{test}: KRIO_REQUIRE_ROOT_TESTS=1 but {reason}"),
        Some(reason) => {
            println!("SKIPPED {test}: {reason}");
            false
        }
    }
}

/// Copies busybox into `rootfs/bin`, with the shared libraries it needs
/// when it is the dynamic build (`busybox` and `busybox-static` conflict
/// in Debian: either may be installed).
fn install_busybox(rootfs: &Path) {
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir rootfs/bin");
    std::fs::copy(BUSYBOX, bin.join("busybox")).expect("copy busybox");
    let out = Command::new("ldd").arg(BUSYBOX).output().expect("ldd");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(lib) = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(Path::new)
        else {
            continue;
        };
        let target = rootfs.join(lib.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir lib");
        std::fs::copy(lib, &target).expect("copy lib");
    }
}

struct Opts {
    args: Vec<String>,
    tty: bool,
    stdin: bool,
    stdin_once: bool,
    memory_limit: Option<i64>,
    log: bool,
}

impl Opts {
    fn sh(script: &str) -> Self {
        Self {
            args: vec!["sh".into(), "-c".into(), script.into()],
            tty: false,
            stdin: false,
            stdin_once: false,
            memory_limit: None,
            log: true,
        }
    }
}

/// One container's bundle, runc root, state dir and log dir.
struct Fixture {
    id: String,
    dir: tempfile::TempDir,
    config: MonitorConfig,
}

impl Fixture {
    fn new(name: &str, opts: Opts) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "krio-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle = dir.path().join("bundle");
        install_busybox(&bundle.join("rootfs"));
        let bin = bundle.join("rootfs/bin");
        for tool in [
            "sh", "cat", "echo", "head", "tr", "tail", "sleep", "printf", "yes", "ls",
        ] {
            std::os::unix::fs::symlink("busybox", bin.join(tool)).expect("symlink");
        }
        let out = Command::new(RUNC)
            .args(["spec", "--bundle"])
            .arg(&bundle)
            .output()
            .expect("runc spec");
        assert!(out.status.success(), "runc spec: {out:?}");
        let path = bundle.join("config.json");
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read spec")).expect("spec json");
        spec["process"]["args"] = serde_json::json!(opts.args);
        spec["process"]["terminal"] = serde_json::json!(opts.tty);
        // One cgroup level per test: a shared parent could be removed by
        // one test's cleanup while runc creates another test's cgroup in it.
        spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{id}"));
        if let Some(limit) = opts.memory_limit {
            spec["linux"]["resources"]["memory"] =
                serde_json::json!({"limit": limit, "swap": limit});
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&spec).expect("json")).expect("write spec");
        std::fs::create_dir(dir.path().join("logs")).expect("mkdir logs");

        let mut config = MonitorConfig::new(&id, &bundle, RUNC, dir.path().join("state"));
        config.runtime_root = Some(dir.path().join("runc-root"));
        if opts.log {
            config.log_path = dir.path().join("logs/c.log");
        }
        config.tty = opts.tty;
        config.stdin = opts.stdin;
        config.stdin_once = opts.stdin_once;
        Self { id, dir, config }
    }

    fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }

    fn runc(&self, args: &[&str]) -> std::process::Output {
        Command::new(RUNC)
            .arg("--root")
            .arg(self.dir.path().join("runc-root"))
            .args(args)
            .output()
            .expect("runc")
    }

    fn spawn(&self) -> monitor::Spawned {
        monitor::spawn_monitor(&monitor_bin(), &self.config).expect("spawn_monitor")
    }

    fn start(&self) {
        let out = self.runc(&["start", &self.id]);
        assert!(out.status.success(), "runc start: {out:?}");
    }

    fn wait_exit(&self) -> ExitInfo {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(info) = monitor::read_exit(self.state_dir()).expect("read_exit") {
                return info;
            }
            assert!(Instant::now() < deadline, "no exit file after {WAIT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.config.log_path).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "log never contained {needle:?}: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.runc(&["delete", "--force", &self.id]);
        if let Ok(pid) = std::fs::read_to_string(self.state_dir().join("monitor.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let _ = std::fs::remove_dir(h.path().join(&self.id));
            }
        }
    }
}

/// A parsed CRI log record.
#[derive(Debug, PartialEq)]
struct Record {
    stream: String,
    tag: String,
    content: String,
}

fn records(text: &str) -> Vec<Record> {
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let ts = parts.next().expect("timestamp");
            assert_valid_timestamp(ts);
            Record {
                stream: parts.next().expect("stream").to_owned(),
                tag: parts.next().expect("tag").to_owned(),
                content: parts.next().expect("content").to_owned(),
            }
        })
        .collect()
}

fn assert_valid_timestamp(ts: &str) {
    let b = ts.as_bytes();
    let ok = b.len() == 30
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[29] == b'Z'
        && ts[..4].parse::<u32>().is_ok_and(|y| y >= 2024)
        && ts[20..29].bytes().all(|c| c.is_ascii_digit());
    assert!(ok, "bad timestamp {ts:?}");
}

fn rec(stream: &str, tag: &str, content: &str) -> Record {
    Record {
        stream: stream.into(),
        tag: tag.into(),
        content: content.into(),
    }
}

fn status_field(pid: i32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

#[test]
fn lifecycle_exit_code_log_and_parentage() {
    if !can_run("lifecycle_exit_code_log_and_parentage") {
        return;
    }
    let f = Fixture::new("life", Opts::sh("echo out; echo err >&2; exit 3"));
    let spawned = f.spawn();
    assert!(spawned.pid > 0);
    let monitor_pid = spawned.monitor_pid.expect("monitor.pid");
    // The container's parent is the monitor, and the monitor is not ours.
    assert_eq!(
        status_field(spawned.pid, "PPid"),
        Some(monitor_pid.to_string())
    );
    let me = std::process::id().to_string();
    assert_ne!(status_field(monitor_pid, "PPid"), Some(me));
    let rss = status_field(monitor_pid, "VmRSS").expect("VmRSS");
    let anon = status_field(monitor_pid, "RssAnon").unwrap_or_default();
    let file = status_field(monitor_pid, "RssFile").unwrap_or_default();
    println!(
        "krio-monitor {} RSS with a created container: {rss} (anon {anon}, file {file})",
        monitor_bin().display()
    );
    // The monitor holds no fd other than its own: the container's stdio
    // pipes, sockets, signalfd, log and std streams.
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{monitor_pid}/fd"))
        .expect("fds")
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!("{}->{}", e.file_name().to_string_lossy(), target.display())
        })
        .collect();
    println!("krio-monitor fds: {fds:?}");
    assert!(fds.len() <= 12, "monitor has too many fds: {fds:?}");
    assert!(fds.contains(&"1->/dev/null".to_owned()), "{fds:?}");

    f.start();
    let exit = f.wait_exit();
    assert_eq!(exit.exit_code, 3);
    assert_eq!(exit.reason, "Error");
    assert!(!exit.oom_killed);
    assert!(exit.finished_at_ns > 0);
    let recs = records(&f.log_text());
    assert!(recs.contains(&rec("stdout", "F", "out")), "{recs:?}");
    assert!(recs.contains(&rec("stderr", "F", "err")), "{recs:?}");
    assert_eq!(recs.len(), 2, "{recs:?}");
    // The monitor exits after writing the exit file.
    let deadline = Instant::now() + WAIT;
    while Path::new(&format!("/proc/{monitor_pid}")).exists()
        && status_field(monitor_pid, "State").is_some_and(|s| !s.starts_with('Z'))
    {
        assert!(Instant::now() < deadline, "monitor still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn long_line_becomes_partial_records() {
    if !can_run("long_line_becomes_partial_records") {
        return;
    }
    let f = Fixture::new(
        "long",
        Opts::sh(r#"head -c 40000 /dev/zero | tr "\0" x; echo; printf tail"#),
    );
    f.spawn();
    f.start();
    assert_eq!(f.wait_exit().exit_code, 0);
    let recs = records(&f.log_text());
    let shape: Vec<(&str, usize)> = recs
        .iter()
        .map(|r| (r.tag.as_str(), r.content.len()))
        .collect();
    assert_eq!(
        shape,
        [
            ("P", 16384),
            ("P", 16384),
            ("F", 40000 - 2 * 16384),
            ("P", 4)
        ]
    );
    assert_eq!(recs[3].content, "tail");
}

#[test]
fn runtime_failure_reports_runcs_message() {
    if !can_run("runtime_failure_reports_runcs_message") {
        return;
    }
    let mut opts = Opts::sh("true");
    opts.args = vec!["/no-such-binary-krio".into()];
    let f = Fixture::new("fail", opts);
    let err = monitor::spawn_monitor(&monitor_bin(), &f.config).expect_err("must fail");
    let text = err.to_string();
    assert!(matches!(err, MonitorError::Create { .. }), "{err:?}");
    assert!(text.contains("/no-such-binary-krio"), "{text}");
    assert!(text.contains("no such file or directory"), "{text}");
    for name in ["attach", "ctl", "pid", "monitor.pid", "console.sock"] {
        assert!(!f.state_dir().join(name).exists(), "{name} left behind");
    }

    // A bundle that does not exist.
    let mut g = Fixture::new("fail2", Opts::sh("true"));
    g.config.bundle = g.dir.path().join("no-bundle");
    let err = monitor::spawn_monitor(&monitor_bin(), &g.config).expect_err("must fail");
    assert!(err.to_string().contains("no-bundle"), "{err}");
}

#[test]
fn tty_output_is_stdout() {
    if !can_run("tty_output_is_stdout") {
        return;
    }
    let mut opts = Opts::sh("echo hello-tty; echo to-stderr >&2");
    opts.tty = true;
    let f = Fixture::new("tty", opts);
    f.spawn();
    monitor::resize(f.state_dir(), 100, 40).expect("resize");
    f.start();
    assert_eq!(f.wait_exit().exit_code, 0);
    let recs = records(&f.log_text());
    assert!(recs.iter().all(|r| r.stream == "stdout"), "{recs:?}");
    assert!(
        recs.iter().any(|r| r.content.starts_with("hello-tty")),
        "{recs:?}"
    );
    assert!(
        recs.iter().any(|r| r.content.starts_with("to-stderr")),
        "{recs:?}"
    );
}

#[test]
fn attach_gets_output_and_delivers_stdin() {
    if !can_run("attach_gets_output_and_delivers_stdin") {
        return;
    }
    let mut opts = Opts::sh("cat; echo bye >&2");
    opts.stdin = true;
    let f = Fixture::new("attach", opts);
    f.spawn();
    let client = AttachClient::connect(f.state_dir()).expect("attach");
    f.start();
    client.send_stdin(b"ping\n").expect("stdin");
    let mut got = Vec::new();
    while !got.ends_with(b"ping\n") {
        match client.recv().expect("recv") {
            Some(AttachEvent::Stdout(d)) => got.extend_from_slice(&d),
            other => panic!("unexpected {other:?}"),
        }
    }
    client.close_stdin().expect("close stdin");
    let mut stderr = Vec::new();
    while let Some(ev) = client.recv().expect("recv") {
        if let AttachEvent::Stderr(d) = ev {
            stderr.extend_from_slice(&d);
        }
    }
    assert_eq!(stderr, b"bye\n");
    assert_eq!(f.wait_exit().exit_code, 0);
    let recs = records(&f.log_text());
    assert!(recs.contains(&rec("stdout", "F", "ping")), "{recs:?}");
}

#[test]
fn stdin_once_closes_when_first_client_leaves() {
    if !can_run("stdin_once_closes_when_first_client_leaves") {
        return;
    }
    let mut opts = Opts::sh("cat");
    opts.stdin = true;
    opts.stdin_once = true;
    let f = Fixture::new("once", opts);
    f.spawn();
    f.start();
    let client = AttachClient::connect(f.state_dir()).expect("attach");
    client.send_stdin(b"x\n").expect("stdin");
    f.wait_log("stdout F x");
    drop(client);
    assert_eq!(f.wait_exit().exit_code, 0);
}

#[test]
fn reopen_log_after_rotation_and_failure_creates_nothing() {
    if !can_run("reopen_log_after_rotation_and_failure_creates_nothing") {
        return;
    }
    let mut opts = Opts::sh("cat");
    opts.stdin = true;
    let f = Fixture::new("reopen", opts);
    f.spawn();
    f.start();
    let client = AttachClient::connect(f.state_dir()).expect("attach");
    client.send_stdin(b"one\n").expect("stdin");
    f.wait_log("stdout F one");
    let log = f.config.log_path.clone();
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).expect("rename");
    monitor::reopen_log(f.state_dir()).expect("reopen");
    client.send_stdin(b"two\n").expect("stdin");
    f.wait_log("stdout F two");
    assert!(!f.log_text().contains("one"));
    assert!(
        !std::fs::read_to_string(&rotated)
            .expect("rotated")
            .contains("two")
    );

    let logs: PathBuf = log.parent().expect("log dir").to_owned();
    std::fs::remove_dir_all(&logs).expect("rm logs");
    let err = monitor::reopen_log(f.state_dir()).expect_err("reopen must fail");
    assert!(matches!(err, MonitorError::Refused(_)), "{err:?}");
    assert!(err.to_string().contains("No such file"), "{err}");
    assert!(!logs.exists(), "reopen created the log dir");
    client.close_stdin().expect("close");
    assert_eq!(f.wait_exit().exit_code, 0);
    assert!(!logs.exists());
}

#[test]
fn keeps_draining_when_nobody_reads() {
    if !can_run("keeps_draining_when_nobody_reads") {
        return;
    }
    // No log file and no attach client: 2 MB must still flow.
    let mut opts = Opts::sh(r#"head -c 2000000 /dev/zero | tr "\0" y; echo; echo done >&2"#);
    opts.log = false;
    let f = Fixture::new("drain", opts);
    f.spawn();
    f.start();
    let exit = f.wait_exit();
    assert_eq!(exit.exit_code, 0);
    assert_eq!(exit.reason, "Completed");

    // And with a log: every byte is there.
    let f = Fixture::new(
        "drainlog",
        Opts::sh(r#"head -c 1100000 /dev/zero | tr "\0" y; echo"#),
    );
    f.spawn();
    f.start();
    assert_eq!(f.wait_exit().exit_code, 0);
    let total: usize = records(&f.log_text()).iter().map(|r| r.content.len()).sum();
    assert_eq!(total, 1_100_000);
}

#[test]
fn oom_kill_is_reported() {
    if !can_run("oom_kill_is_reported") {
        return;
    }
    let mut opts = Opts::sh("tail /dev/zero");
    opts.args = vec!["tail".into(), "/dev/zero".into()];
    opts.memory_limit = Some(8 << 20);
    let f = Fixture::new("oom", opts);
    let spawned = f.spawn();
    let cgroup =
        std::fs::read_to_string(format!("/proc/{}/cgroup", spawned.pid)).unwrap_or_default();
    if !cgroup.lines().any(|l| l.contains(":memory:"))
        && !Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    {
        println!("SKIPPED oom_kill_is_reported: no memory cgroup controller for the container");
        return;
    }
    f.start();
    let exit = f.wait_exit();
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!(exit.reason, "OOMKilled");
    assert_eq!(exit.exit_code, 137);
}

#[test]
fn real_runc_state_exec_pause_kill_delete() {
    use krio_runtime::oci::{ExecOptions, OciCli, OciRuntime, Status};
    if !can_run("real_runc_state_exec_pause_kill_delete") {
        return;
    }
    let f = Fixture::new("oci", Opts::sh("echo started; exec sleep 60"));
    let spawned = f.spawn();
    let rt = OciCli::new(RUNC)
        .with_root(Some(f.dir.path().join("runc-root")))
        .with_log_dir(f.dir.path());
    let st = rt.state(&f.id).expect("state");
    assert_eq!(st.status, Status::Created);
    assert_eq!(st.pid, Some(spawned.pid));
    rt.start(&f.id).expect("start");
    f.wait_log("stdout F started");
    assert_eq!(rt.state(&f.id).expect("state").status, Status::Running);

    let process = f.dir.path().join("process.json");
    std::fs::write(
        &process,
        r#"{"args":["ls","/proc/1/fd"],"cwd":"/","user":{"uid":0,"gid":0},"env":["PATH=/bin"]}"#,
    )
    .expect("process.json");
    let mut exec = rt
        .exec(
            &f.id,
            &ExecOptions {
                process_json: process,
                ..Default::default()
            },
        )
        .expect("exec");
    let out = exec.command.output().expect("run exec");
    assert!(out.status.success(), "exec: {} {out:?}", exec.log.message());
    // The container's init inherited nothing but its stdio.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n1\n2\n");

    rt.pause(&f.id).expect("pause");
    assert_eq!(rt.state(&f.id).expect("state").status, Status::Paused);
    rt.resume(&f.id).expect("resume");
    rt.update(&f.id, br#"{"pids":{"limit":100}}"#)
        .expect("update");
    let err = rt.delete(&f.id, false).expect_err("running container");
    assert!(err.to_string().contains("running"), "{err}");
    rt.kill(&f.id, 9, false).expect("kill");
    let exit = f.wait_exit();
    assert_eq!(exit.exit_code, 137);
    assert_eq!(exit.reason, "Error");
    rt.delete(&f.id, false).expect("delete");
    assert!(matches!(
        rt.state(&f.id),
        Err(krio_runtime::oci::OciError::NotFound { .. })
    ));
}

/// Unmounts a test mount even when the test fails.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn is_mount_point(path: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let path = path.display().to_string();
    text.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|mp| mp == path))
}

#[test]
fn after_the_exit_the_runtime_state_and_the_rootfs_mount_go() {
    if !can_run("after_the_exit_the_runtime_state_and_the_rootfs_mount_go") {
        return;
    }
    let mut f = Fixture::new("clean", Opts::sh("exit 0"));
    // Stands in for the overlay the daemon mounts as the rootfs.
    let mounted = f.dir.path().join("fake-rootfs");
    std::fs::create_dir(&mounted).expect("mkdir");
    nix::mount::mount(
        Some("tmpfs"),
        &mounted,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount tmpfs");
    let _unmount = Unmount(mounted.clone());
    f.config.rootfs_to_unmount = Some(mounted.clone());
    f.spawn();
    assert!(!monitor::cleaned_after_exit(f.state_dir()));
    f.start();
    assert_eq!(f.wait_exit().exit_code, 0);
    let deadline = Instant::now() + WAIT;
    while !monitor::cleaned_after_exit(f.state_dir()) {
        assert!(
            Instant::now() < deadline,
            "the monitor never marked the container cleaned"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!is_mount_point(&mounted), "the rootfs is still mounted");
    let state = f.runc(&["state", &f.id]);
    assert!(
        !state.status.success(),
        "runc still knows the container: {state:?}"
    );
}
