//! Pinned network namespaces: a new namespace kept alive by a bind mount of
//! its nsfs file onto a path (the daemon uses `/run/krio/ns/net/<sandbox>`),
//! so it outlives every process and can be joined or handed to CNI by path.
//!
//! The daemon is multi-threaded (tokio), so it must not fork. Instead a
//! dedicated thread unshares its own network namespace (`unshare` with
//! `CLONE_NEWNET` affects only the calling thread), bind-mounts
//! `/proc/thread-self/ns/net` onto the pin, and exits; the namespace change
//! dies with the thread, the mount keeps the namespace. Bringing up `lo`
//! inside is the loopback CNI plugin's job.
//!
//! Everything here goes through nix's safe wrappers: no `unsafe`.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::statfs::{NSFS_MAGIC, statfs};

/// Why a namespace could not be pinned or removed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The pin path exists already.
    #[error("cannot pin network namespace at {0}: the path exists")]
    Exists(PathBuf),
    /// Creating the pin file or its parent dirs failed.
    #[error("cannot create network namespace pin {path}: {source}")]
    CreatePin {
        /// The pin.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `unshare(CLONE_NEWNET)` failed (needs CAP_SYS_ADMIN).
    #[error("cannot create network namespace for {path}: unshare: {source}")]
    Unshare {
        /// The pin.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// The bind mount onto the pin failed.
    #[error("cannot pin network namespace at {path}: bind mount: {source}")]
    Mount {
        /// The pin.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// The pinning thread could not be started or died.
    #[error("cannot pin network namespace at {path}: the pinning thread failed: {source}")]
    Thread {
        /// The pin.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Unmounting the pin failed.
    #[error("cannot unmount network namespace pin {path}: {source}")]
    Unmount {
        /// The pin.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// Removing the pin file failed.
    #[error("cannot remove network namespace pin {path}: {source}")]
    RemovePin {
        /// The pin.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Creates a new network namespace pinned at `path`. Parent dirs are
/// created with mode 0700; `path` itself must not exist.
pub fn create_pinned(path: &Path) -> Result<(), NetnsError> {
    let create_err = |source| NetnsError::CreatePin {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(create_err)?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(NetnsError::Exists(path.to_path_buf()));
        }
        Err(e) => return Err(create_err(e)),
    }

    let target = path.to_path_buf();
    let pinned = std::thread::Builder::new()
        .name("krio-netns-pin".into())
        .spawn(move || -> Result<(), NetnsError> {
            // Only this thread changes namespace, and it exits right after.
            unshare(CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Unshare {
                path: target.clone(),
                source,
            })?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|source| NetnsError::Mount {
                path: target.clone(),
                source,
            })
        })
        .map_err(|source| NetnsError::Thread {
            path: path.to_path_buf(),
            source,
        })
        .and_then(|handle| {
            handle.join().unwrap_or_else(|_| {
                Err(NetnsError::Thread {
                    path: path.to_path_buf(),
                    source: std::io::Error::other("panicked"),
                })
            })
        });
    if let Err(e) = pinned {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// Unmounts (lazily) and removes a pin. A missing or unmounted pin is fine,
/// so this can be repeated.
pub fn remove_pinned(path: &Path) -> Result<(), NetnsError> {
    // A pin mounted more than once (it should not be) needs one unmount
    // each; bound the loop anyway.
    for _ in 0..16 {
        if !is_netns(path) {
            break;
        }
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            // Not a mount point (any more), or no such path.
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => break,
            Err(source) => {
                return Err(NetnsError::Unmount {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::RemovePin {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Whether `path` refers to a live network namespace (an nsfs file, such as
/// a pin or `/proc/<pid>/ns/net`).
pub fn is_netns(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_is_idempotent_without_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pin = dir.path().join("ns");
        remove_pinned(&pin).expect("missing pin");
        std::fs::write(&pin, "").expect("write");
        assert!(!is_netns(&pin));
        remove_pinned(&pin).expect("unmounted pin");
        assert!(!pin.exists());
    }

    #[test]
    fn proc_self_netns_is_a_netns() {
        assert!(is_netns(Path::new("/proc/self/ns/net")));
        assert!(!is_netns(Path::new("/nonexistent")));
    }

    #[test]
    fn existing_pin_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pin = dir.path().join("ns");
        std::fs::write(&pin, "").expect("write");
        assert!(matches!(create_pinned(&pin), Err(NetnsError::Exists(_))));
    }
}
