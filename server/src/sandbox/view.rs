//! How a pod looks through the CRI: `PodSandboxStatus`, `ListPodSandbox`
//! entries and filters.

use std::collections::HashMap;

use krio_proto::v1;

use crate::state::{PodRecord, PodState};

fn state(pod: &PodRecord) -> v1::PodSandboxState {
    match pod.state {
        PodState::Ready => v1::PodSandboxState::SandboxReady,
        PodState::Creating | PodState::NotReady => v1::PodSandboxState::SandboxNotready,
    }
}

/// The `PodSandboxStatus` response.
pub fn status(
    pod: &PodRecord,
    config: &v1::PodSandboxConfig,
    verbose: bool,
) -> v1::PodSandboxStatusResponse {
    let namespace_options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let network = pod
        .ips
        .split_first()
        .map(|(primary, rest)| v1::PodSandboxNetworkStatus {
            ip: primary.clone(),
            additional_ips: rest.iter().map(|ip| v1::PodIp { ip: ip.clone() }).collect(),
        });
    let mut info = HashMap::new();
    if verbose {
        let details = serde_json::json!({
            "id": pod.id,
            "state": pod.state,
            "runtimeHandler": pod.runtime_handler,
            "namespaces": pod.namespaces,
            "dir": pod.dir,
            "shm": pod.shm,
            "ips": pod.ips,
            "resources": pod.resources.as_ref().map(resources_json),
        });
        info.insert("info".to_owned(), details.to_string());
    }
    v1::PodSandboxStatusResponse {
        status: Some(v1::PodSandboxStatus {
            id: pod.id.clone(),
            metadata: config.metadata.clone(),
            state: state(pod) as i32,
            created_at: pod.created_at,
            network: Some(network.unwrap_or_default()),
            linux: Some(v1::LinuxPodSandboxStatus {
                namespaces: Some(v1::Namespace {
                    options: Some(namespace_options),
                }),
            }),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            runtime_handler: pod.runtime_handler.clone(),
        }),
        info,
        containers_statuses: Vec::new(),
        timestamp: crate::clock::now_ns(),
    }
}

/// The recorded pod-level resources, decoded for the verbose info.
fn resources_json(r: &crate::state::PodResources) -> serde_json::Value {
    use prost::Message;
    let decode = |b: &Option<Vec<u8>>| {
        b.as_deref()
            .and_then(|b| v1::LinuxContainerResources::decode(b).ok())
            .map(|r| {
                serde_json::json!({
                    "cpuPeriod": r.cpu_period,
                    "cpuQuota": r.cpu_quota,
                    "cpuShares": r.cpu_shares,
                    "memoryLimitInBytes": r.memory_limit_in_bytes,
                    "cpusetCpus": r.cpuset_cpus,
                    "cpusetMems": r.cpuset_mems,
                })
            })
    };
    serde_json::json!({
        "overhead": decode(&r.overhead),
        "resources": decode(&r.resources),
    })
}

/// One `ListPodSandbox` entry.
pub fn list_entry(pod: &PodRecord, config: &v1::PodSandboxConfig) -> v1::PodSandbox {
    v1::PodSandbox {
        id: pod.id.clone(),
        metadata: config.metadata.clone(),
        state: state(pod) as i32,
        created_at: pod.created_at,
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
        runtime_handler: pod.runtime_handler.clone(),
    }
}

/// A `PodSandboxFilter`: every field given must match.
#[derive(Debug, Clone, Default)]
pub struct PodFilter {
    /// Full id or id prefix.
    pub id: String,
    /// State, when given.
    pub state: Option<v1::PodSandboxState>,
    /// Every label must be present with this value.
    pub labels: HashMap<String, String>,
}

impl PodFilter {
    /// From the CRI filter (absent = everything).
    pub fn from_cri(filter: Option<&v1::PodSandboxFilter>) -> Self {
        let Some(f) = filter else {
            return Self::default();
        };
        Self {
            id: f.id.clone(),
            state: f
                .state
                .as_ref()
                .and_then(|s| v1::PodSandboxState::try_from(s.state).ok()),
            labels: f.label_selector.clone(),
        }
    }

    /// Whether a pod passes.
    pub fn matches(&self, pod: &PodRecord, config: &v1::PodSandboxConfig) -> bool {
        (self.id.is_empty() || pod.id.starts_with(&self.id))
            && self.state.is_none_or(|s| s == state(pod))
            && self
                .labels
                .iter()
                .all(|(k, v)| config.labels.get(k) == Some(v))
    }
}
