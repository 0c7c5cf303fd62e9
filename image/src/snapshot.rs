//! The store's root-filesystem and disk-usage API (see [`crate::rootfs`]).

use crate::db;
use crate::digest::Digest;
use crate::error::ImageError;
use crate::rootfs::{self, RootfsSpec};
use crate::store::ImageStore;
use crate::usage::{self, FsUsage};
use std::path::Path;

impl ImageStore {
    /// Bytes and inodes the store uses, and its filesystem's mount point.
    pub fn fs_usage(&self) -> Result<FsUsage, ImageError> {
        usage::usage(self.inner.layout.root())
    }

    /// Prepares the writable root filesystem of `container_id` from
    /// `image_id` (any form `resolve` accepts): short links to the layer
    /// dirs (top first in the spec) and the container's upper and work
    /// dirs, and records that the image is in use. Idempotent.
    pub fn prepare_rootfs(
        &self,
        image_id: &str,
        container_id: &str,
    ) -> Result<RootfsSpec, ImageError> {
        rootfs::check_container_id(container_id)?;
        let rec = self
            .resolve(image_id)?
            .ok_or_else(|| ImageError::NotFound(image_id.to_owned()))?;
        let chains = rec
            .layers
            .iter()
            .map(|l| Digest::parse(l))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ImageError::NotFound(format!("{} (corrupt layer list)", rec.id)))?;
        // Recorded first, under the collection lock, so the layers cannot
        // be collected while the links are made.
        {
            let _gc = self.inner.gc_lock.lock().unwrap_or_else(|p| p.into_inner());
            if db::get(&self.inner.db, &rec.id)?.is_none() {
                return Err(ImageError::NotFound(image_id.to_owned()));
            }
            db::put_rootfs(&self.inner.db, container_id, &rec.id)?;
        }
        let spec = rootfs::prepare(&self.inner.layout, &rec.id, &chains, container_id)?;
        tracing::info!(container_id, image = %rec.id, layers = chains.len(), "rootfs prepared");
        Ok(spec)
    }

    /// Mounts the overlay described by `spec` on `target` (an existing
    /// directory).
    pub fn mount_rootfs(&self, spec: &RootfsSpec, target: &Path) -> Result<(), ImageError> {
        rootfs::mount_overlay(spec, target)?;
        tracing::info!(container_id = %spec.container_id, target = %target.display(), "rootfs mounted");
        Ok(())
    }

    /// Removes the container's upper and work dirs and its in-use record.
    /// The caller unmounts first. Idempotent.
    pub fn remove_rootfs(&self, container_id: &str) -> Result<(), ImageError> {
        rootfs::remove(&self.inner.layout, container_id)?;
        db::delete_rootfs(&self.inner.db, container_id)?;
        tracing::info!(container_id, "rootfs removed");
        Ok(())
    }

    /// The image a prepared root filesystem came from.
    pub fn rootfs_image(&self, container_id: &str) -> Result<Option<String>, ImageError> {
        db::rootfs_image(&self.inner.db, container_id)
    }
}
