//! Fixtures for the spec generator tests: a fake rootfs, a sandbox, a host.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use krio_proto::v1;
use krio_runtime::spec::{
    CapabilitySet, CgroupMode, GeneratedSpec, HostInfo, PidNamespace, SandboxInfo, SpecError,
    SpecInput, generate,
};
use oci_spec::image::{Config, ImageConfiguration};
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n\
    app:x:1000:1000:app:/home/app:/bin/sh\n";
pub const GROUP: &str = "root:x:0:\nwheel:x:10:root\napp:x:1000:\nextra:x:50000:app\n";

/// A temp dir with `rootfs/etc/{passwd,group}` and room for host paths.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub rootfs: PathBuf,
    pub sandbox: SandboxInfo,
    pub host: HostInfo,
    pub image: ImageConfiguration,
    pub config: v1::ContainerConfig,
}

pub fn host() -> HostInfo {
    HostInfo {
        capabilities: CapabilitySet::all_known(),
        rro_mounts: true,
        cgroup_mode: CgroupMode::Hybrid,
        systemd_cgroup: false,
        min_oom_score_adj: -1000,
        seccomp: true,
        apparmor: false,
        nofile_limit: 1 << 20,
        swap_accounting: true,
        hugetlb: true,
        devices: Vec::new(),
        mounts: Vec::new(),
    }
}

pub fn sandbox(dir: &Path) -> SandboxInfo {
    SandboxInfo {
        id: "sandbox1".into(),
        config: v1::PodSandboxConfig {
            hostname: "pod-host".into(),
            linux: Some(v1::LinuxPodSandboxConfig {
                cgroup_parent: "/kubepods/pod1".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        hostname: "pod-host".into(),
        network_ns: Some("/run/krio/ns/net/sandbox1".into()),
        ipc_ns: Some("/run/krio/ns/ipc/sandbox1".into()),
        uts_ns: Some("/run/krio/ns/uts/sandbox1".into()),
        user_ns: None,
        pid_ns: PidNamespace::Container,
        resolv_conf: Some(dir.join("resolv.conf")),
        hosts: Some(dir.join("hosts")),
        hostname_file: Some(dir.join("hostname")),
        shm: Some(dir.join("shm")),
    }
}

pub fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfiguration {
    let mut config = Config::default();
    config.set_entrypoint(Some(entrypoint.iter().map(|s| s.to_string()).collect()));
    config.set_cmd(Some(cmd.iter().map(|s| s.to_string()).collect()));
    let mut image = ImageConfiguration::default();
    image.set_config(Some(config));
    image
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir rootfs/etc");
        std::fs::write(rootfs.join("etc/passwd"), PASSWD).expect("write passwd");
        std::fs::write(rootfs.join("etc/group"), GROUP).expect("write group");
        let sandbox = sandbox(dir.path());
        Self {
            rootfs,
            sandbox,
            host: host(),
            image: image(&[], &["/bin/sh"]),
            config: v1::ContainerConfig {
                metadata: Some(v1::ContainerMetadata {
                    name: "c".into(),
                    attempt: 0,
                }),
                ..Default::default()
            },
            dir,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn security(&mut self) -> &mut v1::LinuxContainerSecurityContext {
        self.config
            .linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
    }

    /// Makes the container and its pod privileged.
    pub fn privileged(&mut self) {
        self.security().privileged = true;
        self.sandbox
            .config
            .linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
            .privileged = true;
    }

    pub fn resources(&mut self) -> &mut v1::LinuxContainerResources {
        self.config
            .linux
            .get_or_insert_with(Default::default)
            .resources
            .get_or_insert_with(Default::default)
    }

    pub fn try_generate(&self) -> Result<GeneratedSpec, SpecError> {
        generate(&SpecInput {
            container_id: "ctr1",
            config: &self.config,
            sandbox: &self.sandbox,
            image: &self.image,
            rootfs: &self.rootfs,
            host: &self.host,
        })
    }

    pub fn generate(&self) -> GeneratedSpec {
        self.try_generate().expect("generate")
    }
}

pub fn mount_at<'a>(spec: &'a Spec, destination: &str) -> Option<&'a Mount> {
    spec.mounts()
        .as_ref()
        .expect("mounts")
        .iter()
        .find(|m| m.destination() == Path::new(destination))
}

pub fn options(mount: &Mount) -> Vec<String> {
    mount.options().clone().unwrap_or_default()
}

pub fn namespace(spec: &Spec, typ: LinuxNamespaceType) -> Option<Option<PathBuf>> {
    spec.linux()
        .as_ref()
        .expect("linux")
        .namespaces()
        .as_ref()
        .expect("namespaces")
        .iter()
        .find(|n| n.typ() == typ)
        .map(|n| n.path().clone())
}

pub fn env(spec: &Spec) -> Vec<String> {
    spec.process()
        .as_ref()
        .expect("process")
        .env()
        .clone()
        .unwrap_or_default()
}
