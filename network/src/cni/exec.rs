//! Running plugin binaries: finding them in the bin dirs, running them with
//! the CNI environment and the request on stdin, bounding their time and
//! output, and reading the error a failed plugin reports.
//!
//! Everything goes through the [`PluginExec`] trait so the protocol logic is
//! tested with a fake; [`RealExec`] is the one that runs processes.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;

/// The CNI operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CniCommand {
    /// `ADD`.
    Add,
    /// `DEL`.
    Del,
    /// `CHECK`.
    Check,
    /// `STATUS` (1.1.0).
    Status,
    /// `GC` (1.1.0).
    Gc,
    /// `VERSION`.
    Version,
}

impl CniCommand {
    /// The value of `CNI_COMMAND`.
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
            CniCommand::Status => "STATUS",
            CniCommand::Gc => "GC",
            CniCommand::Version => "VERSION",
        }
    }
}

impl fmt::Display for CniCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a plugin could not be run to completion.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The plugin `type` is not a plain file name.
    #[error("invalid CNI plugin type {0:?}")]
    InvalidType(String),
    /// No executable of that name in any bin dir.
    #[error("CNI plugin {plugin:?} not found in {}", display_dirs(.dirs))]
    NotFound {
        /// The plugin type.
        plugin: String,
        /// The dirs searched.
        dirs: Vec<PathBuf>,
    },
    /// The process could not be started.
    #[error("cannot start CNI plugin {path}: {source}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the process or reading its output failed.
    #[error("i/o with CNI plugin {path}: {source}")]
    Io {
        /// The binary.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The plugin ran past its time and was killed.
    #[error("CNI plugin {path} did not finish within {timeout:?} and was killed{}", stderr_suffix(.stderr))]
    Timeout {
        /// The binary.
        path: PathBuf,
        /// The limit.
        timeout: Duration,
        /// What it had written to stderr.
        stderr: String,
    },
    /// The plugin wrote more to stdout than any result needs.
    #[error("CNI plugin {path} wrote more than {limit} bytes to stdout")]
    OutputTooLarge {
        /// The binary.
        path: PathBuf,
        /// The limit.
        limit: usize,
    },
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    let v: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    if v.is_empty() {
        "no bin dirs".into()
    } else {
        v.join(":")
    }
}

fn stderr_suffix(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(" (stderr: {s})")
    }
}

/// What a finished plugin process produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginOutput {
    /// Its exit code; `None` when a signal ended it.
    pub exit_code: Option<i32>,
    /// Its stdout.
    pub stdout: Vec<u8>,
    /// Its stderr (the tail, if it wrote a lot).
    pub stderr: Vec<u8>,
}

impl PluginOutput {
    /// Whether the plugin succeeded (exit code 0).
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// Finds and runs plugin binaries.
pub trait PluginExec: Send + Sync {
    /// Finds the binary for a plugin `type`.
    fn find(&self, plugin_type: &str) -> Result<PathBuf, ExecError>;

    /// Runs `binary` with `env` (the `CNI_*` variables other than
    /// `CNI_PATH`, which the implementation adds) and `stdin`, and returns
    /// what it produced, whatever its exit status.
    fn run(
        &self,
        binary: &Path,
        env: &[(&str, &str)],
        stdin: &[u8],
    ) -> Result<PluginOutput, ExecError>;
}

/// The error object a failed plugin writes (`code`, `msg`, `details`), with
/// the plugin's stderr and exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// The CNI error code, if the plugin wrote an error object.
    pub code: Option<u32>,
    /// The short message (or the plugin's raw stdout when it wrote no
    /// error object).
    pub msg: String,
    /// The longer description.
    pub details: String,
    /// The plugin's stderr.
    pub stderr: String,
    /// The plugin's exit code; `None` when a signal ended it.
    pub exit_code: Option<i32>,
}

/// Well-known CNI error codes.
pub mod codes {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist: no cleanup needed.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid environment variables.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODING_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// The plugin is not available (STATUS).
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// The plugin is not available and existing containers may have limited
    /// connectivity (STATUS).
    pub const PLUGIN_NOT_AVAILABLE_LIMITED: u32 = 51;
}

fn code_meaning(code: u32) -> Option<&'static str> {
    Some(match code {
        codes::INCOMPATIBLE_VERSION => "incompatible CNI version",
        codes::UNSUPPORTED_FIELD => "unsupported field in network configuration",
        codes::UNKNOWN_CONTAINER => "container unknown or does not exist",
        codes::INVALID_ENVIRONMENT => "invalid environment variables",
        codes::IO_FAILURE => "i/o failure",
        codes::DECODING_FAILURE => "failed to decode content",
        codes::INVALID_NETWORK_CONFIG => "invalid network config",
        codes::TRY_AGAIN_LATER => "try again later",
        codes::PLUGIN_NOT_AVAILABLE => "plugin not available",
        codes::PLUGIN_NOT_AVAILABLE_LIMITED => "plugin not available, limited connectivity",
        _ => return None,
    })
}

#[derive(Deserialize)]
struct RawPluginError {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// At most this much of a plugin's stdout is quoted in an error.
const MAX_QUOTED_STDOUT: usize = 4096;

impl PluginError {
    /// Reads the error of a plugin that did not succeed. Plugins write the
    /// error object to stdout; some older ones write it to stderr.
    pub fn from_output(out: &PluginOutput) -> Self {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let parsed = serde_json::from_slice::<RawPluginError>(&out.stdout)
            .or_else(|_| serde_json::from_slice::<RawPluginError>(&out.stderr));
        match parsed {
            Ok(raw) => PluginError {
                code: Some(raw.code),
                msg: raw.msg,
                details: raw.details,
                stderr,
                exit_code: out.exit_code,
            },
            Err(_) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let mut msg = stdout.trim().to_string();
                if msg.len() > MAX_QUOTED_STDOUT {
                    let mut end = MAX_QUOTED_STDOUT;
                    while !msg.is_char_boundary(end) {
                        end -= 1;
                    }
                    msg.truncate(end);
                    msg.push('…');
                }
                PluginError {
                    code: None,
                    msg,
                    details: String::new(),
                    stderr,
                    exit_code: out.exit_code,
                }
            }
        }
    }

    /// Whether the plugin said the container is unknown (code 3), which
    /// means no cleanup is needed.
    pub fn is_unknown_container(&self) -> bool {
        self.code == Some(codes::UNKNOWN_CONTAINER)
    }

    /// Whether the plugin asked to be retried later (code 11).
    pub fn is_try_again_later(&self) -> bool {
        self.code == Some(codes::TRY_AGAIN_LATER)
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => {
                write!(f, "error code {code}")?;
                if let Some(m) = code_meaning(code) {
                    write!(f, " ({m})")?;
                }
                if !self.msg.is_empty() {
                    write!(f, ": {}", self.msg)?;
                }
            }
            None => {
                match self.exit_code {
                    Some(c) => write!(f, "exit status {c}")?,
                    None => write!(f, "killed by a signal")?,
                }
                if !self.msg.is_empty() {
                    write!(f, ": {}", self.msg)?;
                }
            }
        }
        if !self.details.is_empty() {
            write!(f, "; {}", self.details)?;
        }
        if !self.stderr.is_empty() {
            write!(f, " (stderr: {})", self.stderr)?;
        }
        Ok(())
    }
}

impl std::error::Error for PluginError {}

/// Limits for [`RealExec`].
const DEFAULT_MAX_STDOUT: usize = 4 << 20;
const DEFAULT_MAX_STDERR: usize = 64 << 10;
/// How long output pipes may stay open after the plugin exited (a child it
/// left behind holds them) before its process group is killed.
const PIPE_GRACE: Duration = Duration::from_secs(2);
/// `PATH` for plugins when the daemon has none (plugins run `iptables`…).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs plugin binaries found in a list of directories.
#[derive(Debug, Clone)]
pub struct RealExec {
    bin_dirs: Vec<PathBuf>,
    timeout: Duration,
    max_stdout: usize,
    max_stderr: usize,
}

impl RealExec {
    /// Searches `bin_dirs` in order; each run is killed after `timeout`.
    pub fn new(bin_dirs: Vec<PathBuf>, timeout: Duration) -> Self {
        RealExec {
            bin_dirs,
            timeout,
            max_stdout: DEFAULT_MAX_STDOUT,
            max_stderr: DEFAULT_MAX_STDERR,
        }
    }

    /// Sets the stdout and stderr size limits (stdout beyond its limit is an
    /// error; stderr is cut to its last `max_stderr` bytes).
    pub fn with_output_limits(mut self, max_stdout: usize, max_stderr: usize) -> Self {
        self.max_stdout = max_stdout;
        self.max_stderr = max_stderr;
        self
    }

    fn cni_path(&self) -> String {
        let dirs: Vec<String> = self
            .bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        dirs.join(":")
    }
}

/// Whether a plugin type is a plain file name.
pub(crate) fn is_valid_plugin_type(t: &str) -> bool {
    !t.is_empty() && t != "." && t != ".." && !t.contains(['/', '\0'])
}

impl PluginExec for RealExec {
    fn find(&self, plugin_type: &str) -> Result<PathBuf, ExecError> {
        if !is_valid_plugin_type(plugin_type) {
            return Err(ExecError::InvalidType(plugin_type.to_string()));
        }
        for dir in &self.bin_dirs {
            let path = dir.join(plugin_type);
            if let Ok(meta) = std::fs::metadata(&path)
                && meta.is_file()
                && meta.permissions().mode() & 0o111 != 0
            {
                return Ok(path);
            }
        }
        Err(ExecError::NotFound {
            plugin: plugin_type.to_string(),
            dirs: self.bin_dirs.clone(),
        })
    }

    fn run(
        &self,
        binary: &Path,
        env: &[(&str, &str)],
        stdin: &[u8],
    ) -> Result<PluginOutput, ExecError> {
        let mut cmd = std::process::Command::new(binary);
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
            )
            .envs(env.iter().copied())
            .env("CNI_PATH", self.cni_path())
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills what it started too.
            .process_group(0);
        let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
            path: binary.to_path_buf(),
            source,
        })?;
        let pgid = Pid::from_raw(child.id() as i32);
        let io_err = |source| ExecError::Io {
            path: binary.to_path_buf(),
            source,
        };

        // Feed stdin from a thread: a plugin that does not read it must not
        // block us once the request outgrows the pipe buffer.
        if let Some(mut pipe) = child.stdin.take() {
            let data = stdin.to_vec();
            std::thread::spawn(move || {
                // A plugin that exits without reading gives EPIPE: its exit
                // status tells the story.
                let _ = pipe.write_all(&data);
            });
        }
        let stdout_rx = spawn_reader(child.stdout.take(), Keep::Head(self.max_stdout));
        let stderr_rx = spawn_reader(child.stderr.take(), Keep::Tail(self.max_stderr));

        let deadline = Instant::now() + self.timeout;
        let status = match wait_until(&mut child, deadline).map_err(io_err)? {
            Some(status) => status,
            None => {
                // SIGKILL the whole group while the leader is still unreaped,
                // so the group id cannot have been reused.
                let _ = killpg(pgid, Signal::SIGKILL);
                child.wait().map_err(io_err)?;
                let stderr = stderr_rx
                    .recv_timeout(PIPE_GRACE)
                    .map(|c| String::from_utf8_lossy(&c.data).trim().to_string())
                    .unwrap_or_default();
                return Err(ExecError::Timeout {
                    path: binary.to_path_buf(),
                    timeout: self.timeout,
                    stderr,
                });
            }
        };

        let grace = deadline
            .saturating_duration_since(Instant::now())
            .max(PIPE_GRACE);
        let collect = |rx: &mpsc::Receiver<Captured>| -> Result<Captured, ExecError> {
            match rx.recv_timeout(grace) {
                Ok(c) => Ok(c),
                Err(_) => {
                    // Something the plugin started still holds the pipe.
                    let _ = killpg(pgid, Signal::SIGKILL);
                    rx.recv_timeout(PIPE_GRACE).map_err(|_| {
                        io_err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "output pipe still open after the plugin exited",
                        ))
                    })
                }
            }
        };
        let out = collect(&stdout_rx)?;
        let err = collect(&stderr_rx)?;
        if let Some(e) = out.error.or(err.error) {
            return Err(io_err(e));
        }
        if out.truncated {
            return Err(ExecError::OutputTooLarge {
                path: binary.to_path_buf(),
                limit: self.max_stdout,
            });
        }
        Ok(PluginOutput {
            exit_code: status.code(),
            stdout: out.data,
            stderr: err.data,
        })
    }
}

/// Polls the child until it exits or the deadline passes (`None`).
fn wait_until(
    child: &mut Child,
    deadline: Instant,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

enum Keep {
    Head(usize),
    Tail(usize),
}

struct Captured {
    data: Vec<u8>,
    truncated: bool,
    error: Option<std::io::Error>,
}

/// Reads a pipe to its end on a thread, keeping at most the limit (the
/// first or the last bytes) and draining the rest so the writer never
/// blocks.
fn spawn_reader<R: Read + Send + 'static>(pipe: Option<R>, keep: Keep) -> mpsc::Receiver<Captured> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut captured = Captured {
            data: Vec::new(),
            truncated: false,
            error: None,
        };
        if let Some(mut pipe) = pipe {
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => match keep {
                        Keep::Head(limit) => {
                            let room = limit.saturating_sub(captured.data.len());
                            captured.data.extend_from_slice(&buf[..n.min(room)]);
                            captured.truncated |= n > room;
                        }
                        Keep::Tail(limit) => {
                            captured.data.extend_from_slice(&buf[..n]);
                            if captured.data.len() > limit {
                                let excess = captured.data.len() - limit;
                                captured.data.drain(..excess);
                                captured.truncated = true;
                            }
                        }
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        captured.error = Some(e);
                        break;
                    }
                }
            }
        }
        let _ = tx.send(captured);
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin_dir(scripts: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, body) in scripts {
            let path = dir.path().join(name);
            std::fs::write(&path, body).expect("write script");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        dir
    }

    #[test]
    fn finds_plugins_in_bin_dir_order_and_rejects_bad_types() {
        let a = plugin_dir(&[("bridge", "#!/bin/sh\n")]);
        let b = plugin_dir(&[("bridge", "#!/bin/sh\n"), ("portmap", "#!/bin/sh\n")]);
        std::fs::write(a.path().join("noexec"), "").expect("write");
        let exec = RealExec::new(
            vec![a.path().to_path_buf(), b.path().to_path_buf()],
            Duration::from_secs(5),
        );
        assert_eq!(exec.find("bridge").expect("found"), a.path().join("bridge"));
        assert_eq!(
            exec.find("portmap").expect("found"),
            b.path().join("portmap")
        );
        let err = exec.find("noexec").expect_err("not executable");
        assert!(matches!(err, ExecError::NotFound { .. }), "{err}");
        assert!(
            err.to_string().contains(&a.path().display().to_string()),
            "{err}"
        );
        for bad in ["", "..", "../bridge", "a/b"] {
            assert!(
                matches!(exec.find(bad), Err(ExecError::InvalidType(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn runs_with_a_clean_cni_environment_and_stdin() {
        let dir = plugin_dir(&[(
            "envdump",
            "#!/bin/sh\nenv | sort\necho \"stdin=$(cat)\"\necho oops >&2\n",
        )]);
        let exec = RealExec::new(
            vec![dir.path().to_path_buf(), PathBuf::from("/opt/cni/bin")],
            Duration::from_secs(10),
        );
        let bin = exec.find("envdump").expect("found");
        // No variable of the test process other than PATH may leak in (the
        // shell sets PWD, SHLVL and _ itself).
        let leaked: Vec<String> = std::env::vars()
            .map(|(k, _)| k)
            .filter(|k| {
                !matches!(k.as_str(), "PATH" | "PWD" | "OLDPWD" | "SHLVL" | "_")
                    && !k.starts_with("CNI_")
            })
            .collect();
        let out = exec
            .run(
                &bin,
                &[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "abc")],
                br#"{"x":1}"#,
            )
            .expect("ran");
        assert!(out.success());
        let stdout = String::from_utf8(out.stdout).expect("utf8");
        let lines: Vec<&str> = stdout.lines().collect();
        assert!(lines.contains(&"CNI_COMMAND=ADD"), "{stdout}");
        assert!(lines.contains(&"CNI_CONTAINERID=abc"), "{stdout}");
        let want_path = format!("CNI_PATH={}:/opt/cni/bin", dir.path().display());
        assert!(lines.contains(&want_path.as_str()), "{stdout}");
        assert!(lines.iter().any(|l| l.starts_with("PATH=")), "{stdout}");
        for k in leaked {
            let prefix = format!("{k}=");
            assert!(!lines.iter().any(|l| l.starts_with(&prefix)), "{k} leaked");
        }
        assert!(lines.contains(&r#"stdin={"x":1}"#), "{stdout}");
        assert_eq!(out.stderr, b"oops\n");
    }

    #[test]
    fn timeout_kills_a_hung_plugin_and_its_children() {
        let dir = plugin_dir(&[(
            "hang",
            "#!/bin/sh\necho starting >&2\nsleep 30 &\nsleep 30\n",
        )]);
        let exec = RealExec::new(vec![dir.path().to_path_buf()], Duration::from_millis(300));
        let bin = exec.find("hang").expect("found");
        let start = Instant::now();
        let err = exec
            .run(&bin, &[("CNI_COMMAND", "ADD")], b"{}")
            .expect_err("timed out");
        let took = start.elapsed();
        assert!(took < Duration::from_secs(5), "took {took:?}");
        match &err {
            ExecError::Timeout { stderr, .. } => assert_eq!(stderr, "starting"),
            other => panic!("want timeout, got {other}"),
        }
        assert!(err.to_string().contains("did not finish within"), "{err}");
    }

    #[test]
    fn output_is_capped() {
        let dir = plugin_dir(&[(
            "chatty",
            "#!/bin/sh\nhead -c 100000 /dev/zero\nhead -c 100000 /dev/zero >&2\necho tail >&2\n",
        )]);
        let exec = RealExec::new(vec![dir.path().to_path_buf()], Duration::from_secs(10))
            .with_output_limits(1000, 100);
        let bin = exec.find("chatty").expect("found");
        let err = exec.run(&bin, &[], b"").expect_err("too large");
        assert!(
            matches!(err, ExecError::OutputTooLarge { limit: 1000, .. }),
            "{err}"
        );

        let exec = RealExec::new(vec![dir.path().to_path_buf()], Duration::from_secs(10))
            .with_output_limits(1 << 20, 100);
        let out = exec.run(&bin, &[], b"").expect("ran");
        assert_eq!(out.stdout.len(), 100000);
        assert_eq!(out.stderr.len(), 100);
        assert!(out.stderr.ends_with(b"tail\n"));
    }

    #[test]
    fn parses_plugin_error_json() {
        let out = PluginOutput {
            exit_code: Some(1),
            stdout: br#"{"cniVersion":"1.0.0","code":7,"msg":"Invalid Configuration","details":"Network 192.168.0.0/31 too small to allocate from."}"#.to_vec(),
            stderr: b"some log line\n".to_vec(),
        };
        let e = PluginError::from_output(&out);
        assert_eq!(e.code, Some(7));
        assert_eq!(e.msg, "Invalid Configuration");
        assert_eq!(
            e.details,
            "Network 192.168.0.0/31 too small to allocate from."
        );
        assert_eq!(e.stderr, "some log line");
        assert_eq!(
            e.to_string(),
            "error code 7 (invalid network config): Invalid Configuration; \
             Network 192.168.0.0/31 too small to allocate from. (stderr: some log line)"
        );
    }

    #[test]
    fn plugin_error_without_json_keeps_the_output() {
        let out = PluginOutput {
            exit_code: Some(2),
            stdout: b"panic: boom\n".to_vec(),
            stderr: Vec::new(),
        };
        let e = PluginError::from_output(&out);
        assert_eq!(e.code, None);
        assert_eq!(e.to_string(), "exit status 2: panic: boom");
        let e = PluginError::from_output(&PluginOutput {
            exit_code: Some(1),
            stdout: Vec::new(),
            stderr: br#"{"code":3,"msg":"no such container"}"#.to_vec(),
        });
        assert!(e.is_unknown_container());
    }
}
