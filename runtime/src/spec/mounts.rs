//! The container's mounts, in order: the runtime defaults (`/proc`, `/dev`,
//! `/dev/pts`, `/dev/shm`, `/dev/mqueue`, `/sys`, `/sys/fs/cgroup`), then the
//! pod's `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname` and the CRI mounts,
//! sorted together by depth (a parent before its children; stable, as
//! containerd does). A default or pod file the CRI config mounts over is left
//! out.
//!
//! CRI mounts are `rbind` mounts: `ro` when read-only, `rro` (recursive)
//! when asked and supported, propagation PRIVATE → `rprivate`,
//! HOST_TO_CONTAINER → `rslave`, BIDIRECTIONAL → `rshared` (the host path
//! must then be on a shared mount, or shared/slave for `rslave`, and the
//! rootfs propagation becomes `rshared`/`rslave` to match). A host path that
//! does not exist is returned in `mounts_to_create`: the kubelet's semantics
//! are that it is created as a directory. A host path that is a symlink is
//! followed and the real destination mounted, as the CRI asks.
//! `selinux_relabel` is ignored (krio has no SELinux support); `mount_options`
//! may add only harmless bind flags (`nosuid`, `nodev`, `noexec`, atime
//! flags…); image-volume mounts and id-mapped mounts are refused as not
//! implemented yet.
//!
//! Image `VOLUME`s are not mounted: krio follows CRI-O's default `mkdir`
//! mode, where the volume is a plain directory of the container's writable
//! layer (image content kept, no memory or extra disk used). Their container
//! paths are returned for the caller to create inside the rootfs.

use std::collections::HashSet;
use std::io;
use std::path::{Component, Path, PathBuf};

use krio_proto::v1;
use oci_spec::runtime::Mount;

use super::host::{HostInfo, mount_of};
use super::sandbox::SandboxInfo;

/// A mount cannot be set up as asked.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A container path that is not absolute and clean.
    #[error("mounts: container path {path:?} {reason}")]
    BadContainerPath {
        /// The path.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// A host path that is not absolute.
    #[error("mounts: host path {path:?} for {container_path:?} {reason}")]
    BadHostPath {
        /// The host path.
        path: String,
        /// Where it was to be mounted.
        container_path: String,
        /// Why.
        reason: &'static str,
    },
    /// The host path exists but cannot be resolved.
    #[error("mounts: host path {path}: {source}")]
    HostPath {
        /// The host path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Two CRI mounts at the same container path.
    #[error("mounts: more than one mount at {path:?}")]
    Duplicate {
        /// The container path.
        path: String,
    },
    /// `recursive_read_only` with a mount that is not read-only or not private.
    #[error("mounts: {path:?}: recursive_read_only needs {needs}")]
    RecursiveReadOnly {
        /// The container path.
        path: String,
        /// What it needs.
        needs: &'static str,
    },
    /// `recursive_read_only` where the kernel or runtime cannot do it.
    #[error(
        "mounts: {path:?}: recursive read-only mounts are not supported on this host (needs Linux 5.12 and an OCI runtime with 'rro')"
    )]
    RecursiveReadOnlyUnsupported {
        /// The container path.
        path: String,
    },
    /// Propagation that the host path's mount cannot give.
    #[error(
        "mounts: {container_path:?} asks for {propagation} propagation, but host path {host_path} is on mount {mount_point}, which is not {needs}; make it shared (mount --make-rshared {mount_point})"
    )]
    Propagation {
        /// The container path.
        container_path: String,
        /// The host path.
        host_path: PathBuf,
        /// Its mount point.
        mount_point: PathBuf,
        /// The requested propagation.
        propagation: &'static str,
        /// What the host mount must be.
        needs: &'static str,
    },
    /// A mount option outside the allowed set.
    #[error("mounts: {path:?}: mount option {option:?} is not allowed")]
    BadOption {
        /// The container path.
        path: String,
        /// The option.
        option: String,
    },
    /// Image volume mounts and id-mapped mounts are not implemented yet.
    #[error("mounts: {path:?}: {what} are not supported by krio yet")]
    Unsupported {
        /// The container path.
        path: String,
        /// What.
        what: &'static str,
    },
    /// An image `VOLUME` that is not a clean absolute path.
    #[error("image VOLUME {path:?} {reason}")]
    BadImageVolume {
        /// The path.
        path: String,
        /// Why.
        reason: &'static str,
    },
}

/// Extra bind options a CRI mount may carry (`mount_options`).
const ALLOWED_OPTIONS: [&str; 11] = [
    "nosuid",
    "suid",
    "nodev",
    "dev",
    "noexec",
    "exec",
    "noatime",
    "relatime",
    "strictatime",
    "nodiratime",
    "nosymfollow",
];

/// A container path as a clean absolute path: no `..`, no NUL, not `/`.
pub(crate) fn clean_container_path(path: &str) -> Result<PathBuf, &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    if !path.starts_with('/') {
        return Err("is not absolute");
    }
    let mut clean = PathBuf::from("/");
    for component in Path::new(path).components() {
        match component {
            Component::Normal(c) => clean.push(c),
            Component::ParentDir => return Err("contains '..'"),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    if clean == Path::new("/") {
        return Err("is the root directory");
    }
    Ok(clean)
}

fn mount(destination: &str, typ: &str, source: &Path, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination));
    m.set_typ(Some(typ.to_owned()));
    m.set_source(Some(source.to_path_buf()));
    m.set_options(Some(options.iter().map(|o| (*o).to_owned()).collect()));
    m
}

/// The container's mounts and what the caller must prepare for them.
pub(crate) struct Mounts {
    pub mounts: Vec<Mount>,
    pub to_create: Vec<PathBuf>,
    pub rootfs_propagation: Option<String>,
    pub image_volumes: Vec<PathBuf>,
}

/// What shapes the mounts besides the CRI list.
pub(crate) struct MountContext<'a> {
    pub sandbox: &'a SandboxInfo,
    pub host: &'a HostInfo,
    pub privileged: bool,
    pub readonly_rootfs: bool,
    pub image_volumes: &'a [String],
}

fn defaults(ctx: &MountContext<'_>) -> Vec<Mount> {
    let sys_mode = if ctx.privileged { "rw" } else { "ro" };
    let shm = match &ctx.sandbox.shm {
        Some(path) => mount(
            "/dev/shm",
            "bind",
            path,
            &["rbind", "rprivate", "nosuid", "nodev", "noexec"],
        ),
        None => mount(
            "/dev/shm",
            "tmpfs",
            Path::new("shm"),
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
    };
    vec![
        mount(
            "/proc",
            "proc",
            Path::new("proc"),
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev",
            "tmpfs",
            Path::new("tmpfs"),
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            Path::new("devpts"),
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        shm,
        mount(
            "/dev/mqueue",
            "mqueue",
            Path::new("mqueue"),
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            Path::new("sysfs"),
            &["nosuid", "noexec", "nodev", sys_mode],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            Path::new("cgroup"),
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        ),
    ]
}

fn propagation_of(value: i32) -> (v1::MountPropagation, &'static str) {
    match v1::MountPropagation::try_from(value) {
        Ok(v1::MountPropagation::PropagationHostToContainer) => {
            (v1::MountPropagation::PropagationHostToContainer, "rslave")
        }
        Ok(v1::MountPropagation::PropagationBidirectional) => {
            (v1::MountPropagation::PropagationBidirectional, "rshared")
        }
        _ => (v1::MountPropagation::PropagationPrivate, "rprivate"),
    }
}

/// The nearest existing ancestor of `path` (for mount lookups of paths to create).
fn existing_ancestor(path: &Path) -> PathBuf {
    path.ancestors()
        .find_map(|p| p.canonicalize().ok())
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn check_propagation(
    ctx: &MountContext<'_>,
    container_path: &str,
    host_path: &Path,
    propagation: v1::MountPropagation,
) -> Result<(), MountError> {
    let (needs, ok): (&'static str, fn(bool, bool) -> bool) = match propagation {
        v1::MountPropagation::PropagationBidirectional => ("shared", |shared, _| shared),
        v1::MountPropagation::PropagationHostToContainer => {
            ("shared or slave", |shared, slave| shared || slave)
        }
        v1::MountPropagation::PropagationPrivate => return Ok(()),
    };
    if ctx.host.mounts.is_empty() {
        return Ok(());
    }
    let resolved = existing_ancestor(host_path);
    match mount_of(&ctx.host.mounts, &resolved) {
        Some(m) if ok(m.shared, m.slave) => Ok(()),
        Some(m) => Err(MountError::Propagation {
            container_path: container_path.to_owned(),
            host_path: host_path.to_owned(),
            mount_point: m.mount_point.clone(),
            propagation: propagation_of(propagation as i32).1,
            needs,
        }),
        None => Ok(()),
    }
}

/// One CRI mount as an OCI mount; a missing host path goes to `to_create`.
fn cri_mount(
    m: &v1::Mount,
    destination: &Path,
    ctx: &MountContext<'_>,
    to_create: &mut Vec<PathBuf>,
) -> Result<(Mount, v1::MountPropagation), MountError> {
    let path = m.container_path.clone();
    if m.image.as_ref().is_some_and(|i| !i.image.is_empty()) {
        return Err(MountError::Unsupported {
            path,
            what: "image volume mounts",
        });
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(MountError::Unsupported {
            path,
            what: "id-mapped mounts",
        });
    }
    let bad_host = |reason| MountError::BadHostPath {
        path: m.host_path.clone(),
        container_path: m.container_path.clone(),
        reason,
    };
    if m.host_path.is_empty() {
        return Err(bad_host("is empty"));
    }
    if m.host_path.contains('\0') {
        return Err(bad_host("contains a NUL byte"));
    }
    let host_path = PathBuf::from(&m.host_path);
    if !host_path.is_absolute() {
        return Err(bad_host("is not absolute"));
    }
    let source = match host_path.canonicalize() {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if host_path.symlink_metadata().is_ok() {
                // A dangling symlink: creating a directory "there" would follow it.
                return Err(MountError::HostPath {
                    path: host_path,
                    source: e,
                });
            }
            to_create.push(host_path.clone());
            host_path.clone()
        }
        Err(e) => {
            return Err(MountError::HostPath {
                path: host_path,
                source: e,
            });
        }
    };

    let (propagation, propagation_option) = propagation_of(m.propagation);
    if m.recursive_read_only {
        if !m.readonly {
            return Err(MountError::RecursiveReadOnly {
                path,
                needs: "readonly to be set too",
            });
        }
        if propagation != v1::MountPropagation::PropagationPrivate {
            return Err(MountError::RecursiveReadOnly {
                path,
                needs: "PROPAGATION_PRIVATE",
            });
        }
        if !ctx.host.rro_mounts {
            return Err(MountError::RecursiveReadOnlyUnsupported { path });
        }
    }
    check_propagation(ctx, &m.container_path, &source, propagation)?;

    let mut options = vec!["rbind", propagation_option];
    if m.readonly {
        options.push("ro");
    }
    if m.recursive_read_only {
        options.push("rro");
    }
    for option in &m.mount_options {
        if !ALLOWED_OPTIONS.contains(&option.as_str()) {
            return Err(MountError::BadOption {
                path,
                option: option.clone(),
            });
        }
        if !options.contains(&option.as_str()) {
            options.push(option);
        }
    }
    let mut out = mount("", "bind", &source, &options);
    out.set_destination(destination.to_path_buf());
    Ok((out, propagation))
}

/// The container's mounts.
pub(crate) fn mounts(
    requested: &[v1::Mount],
    ctx: &MountContext<'_>,
) -> Result<Mounts, MountError> {
    let mut to_create = Vec::new();
    let mut destinations: HashSet<PathBuf> = HashSet::new();
    let mut extra: Vec<Mount> = Vec::new();
    let mut rshared = false;
    let mut rslave = false;
    for m in requested {
        let destination = clean_container_path(&m.container_path).map_err(|reason| {
            MountError::BadContainerPath {
                path: m.container_path.clone(),
                reason,
            }
        })?;
        if !destinations.insert(destination.clone()) {
            return Err(MountError::Duplicate {
                path: m.container_path.clone(),
            });
        }
        let (mount, propagation) = cri_mount(m, &destination, ctx, &mut to_create)?;
        rshared |= propagation == v1::MountPropagation::PropagationBidirectional;
        rslave |= propagation == v1::MountPropagation::PropagationHostToContainer;
        extra.push(mount);
    }

    let pod_file_mode = if ctx.readonly_rootfs { "ro" } else { "rw" };
    for (destination, source) in [
        ("/etc/hosts", &ctx.sandbox.hosts),
        ("/etc/resolv.conf", &ctx.sandbox.resolv_conf),
        ("/etc/hostname", &ctx.sandbox.hostname_file),
    ] {
        if let Some(source) = source
            && !destinations.contains(Path::new(destination))
        {
            extra.push(mount(
                destination,
                "bind",
                source,
                &["rbind", "rprivate", pod_file_mode],
            ));
        }
    }
    extra.sort_by_key(|m| m.destination().components().count());

    let mut all: Vec<Mount> = defaults(ctx)
        .into_iter()
        .filter(|m| !destinations.contains(m.destination()))
        .collect();
    all.extend(extra);

    let mut image_volumes: Vec<PathBuf> = Vec::new();
    for volume in ctx.image_volumes {
        let path = clean_container_path(volume).map_err(|reason| MountError::BadImageVolume {
            path: volume.clone(),
            reason,
        })?;
        if !destinations.contains(&path) && !image_volumes.contains(&path) {
            image_volumes.push(path);
        }
    }

    let rootfs_propagation = if rshared {
        Some("rshared".to_owned())
    } else if rslave {
        Some("rslave".to_owned())
    } else {
        None
    };
    Ok(Mounts {
        mounts: all,
        to_create,
        rootfs_propagation,
        image_volumes,
    })
}
