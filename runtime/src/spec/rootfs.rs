//! Reading small files (`/etc/passwd`, `/etc/group`) out of a container's
//! root filesystem, which is hostile input.
//!
//! The path is resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! from a handle on the rootfs, so `..` and symlinks (absolute or relative)
//! can never leave it: a `/etc/passwd` that links to `/etc/shadow` reads the
//! rootfs's own `/etc/shadow`, or nothing. On a kernel without `openat2`
//! (before 5.6) every component is opened with `O_NOFOLLOW` and a symlink
//! anywhere on the path is refused. Only regular files are read (a FIFO or a
//! device would block or leak), opened non-blocking, and never more than a
//! size bound, checked both from `fstat` and while reading.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// The most krio reads of `/etc/passwd` or `/etc/group` (real ones are a few KiB).
pub const MAX_ETC_FILE_BYTES: u64 = 4 << 20;

/// A file inside the rootfs could not be read safely.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The rootfs itself could not be opened.
    #[error("cannot open the container rootfs {root}: {source}")]
    OpenRoot {
        /// The rootfs path.
        root: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file could not be opened or read.
    #[error("cannot read {path} in the container rootfs: {source}")]
    Read {
        /// The path inside the rootfs.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not a regular file (a FIFO, device, directory…).
    #[error("{path} in the container rootfs is not a regular file; refusing to read it")]
    NotRegular {
        /// The path inside the rootfs.
        path: String,
    },
    /// The file is larger than krio is willing to read.
    #[error("{path} in the container rootfs is larger than {limit} bytes; refusing to read it")]
    TooLarge {
        /// The path inside the rootfs.
        path: String,
        /// The bound.
        limit: u64,
    },
    /// A directory could not be created inside the rootfs.
    #[error("cannot create directory {path} in the container rootfs: {source}")]
    Mkdir {
        /// The path inside the rootfs.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A symlink on the path was refused (only without `openat2`).
    #[error("{path} in the container rootfs goes through a symlink; refusing to follow it")]
    Symlink {
        /// The path inside the rootfs.
        path: String,
    },
}

/// Reads `path` (relative to the rootfs, e.g. `etc/passwd`) as text, lossily
/// decoded. `Ok(None)` when it does not exist inside the rootfs.
pub(crate) fn read_in_root(
    root: &Path,
    path: &str,
    limit: u64,
) -> Result<Option<String>, RootfsError> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RootfsError::OpenRoot {
        root: root.to_owned(),
        source: e.into(),
    })?;
    let read_err = |e: io::Error| RootfsError::Read {
        path: path.to_owned(),
        source: e,
    };
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let opened = rustix::fs::openat2(
        &root_fd,
        path,
        flags,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    );
    let fd = match opened {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::NOSYS) => match open_nofollow(&root_fd, path, flags) {
            Ok(Some(fd)) => fd,
            Ok(None) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => {
                return Err(RootfsError::Symlink {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(read_err(e.into())),
        },
        Err(e) => return Err(read_err(e.into())),
    };
    let file = File::from(fd);
    let meta = file.metadata().map_err(read_err)?;
    if !meta.file_type().is_file() {
        return Err(RootfsError::NotRegular {
            path: path.to_owned(),
        });
    }
    let too_large = || RootfsError::TooLarge {
        path: path.to_owned(),
        limit,
    };
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Creates `path` (a container path such as an image `VOLUME`) and its
/// missing parents as directories inside the rootfs, like `mkdir -p` run in
/// a chroot: every prefix is resolved with `RESOLVE_IN_ROOT`, so a symlink
/// in the image can never make krio create a directory outside the rootfs.
/// Needs `openat2` (Linux 5.6).
pub fn mkdir_all_in_root(root: &Path, path: &Path, mode: u32) -> Result<(), RootfsError> {
    let shown = path.display().to_string();
    let mkdir_err = |e: rustix::io::Errno| RootfsError::Mkdir {
        path: shown.clone(),
        source: e.into(),
    };
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RootfsError::OpenRoot {
        root: root.to_owned(),
        source: e.into(),
    })?;
    let open_dir = |prefix: &Path| {
        rustix::fs::openat2(
            &root_fd,
            prefix,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    };
    let mut prefix = PathBuf::new();
    let mut parent = open_dir(Path::new(".")).map_err(mkdir_err)?;
    for component in path.components() {
        let std::path::Component::Normal(name) = component else {
            continue;
        };
        prefix.push(name);
        parent = match open_dir(&prefix) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => {
                match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(mode)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(mkdir_err(e)),
                }
                // Re-resolve from the root: what now exists may be a symlink.
                open_dir(&prefix).map_err(mkdir_err)?
            }
            Err(e) => return Err(mkdir_err(e)),
        };
    }
    Ok(())
}

/// Component-by-component open that refuses every symlink (`ELOOP`).
fn open_nofollow(
    root: &OwnedFd,
    path: &str,
    flags: OFlags,
) -> Result<Option<OwnedFd>, rustix::io::Errno> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let Some((last, dirs)) = parts.split_last() else {
        return Err(rustix::io::Errno::INVAL);
    };
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut current: Option<OwnedFd> = None;
    for part in dirs {
        if *part == ".." {
            return Err(rustix::io::Errno::LOOP);
        }
        let parent = current.as_ref().unwrap_or(root);
        match rustix::fs::openat(parent, *part, dir_flags, Mode::empty()) {
            Ok(fd) => current = Some(fd),
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            // ENOTDIR for a symlink opened with O_NOFOLLOW|O_DIRECTORY.
            Err(rustix::io::Errno::NOTDIR) => return Err(rustix::io::Errno::LOOP),
            Err(e) => return Err(e),
        }
    }
    if *last == ".." {
        return Err(rustix::io::Errno::LOOP);
    }
    let parent = current.as_ref().unwrap_or(root);
    match rustix::fs::openat(parent, *last, flags | OFlags::NOFOLLOW, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkdir_stays_inside_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("rootfs");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&root).expect("mkdir root");
        std::fs::create_dir_all(&outside).expect("mkdir outside");
        std::os::unix::fs::symlink(&outside, root.join("evil")).expect("symlink");
        std::os::unix::fs::symlink("../../../../outside", root.join("evil2")).expect("symlink");

        mkdir_all_in_root(&root, Path::new("/var/lib/data"), 0o755).expect("mkdir");
        assert!(root.join("var/lib/data").is_dir());
        mkdir_all_in_root(&root, Path::new("/var/lib/data"), 0o755).expect("idempotent");

        for escape in ["/evil/x", "/evil2/x"] {
            let _ = mkdir_all_in_root(&root, Path::new(escape), 0o755);
            assert!(!outside.join("x").exists(), "{escape} escaped the rootfs");
        }
    }

    #[test]
    fn nofollow_walk_refuses_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("mkdir");
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\n").expect("write");
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("etc/passwd"))
            .expect("symlink");
        let root = rustix::fs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
            .expect("open root");
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        assert!(
            open_nofollow(&root, "etc/group", flags)
                .expect("open")
                .is_some()
        );
        assert!(
            open_nofollow(&root, "etc/missing", flags)
                .expect("open")
                .is_none()
        );
        assert_eq!(
            open_nofollow(&root, "etc/passwd", flags).err(),
            Some(rustix::io::Errno::LOOP)
        );
    }
}
