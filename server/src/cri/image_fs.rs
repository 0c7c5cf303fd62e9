//! `ImageFsInfo`: how much of its filesystem the image store uses. The
//! kubelet's image garbage collection and eviction read this.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use krio_proto::v1;

/// Bytes and inodes used under a directory, and the mount it lives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirUsage {
    /// Allocated bytes (blocks × 512), each hard-linked inode counted once.
    pub bytes: u64,
    /// Distinct inodes, the directory itself included.
    pub inodes: u64,
    /// The mount point of the filesystem holding the directory.
    pub mountpoint: PathBuf,
}

/// Measures `dir` (creating nothing); a missing dir uses nothing. Blocking.
pub fn dir_usage(dir: &Path) -> std::io::Result<DirUsage> {
    let mut seen = HashSet::new();
    let mut bytes = 0u64;
    let mut stack = Vec::new();
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            seen.insert((meta.dev(), meta.ino()));
            bytes += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(dir.to_path_buf());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    while let Some(current) = stack.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(entries) => entries,
            // Removed while we walked (an image deleted meanwhile).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(meta) = entry.metadata() else { continue };
            if seen.insert((meta.dev(), meta.ino())) {
                bytes += meta.blocks() * 512;
            }
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(DirUsage {
        bytes,
        inodes: seen.len() as u64,
        mountpoint: mountpoint_of(dir)?,
    })
}

/// The longest mount point in /proc/self/mountinfo that contains `path`
/// (or its nearest existing ancestor).
fn mountpoint_of(path: &Path) -> std::io::Result<PathBuf> {
    let mut existing = path.to_path_buf();
    while !existing.exists() {
        if !existing.pop() {
            break;
        }
    }
    let canonical = existing.canonicalize()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let best = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|mp| canonical.starts_with(mp))
        .max_by_key(|mp| mp.as_os_str().len())
        .unwrap_or_else(|| PathBuf::from("/"));
    Ok(best)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// The CRI message for one directory's usage.
pub fn filesystem_usage(usage: &DirUsage, timestamp_ns: i64) -> v1::FilesystemUsage {
    v1::FilesystemUsage {
        timestamp: timestamp_ns,
        fs_id: Some(v1::FilesystemIdentifier {
            mountpoint: usage.mountpoint.display().to_string(),
        }),
        used_bytes: Some(v1::UInt64Value { value: usage.bytes }),
        inodes_used: Some(v1::UInt64Value {
            value: usage.inodes,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bytes_and_inodes_once_per_hard_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/a"), vec![7u8; 64 * 1024]).expect("write");
        std::fs::hard_link(dir.path().join("sub/a"), dir.path().join("b")).expect("link");
        let usage = dir_usage(dir.path()).expect("usage");
        assert_eq!(usage.inodes, 3, "dir, sub, and one inode for a and b");
        assert!(usage.bytes >= 64 * 1024, "{usage:?}");
        assert!(
            usage.bytes < 2 * 64 * 1024 + 3 * 4096 + 8192,
            "hard link counted once: {usage:?}"
        );
        assert!(
            dir.path()
                .canonicalize()
                .expect("canonical")
                .starts_with(&usage.mountpoint)
        );
    }

    #[test]
    fn a_missing_dir_uses_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let usage = dir_usage(&dir.path().join("not-yet")).expect("usage");
        assert_eq!((usage.bytes, usage.inodes), (0, 0));
    }

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(
            unescape_mount_path("/mnt/a\\040b"),
            PathBuf::from("/mnt/a b")
        );
        assert_eq!(unescape_mount_path("/plain"), PathBuf::from("/plain"));
    }
}
