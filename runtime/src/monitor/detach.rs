//! Detaching the monitor from the daemon: a double fork with `setsid` in
//! between, so the daemon never holds the monitor (or the container) as a
//! child and the monitor has no controlling terminal.
#![allow(unsafe_code)]

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork, setsid};

/// Which process returns from [`double_fork`].
pub(crate) enum Side {
    /// The process the daemon spawned; the monitor was set up (or failed
    /// to be, with the reason).
    Original(Result<(), String>),
    /// The detached monitor: a grandchild in its own session.
    Monitor,
}

/// Forks twice: the original process waits for the middle one, which
/// starts a new session, forks the monitor and exits at once.
///
/// Must be called while the process has a single thread.
pub(crate) fn double_fork() -> nix::Result<Side> {
    // SAFETY: the monitor binary starts no threads before this point, so
    // the child is a complete copy of a single-threaded process and may
    // run any code.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            let result = loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, 0)) => break Ok(()),
                    Ok(WaitStatus::Exited(_, code)) => {
                        break Err(format!("detaching failed (status {code})"));
                    }
                    Ok(WaitStatus::Signaled(_, sig, _)) => {
                        break Err(format!("detaching failed ({sig})"));
                    }
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => break Err(format!("waiting for the detaching process: {e}")),
                }
            };
            Ok(Side::Original(result))
        }
        ForkResult::Child => {
            if setsid().is_err() {
                std::process::exit(2);
            }
            // SAFETY: still single-threaded (see above).
            match unsafe { fork() } {
                Ok(ForkResult::Child) => Ok(Side::Monitor),
                Ok(ForkResult::Parent { .. }) => std::process::exit(0),
                Err(_) => std::process::exit(3),
            }
        }
    }
}
