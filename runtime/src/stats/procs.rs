//! Processes, threads and open files of a cgroup, from its `cgroup.procs`
//! (and its descendants') and `/proc`.

use std::path::{Path, PathBuf};

use super::CgroupDirs;

/// What [`ProcessStats::read`] counted. Processes that exit during the
/// walk are skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessStats {
    /// Processes (thread-group leaders) in the cgroup and its children.
    pub processes: u64,
    /// Their threads.
    pub threads: u64,
    /// Their open file descriptors.
    pub file_descriptors: u64,
    /// How many of those are sockets.
    pub sockets: u64,
    /// Whether a bound stopped the walk, so the figures are lower bounds.
    pub truncated: bool,
}

/// How deep below the cgroup the walk goes (a pod cgroup holds container
/// cgroups, which runc may nest once more).
const MAX_DEPTH: usize = 4;

impl ProcessStats {
    /// Counts the processes of the cgroup at `dirs` and of its descendant
    /// cgroups, visiting at most `max_processes` processes. `None` when
    /// no hierarchy shows the cgroup.
    pub fn read(dirs: &CgroupDirs, max_processes: usize) -> Option<Self> {
        let top = ["pids", "memory", "cpuacct", "cpu"]
            .iter()
            .find_map(|c| dirs.v1(c).filter(|d| d.is_dir()))
            .or_else(|| dirs.unified().filter(|d| d.is_dir()))?;
        let mut pids = Vec::new();
        let complete = collect_pids(top, 0, max_processes, &mut pids);
        let mut stats = Self {
            truncated: !complete,
            ..Self::default()
        };
        for pid in pids {
            let proc_dir = PathBuf::from(format!("/proc/{pid}"));
            let Some(threads) = thread_count(&proc_dir) else {
                continue;
            };
            stats.processes += 1;
            stats.threads += threads;
            let (fds, sockets) = fd_counts(&proc_dir);
            stats.file_descriptors += fds;
            stats.sockets += sockets;
        }
        Some(stats)
    }
}

/// Appends the PIDs of `dir` and its children; false when the bound or
/// the depth limit cut the walk short.
fn collect_pids(dir: &Path, depth: usize, max: usize, out: &mut Vec<u32>) -> bool {
    let text = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in text.lines().filter_map(|l| l.trim().parse().ok()) {
        if out.len() >= max {
            return false;
        }
        out.push(pid);
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return true;
    };
    let mut complete = true;
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if depth + 1 > MAX_DEPTH {
            return false;
        }
        complete &= collect_pids(&entry.path(), depth + 1, max, out);
    }
    complete
}

/// The `Threads:` line of `/proc/PID/status`.
fn thread_count(proc_dir: &Path) -> Option<u64> {
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Open descriptors of a process and how many are sockets.
fn fd_counts(proc_dir: &Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(proc_dir.join("fd")) else {
        return (0, 0);
    };
    let mut fds = 0;
    let mut sockets = 0;
    for entry in entries.flatten() {
        fds += 1;
        if std::fs::read_link(entry.path())
            .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"socket:"))
        {
            sockets += 1;
        }
    }
    (fds, sockets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_this_process_in_a_fake_cgroup_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let top = dir.path().join("pids");
        let child = top.join("child");
        std::fs::create_dir_all(&child).expect("mkdir");
        std::fs::write(top.join("cgroup.procs"), "").expect("write");
        let me = std::process::id();
        // A PID that cannot exist is skipped.
        std::fs::write(child.join("cgroup.procs"), format!("{me}\n4294967294\n")).expect("write");
        let _socket = std::os::unix::net::UnixDatagram::unbound().expect("socket");
        let mountinfo = format!("1 0 0:1 / {} rw - cgroup cgroup rw,pids\n", top.display());
        let dirs = CgroupDirs::from_proc_cgroup("1:pids:/\n", &mountinfo);
        let stats = ProcessStats::read(&dirs, 100).expect("stats");
        assert_eq!(stats.processes, 1);
        assert!(stats.threads >= 1);
        assert!(stats.file_descriptors >= 1);
        assert!(stats.sockets >= 1);
        assert!(!stats.truncated);
        let bounded = ProcessStats::read(&dirs, 1).expect("stats");
        assert!(bounded.truncated);
    }
}
