//! `PodSandboxStats`: the pod's containers summed, its network interfaces
//! read inside its network namespace.

use krio_proto::v1;
use krio_runtime::stats::{InterfaceStats, netns_stats};
use prost::Message;

use super::Daemon;
use crate::container::ContainerFilter;
use crate::error::Error;
use crate::sandbox::PodFilter;
use crate::state::PodRecord;

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

/// The stats of one pod (blocking: reads cgroups and the netns).
fn pod_stats(daemon: &Daemon, pod: &PodRecord) -> v1::PodSandboxStats {
    let config = v1::PodSandboxConfig::decode(pod.config.as_slice()).unwrap_or_default();
    let containers = daemon.containers.list_stats(&ContainerFilter {
        pod_id: pod.id.clone(),
        ..ContainerFilter::default()
    });
    let now = crate::clock::now_ns();
    let cpu = v1::CpuUsage {
        timestamp: now,
        usage_core_nano_seconds: sum(&containers, |c| {
            c.cpu.as_ref()?.usage_core_nano_seconds.map(|v| v.value)
        })
        .and_then(value),
        usage_nano_cores: sum(&containers, |c| {
            c.cpu.as_ref()?.usage_nano_cores.map(|v| v.value)
        })
        .and_then(value),
        psi: None,
    };
    let memory_field = |f: fn(&v1::MemoryUsage) -> Option<v1::UInt64Value>| {
        sum(&containers, |c| f(c.memory.as_ref()?).map(|v| v.value)).and_then(value)
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
            process: None,
            containers,
            io: None,
        }),
        windows: None,
    }
}

/// `PodSandboxStats`.
pub async fn one(daemon: &std::sync::Arc<Daemon>, id: &str) -> Result<v1::PodSandboxStats, Error> {
    let pod = daemon
        .sandboxes
        .get(id)?
        .ok_or_else(|| Error::NotFound(format!("pod sandbox {id:?} not found")))?;
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
