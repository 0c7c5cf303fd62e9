//! Image volumes (CRI `Mount.image`, Kubernetes' `image` volume source): an
//! OCI image's filesystem, read-only, at a path in the container.
//!
//! Each volume gets an overlay of the image's layers under the container's
//! run dir (through the image store's rootfs API, so the image counts as in
//! use and cannot be removed while mounted), and the CRI mount is rewritten
//! into a read-only bind mount of it (or of its `image_sub_path`).

use std::path::{Component, Path, PathBuf};

use krio_image::ImageStore;
use krio_proto::v1;

use crate::error::Error;

/// The image store key of a container's `index`th mount's volume.
fn key(container_id: &str, index: usize) -> String {
    format!("{container_id}-vol{index}")
}

/// Where that volume is mounted on the host.
fn mount_dir(run_dir: &Path, index: usize) -> PathBuf {
    run_dir.join(format!("vol{index}"))
}

/// The indexes of the mounts that are image volumes.
fn volume_indexes(config: &v1::ContainerConfig) -> impl Iterator<Item = usize> + '_ {
    config
        .mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| m.image.as_ref().is_some_and(|i| !i.image.is_empty()))
        .map(|(i, _)| i)
}

/// Mounts every image volume of `config` and rewrites its mount into a
/// read-only bind of the mounted image; records the resolved image digest
/// in the mount's `image.image_ref` (shown by `ContainerStatus`). On error
/// the caller runs [`unmount_all`]. Blocking.
pub fn mount_all(
    images: &ImageStore,
    container_id: &str,
    run_dir: &Path,
    config: &mut v1::ContainerConfig,
) -> Result<(), Error> {
    let indexes: Vec<usize> = volume_indexes(config).collect();
    for index in indexes {
        let mount = &mut config.mounts[index];
        let field = format!("config.mounts[{index}]");
        if !mount.readonly {
            return Err(Error::InvalidArgument(format!(
                "{field}: image volumes are read-only; set readonly"
            )));
        }
        let sub_path = checked_sub_path(&mount.image_sub_path)
            .map_err(|why| Error::InvalidArgument(format!("{field}.image_sub_path {why}")))?;
        let spec = mount.image.clone().unwrap_or_default();
        let record = images.resolve(&spec.image)?.ok_or_else(|| {
            Error::NotFound(format!(
                "{field}: image {:?} is not present; pull it first",
                spec.image
            ))
        })?;
        let dir = mount_dir(run_dir, index);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::internal(format!("creating {}", dir.display()), e))?;
        let rootfs = images.prepare_rootfs(&record.id, &key(container_id, index))?;
        images.mount_rootfs(&rootfs, &dir)?;
        let source = match &sub_path {
            Some(sub) => {
                ensure_beneath(&dir, sub).map_err(|why| {
                    Error::InvalidArgument(format!(
                        "{field}.image_sub_path {:?} {why} in image {}",
                        mount.image_sub_path, record.id
                    ))
                })?;
                dir.join(sub)
            }
            None => dir,
        };
        mount.host_path = source.display().to_string();
        if let Some(image) = mount.image.as_mut() {
            image.image_ref.clone_from(&record.id);
        }
        tracing::info!(container_id, image = %record.id, container_path = %mount.container_path, "image volume mounted");
    }
    Ok(())
}

/// The same config as the runtime must see it: image volumes as the plain
/// read-only binds [`mount_all`] prepared.
pub fn as_binds(config: &v1::ContainerConfig) -> v1::ContainerConfig {
    let mut config = config.clone();
    for mount in &mut config.mounts {
        if mount.image.take().is_some() {
            mount.image_sub_path.clear();
            mount.readonly = true;
        }
    }
    config
}

/// Unmounts and releases every image volume of `config` (idempotent, best
/// effort: failures are logged). Blocking.
pub fn unmount_all(
    images: &ImageStore,
    container_id: &str,
    run_dir: &Path,
    config: &v1::ContainerConfig,
) {
    for index in volume_indexes(config) {
        let dir = mount_dir(run_dir, index);
        match nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                tracing::warn!(container_id, error = %e, dir = %dir.display(), "could not unmount an image volume");
                // Never remove the image's layers through a live mount.
                continue;
            }
        }
        if let Err(e) = images.remove_rootfs(&key(container_id, index)) {
            tracing::warn!(container_id, error = %e, "could not release an image volume");
        }
    }
}

/// A sub path must be relative and plain: no `..`, no root, no NUL.
fn checked_sub_path(text: &str) -> Result<Option<PathBuf>, &'static str> {
    if text.is_empty() {
        return Ok(None);
    }
    if text.contains('\0') {
        return Err("contains a NUL byte");
    }
    let path = Path::new(text);
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => clean.push(c),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err("must be relative"),
            Component::ParentDir => return Err("must not contain '..'"),
        }
    }
    Ok((!clean.as_os_str().is_empty()).then_some(clean))
}

/// Checks that `sub` exists under `root` without following a symlink on the
/// way: the bind source must stay inside the image.
fn ensure_beneath(root: &Path, sub: &Path) -> Result<(), &'static str> {
    let mut at = root.to_path_buf();
    for component in sub.components() {
        at.push(component);
        let meta = std::fs::symlink_metadata(&at).map_err(|_| "does not exist")?;
        if meta.file_type().is_symlink() {
            return Err("passes through a symlink");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_stay_relative_and_plain() {
        assert_eq!(checked_sub_path(""), Ok(None));
        assert_eq!(checked_sub_path("./"), Ok(None));
        assert_eq!(
            checked_sub_path("etc/ssl/"),
            Ok(Some(PathBuf::from("etc/ssl")))
        );
        assert!(checked_sub_path("/etc").is_err());
        assert!(checked_sub_path("etc/../../x").is_err());
        assert!(checked_sub_path("a\0b").is_err());
    }

    #[test]
    fn sub_paths_must_exist_without_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("etc/ssl")).expect("mkdir");
        std::os::unix::fs::symlink("/", dir.path().join("escape")).expect("symlink");
        assert_eq!(ensure_beneath(dir.path(), Path::new("etc/ssl")), Ok(()));
        assert_eq!(
            ensure_beneath(dir.path(), Path::new("nope")),
            Err("does not exist")
        );
        assert_eq!(
            ensure_beneath(dir.path(), Path::new("escape/etc")),
            Err("passes through a symlink")
        );
    }

    #[test]
    fn the_runtime_sees_plain_read_only_binds() {
        let config = v1::ContainerConfig {
            mounts: vec![v1::Mount {
                container_path: "/mnt/v".into(),
                host_path: "/run/x/vol0/etc".into(),
                image: Some(v1::ImageSpec {
                    image: "sha256:abc".into(),
                    ..Default::default()
                }),
                image_sub_path: "etc".into(),
                readonly: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let binds = as_binds(&config);
        assert!(binds.mounts[0].image.is_none());
        assert!(binds.mounts[0].image_sub_path.is_empty());
        assert_eq!(binds.mounts[0].host_path, "/run/x/vol0/etc");
        assert_eq!(volume_indexes(&config).collect::<Vec<_>>(), [0]);
        assert_eq!(volume_indexes(&binds).count(), 0);
    }
}
