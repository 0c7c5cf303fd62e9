//! OCI runtime spec generation from a CRI container config, its sandbox and its image.
//!
//! [`generate`] is pure apart from reads: it reads the image's `/etc/passwd`
//! and `/etc/group` inside the rootfs (safely, see [`rootfs`]), stats host
//! paths of mounts and devices, and reads localhost seccomp profiles. It
//! creates nothing: host paths to create are returned in
//! [`GeneratedSpec::mounts_to_create`], image volumes to create inside the
//! rootfs in [`GeneratedSpec::image_volumes`]. Everything about the host
//! comes in through [`HostInfo`], so the result is deterministic in tests.
//!
//! One module per job; each has its own error enum, collected in
//! [`SpecError`], whose [`SpecError::code`] tells the daemon which gRPC
//! status to answer with.

mod capabilities;
mod devices;
mod host;
mod mounts;
mod namespaces;
mod process;
mod resources;
pub mod rootfs;
mod sandbox;
mod seccomp;
mod security;
mod sysctl;
mod user;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use krio_proto::v1;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{Linux, Process, Root, Spec, User};

pub use capabilities::{CapabilityError, CapabilitySet, DEFAULT_CAPABILITIES};
pub use devices::DeviceError;
pub use host::{
    CgroupMode, HostDevice, HostInfo, HostMount, host_devices, idmapped_overlay, parse_mountinfo,
    read_mountinfo, rro_kernel,
};
pub use mounts::MountError;
pub use namespaces::NamespaceError;
pub use process::{DEFAULT_NOFILE, DEFAULT_PATH, ProcessError, parse_signal};
pub use resources::{ResourceError, resources as linux_resources};
pub use rootfs::RootfsError;
pub use sandbox::{PidNamespace, SandboxInfo};
pub use seccomp::{SeccompError, default_profile as default_seccomp_profile};
pub use security::{DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS, SecurityError};
pub use sysctl::SysctlError;
pub use user::{ResolvedUser, UserError};

/// The OCI runtime spec version krio writes (what runc 1.1 speaks).
pub const OCI_VERSION: &str = "1.0.2";

/// Annotation key prefixes that make an OCI runtime change behaviour
/// (systemd properties, crun's `run.oci.*`, CRIU options, the reserved OCI
/// namespace): never copied from CRI annotations (CVE-2024-3154).
pub const BLOCKED_ANNOTATION_PREFIXES: [&str; 4] = [
    "org.systemd.property.",
    "run.oci.",
    "org.criu.",
    "org.opencontainers.",
];

/// Everything [`generate`] needs for one container.
#[derive(Clone, Copy, Debug)]
pub struct SpecInput<'a> {
    /// The container's ID (names its cgroup).
    pub container_id: &'a str,
    /// The kubelet's `ContainerConfig`.
    pub config: &'a v1::ContainerConfig,
    /// The pod it runs in.
    pub sandbox: &'a SandboxInfo,
    /// The image's configuration (Entrypoint, Cmd, Env, WorkingDir, User, StopSignal, Volumes).
    pub image: &'a ImageConfiguration,
    /// The container's mounted root filesystem.
    pub rootfs: &'a Path,
    /// The host's facts.
    pub host: &'a HostInfo,
}

/// A generated spec and what the caller must do or know besides writing it.
#[derive(Clone, Debug)]
pub struct GeneratedSpec {
    /// The OCI runtime spec (`config.json`).
    pub spec: Spec,
    /// Host paths of CRI mounts that do not exist: create each as a
    /// directory (`mkdir -p`) before starting the container.
    pub mounts_to_create: Vec<PathBuf>,
    /// Image `VOLUME` paths (container paths): create each as a directory
    /// inside the rootfs with [`rootfs::mkdir_all_in_root`] before starting;
    /// nothing is mounted there.
    pub image_volumes: Vec<PathBuf>,
    /// The identity the first process runs as (for `ContainerStatus.user`).
    pub user: ResolvedUser,
    /// The signal that stops the container (CRI config, else image, else SIGTERM).
    pub stop_signal: i32,
}

/// Building an OCI value failed; every builder field has a default, so this is a bug.
#[derive(Debug, thiserror::Error)]
#[error("building the OCI {what}: {source}")]
pub struct BuildError {
    what: &'static str,
    #[source]
    source: oci_spec::OciSpecError,
}

impl BuildError {
    pub(crate) fn new(what: &'static str, source: oci_spec::OciSpecError) -> Self {
        Self { what, source }
    }
}

/// The gRPC status class of a [`SpecError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The config asks for something wrong or impossible: `InvalidArgument`.
    InvalidArgument,
    /// Something the config names does not exist: `NotFound`.
    NotFound,
    /// The host cannot do what the config asks: `FailedPrecondition`.
    FailedPrecondition,
    /// krio does not implement it yet: `Unimplemented`.
    Unimplemented,
    /// krio failed: `Internal`.
    Internal,
}

/// Why a spec could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// argv, env, working dir, oom_score_adj, stop signal.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The user or groups.
    #[error(transparent)]
    User(#[from] UserError),
    /// Namespaces.
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// Mounts.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// Devices.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// Capabilities.
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    /// Masked/read-only paths, AppArmor.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// Seccomp.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// Sysctls.
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    /// Resources and the cgroup path.
    #[error(transparent)]
    Resource(#[from] ResourceError),
    /// A privileged container in a pod that is not privileged.
    #[error("security_context.privileged is set, but the pod sandbox is not privileged")]
    PrivilegedInUnprivilegedPod,
    /// The rootfs path itself is unusable.
    #[error("rootfs {0} is not an absolute path")]
    RelativeRootfs(PathBuf),
    /// An OCI value could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl SpecError {
    /// The gRPC status class the daemon should answer with.
    pub fn code(&self) -> ErrorCode {
        use ErrorCode::*;
        match self {
            Self::Process(ProcessError::Build(_))
            | Self::Namespace(NamespaceError::Build(_))
            | Self::Seccomp(SeccompError::Build(_))
            | Self::Build(_)
            | Self::RelativeRootfs(_) => Internal,
            Self::User(UserError::Rootfs(
                RootfsError::OpenRoot { .. } | RootfsError::Read { .. },
            )) => Internal,
            Self::Namespace(NamespaceError::UnresolvedTarget { .. }) => NotFound,
            Self::Device(DeviceError::HostPath { source, .. })
            | Self::Mount(MountError::HostPath { source, .. })
            | Self::Seccomp(SeccompError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                NotFound
            }
            Self::Mount(MountError::HostPath { .. })
            | Self::Device(DeviceError::HostPath { .. }) => FailedPrecondition,
            Self::Mount(
                MountError::Propagation { .. } | MountError::RecursiveReadOnlyUnsupported { .. },
            )
            | Self::Seccomp(SeccompError::Unsupported { .. } | SeccompError::Read { .. })
            | Self::Security(SecurityError::AppArmorUnavailable { .. }) => FailedPrecondition,
            Self::Mount(MountError::Unsupported { .. }) => Unimplemented,
            _ => InvalidArgument,
        }
    }
}

fn copy_annotations(given: &HashMap<String, String>) -> HashMap<String, String> {
    given
        .iter()
        .filter(|(key, _)| {
            let blocked = BLOCKED_ANNOTATION_PREFIXES.iter().any(|p| key.starts_with(p));
            if blocked {
                tracing::warn!(annotation = %key, "not passing a behaviour-changing annotation to the OCI runtime");
            }
            !blocked
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Builds the OCI runtime spec for one container. See the module docs of
/// each part for its rules.
pub fn generate(input: &SpecInput<'_>) -> Result<GeneratedSpec, SpecError> {
    let config = input.config;
    let sandbox = input.sandbox;
    let host = input.host;
    let image = input.image.config().as_ref();
    let linux_config = config.linux.as_ref();
    let sc = linux_config.and_then(|l| l.security_context.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);
    if !input.rootfs.is_absolute() {
        return Err(SpecError::RelativeRootfs(input.rootfs.to_owned()));
    }
    if privileged && !sandbox.privileged() {
        return Err(SpecError::PrivilegedInUnprivilegedPod);
    }

    // Who runs, and what it runs.
    let db = user::UserDb::load(input.rootfs).map_err(UserError::from)?;
    let image_user = image.and_then(|c| c.user().as_deref());
    let resolution = user::resolve(sc, image_user, &db)?;
    let args = process::args(config, image)?;
    let cwd = process::cwd(config, image)?;
    let stop_signal = process::stop_signal(config, image)?;

    // Namespaces first: the hostname, sysctls and mounts depend on them.
    let ns = namespaces::namespaces(
        sc.and_then(|s| s.namespace_options.as_ref()),
        sandbox,
        host.cgroup_mode,
    )?;
    let hostname = (!ns.host_uts && !sandbox.hostname.is_empty()).then(|| sandbox.hostname.clone());
    let env_hostname = if sandbox.hostname.is_empty() {
        ""
    } else {
        sandbox.hostname.as_str()
    };
    let env = process::env(
        config,
        image,
        &process::EnvDefaults {
            hostname: env_hostname,
            home: resolution.home.as_deref(),
            tty: config.tty,
        },
    )?;

    // Security.
    let (caps, ambient) = capabilities::resolve(
        sc.and_then(|s| s.capabilities.as_ref()),
        privileged,
        host.capabilities,
    )?;
    let seccomp = seccomp::seccomp(sc, privileged, caps, host.seccomp)?;
    let apparmor = security::apparmor(sc, privileged, host.apparmor)?;
    let (masked, readonly_paths) = security::masked_and_readonly(sc, privileged)?;
    let sysctls = sysctl::sysctls(sandbox.sysctls(), ns.host_network, ns.host_ipc)?;
    let readonly_rootfs = sc.is_some_and(|s| s.readonly_rootfs);

    // Filesystem.
    let image_volumes: &[String] = image
        .and_then(|c| c.volumes().as_deref())
        .unwrap_or_default();
    let mounts = mounts::mounts(
        &config.mounts,
        &mounts::MountContext {
            sandbox,
            host,
            privileged,
            readonly_rootfs,
            image_volumes,
        },
    )?;
    let devices = devices::devices(&config.devices, privileged, &host.devices)?;

    // Resources.
    let container_resources = linux_config.and_then(|l| l.resources.as_ref());
    let mut resources = resources::resources(container_resources, host)?;
    resources.set_devices(Some(devices.rules));
    let oom_score_adj = process::oom_score_adj(
        container_resources
            .map(|r| r.oom_score_adj)
            .unwrap_or_default(),
        host.min_oom_score_adj,
    )?;
    let cgroups_path = resources::cgroups_path(
        sandbox.cgroup_parent(),
        input.container_id,
        host.systemd_cgroup,
    )?;

    // Assemble, setting every field: oci-spec's Default impls carry
    // youki's defaults, which are not krio's.
    let resolved = &resolution.user;
    let mut user = User::default();
    user.set_uid(resolved.uid);
    user.set_gid(resolved.gid);
    user.set_umask(None);
    user.set_additional_gids(Some(resolved.additional_gids.clone()));
    user.set_username(None);

    let mut process = Process::default();
    process.set_terminal(Some(config.tty));
    process.set_console_size(None);
    process.set_user(user);
    process.set_args(Some(args));
    process.set_command_line(None);
    process.set_env(Some(env));
    process.set_cwd(PathBuf::from(cwd));
    process.set_capabilities(Some(capabilities::to_oci(caps, ambient)));
    process.set_rlimits(Some(process::rlimits(host.nofile_limit)?));
    process.set_no_new_privileges(Some(sc.is_some_and(|s| s.no_new_privs)));
    process.set_apparmor_profile(apparmor);
    process.set_oom_score_adj(Some(oom_score_adj));
    process.set_selinux_label(None);
    process.set_io_priority(None);
    process.set_scheduler(None);
    process.set_exec_cpu_affinity(None);

    let mut linux = Linux::default();
    linux.set_net_devices(None);
    linux.set_uid_mappings((!ns.uid_mappings.is_empty()).then_some(ns.uid_mappings));
    linux.set_gid_mappings((!ns.gid_mappings.is_empty()).then_some(ns.gid_mappings));
    linux.set_sysctl((!sysctls.is_empty()).then_some(sysctls));
    linux.set_resources(Some(resources));
    linux.set_cgroups_path(Some(PathBuf::from(cgroups_path)));
    linux.set_namespaces(Some(ns.list));
    linux.set_devices(Some(devices.devices));
    linux.set_seccomp(seccomp);
    linux.set_rootfs_propagation(mounts.rootfs_propagation);
    linux.set_masked_paths(Some(masked));
    linux.set_readonly_paths(Some(readonly_paths));
    linux.set_mount_label(None);
    linux.set_intel_rdt(None);
    linux.set_personality(None);

    let mut root = Root::default();
    root.set_path(input.rootfs.to_path_buf());
    root.set_readonly(Some(readonly_rootfs));

    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_owned());
    spec.set_root(Some(root));
    spec.set_mounts(Some(mounts.mounts));
    spec.set_process(Some(process));
    spec.set_hostname(hostname);
    spec.set_domainname(None);
    spec.set_hooks(None);
    spec.set_annotations(Some(copy_annotations(&config.annotations)));
    spec.set_linux(Some(linux));

    Ok(GeneratedSpec {
        spec,
        mounts_to_create: mounts.to_create,
        image_volumes: mounts.image_volumes,
        user: resolution.user,
        stop_signal,
    })
}
