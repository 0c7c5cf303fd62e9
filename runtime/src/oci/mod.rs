//! The OCI runtime command line (runc, crun): `create`, `start`, `state`,
//! `kill`, `delete`, `exec`, `update`, `pause`, `resume`, `features`.
//!
//! [`OciRuntime`] is the small interface the rest of krio calls, so callers
//! can be unit-tested with a fake; [`OciCli`] implements it by running the
//! runtime binary. Every invocation passes `--root <root>` when the handler
//! has one and `--log <file> --log-format json`, so that a failure carries
//! the runtime's own words: [`OciError::Failed`] holds what the runtime
//! logged at level `error`/`fatal` and what it printed on stderr. The short
//! commands run with a bounded time: a runtime that hangs is killed and
//! reaped, and the call fails with [`OciError::Timeout`].

mod cli;
mod run;

use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use serde::Deserialize;

pub use cli::{DEFAULT_CREATE_TIMEOUT, DEFAULT_TIMEOUT, OciCli};
pub use run::RuntimeLog;
pub(crate) use run::{poll_timeout, wait_until};

/// Why an OCI runtime command failed.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The runtime binary could not be started at all.
    #[error("cannot run OCI runtime {binary}: {source}")]
    Spawn {
        /// The runtime binary.
        binary: PathBuf,
        /// What `execve` or the fork said.
        #[source]
        source: std::io::Error,
    },
    /// The runtime ran and failed; `message` is what it said.
    #[error("{binary} {command} {id}: {message} ({status})")]
    Failed {
        /// The runtime binary.
        binary: PathBuf,
        /// The subcommand (`create`, `start`, …).
        command: &'static str,
        /// The container ID (empty for `features`).
        id: String,
        /// How the runtime exited.
        status: ExitStatus,
        /// The runtime's error log entries and stderr, trimmed.
        message: String,
    },
    /// The container is not known to the runtime.
    #[error("{binary} {command} {id}: container does not exist: {message}")]
    NotFound {
        /// The runtime binary.
        binary: PathBuf,
        /// The subcommand.
        command: &'static str,
        /// The container ID.
        id: String,
        /// The runtime's message.
        message: String,
    },
    /// The runtime did not finish in time; it was killed and reaped.
    #[error("{binary} {command} {id}: no answer within {timeout:?}, killed")]
    Timeout {
        /// The runtime binary.
        binary: PathBuf,
        /// The subcommand.
        command: &'static str,
        /// The container ID.
        id: String,
        /// The bound that was exceeded.
        timeout: Duration,
    },
    /// The runtime does not implement this subcommand (older runc, crun
    /// without `features`).
    #[error("{binary} does not support `{command}`: {message}")]
    Unsupported {
        /// The runtime binary.
        binary: PathBuf,
        /// The subcommand.
        command: &'static str,
        /// The runtime's message.
        message: String,
    },
    /// The runtime's output could not be parsed.
    #[error("{binary} {command}: cannot parse its output: {source}")]
    Parse {
        /// The runtime binary.
        binary: PathBuf,
        /// The subcommand.
        command: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A local file krio needs around the call (the log file, a temp file)
    /// could not be handled.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The status of a container as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Being created.
    Creating,
    /// Created, not started.
    Created,
    /// Its process runs.
    Running,
    /// Its process exited.
    Stopped,
    /// Frozen.
    Paused,
    /// A status this code does not know.
    Other(String),
}

impl Status {
    fn parse(s: &str) -> Self {
        match s {
            "creating" => Self::Creating,
            "created" => Self::Created,
            "running" => Self::Running,
            "stopped" => Self::Stopped,
            "paused" => Self::Paused,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// What `runtime state ID` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The container's status.
    pub status: Status,
    /// The container's init process, when it has one.
    pub pid: Option<i32>,
    /// The bundle directory.
    pub bundle: PathBuf,
}

/// What `runtime features` reports, reduced to what krio uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features {
    /// The `rro` mount option is known: recursive read-only mounts work.
    pub recursive_read_only_mounts: bool,
    /// The `user` namespace is supported.
    pub user_namespaces: bool,
    /// Every mount option the runtime knows.
    pub mount_options: Vec<String>,
    /// Every namespace the runtime knows.
    pub namespaces: Vec<String>,
}

impl Features {
    /// Parses the JSON `features` prints (OCI runtime-spec
    /// `features.md`); absent fields count as unsupported.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default, rename = "mountOptions")]
            mount_options: Option<Vec<String>>,
            #[serde(default)]
            linux: Option<RawLinux>,
        }
        #[derive(Deserialize)]
        struct RawLinux {
            #[serde(default)]
            namespaces: Option<Vec<String>>,
        }
        let raw: Raw = serde_json::from_slice(json)?;
        let mount_options = raw.mount_options.unwrap_or_default();
        let namespaces = raw.linux.and_then(|l| l.namespaces).unwrap_or_default();
        Ok(Self {
            recursive_read_only_mounts: mount_options.iter().any(|o| o == "rro"),
            user_namespaces: namespaces.iter().any(|n| n == "user"),
            mount_options,
            namespaces,
        })
    }
}

/// The standard streams given to the runtime for `create`. Without a
/// console socket the container inherits them.
#[derive(Debug)]
pub struct CreateStdio {
    /// The container's stdin.
    pub stdin: Stdio,
    /// The container's stdout.
    pub stdout: Stdio,
    /// The container's stderr.
    pub stderr: Stdio,
}

impl Default for CreateStdio {
    /// All three `/dev/null`.
    fn default() -> Self {
        Self {
            stdin: Stdio::null(),
            stdout: Stdio::null(),
            stderr: Stdio::null(),
        }
    }
}

/// What `exec` runs in a container.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// The OCI `process` JSON file.
    pub process_json: PathBuf,
    /// Allocate a terminal.
    pub tty: bool,
    /// Where the runtime sends the pty master (with `tty`).
    pub console_socket: Option<PathBuf>,
    /// Where the runtime writes the process's PID.
    pub pid_file: Option<PathBuf>,
    /// Return once the process runs instead of waiting for it.
    pub detach: bool,
}

/// A prepared `runtime exec`: the caller spawns and drives `command`
/// (stdio, waiting, killing) and asks `log` for the runtime's message when
/// it fails.
#[derive(Debug)]
pub struct ExecCommand {
    /// The command line, ready to spawn.
    pub command: Command,
    /// The runtime's log file for this call; removed on drop.
    pub log: RuntimeLog,
}

/// The OCI runtime command line, as krio uses it.
pub trait OciRuntime {
    /// `create --bundle B --pid-file P [--console-socket S] ID`; the
    /// container gets `stdio` unless it has a terminal.
    fn create(
        &self,
        id: &str,
        bundle: &std::path::Path,
        pid_file: &std::path::Path,
        console_socket: Option<&std::path::Path>,
        stdio: CreateStdio,
    ) -> Result<(), OciError>;
    /// `start ID`.
    fn start(&self, id: &str) -> Result<(), OciError>;
    /// `state ID`.
    fn state(&self, id: &str) -> Result<State, OciError>;
    /// `kill [--all] ID SIGNAL`.
    fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), OciError>;
    /// `delete [--force] ID`.
    fn delete(&self, id: &str, force: bool) -> Result<(), OciError>;
    /// Prepares `exec`; see [`ExecCommand`].
    fn exec(&self, id: &str, options: &ExecOptions) -> Result<ExecCommand, OciError>;
    /// `update --resources FILE ID` with the OCI `LinuxResources` JSON.
    fn update(&self, id: &str, resources_json: &[u8]) -> Result<(), OciError>;
    /// `pause ID`.
    fn pause(&self, id: &str) -> Result<(), OciError>;
    /// `resume ID`.
    fn resume(&self, id: &str) -> Result<(), OciError>;
    /// `features`; [`OciError::Unsupported`] when the runtime lacks it.
    fn features(&self) -> Result<Features, OciError>;
}
