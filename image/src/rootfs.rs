//! Container root filesystems: an overlay of the image's layer dirs with a
//! per-container upper and work dir.
//!
//! # Long layer chains
//!
//! Classic `mount(2)` passes all overlay options in one page (4096 bytes).
//! Two measures keep long chains working:
//!
//! 1. Lower dirs are named through short symlinks, `<dir>/l/<20 hex>` →
//!    `../layers/<chain hex>` (about 40 bytes each instead of ~100), as
//!    containers/storage does. That fits ~100 layers on a typical root.
//! 2. When the options still do not fit, [`mount_overlay`] uses the new
//!    mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`) and adds each
//!    lower dir with its own `lowerdir+` parameter (Linux ≥ 6.8), so the
//!    page limit no longer applies at all (overlay's own limit is 500
//!    layers). No `chdir` is involved, which would be unsafe in a
//!    multi-threaded daemon.

use crate::error::ErrorKind;
use crate::layout::Layout;
use std::path::{Path, PathBuf};

/// Why a root filesystem could not be prepared, mounted or removed.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The container ID cannot be used as a directory name.
    #[error("invalid container ID {0:?}")]
    InvalidContainerId(String),
    /// A file operation failed.
    #[error("container {container}: {op} {path}")]
    Io {
        /// The container.
        container: String,
        /// What was attempted.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The overlay mount failed.
    #[error("container {container}: mounting overlay on {target} ({how})")]
    Mount {
        /// The container.
        container: String,
        /// The mount target.
        target: PathBuf,
        /// Which mount API was used.
        how: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl RootfsError {
    /// The status class.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidContainerId(_) => ErrorKind::InvalidArgument,
            _ => ErrorKind::Internal,
        }
    }
}

/// Everything needed to mount a container's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsSpec {
    /// The container.
    pub container_id: String,
    /// The image it comes from.
    pub image_id: String,
    /// Layer dirs, top first (real paths).
    pub lower_dirs: Vec<PathBuf>,
    /// The same layers through their short links, top first: what the
    /// mount options name.
    pub lower_links: Vec<PathBuf>,
    /// The container's writable layer.
    pub upper_dir: PathBuf,
    /// Overlay's work dir (same filesystem as `upper_dir`).
    pub work_dir: PathBuf,
}

/// Largest option string classic `mount(2)` accepts (one page, with NUL).
pub const MAX_MOUNT_DATA: usize = 4095;

impl RootfsSpec {
    /// The classic overlay option string
    /// (`lowerdir=…:…,upperdir=…,workdir=…`), using the short links.
    pub fn mount_options(&self) -> String {
        let lower: Vec<String> = self
            .lower_links
            .iter()
            .map(|p| escape_lower(&p.to_string_lossy()))
            .collect();
        format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            self.upper_dir.display(),
            self.work_dir.display()
        )
    }

    /// True when [`mount_options`](Self::mount_options) fits one page.
    pub fn fits_one_page(&self) -> bool {
        self.mount_options().len() <= MAX_MOUNT_DATA
    }
}

/// Overlay treats `:` and `,` in lowerdir specially; our paths have
/// neither unless the store dir does, so escape to be safe.
fn escape_lower(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}

/// Checks that `id` is usable as a directory name.
pub fn check_container_id(id: &str) -> Result<(), RootfsError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RootfsError::InvalidContainerId(id.to_owned()))
    }
}

/// Creates (idempotently) the short link of each layer and the
/// container's upper and work dirs; returns the spec.
pub fn prepare(
    layout: &Layout,
    image_id: &str,
    chains: &[crate::digest::Digest],
    container_id: &str,
) -> Result<RootfsSpec, RootfsError> {
    check_container_id(container_id)?;
    let io = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        let container = container_id.to_owned();
        move |source| RootfsError::Io {
            container,
            op,
            path,
            source,
        }
    };
    let cdir = layout.containers_dir().join(container_id);
    let upper = cdir.join("upper");
    let work = cdir.join("work");
    for d in [&cdir, &upper, &work] {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("creating", d)(e)),
        }
    }
    let mut lower_dirs = Vec::new();
    let mut lower_links = Vec::new();
    for chain in chains.iter().rev() {
        let real = layout.layer(chain);
        let link = layout.links_dir().join(Layout::link_name(chain));
        let target = PathBuf::from("../layers").join(chain.hex());
        match std::fs::read_link(&link) {
            Ok(t) if t == target => {}
            Ok(_) => {
                std::fs::remove_file(&link).map_err(io("replacing link", &link))?;
                std::os::unix::fs::symlink(&target, &link).map_err(io("linking", &link))?;
            }
            Err(_) => match std::os::unix::fs::symlink(&target, &link) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io("linking", &link)(e)),
            },
        }
        lower_dirs.push(real);
        lower_links.push(link);
    }
    if lower_dirs.is_empty() {
        // An image without layers: overlay needs one lower dir.
        let empty = cdir.join("empty");
        match std::fs::create_dir(&empty) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("creating", &empty)(e)),
        }
        lower_dirs.push(empty.clone());
        lower_links.push(empty);
    }
    Ok(RootfsSpec {
        container_id: container_id.to_owned(),
        image_id: image_id.to_owned(),
        lower_dirs,
        lower_links,
        upper_dir: upper,
        work_dir: work,
    })
}

/// Mounts the overlay of `spec` on `target`: classic `mount(2)` when the
/// options fit one page, else the new mount API with one `lowerdir+` per
/// layer.
pub fn mount_overlay(spec: &RootfsSpec, target: &Path) -> Result<(), RootfsError> {
    let err = |how: &'static str| {
        let container = spec.container_id.clone();
        let target = target.to_owned();
        move |e: rustix::io::Errno| RootfsError::Mount {
            container,
            target,
            how,
            source: e.into(),
        }
    };
    if spec.fits_one_page() {
        let opts = std::ffi::CString::new(spec.mount_options())
            .map_err(|_| RootfsError::InvalidContainerId(spec.container_id.clone()))?;
        return rustix::mount::mount(
            "overlay",
            target,
            "overlay",
            rustix::mount::MountFlags::empty(),
            Some(opts.as_c_str()),
        )
        .map_err(err("mount(2)"));
    }
    use rustix::mount::{
        FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create,
        fsconfig_set_string, fsmount, fsopen, move_mount,
    };
    let how = "fsopen with lowerdir+";
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(err(how))?;
    for l in &spec.lower_links {
        fsconfig_set_string(&fs, "lowerdir+", l.as_path()).map_err(err(how))?;
    }
    fsconfig_set_string(&fs, "upperdir", spec.upper_dir.as_path()).map_err(err(how))?;
    fsconfig_set_string(&fs, "workdir", spec.work_dir.as_path()).map_err(err(how))?;
    fsconfig_create(&fs).map_err(err(how))?;
    let mnt =
        fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty()).map_err(err(how))?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(err(how))
}

/// Removes the container's dirs (idempotent).
pub fn remove(layout: &Layout, container_id: &str) -> Result<(), RootfsError> {
    check_container_id(container_id)?;
    let cdir = layout.containers_dir().join(container_id);
    match std::fs::remove_dir_all(&cdir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RootfsError::Io {
            container: container_id.to_owned(),
            op: "removing",
            path: cdir,
            source,
        }),
    }
}
