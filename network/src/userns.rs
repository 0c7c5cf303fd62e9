//! Pods with their own user namespace: the user namespace and the pod's
//! network, IPC and UTS namespaces created *inside* it (so the pod's root
//! owns them: sysfs, mqueue and network settings work in its containers),
//! each pinned like [`crate::podns`] pins.
//!
//! A thread of the multi-threaded daemon can neither own a user namespace
//! nor create namespaces inside one, so a helper process does it: the
//! caller's `helper` command (krio re-executing itself) runs
//! [`helper_main`], and [`create`] drives it over its stdin and stdout:
//!
//! 1. helper: `unshare(CLONE_NEWUSER)`, writes `u`;
//! 2. daemon: writes `/proc/<pid>/uid_map` and `gid_map`, writes `g`;
//! 3. helper: unshares the other kinds, sets hostname and sysctls, writes
//!    `r` (or `E<message>` and exits on any failure);
//! 4. daemon: bind-mounts `/proc/<pid>/ns/<kind>` onto each pin, closes the
//!    helper's stdin; the helper exits.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};

use crate::podns::{self, Kind, PodNsError, PodNsRequest};

/// How long each step of the helper may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// One line of `/proc/<pid>/uid_map` or `gid_map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// First ID inside the namespace.
    pub inside: u32,
    /// First ID on the host.
    pub outside: u32,
    /// How many IDs.
    pub length: u32,
}

impl IdMap {
    fn line(self) -> String {
        format!("{} {} {}\n", self.inside, self.outside, self.length)
    }
}

/// Creates the pod's user namespace with `uids`/`gids`, and the kinds of
/// `req` inside it; returns every pin, the user namespace's first. On
/// failure nothing is left behind. `helper` must run [`helper_main`] with
/// the same kinds, hostname and sysctls.
pub fn create(
    req: &PodNsRequest,
    uids: IdMap,
    gids: IdMap,
    mut helper: Command,
) -> Result<Vec<(Kind, PathBuf)>, PodNsError> {
    let mut pins = Vec::new();
    for kind in std::iter::once(Kind::User).chain(req.kinds.iter().copied()) {
        let path = podns::pin_path(&req.dir, kind, &req.pod_id);
        if let Err(source) = podns::create_pin_file(&path) {
            podns::remove_all(&pins);
            return Err(PodNsError::Pin {
                kind: kind.name(),
                path,
                source,
            });
        }
        pins.push((kind, path));
    }
    let child = helper
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| PodNsError::Userns(format!("starting the helper: {e}")));
    let result = child.and_then(|mut child| {
        let done = drive(&mut child, uids, gids, &pins);
        // Closing stdin lets it exit; kill it if a step failed.
        drop(child.stdin.take());
        if done.is_err() {
            let _ = child.kill();
        }
        let _ = child.wait();
        done
    });
    if let Err(e) = result {
        podns::remove_all(&pins);
        return Err(e);
    }
    Ok(pins)
}

fn drive(
    child: &mut Child,
    uids: IdMap,
    gids: IdMap,
    pins: &[(Kind, PathBuf)],
) -> Result<(), PodNsError> {
    let fail = |what: String| PodNsError::Userns(what);
    let pid = child.id();
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| fail("no helper stdout".into()))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| fail("no helper stdin".into()))?;
    expect(&mut stdout, b'u')?;
    for (file, map) in [("uid_map", uids), ("gid_map", gids)] {
        std::fs::write(format!("/proc/{pid}/{file}"), map.line())
            .map_err(|e| fail(format!("writing {file} {:?}: {e}", map.line().trim())))?;
    }
    stdin
        .write_all(b"g")
        .map_err(|e| fail(format!("signalling the helper: {e}")))?;
    expect(&mut stdout, b'r')?;
    podns::bind_pins(&format!("/proc/{pid}/ns"), pins)?;
    child.stdin = Some(stdin);
    Ok(())
}

/// Reads the helper's next status byte (bounded); `E...` carries its error.
fn expect(stdout: &mut std::process::ChildStdout, want: u8) -> Result<(), PodNsError> {
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(STEP_TIMEOUT.as_millis()).unwrap_or(u16::MAX);
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(0) => {
            return Err(PodNsError::Userns(format!(
                "the helper did not answer within {STEP_TIMEOUT:?}"
            )));
        }
        Ok(_) => {}
        Err(e) => return Err(PodNsError::Userns(format!("waiting for the helper: {e}"))),
    }
    let mut byte = [0u8; 1];
    match stdout.read(&mut byte) {
        Ok(1) if byte[0] == want => Ok(()),
        Ok(1) if byte[0] == b'E' => {
            let mut message = String::new();
            let _ = stdout.take(4096).read_to_string(&mut message);
            Err(PodNsError::Userns(message.trim().to_owned()))
        }
        Ok(_) => Err(PodNsError::Userns("the helper exited early".into())),
        Err(e) => Err(PodNsError::Userns(format!("reading from the helper: {e}"))),
    }
}

/// The helper's side; runs in a fresh single-threaded process. Never
/// returns an error: failures are reported to the daemon as `E<message>`.
pub fn helper_main(req: &PodNsRequest) -> std::process::ExitCode {
    let mut out = std::io::stdout().lock();
    let mut input = std::io::stdin().lock();
    let result = (|| -> Result<(), String> {
        unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| format!("unshare(CLONE_NEWUSER): {e}"))?;
        out.write_all(b"u")
            .and_then(|()| out.flush())
            .map_err(|e| e.to_string())?;
        let mut go = [0u8; 1];
        input
            .read_exact(&mut go)
            .map_err(|e| format!("waiting for the id maps: {e}"))?;
        let flags = req
            .kinds
            .iter()
            .fold(CloneFlags::empty(), |f, k| f | k.flag());
        unshare(flags).map_err(|e| format!("unshare inside the user namespace: {e}"))?;
        podns::configure(req, req.kinds.contains(&Kind::Uts)).map_err(|e| e.to_string())?;
        out.write_all(b"r")
            .and_then(|()| out.flush())
            .map_err(|e| e.to_string())?;
        // Hold the namespaces until the daemon has pinned them.
        let mut rest = Vec::new();
        let _ = input.read_to_end(&mut rest);
        Ok(())
    })();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            let _ = write!(out, "E{message}");
            let _ = out.flush();
            std::process::ExitCode::FAILURE
        }
    }
}
