//! `UpdateContainerResources`: check the request, apply it through the
//! handler's OCI runtime (`update --resources`), then record what is in
//! force so `ContainerStatus.resources` shows it, across daemon restarts.
//!
//! Fields left at 0 (or empty) in the request are not sent to the runtime,
//! which keeps their current value; the record keeps them too, so it says
//! what the cgroup holds.

use krio_proto::v1;
use krio_runtime::oci::{OciError, OciRuntime};
use krio_runtime::spec::{self, CgroupMode};
use krio_runtime::stats::CgroupDirs;
use prost::Message;

use super::{Containers, view};
use crate::error::Error;
use crate::state::{ContainerRecord, ContainerState};

impl Containers {
    /// `UpdateContainerResources` (blocking). A request the runtime cannot
    /// honour changes nothing.
    pub fn update_resources(&self, req: &v1::UpdateContainerResourcesRequest) -> Result<(), Error> {
        let record = self.get(&req.container_id)?.ok_or_else(|| {
            Error::NotFound(format!("container {:?} not found", req.container_id))
        })?;
        let requested = match (&req.linux, &req.windows) {
            (Some(linux), _) => linux,
            (None, Some(_)) => {
                return Err(Error::InvalidArgument(
                    "windows resources cannot be applied on Linux; send linux resources".into(),
                ));
            }
            (None, None) => {
                return Err(Error::InvalidArgument(
                    "linux resources are required".into(),
                ));
            }
        };
        if record.state == ContainerState::Exited {
            return Err(Error::FailedPrecondition(format!(
                "container {} has exited; its resources can no longer be updated",
                record.id
            )));
        }
        let _span = tracing::info_span!("update_container_resources", container_id = %record.id, pod_id = %record.pod_id).entered();
        let current = view::current_resources(&record).unwrap_or_default();
        let mut to_apply = requested.clone();
        keep_swap_allowance(&current, &mut to_apply);
        let oci = spec::linux_resources(Some(&to_apply), &self.host)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if self.host.cgroup_mode == CgroupMode::Unified {
            check_unified_keys(&record, &to_apply)?;
        }
        let json = serde_json::to_vec(&oci)
            .map_err(|e| Error::internal("encoding the OCI resources", e))?;
        self.runtime(&record)?
            .update(&record.id, &json)
            .map_err(|e| match e {
                OciError::NotFound { .. } => Error::FailedPrecondition(format!(
                    "container {} is no longer known to its runtime: {e}",
                    record.id
                )),
                other => Error::internal("updating the container's resources", other),
            })?;
        let in_force = merge(
            &current,
            &to_apply,
            self.host.swap_accounting,
            self.host.hugetlb,
        );
        self.record_resources(&record.id, &in_force)?;
        tracing::info!(
            memory_limit = in_force.memory_limit_in_bytes,
            cpu_quota = in_force.cpu_quota,
            cpu_period = in_force.cpu_period,
            cpu_shares = in_force.cpu_shares,
            "container resources updated"
        );
        Ok(())
    }

    /// Stores the resources in force, unless the container was removed
    /// meanwhile (a removed record must not come back).
    fn record_resources(
        &self,
        id: &str,
        resources: &v1::LinuxContainerResources,
    ) -> Result<(), Error> {
        let mut records = self.lock();
        let Some(record) = records.get_mut(id) else {
            return Ok(());
        };
        let mut updated: ContainerRecord = record.clone();
        updated.resources = Some(resources.encode_to_vec());
        self.store
            .put_container(&updated)
            .map_err(|e| Error::internal("recording the container's resources", e))?;
        *record = updated;
        Ok(())
    }
}

/// A memory limit change without a swap limit keeps the swap allowance the
/// container had (cgroup v1 holds memory + swap as one limit, which must
/// stay at or above the memory limit, or the kernel refuses the update).
fn keep_swap_allowance(
    current: &v1::LinuxContainerResources,
    req: &mut v1::LinuxContainerResources,
) {
    let (old_mem, old_swap) = (
        current.memory_limit_in_bytes,
        current.memory_swap_limit_in_bytes,
    );
    if req.memory_limit_in_bytes > 0
        && req.memory_swap_limit_in_bytes == 0
        && old_mem > 0
        && old_swap >= old_mem
    {
        req.memory_swap_limit_in_bytes =
            req.memory_limit_in_bytes.saturating_add(old_swap - old_mem);
    }
}

/// On cgroup v2, every `unified` key must name an interface file of the
/// container's cgroup (a typo would otherwise reach the runtime as an
/// opaque write error).
fn check_unified_keys(
    record: &ContainerRecord,
    req: &v1::LinuxContainerResources,
) -> Result<(), Error> {
    if req.unified.is_empty() {
        return Ok(());
    }
    let Some(dir) = u32::try_from(record.pid)
        .ok()
        .filter(|p| *p > 0)
        .and_then(|pid| CgroupDirs::for_pid(pid).ok())
        .and_then(|d| d.unified().map(std::path::Path::to_path_buf))
    else {
        return Ok(());
    };
    let mut keys: Vec<&String> = req.unified.keys().collect();
    keys.sort();
    for key in keys {
        if !dir.join(key).is_file() {
            return Err(Error::InvalidArgument(format!(
                "resources.unified: {key:?} is not a cgroup v2 interface file of this container's cgroup"
            )));
        }
    }
    Ok(())
}

/// The resources in force after applying `req` over `current`: what the
/// request set replaces, what it left at 0 stays; what the host could not
/// apply (swap without swap accounting, hugepages without hugetlb) stays.
fn merge(
    current: &v1::LinuxContainerResources,
    req: &v1::LinuxContainerResources,
    swap_accounting: bool,
    hugetlb: bool,
) -> v1::LinuxContainerResources {
    let pick = |new: i64, old: i64| if new != 0 { new } else { old };
    let pick_str = |new: &String, old: &String| {
        if new.is_empty() {
            old.clone()
        } else {
            new.clone()
        }
    };
    let mut unified = current.unified.clone();
    unified.extend(req.unified.iter().map(|(k, v)| (k.clone(), v.clone())));
    v1::LinuxContainerResources {
        cpu_period: pick(req.cpu_period, current.cpu_period),
        cpu_quota: pick(req.cpu_quota, current.cpu_quota),
        cpu_shares: pick(req.cpu_shares, current.cpu_shares),
        memory_limit_in_bytes: pick(req.memory_limit_in_bytes, current.memory_limit_in_bytes),
        // The runtime cannot change it on a live process.
        oom_score_adj: current.oom_score_adj,
        cpuset_cpus: pick_str(&req.cpuset_cpus, &current.cpuset_cpus),
        cpuset_mems: pick_str(&req.cpuset_mems, &current.cpuset_mems),
        hugepage_limits: if hugetlb && !req.hugepage_limits.is_empty() {
            req.hugepage_limits.clone()
        } else {
            current.hugepage_limits.clone()
        },
        unified,
        memory_swap_limit_in_bytes: if swap_accounting {
            pick(
                req.memory_swap_limit_in_bytes,
                current.memory_swap_limit_in_bytes,
            )
        } else {
            current.memory_swap_limit_in_bytes
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> v1::LinuxContainerResources {
        v1::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 64 << 20,
            oom_score_adj: 100,
            cpuset_cpus: "0".into(),
            ..Default::default()
        }
    }

    #[test]
    fn merge_keeps_what_the_request_leaves_unset() {
        let req = v1::LinuxContainerResources {
            memory_limit_in_bytes: 128 << 20,
            cpu_quota: -1,
            oom_score_adj: -999,
            ..Default::default()
        };
        let out = merge(&base(), &req, true, true);
        assert_eq!(out.memory_limit_in_bytes, 128 << 20);
        assert_eq!(out.cpu_quota, -1);
        assert_eq!(out.cpu_period, 100_000);
        assert_eq!(out.cpu_shares, 512);
        assert_eq!(out.cpuset_cpus, "0");
        assert_eq!(out.oom_score_adj, 100, "oom_score_adj cannot change");
        let swap = v1::LinuxContainerResources {
            memory_swap_limit_in_bytes: 1 << 30,
            ..Default::default()
        };
        assert_eq!(
            merge(&base(), &swap, false, true).memory_swap_limit_in_bytes,
            64 << 20,
            "not applied without swap accounting"
        );
        assert_eq!(
            merge(&base(), &swap, true, true).memory_swap_limit_in_bytes,
            1 << 30
        );
    }

    #[test]
    fn a_memory_change_keeps_the_swap_allowance() {
        let mut req = v1::LinuxContainerResources {
            memory_limit_in_bytes: 128 << 20,
            ..Default::default()
        };
        keep_swap_allowance(&base(), &mut req);
        assert_eq!(req.memory_swap_limit_in_bytes, 128 << 20);
        let mut with_swap = base();
        with_swap.memory_swap_limit_in_bytes = 96 << 20;
        let mut req = v1::LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        };
        keep_swap_allowance(&with_swap, &mut req);
        assert_eq!(req.memory_swap_limit_in_bytes, 64 << 20);
        // An explicit swap limit, or none before, is left alone.
        let mut req = v1::LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        };
        keep_swap_allowance(&v1::LinuxContainerResources::default(), &mut req);
        assert_eq!(req.memory_swap_limit_in_bytes, 0);
    }
}
