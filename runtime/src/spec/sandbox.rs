//! What the generator needs to know about the pod a container joins.

use std::collections::HashMap;
use std::path::PathBuf;

use krio_proto::v1;

/// The PID namespace of the pod, or the one a `TARGET` container joins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PidNamespace {
    /// The pod shares one PID namespace, held by its infra process at this path
    /// (e.g. `/proc/<infra pid>/ns/pid`).
    Pod(PathBuf),
    /// Each container gets its own PID namespace.
    Container,
    /// The host's PID namespace (`hostPID`).
    Node,
    /// The PID namespace of the container named by `NamespaceOption.target_id`,
    /// resolved by the daemon (e.g. `/proc/<target pid>/ns/pid`).
    Target(PathBuf),
}

/// The pod sandbox a container is created in, as the daemon set it up.
#[derive(Clone, Debug)]
pub struct SandboxInfo {
    /// The sandbox ID.
    pub id: String,
    /// The `PodSandboxConfig` the kubelet sent to `RunPodSandbox`.
    pub config: v1::PodSandboxConfig,
    /// The pod's hostname (the node's name for host-network pods).
    pub hostname: String,
    /// The pod's pinned network namespace; `None` = the host's.
    pub network_ns: Option<PathBuf>,
    /// The pod's pinned IPC namespace; `None` = the host's.
    pub ipc_ns: Option<PathBuf>,
    /// The pod's pinned UTS namespace; `None` = the host's (no hostname is set then).
    pub uts_ns: Option<PathBuf>,
    /// The pod's pinned user namespace, when the pod has ID mappings.
    pub user_ns: Option<PathBuf>,
    /// The PID namespace (see [`PidNamespace`] for how a container's mode picks it).
    pub pid_ns: PidNamespace,
    /// The pod's `resolv.conf`, bind-mounted at `/etc/resolv.conf`.
    pub resolv_conf: Option<PathBuf>,
    /// The pod's `hosts` file, bind-mounted at `/etc/hosts`.
    pub hosts: Option<PathBuf>,
    /// The pod's `hostname` file, bind-mounted at `/etc/hostname`.
    pub hostname_file: Option<PathBuf>,
    /// The pod's shared `/dev/shm`; `None` = a private 64 MiB tmpfs per container.
    pub shm: Option<PathBuf>,
}

impl SandboxInfo {
    /// The pod's `LinuxPodSandboxConfig`, if any.
    pub fn linux(&self) -> Option<&v1::LinuxPodSandboxConfig> {
        self.config.linux.as_ref()
    }

    /// The pod's security context, if any.
    pub fn security_context(&self) -> Option<&v1::LinuxSandboxSecurityContext> {
        self.linux().and_then(|l| l.security_context.as_ref())
    }

    /// The pod's cgroup parent (empty when the kubelet gave none).
    pub fn cgroup_parent(&self) -> &str {
        self.linux()
            .map(|l| l.cgroup_parent.as_str())
            .unwrap_or_default()
    }

    /// The pod-level sysctls.
    pub fn sysctls(&self) -> Option<&HashMap<String, String>> {
        self.linux().map(|l| &l.sysctls)
    }

    /// Whether the pod is privileged.
    pub fn privileged(&self) -> bool {
        self.security_context().is_some_and(|s| s.privileged)
    }

    /// The pod's user namespace options, when it asks for one (mode `POD`
    /// with mappings); `NODE` and absent options mean the host's.
    pub fn userns_options(&self) -> Option<&v1::UserNamespace> {
        self.security_context()
            .and_then(|s| s.namespace_options.as_ref())
            .and_then(|n| n.userns_options.as_ref())
    }
}
