//! Reading a cgroup's CPU, memory, swap, pids and OOM counters, v1 or v2.

use std::path::Path;

use super::CgroupDirs;

/// cgroup v1 writes "no limit" as the largest page-aligned `i64`; anything
/// at or above 2^62 is treated as unlimited.
const V1_UNLIMITED: u64 = 1 << 62;

/// Everything [`CgroupStats::read`] found for one cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// CPU accounting.
    pub cpu: CpuStats,
    /// Memory, swap and OOM kills.
    pub memory: MemoryStats,
    /// Process count.
    pub pids: PidsStats,
}

impl CgroupStats {
    /// Reads every figure from `dirs`; what cannot be read is `None`.
    pub fn read(dirs: &CgroupDirs) -> Self {
        Self {
            cpu: CpuStats::read(dirs),
            memory: MemoryStats::read(dirs),
            pids: PidsStats::read(dirs),
        }
    }
}

/// Cumulative CPU time and CFS throttling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// CPU time used by all tasks, in nanoseconds: v1 `cpuacct.usage`, v2
    /// `cpu.stat` `usage_usec` × 1000.
    pub usage_core_nanoseconds: Option<u64>,
    /// CPU time in user mode, in nanoseconds: v1 `cpuacct.usage_user`
    /// (or `cpuacct.stat` ticks), v2 `user_usec` × 1000.
    pub user_nanoseconds: Option<u64>,
    /// CPU time in kernel mode, in nanoseconds: v1 `cpuacct.usage_sys`
    /// (or `cpuacct.stat` ticks), v2 `system_usec` × 1000.
    pub system_nanoseconds: Option<u64>,
    /// CFS enforcement periods elapsed (`nr_periods`).
    pub cfs_periods: Option<u64>,
    /// CFS periods in which the cgroup was throttled (`nr_throttled`).
    pub cfs_throttled_periods: Option<u64>,
    /// Time throttled, in nanoseconds: v1 `throttled_time`, v2
    /// `throttled_usec` × 1000.
    pub cfs_throttled_nanoseconds: Option<u64>,
}

/// `cpuacct.stat` counts in USER_HZ ticks, which Linux fixes at 100 a
/// second for user space.
const NS_PER_USER_HZ_TICK: u64 = 10_000_000;

impl CpuStats {
    /// Reads the v1 `cpuacct` and `cpu` controllers when their directories
    /// exist, and the unified `cpu.stat` otherwise (or for what the v1
    /// files lack).
    pub fn read(dirs: &CgroupDirs) -> Self {
        let acct = existing_v1(dirs, "cpuacct");
        let ticks = acct.and_then(|d| read_flat(&d.join("cpuacct.stat")));
        let from_ticks = |key: &str| {
            ticks
                .as_deref()
                .and_then(|t| flat_get(t, key))
                .map(|v| v.saturating_mul(NS_PER_USER_HZ_TICK))
        };
        let throttling = existing_v1(dirs, "cpu").and_then(|d| read_flat(&d.join("cpu.stat")));
        let unified = dirs
            .unified()
            .and_then(|d| read_flat(&d.join("cpu.stat")))
            .unwrap_or_default();
        let usec = |key: &str| flat_get(&unified, key).map(|v| v.saturating_mul(1000));
        let v1_throttle = |key: &str| throttling.as_deref().and_then(|t| flat_get(t, key));
        Self {
            usage_core_nanoseconds: acct
                .and_then(|d| read_u64(&d.join("cpuacct.usage")))
                .or_else(|| usec("usage_usec")),
            user_nanoseconds: acct
                .and_then(|d| read_u64(&d.join("cpuacct.usage_user")))
                .or_else(|| from_ticks("user"))
                .or_else(|| usec("user_usec")),
            system_nanoseconds: acct
                .and_then(|d| read_u64(&d.join("cpuacct.usage_sys")))
                .or_else(|| from_ticks("system"))
                .or_else(|| usec("system_usec")),
            cfs_periods: v1_throttle("nr_periods").or_else(|| flat_get(&unified, "nr_periods")),
            cfs_throttled_periods: v1_throttle("nr_throttled")
                .or_else(|| flat_get(&unified, "nr_throttled")),
            cfs_throttled_nanoseconds: v1_throttle("throttled_time")
                .or_else(|| usec("throttled_usec")),
        }
    }
}

/// Memory use of a cgroup, in the kubelet's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// All memory charged, page cache included: v1 `memory.usage_in_bytes`,
    /// v2 `memory.current`.
    pub usage_bytes: Option<u64>,
    /// Usage minus inactive file pages, floored at 0: what eviction looks
    /// at.
    pub working_set_bytes: Option<u64>,
    /// Anonymous memory: v1 `total_rss`, v2 `anon`.
    pub rss_bytes: Option<u64>,
    /// Page faults: v1 `total_pgfault`, v2 `pgfault`.
    pub page_faults: Option<u64>,
    /// Major page faults: v1 `total_pgmajfault`, v2 `pgmajfault`.
    pub major_page_faults: Option<u64>,
    /// The memory limit; `None` when there is none (v1 ≥ 2^62, v2 `max`)
    /// or it cannot be read.
    pub limit_bytes: Option<u64>,
    /// Limit minus working set, floored at 0; `None` without a limit.
    pub available_bytes: Option<u64>,
    /// Swap in use: v1 `memory.memsw.usage_in_bytes` − usage, v2
    /// `memory.swap.current`; `None` when swap accounting is off.
    pub swap_usage_bytes: Option<u64>,
    /// Swap limit minus swap use, floored at 0; `None` without a swap
    /// limit. v1 has no swap-only limit: it is taken as
    /// `memory.memsw.limit_in_bytes` − `memory.limit_in_bytes`.
    pub swap_available_bytes: Option<u64>,
    /// How many times the OOM killer killed a task of this cgroup: v1
    /// `memory.oom_control`, v2 `memory.events` (`oom_kill`).
    pub oom_kills: Option<u64>,
    /// Page cache: v1 `total_cache`, v2 `file`.
    pub cache_bytes: Option<u64>,
    /// Memory-mapped files: v1 `total_mapped_file`, v2 `file_mapped`.
    pub mapped_file_bytes: Option<u64>,
    /// Kernel memory: v1 `memory.kmem.usage_in_bytes`, v2 `kernel` (or
    /// `kernel_stack` + `slab` + `sock` on kernels before 5.18).
    pub kernel_bytes: Option<u64>,
    /// The highest usage recorded: v1 `memory.max_usage_in_bytes`, v2
    /// `memory.peak` (5.19+).
    pub max_usage_bytes: Option<u64>,
    /// How many times usage hit the limit: v1 `memory.failcnt`, v2
    /// `memory.events` `max`.
    pub failcnt: Option<u64>,
    /// Page faults of this cgroup's own tasks, children left out: v1
    /// `pgfault` (v2 only counts hierarchically).
    pub own_page_faults: Option<u64>,
    /// Major page faults of this cgroup's own tasks: v1 `pgmajfault`.
    pub own_major_page_faults: Option<u64>,
}

impl MemoryStats {
    /// Reads the v1 `memory` controller when its directory exists, the
    /// unified directory otherwise.
    pub fn read(dirs: &CgroupDirs) -> Self {
        if let Some(dir) = existing_v1(dirs, "memory") {
            Self::read_v1(dir)
        } else if let Some(dir) = dirs.unified() {
            Self::read_v2(dir)
        } else {
            Self::default()
        }
    }

    fn read_v1(dir: &Path) -> Self {
        let usage = read_u64(&dir.join("memory.usage_in_bytes"));
        let stat = read_flat(&dir.join("memory.stat")).unwrap_or_default();
        let total =
            |key: &str| flat_get(&stat, &format!("total_{key}")).or_else(|| flat_get(&stat, key));
        let limit = read_u64(&dir.join("memory.limit_in_bytes")).filter(|l| *l < V1_UNLIMITED);
        let memsw_usage = read_u64(&dir.join("memory.memsw.usage_in_bytes"));
        let swap_usage = memsw_usage.zip(usage).map(|(sw, u)| sw.saturating_sub(u));
        let memsw_limit =
            read_u64(&dir.join("memory.memsw.limit_in_bytes")).filter(|l| *l < V1_UNLIMITED);
        let swap_available = memsw_limit
            .zip(limit)
            .zip(swap_usage)
            .map(|((sw, mem), used)| sw.saturating_sub(mem).saturating_sub(used));
        let oom = read_flat(&dir.join("memory.oom_control")).and_then(|f| flat_get(&f, "oom_kill"));
        Self {
            cache_bytes: total("cache"),
            mapped_file_bytes: total("mapped_file"),
            kernel_bytes: read_u64(&dir.join("memory.kmem.usage_in_bytes")),
            max_usage_bytes: read_u64(&dir.join("memory.max_usage_in_bytes")),
            failcnt: read_u64(&dir.join("memory.failcnt")),
            own_page_faults: flat_get(&stat, "pgfault"),
            own_major_page_faults: flat_get(&stat, "pgmajfault"),
            ..Self::assemble(
                usage,
                total("inactive_file"),
                total("rss"),
                total("pgfault"),
                total("pgmajfault"),
                limit,
                swap_usage,
                swap_available,
                oom,
            )
        }
    }

    fn read_v2(dir: &Path) -> Self {
        let usage = read_u64(&dir.join("memory.current"));
        let stat = read_flat(&dir.join("memory.stat")).unwrap_or_default();
        let limit = read_u64(&dir.join("memory.max"));
        let swap_usage = read_u64(&dir.join("memory.swap.current"));
        let swap_available = read_u64(&dir.join("memory.swap.max"))
            .zip(swap_usage)
            .map(|(max, used)| max.saturating_sub(used));
        let events = read_flat(&dir.join("memory.events")).unwrap_or_default();
        let stat_get = |key: &str| flat_get(&stat, key);
        let kernel = stat_get("kernel").or_else(|| {
            Some(stat_get("kernel_stack")? + stat_get("slab")? + stat_get("sock").unwrap_or(0))
        });
        Self {
            cache_bytes: stat_get("file"),
            mapped_file_bytes: stat_get("file_mapped"),
            kernel_bytes: kernel,
            max_usage_bytes: read_u64(&dir.join("memory.peak")),
            failcnt: flat_get(&events, "max"),
            own_page_faults: None,
            own_major_page_faults: None,
            ..Self::assemble(
                usage,
                stat_get("inactive_file"),
                stat_get("anon"),
                stat_get("pgfault"),
                stat_get("pgmajfault"),
                limit,
                swap_usage,
                swap_available,
                flat_get(&events, "oom_kill"),
            )
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        usage: Option<u64>,
        inactive_file: Option<u64>,
        rss: Option<u64>,
        page_faults: Option<u64>,
        major_page_faults: Option<u64>,
        limit: Option<u64>,
        swap_usage: Option<u64>,
        swap_available: Option<u64>,
        oom_kills: Option<u64>,
    ) -> Self {
        let working_set = usage.map(|u| u.saturating_sub(inactive_file.unwrap_or(0)));
        let available = limit.zip(working_set).map(|(l, ws)| l.saturating_sub(ws));
        Self {
            usage_bytes: usage,
            working_set_bytes: working_set,
            rss_bytes: rss,
            page_faults,
            major_page_faults,
            limit_bytes: limit,
            available_bytes: available,
            swap_usage_bytes: swap_usage,
            swap_available_bytes: swap_available,
            oom_kills,
            ..Self::default()
        }
    }
}

/// Number of tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PidsStats {
    /// `pids.current`.
    pub current: Option<u64>,
    /// `pids.max`; `None` for `max` (no limit) or when unreadable.
    pub limit: Option<u64>,
}

impl PidsStats {
    /// Reads the v1 `pids` controller when its directory exists, the
    /// unified directory otherwise.
    pub fn read(dirs: &CgroupDirs) -> Self {
        let Some(dir) = existing_v1(dirs, "pids").or_else(|| dirs.unified()) else {
            return Self::default();
        };
        Self {
            current: read_u64(&dir.join("pids.current")),
            limit: read_u64(&dir.join("pids.max")),
        }
    }
}

/// The v1 directory of `controller` if it exists on disk.
pub(crate) fn existing_v1<'a>(dirs: &'a CgroupDirs, controller: &str) -> Option<&'a Path> {
    dirs.v1(controller).filter(|d| d.is_dir())
}

/// A file holding one number. A v2 limit of `max` (none) reads as `None`.
pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A flat-keyed file (`memory.stat`, `cpu.stat`, `memory.events`,
/// `memory.oom_control`): one `key value` pair a line.
fn read_flat(path: &Path) -> Option<Vec<(String, u64)>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(parse_flat(&text))
}

pub(crate) fn parse_flat(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let key = it.next()?;
            let value = it.next()?.parse().ok()?;
            Some((key.to_owned(), value))
        })
        .collect()
}

fn flat_get(pairs: &[(String, u64)], key: &str) -> Option<u64> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}
