//! Which namespaces a container gets, and the user-namespace ID mappings.
//!
//! - network, IPC, UTS: the pod's pinned namespace by path; the host's
//!   (namespace left out of the spec) when the pod has none (`NODE`).
//! - PID: the container's `namespace_options.pid` picks: `CONTAINER` → new;
//!   `NODE` → host; `POD` → the pod's ([`PidNamespace::Pod`] joins its path,
//!   a pod without a shared PID namespace gives a new one, a host-PID pod the
//!   host's); `TARGET` → the path the daemon resolved ([`PidNamespace::Target`]).
//! - mount: always new.
//! - cgroup: new on cgroup v2 only. On v1/hybrid hosts runc bind-mounts the
//!   container's own v1 cgroup directories at `/sys/fs/cgroup`, which
//!   already hides the host's tree, and a private cgroupns there buys nothing
//!   while cgroup-aware tools in the container still see v1 paths; this is
//!   containerd's choice too.
//! - user: when the pod has ID mappings (`userns_options` with mode `POD`),
//!   the pod's pinned user namespace by path and the mappings (runc 1.1 wants
//!   the mappings even when it joins by path); modes `CONTAINER` and `TARGET`
//!   are refused, as the CRI says.

use std::path::{Path, PathBuf};

use krio_proto::v1;
use oci_spec::runtime::{
    LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceType,
};

use super::BuildError;

use super::host::CgroupMode;
use super::sandbox::{PidNamespace, SandboxInfo};

/// The namespace part of the config cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// `pid: TARGET` without a resolved target namespace.
    #[error(
        "namespace_options.pid is TARGET (target_id {target_id:?}) but the target container's PID namespace was not resolved"
    )]
    UnresolvedTarget {
        /// The target container.
        target_id: String,
    },
    /// A namespace path that is not absolute.
    #[error("the pod's {kind} namespace path {path:?} is not absolute")]
    RelativePath {
        /// Which namespace.
        kind: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A user namespace mode the CRI does not allow.
    #[error("userns_options.mode {mode} is not supported for user namespaces (only POD and NODE)")]
    UserNamespaceMode {
        /// The mode's name.
        mode: &'static str,
    },
    /// Bad ID mappings.
    #[error("userns_options.{field}: {reason}")]
    BadMapping {
        /// `uids` or `gids`.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// An OCI value could not be built (a bug).
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// The namespaces of one container.
pub(crate) struct Namespaces {
    pub list: Vec<LinuxNamespace>,
    pub uid_mappings: Vec<LinuxIdMapping>,
    pub gid_mappings: Vec<LinuxIdMapping>,
    /// The container shares the host's network namespace.
    pub host_network: bool,
    /// The container shares the host's IPC namespace.
    pub host_ipc: bool,
    /// The container shares the host's UTS namespace.
    pub host_uts: bool,
}

fn ns(typ: LinuxNamespaceType, path: Option<&Path>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(path.map(Path::to_path_buf));
    ns
}

fn absolute<'a>(kind: &'static str, path: &'a Path) -> Result<&'a Path, NamespaceError> {
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(NamespaceError::RelativePath {
            kind,
            path: path.to_owned(),
        })
    }
}

fn mode_name(mode: i32) -> &'static str {
    v1::NamespaceMode::try_from(mode)
        .map(|m| m.as_str_name())
        .unwrap_or("unknown")
}

/// The namespaces for a container with `options` (its `namespace_options`) in `sandbox`.
pub(crate) fn namespaces(
    options: Option<&v1::NamespaceOption>,
    sandbox: &SandboxInfo,
    cgroup_mode: CgroupMode,
) -> Result<Namespaces, NamespaceError> {
    let mut list = vec![ns(LinuxNamespaceType::Mount, None)];
    for (typ, kind, path) in [
        (LinuxNamespaceType::Network, "network", &sandbox.network_ns),
        (LinuxNamespaceType::Ipc, "ipc", &sandbox.ipc_ns),
        (LinuxNamespaceType::Uts, "uts", &sandbox.uts_ns),
    ] {
        if let Some(path) = path {
            list.push(ns(typ, Some(absolute(kind, path)?)));
        }
    }

    let pid_mode = options
        .map(|o| o.pid)
        .and_then(|m| v1::NamespaceMode::try_from(m).ok())
        .unwrap_or(v1::NamespaceMode::Pod);
    let pid_path = match (pid_mode, &sandbox.pid_ns) {
        (v1::NamespaceMode::Container, _) => Some(None),
        (v1::NamespaceMode::Node, _) => None,
        (v1::NamespaceMode::Target, PidNamespace::Target(path)) => Some(Some(path)),
        (v1::NamespaceMode::Target, _) => {
            return Err(NamespaceError::UnresolvedTarget {
                target_id: options.map(|o| o.target_id.clone()).unwrap_or_default(),
            });
        }
        (v1::NamespaceMode::Pod, PidNamespace::Pod(path) | PidNamespace::Target(path)) => {
            Some(Some(path))
        }
        (v1::NamespaceMode::Pod, PidNamespace::Container) => Some(None),
        (v1::NamespaceMode::Pod, PidNamespace::Node) => None,
    };
    if let Some(path) = pid_path {
        let path = path.map(|p| absolute("pid", p)).transpose()?;
        list.push(ns(LinuxNamespaceType::Pid, path));
    }

    if cgroup_mode == CgroupMode::Unified {
        list.push(ns(LinuxNamespaceType::Cgroup, None));
    }

    let (uid_mappings, gid_mappings) = match sandbox.userns_options() {
        None => (Vec::new(), Vec::new()),
        Some(userns) => match v1::NamespaceMode::try_from(userns.mode) {
            Ok(v1::NamespaceMode::Node) => (Vec::new(), Vec::new()),
            Ok(v1::NamespaceMode::Pod) => {
                let uids = mappings("uids", &userns.uids)?;
                let gids = mappings("gids", &userns.gids)?;
                if uids.is_empty() != gids.is_empty() {
                    return Err(NamespaceError::BadMapping {
                        field: if uids.is_empty() { "uids" } else { "gids" },
                        reason: "uid and gid mappings must be given together",
                    });
                }
                if !uids.is_empty() {
                    let path = sandbox
                        .user_ns
                        .as_deref()
                        .map(|p| absolute("user", p))
                        .transpose()?;
                    list.push(ns(LinuxNamespaceType::User, path));
                }
                (uids, gids)
            }
            _ => {
                return Err(NamespaceError::UserNamespaceMode {
                    mode: mode_name(userns.mode),
                });
            }
        },
    };

    Ok(Namespaces {
        list,
        uid_mappings,
        gid_mappings,
        host_network: sandbox.network_ns.is_none(),
        host_ipc: sandbox.ipc_ns.is_none(),
        host_uts: sandbox.uts_ns.is_none(),
    })
}

fn mappings(
    field: &'static str,
    given: &[v1::IdMapping],
) -> Result<Vec<LinuxIdMapping>, NamespaceError> {
    given
        .iter()
        .map(|m| {
            if m.length == 0 {
                return Err(NamespaceError::BadMapping {
                    field,
                    reason: "a mapping has length 0",
                });
            }
            if m.host_id.checked_add(m.length).is_none()
                || m.container_id.checked_add(m.length).is_none()
            {
                return Err(NamespaceError::BadMapping {
                    field,
                    reason: "a mapping overflows the 32-bit id range",
                });
            }
            LinuxIdMappingBuilder::default()
                .host_id(m.host_id)
                .container_id(m.container_id)
                .size(m.length)
                .build()
                .map_err(|e| NamespaceError::Build(BuildError::new("id mapping", e)))
        })
        .collect()
}
