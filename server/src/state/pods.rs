//! The pod sandbox record.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a pod is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodState {
    /// `RunPodSandbox` has started but not finished; after a crash such a
    /// pod is torn down at start.
    Creating,
    /// Running: namespaces and network are up.
    Ready,
    /// Stopped: network torn down, namespaces kept until removal.
    NotReady,
}

/// Everything krio keeps about one pod sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodRecord {
    /// The 64-hex-digit sandbox id.
    pub id: String,
    /// The name reserved for it (kubelet's name_namespace_uid_attempt).
    pub name_key: String,
    /// Lifecycle state.
    pub state: PodState,
    /// Creation time, ns since the epoch.
    pub created_at: i64,
    /// The runtime handler it runs under.
    pub runtime_handler: String,
    /// The `PodSandboxConfig` as the kubelet sent it (protobuf).
    pub config: Vec<u8>,
    /// Pinned namespaces it owns (net, ipc, uts), for joining and removal.
    pub namespaces: PodNamespaces,
    /// The sandbox's own files (hostname, hosts, resolv.conf).
    pub dir: PathBuf,
    /// The pod's `/dev/shm` tmpfs, when it has its own IPC namespace.
    pub shm: Option<PathBuf>,
    /// Pod IPs from CNI, primary first.
    pub ips: Vec<String>,
    /// Whether CNI ADD has run (so DEL is owed on stop).
    pub network_attached: bool,
    /// Host PID of the infra process holding a shared PID namespace.
    #[serde(default)]
    pub infra_pid: Option<i32>,
    /// The pod-level resources the kubelet last sent with
    /// `UpdatePodSandboxResources`; `None` before any.
    #[serde(default)]
    pub resources: Option<PodResources>,
}

/// Pod-level resources as the kubelet reports them (each a
/// `LinuxContainerResources`, protobuf-encoded; absent when not sent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodResources {
    /// The pod's overhead (RuntimeClass overhead).
    pub overhead: Option<Vec<u8>>,
    /// The sum of its containers' resources.
    pub resources: Option<Vec<u8>>,
}

/// Pins of the namespaces a pod owns; `None` means the node's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNamespaces {
    /// Network namespace pin.
    pub net: Option<PathBuf>,
    /// IPC namespace pin.
    pub ipc: Option<PathBuf>,
    /// UTS namespace pin.
    pub uts: Option<PathBuf>,
    /// Shared PID namespace pin (held by the infra process).
    #[serde(default)]
    pub pid: Option<PathBuf>,
    /// User namespace pin, when the pod has its own.
    #[serde(default)]
    pub user: Option<PathBuf>,
}

impl PodNamespaces {
    /// All pins, the user namespace's first (joined before the others).
    pub fn pins(&self) -> Vec<PathBuf> {
        [&self.user, &self.net, &self.ipc, &self.uts, &self.pid]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
impl PodRecord {
    /// A record with the given id, for tests.
    pub fn for_test(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            name_key: format!("{id}_ns_uid_0"),
            state: PodState::Ready,
            created_at: 1,
            runtime_handler: "runc".into(),
            config: vec![1, 2, 3],
            namespaces: PodNamespaces::default(),
            dir: PathBuf::from("/x"),
            shm: None,
            ips: vec!["10.0.0.2".into()],
            network_attached: true,
            infra_pid: None,
            resources: None,
        }
    }
}
