//! The pod infra process: the PID 1 that holds a pod's shared PID namespace
//! (only pods that share one get it; design.md: no pause container).
//!
//! The daemon runs `krio pod-infra` (a fresh, single-threaded process, so
//! forking there is safe). That process joins the pod's namespaces,
//! unshares a PID namespace and forks: the child is PID 1 of the new
//! namespace and reaps orphans until it is killed; the parent writes the
//! child's host PID and exits, so the infra process is not the daemon's
//! child and outlives daemon restarts. The daemon then pins
//! `/proc/<pid>/ns/pid` so containers can join it by path.

#![allow(unsafe_code, reason = "fork(2) in a fresh single-threaded process")]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::{ForkResult, Pid, fork, setsid};

/// Arguments of `krio pod-infra`.
#[derive(Debug, Clone, clap::Args)]
pub struct InfraArgs {
    /// Where to write the infra process's host PID.
    #[arg(long)]
    pub pid_file: PathBuf,
    /// The pod's namespace pins to join first (net, ipc, uts).
    #[arg(long = "join")]
    pub join: Vec<PathBuf>,
}

/// Runs in the `krio pod-infra` process, before any thread exists.
pub fn run_infra(args: &InfraArgs) -> anyhow::Result<()> {
    for ns in &args.join {
        let file = File::open(ns)
            .map_err(|e| anyhow::anyhow!("opening namespace {}: {e}", ns.display()))?;
        setns(file, CloneFlags::empty())
            .map_err(|e| anyhow::anyhow!("joining namespace {}: {e}", ns.display()))?;
    }
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| anyhow::anyhow!("unshare(CLONE_NEWPID): {e}"))?;
    // Block the signals PID 1 waits for before the child exists.
    let mut waited = SigSet::empty();
    for sig in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        waited.add(sig);
    }
    waited
        .thread_block()
        .map_err(|e| anyhow::anyhow!("blocking signals: {e}"))?;
    // SAFETY: `krio pod-infra` is a freshly exec'd process that has started
    // no threads (no async runtime, no logging threads), so the child is a
    // complete copy and may run any code.
    match unsafe { fork() }.map_err(|e| anyhow::anyhow!("fork: {e}"))? {
        ForkResult::Child => {
            let _ = setsid();
            // Let go of the daemon's pipes: it waits for them to close.
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                let _ = nix::unistd::dup2_stdin(&null);
                let _ = nix::unistd::dup2_stdout(&null);
                let _ = nix::unistd::dup2_stderr(&null);
            }
            pid1_loop(&waited)
        }
        ForkResult::Parent { child } => {
            let mut f = File::create(&args.pid_file)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", args.pid_file.display()))?;
            writeln!(f, "{child}")?;
            f.sync_all()?;
            Ok(())
        }
    }
}

/// PID 1 of the pod: reap every orphan, exit on TERM or INT.
fn pid1_loop(waited: &SigSet) -> ! {
    loop {
        match waited.wait() {
            Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => std::process::exit(0),
            _ => {
                while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    if status == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
            }
        }
    }
}

/// Starts the infra process for a pod and returns its host PID. Blocking.
pub fn start(krio: &Path, pid_file: &Path, join: &[PathBuf]) -> std::io::Result<i32> {
    let mut cmd = Command::new(krio);
    cmd.arg("pod-infra").arg("--pid-file").arg(pid_file);
    for ns in join {
        cmd.arg("--join").arg(ns);
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "krio pod-infra failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = std::fs::read_to_string(pid_file)?;
    text.trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("bad pid {text:?} in {}", pid_file.display())))
}

/// Kills the infra process (which kills every process in its PID
/// namespace) if `pid` still is the one whose namespace is pinned at `pin`.
pub fn kill(pid: i32, pin: &Path) {
    if !same_pid_namespace(pid, pin) {
        return;
    }
    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    // It is not our child, so we can't reap it: wait until it is dead
    // (gone, or a zombie waiting for init), bounded.
    for _ in 0..200 {
        if !alive(pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `pid` runs (exists and is not a zombie).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Whether `pid` is alive and is PID 1 of the namespace pinned at `pin`
/// (guards against a recycled PID).
pub fn same_pid_namespace(pid: i32, pin: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(pinned) = std::fs::metadata(pin) else {
        return false;
    };
    let Ok(proc_ns) = std::fs::metadata(format!("/proc/{pid}/ns/pid")) else {
        return false;
    };
    pinned.ino() == proc_ns.ino() && pinned.dev() == proc_ns.dev()
}
