//! cgroup resources and the cgroup path.
//!
//! - CPU shares/quota/period, cpuset CPUs/mems, memory limit: copied when set
//!   (0 = not set), negative values refused (quota -1 = unlimited is kept).
//! - swap (`memory_swap_limit_in_bytes`, the memory+swap total on v1): only
//!   when the host accounts swap, else left out (as containerd does), since
//!   runc fails on a swap limit it cannot write. -1 = unlimited.
//! - hugepage limits: left out, with a warning, when the host has no hugetlb
//!   controller for the OCI runtime (the kubelet sends them for every pod).
//! - `unified` (cgroup v2 keys): only on a cgroup v2 host; on v1/hybrid a
//!   non-empty map is an error naming a key. No pids limit: the CRI has none.
//! - cgroup path: cgroupfs `<cgroup_parent>/krio-<id>` (parent `/krio` when
//!   the kubelet gave none); systemd `<parent>.slice:krio:<id>`.

use std::collections::HashMap;

use krio_proto::v1;
use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxResources};

use super::host::{CgroupMode, HostInfo};

/// The resource part of the config cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A negative value where only positive ones make sense.
    #[error("resources.{field}: {value} is negative")]
    Negative {
        /// The field.
        field: &'static str,
        /// The value.
        value: i64,
    },
    /// A malformed cpuset list.
    #[error("resources.{field}: {value:?} is not a CPU/node list like 0-3,7")]
    BadCpuset {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// A malformed hugepage size.
    #[error("resources.hugepage_limits: page size {0:?} is not like 2MB or 1GB")]
    BadHugepageSize(String),
    /// A hugepage limit above `i64::MAX`.
    #[error("resources.hugepage_limits: limit {limit} for {page_size} is too large")]
    HugepageLimitTooLarge {
        /// The page size.
        page_size: String,
        /// The limit.
        limit: u64,
    },
    /// `unified` keys on a host without cgroup v2.
    #[error("resources.unified: {key:?} is a cgroup v2 setting, but this host runs cgroup v1")]
    UnifiedOnV1 {
        /// A key.
        key: String,
    },
    /// A malformed `unified` key or value.
    #[error("resources.unified: {key:?} {reason}")]
    BadUnified {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// A cgroup parent that cannot be used.
    #[error("linux.cgroup_parent {parent:?} {reason}")]
    BadCgroupParent {
        /// The parent.
        parent: String,
        /// Why.
        reason: &'static str,
    },
    /// A container ID that cannot name a cgroup.
    #[error("container id {0:?} must be non-empty letters, digits, '_', '-' or '.'")]
    BadContainerId(String),
}

fn non_negative(field: &'static str, value: i64) -> Result<Option<i64>, ResourceError> {
    match value {
        0 => Ok(None),
        v if v < 0 => Err(ResourceError::Negative { field, value }),
        v => Ok(Some(v)),
    }
}

fn cpuset(field: &'static str, value: &str) -> Result<Option<String>, ResourceError> {
    if value.is_empty() {
        return Ok(None);
    }
    let valid = value.split(',').all(|part| {
        let mut ends = part.trim().splitn(2, '-');
        let first = ends.next().unwrap_or_default();
        let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        numeric(first) && ends.next().is_none_or(numeric)
    });
    if valid {
        Ok(Some(value.to_owned()))
    } else {
        Err(ResourceError::BadCpuset {
            field,
            value: value.to_owned(),
        })
    }
}

fn valid_page_size(size: &str) -> bool {
    let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &size[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && ["KB", "MB", "GB", "TB", "PB"].contains(&unit)
}

static HUGETLB_WARNING: std::sync::Once = std::sync::Once::new();

/// The OCI resources for a container's `LinuxContainerResources`: what
/// `CreateContainer` writes into the spec and what
/// `UpdateContainerResources` hands to the runtime's `update`. Fields left
/// at 0 are left out (the runtime keeps what it has).
pub fn resources(
    requested: Option<&v1::LinuxContainerResources>,
    host: &HostInfo,
) -> Result<LinuxResources, ResourceError> {
    let mut out = LinuxResources::default();
    let Some(r) = requested else {
        return Ok(out);
    };

    let mut cpu = LinuxCpu::default();
    let mut any_cpu = false;
    if let Some(shares) = non_negative("cpu_shares", r.cpu_shares)? {
        cpu.set_shares(Some(shares.unsigned_abs()));
        any_cpu = true;
    }
    if r.cpu_quota == -1 {
        cpu.set_quota(Some(-1));
        any_cpu = true;
    } else if let Some(quota) = non_negative("cpu_quota", r.cpu_quota)? {
        cpu.set_quota(Some(quota));
        any_cpu = true;
    }
    if let Some(period) = non_negative("cpu_period", r.cpu_period)? {
        cpu.set_period(Some(period.unsigned_abs()));
        any_cpu = true;
    }
    if let Some(cpus) = cpuset("cpuset_cpus", &r.cpuset_cpus)? {
        cpu.set_cpus(Some(cpus));
        any_cpu = true;
    }
    if let Some(mems) = cpuset("cpuset_mems", &r.cpuset_mems)? {
        cpu.set_mems(Some(mems));
        any_cpu = true;
    }
    if any_cpu {
        out.set_cpu(Some(cpu));
    }

    let mut memory = LinuxMemory::default();
    let mut any_memory = false;
    if let Some(limit) = non_negative("memory_limit_in_bytes", r.memory_limit_in_bytes)? {
        memory.set_limit(Some(limit));
        any_memory = true;
    }
    let swap = match r.memory_swap_limit_in_bytes {
        -1 => Some(-1),
        value => non_negative("memory_swap_limit_in_bytes", value)?,
    };
    if let Some(swap) = swap {
        if host.swap_accounting {
            memory.set_swap(Some(swap));
            any_memory = true;
        } else {
            tracing::debug!(
                "the host does not account swap; leaving out memory_swap_limit_in_bytes"
            );
        }
    }
    if any_memory {
        out.set_memory(Some(memory));
    }

    let mut hugepages = Vec::new();
    for h in &r.hugepage_limits {
        if !valid_page_size(&h.page_size) {
            return Err(ResourceError::BadHugepageSize(h.page_size.clone()));
        }
        let limit = i64::try_from(h.limit).map_err(|_| ResourceError::HugepageLimitTooLarge {
            page_size: h.page_size.clone(),
            limit: h.limit,
        })?;
        let mut hp = LinuxHugepageLimit::default();
        hp.set_page_size(h.page_size.clone());
        hp.set_limit(limit);
        hugepages.push(hp);
    }
    if !hugepages.is_empty() {
        if host.hugetlb {
            out.set_hugepage_limits(Some(hugepages));
        } else {
            HUGETLB_WARNING.call_once(|| {
                tracing::warn!(
                    "no hugetlb cgroup controller for the OCI runtime; leaving out hugepage limits (logged once)"
                );
            });
        }
    }

    if !r.unified.is_empty() {
        let mut keys: Vec<&String> = r.unified.keys().collect();
        keys.sort();
        if host.cgroup_mode != CgroupMode::Unified {
            return Err(ResourceError::UnifiedOnV1 {
                key: keys[0].clone(),
            });
        }
        for key in keys {
            let bad = |reason| ResourceError::BadUnified {
                key: key.clone(),
                reason,
            };
            if key.is_empty()
                || key.contains(['/', '\0'])
                || key.starts_with('.')
                || !key.contains('.')
            {
                return Err(bad(
                    "is not a cgroup v2 interface file name like memory.high",
                ));
            }
            if r.unified[key].contains('\0') {
                return Err(bad("has a NUL byte in its value"));
            }
        }
        out.set_unified(Some(
            r.unified
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        ));
    }
    Ok(out)
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The OCI `linux.cgroupsPath` of container `id` under `parent`.
pub(crate) fn cgroups_path(parent: &str, id: &str, systemd: bool) -> Result<String, ResourceError> {
    if !valid_id(id) {
        return Err(ResourceError::BadContainerId(id.to_owned()));
    }
    let bad = |reason| ResourceError::BadCgroupParent {
        parent: parent.to_owned(),
        reason,
    };
    if parent.contains(['\0', '\n']) {
        return Err(bad("contains a NUL byte or a newline"));
    }
    if systemd {
        let slice = if parent.is_empty() {
            "system.slice"
        } else {
            parent
        };
        if !slice.ends_with(".slice") || slice.contains('/') || slice.contains(':') {
            return Err(bad("is not a systemd slice name like kubepods.slice"));
        }
        return Ok(format!("{slice}:krio:{id}"));
    }
    let parent = if parent.is_empty() { "/krio" } else { parent };
    let mut clean = String::new();
    for part in parent.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return Err(bad("contains '..'"));
        }
        clean.push('/');
        clean.push_str(part);
    }
    Ok(format!("{clean}/krio-{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::CapabilitySet;

    fn host(mode: CgroupMode) -> HostInfo {
        HostInfo {
            capabilities: CapabilitySet::all_known(),
            rro_mounts: true,
            cgroup_mode: mode,
            systemd_cgroup: false,
            min_oom_score_adj: 0,
            seccomp: true,
            apparmor: false,
            nofile_limit: 1 << 20,
            swap_accounting: true,
            hugetlb: true,
            devices: Vec::new(),
            mounts: Vec::new(),
        }
    }

    #[test]
    fn values_are_copied() {
        let r = v1::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 15 << 20,
            memory_swap_limit_in_bytes: 15 << 20,
            cpuset_cpus: "0-1,3".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![v1::HugepageLimit {
                page_size: "2MB".into(),
                limit: 1 << 21,
            }],
            ..Default::default()
        };
        let out = resources(Some(&r), &host(CgroupMode::Hybrid)).expect("resources");
        let cpu = out.cpu().as_ref().expect("cpu");
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.cpus().as_deref(), Some("0-1,3"));
        let memory = out.memory().as_ref().expect("memory");
        assert_eq!(memory.limit(), Some(15 << 20));
        assert_eq!(memory.swap(), Some(15 << 20));
        assert_eq!(out.hugepage_limits().as_ref().map(Vec::len), Some(1));

        let mut no_swap = host(CgroupMode::Hybrid);
        no_swap.swap_accounting = false;
        no_swap.hugetlb = false;
        let out = resources(Some(&r), &no_swap).expect("resources");
        assert_eq!(out.memory().as_ref().and_then(|m| m.swap()), None);
        assert!(out.hugepage_limits().is_none());
        assert!(resources(None, &no_swap).expect("none").cpu().is_none());
    }

    #[test]
    fn bad_values_are_refused() {
        let cases = [
            v1::LinuxContainerResources {
                cpu_shares: -2,
                ..Default::default()
            },
            v1::LinuxContainerResources {
                memory_limit_in_bytes: -5,
                ..Default::default()
            },
            v1::LinuxContainerResources {
                cpuset_cpus: "0-a".into(),
                ..Default::default()
            },
            v1::LinuxContainerResources {
                hugepage_limits: vec![v1::HugepageLimit {
                    page_size: "2M".into(),
                    limit: 1,
                }],
                ..Default::default()
            },
        ];
        for r in cases {
            assert!(
                resources(Some(&r), &host(CgroupMode::Unified)).is_err(),
                "{r:?}"
            );
        }
    }

    #[test]
    fn unified_needs_cgroup_v2() {
        let r = v1::LinuxContainerResources {
            unified: HashMap::from([("memory.high".to_owned(), "1G".to_owned())]),
            ..Default::default()
        };
        match resources(Some(&r), &host(CgroupMode::Hybrid)) {
            Err(ResourceError::UnifiedOnV1 { key }) => assert_eq!(key, "memory.high"),
            other => panic!("expected UnifiedOnV1, got {other:?}"),
        }
        let out = resources(Some(&r), &host(CgroupMode::Unified)).expect("v2");
        assert_eq!(out.unified().as_ref().map(HashMap::len), Some(1));
        let bad = v1::LinuxContainerResources {
            unified: HashMap::from([("../memory.high".to_owned(), "1".to_owned())]),
            ..Default::default()
        };
        assert!(resources(Some(&bad), &host(CgroupMode::Unified)).is_err());
    }

    #[test]
    fn cgroup_paths() {
        assert_eq!(
            cgroups_path("/kubepods/besteffort/pod1", "abc", false).expect("path"),
            "/kubepods/besteffort/pod1/krio-abc"
        );
        assert_eq!(
            cgroups_path("", "abc", false).expect("path"),
            "/krio/krio-abc"
        );
        assert_eq!(
            cgroups_path("kubepods//x/", "abc", false).expect("path"),
            "/kubepods/x/krio-abc"
        );
        assert_eq!(
            cgroups_path("kubepods-pod1.slice", "abc", true).expect("path"),
            "kubepods-pod1.slice:krio:abc"
        );
        assert!(cgroups_path("/a/../b", "abc", false).is_err());
        assert!(cgroups_path("/kubepods", "abc", true).is_err());
        assert!(cgroups_path("/a", "../x", false).is_err());
        assert!(cgroups_path("/a", "", false).is_err());
    }
}
