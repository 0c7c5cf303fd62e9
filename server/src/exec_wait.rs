//! `krio exec-wait`: runs a detached OCI runtime `exec` (the only way runc
//! hands a TTY exec's console over) as a child subreaper, so the exec'd
//! process is reparented to it and its exit code can be waited for. The
//! daemon runs this as its own short-lived child: the daemon itself never
//! becomes a subreaper (monitors must not turn into its children).

use std::path::PathBuf;
use std::process::Command;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

/// Arguments of `krio exec-wait`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecWaitArgs {
    /// The pid file the runtime writes for the exec'd process.
    #[arg(long)]
    pub pid_file: PathBuf,
    /// The runtime command line (`runc ... exec --detach ...`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Runs the runtime, then waits for the exec'd process; returns its exit
/// code (128 + signal for a signal), or the runtime's if it failed.
pub fn run(args: &ExecWaitArgs) -> anyhow::Result<i32> {
    nix::sys::prctl::set_child_subreaper(true)?;
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("no runtime command given"))?;
    let status = Command::new(program).args(rest).status()?;
    if !status.success() {
        return Ok(status.code().unwrap_or(1));
    }
    let pid: i32 = std::fs::read_to_string(&args.pid_file)?.trim().parse()?;
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => return Ok(code),
            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => return Ok(128 + sig as i32),
            Ok(_) => {}
            // No children left: it was reaped elsewhere (cannot happen as
            // its subreaper) or never ours.
            Err(nix::errno::Errno::ECHILD) => return Ok(-1),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}
