//! `UpdatePodSandboxResources`: recorded, not applied.
//!
//! With the cgroupfs driver the kubelet creates and sizes the pod cgroup
//! (`linux.cgroup_parent`) itself, and calls this RPC only after it has
//! resized it; krio owns only the container cgroups below. So there is
//! nothing for krio to write: it checks the request, keeps the figures in
//! the pod record (shown in the verbose `PodSandboxStatus`) and answers OK.

use krio_proto::v1;
use prost::Message;

use super::Sandboxes;
use crate::error::Error;
use crate::state::PodResources;

/// Refuses values no cgroup could hold; 0 means "not set", -1 "unlimited"
/// where the CRI allows it.
fn check(what: &str, r: &v1::LinuxContainerResources) -> Result<(), Error> {
    let fields = [
        ("cpu_period", r.cpu_period, 0),
        ("cpu_shares", r.cpu_shares, 0),
        ("memory_limit_in_bytes", r.memory_limit_in_bytes, 0),
        ("cpu_quota", r.cpu_quota, -1),
        (
            "memory_swap_limit_in_bytes",
            r.memory_swap_limit_in_bytes,
            -1,
        ),
    ];
    for (field, value, min) in fields {
        if value < min {
            return Err(Error::InvalidArgument(format!(
                "{what}.{field}: {value} is out of range (at least {min})"
            )));
        }
    }
    Ok(())
}

impl Sandboxes {
    /// `UpdatePodSandboxResources` (blocking: commits the record).
    pub fn update_resources(
        &self,
        req: &v1::UpdatePodSandboxResourcesRequest,
    ) -> Result<(), Error> {
        if req.pod_sandbox_id.is_empty() {
            return Err(Error::InvalidArgument("pod_sandbox_id is required".into()));
        }
        if let Some(overhead) = &req.overhead {
            check("overhead", overhead)?;
        }
        if let Some(resources) = &req.resources {
            check("resources", resources)?;
        }
        let pod = self.resolve(&req.pod_sandbox_id)?.ok_or_else(|| {
            Error::NotFound(format!("pod sandbox {:?} not found", req.pod_sandbox_id))
        })?;
        let mut pods = self.lock_pods();
        // Removed meanwhile: nothing to record.
        let Some(current) = pods.get_mut(&pod.id) else {
            return Ok(());
        };
        let mut updated = current.clone();
        updated.resources = Some(PodResources {
            overhead: req.overhead.as_ref().map(Message::encode_to_vec),
            resources: req.resources.as_ref().map(Message::encode_to_vec),
        });
        self.store
            .put_pod(&updated)
            .map_err(|e| Error::internal("recording the pod's resources", e))?;
        *current = updated;
        tracing::info!(pod_id = %pod.id, "pod-level resources recorded (the kubelet owns the pod cgroup)");
        Ok(())
    }
}
