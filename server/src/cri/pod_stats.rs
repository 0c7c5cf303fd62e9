//! `PodSandboxStats`: the pod's own cgroup when the kubelet gave it one
//! (else its containers summed), its process count, and its network
//! interfaces read inside its network namespace.

use krio_proto::v1;
use krio_runtime::stats::{CgroupDirs, CgroupStats, InterfaceStats, ProcessStats, netns_stats};
use prost::Message;

use super::Daemon;
use crate::config::CgroupManager;
use crate::container::ContainerFilter;
use crate::error::Error;
use crate::sandbox::PodFilter;
use crate::state::PodRecord;

/// Bound on the processes visited when counting a pod's.
const MAX_PROCESSES: usize = 16_384;

fn value(v: u64) -> Option<v1::UInt64Value> {
    Some(v1::UInt64Value { value: v })
}

fn sum(
    stats: &[v1::ContainerStats],
    pick: impl Fn(&v1::ContainerStats) -> Option<u64>,
) -> Option<u64> {
    stats.iter().filter_map(pick).reduce(|a, b| a + b)
}

fn interface(i: &InterfaceStats) -> v1::NetworkInterfaceUsage {
    v1::NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: value(i.rx_bytes),
        rx_errors: value(i.rx_errors),
        tx_bytes: value(i.tx_bytes),
        tx_errors: value(i.tx_errors),
    }
}

/// The pod's own cgroup, when the kubelet gave a cgroup parent and the
/// cgroupfs driver is in use (a systemd slice name is not a path), and the
/// cgroup exists.
fn pod_cgroup(daemon: &Daemon, config: &v1::PodSandboxConfig) -> Option<CgroupDirs> {
    if daemon.config.get().cgroup_manager != CgroupManager::Cgroupfs {
        return None;
    }
    let parent = config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.as_str())
        .filter(|p| !p.is_empty())?;
    let dirs = CgroupDirs::for_cgroups_path(parent).ok()?;
    let exists = dirs.v1_controllers().any(|(_, d)| d.is_dir())
        || dirs.unified().is_some_and(|d| d.is_dir());
    exists.then_some(dirs)
}

/// CPU and memory summed over the pod's containers.
fn summed(containers: &[v1::ContainerStats], now: i64) -> (v1::CpuUsage, v1::MemoryUsage) {
    let cpu = v1::CpuUsage {
        timestamp: now,
        usage_core_nano_seconds: sum(containers, |c| {
            c.cpu.as_ref()?.usage_core_nano_seconds.map(|v| v.value)
        })
        .and_then(value),
        usage_nano_cores: sum(containers, |c| {
            c.cpu.as_ref()?.usage_nano_cores.map(|v| v.value)
        })
        .and_then(value),
        psi: None,
    };
    let memory_field = |f: fn(&v1::MemoryUsage) -> Option<v1::UInt64Value>| {
        sum(containers, |c| f(c.memory.as_ref()?).map(|v| v.value)).and_then(value)
    };
    let memory = v1::MemoryUsage {
        timestamp: now,
        working_set_bytes: memory_field(|m| m.working_set_bytes),
        available_bytes: memory_field(|m| m.available_bytes),
        usage_bytes: memory_field(|m| m.usage_bytes),
        rss_bytes: memory_field(|m| m.rss_bytes),
        page_faults: memory_field(|m| m.page_faults),
        major_page_faults: memory_field(|m| m.major_page_faults),
        psi: None,
    };
    (cpu, memory)
}

/// CPU and memory of the pod's own cgroup (everything below it, the
/// kubelet's own accounting included).
fn from_cgroup(
    daemon: &Daemon,
    pod: &PodRecord,
    stats: &CgroupStats,
    now: i64,
) -> (v1::CpuUsage, v1::MemoryUsage) {
    let usage = stats.cpu.usage_core_nanoseconds;
    let m = &stats.memory;
    let opt = |v: Option<u64>| v.and_then(value);
    (
        v1::CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: opt(usage),
            usage_nano_cores: opt(usage.and_then(|u| daemon.containers.sample_pod_cpu(&pod.id, u))),
            psi: None,
        },
        v1::MemoryUsage {
            timestamp: now,
            working_set_bytes: opt(m.working_set_bytes),
            available_bytes: opt(m.available_bytes),
            usage_bytes: opt(m.usage_bytes),
            rss_bytes: opt(m.rss_bytes),
            page_faults: opt(m.page_faults),
            major_page_faults: opt(m.major_page_faults),
            psi: None,
        },
    )
}

/// The stats of one pod (blocking: reads cgroups and the netns). With a
/// pod cgroup, CPU, memory and processes are the cgroup's; without one (or
/// when it cannot be read) they are the containers' sums.
fn pod_stats(daemon: &Daemon, pod: &PodRecord) -> v1::PodSandboxStats {
    let config = v1::PodSandboxConfig::decode(pod.config.as_slice()).unwrap_or_default();
    let containers = daemon.containers.list_stats(&ContainerFilter {
        pod_id: pod.id.clone(),
        ..ContainerFilter::default()
    });
    let now = crate::clock::now_ns();
    let cgroup = pod_cgroup(daemon, &config)
        .map(|dirs| (CgroupStats::read(&dirs), dirs))
        .filter(|(stats, _)| stats.cpu.usage_core_nanoseconds.is_some());
    let (cpu, memory) = match &cgroup {
        Some((stats, _)) => from_cgroup(daemon, pod, stats, now),
        None => summed(&containers, now),
    };
    let processes = match &cgroup {
        Some((_, dirs)) => ProcessStats::read(dirs, MAX_PROCESSES).map(|p| p.processes),
        None => daemon.containers.pod_process_count(&pod.id),
    };
    let network = pod
        .namespaces
        .net
        .as_ref()
        .and_then(|ns| netns_stats(ns).ok())
        .map(|n| v1::NetworkUsage {
            timestamp: now,
            default_interface: n.default_interface().map(interface),
            interfaces: n.interfaces.iter().map(interface).collect(),
        });
    v1::PodSandboxStats {
        attributes: Some(v1::PodSandboxAttributes {
            id: pod.id.clone(),
            metadata: config.metadata,
            labels: config.labels,
            annotations: config.annotations,
        }),
        linux: Some(v1::LinuxPodSandboxStats {
            cpu: Some(cpu),
            memory: Some(memory),
            network,
            process: processes.map(|count| v1::ProcessUsage {
                timestamp: now,
                process_count: value(count),
            }),
            containers,
            io: None,
        }),
        windows: None,
    }
}

/// Forgets the CPU samples of removed pods.
fn prune_cpu_samples(daemon: &Daemon) {
    let live: std::collections::HashSet<String> = daemon
        .sandboxes
        .list(&PodFilter::default())
        .into_iter()
        .map(|p| p.id)
        .collect();
    daemon.containers.retain_pod_cpu(&live);
}

/// `PodSandboxStats`.
pub async fn one(daemon: &std::sync::Arc<Daemon>, id: &str) -> Result<v1::PodSandboxStats, Error> {
    let pod = daemon
        .sandboxes
        .get(id)?
        .ok_or_else(|| Error::NotFound(format!("pod sandbox {id:?} not found")))?;
    prune_cpu_samples(daemon);
    let daemon = daemon.clone();
    tokio::task::spawn_blocking(move || pod_stats(&daemon, &pod))
        .await
        .map_err(|e| Error::internal("reading pod stats", e))
}

/// `ListPodSandboxStats` / `StreamPodSandboxStats`.
pub async fn list(
    daemon: &std::sync::Arc<Daemon>,
    filter: Option<&v1::PodSandboxStatsFilter>,
) -> Result<Vec<v1::PodSandboxStats>, Error> {
    let filter = PodFilter {
        id: filter.map(|f| f.id.clone()).unwrap_or_default(),
        state: None,
        labels: filter.map(|f| f.label_selector.clone()).unwrap_or_default(),
    };
    let ids: Vec<String> = daemon
        .sandboxes
        .list(&filter)
        .into_iter()
        .map(|p| p.id)
        .collect();
    prune_cpu_samples(daemon);
    let daemon = daemon.clone();
    tokio::task::spawn_blocking(move || {
        ids.iter()
            .filter_map(|id| daemon.sandboxes.get(id).ok().flatten())
            .map(|pod| pod_stats(&daemon, &pod))
            .collect()
    })
    .await
    .map_err(|e| Error::internal("reading pod stats", e))
}
