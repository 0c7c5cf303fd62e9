//! Disk usage of a container's writable layer: bytes and inodes under a
//! directory, like `du -x`, bounded.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::StatsError;

/// What [`fs_usage`] counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsUsage {
    /// Bytes allocated on disk (`st_blocks` × 512), each inode once.
    pub used_bytes: u64,
    /// Inodes (files, directories, links, …), each once.
    pub inodes_used: u64,
    /// Whether the walk stopped at the entry bound, so the figures are
    /// lower bounds.
    pub truncated: bool,
}

/// Counts the disk space and inodes used under `dir`, `dir` itself
/// included, without crossing into other file systems (mounts under `dir`
/// are neither counted nor entered) and counting a hard-linked file once.
///
/// Visits at most `max_entries` entries; past that the walk stops with
/// [`FsUsage::truncated`] set. Entries that vanish or cannot be read during
/// the walk are skipped; only an unreadable `dir` is an error.
pub fn fs_usage(dir: &Path, max_entries: u64) -> Result<FsUsage, StatsError> {
    let top = std::fs::symlink_metadata(dir).map_err(|e| StatsError::read(dir, e))?;
    let dev = top.dev();
    let mut usage = FsUsage::default();
    let mut seen_links: HashSet<u64> = HashSet::new();
    let mut visited: u64 = 0;
    let mut count = |meta: &std::fs::Metadata, usage: &mut FsUsage| {
        if meta.nlink() > 1 && !meta.is_dir() && !seen_links.insert(meta.ino()) {
            return;
        }
        usage.used_bytes = usage
            .used_bytes
            .saturating_add(meta.blocks().saturating_mul(512));
        usage.inodes_used += 1;
    };
    if max_entries == 0 {
        usage.truncated = true;
        return Ok(usage);
    }
    count(&top, &mut usage);
    visited += 1;
    if !top.is_dir() {
        return Ok(usage);
    }
    let mut pending: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if d == dir => return Err(StatsError::read(dir, e)),
            // Vanished or unreadable below the top: skipped.
            Err(_) => continue,
        };
        for entry in entries.flatten() {
            if visited >= max_entries {
                usage.truncated = true;
                return Ok(usage);
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            visited += 1;
            if meta.dev() != dev {
                continue;
            }
            count(&meta, &mut usage);
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(usage)
}

/// The size of the file system holding a path, from `statvfs(2)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsCapacity {
    /// Total bytes.
    pub capacity_bytes: u64,
    /// Bytes available to unprivileged users.
    pub available_bytes: u64,
    /// Total inodes.
    pub inodes: u64,
    /// Free inodes.
    pub inodes_free: u64,
}

/// The capacity of the file system `path` is on.
pub fn fs_capacity(path: &Path) -> Result<FsCapacity, StatsError> {
    let st = rustix::fs::statvfs(path).map_err(|e| StatsError::read(path, e.into()))?;
    Ok(FsCapacity {
        capacity_bytes: st.f_blocks.saturating_mul(st.f_frsize),
        available_bytes: st.f_bavail.saturating_mul(st.f_frsize),
        inodes: st.f_files,
        inodes_free: st.f_ffree,
    })
}
