//! The monitor process: detach, create the container through the runtime,
//! report over the sync fd, then a `poll(2)` loop until the container has
//! exited and its output is drained, and the exit file.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::attach::{self, AttachServer};
use super::cri_log::CriLog;
use super::detach::{self, Side};
use super::event_loop::Monitor;
use super::oom::OomCounter;
use super::{
    ATTACH_SOCKET, CLEANED_FILE, CONSOLE_SOCKET, CTL_SOCKET, EXIT_FILE, ExitInfo, MONITOR_LOG_FILE,
    MONITOR_PID_FILE, MonitorConfig, PID_FILE, SyncMessage, fd,
};
use crate::oci::{CreateStdio, OciCli, OciError, OciRuntime};

/// How long the runtime may take to send the pty master.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on `runtime create`.
const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(50);

/// The `krio-monitor` program: `krio-monitor CONFIG.json` or
/// `krio-monitor -` (config on stdin).
pub fn monitor_main() -> ExitCode {
    let arg = std::env::args_os().nth(1);
    let config = match read_config(arg) {
        Ok(config) => config,
        Err(message) => {
            // Without a config the sync fd is unknown: the daemon's default
            // is stdout.
            let _ = writeln!(std::io::stdout(), "{}", sync_line(None, Some(&message)));
            eprintln!("krio-monitor: {message}");
            return ExitCode::from(2);
        }
    };
    let sync = match adopt_sync(config.sync_fd) {
        Ok(sync) => sync,
        Err(e) => {
            eprintln!("krio-monitor: sync fd {}: {e}", config.sync_fd);
            return ExitCode::from(2);
        }
    };
    match detach::double_fork() {
        Ok(Side::Original(Ok(()))) => ExitCode::SUCCESS,
        Ok(Side::Original(Err(message))) => {
            report(sync, None, Some(&message));
            ExitCode::FAILURE
        }
        Err(e) => {
            report(sync, None, Some(&format!("cannot fork: {e}")));
            ExitCode::FAILURE
        }
        Ok(Side::Monitor) => run(config, sync),
    }
}

fn read_config(arg: Option<OsString>) -> Result<MonitorConfig, String> {
    let mut text = Vec::new();
    match arg {
        Some(path) if path != "-" => File::open(&path)
            .and_then(|f| f.take(1 << 20).read_to_end(&mut text))
            .map_err(|e| format!("cannot read config {}: {e}", Path::new(&path).display()))?,
        _ => std::io::stdin()
            .take(1 << 20)
            .read_to_end(&mut text)
            .map_err(|e| format!("cannot read config from stdin: {e}"))?,
    };
    let config: MonitorConfig =
        serde_json::from_slice(&text).map_err(|e| format!("invalid config: {e}"))?;
    if config.container_id.is_empty() {
        return Err("invalid config: container_id is empty".to_owned());
    }
    if !config.state_dir.is_absolute() {
        return Err("invalid config: state_dir must be absolute".to_owned());
    }
    Ok(config)
}

/// Takes the sync fd and moves it above 2, close-on-exec, so stdio can be
/// redirected without touching it.
fn adopt_sync(raw: i32) -> std::io::Result<File> {
    let inherited = fd::adopt(raw)?;
    let moved = inherited.try_clone()?;
    if raw <= 2 {
        // Keep the standard fd open until stdio is redirected over it, so
        // nothing else lands on 0-2 meanwhile.
        let _ = inherited.into_raw_fd();
    }
    Ok(File::from(moved))
}

fn sync_line(pid: Option<i32>, error: Option<&str>) -> String {
    let msg = SyncMessage {
        pid,
        error: error.map(str::to_owned),
    };
    serde_json::to_string(&msg).unwrap_or_else(|_| r#"{"error":"internal"}"#.to_owned())
}

/// Writes the one sync line and closes the sync fd.
fn report(mut sync: File, pid: Option<i32>, error: Option<&str>) {
    let mut line = sync_line(pid, error);
    line.push('\n');
    if let Err(e) = sync.write_all(line.as_bytes()) {
        eprintln!("krio-monitor: cannot report to the daemon: {e}");
    }
}

pub(super) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Prints a diagnostic line to `monitor.log` (the monitor's stderr).
macro_rules! diag {
    ($($arg:tt)*) => {
        eprintln!(
            "{} {}",
            $crate::monitor::rfc3339_nano(std::time::SystemTime::now()),
            format_args!($($arg)*)
        )
    };
}
pub(super) use diag;

/// The detached monitor.
fn run(config: MonitorConfig, sync: File) -> ExitCode {
    let state_dir = config.state_dir.clone();
    let mut created = Created::new(&state_dir);
    let setup = prepare_process(&config, &sync, &mut created)
        .and_then(|sigfd| setup(&config, sigfd, &mut created));
    let mut monitor = match setup {
        Ok(monitor) => monitor,
        Err(message) => {
            diag!("create failed: {message}");
            // Clean up first: the daemon may look as soon as it reads.
            created.remove_all();
            report(sync, None, Some(&message));
            return ExitCode::FAILURE;
        }
    };
    report(sync, Some(monitor.pid), None);
    diag!(
        "container {} created, pid {}",
        config.container_id,
        monitor.pid
    );
    created.forget();
    let info = monitor.run();
    let written = write_exit(&state_dir, &info);
    for name in [ATTACH_SOCKET, CTL_SOCKET, MONITOR_PID_FILE] {
        let _ = std::fs::remove_file(state_dir.join(name));
    }
    // After the exit file: whoever waits for the exit does not wait for this.
    if written.is_ok() {
        clean_after_exit(&config);
    }
    match written {
        Ok(()) => {
            diag!("container exited: {info:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            diag!("cannot write the exit file: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Deletes the exited container from the runtime and unmounts its root
/// filesystem when the daemon asked for it, then marks the state dir
/// [`CLEANED_FILE`]. On any failure the mark is not written and the daemon
/// does it all again at removal.
fn clean_after_exit(config: &MonitorConfig) {
    let Some(rootfs) = &config.rootfs_to_unmount else {
        return;
    };
    let runtime = OciCli::new(&config.runtime)
        .with_root(config.runtime_root.clone())
        .with_log_dir(&config.state_dir);
    if let Err(e) = runtime.delete(&config.container_id, false) {
        diag!("runtime delete after the exit failed: {e}");
        return;
    }
    match nix::mount::umount2(rootfs, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            diag!("unmounting {} failed: {e}", rootfs.display());
            return;
        }
    }
    if let Err(e) = std::fs::write(config.state_dir.join(CLEANED_FILE), b"") {
        diag!("cannot mark the state dir cleaned: {e}");
    }
}

/// Files the monitor created, removed again when the create fails.
struct Created {
    dir: PathBuf,
    files: Vec<PathBuf>,
}

impl Created {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            files: Vec::new(),
        }
    }

    fn add(&mut self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        self.files.push(path.clone());
        path
    }

    fn remove_all(&mut self) {
        for f in self.files.drain(..) {
            let _ = std::fs::remove_file(f);
        }
    }

    fn forget(&mut self) {
        self.files.clear();
    }
}

/// Subreaper, stdio, fds, signals, `monitor.pid`.
fn prepare_process(
    config: &MonitorConfig,
    sync: &File,
    created: &mut Created,
) -> Result<SignalFd, String> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("cannot become a child subreaper: {e}"))?;
    let dir = &config.state_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| format!("cannot create state dir {}: {e}", dir.display()))?;
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("cannot open /dev/null: {e}"))?;
    let diag_log = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(dir.join(MONITOR_LOG_FILE))
        .map_err(|e| format!("cannot open {MONITOR_LOG_FILE}: {e}"))?;
    nix::unistd::dup2_stdin(&null)
        .and_then(|()| nix::unistd::dup2_stdout(&null))
        .and_then(|()| nix::unistd::dup2_stderr(&diag_log))
        .map_err(|e| format!("cannot redirect stdio: {e}"))?;
    drop(null);
    drop(diag_log);
    fd::close_fds_except(&[sync.as_raw_fd()]);

    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| format!("cannot block SIGCHLD: {e}"))?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("cannot create signalfd: {e}"))?;

    let pid_path = created.add(MONITOR_PID_FILE);
    std::fs::write(&pid_path, std::process::id().to_string())
        .map_err(|e| format!("cannot write {}: {e}", pid_path.display()))?;
    Ok(sigfd)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("cannot create a pipe: {e}"))
}

fn set_nonblocking(fd: &impl AsFd) {
    let _ = fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
}

/// Reads what is available from `fd` without blocking (at most 64 KiB).
fn read_available(fd: &OwnedFd) -> Vec<u8> {
    set_nonblocking(fd);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < 64 * 1024 {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// Creates the container and everything the loop needs.
fn setup(
    config: &MonitorConfig,
    sigfd: SignalFd,
    created: &mut Created,
) -> Result<Monitor, String> {
    let dir = &config.state_dir;
    let log = CriLog::open(config.log_path())
        .map_err(|e| format!("cannot open log file {}: {e}", config.log_path.display()))?;
    let attach = AttachServer::bind(&created.add(ATTACH_SOCKET))
        .map_err(|e| format!("cannot listen on the attach socket: {e}"))?;
    let ctl = attach::listen_seqpacket(&created.add(CTL_SOCKET))
        .map_err(|e| format!("cannot listen on the ctl socket: {e}"))?;

    let mut outputs: [Option<OwnedFd>; 2] = [None, None];
    let mut stdin = None;
    let mut console = None;
    let stdio = if config.tty {
        let path = created.add(CONSOLE_SOCKET);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .map_err(|e| format!("cannot listen on the console socket: {e}"))?;
        console = Some((listener, path));
        CreateStdio::default()
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let container_stdin = if config.stdin {
            let (in_r, in_w) = pipe()?;
            set_nonblocking(&in_w);
            stdin = Some(in_w);
            Stdio::from(in_r)
        } else {
            Stdio::null()
        };
        outputs = [Some(out_r), Some(err_r)];
        CreateStdio {
            stdin: container_stdin,
            stdout: Stdio::from(out_w),
            stderr: Stdio::from(err_w),
        }
    };

    let timeout = config
        .create_timeout_secs
        .map_or(DEFAULT_CREATE_TIMEOUT, Duration::from_secs);
    let runtime = OciCli::new(&config.runtime)
        .with_root(config.runtime_root.clone())
        .with_log_dir(dir)
        .with_create_timeout(timeout);
    let pid_path = created.add(PID_FILE);
    let _ = std::fs::remove_file(&pid_path);
    let result = runtime.create(
        &config.container_id,
        &config.bundle,
        &pid_path,
        console.as_ref().map(|(_, path)| path.as_path()),
        stdio,
    );
    if let Err(e) = result {
        // The runtime also printed its error on stderr, which is the
        // container's stderr pipe here.
        let stderr = outputs[1].as_ref().map(read_available).unwrap_or_default();
        return Err(create_error(e, &stderr));
    }

    if let Some((listener, path)) = console {
        let master = receive_console(&listener)?;
        let _ = std::fs::remove_file(path);
        set_nonblocking(&master);
        outputs[0] = Some(master);
    }

    let pid_text = std::fs::read_to_string(&pid_path)
        .map_err(|e| format!("cannot read the container's pid file: {e}"))?;
    let pid: i32 = pid_text
        .trim()
        .parse()
        .map_err(|_| format!("bad pid file content {pid_text:?}"))?;
    for out in outputs.iter().flatten() {
        set_nonblocking(out);
    }
    let oom = OomCounter::for_pid(pid);
    match &oom {
        Some(c) => diag!("OOM counter: {}", c.path().display()),
        None => diag!("no memory cgroup found for pid {pid}: OOM kills will not be reported"),
    }
    Ok(Monitor {
        tty: config.tty,
        stdin_once: config.stdin_once,
        has_stdin: config.stdin,
        log,
        outputs,
        stdin,
        stdin_buf: Vec::new(),
        stdin_close: false,
        attach,
        ctl,
        ctl_clients: Vec::new(),
        sigfd,
        pid,
        oom,
        exit: None,
        drain_until: None,
    })
}

fn create_error(e: OciError, stderr: &[u8]) -> String {
    let message = e.to_string();
    let stderr = String::from_utf8_lossy(stderr);
    let stderr = stderr.trim();
    if stderr.is_empty() || message.contains(stderr) {
        message
    } else {
        format!("{message}; stderr: {stderr}")
    }
}

/// Accepts the runtime's connection on the console socket and receives the
/// pty master.
fn receive_console(listener: &UnixListener) -> Result<OwnedFd, String> {
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(CONSOLE_TIMEOUT.as_millis()).unwrap_or(u16::MAX);
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(n) if n > 0 => {}
        Ok(_) => return Err("the runtime did not send the console".to_owned()),
        Err(e) => return Err(format!("waiting for the console: {e}")),
    }
    let (stream, _) = listener
        .accept()
        .map_err(|e| format!("cannot accept on the console socket: {e}"))?;
    let stream = OwnedFd::from(stream);
    fd::recv_fd(&stream).map_err(|e| format!("cannot receive the console: {e}"))
}

/// Writes `exit` atomically: temp file, fsync, rename, fsync of the dir.
pub(crate) fn write_exit(dir: &Path, info: &ExitInfo) -> std::io::Result<()> {
    let tmp = dir.join(".exit.tmp");
    let json = serde_json::to_vec(info).map_err(std::io::Error::other)?;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&json)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(EXIT_FILE))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_file_is_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let info = ExitInfo::new(3, 42, false);
        write_exit(dir.path(), &info).expect("write");
        let text = std::fs::read_to_string(dir.path().join(EXIT_FILE)).expect("read");
        assert_eq!(
            text,
            r#"{"exit_code":3,"finished_at_ns":42,"oom_killed":false,"reason":"Error"}"#
        );
        assert!(!dir.path().join(".exit.tmp").exists());
    }

    #[test]
    fn create_error_appends_new_stderr() {
        let e = OciError::Timeout {
            binary: "/r".into(),
            command: "create",
            id: "c".into(),
            timeout: Duration::from_secs(1),
        };
        let m = create_error(e, b"boom\n");
        assert!(m.ends_with("; stderr: boom"), "{m}");
    }
}
