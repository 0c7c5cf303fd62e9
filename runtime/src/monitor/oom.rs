//! Finding a container's memory cgroup and reading its OOM kill counter:
//! cgroup v1 `memory.oom_control` (`oom_kill N`), cgroup v2
//! `memory.events` (`oom_kill N`).

use std::path::{Path, PathBuf};

/// The file that counts OOM kills of one cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OomCounter {
    path: PathBuf,
}

impl OomCounter {
    /// The counter of the memory cgroup of `pid`, from `/proc/<pid>/cgroup`
    /// and this process's mount table.
    pub fn for_pid(pid: i32) -> Option<Self> {
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let path = counter_path(&cgroup, &mountinfo)?;
        path.exists().then_some(Self { path })
    }

    /// The number of OOM kills so far; `None` when unreadable (the cgroup
    /// is gone).
    pub fn read(&self) -> Option<u64> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        parse_oom_kill(&text)
    }

    /// The counter file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `oom_kill N` from `memory.oom_control` or `memory.events`.
pub(crate) fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == "oom_kill").then(|| it.next()?.parse().ok())?
    })
}

/// Joins a mount point, the mount's root and a cgroup path.
fn join(mount_point: &str, mount_root: &str, cgroup: &str) -> PathBuf {
    let rel = if mount_root != "/" {
        cgroup.strip_prefix(mount_root).unwrap_or(cgroup)
    } else {
        cgroup
    };
    Path::new(mount_point).join(rel.trim_start_matches('/'))
}

/// The counter file for the cgroups in `cgroup` (`/proc/PID/cgroup`):
/// the v1 memory controller when it is mounted, the unified hierarchy
/// otherwise.
pub(crate) fn counter_path(cgroup: &str, mountinfo: &str) -> Option<PathBuf> {
    let mut v2_path = None;
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            let (point, root) = find_mount(mountinfo, |fstype, opts| {
                fstype == "cgroup" && opts.split(',').any(|o| o == "memory")
            })?;
            return Some(join(point, root, path).join("memory.oom_control"));
        }
        if controllers.is_empty() {
            v2_path = Some(path);
        }
    }
    let path = v2_path?;
    let (point, root) = find_mount(mountinfo, |fstype, _| fstype == "cgroup2")?;
    Some(join(point, root, path).join("memory.events"))
}

/// The first mount whose filesystem type and super options match:
/// (mount point, root within the filesystem).
fn find_mount(mountinfo: &str, want: impl Fn(&str, &str) -> bool) -> Option<(&str, &str)> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fields: Vec<&str> = left.split(' ').collect();
        let mut right = right.split(' ');
        let fstype = right.next()?;
        let _source = right.next()?;
        let opts = right.next().unwrap_or("");
        (fields.len() >= 5 && want(fstype, opts)).then(|| (fields[4], fields[3]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 25 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
35 25 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
36 25 0:32 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
";

    #[test]
    fn v1_memory_wins_in_hybrid() {
        let cg = "9:name=systemd:/krio-test/t1\n4:memory:/krio-test/t1\n0::/krio-test/t1\n";
        assert_eq!(
            counter_path(cg, HYBRID),
            Some(PathBuf::from(
                "/sys/fs/cgroup/memory/krio-test/t1/memory.oom_control"
            ))
        );
    }

    #[test]
    fn v2_only() {
        let mi = "30 25 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            counter_path("0::/kubepods/pod1/c1\n", mi),
            Some(PathBuf::from(
                "/sys/fs/cgroup/kubepods/pod1/c1/memory.events"
            ))
        );
    }

    #[test]
    fn parse_counter() {
        assert_eq!(
            parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            Some(2)
        );
        assert_eq!(
            parse_oom_kill("low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n"),
            Some(1)
        );
        assert_eq!(parse_oom_kill("under_oom 0\n"), None);
    }
}
