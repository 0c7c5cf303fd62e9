//! How a container looks through the CRI: `ContainerStatus`,
//! `ListContainers` entries and filters.

use std::collections::HashMap;

use krio_proto::v1;
use prost::Message;

use crate::state::{ContainerRecord, ContainerState};

fn state(record: &ContainerRecord) -> v1::ContainerState {
    match record.state {
        ContainerState::Created => v1::ContainerState::ContainerCreated,
        ContainerState::Running => v1::ContainerState::ContainerRunning,
        ContainerState::Exited => v1::ContainerState::ContainerExited,
    }
}

fn config(record: &ContainerRecord) -> v1::ContainerConfig {
    v1::ContainerConfig::decode(record.config.as_slice()).unwrap_or_default()
}

/// The resources in force: the last update's, else the config's.
pub fn current_resources(record: &ContainerRecord) -> Option<v1::LinuxContainerResources> {
    match &record.resources {
        Some(bytes) => v1::LinuxContainerResources::decode(bytes.as_slice()).ok(),
        None => config(record).linux.and_then(|l| l.resources),
    }
}

fn image_spec(record: &ContainerRecord) -> v1::ImageSpec {
    v1::ImageSpec {
        image: record.image.clone(),
        ..Default::default()
    }
}

/// The `ContainerStatus` response.
pub fn status(record: &ContainerRecord, verbose: bool) -> v1::ContainerStatusResponse {
    let config = config(record);
    let mut info = HashMap::new();
    if verbose {
        let details = serde_json::json!({
            "sandboxID": record.pod_id,
            "pid": record.pid,
            "runtimeHandler": record.runtime_handler,
            "bundle": record.bundle,
            "rootfs": record.rootfs,
            "monitorStateDir": record.state_dir,
        });
        info.insert("info".to_owned(), details.to_string());
    }
    v1::ContainerStatusResponse {
        status: Some(v1::ContainerStatus {
            id: record.id.clone(),
            metadata: config.metadata.clone(),
            state: state(record) as i32,
            created_at: record.created_at,
            started_at: record.started_at,
            finished_at: record.finished_at,
            exit_code: record.exit_code,
            image: Some(image_spec(record)),
            image_ref: record.image_id.clone(),
            reason: record.reason.clone(),
            message: record.message.clone(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            mounts: config.mounts.clone(),
            log_path: record.log_path.display().to_string(),
            resources: current_resources(record).map(|linux| v1::ContainerResources {
                linux: Some(linux),
                windows: None,
            }),
            image_id: record.image_id.clone(),
            user: Some(v1::ContainerUser {
                linux: Some(v1::LinuxContainerUser {
                    uid: i64::from(record.uid),
                    gid: i64::from(record.gid),
                    supplemental_groups: record
                        .additional_gids
                        .iter()
                        .map(|g| i64::from(*g))
                        .collect(),
                }),
            }),
            stop_signal: 0,
        }),
        info,
    }
}

/// One `ListContainers` entry.
pub fn list_entry(record: &ContainerRecord) -> v1::Container {
    let config = config(record);
    v1::Container {
        id: record.id.clone(),
        pod_sandbox_id: record.pod_id.clone(),
        metadata: config.metadata.clone(),
        image: Some(image_spec(record)),
        image_ref: record.image_id.clone(),
        state: state(record) as i32,
        created_at: record.created_at,
        labels: config.labels,
        annotations: config.annotations,
        image_id: record.image_id.clone(),
    }
}

/// A `ContainerFilter`: every field given must match.
#[derive(Debug, Clone, Default)]
pub struct ContainerFilter {
    /// Full id or id prefix.
    pub id: String,
    /// State, when given.
    pub state: Option<v1::ContainerState>,
    /// Full pod id or prefix.
    pub pod_id: String,
    /// Every label must be present with this value.
    pub labels: HashMap<String, String>,
}

impl ContainerFilter {
    /// From the CRI filter (absent = everything).
    pub fn from_cri(filter: Option<&v1::ContainerFilter>) -> Self {
        let Some(f) = filter else {
            return Self::default();
        };
        Self {
            id: f.id.clone(),
            state: f
                .state
                .as_ref()
                .and_then(|s| v1::ContainerState::try_from(s.state).ok()),
            pod_id: f.pod_sandbox_id.clone(),
            labels: f.label_selector.clone(),
        }
    }

    /// From the CRI stats filter (absent = everything).
    pub fn from_stats_filter(filter: Option<&v1::ContainerStatsFilter>) -> Self {
        let Some(f) = filter else {
            return Self::default();
        };
        Self {
            id: f.id.clone(),
            state: None,
            pod_id: f.pod_sandbox_id.clone(),
            labels: f.label_selector.clone(),
        }
    }

    /// Whether a container passes.
    pub fn matches(&self, record: &ContainerRecord) -> bool {
        (self.id.is_empty() || record.id.starts_with(&self.id))
            && (self.pod_id.is_empty() || record.pod_id.starts_with(&self.pod_id))
            && self.state.is_none_or(|s| s == state(record))
            && (self.labels.is_empty() || {
                let labels = config(record).labels;
                self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
    }
}
