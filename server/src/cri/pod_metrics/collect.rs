//! Reading one container's (or one pod's network) figures and naming them
//! as metrics of [`super::families`].

use krio_proto::v1;
use krio_runtime::stats::{
    CgroupDirs, CgroupLimits, CgroupStats, NetworkStats, ProcessStats, fs_capacity, fs_usage,
    read_io,
};

use super::families::{self as f, BASE_LABELS, Family};
use crate::state::{ContainerRecord, ContainerState};

/// Bound on the writable-layer walk (metrics must stay cheap).
const MAX_LAYER_ENTRIES: u64 = 100_000;
/// Bound on the processes visited for process, thread and fd counts.
const MAX_PROCESSES: usize = 4_096;
const NS_PER_SEC: u64 = 1_000_000_000;

/// Collects metrics that share one set of base label values.
pub struct Sink {
    base: [String; BASE_LABELS.len()],
    metrics: Vec<v1::Metric>,
}

impl Sink {
    /// A sink whose metrics carry `container`, `id`, `image`, `namespace`
    /// and `pod` (the order of [`BASE_LABELS`]).
    pub fn new(base: [String; BASE_LABELS.len()]) -> Self {
        Self {
            base,
            metrics: Vec::new(),
        }
    }

    /// Adds a metric of a family without labels of its own; nothing when
    /// the figure could not be read.
    pub fn put(&mut self, family: &Family, value: Option<u64>) {
        self.put_with(family, &[], value);
    }

    /// Adds a metric with the family's own label values.
    pub fn put_with(&mut self, family: &Family, labels: &[&str], value: Option<u64>) {
        let Some(value) = value else {
            return;
        };
        debug_assert_eq!(labels.len(), family.labels.len(), "{}", family.name);
        self.metrics.push(v1::Metric {
            name: family.name.to_owned(),
            // Gathered live, which the CRI spells as 0.
            timestamp: 0,
            metric_type: family.kind as i32,
            label_values: self
                .base
                .iter()
                .cloned()
                .chain(labels.iter().map(|l| (*l).to_owned()))
                .collect(),
            value: Some(v1::UInt64Value { value }),
        });
    }

    /// The metrics collected.
    pub fn into_metrics(self) -> Vec<v1::Metric> {
        self.metrics
    }
}

fn seconds(ns: Option<u64>) -> Option<u64> {
    ns.map(|n| n / NS_PER_SEC)
}

/// The metrics of one container that has not exited. `now_secs` is the
/// collection time for `container_last_seen`.
pub fn container(record: &ContainerRecord, sink: &mut Sink, now_secs: u64) {
    sink.put(&f::LAST_SEEN, Some(now_secs));
    if record.started_at > 0 {
        sink.put(
            &f::START_TIME,
            u64::try_from(record.started_at)
                .ok()
                .map(|ns| ns / NS_PER_SEC),
        );
    }
    writable_layer(record, sink);
    if record.state == ContainerState::Exited {
        return;
    }
    let Some(dirs) = u32::try_from(record.pid)
        .ok()
        .filter(|p| *p > 0)
        .and_then(|pid| CgroupDirs::for_pid(pid).ok())
        .filter(|d| !d.is_empty())
    else {
        return;
    };
    cgroup(&dirs, sink);
}

fn writable_layer(record: &ContainerRecord, sink: &mut Sink) {
    if record.upper_dir.as_os_str().is_empty() {
        return;
    }
    if let Ok(usage) = fs_usage(&record.upper_dir, MAX_LAYER_ENTRIES) {
        sink.put(&f::FS_USAGE, Some(usage.used_bytes));
    }
    if let Ok(cap) = fs_capacity(&record.upper_dir) {
        sink.put(&f::FS_LIMIT, Some(cap.capacity_bytes));
        sink.put(&f::FS_INODES_TOTAL, Some(cap.inodes));
        sink.put(&f::FS_INODES_FREE, Some(cap.inodes_free));
    }
}

/// Everything read from the container's cgroups.
fn cgroup(dirs: &CgroupDirs, sink: &mut Sink) {
    let stats = CgroupStats::read(dirs);
    let cpu = &stats.cpu;
    sink.put_with(
        &f::CPU_USAGE,
        &["total"],
        seconds(cpu.usage_core_nanoseconds),
    );
    sink.put(&f::CPU_USER, seconds(cpu.user_nanoseconds));
    sink.put(&f::CPU_SYSTEM, seconds(cpu.system_nanoseconds));
    sink.put(&f::CFS_PERIODS, cpu.cfs_periods);
    sink.put(&f::CFS_THROTTLED_PERIODS, cpu.cfs_throttled_periods);
    sink.put(
        &f::CFS_THROTTLED_SECONDS,
        seconds(cpu.cfs_throttled_nanoseconds),
    );

    let m = &stats.memory;
    sink.put(&f::MEMORY_USAGE, m.usage_bytes);
    sink.put(&f::MEMORY_WORKING_SET, m.working_set_bytes);
    sink.put(&f::MEMORY_RSS, m.rss_bytes);
    sink.put(&f::MEMORY_CACHE, m.cache_bytes);
    sink.put(&f::MEMORY_MAPPED_FILE, m.mapped_file_bytes);
    sink.put(&f::MEMORY_KERNEL, m.kernel_bytes);
    sink.put(&f::MEMORY_SWAP, m.swap_usage_bytes);
    sink.put(&f::MEMORY_MAX_USAGE, m.max_usage_bytes);
    sink.put(&f::MEMORY_FAILCNT, m.failcnt);
    sink.put(&f::OOM_EVENTS, m.oom_kills);
    for (kind, scope, value) in [
        ("pgfault", "container", m.own_page_faults),
        ("pgmajfault", "container", m.own_major_page_faults),
        ("pgfault", "hierarchy", m.page_faults),
        ("pgmajfault", "hierarchy", m.major_page_faults),
    ] {
        sink.put_with(&f::MEMORY_FAILURES, &[kind, scope], value);
    }

    // Spec figures: 0 stands for "no limit", as the help texts say.
    let limits = CgroupLimits::read(dirs);
    sink.put(&f::SPEC_CPU_PERIOD, limits.cpu_period_us);
    sink.put(&f::SPEC_CPU_QUOTA, Some(limits.cpu_quota_us.unwrap_or(0)));
    sink.put(&f::SPEC_CPU_SHARES, limits.cpu_shares);
    sink.put(
        &f::SPEC_MEMORY_LIMIT,
        Some(limits.memory_limit_bytes.unwrap_or(0)),
    );
    sink.put(
        &f::SPEC_MEMORY_RESERVATION,
        Some(limits.memory_reservation_bytes.unwrap_or(0)),
    );
    sink.put(
        &f::SPEC_MEMORY_SWAP_LIMIT,
        Some(limits.memory_swap_limit_bytes.unwrap_or(0)),
    );

    if let Some(p) = ProcessStats::read(dirs, MAX_PROCESSES) {
        sink.put(&f::PROCESSES, Some(p.processes));
        sink.put(&f::THREADS, Some(p.threads));
        sink.put(&f::FILE_DESCRIPTORS, Some(p.file_descriptors));
        sink.put(&f::SOCKETS, Some(p.sockets));
    }
    sink.put(&f::THREADS_MAX, Some(stats.pids.limit.unwrap_or(0)));

    for dev in read_io(dirs) {
        let name = dev
            .device_name()
            .unwrap_or_else(|| format!("{}:{}", dev.major, dev.minor));
        sink.put_with(&f::FS_READS_BYTES, &[&name], Some(dev.read_bytes));
        sink.put_with(&f::FS_READS, &[&name], Some(dev.reads));
        sink.put_with(&f::FS_WRITES_BYTES, &[&name], Some(dev.write_bytes));
        sink.put_with(&f::FS_WRITES, &[&name], Some(dev.writes));
        let (major, minor) = (dev.major.to_string(), dev.minor.to_string());
        for (op, value) in [("Read", dev.read_bytes), ("Write", dev.write_bytes)] {
            sink.put_with(
                &f::BLKIO_DEVICE_USAGE,
                &[&name, &major, &minor, op],
                Some(value),
            );
        }
    }
}

/// The pod's network counters, per interface (loopback left out, as
/// cadvisor does).
pub fn network(net: &NetworkStats, sink: &mut Sink) {
    for i in net.interfaces.iter().filter(|i| i.name != "lo") {
        let name = [i.name.as_str()];
        sink.put_with(&f::NET_RX_BYTES, &name, Some(i.rx_bytes));
        sink.put_with(&f::NET_RX_PACKETS, &name, Some(i.rx_packets));
        sink.put_with(&f::NET_RX_DROPPED, &name, Some(i.rx_dropped));
        sink.put_with(&f::NET_RX_ERRORS, &name, Some(i.rx_errors));
        sink.put_with(&f::NET_TX_BYTES, &name, Some(i.tx_bytes));
        sink.put_with(&f::NET_TX_PACKETS, &name, Some(i.tx_packets));
        sink.put_with(&f::NET_TX_DROPPED, &name, Some(i.tx_dropped));
        sink.put_with(&f::NET_TX_ERRORS, &name, Some(i.tx_errors));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use krio_runtime::stats::InterfaceStats;

    fn sink() -> Sink {
        Sink::new(["c", "id", "img", "ns", "pod"].map(String::from))
    }

    #[test]
    fn label_values_follow_the_descriptor() {
        let mut s = sink();
        s.put_with(&f::MEMORY_FAILURES, &["pgfault", "container"], Some(3));
        s.put(&f::MEMORY_RSS, None);
        let metrics = s.into_metrics();
        assert_eq!(metrics.len(), 1, "an unreadable figure is left out");
        let m = &metrics[0];
        assert_eq!(
            m.label_values.len(),
            f::MEMORY_FAILURES.descriptor().label_keys.len()
        );
        assert_eq!(m.label_values[0], "c");
        assert_eq!(m.label_values[5], "pgfault");
        assert_eq!(m.value.as_ref().map(|v| v.value), Some(3));
        assert_eq!(m.metric_type, v1::MetricType::Counter as i32);
    }

    #[test]
    fn network_skips_loopback() {
        let net = NetworkStats {
            interfaces: vec![
                InterfaceStats {
                    name: "lo".into(),
                    rx_bytes: 5,
                    ..Default::default()
                },
                InterfaceStats {
                    name: "eth0".into(),
                    rx_bytes: 10,
                    tx_packets: 2,
                    ..Default::default()
                },
            ],
        };
        let mut s = sink();
        network(&net, &mut s);
        let metrics = s.into_metrics();
        assert_eq!(metrics.len(), 8);
        assert!(metrics.iter().all(|m| m.label_values[5] == "eth0"));
        let rx = metrics
            .iter()
            .find(|m| m.name == f::NET_RX_BYTES.name)
            .expect("rx bytes");
        assert_eq!(rx.value.as_ref().map(|v| v.value), Some(10));
    }
}
