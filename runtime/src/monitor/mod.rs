//! The per-container monitor, `krio-monitor`, and the daemon's side of it.
//!
//! One monitor runs per container. It has no async runtime and no gRPC: a
//! `poll(2)` loop over the container's output, a signalfd for `SIGCHLD`, the
//! `ctl` and `attach` sockets and their clients.
//!
//! # Starting
//!
//! The daemon calls [`spawn_monitor`], which writes the [`MonitorConfig`] as
//! JSON to `<state_dir>/config.json` and runs `krio-monitor
//! <state_dir>/config.json` (`krio-monitor -` reads the config from stdin).
//! `sync_fd` names the inherited write end of the sync pipe; `spawn_monitor`
//! passes it as the monitor's stdout, so it is `1`.
//!
//! The spawned process forks, the child starts a new session and forks the
//! monitor, and both exit at once: the daemon never holds the monitor or the
//! container as a child. The monitor makes itself a child subreaper, closes
//! every fd it did not open on purpose (all its own fds are close-on-exec),
//! writes `monitor.pid`, opens the log, creates the container's stdio
//! (pipes, or a console socket for a TTY) and runs
//! `runtime create --bundle B --pid-file <state_dir>/pid [--console-socket S] ID`.
//!
//! # Sync protocol
//!
//! Exactly one JSON line on the sync fd: `{"pid":N}` once the container is
//! created (the daemon then runs `runtime start` itself), or
//! `{"error":"…"}` with the runtime's own message (its log and stderr),
//! after which the monitor removes the files it created and exits.
//!
//! # Files in the state dir (mode 0700)
//!
//! | file | what |
//! |---|---|
//! | `config.json` | the config, written by [`spawn_monitor`] |
//! | `monitor.pid` | the monitor's PID |
//! | `pid` | the container's PID (the runtime's `--pid-file`) |
//! | `ctl` | control socket (`SOCK_SEQPACKET`) |
//! | `attach` | attach socket (`SOCK_SEQPACKET`) |
//! | `monitor.log` | the monitor's own diagnostics |
//! | `exit` | the exit record, written atomically when the container exits |
//!
//! # `ctl` protocol
//!
//! A `SOCK_SEQPACKET` socket, one request per connection. The client
//! sends one JSON packet,
//! `{"op":"reopen_log"}` or `{"op":"resize","width":W,"height":H}`, and
//! receives one JSON packet, `{"ok":true}` or `{"ok":false,"error":"…"}`.
//! `reopen_log` opens the log path anew (after the kubelet renamed it) and
//! only then closes the old file; when the open fails, nothing is created and
//! the monitor keeps writing to the old file.
//!
//! # `attach` protocol
//!
//! A `SOCK_SEQPACKET` socket; every packet starts with a one-byte tag.
//!
//! | direction | tag | payload |
//! |---|---|---|
//! | monitor → client | `1` | stdout bytes |
//! | monitor → client | `2` | stderr bytes |
//! | client → monitor | `0` | stdin bytes |
//! | client → monitor | `3` | none: close the container's stdin |
//! | client → monitor | `4` | width, height: two big-endian `u16`, resize the TTY |
//!
//! A client receives the output produced from the moment it attaches. A
//! client that falls more than 256 KiB behind is disconnected: it never
//! slows the container or the log. With `stdin_once`, the container's stdin
//! is closed when the first client that attached goes away. With a TTY, all
//! output is stdout and "close stdin" sends the terminal's EOF character
//! (`^D`). When the container has exited and its output is drained, the
//! monitor closes every client.
//!
//! # Exit file
//!
//! `exit`: `{"exit_code":N,"finished_at_ns":T,"oom_killed":B,"reason":R}`,
//! `exit_code` 128+signal for a signal, `reason` one of `Completed`,
//! `Error`, `OOMKilled`; written to a temp file, fsynced and renamed.

mod attach;
mod client;
pub mod console;
mod cri_log;
mod detach;
mod event_loop;
mod fd;
mod oom;
mod supervise;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use attach::{AttachClient, AttachEvent};
pub use client::{
    MonitorError, SPAWN_TIMEOUT, Spawned, cleaned_after_exit, read_exit, reopen_log, resize,
    spawn_monitor, spawn_monitor_with_timeout,
};
pub use cri_log::rfc3339_nano;
pub use supervise::monitor_main;

/// `monitor.pid` in the state dir.
pub const MONITOR_PID_FILE: &str = "monitor.pid";
/// `pid` in the state dir: the container's PID.
pub const PID_FILE: &str = "pid";
/// `exit` in the state dir: the [`ExitInfo`].
pub const EXIT_FILE: &str = "exit";
/// `ctl` in the state dir: the control socket.
pub const CTL_SOCKET: &str = "ctl";
/// `attach` in the state dir: the attach socket.
pub const ATTACH_SOCKET: &str = "attach";
/// `config.json` in the state dir.
pub const CONFIG_FILE: &str = "config.json";
/// `cleaned` in the state dir: after the exit, the monitor deleted the
/// container from the runtime and unmounted its root filesystem, so
/// removing the container need not.
pub const CLEANED_FILE: &str = "cleaned";
/// `monitor.log` in the state dir: the monitor's diagnostics.
pub const MONITOR_LOG_FILE: &str = "monitor.log";
/// The console socket's name while the runtime creates a TTY container.
pub(crate) const CONSOLE_SOCKET: &str = "console.sock";

/// What `krio-monitor` is told about its container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// The container ID given to the runtime.
    pub container_id: String,
    /// The OCI bundle directory.
    pub bundle: PathBuf,
    /// The OCI runtime binary.
    pub runtime: PathBuf,
    /// The runtime's `--root`, when not its default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_root: Option<PathBuf>,
    /// The CRI log file; empty for none.
    #[serde(default)]
    pub log_path: PathBuf,
    /// The monitor's state dir (mode 0700).
    pub state_dir: PathBuf,
    /// The container has a terminal.
    #[serde(default)]
    pub tty: bool,
    /// The container's stdin is kept open for attach.
    #[serde(default)]
    pub stdin: bool,
    /// Close stdin when the first attached client detaches.
    #[serde(default)]
    pub stdin_once: bool,
    /// The inherited fd of the sync pipe's write end.
    #[serde(default = "default_sync_fd")]
    pub sync_fd: i32,
    /// Bound on `runtime create`, in seconds (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_timeout_secs: Option<u64>,
    /// After the exit is recorded, delete the container from the runtime
    /// and unmount this root filesystem (then write [`CLEANED_FILE`]):
    /// work that would otherwise sit on `RemoveContainer`'s path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_to_unmount: Option<PathBuf>,
}

fn default_sync_fd() -> i32 {
    1
}

impl MonitorConfig {
    /// A config with the defaults: no log, no TTY, no stdin, sync fd 1.
    pub fn new(
        container_id: impl Into<String>,
        bundle: impl Into<PathBuf>,
        runtime: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            container_id: container_id.into(),
            bundle: bundle.into(),
            runtime: runtime.into(),
            runtime_root: None,
            log_path: PathBuf::new(),
            state_dir: state_dir.into(),
            tty: false,
            stdin: false,
            stdin_once: false,
            sync_fd: default_sync_fd(),
            create_timeout_secs: None,
            rootfs_to_unmount: None,
        }
    }

    /// The log path, unless empty.
    pub fn log_path(&self) -> Option<&Path> {
        (!self.log_path.as_os_str().is_empty()).then_some(self.log_path.as_path())
    }
}

/// How a container ended, as the monitor records it in `exit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit code; 128 + the signal number when killed by a signal.
    pub exit_code: i32,
    /// When the monitor reaped the container, in ns since the epoch.
    pub finished_at_ns: i64,
    /// The kernel's OOM killer killed a process of the container's cgroup.
    pub oom_killed: bool,
    /// `Completed`, `Error` or `OOMKilled`.
    pub reason: String,
}

impl ExitInfo {
    /// An exit record with the CRI reason derived from the code and OOM.
    pub fn new(exit_code: i32, finished_at_ns: i64, oom_killed: bool) -> Self {
        let reason = if oom_killed {
            "OOMKilled"
        } else if exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        Self {
            exit_code,
            finished_at_ns,
            oom_killed,
            reason: reason.to_owned(),
        }
    }
}

/// The sync line: one of the two fields is set.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct SyncMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A `ctl` request.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum CtlRequest {
    ReopenLog,
    Resize { width: u16, height: u16 },
}

/// A `ctl` reply.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct CtlReply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Attach packet tags.
pub(crate) mod tag {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const CLOSE_STDIN: u8 = 3;
    pub const RESIZE: u8 = 4;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_defaults() {
        let c: MonitorConfig = serde_json::from_str(
            r#"{"container_id":"c","bundle":"/b","runtime":"/usr/sbin/runc","state_dir":"/s"}"#,
        )
        .expect("parses");
        assert_eq!(c.sync_fd, 1);
        assert_eq!(c.log_path(), None);
        assert!(!c.tty && !c.stdin && !c.stdin_once);
        assert!(serde_json::from_str::<MonitorConfig>(r#"{"container_id":"c","x":1}"#).is_err());
    }

    #[test]
    fn exit_reasons() {
        assert_eq!(ExitInfo::new(0, 1, false).reason, "Completed");
        assert_eq!(ExitInfo::new(3, 1, false).reason, "Error");
        assert_eq!(ExitInfo::new(137, 1, true).reason, "OOMKilled");
    }

    #[test]
    fn ctl_json() {
        let r: CtlRequest =
            serde_json::from_str(r#"{"op":"resize","width":80,"height":24}"#).expect("parses");
        assert_eq!(
            r,
            CtlRequest::Resize {
                width: 80,
                height: 24
            }
        );
        let r: CtlRequest = serde_json::from_str(r#"{"op":"reopen_log"}"#).expect("parses");
        assert_eq!(r, CtlRequest::ReopenLog);
    }
}
