//! Running the runtime binary with a bounded time, and reading its `--log`.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// How much of a runtime's stdout or stderr is kept.
const OUTPUT_CAP: usize = 1 << 20;
/// How much of a runtime's log file is read.
const LOG_CAP: u64 = 64 << 10;

/// The `--log` file of one runtime invocation, removed when dropped.
#[derive(Debug)]
pub struct RuntimeLog {
    path: PathBuf,
}

impl RuntimeLog {
    /// Creates a fresh, empty log file in `dir`.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(".oci-{}-{nanos:x}-{n}.log", std::process::id()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(_) => return Ok(Self { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The file's path, for `--log`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the runtime logged at level `error` or `fatal`, one message
    /// per line; the raw text when it is not JSON lines.
    pub fn message(&self) -> String {
        let mut text = Vec::new();
        if let Ok(file) = File::open(&self.path) {
            let _ = file.take(LOG_CAP).read_to_end(&mut text);
        }
        log_message(&text)
    }
}

impl Drop for RuntimeLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Extracts the error messages from a runtime's JSON log (runc and crun
/// write `{"level":"error","msg":"…","time":"…"}` lines).
pub(crate) fn log_message(text: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        level: String,
        #[serde(default)]
        msg: String,
    }
    let text = String::from_utf8_lossy(text);
    let mut parsed_any = false;
    let mut messages = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Entry>(line) {
            Ok(entry) => {
                parsed_any = true;
                if matches!(entry.level.as_str(), "error" | "fatal" | "panic") {
                    let msg = entry.msg.trim();
                    if !msg.is_empty() && !messages.iter().any(|m| m == msg) {
                        messages.push(msg.to_owned());
                    }
                }
            }
            Err(_) => {
                let line = line.trim();
                if !messages.iter().any(|m| m == line) {
                    messages.push(line.to_owned());
                }
            }
        }
    }
    if messages.is_empty() && !parsed_any {
        return text.trim().to_owned();
    }
    messages.join("; ")
}

/// Joins the log's message and the runtime's stderr, skipping repeats.
pub(crate) fn combine(log: &str, stderr: &[u8]) -> String {
    let stderr = String::from_utf8_lossy(stderr);
    let stderr = stderr.trim();
    match (log.is_empty(), stderr.is_empty()) {
        (true, true) => "no error message".to_owned(),
        (false, true) => log.to_owned(),
        (true, false) => stderr.to_owned(),
        (false, false) if log.contains(stderr) => log.to_owned(),
        (false, false) if stderr.contains(log) => stderr.to_owned(),
        (false, false) => format!("{log}; stderr: {stderr}"),
    }
}

/// How a bounded run ended without an exit status.
#[derive(Debug)]
pub(crate) enum RunError {
    /// The binary could not be started.
    Spawn(std::io::Error),
    /// The deadline passed; the process was killed and reaped.
    Timeout,
}

/// What a finished run printed.
#[derive(Debug)]
pub(crate) struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `cmd` with stdin from `/dev/null`, captures stdout and stderr
/// (each capped) and kills it when it runs longer than `timeout`.
pub(crate) fn run_captured(cmd: &mut Command, timeout: Duration) -> Result<Output, RunError> {
    let deadline = Instant::now() + timeout;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(RunError::Spawn)?;
    let mut streams: [(Option<OwnedFd>, Vec<u8>); 2] = [
        (child.stdout.take().map(OwnedFd::from), Vec::new()),
        (child.stderr.take().map(OwnedFd::from), Vec::new()),
    ];
    for (fd, _) in &streams {
        if let Some(fd) = fd {
            let _ = fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        }
    }
    let mut buf = [0u8; 8192];
    while streams.iter().any(|(fd, _)| fd.is_some()) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            kill_and_reap(&mut child);
            return Err(RunError::Timeout);
        }
        let open: Vec<usize> = (0..streams.len())
            .filter(|&i| streams[i].0.is_some())
            .collect();
        let mut fds: Vec<PollFd> = open
            .iter()
            .filter_map(|&i| streams[i].0.as_ref())
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, poll_timeout(left)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        for (k, &i) in open.iter().enumerate() {
            if !ready[k] {
                continue;
            }
            let (fd_slot, out) = &mut streams[i];
            let Some(fd) = fd_slot.as_ref() else { continue };
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => *fd_slot = None,
                Ok(n) => {
                    let room = OUTPUT_CAP.saturating_sub(out.len());
                    out.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(_) => *fd_slot = None,
            }
        }
    }
    let status = match wait_until(&mut child, deadline) {
        Some(status) => status,
        None => {
            kill_and_reap(&mut child);
            return Err(RunError::Timeout);
        }
    };
    let stderr = std::mem::take(&mut streams[1].1);
    let stdout = std::mem::take(&mut streams[0].1);
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Waits for `child` until `deadline`; `None` when it is still running.
/// Sleeps in `poll` on a pidfd, so it returns as soon as the child exits
/// (`runc create` is on CreateContainer's path); without pidfds (before
/// Linux 5.3) it naps with a backoff.
pub(crate) fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let pidfd = rustix::process::Pid::from_raw(child.id().cast_signed()).and_then(|pid| {
        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
    });
    let mut nap = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match &pidfd {
            Some(fd) => {
                // Readable once the child has exited; EINTR just loops.
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, poll_timeout(left));
            }
            None => {
                std::thread::sleep(nap.min(left));
                nap = (nap * 2).min(Duration::from_millis(20));
            }
        }
    }
}

/// Kills `child` with SIGKILL and reaps it.
pub(crate) fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A poll timeout of at most `d` (capped at about a minute; callers loop).
pub(crate) fn poll_timeout(d: Duration) -> PollTimeout {
    let ms = d.as_millis().clamp(1, u128::from(u16::MAX));
    PollTimeout::from(u16::try_from(ms).unwrap_or(u16::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_message_keeps_errors() {
        let log = br#"{"level":"warning","msg":"w","time":"t"}
{"level":"error","msg":"runc create failed: chdir /x: no such file or directory","time":"t"}
{"level":"error","msg":"runc create failed: chdir /x: no such file or directory","time":"t"}
"#;
        assert_eq!(
            log_message(log),
            "runc create failed: chdir /x: no such file or directory"
        );
    }

    #[test]
    fn log_message_raw_text() {
        assert_eq!(log_message(b"plain failure\n"), "plain failure");
        assert_eq!(log_message(b""), "");
    }

    #[test]
    fn combine_skips_repeats() {
        assert_eq!(combine("a b", b"a b\n"), "a b");
        assert_eq!(combine("", b"boom\n"), "boom");
        assert_eq!(combine("x", b"y"), "x; stderr: y");
        assert_eq!(combine("", b""), "no error message");
    }

    #[test]
    fn run_captured_times_out_and_reaps() {
        let start = Instant::now();
        let r = run_captured(
            Command::new("/bin/sh").args(["-c", "sleep 5"]),
            Duration::from_millis(200),
        );
        assert!(matches!(r, Err(RunError::Timeout)), "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn run_captured_collects_output() {
        let out = run_captured(
            Command::new("/bin/sh").args(["-c", "echo out; echo err >&2; exit 4"]),
            Duration::from_secs(10),
        );
        let Ok(out) = out else { panic!("{out:?}") };
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.code(), Some(4));
    }
}
