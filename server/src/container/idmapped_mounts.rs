//! CRI mounts with `uid_mappings`/`gid_mappings`: the kubelet asks for
//! them on every volume of a pod with its own user namespace, so the pod's
//! root owns what host root owns there. krio binds an id-mapped view of the
//! host path under the container's run dir (see [`krio_runtime::idmap`])
//! and hands the runtime a plain bind of that view.

use std::path::{Path, PathBuf};

use krio_proto::v1;

use crate::error::Error;

/// Where the `index`th mount's view goes.
fn view_path(run_dir: &Path, index: usize) -> PathBuf {
    run_dir.join("idmapped").join(index.to_string())
}

fn wants_idmap(m: &v1::Mount) -> bool {
    !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty()
}

/// Mounts the id-mapped views of `config`'s mounts that ask for one and
/// points those mounts at them (mappings cleared). The mappings must be the
/// pod's own (`pod_maps`: uids, gids): the views map through the pod's user
/// namespace, pinned at `userns`. On error the caller runs
/// [`unmount_all`]. Blocking.
pub fn mount_all(
    config: &mut v1::ContainerConfig,
    run_dir: &Path,
    userns: Option<&Path>,
    pod_maps: (&[v1::IdMapping], &[v1::IdMapping]),
) -> Result<(), Error> {
    for (index, mount) in config.mounts.iter_mut().enumerate() {
        if !wants_idmap(mount) {
            continue;
        }
        let field = format!("config.mounts[{index}]");
        let Some(userns) = userns else {
            return Err(Error::InvalidArgument(format!(
                "{field}: id-mapped mounts need a pod with its own user namespace"
            )));
        };
        if mount.uid_mappings != pod_maps.0 || mount.gid_mappings != pod_maps.1 {
            return Err(Error::InvalidArgument(format!(
                "{field}: the mount's id mappings must be the pod's user namespace mappings"
            )));
        }
        let source = PathBuf::from(&mount.host_path);
        let meta = std::fs::metadata(&source).map_err(|e| {
            Error::InvalidArgument(format!("{field}: host_path {}: {e}", source.display()))
        })?;
        let view = view_path(run_dir, index);
        if let Some(parent) = view.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::internal(format!("creating {}", parent.display()), e))?;
        }
        // A bind's target is of the source's kind.
        let made = if meta.is_dir() {
            std::fs::create_dir(&view)
        } else {
            std::fs::File::create(&view).map(drop)
        };
        made.map_err(|e| Error::internal(format!("creating {}", view.display()), e))?;
        krio_runtime::idmap::idmapped_bind(&source, userns, &view).map_err(|e| {
            Error::internal(format!("id-mapping the volume {}", source.display()), e)
        })?;
        mount.host_path = view.display().to_string();
        mount.uid_mappings.clear();
        mount.gid_mappings.clear();
    }
    Ok(())
}

/// Unmounts and removes the views of `config`'s id-mapped mounts
/// (idempotent, best effort). Blocking.
pub fn unmount_all(container_id: &str, run_dir: &Path, config: &v1::ContainerConfig) {
    for (index, _) in config
        .mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| wants_idmap(m))
    {
        let view = view_path(run_dir, index);
        match nix::mount::umount2(&view, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                // Never remove through a live view of a volume.
                tracing::warn!(container_id, error = %e, view = %view.display(), "could not unmount an id-mapped volume view");
                continue;
            }
        }
        let _ = std::fs::remove_dir(&view).or_else(|_| std::fs::remove_file(&view));
    }
}
