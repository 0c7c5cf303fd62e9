//! Disk use of the store, for `ImageFsInfo`.

use crate::error::ImageError;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Space and inodes the store uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    /// Bytes allocated on disk (each hard-linked inode counted once).
    pub used_bytes: u64,
    /// Inodes used.
    pub inodes_used: u64,
    /// The mount point of the filesystem holding the store.
    pub mountpoint: PathBuf,
}

/// Walks `dir` (not following symlinks, not crossing filesystems).
pub fn usage(dir: &Path) -> Result<FsUsage, ImageError> {
    let root_meta = std::fs::symlink_metadata(dir).map_err(ImageError::io("stat", dir))?;
    let dev = root_meta.dev();
    let mut seen = HashSet::new();
    let mut bytes = 0u64;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&d) {
            Ok(m) => m,
            // Removed while we walk.
            Err(_) => continue,
        };
        if meta.dev() != dev {
            continue;
        }
        if seen.insert(meta.ino()) {
            bytes += meta.blocks() * 512;
        }
        if meta.is_dir()
            && let Ok(rd) = std::fs::read_dir(&d)
        {
            stack.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
        }
    }
    Ok(FsUsage {
        used_bytes: bytes,
        inodes_used: seen.len() as u64,
        mountpoint: mountpoint_of(dir)?,
    })
}

/// The longest mount point in /proc/self/mountinfo containing `dir`.
fn mountpoint_of(dir: &Path) -> Result<PathBuf, ImageError> {
    let dir = std::fs::canonicalize(dir).map_err(ImageError::io("resolving", dir))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(ImageError::io("reading", "/proc/self/mountinfo"))?;
    let mut best = PathBuf::from("/");
    for line in info.lines() {
        let Some(mp) = line.split(' ').nth(4) else {
            continue;
        };
        let mp = PathBuf::from(unescape_mountinfo(mp));
        if dir.starts_with(&mp) && mp.components().count() > best.components().count() {
            best = mp;
        }
    }
    Ok(best)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_hard_links_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a"), vec![1u8; 10000]).expect("write");
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).expect("link");
        let u = usage(dir.path()).expect("usage");
        assert_eq!(u.inodes_used, 2);
        assert!(u.used_bytes >= 10000);
        assert!(u.mountpoint.is_absolute());
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
    }
}
