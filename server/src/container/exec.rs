//! `ExecSync`: a command in a running container, its output captured (and
//! capped) and its time bounded. A timed-out command is killed and reaped
//! before the answer, so no probe leaves a process behind.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use krio_proto::v1;
use krio_runtime::oci::{ExecCommand, ExecOptions, OciCli, OciRuntime};

use crate::error::Error;
use crate::state::ContainerRecord;

/// At most this much of each stream is kept (the kubelet's probes need a
/// few KiB; CVE-2022-1708 was an unbounded buffer here).
pub const MAX_OUTPUT: usize = 16 * 1024 * 1024;

/// An exec about to run: the runtime's command line, and what is needed to
/// kill the process inside the container later.
pub struct PreparedExec {
    /// The OCI runtime's `exec` command (stdio not yet set).
    pub exec: ExecCommand,
    /// For a TTY exec: the console socket the runtime sends the pty to.
    pub console: Option<std::os::unix::net::UnixListener>,
    pid_file: PathBuf,
    _files: RemoveFiles,
}

impl PreparedExec {
    /// Kills the exec'd process inside the container (its PID is in the
    /// runtime's pid file), e.g. after a timeout or a client disconnect.
    pub fn kill(&self) {
        if let Ok(pid) =
            std::fs::read_to_string(&self.pid_file).map(|s| s.trim().parse::<i32>().unwrap_or(0))
            && pid > 0
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Prepares `cmd` to run in the container with the container's process
/// settings (user, env, cwd, capabilities).
pub fn prepare(
    runtime: &OciCli,
    record: &ContainerRecord,
    cmd: &[String],
    tty: bool,
) -> Result<PreparedExec, Error> {
    let run_dir = record.bundle.parent().ok_or_else(|| {
        Error::internal("exec", std::io::Error::other("container has no run dir"))
    })?;
    let tag = crate::clock::new_id()?;
    let process_json = run_dir.join(format!("exec-{}.json", &tag[..16]));
    let pid_file = run_dir.join(format!("exec-{}.pid", &tag[..16]));
    // In the short state dir: a socket path must fit in sockaddr_un.
    let console_path = record
        .state_dir
        .parent()
        .unwrap_or(&record.state_dir)
        .join(format!("e{}.sock", &tag[..24]));
    let files = RemoveFiles(vec![
        process_json.clone(),
        pid_file.clone(),
        console_path.clone(),
    ]);
    write_process(&record.bundle.join("config.json"), &process_json, cmd, tty)?;
    let console = if tty {
        Some(
            std::os::unix::net::UnixListener::bind(&console_path).map_err(|e| {
                Error::internal(
                    format!("binding the console socket {}", console_path.display()),
                    e,
                )
            })?,
        )
    } else {
        None
    };
    let exec = runtime
        .exec(
            &record.id,
            &ExecOptions {
                process_json,
                tty,
                console_socket: tty.then(|| console_path.clone()),
                // runc hands a TTY's console over only when it detaches.
                pid_file: Some(pid_file.clone()),
                detach: tty,
            },
        )
        .map_err(|e| Error::internal("preparing the exec", e))?;
    let mut exec = exec;
    if tty {
        // A detached process is not runc's child: wait for it through
        // `krio exec-wait`, its subreaper.
        let runtime_cmd = std::mem::replace(
            &mut exec.command,
            std::process::Command::new("/proc/self/exe"),
        );
        exec.command
            .arg("exec-wait")
            .arg("--pid-file")
            .arg(&pid_file)
            .arg("--")
            .arg(runtime_cmd.get_program())
            .args(runtime_cmd.get_args());
        for (key, value) in runtime_cmd.get_envs() {
            match value {
                Some(v) => exec.command.env(key, v),
                None => exec.command.env_remove(key),
            };
        }
    }
    Ok(PreparedExec {
        exec,
        console,
        pid_file,
        _files: files,
    })
}

/// Runs `cmd` in the container and waits for it (at most `timeout` seconds
/// when positive).
pub fn exec_sync(
    runtime: &OciCli,
    record: &ContainerRecord,
    cmd: &[String],
    timeout: i64,
) -> Result<v1::ExecSyncResponse, Error> {
    let mut prepared = prepare(runtime, record, cmd, false)?;
    let mut child = prepared
        .exec
        .command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::internal("running the OCI runtime's exec", e))?;
    let stdout = child.stdout.take().map(capped_reader);
    let stderr = child.stderr.take().map(capped_reader);

    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(());
        status
    });
    let timed_out = if timeout > 0 {
        rx.recv_timeout(Duration::from_secs(timeout.unsigned_abs()))
            .is_err()
    } else {
        rx.recv().is_err()
    };
    if timed_out {
        // Kill the command inside the container; runc's exec then ends.
        prepared.kill();
    }
    let status = waiter
        .join()
        .map_err(|_| Error::internal("exec", std::io::Error::other("waiter thread panicked")))?
        .map_err(|e| Error::internal("waiting for the exec", e))?;
    let stdout = stdout
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    let stderr = stderr
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    if timed_out {
        return Err(Error::DeadlineExceeded(format!(
            "command {cmd:?} in container {} timed out after {timeout}s and was killed",
            record.id
        )));
    }
    let exit_code = match status.code() {
        Some(code) => code,
        None => {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        }
    };
    if exit_code != 0 && stdout.is_empty() && stderr.is_empty() {
        // runc's own failure (e.g. the binary is missing) is in its log.
        let message = prepared.exec.log.message();
        if !message.is_empty() {
            return Ok(v1::ExecSyncResponse {
                stdout,
                stderr: message.into_bytes(),
                exit_code,
            });
        }
    }
    Ok(v1::ExecSyncResponse {
        stdout,
        stderr,
        exit_code,
    })
}

/// The container's process with `cmd` as its args.
fn write_process(config_json: &Path, out: &Path, cmd: &[String], tty: bool) -> Result<(), Error> {
    let text = std::fs::read(config_json)
        .map_err(|e| Error::internal(format!("reading {}", config_json.display()), e))?;
    let spec: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| Error::internal("parsing config.json", e))?;
    let mut process = spec.get("process").cloned().unwrap_or_default();
    process["args"] = serde_json::json!(cmd);
    process["terminal"] = serde_json::json!(tty);
    std::fs::write(out, process.to_string())
        .map_err(|e| Error::internal(format!("writing {}", out.display()), e))
}

fn capped_reader(mut stream: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                // Keep reading past the cap so the writer never blocks.
                Ok(n) => {
                    let room = MAX_OUTPUT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        kept
    })
}

struct RemoveFiles(Vec<PathBuf>);

impl Drop for RemoveFiles {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}
