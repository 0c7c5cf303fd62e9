//! Where a container's cgroups are: `/proc/<pid>/cgroup` or an OCI
//! `linux.cgroupsPath`, resolved against the mount table.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use super::StatsError;

/// The cgroup directories of one container (or pod): one per mounted v1
/// hierarchy, keyed by controller (`memory`, `cpuacct`, `pids`, … and
/// `name=systemd` for named hierarchies), and the unified (v2) directory
/// when a cgroup2 file system is mounted.
///
/// On a pure v2 host only [`CgroupDirs::unified`] is set; on a hybrid host
/// both are, and readers prefer the v1 controller when it is mounted. The
/// directories are computed, not checked: a missing one reads as `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupDirs {
    v1: BTreeMap<String, PathBuf>,
    unified: Option<PathBuf>,
}

impl CgroupDirs {
    /// The cgroups of process `pid`, from `/proc/<pid>/cgroup` and this
    /// process's `/proc/self/mountinfo`.
    pub fn for_pid(pid: u32) -> Result<Self, StatsError> {
        let cgroup = read(Path::new(&format!("/proc/{pid}/cgroup")))?;
        let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
        Ok(Self::from_proc_cgroup(&cgroup, &mountinfo))
    }

    /// The cgroups named by an OCI `linux.cgroupsPath` for the cgroupfs
    /// driver, the way runc resolves it: an absolute path is taken from the
    /// top of each hierarchy's mount, a relative one from this process's
    /// own cgroup (`/proc/self/cgroup`).
    pub fn for_cgroups_path(cgroups_path: &str) -> Result<Self, StatsError> {
        let own = read(Path::new("/proc/self/cgroup"))?;
        let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
        Ok(Self::from_cgroups_path(cgroups_path, &own, &mountinfo))
    }

    /// Resolves the text of a `/proc/<pid>/cgroup` file against the text
    /// of a `mountinfo` file. Lines whose hierarchy is not mounted, or
    /// whose path lies outside every mount of it, are left out.
    pub fn from_proc_cgroup(proc_cgroup: &str, mountinfo: &str) -> Self {
        let mounts = parse_mountinfo(mountinfo);
        let mut dirs = Self::default();
        for line in proc_cgroup.lines().filter_map(CgroupLine::parse) {
            let Some(dir) = mounts
                .iter()
                .filter(|m| line.matches(m))
                .find_map(|m| m.dir_of(line.path))
            else {
                continue;
            };
            dirs.insert(&line, dir);
        }
        dirs
    }

    /// Resolves an OCI `linux.cgroupsPath` against the mount table, taking
    /// the hierarchies (and, for a relative path, the starting cgroup) from
    /// `own_proc_cgroup`, the text of `/proc/self/cgroup`.
    pub fn from_cgroups_path(cgroups_path: &str, own_proc_cgroup: &str, mountinfo: &str) -> Self {
        let mounts = parse_mountinfo(mountinfo);
        let target = clean(cgroups_path);
        let mut dirs = Self::default();
        for line in own_proc_cgroup.lines().filter_map(CgroupLine::parse) {
            let Some(mount) = mounts.iter().find(|m| line.matches(m)) else {
                continue;
            };
            let dir = if cgroups_path.starts_with('/') {
                mount.mount_point.join(&target)
            } else {
                let Some(own) = mounts
                    .iter()
                    .filter(|m| line.matches(m))
                    .find_map(|m| m.dir_of(line.path))
                else {
                    continue;
                };
                own.join(&target)
            };
            dirs.insert(&line, dir);
        }
        dirs
    }

    /// The directory of v1 controller `controller` (`memory`, `cpuacct`,
    /// `pids`, `name=systemd`, …), when that hierarchy is mounted.
    pub fn v1(&self, controller: &str) -> Option<&Path> {
        self.v1.get(controller).map(PathBuf::as_path)
    }

    /// Every v1 controller and its directory, by controller name.
    pub fn v1_controllers(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.v1.iter().map(|(k, v)| (k.as_str(), v.as_path()))
    }

    /// The directory in the unified (cgroup2) hierarchy, when one is
    /// mounted.
    pub fn unified(&self) -> Option<&Path> {
        self.unified.as_deref()
    }

    /// Whether no directory was found at all.
    pub fn is_empty(&self) -> bool {
        self.v1.is_empty() && self.unified.is_none()
    }

    fn insert(&mut self, line: &CgroupLine<'_>, dir: PathBuf) {
        if line.controllers.is_empty() {
            self.unified = Some(dir);
        } else {
            for c in &line.controllers {
                self.v1.insert((*c).to_owned(), dir.clone());
            }
        }
    }
}

/// One line of `/proc/<pid>/cgroup`: `ID:controllers:path`. An empty
/// controller list (`0::/path`) is the unified hierarchy.
struct CgroupLine<'a> {
    controllers: Vec<&'a str>,
    path: &'a str,
}

impl<'a> CgroupLine<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let mut parts = line.splitn(3, ':');
        let (_id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        // v2 marks a removed cgroup that still has (dying) members.
        let path = path.strip_suffix(" (deleted)").unwrap_or(path);
        let controllers: Vec<&str> = controllers.split(',').filter(|c| !c.is_empty()).collect();
        Some(Self { controllers, path })
    }

    fn matches(&self, m: &Mount) -> bool {
        if self.controllers.is_empty() {
            m.fs_type == "cgroup2"
        } else {
            m.fs_type == "cgroup"
                && self
                    .controllers
                    .iter()
                    .all(|c| m.super_options.iter().any(|o| o == c))
        }
    }
}

/// One entry of `/proc/<pid>/mountinfo`, with the fields stats need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The directory of the file system mounted here (`/` for a whole
    /// cgroup hierarchy, `/some/cgroup` for a bind mount of part of one).
    pub root: String,
    /// Where it is mounted, with octal escapes decoded.
    pub mount_point: PathBuf,
    /// The file system type (`cgroup`, `cgroup2`, `ext4`, …).
    pub fs_type: String,
    /// The per-super-block options (for cgroup v1: the controllers,
    /// `name=…`, and flags such as `rw`).
    pub super_options: Vec<String>,
}

impl Mount {
    /// The directory under this mount of a cgroup at `path` (relative to
    /// the hierarchy's root), or `None` when the mount does not show it.
    fn dir_of(&self, path: &str) -> Option<PathBuf> {
        let path = clean(path);
        let root = clean(&self.root);
        let rel = path.strip_prefix(&root).ok()?;
        Some(self.mount_point.join(rel))
    }
}

/// Parses the text of `/proc/<pid>/mountinfo`; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut left = left.split(' ');
            let root = unescape(left.nth(3)?);
            let mount_point = PathBuf::from(unescape(left.next()?));
            let mut right = right.split(' ');
            let fs_type = right.next()?.to_owned();
            let _source = right.next()?;
            let super_options = right
                .next()
                .unwrap_or("")
                .split(',')
                .map(str::to_owned)
                .collect();
            Some(Mount {
                root,
                mount_point,
                fs_type,
                super_options,
            })
        })
        .collect()
}

/// Decodes the `\NNN` octal escapes mountinfo uses for space, tab,
/// newline and backslash.
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_owned();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes.get(i + 1..i + 4);
        match digits {
            Some(d) if bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)) => {
                let v = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A cgroup path made relative and lexically clean: no `.`, `..` never
/// climbing above the root, no empty components.
fn clean(path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn read(path: &Path) -> Result<String, StatsError> {
    std::fs::read_to_string(path).map_err(|e| StatsError::read(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/self/mountinfo` cgroup lines of the development machine:
    /// hybrid, each v1 controller on its own hierarchy.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn proc_cgroup_hybrid() {
        let cg = "9:name=systemd:/\n8:pids:/krio/krio-a\n4:memory:/krio/krio-a\n\
                  2:cpuacct:/krio/krio-a\n1:cpu:/krio/krio-a\n0::/krio/krio-a\n";
        let d = CgroupDirs::from_proc_cgroup(cg, HYBRID);
        assert_eq!(
            d.v1("memory"),
            Some(Path::new("/sys/fs/cgroup/memory/krio/krio-a"))
        );
        assert_eq!(
            d.v1("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpuacct/krio/krio-a"))
        );
        assert_eq!(
            d.v1("pids"),
            Some(Path::new("/sys/fs/cgroup/pids/krio/krio-a"))
        );
        assert_eq!(
            d.v1("name=systemd"),
            Some(Path::new("/sys/fs/cgroup/systemd"))
        );
        assert_eq!(
            d.unified(),
            Some(Path::new("/sys/fs/cgroup/unified/krio/krio-a"))
        );
        // blkio is in the file but not in this mount table.
        assert_eq!(d.v1("blkio"), None);
    }

    #[test]
    fn co_mounted_controllers_and_bind_mounted_root() {
        let mi = "\
50 31 0:40 /kubepods/pod1 /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
51 31 0:41 /kubepods/pod1 /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let cg = "3:cpu,cpuacct:/kubepods/pod1/c1\n2:memory:/elsewhere/c1\n";
        let d = CgroupDirs::from_proc_cgroup(cg, mi);
        assert_eq!(
            d.v1("cpu"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct/c1"))
        );
        assert_eq!(d.v1("cpuacct"), d.v1("cpu"));
        // Outside the part of the hierarchy this mount shows.
        assert_eq!(d.v1("memory"), None);
        assert!(d.unified().is_none());
    }

    #[test]
    fn pure_v2() {
        let mi = "30 25 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let d = CgroupDirs::from_proc_cgroup("0::/kubepods/pod1/krio-c1 (deleted)\n", mi);
        assert_eq!(
            d.unified(),
            Some(Path::new("/sys/fs/cgroup/kubepods/pod1/krio-c1"))
        );
        assert_eq!(d.v1_controllers().count(), 0);
        assert!(!d.is_empty());
        assert!(CgroupDirs::from_proc_cgroup("", mi).is_empty());
    }

    #[test]
    fn cgroups_path_absolute_and_relative() {
        let own = "4:memory:/process_api/x\n2:cpuacct:/\n0::/process_api/x\n";
        let d = CgroupDirs::from_cgroups_path("/krio/krio-c1", own, HYBRID);
        assert_eq!(
            d.v1("memory"),
            Some(Path::new("/sys/fs/cgroup/memory/krio/krio-c1"))
        );
        assert_eq!(
            d.v1("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpuacct/krio/krio-c1"))
        );
        assert_eq!(
            d.unified(),
            Some(Path::new("/sys/fs/cgroup/unified/krio/krio-c1"))
        );
        let d = CgroupDirs::from_cgroups_path("pod/./../pod2/c", own, HYBRID);
        assert_eq!(
            d.v1("memory"),
            Some(Path::new("/sys/fs/cgroup/memory/process_api/x/pod2/c"))
        );
        assert_eq!(
            d.v1("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpuacct/pod2/c"))
        );
        // `..` never climbs out of the hierarchy.
        let d = CgroupDirs::from_cgroups_path("/../../etc", own, HYBRID);
        assert_eq!(d.v1("memory"), Some(Path::new("/sys/fs/cgroup/memory/etc")));
    }

    #[test]
    fn mountinfo_escapes_and_optional_fields() {
        let mi = "61 27 0:50 / /mnt/with\\040space rw,relatime shared:5 master:1 - cgroup2 none rw\n\
                  garbage line\n";
        let m = parse_mountinfo(mi);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].mount_point, Path::new("/mnt/with space"));
        assert_eq!(m[0].fs_type, "cgroup2");
        assert_eq!(m[0].root, "/");
    }
}
