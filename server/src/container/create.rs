//! `CreateContainer`: the CRI config, the pod and the image become an OCI
//! bundle on a mounted root filesystem, then a monitor creates it.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use krio_proto::v1;
use krio_runtime::monitor::{self, MonitorConfig};
use krio_runtime::spec::{self, PidNamespace, SandboxInfo, SpecInput};
use prost::Message;

use super::{Containers, image_volumes, libc_sigterm};
use crate::error::Error;
use crate::events::{Event, EventKind};
use crate::state::{ContainerRecord, ContainerState, PodRecord, PodState};

impl Containers {
    /// `CreateContainer` (blocking).
    pub fn create(
        &self,
        req: &v1::CreateContainerRequest,
        pod: &PodRecord,
    ) -> Result<String, Error> {
        if pod.state != PodState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        let config = req
            .config
            .clone()
            .ok_or_else(|| Error::InvalidArgument("config is required".into()))?;
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        if name.is_empty() || name.contains(['/', '\0', '\n']) {
            return Err(Error::InvalidArgument(
                "config.metadata.name is required and must be a plain name".into(),
            ));
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return Err(Error::InvalidArgument(
                "config.image.image is required".into(),
            ));
        }
        let pod_config = v1::PodSandboxConfig::decode(pod.config.as_slice()).unwrap_or_default();
        let pod_md = pod_config.metadata.clone().unwrap_or_default();
        let attempt = config
            .metadata
            .as_ref()
            .map(|m| m.attempt)
            .unwrap_or_default();
        let name_key = format!(
            "{name}_{}_{}_{}_{attempt}",
            pod_md.name, pod_md.namespace, pod_md.uid
        );
        let image = self.images.resolve(&image_name)?.ok_or_else(|| {
            Error::NotFound(format!(
                "image {image_name:?} is not present; pull it first"
            ))
        })?;

        let id = crate::clock::new_id()?;
        {
            let mut names = self.lock_names();
            if let Some(existing) = names.get(&name_key) {
                return Err(Error::AlreadyExists(format!(
                    "container name {name_key:?} is reserved for container {existing}"
                )));
            }
            names.insert(name_key.clone(), id.clone());
        }
        let run_dir = self.config.get().runroot.join("containers").join(&id);
        let log_path = if pod_config.log_directory.is_empty() || config.log_path.is_empty() {
            PathBuf::new()
        } else {
            Path::new(&pod_config.log_directory).join(&config.log_path)
        };
        let mut record = ContainerRecord {
            id: id.clone(),
            pod_id: pod.id.clone(),
            name_key: name_key.clone(),
            state: ContainerState::Created,
            created_at: crate::clock::now_ns(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            image: image_name,
            image_id: image.id.clone(),
            config: config.encode_to_vec(),
            log_path,
            // Short: the attach socket's path must fit in sockaddr_un.
            state_dir: self.config.get().runroot.join("c").join(&id),
            bundle: run_dir.join("bundle"),
            rootfs: run_dir.join("rootfs"),
            upper_dir: PathBuf::new(),
            pid: 0,
            runtime_handler: pod.runtime_handler.clone(),
            stop_signal: libc_sigterm(),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            resources: None,
        };
        let _span = tracing::info_span!("create_container", container_id = %id, pod_id = %pod.id, name = %name).entered();
        match self.build(&config, &pod_config, pod, &image.id, &mut record, &run_dir) {
            Ok(()) => {
                self.save(&record)?;
                self.watch_exit(&record);
                self.events
                    .send(Event::now(EventKind::Created, &id, &record.pod_id));
                tracing::info!(pid = record.pid, "container created");
                Ok(id)
            }
            Err(e) => {
                tracing::warn!(error = %e, "container creation failed; rolling back");
                self.cleanup(&record);
                self.lock_names().remove(&name_key);
                Err(e)
            }
        }
    }

    fn build(
        &self,
        config: &v1::ContainerConfig,
        pod_config: &v1::PodSandboxConfig,
        pod: &PodRecord,
        image_id: &str,
        record: &mut ContainerRecord,
        run_dir: &Path,
    ) -> Result<(), Error> {
        for dir in [run_dir, &record.bundle, &record.state_dir] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::internal(format!("creating {}", dir.display()), e))?;
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&record.rootfs)
            .map_err(|e| Error::internal(format!("creating {}", record.rootfs.display()), e))?;
        if pod.namespaces.user.is_some() {
            // runc binds the rootfs onto itself from inside the pod's user
            // namespace: its root (an unprivileged host uid) must be able to
            // traverse the path (not list it).
            for dir in run_dir.ancestors().take(2) {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).map_err(
                    |e| Error::internal(format!("opening {} for traversal", dir.display()), e),
                )?;
            }
        }
        // Write the CRI record first so a crash mid-create is cleaned at start.
        self.save(record)?;
        let mut with_volumes = config.clone();
        image_volumes::mount_all(&self.images, &record.id, run_dir, &mut with_volumes)?;
        if with_volumes != *config {
            // Keeps the volumes' image digests for ContainerStatus.
            record.config = with_volumes.encode_to_vec();
        }
        let mut runtime_config = image_volumes::as_binds(&with_volumes);
        let userns_options = pod_userns_options(pod_config);
        super::idmapped_mounts::mount_all(
            &mut runtime_config,
            run_dir,
            pod.namespaces.user.as_deref(),
            (
                userns_options.map_or(&[][..], |u| &u.uids),
                userns_options.map_or(&[][..], |u| &u.gids),
            ),
        )?;
        let config = &runtime_config;
        let rootfs = self.images.prepare_rootfs(image_id, &record.id)?;
        record.upper_dir.clone_from(&rootfs.upper_dir);
        match &pod.namespaces.user {
            // The layers belong to host root; the pod's root must own them.
            Some(userns) => super::userns_rootfs::mount(
                &self.images,
                &rootfs,
                run_dir,
                &record.rootfs,
                userns,
                pod_root_owner(pod_config),
            )?,
            None => self.images.mount_rootfs(&rootfs, &record.rootfs)?,
        }
        let image_config = self.images.image_config(image_id)?;

        let sandbox = self.sandbox_info(pod, pod_config, config)?;
        let mut host = self.host.clone();
        host.mounts = spec::read_mountinfo();
        let generated = spec::generate(&SpecInput {
            container_id: &record.id,
            config,
            sandbox: &sandbox,
            image: &image_config,
            rootfs: &record.rootfs,
            host: &host,
        })?;
        for dir in &generated.mounts_to_create {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| {
                    Error::internal(format!("creating the host path {}", dir.display()), e)
                })?;
        }
        for dir in &generated.image_volumes {
            spec::rootfs::mkdir_all_in_root(&record.rootfs, dir, 0o755).map_err(|e| {
                Error::internal(format!("creating image volume {}", dir.display()), e)
            })?;
        }
        record.stop_signal = generated.stop_signal;
        record.uid = generated.user.uid;
        record.gid = generated.user.gid;
        record.additional_gids = generated.user.additional_gids.clone();
        generated
            .spec
            .save(record.bundle.join("config.json"))
            .map_err(|e| Error::internal("writing config.json", e))?;

        if let Some(dir) = record
            .log_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| Error::internal(format!("creating log dir {}", dir.display()), e))?;
        }
        let handler = self.handler(&record.runtime_handler)?;
        let mut mc =
            MonitorConfig::new(&record.id, &record.bundle, &handler.path, &record.state_dir);
        mc.runtime_root.clone_from(&handler.root);
        mc.log_path.clone_from(&record.log_path);
        mc.tty = config.tty;
        mc.stdin = config.stdin;
        mc.stdin_once = config.stdin_once;
        mc.rootfs_to_unmount = Some(record.rootfs.clone());
        let spawned = monitor::spawn_monitor(&self.monitor_binary(), &mc).map_err(|e| match e {
            monitor::MonitorError::Create { message, .. } => {
                Error::internal("creating the container", std::io::Error::other(message))
            }
            other => Error::internal("starting the container monitor", other),
        })?;
        record.pid = spawned.pid;
        Ok(())
    }

    fn sandbox_info(
        &self,
        pod: &PodRecord,
        pod_config: &v1::PodSandboxConfig,
        config: &v1::ContainerConfig,
    ) -> Result<SandboxInfo, Error> {
        let options = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref());
        let pod_pid_mode = pod_config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .map(|o| o.pid)
            .unwrap_or_default();
        let pid_ns = match options.map(|o| v1::NamespaceMode::try_from(o.pid)) {
            Some(Ok(v1::NamespaceMode::Target)) => {
                let target_id = options.map(|o| o.target_id.clone()).unwrap_or_default();
                let target = self
                    .get(&target_id)?
                    .filter(|t| t.state == ContainerState::Running && t.pod_id == pod.id)
                    .ok_or_else(|| {
                        Error::NotFound(format!(
                            "target container {target_id:?} is not running in this pod"
                        ))
                    })?;
                PidNamespace::Target(PathBuf::from(format!("/proc/{}/ns/pid", target.pid)))
            }
            _ if pod_pid_mode == v1::NamespaceMode::Node as i32 => PidNamespace::Node,
            _ => match &pod.namespaces.pid {
                Some(pin) => PidNamespace::Pod(pin.clone()),
                None => PidNamespace::Container,
            },
        };
        Ok(SandboxInfo {
            id: pod.id.clone(),
            config: pod_config.clone(),
            hostname: pod_config.hostname.clone(),
            network_ns: pod.namespaces.net.clone(),
            ipc_ns: pod.namespaces.ipc.clone(),
            uts_ns: pod.namespaces.uts.clone(),
            user_ns: pod.namespaces.user.clone(),
            pid_ns,
            resolv_conf: Some(pod.dir.join("resolv.conf")),
            hosts: Some(pod.dir.join("hosts")),
            hostname_file: Some(pod.dir.join("hostname")),
            shm: pod.shm.clone(),
        })
    }
}

/// The pod's user namespace options, if it set any.
fn pod_userns_options(pod_config: &v1::PodSandboxConfig) -> Option<&v1::UserNamespace> {
    pod_config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|n| n.userns_options.as_ref())
}

/// The host uid and gid of a user-namespaced pod's root (the start of its
/// mappings; validated at RunPodSandbox).
fn pod_root_owner(pod_config: &v1::PodSandboxConfig) -> (u32, u32) {
    let userns = pod_userns_options(pod_config);
    let first =
        |maps: Option<&Vec<v1::IdMapping>>| maps.and_then(|m| m.first()).map_or(0, |m| m.host_id);
    (
        first(userns.map(|u| &u.uids)),
        first(userns.map(|u| &u.gids)),
    )
}
