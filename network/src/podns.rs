//! A pod's namespaces: network, IPC and UTS, created together and each
//! pinned by a bind mount under `<dir>/<kind>/<pod id>`, with the pod's
//! hostname and sysctls applied inside before anything joins them.
//!
//! As in [`crate::netns`], the daemon must not fork: a dedicated thread
//! unshares the namespaces it needs (`CLONE_NEWNET`, `CLONE_NEWIPC` and
//! `CLONE_NEWUTS` are per-thread), configures them, bind-mounts its
//! `/proc/thread-self/ns/<kind>` files onto the pins, and exits.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

use crate::netns;
use crate::sysctl;

/// A namespace kind a pod can own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Network.
    Net,
    /// System V IPC and POSIX message queues.
    Ipc,
    /// Hostname and domain name.
    Uts,
    /// Process IDs (only pinned from an existing process: a new PID
    /// namespace needs a PID 1, see the daemon's pod infra process).
    Pid,
    /// User and group IDs (created by a helper process, see
    /// [`crate::userns`]: a thread cannot own one).
    User,
}

impl Kind {
    /// The name used in `/proc/<pid>/ns/` and in the pin path.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Net => "net",
            Kind::Ipc => "ipc",
            Kind::Uts => "uts",
            Kind::Pid => "pid",
            Kind::User => "user",
        }
    }

    pub(crate) fn flag(self) -> CloneFlags {
        match self {
            Kind::Net => CloneFlags::CLONE_NEWNET,
            Kind::Ipc => CloneFlags::CLONE_NEWIPC,
            Kind::Uts => CloneFlags::CLONE_NEWUTS,
            Kind::Pid => CloneFlags::CLONE_NEWPID,
            Kind::User => CloneFlags::CLONE_NEWUSER,
        }
    }
}

/// What to create for one pod.
#[derive(Debug, Clone)]
pub struct PodNsRequest {
    /// Pins go to `<dir>/<kind>/<pod_id>`.
    pub dir: PathBuf,
    /// The pod's id (validated by the caller: a hex id).
    pub pod_id: String,
    /// The kinds to create; the others are the node's.
    pub kinds: Vec<Kind>,
    /// The hostname to set in the new UTS namespace.
    pub hostname: String,
    /// Sysctls to apply in the new namespaces (validated by the caller with
    /// [`sysctl::validate`]).
    pub sysctls: Vec<(String, String)>,
}

/// Why a pod's namespaces could not be created.
#[derive(Debug, thiserror::Error)]
pub enum PodNsError {
    /// A pin file or its directory.
    #[error("cannot create {kind} namespace pin {path}: {source}")]
    Pin {
        /// The kind.
        kind: &'static str,
        /// The pin.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `unshare` failed.
    #[error("cannot create the pod's namespaces: unshare: {0}")]
    Unshare(#[source] Errno),
    /// `sethostname` failed.
    #[error("cannot set hostname {hostname:?} in the pod's UTS namespace: {source}")]
    Hostname {
        /// The hostname.
        hostname: String,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// A sysctl could not be written.
    #[error("cannot set sysctl {key}={value:?} in the pod's namespaces: {source}")]
    Sysctl {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bind mount onto a pin failed.
    #[error("cannot pin the pod's {kind} namespace at {path}: {source}")]
    Mount {
        /// The kind.
        kind: &'static str,
        /// The pin.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// The user namespace helper process failed.
    #[error("cannot create the pod's user namespace: {0}")]
    Userns(String),
    /// The worker thread could not run.
    #[error("cannot create the pod's namespaces: worker thread: {0}")]
    Thread(#[source] std::io::Error),
    /// Removing a pin failed.
    #[error(transparent)]
    Remove(#[from] netns::NetnsError),
}

/// The pin path of one kind for one pod.
pub fn pin_path(dir: &Path, kind: Kind, pod_id: &str) -> PathBuf {
    dir.join(kind.name()).join(pod_id)
}

/// Creates the requested namespaces and returns their pins, in request
/// order. On failure nothing is left behind.
pub fn create(req: &PodNsRequest) -> Result<Vec<(Kind, PathBuf)>, PodNsError> {
    let mut pins = Vec::new();
    for &kind in &req.kinds {
        let path = pin_path(&req.dir, kind, &req.pod_id);
        if let Err(source) = create_pin_file(&path) {
            remove_all(&pins);
            return Err(PodNsError::Pin {
                kind: kind.name(),
                path,
                source,
            });
        }
        pins.push((kind, path));
    }
    if pins.is_empty() {
        return Ok(pins);
    }
    let worker_req = req.clone();
    let worker_pins = pins.clone();
    let result = std::thread::Builder::new()
        .name("krio-podns".into())
        .spawn(move || setup_in_thread(&worker_req, &worker_pins))
        .map_err(PodNsError::Thread)
        .and_then(|h| {
            h.join()
                .unwrap_or_else(|_| Err(PodNsError::Thread(std::io::Error::other("panicked"))))
        });
    if let Err(e) = result {
        remove_all(&pins);
        return Err(e);
    }
    Ok(pins)
}

/// Pins an existing namespace file (such as `/proc/<pid>/ns/pid`) at `path`.
pub fn pin_existing(kind: &'static str, source: &Path, path: &Path) -> Result<(), PodNsError> {
    create_pin_file(path).map_err(|source| PodNsError::Pin {
        kind,
        path: path.to_path_buf(),
        source,
    })?;
    mount(
        Some(source),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|err| {
        let _ = std::fs::remove_file(path);
        PodNsError::Mount {
            kind,
            path: path.to_path_buf(),
            source: err,
        }
    })
}

/// Removes pins (idempotent: missing or unmounted pins are fine).
pub fn remove(pins: &[PathBuf]) -> Result<(), PodNsError> {
    for pin in pins {
        netns::remove_pinned(pin)?;
    }
    Ok(())
}

pub(crate) fn remove_all(pins: &[(Kind, PathBuf)]) {
    for (_, pin) in pins {
        let _ = netns::remove_pinned(pin);
    }
}

pub(crate) fn create_pin_file(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .map(drop)
}

/// Runs on the dedicated thread: its namespaces die with it, the pins stay.
fn setup_in_thread(req: &PodNsRequest, pins: &[(Kind, PathBuf)]) -> Result<(), PodNsError> {
    let flags = pins
        .iter()
        .fold(CloneFlags::empty(), |f, (k, _)| f | k.flag());
    unshare(flags).map_err(PodNsError::Unshare)?;
    configure(req, pins.iter().any(|(k, _)| *k == Kind::Uts))?;
    bind_pins("/proc/thread-self/ns", pins)
}

/// Bind-mounts `<ns_dir>/<kind>` (a task's `/proc/.../ns`) onto each pin.
pub(crate) fn bind_pins(ns_dir: &str, pins: &[(Kind, PathBuf)]) -> Result<(), PodNsError> {
    for (kind, path) in pins {
        let source = format!("{ns_dir}/{}", kind.name());
        mount(
            Some(source.as_str()),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| PodNsError::Mount {
            kind: kind.name(),
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Sets the hostname (when the UTS namespace is the pod's own) and the
/// sysctls in the calling thread's current namespaces.
pub(crate) fn configure(req: &PodNsRequest, own_uts: bool) -> Result<(), PodNsError> {
    if own_uts && !req.hostname.is_empty() {
        nix::unistd::sethostname(&req.hostname).map_err(|source| PodNsError::Hostname {
            hostname: req.hostname.clone(),
            source,
        })?;
    }
    // /proc/sys resolves net and IPC keys in the opening thread's namespaces.
    for (key, value) in &req.sysctls {
        let write = || -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .open(sysctl::proc_path(key))?;
            file.write_all(value.as_bytes())
        };
        write().map_err(|source| PodNsError::Sysctl {
            key: key.clone(),
            value: value.clone(),
            source,
        })?;
    }
    Ok(())
}
