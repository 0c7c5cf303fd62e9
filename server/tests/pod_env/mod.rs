//! A daemon with the local registry, a bridge network, busybox pulled and
//! one pod, for the container, resource and metrics tests. Root-only.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::time::{Duration, Instant};

use krio_proto::v1;

use crate::common::{self, BridgeGuard, MountGuard, RuntimeClient, Sandbox};

pub const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";

/// Fields drop in order: the daemon first, then what it left (containers,
/// mounts), the bridge, and the temp dir last.
pub struct Env {
    pub daemon: Option<common::Daemon>,
    _mounts: MountGuard,
    _bridge: BridgeGuard,
    pub sandbox: Sandbox,
    pub client: RuntimeClient,
    pub pod_id: String,
    pub pod_config: v1::PodSandboxConfig,
}

/// Starts the daemon on test subnet `net` and runs pod `name`.
pub async fn env(net: u8, name: &str) -> Env {
    start(net, name, PodOptions::default()).await
}

/// How the test pod differs from a plain one.
#[derive(Default)]
struct PodOptions<'a> {
    handler: &'a str,
    cgroup_parent: &'a str,
    toml: &'a str,
    userns_host_id: Option<u32>,
}

/// [`env`] with the pod in its own user namespace: container IDs 0..65536
/// are host IDs `host_id`.. (the kubelet's `hostUsers: false`).
pub async fn env_userns(net: u8, name: &str, host_id: u32) -> Env {
    let options = PodOptions {
        userns_host_id: Some(host_id),
        ..PodOptions::default()
    };
    start(net, name, options).await
}

/// [`env`] with `toml` appended to the daemon's config file.
pub async fn env_with_config(net: u8, name: &str, toml: &str) -> Env {
    let options = PodOptions {
        toml,
        ..PodOptions::default()
    };
    start(net, name, options).await
}

/// [`env`] with the pod on runtime handler `handler`.
pub async fn env_on(net: u8, name: &str, handler: &str) -> Env {
    let options = PodOptions {
        handler,
        ..PodOptions::default()
    };
    start(net, name, options).await
}

/// [`env`] with the pod under `cgroup_parent`.
pub async fn env_in_cgroup(net: u8, name: &str, cgroup_parent: &str) -> Env {
    let options = PodOptions {
        cgroup_parent,
        ..PodOptions::default()
    };
    start(net, name, options).await
}

async fn start(net: u8, name: &str, options: PodOptions<'_>) -> Env {
    let PodOptions {
        handler,
        cgroup_parent,
        toml,
        userns_host_id,
    } = options;
    assert!(
        std::path::Path::new(common::KRIO)
            .with_file_name("krio-monitor")
            .exists(),
        "krio-monitor must be built beside krio (cargo test --workspace builds it)"
    );
    let sandbox = Sandbox::new();
    if userns_host_id.is_some() {
        // runc reaches the rootfs as the pod's unprivileged root.
        std::fs::set_permissions(
            sandbox.dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .expect("chmod the sandbox dir");
    }
    let mounts = MountGuard(sandbox.dir.path().to_path_buf());
    let bridge = BridgeGuard(sandbox.write_bridge_network(net));
    sandbox.use_local_registry();
    if !toml.is_empty() {
        let mut config = std::fs::read_to_string(sandbox.path("krio.toml")).expect("read config");
        config.push_str(toml);
        std::fs::write(sandbox.path("krio.toml"), config).expect("write config");
    }
    let daemon = sandbox.start();
    let mut images = common::image_client(&daemon.socket).await;
    images
        .pull_image(v1::PullImageRequest {
            image: Some(v1::ImageSpec {
                image: BUSYBOX.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("pull busybox");
    let mut client = common::runtime_client(&daemon.socket).await;
    let pod_config = v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "test".into(),
            attempt: 0,
        }),
        log_directory: sandbox.path("logs").display().to_string(),
        linux: Some(v1::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: userns_host_id.map(|host_id| {
                let map = vec![v1::IdMapping {
                    container_id: 0,
                    host_id,
                    length: 65536,
                }];
                v1::LinuxSandboxSecurityContext {
                    namespace_options: Some(v1::NamespaceOption {
                        pid: v1::NamespaceMode::Container as i32,
                        userns_options: Some(v1::UserNamespace {
                            mode: v1::NamespaceMode::Pod as i32,
                            uids: map.clone(),
                            gids: map,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod_id = client
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .expect("run pod")
        .into_inner()
        .pod_sandbox_id;
    Env {
        daemon: Some(daemon),
        _mounts: mounts,
        _bridge: bridge,
        sandbox,
        client,
        pod_id,
        pod_config,
    }
}

impl Env {
    /// The daemon's socket.
    pub fn socket(&self) -> &std::path::Path {
        &self.daemon.as_ref().expect("daemon running").socket
    }

    /// The request for a busybox container in the pod running `command`,
    /// logging to `<name>.log`.
    pub fn container(&self, name: &str, command: &[&str]) -> v1::CreateContainerRequest {
        v1::CreateContainerRequest {
            pod_sandbox_id: self.pod_id.clone(),
            config: Some(v1::ContainerConfig {
                metadata: Some(v1::ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                image: Some(v1::ImageSpec {
                    image: BUSYBOX.into(),
                    ..Default::default()
                }),
                command: command.iter().map(|s| (*s).to_owned()).collect(),
                log_path: format!("{name}.log"),
                ..Default::default()
            }),
            sandbox_config: Some(self.pod_config.clone()),
        }
    }

    /// Creates and starts a busybox container running `command`.
    pub async fn run(&mut self, name: &str, command: &[&str]) -> String {
        let request = self.container(name, command);
        self.create_and_start(request).await
    }

    /// [`Env::run`] with `resources`.
    pub async fn run_limited(
        &mut self,
        name: &str,
        command: &[&str],
        resources: v1::LinuxContainerResources,
    ) -> String {
        let mut request = self.container(name, command);
        if let Some(config) = request.config.as_mut() {
            config.linux = Some(v1::LinuxContainerConfig {
                resources: Some(resources),
                ..Default::default()
            });
        }
        self.create_and_start(request).await
    }

    /// Creates and starts the container `request` describes.
    pub async fn create_and_start(&mut self, request: v1::CreateContainerRequest) -> String {
        let id = self
            .client
            .create_container(request)
            .await
            .expect("create")
            .into_inner()
            .container_id;
        self.client
            .start_container(v1::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("start");
        id
    }

    pub async fn status(&mut self, id: &str) -> v1::ContainerStatus {
        self.client
            .container_status(v1::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .expect("status")
            .into_inner()
            .status
            .expect("status")
    }

    /// Polls the container's status until it has exited (at most 20 s).
    pub async fn wait_exited(&mut self, id: &str) -> v1::ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = self.status(id).await;
            if st.state == v1::ContainerState::ContainerExited as i32 || Instant::now() > deadline {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The container's init PID on the host.
    pub async fn pid(&mut self, id: &str) -> u32 {
        let resp = self
            .client
            .container_status(v1::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .expect("status")
            .into_inner();
        let info: serde_json::Value = serde_json::from_str(&resp.info["info"]).expect("info json");
        u32::try_from(info["pid"].as_i64().expect("pid")).expect("pid fits")
    }

    /// Restarts the daemon (SIGTERM, then start again on the same dirs).
    pub async fn restart_daemon(&mut self) {
        let daemon = self.daemon.take().expect("daemon");
        let out = daemon.terminate();
        assert!(out.status.success(), "krio stops cleanly");
        let daemon = self.sandbox.start();
        self.client = common::runtime_client(&daemon.socket).await;
        self.daemon = Some(daemon);
    }

    pub async fn remove_pod(&mut self) {
        self.client
            .stop_pod_sandbox(v1::StopPodSandboxRequest {
                pod_sandbox_id: self.pod_id.clone(),
            })
            .await
            .expect("stop pod");
        self.client
            .remove_pod_sandbox(v1::RemovePodSandboxRequest {
                pod_sandbox_id: self.pod_id.clone(),
            })
            .await
            .expect("remove pod");
    }
}

/// A cgroup v1 controller directory (or the cgroup v2 one) of a process:
/// `/proc/PID/cgroup` resolved against the standard mount points.
pub fn cgroup_dir(pid: u32, controller: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("proc cgroup");
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controller.is_empty() && controllers.is_empty() {
            let v2_root = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                "/sys/fs/cgroup"
            } else {
                "/sys/fs/cgroup/unified"
            };
            return std::path::Path::new(v2_root).join(rel);
        }
        if controllers.split(',').any(|c| c == controller) {
            return std::path::Path::new("/sys/fs/cgroup")
                .join(controllers)
                .join(rel);
        }
    }
    panic!("no {controller:?} cgroup for {pid}");
}

/// Whether this host runs cgroup v2 only.
pub fn pure_v2() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Polls `check` every 100 ms until it returns `Some`, for at most
/// `limit` (a bound on a hang, not a timing assertion).
pub async fn poll<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
