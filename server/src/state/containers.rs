//! The container record.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a container is in its life (the CRI's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    /// Created by the runtime, not started.
    Created,
    /// Started.
    Running,
    /// Its process has exited.
    Exited,
}

/// Everything krio keeps about one container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// The 64-hex-digit container id.
    pub id: String,
    /// The pod sandbox it belongs to.
    pub pod_id: String,
    /// The name reserved for it (name_pod_namespace_uid_attempt).
    pub name_key: String,
    /// Lifecycle state.
    pub state: ContainerState,
    /// Creation time, ns since the epoch.
    pub created_at: i64,
    /// Start time (0 until started).
    pub started_at: i64,
    /// Finish time (0 until exited).
    pub finished_at: i64,
    /// Exit code once exited.
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled` once exited.
    pub reason: String,
    /// A human-readable message about the exit.
    pub message: String,
    /// The image as the kubelet named it.
    pub image: String,
    /// The image ID it runs.
    pub image_id: String,
    /// The `ContainerConfig` as sent (protobuf).
    pub config: Vec<u8>,
    /// The full log path (`log_directory` + `log_path`), empty for none.
    pub log_path: PathBuf,
    /// The monitor's state dir (exit file, attach and ctl sockets).
    pub state_dir: PathBuf,
    /// The OCI bundle (config.json).
    pub bundle: PathBuf,
    /// The mounted root filesystem.
    pub rootfs: PathBuf,
    /// The overlay upper dir: the container's writable layer.
    #[serde(default)]
    pub upper_dir: PathBuf,
    /// The container's init PID on the host (0 unknown).
    pub pid: i32,
    /// The runtime handler.
    pub runtime_handler: String,
    /// The signal StopContainer sends first.
    pub stop_signal: i32,
    /// The user the process runs as.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
    /// Its supplementary groups.
    pub additional_gids: Vec<u32>,
    /// The `LinuxContainerResources` (protobuf) in force after the last
    /// `UpdateContainerResources`; `None` until then, when the config's
    /// resources are the ones in force.
    #[serde(default)]
    pub resources: Option<Vec<u8>>,
}
