//! The limits a cgroup is set to (what cadvisor calls the container spec):
//! CPU period, quota and shares, memory limit, reservation and swap limit.

use std::path::Path;

use super::CgroupDirs;
use super::usage::{existing_v1, read_u64};

/// cgroup v1 writes "no limit" as the largest page-aligned `i64`.
const V1_UNLIMITED: u64 = 1 << 62;

/// A cgroup's configured limits; `None` where there is no limit or the
/// file cannot be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// CFS period, µs: v1 `cpu.cfs_period_us`, v2 the second field of
    /// `cpu.max`.
    pub cpu_period_us: Option<u64>,
    /// CFS quota per period, µs; `None` when unlimited (v1 `-1`, v2 `max`).
    pub cpu_quota_us: Option<u64>,
    /// CPU shares: v1 `cpu.shares`, v2 `cpu.weight` mapped back to shares.
    pub cpu_shares: Option<u64>,
    /// Memory limit: v1 `memory.limit_in_bytes`, v2 `memory.max`.
    pub memory_limit_bytes: Option<u64>,
    /// Soft limit: v1 `memory.soft_limit_in_bytes`, v2 `memory.low`.
    pub memory_reservation_bytes: Option<u64>,
    /// Swap limit as the kernel holds it: v1 memory + swap
    /// (`memory.memsw.limit_in_bytes`), v2 swap alone (`memory.swap.max`).
    pub memory_swap_limit_bytes: Option<u64>,
}

impl CgroupLimits {
    /// Reads the v1 `cpu` and `memory` controllers where their directories
    /// exist, the unified directory otherwise.
    pub fn read(dirs: &CgroupDirs) -> Self {
        let mut limits = Self::default();
        if let Some(cpu) = existing_v1(dirs, "cpu") {
            limits.cpu_period_us = read_u64(&cpu.join("cpu.cfs_period_us"));
            limits.cpu_quota_us =
                read_i64(&cpu.join("cpu.cfs_quota_us")).and_then(|q| u64::try_from(q).ok());
            limits.cpu_shares = read_u64(&cpu.join("cpu.shares"));
        } else if let Some(dir) = dirs.unified() {
            if let Ok(max) = std::fs::read_to_string(dir.join("cpu.max")) {
                let (quota, period) = parse_cpu_max(&max);
                limits.cpu_quota_us = quota;
                limits.cpu_period_us = period;
            }
            limits.cpu_shares = read_u64(&dir.join("cpu.weight")).map(weight_to_shares);
        }
        let v1_limit =
            |dir: &Path, file: &str| read_u64(&dir.join(file)).filter(|l| *l < V1_UNLIMITED);
        if let Some(mem) = existing_v1(dirs, "memory") {
            limits.memory_limit_bytes = v1_limit(mem, "memory.limit_in_bytes");
            limits.memory_reservation_bytes = v1_limit(mem, "memory.soft_limit_in_bytes");
            limits.memory_swap_limit_bytes = v1_limit(mem, "memory.memsw.limit_in_bytes");
        } else if let Some(dir) = dirs.unified() {
            limits.memory_limit_bytes = read_u64(&dir.join("memory.max"));
            limits.memory_reservation_bytes = read_u64(&dir.join("memory.low")).filter(|l| *l > 0);
            limits.memory_swap_limit_bytes = read_u64(&dir.join("memory.swap.max"));
        }
        limits
    }
}

fn read_i64(path: &Path) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `cpu.max`: `QUOTA PERIOD`, QUOTA `max` for none.
fn parse_cpu_max(text: &str) -> (Option<u64>, Option<u64>) {
    let mut fields = text.split_whitespace();
    let quota = fields.next().and_then(|q| q.parse().ok());
    let period = fields.next().and_then(|p| p.parse().ok());
    (quota, period)
}

/// The inverse of the OCI runtimes' shares → weight mapping
/// (`1 + (shares - 2) * 9999 / 262142`), so v1 and v2 report the same
/// figure for the same request (within rounding).
fn weight_to_shares(weight: u64) -> u64 {
    2 + weight.saturating_sub(1).saturating_mul(262_142) / 9_999
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_and_weight() {
        assert_eq!(parse_cpu_max("max 100000\n"), (None, Some(100_000)));
        assert_eq!(
            parse_cpu_max("50000 100000\n"),
            (Some(50_000), Some(100_000))
        );
        // runc maps 1024 shares to weight 39; back to about 1024 (one
        // weight step is ~26 shares wide).
        let shares = weight_to_shares(39);
        assert!((1024 - 30..=1024 + 30).contains(&shares), "{shares}");
        assert_eq!(weight_to_shares(1), 2);
    }

    #[test]
    fn reads_v1_and_v2_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v1 = dir.path().join("cpu");
        let mem = dir.path().join("memory");
        let v2 = dir.path().join("unified");
        for d in [&v1, &mem, &v2] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let write = |p: &Path, f: &str, v: &str| std::fs::write(p.join(f), v).expect("write");
        write(&v1, "cpu.cfs_period_us", "100000\n");
        write(&v1, "cpu.cfs_quota_us", "-1\n");
        write(&v1, "cpu.shares", "512\n");
        write(&mem, "memory.limit_in_bytes", "9223372036854771712\n");
        write(&mem, "memory.soft_limit_in_bytes", "1048576\n");
        let proc_cgroup = "2:cpu:/\n3:memory:/\n0::/\n";
        let mountinfo = format!(
            "1 0 0:1 / {} rw - cgroup cgroup rw,cpu\n2 0 0:2 / {} rw - cgroup cgroup rw,memory\n\
             3 0 0:3 / {} rw - cgroup2 cgroup2 rw\n",
            v1.display(),
            mem.display(),
            v2.display()
        );
        let dirs = CgroupDirs::from_proc_cgroup(proc_cgroup, &mountinfo);
        let l = CgroupLimits::read(&dirs);
        assert_eq!(l.cpu_period_us, Some(100_000));
        assert_eq!(l.cpu_quota_us, None);
        assert_eq!(l.cpu_shares, Some(512));
        assert_eq!(l.memory_limit_bytes, None);
        assert_eq!(l.memory_reservation_bytes, Some(1 << 20));

        write(&v2, "cpu.max", "20000 100000\n");
        write(&v2, "memory.max", "67108864\n");
        write(&v2, "memory.swap.max", "max\n");
        let only_v2 = CgroupDirs::from_proc_cgroup("0::/\n", &mountinfo);
        let l = CgroupLimits::read(&only_v2);
        assert_eq!(l.cpu_quota_us, Some(20_000));
        assert_eq!(l.memory_limit_bytes, Some(64 << 20));
        assert_eq!(l.memory_swap_limit_bytes, None);
    }
}
