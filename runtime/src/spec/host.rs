//! Facts about the host that shape every spec: what krio itself may grant,
//! what the kernel and cgroup layout support, the host's devices and mounts.
//!
//! [`HostInfo::detect`] reads them once at daemon start; tests build a
//! [`HostInfo`] by hand so the generator stays deterministic.
//! [`HostInfo::mounts`] should be refreshed with [`read_mountinfo`] before a
//! create that has propagation mounts, since mounts change at run time.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::capabilities::CapabilitySet;

/// How cgroups are mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v1 only.
    Legacy,
    /// cgroup v1 controllers with a cgroup2 mount beside them (runc treats it as v1).
    Hybrid,
    /// cgroup v2 only (`/sys/fs/cgroup` is cgroup2).
    Unified,
}

/// A device node of the host (for privileged containers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostDevice {
    /// Its path, e.g. `/dev/sda`.
    pub path: PathBuf,
    /// Block (`true`) or character (`false`) device.
    pub block: bool,
    /// Major number.
    pub major: i64,
    /// Minor number.
    pub minor: i64,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
}

/// A mount point of the host and its propagation (from `/proc/self/mountinfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostMount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// It is in a peer group (`shared:N`).
    pub shared: bool,
    /// It receives propagation from a master (`master:N`).
    pub slave: bool,
}

/// What the host allows and supports.
#[derive(Clone, Debug)]
pub struct HostInfo {
    /// The capabilities krio holds (bounding ∩ effective); nothing beyond is ever granted.
    pub capabilities: CapabilitySet,
    /// The kernel and OCI runtime support recursive read-only (`rro`) mounts
    /// ([`HostInfo::detect`] checks the kernel, Linux 5.12+; AND it with the
    /// handler's `features` mount options).
    pub rro_mounts: bool,
    /// The cgroup layout.
    pub cgroup_mode: CgroupMode,
    /// The systemd cgroup driver is in use, else cgroupfs ([`HostInfo::detect`]
    /// says false; the daemon sets it from its `cgroup_manager`).
    pub systemd_cgroup: bool,
    /// krio's own `oom_score_adj`: the lowest a container may get without `CAP_SYS_RESOURCE`.
    pub min_oom_score_adj: i32,
    /// The kernel supports seccomp filters.
    pub seccomp: bool,
    /// AppArmor is enabled.
    pub apparmor: bool,
    /// krio's hard `RLIMIT_NOFILE`, the most a container can be given.
    pub nofile_limit: u64,
    /// The memory controller accounts swap (`memory.memsw.*` on v1, `memory.swap.max` on v2).
    pub swap_accounting: bool,
    /// A hugetlb controller is available to the OCI runtime.
    pub hugetlb: bool,
    /// The host's device nodes (what a privileged container sees).
    pub devices: Vec<HostDevice>,
    /// The host's mounts; empty = unknown (propagation checks are then skipped).
    pub mounts: Vec<HostMount>,
}

impl HostInfo {
    /// Reads the host facts from `/proc` and `/sys`. Anything unreadable
    /// falls back to the conservative choice (and is logged).
    pub fn detect() -> Self {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let capabilities = CapabilitySet::from_proc_status(&status).unwrap_or_else(|| {
            tracing::warn!("cannot read krio's capabilities from /proc/self/status; granting none");
            CapabilitySet::empty()
        });
        let seccomp = status.lines().any(|l| l.starts_with("Seccomp:"));
        let cgroup_mode = detect_cgroup_mode(Path::new("/sys/fs/cgroup"));
        let min_oom_score_adj = fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let apparmor = fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.trim() == "Y");
        let (swap_accounting, hugetlb) = match cgroup_mode {
            CgroupMode::Unified => {
                let controllers =
                    fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
                (
                    Path::new("/sys/fs/cgroup/memory.swap.max").exists()
                        || has_swap_max_below("/sys/fs/cgroup"),
                    controllers.split_whitespace().any(|c| c == "hugetlb"),
                )
            }
            CgroupMode::Legacy | CgroupMode::Hybrid => (
                Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists(),
                Path::new("/sys/fs/cgroup/hugetlb").is_dir(),
            ),
        };
        Self {
            capabilities,
            rro_mounts: rro_kernel(),
            cgroup_mode,
            systemd_cgroup: false,
            min_oom_score_adj,
            seccomp,
            apparmor,
            nofile_limit: nofile_hard_limit(),
            swap_accounting,
            hugetlb,
            devices: host_devices(Path::new("/dev")),
            mounts: read_mountinfo(),
        }
    }
}

fn has_swap_max_below(root: &str) -> bool {
    fs::read_dir(root).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().join("memory.swap.max").exists())
    })
}

fn detect_cgroup_mode(root: &Path) -> CgroupMode {
    if root.join("cgroup.controllers").exists() {
        CgroupMode::Unified
    } else if root.join("unified").join("cgroup.controllers").exists() {
        CgroupMode::Hybrid
    } else {
        CgroupMode::Legacy
    }
}

/// The kernel has recursive read-only mounts (`mount_setattr`, Linux
/// 5.12+).
pub fn rro_kernel() -> bool {
    kernel_at_least(5, 12)
}

/// overlayfs takes id-mapped layers (Linux 5.19+), which krio builds
/// for the root filesystems of pods with their own user namespace.
pub fn idmapped_overlay() -> bool {
    kernel_at_least(5, 19)
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (got_major, got_minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (got_major, got_minor) >= (major, minor)
}

fn nofile_hard_limit() -> u64 {
    fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| {
                    let hard = l.split_whitespace().nth(4)?;
                    if hard == "unlimited" {
                        Some(u64::MAX)
                    } else {
                        hard.parse().ok()
                    }
                })
        })
        .unwrap_or(1024)
}

/// The major number of a Linux `dev_t`.
pub(crate) fn dev_major(dev: u64) -> i64 {
    (((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)) as i64
}

/// The minor number of a Linux `dev_t`.
pub(crate) fn dev_minor(dev: u64) -> i64 {
    ((dev & 0xff) | ((dev >> 12) & !0xff)) as i64
}

/// Directories under /dev that are not devices of the host for a container.
const SKIPPED_DEV_DIRS: [&str; 7] = ["pts", "shm", "mqueue", "fd", ".lxc", ".lxd-mounts", ".udev"];

/// The device nodes under `dev` (not following symlinks, bounded).
pub fn host_devices(dev: &Path) -> Vec<HostDevice> {
    const MAX_DEVICES: usize = 16384;
    let mut out = Vec::new();
    let mut stack = vec![(dev.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let file_type = meta.file_type();
            if file_type.is_dir() {
                let name = entry.file_name();
                let skip = depth == 0 && SKIPPED_DEV_DIRS.iter().any(|s| name.to_str() == Some(*s));
                if !skip && depth < 8 {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            if !(file_type.is_char_device() || file_type.is_block_device()) {
                continue;
            }
            // runc makes /dev/console and /dev/ptmx itself.
            if depth == 0
                && matches!(
                    path.file_name().and_then(|n| n.to_str()),
                    Some("console" | "ptmx")
                )
            {
                continue;
            }
            out.push(HostDevice {
                path,
                block: file_type.is_block_device(),
                major: dev_major(meta.rdev()),
                minor: dev_minor(meta.rdev()),
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            });
            if out.len() >= MAX_DEVICES {
                return out;
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The host's mounts and their propagation, from `/proc/self/mountinfo`.
pub fn read_mountinfo() -> Vec<HostMount> {
    fs::read_to_string("/proc/self/mountinfo")
        .map(|text| parse_mountinfo(&text))
        .unwrap_or_default()
}

/// Parses the text of a `mountinfo` file.
pub fn parse_mountinfo(text: &str) -> Vec<HostMount> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let mount_point = fields.nth(4)?;
            let _options = fields.next()?;
            let mut shared = false;
            let mut slave = false;
            for optional in fields.by_ref() {
                if optional == "-" {
                    break;
                }
                shared |= optional.starts_with("shared:");
                slave |= optional.starts_with("master:");
            }
            Some(HostMount {
                mount_point: PathBuf::from(unescape_octal(mount_point)),
                shared,
                slave,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\NNN`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
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
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount that holds `path` (the longest mount point that prefixes it; the last one mounted wins).
pub(crate) fn mount_of<'a>(mounts: &'a [HostMount], path: &Path) -> Option<&'a HostMount> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| path.starts_with(&m.mount_point))
        .max_by_key(|(i, m)| (m.mount_point.components().count(), *i))
        .map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_propagation() {
        let text = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
            27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
            40 27 0:40 / /mnt/with\\040space rw master:3 - tmpfs tmpfs rw\n\
            41 27 0:41 / /mnt/both rw shared:5 master:3 - tmpfs tmpfs rw\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 4);
        assert!(!mounts[0].shared && !mounts[0].slave);
        assert!(mounts[1].shared);
        assert_eq!(mounts[2].mount_point, PathBuf::from("/mnt/with space"));
        assert!(mounts[2].slave && !mounts[2].shared);
        assert!(mounts[3].slave && mounts[3].shared);
        let m = mount_of(&mounts, Path::new("/mnt/with space/x")).expect("mount");
        assert_eq!(m.mount_point, PathBuf::from("/mnt/with space"));
        let m = mount_of(&mounts, Path::new("/var/lib")).expect("mount");
        assert_eq!(m.mount_point, PathBuf::from("/"));
    }

    #[test]
    fn detect_reads_this_host() {
        let host = HostInfo::detect();
        assert!(host.nofile_limit > 0);
        assert!((-1000..=1000).contains(&host.min_oom_score_adj));
        assert!(host.devices.iter().all(|d| d.path.starts_with("/dev")));
        assert!(host.mounts.iter().any(|m| m.mount_point == Path::new("/")));
    }

    #[test]
    fn dev_numbers() {
        // makedev(8, 1) and makedev(259, 65536).
        assert_eq!((dev_major(0x801), dev_minor(0x801)), (8, 1));
        let (major, minor): (u64, u64) = (259, 65536);
        let dev = ((major & 0xfff) << 8) | (minor & 0xff) | ((minor & !0xff) << 12);
        assert_eq!((dev_major(dev), dev_minor(dev)), (259, 65536));
    }

    #[test]
    fn proc_status_capabilities() {
        let status = "Name:\tkrio\nCapEff:\t000001fffeffffff\nCapBnd:\t000001ffffffffff\n";
        let caps = CapabilitySet::from_proc_status(status).expect("caps");
        assert!(caps.contains("CAP_SYS_ADMIN"));
        assert!(!caps.contains("SYS_RESOURCE"));
        assert!(CapabilitySet::from_proc_status("Name:\tx\n").is_none());
    }
}
