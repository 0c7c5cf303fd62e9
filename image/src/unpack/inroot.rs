//! Filesystem operations confined to one layer directory.
//!
//! Every path is walked one component at a time with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_XDEV)` from an fd of the layer root, so no step can leave the
//! root and no symlink is ever followed: a symlinked parent is an error,
//! not a redirection. Final components are created with `*at` calls that do
//! not follow symlinks (`O_EXCL|O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`).
//!
//! We use rustix's `openat2` directly rather than the `pathrs` crate:
//! pathrs resolves symlinks *inside* the root (chroot semantics), while a
//! layer must refuse them outright, and we need fd-relative `mknodat`,
//! `fchownat` and `utimensat` on the inode we just created, which plain
//! `*at` calls give us. No `unsafe` is needed.

use rustix::fs::{
    AtFlags, Mode, OFlags, ResolveFlags, Timestamps, XattrFlags, chownat, mkdirat, openat2, statat,
    unlinkat,
};
use rustix::io::Errno;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// Why an in-root operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InRootError {
    /// A parent component is a symlink.
    #[error("a parent directory is a symlink")]
    SymlinkParent,
    /// A parent component is not a directory.
    #[error("a parent is not a directory")]
    NotDirectory,
    /// A syscall failed.
    #[error("{op}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str) -> impl FnOnce(Errno) -> InRootError {
    move |e| InRootError::Io {
        op,
        source: e.into(),
    }
}

/// An open layer root directory.
pub struct LayerRoot {
    fd: OwnedFd,
}

impl LayerRoot {
    /// Opens `path` (which must be a directory, not a symlink).
    pub fn open(path: &Path) -> Result<Self, InRootError> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err("opening the layer root"))?;
        Ok(Self { fd })
    }

    /// The root fd.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Opens the directory `dirs` (components below the root), creating
    /// missing ones with mode 0755 when `create` is set.
    pub fn dir(&self, dirs: &[OsString], create: bool) -> Result<OwnedFd, InRootError> {
        let mut cur = rustix::io::dup(&self.fd).map_err(io_err("dup of the layer root"))?;
        for c in dirs {
            cur = match open_dir_at(&cur, c) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match mkdirat(&cur, c.as_os_str(), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io_err("creating a parent directory")(e)),
                    }
                    open_dir_at(&cur, c).map_err(|e| classify_walk(&cur, c, e))?
                }
                Err(e) => return Err(classify_walk(&cur, c, e)),
            };
        }
        Ok(cur)
    }
}

/// Opens the directory `name` in `dir`, following no symlink.
pub fn open_dir_at(dir: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat2(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE,
    )
}

fn classify_walk(dir: &OwnedFd, name: &OsStr, e: Errno) -> InRootError {
    match e {
        Errno::LOOP | Errno::XDEV => InRootError::SymlinkParent,
        // O_DIRECTORY|O_NOFOLLOW on a symlink also gives ENOTDIR.
        Errno::NOTDIR if matches!(kind_at(dir, name), Ok(Some(rustix::fs::FileType::Symlink))) => {
            InRootError::SymlinkParent
        }
        Errno::NOTDIR => InRootError::NotDirectory,
        e => io_err("opening a parent directory")(e),
    }
}

/// What is at `name` in `dir`, without following a symlink.
pub fn kind_at(dir: &OwnedFd, name: &OsStr) -> Result<Option<rustix::fs::FileType>, InRootError> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(rustix::fs::FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(io_err("stat of an existing entry")(e)),
    }
}

/// Removes whatever is at `name` in `dir` (recursively for directories),
/// never following a symlink. Missing is fine.
pub fn remove_at(dir: &OwnedFd, name: &OsStr) -> Result<(), InRootError> {
    match kind_at(dir, name)? {
        None => Ok(()),
        Some(rustix::fs::FileType::Directory) => {
            let sub = open_dir_at(dir, name).map_err(|e| classify_walk(dir, name, e))?;
            clear_dir(&sub)?;
            unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(io_err("removing a directory"))
        }
        Some(_) => unlinkat(dir, name, AtFlags::empty()).map_err(io_err("removing an entry")),
    }
}

/// Removes everything inside the directory `dir`.
pub fn clear_dir(dir: &OwnedFd) -> Result<(), InRootError> {
    let mut names = Vec::new();
    {
        let reader_fd = rustix::fs::openat(
            dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err("reopening a directory"))?;
        let it = rustix::fs::Dir::read_from(&reader_fd).map_err(io_err("listing a directory"))?;
        for ent in it {
            let ent = ent.map_err(io_err("listing a directory"))?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                use std::os::unix::ffi::OsStrExt;
                names.push(OsStr::from_bytes(n).to_owned());
            }
        }
    }
    for n in names {
        remove_at(dir, &n)?;
    }
    Ok(())
}

/// Sets owner, without following a symlink.
pub fn chown_at(dir: &OwnedFd, name: &OsStr, uid: u32, gid: u32) -> Result<(), InRootError> {
    chownat(
        dir,
        name,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(io_err("chown"))
}

/// Sets atime and mtime, without following a symlink.
pub fn set_times_at(dir: &OwnedFd, name: &OsStr, mtime: u64) -> Result<(), InRootError> {
    let ts = rustix::fs::Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(io_err("utimensat"))
}

/// Sets an xattr on `name` in `dir` without following it: through
/// `/proc/self/fd/<dir>/<name>` with `lsetxattr`, so it works for every
/// file type (symlinks and device nodes cannot be opened for `fsetxattr`).
pub fn set_xattr_at(
    dir: &OwnedFd,
    name: &OsStr,
    key: &OsStr,
    value: &[u8],
) -> Result<(), InRootError> {
    let mut p = std::path::PathBuf::from(format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd()));
    p.push(name);
    rustix::fs::lsetxattr(&p, key, value, XattrFlags::empty()).map_err(io_err("setting an xattr"))
}

/// Sets an xattr on the directory `dir` itself.
pub fn set_dir_xattr(dir: &OwnedFd, key: &str, value: &[u8]) -> Result<(), InRootError> {
    rustix::fs::fsetxattr(dir, key, value, XattrFlags::empty()).map_err(io_err("setting an xattr"))
}
