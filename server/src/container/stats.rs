//! `ContainerStats` from the container's cgroups and writable layer.

use krio_proto::v1;
use std::collections::HashSet;

use krio_runtime::stats::{CgroupDirs, CgroupStats, CpuRate, ProcessStats, fs_usage};
use prost::Message;

use super::Containers;
use crate::state::{ContainerRecord, ContainerState};

/// Bound on the processes visited when counting a container's.
const MAX_PROCESSES: usize = 4_096;

/// A pod's key in the CPU rate tracker the containers use (ids never
/// collide; the prefix keeps pods recognisable for pruning).
fn pod_key(pod_id: &str) -> String {
    format!("pod:{pod_id}")
}

/// The cgroups of a container that has not exited.
fn live_cgroup(record: &ContainerRecord) -> Option<CgroupDirs> {
    if record.state == ContainerState::Exited || record.pid <= 0 {
        return None;
    }
    u32::try_from(record.pid)
        .ok()
        .and_then(|pid| CgroupDirs::for_pid(pid).ok())
}

impl Containers {
    /// `usage_nano_cores` of a pod's own cgroup from its cumulative usage
    /// (blocking-free; `None` for the first sample).
    pub fn sample_pod_cpu(&self, pod_id: &str, usage_core_ns: u64) -> Option<u64> {
        self.cpu_rate
            .sample(&pod_key(pod_id), std::time::Instant::now(), usage_core_ns)
    }

    /// Forgets the pod CPU samples of pods not in `live`.
    pub fn retain_pod_cpu(&self, live: &HashSet<String>) {
        self.cpu_rate.retain(|key| {
            key.strip_prefix("pod:")
                .is_none_or(|pod_id| live.contains(pod_id))
        });
    }

    /// The processes of a pod's running containers, summed (blocking);
    /// `None` when none could be counted.
    pub fn pod_process_count(&self, pod_id: &str) -> Option<u64> {
        self.records(&super::ContainerFilter {
            pod_id: pod_id.to_owned(),
            ..Default::default()
        })
        .iter()
        .filter(|r| r.pod_id == pod_id)
        .filter_map(live_cgroup)
        .filter_map(|dirs| ProcessStats::read(&dirs, MAX_PROCESSES))
        .map(|p| p.processes)
        .reduce(|a, b| a + b)
    }
}

/// Bound on the writable-layer walk (stats must stay cheap).
const MAX_LAYER_ENTRIES: u64 = 100_000;

fn value(v: Option<u64>) -> Option<v1::UInt64Value> {
    v.map(|value| v1::UInt64Value { value })
}

/// The stats of one container; an exited one reports its attributes and
/// writable layer only.
pub fn container_stats(record: &ContainerRecord, rate: &CpuRate) -> v1::ContainerStats {
    let config = v1::ContainerConfig::decode(record.config.as_slice()).unwrap_or_default();
    let now = crate::clock::now_ns();
    let cgroup = live_cgroup(record).map(|dirs| CgroupStats::read(&dirs));
    let (cpu, memory, swap) = match &cgroup {
        Some(stats) => {
            let usage = stats.cpu.usage_core_nanoseconds;
            let nano_cores =
                usage.and_then(|u| rate.sample(&record.id, std::time::Instant::now(), u));
            let m = &stats.memory;
            (
                Some(v1::CpuUsage {
                    timestamp: now,
                    usage_core_nano_seconds: value(usage),
                    usage_nano_cores: value(nano_cores),
                    psi: None,
                }),
                Some(v1::MemoryUsage {
                    timestamp: now,
                    working_set_bytes: value(m.working_set_bytes),
                    available_bytes: value(m.available_bytes),
                    usage_bytes: value(m.usage_bytes),
                    rss_bytes: value(m.rss_bytes),
                    page_faults: value(m.page_faults),
                    major_page_faults: value(m.major_page_faults),
                    psi: None,
                }),
                Some(v1::SwapUsage {
                    timestamp: now,
                    swap_available_bytes: value(m.swap_available_bytes),
                    swap_usage_bytes: value(m.swap_usage_bytes),
                }),
            )
        }
        None => (
            Some(v1::CpuUsage {
                timestamp: now,
                ..Default::default()
            }),
            Some(v1::MemoryUsage {
                timestamp: now,
                ..Default::default()
            }),
            None,
        ),
    };
    let writable_layer = if record.upper_dir.as_os_str().is_empty() {
        None
    } else {
        fs_usage(&record.upper_dir, MAX_LAYER_ENTRIES)
            .ok()
            .map(|u| v1::FilesystemUsage {
                timestamp: now,
                fs_id: Some(v1::FilesystemIdentifier {
                    mountpoint: record.upper_dir.display().to_string(),
                }),
                used_bytes: Some(v1::UInt64Value {
                    value: u.used_bytes,
                }),
                inodes_used: Some(v1::UInt64Value {
                    value: u.inodes_used,
                }),
            })
    };
    v1::ContainerStats {
        attributes: Some(v1::ContainerAttributes {
            id: record.id.clone(),
            metadata: config.metadata,
            labels: config.labels,
            annotations: config.annotations,
        }),
        cpu,
        memory,
        writable_layer,
        swap,
        io: None,
    }
}
