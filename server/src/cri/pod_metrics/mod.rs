//! `ListMetricDescriptors`, `ListPodSandboxMetrics` and
//! `StreamPodSandboxMetrics`: cadvisor-compatible metrics of each pod's
//! containers (from their cgroups, processes and writable layers) and of
//! the pod's network (read inside its network namespace).
//!
//! Figures are read on demand, so every metric's timestamp is 0 ("gathered
//! live" in the CRI's terms). Exited containers are left out, as cadvisor
//! leaves out cgroups that are gone. A metric's value is a `uint64` in the
//! CRI, so the `*_seconds*` figures are whole seconds (truncated).
//!
//! Pod-level metrics are the network ones only (labelled `container="POD"`):
//! the pod cgroup's CPU and memory already include its containers', and a
//! second series of them would be counted twice by the usual per-pod sums.

mod collect;
mod families;

use std::sync::Arc;

use krio_proto::v1;
use krio_runtime::stats::netns_stats;
use prost::Message;

use super::Daemon;
use crate::container::ContainerFilter;
use crate::error::Error;
use crate::state::{ContainerState, PodRecord, PodState};
use collect::Sink;

/// The container label value of pod-level metrics (the kubelet's and
/// cadvisor's name for the pod's own sandbox).
const POD_CONTAINER_NAME: &str = "POD";

/// `ListMetricDescriptors`: every family krio fills.
pub fn descriptors() -> Vec<v1::MetricDescriptor> {
    families::ALL.iter().map(|f| f.descriptor()).collect()
}

/// The metrics of one pod (blocking: reads cgroups, `/proc` and the
/// netns).
fn pod_metrics(daemon: &Daemon, pod: &PodRecord, now_secs: u64) -> v1::PodSandboxMetrics {
    let config = v1::PodSandboxConfig::decode(pod.config.as_slice()).unwrap_or_default();
    let md = config.metadata.unwrap_or_default();
    let mut pod_sink = Sink::new([
        POD_CONTAINER_NAME.to_owned(),
        pod.id.clone(),
        String::new(),
        md.namespace.clone(),
        md.name.clone(),
    ]);
    if pod.state == PodState::Ready
        && let Some(ns) = &pod.namespaces.net
    {
        match netns_stats(ns) {
            Ok(net) => collect::network(&net, &mut pod_sink),
            Err(e) => tracing::debug!(pod_id = %pod.id, error = %e, "no network metrics"),
        }
    }
    let records = daemon.containers.records(&ContainerFilter {
        pod_id: pod.id.clone(),
        ..ContainerFilter::default()
    });
    let container_metrics = records
        .iter()
        // The filter matches by prefix; metrics belong to this pod only.
        .filter(|r| r.pod_id == pod.id && r.state != ContainerState::Exited)
        .map(|record| {
            let config = v1::ContainerConfig::decode(record.config.as_slice()).unwrap_or_default();
            let mut sink = Sink::new([
                config.metadata.map(|m| m.name).unwrap_or_default(),
                record.id.clone(),
                record.image.clone(),
                md.namespace.clone(),
                md.name.clone(),
            ]);
            collect::container(record, &mut sink, now_secs);
            v1::ContainerMetrics {
                container_id: record.id.clone(),
                metrics: sink.into_metrics(),
            }
        })
        .collect();
    v1::PodSandboxMetrics {
        pod_sandbox_id: pod.id.clone(),
        metrics: pod_sink.into_metrics(),
        container_metrics,
    }
}

/// `ListPodSandboxMetrics` / `StreamPodSandboxMetrics`: every pod, oldest
/// first.
pub async fn list(daemon: &Arc<Daemon>) -> Result<Vec<v1::PodSandboxMetrics>, Error> {
    let ids: Vec<String> = daemon
        .sandboxes
        .list(&crate::sandbox::PodFilter::default())
        .into_iter()
        .map(|p| p.id)
        .collect();
    let daemon = daemon.clone();
    super::blocking("reading pod metrics", move || {
        let now_secs = u64::try_from(crate::clock::now_ns()).unwrap_or(0) / 1_000_000_000;
        Ok::<_, Error>(
            ids.iter()
                .filter_map(|id| daemon.sandboxes.get(id).ok().flatten())
                .map(|pod| pod_metrics(&daemon, &pod, now_secs))
                .collect(),
        )
    })
    .await
}
