//! The root filesystem of a container in a pod with its own user namespace:
//! the same overlay, built on id-mapped views of its image layers, so files
//! of host uid 0 belong to the pod's root. The writable layer is not
//! id-mapped (overlayfs works in it with the mounter's, host root's,
//! credentials, which the id-mapping would not map): what the pod writes is
//! stored under its mapped host ids, and the upper dir is given to the
//! pod's root so `/` is its own.
//!
//! overlayfs cannot be id-mapped itself, but takes id-mapped layers (Linux
//! 5.19+). The views are mounted under `<run dir>/idmap` only while the
//! overlay is assembled: overlayfs keeps private clones of its layers.

use std::path::{Path, PathBuf};

use krio_image::{ImageStore, RootfsSpec};

use crate::error::Error;

/// Mounts `spec` on `target` through id-mapped views made with the user
/// namespace pinned at `userns`. Blocking.
pub fn mount(
    images: &ImageStore,
    spec: &RootfsSpec,
    run_dir: &Path,
    target: &Path,
    userns: &Path,
    root_owner: (u32, u32),
) -> Result<(), Error> {
    let (uid, gid) = root_owner;
    for dir in [&spec.upper_dir, &spec.work_dir] {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| {
            Error::internal(format!("giving {} to the pod's root", dir.display()), e)
        })?;
    }
    let base = run_dir.join("idmap");
    let mut views: Vec<PathBuf> = Vec::new();
    let result = assemble(images, spec, &base, target, userns, &mut views);
    // Never remove recursively here: a view that failed to unmount would
    // expose an image layer to the removal.
    for view in views.iter().rev() {
        if let Err(e) = nix::mount::umount2(view, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(error = %e, view = %view.display(), "could not unmount an id-mapped layer view");
        }
        let _ = std::fs::remove_dir(view);
    }
    let _ = std::fs::remove_dir(&base);
    result
}

fn assemble(
    images: &ImageStore,
    spec: &RootfsSpec,
    base: &Path,
    target: &Path,
    userns: &Path,
    views: &mut Vec<PathBuf>,
) -> Result<(), Error> {
    let view = |source: &Path, name: String, views: &mut Vec<PathBuf>| -> Result<PathBuf, Error> {
        let at = base.join(name);
        std::fs::create_dir_all(&at)
            .map_err(|e| Error::internal(format!("creating {}", at.display()), e))?;
        views.push(at.clone());
        krio_runtime::idmap::idmapped_bind(source, userns, &at)
            .map_err(|e| Error::internal(format!("id-mapping {}", source.display()), e))?;
        Ok(at)
    };
    let mut mapped = spec.clone();
    mapped.lower_links.clear();
    for (i, lower) in spec.lower_dirs.iter().enumerate() {
        mapped
            .lower_links
            .push(view(lower, format!("l{i}"), views)?);
    }
    images.mount_rootfs(&mapped, target)?;
    Ok(())
}
