//! The daemon's side: starting a monitor and talking to a running one.
//! Every call blocks for a bounded time (run them from `spawn_blocking`).

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::socket::{MsgFlags, recv, send};

use super::attach::connect_seqpacket;
use super::{
    CONFIG_FILE, CTL_SOCKET, CtlReply, CtlRequest, EXIT_FILE, ExitInfo, MONITOR_PID_FILE,
    MonitorConfig, SyncMessage,
};
use crate::oci::poll_timeout;

/// How long [`spawn_monitor`] waits for the monitor's report.
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a `ctl` request may take.
const CTL_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest sync line accepted.
const SYNC_MAX: usize = 256 * 1024;

/// Why a monitor call failed.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// A file or socket of the monitor could not be used.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The monitor binary could not be started.
    #[error("cannot start monitor {binary}: {source}")]
    Spawn {
        /// The monitor binary.
        binary: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The monitor reported that the container could not be created; the
    /// message is the runtime's own.
    #[error("creating container {id}: {message}")]
    Create {
        /// The container ID.
        id: String,
        /// The monitor's report, with the runtime's message.
        message: String,
    },
    /// The monitor did not report in time; it was killed.
    #[error("monitor for container {id} did not report within {waited:?}")]
    Timeout {
        /// The container ID.
        id: String,
        /// How long it was given.
        waited: Duration,
    },
    /// The monitor broke its protocol (no report, a bad line or reply).
    #[error("monitor protocol: {0}")]
    Protocol(String),
    /// The monitor refused a `ctl` request; the message says why.
    #[error("monitor: {0}")]
    Refused(String),
}

/// A monitor that started its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spawned {
    /// The container's init process.
    pub pid: i32,
    /// The monitor's PID, from `monitor.pid`.
    pub monitor_pid: Option<i32>,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> MonitorError {
    let path = path.to_owned();
    move |source| MonitorError::Io { what, path, source }
}

/// Starts `binary` (krio-monitor) for `config` and waits up to
/// [`SPAWN_TIMEOUT`] for the container's PID or the runtime's error.
pub fn spawn_monitor(binary: &Path, config: &MonitorConfig) -> Result<Spawned, MonitorError> {
    spawn_monitor_with_timeout(binary, config, SPAWN_TIMEOUT)
}

/// [`spawn_monitor`] with another bound.
pub fn spawn_monitor_with_timeout(
    binary: &Path,
    config: &MonitorConfig,
    timeout: Duration,
) -> Result<Spawned, MonitorError> {
    let deadline = Instant::now() + timeout;
    let dir = &config.state_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(io("cannot create state dir", dir))?;
    let _ = std::fs::remove_file(dir.join(EXIT_FILE));
    let mut config = config.clone();
    config.sync_fd = 1;
    let config_path = dir.join(CONFIG_FILE);
    let json =
        serde_json::to_vec_pretty(&config).map_err(|e| MonitorError::Protocol(e.to_string()))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&config_path)
        .and_then(|mut f| f.write_all(&json))
        .map_err(io("cannot write", &config_path))?;

    let (sync_r, sync_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| MonitorError::Spawn {
            binary: binary.to_owned(),
            source: e.into(),
        })?;
    let mut cmd = Command::new(binary);
    cmd.arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::from(sync_w))
        .stderr(Stdio::null());
    let spawned = cmd.spawn();
    // The command holds our copy of the write end: drop it, so the pipe
    // reports EOF when the monitor is gone.
    drop(cmd);
    let mut child = spawned.map_err(|source| MonitorError::Spawn {
        binary: binary.to_owned(),
        source,
    })?;

    let line = read_sync(&sync_r, deadline);
    // The spawned process exits as soon as the monitor is detached.
    let reap_deadline = Instant::now() + Duration::from_secs(5);
    if crate::oci::wait_until(&mut child, reap_deadline).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let monitor_pid = read_pid(&dir.join(MONITOR_PID_FILE));
    let line = match line {
        Ok(line) => line,
        Err(e) => {
            if matches!(e, MonitorError::Timeout { .. })
                && let Some(pid) = monitor_pid
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return Err(match e {
                MonitorError::Timeout { .. } => MonitorError::Timeout {
                    id: config.container_id.clone(),
                    waited: timeout,
                },
                other => other,
            });
        }
    };
    let msg: SyncMessage = serde_json::from_slice(&line)
        .map_err(|e| MonitorError::Protocol(format!("bad sync line: {e}")))?;
    match (msg.pid, msg.error) {
        (Some(pid), None) if pid > 0 => Ok(Spawned { pid, monitor_pid }),
        (_, Some(message)) => Err(MonitorError::Create {
            id: config.container_id.clone(),
            message,
        }),
        _ => Err(MonitorError::Protocol(
            "sync line has neither pid nor error".to_owned(),
        )),
    }
}

/// Reads the sync line (up to the newline or EOF) until `deadline`.
fn read_sync(fd: &OwnedFd, deadline: Instant) -> Result<Vec<u8>, MonitorError> {
    let mut line = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(MonitorError::Timeout {
                id: String::new(),
                waited: Duration::ZERO,
            });
        }
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, poll_timeout(left)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(MonitorError::Protocol(format!("poll on sync pipe: {e}"))),
        }
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => {
                return if line.is_empty() {
                    Err(MonitorError::Protocol(
                        "the monitor exited without reporting".to_owned(),
                    ))
                } else {
                    Ok(line)
                };
            }
            Ok(n) => {
                line.extend_from_slice(&buf[..n]);
                if let Some(end) = line.iter().position(|&b| b == b'\n') {
                    line.truncate(end);
                    return Ok(line);
                }
                if line.len() > SYNC_MAX {
                    return Err(MonitorError::Protocol("sync line too long".to_owned()));
                }
            }
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(e) => {
                return Err(MonitorError::Protocol(format!(
                    "reading the sync pipe: {e}"
                )));
            }
        }
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Sends one `ctl` request and waits for the reply.
fn ctl(state_dir: &Path, request: &CtlRequest) -> Result<(), MonitorError> {
    let path = state_dir.join(CTL_SOCKET);
    let sock = connect_seqpacket(&path).map_err(io("cannot connect to", &path))?;
    let json = serde_json::to_vec(request).map_err(|e| MonitorError::Protocol(e.to_string()))?;
    send(sock.as_raw_fd(), &json, MsgFlags::MSG_NOSIGNAL)
        .map_err(|e| io("cannot send to", &path)(e.into()))?;
    let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
    let ready = poll(&mut fds, poll_timeout(CTL_TIMEOUT))
        .map_err(|e| io("waiting for a reply on", &path)(e.into()))?;
    if ready == 0 {
        return Err(MonitorError::Protocol(format!(
            "no reply on {} within {CTL_TIMEOUT:?}",
            path.display()
        )));
    }
    let mut buf = [0u8; 4096];
    let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT)
        .map_err(|e| io("cannot read the reply on", &path)(e.into()))?;
    if n == 0 {
        return Err(MonitorError::Protocol(
            "the monitor closed the ctl connection without a reply".to_owned(),
        ));
    }
    let reply: CtlReply = serde_json::from_slice(&buf[..n])
        .map_err(|e| MonitorError::Protocol(format!("bad ctl reply: {e}")))?;
    if reply.ok {
        Ok(())
    } else {
        Err(MonitorError::Refused(
            reply.error.unwrap_or_else(|| "request failed".to_owned()),
        ))
    }
}

/// Asks the monitor to reopen the container's log file (after the kubelet
/// renamed it). When the monitor cannot open the path, no file is created
/// and the error says why.
pub fn reopen_log(state_dir: &Path) -> Result<(), MonitorError> {
    ctl(state_dir, &CtlRequest::ReopenLog)
}

/// Resizes the container's terminal.
pub fn resize(state_dir: &Path, width: u16, height: u16) -> Result<(), MonitorError> {
    ctl(state_dir, &CtlRequest::Resize { width, height })
}

/// Whether the monitor deleted the exited container from the runtime and
/// unmounted its root filesystem (see [`MonitorConfig::rootfs_to_unmount`]).
pub fn cleaned_after_exit(state_dir: &Path) -> bool {
    state_dir.join(super::CLEANED_FILE).exists()
}

/// The container's exit record, once the monitor wrote it.
pub fn read_exit(state_dir: &Path) -> Result<Option<ExitInfo>, MonitorError> {
    let path = state_dir.join(EXIT_FILE);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("cannot read", &path)(e)),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| MonitorError::Protocol(format!("bad exit file {}: {e}", path.display())))
}
