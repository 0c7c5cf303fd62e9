//! [`OciCli`]: the [`OciRuntime`] of a runtime binary (runc, crun).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::run::{self, RunError, RuntimeLog};
use super::{CreateStdio, ExecCommand, ExecOptions, Features, OciError, OciRuntime, State, Status};

/// Default bound for the short commands (`start`, `state`, `kill`, …).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound for `create`.
pub const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// An OCI runtime binary and how to call it.
#[derive(Debug, Clone)]
pub struct OciCli {
    binary: PathBuf,
    root: Option<PathBuf>,
    log_dir: PathBuf,
    timeout: Duration,
    create_timeout: Duration,
}

impl OciCli {
    /// The runtime at `binary`, with its default root, its per-call log
    /// files in the system temp dir and the default time bounds.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            root: None,
            log_dir: std::env::temp_dir(),
            timeout: DEFAULT_TIMEOUT,
            create_timeout: DEFAULT_CREATE_TIMEOUT,
        }
    }

    /// Passes `--root root` on every call.
    pub fn with_root(mut self, root: Option<PathBuf>) -> Self {
        self.root = root;
        self
    }

    /// Where the per-call `--log` files go (they are removed after use).
    pub fn with_log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = dir.into();
        self
    }

    /// The bound for the short commands.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The bound for `create`.
    pub fn with_create_timeout(mut self, timeout: Duration) -> Self {
        self.create_timeout = timeout;
        self
    }

    /// The runtime binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    fn log(&self) -> Result<RuntimeLog, OciError> {
        RuntimeLog::create(&self.log_dir).map_err(|source| OciError::Io {
            what: "cannot create runtime log file in",
            path: self.log_dir.clone(),
            source,
        })
    }

    /// `binary [--root R] --log L --log-format json`.
    fn command(&self, log: &RuntimeLog) -> Command {
        let mut cmd = Command::new(&self.binary);
        if let Some(root) = &self.root {
            cmd.arg("--root").arg(root);
        }
        cmd.arg("--log")
            .arg(log.path())
            .args(["--log-format", "json"]);
        cmd
    }

    /// Runs a short command and returns its stdout.
    fn run(&self, command: &'static str, id: &str, args: &[OsString]) -> Result<Vec<u8>, OciError> {
        let log = self.log()?;
        let mut cmd = self.command(&log);
        cmd.arg(command).args(args);
        let out = match run::run_captured(&mut cmd, self.timeout) {
            Ok(out) => out,
            Err(RunError::Spawn(source)) => {
                return Err(OciError::Spawn {
                    binary: self.binary.clone(),
                    source,
                });
            }
            Err(RunError::Timeout) => {
                return Err(OciError::Timeout {
                    binary: self.binary.clone(),
                    command,
                    id: id.to_owned(),
                    timeout: self.timeout,
                });
            }
        };
        if out.status.success() {
            return Ok(out.stdout);
        }
        let message = run::combine(&log.message(), &out.stderr);
        Err(self.classify(command, id, out.status, message))
    }

    fn classify(
        &self,
        command: &'static str,
        id: &str,
        status: std::process::ExitStatus,
        message: String,
    ) -> OciError {
        let lower = message.to_ascii_lowercase();
        if lower.contains("no help topic")
            || lower.contains("unknown command")
            || lower.contains("command not found")
        {
            return OciError::Unsupported {
                binary: self.binary.clone(),
                command,
                message,
            };
        }
        if !id.is_empty()
            && (lower.contains("does not exist") || lower.contains("container not found"))
        {
            return OciError::NotFound {
                binary: self.binary.clone(),
                command,
                id: id.to_owned(),
                message,
            };
        }
        OciError::Failed {
            binary: self.binary.clone(),
            command,
            id: id.to_owned(),
            status,
            message,
        }
    }

    fn parse_error(&self, command: &'static str, source: serde_json::Error) -> OciError {
        OciError::Parse {
            binary: self.binary.clone(),
            command,
            source,
        }
    }
}

fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

impl OciRuntime for OciCli {
    fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: CreateStdio,
    ) -> Result<(), OciError> {
        let log = self.log()?;
        let mut cmd = self.command(&log);
        cmd.arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file);
        if let Some(socket) = console_socket {
            cmd.arg("--console-socket").arg(socket);
        }
        cmd.arg(id)
            .stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr);
        // The container inherits stdout and stderr, so they are never read
        // to their end here: the runtime's message comes from its log.
        let mut child = cmd.spawn().map_err(|source| OciError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        drop(cmd);
        let deadline = Instant::now() + self.create_timeout;
        let Some(status) = run::wait_until(&mut child, deadline) else {
            run::kill_and_reap(&mut child);
            return Err(OciError::Timeout {
                binary: self.binary.clone(),
                command: "create",
                id: id.to_owned(),
                timeout: self.create_timeout,
            });
        };
        if status.success() {
            return Ok(());
        }
        let message = run::combine(&log.message(), b"");
        Err(self.classify("create", id, status, message))
    }

    fn start(&self, id: &str) -> Result<(), OciError> {
        self.run("start", id, &[os(id)]).map(drop)
    }

    fn state(&self, id: &str) -> Result<State, OciError> {
        #[derive(serde::Deserialize)]
        struct Raw {
            status: String,
            #[serde(default)]
            pid: i32,
            #[serde(default)]
            bundle: PathBuf,
        }
        let out = self.run("state", id, &[os(id)])?;
        let raw: Raw = serde_json::from_slice(&out).map_err(|e| self.parse_error("state", e))?;
        Ok(State {
            status: Status::parse(&raw.status),
            pid: (raw.pid > 0).then_some(raw.pid),
            bundle: raw.bundle,
        })
    }

    fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), OciError> {
        let mut args = Vec::with_capacity(3);
        if all {
            args.push(os("--all"));
        }
        args.push(os(id));
        args.push(os(signal.to_string()));
        self.run("kill", id, &args).map(drop)
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), OciError> {
        let mut args = Vec::with_capacity(2);
        if force {
            args.push(os("--force"));
        }
        args.push(os(id));
        self.run("delete", id, &args).map(drop)
    }

    fn exec(&self, id: &str, options: &ExecOptions) -> Result<ExecCommand, OciError> {
        let log = self.log()?;
        let mut command = self.command(&log);
        command
            .arg("exec")
            .arg("--process")
            .arg(&options.process_json);
        if options.tty {
            command.arg("--tty");
        }
        if let Some(socket) = &options.console_socket {
            command.arg("--console-socket").arg(socket);
        }
        if let Some(pid_file) = &options.pid_file {
            command.arg("--pid-file").arg(pid_file);
        }
        if options.detach {
            command.arg("--detach");
        }
        command.arg(id);
        Ok(ExecCommand { command, log })
    }

    fn update(&self, id: &str, resources_json: &[u8]) -> Result<(), OciError> {
        let resources = self.log()?;
        std::fs::write(resources.path(), resources_json).map_err(|source| OciError::Io {
            what: "cannot write resources file",
            path: resources.path().to_owned(),
            source,
        })?;
        let args = [os("--resources"), resources.path().into(), os(id)];
        self.run("update", id, &args).map(drop)
    }

    fn pause(&self, id: &str) -> Result<(), OciError> {
        self.run("pause", id, &[os(id)]).map(drop)
    }

    fn resume(&self, id: &str) -> Result<(), OciError> {
        self.run("resume", id, &[os(id)]).map(drop)
    }

    fn features(&self) -> Result<Features, OciError> {
        let out = self.run("features", "", &[])?;
        Features::from_json(&out).map_err(|e| self.parse_error("features", e))
    }
}
