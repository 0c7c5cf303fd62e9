//! Pod sandboxes: the shared namespaces, files and network of a pod, built
//! the lean way (no pause container).
//!
//! Creation runs in its own task, detached from the request: when the
//! kubelet times out and retries `RunPodSandbox` with the same metadata, the
//! retry is handed the in-flight (or finished but undelivered) pod instead
//! of creating a second one or looping on "name is reserved".

mod bandwidth;
mod files;
pub mod infra;
mod reserve;
mod resources;
pub mod userns;
mod validate;
mod view;

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use krio_network::cni::{Cni, CniOptions, PodNetwork, PortMapping};
use krio_network::podns::{self, Kind, PodNsRequest};
use krio_proto::v1;
use prost::Message;

use crate::config::{Config, Live};
use crate::error::Error;
use crate::state::{PodNamespaces, PodRecord, PodState, Store};

pub use files::PodPaths;
use reserve::Reservations;
pub use view::PodFilter;

/// Every pod sandbox of this daemon.
pub struct Sandboxes {
    config: Live,
    store: Store,
    /// Swapped when a reload changes the CNI dirs.
    cni: RwLock<Arc<Cni>>,
    pods: Mutex<HashMap<String, PodRecord>>,
    reservations: Reservations,
}

impl std::fmt::Debug for Sandboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandboxes").finish_non_exhaustive()
    }
}

/// How long one CNI plugin may run.
const CNI_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

impl Sandboxes {
    /// The CNI runner now in effect.
    fn cni(&self) -> Arc<Cni> {
        Arc::clone(&self.cni.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Uses the CNI dirs of `config` for pods set up or torn down from now
    /// on (a reload changed them).
    pub fn reload_cni(&self, config: &Config) {
        *self.cni.write().unwrap_or_else(|p| p.into_inner()) = new_cni(config);
    }

    /// Loads the pods from the store and repairs what an unclean stop left:
    /// pods caught mid-creation are torn down, pods whose namespaces are gone
    /// (a reboot emptied the run dir) become NotReady with their network
    /// released. Blocking.
    pub fn recover(live: Live, store: Store) -> Result<Self, Error> {
        let config = live.get();
        let cni = RwLock::new(new_cni(&config));
        let sandboxes = Self {
            config: live,
            store,
            cni,
            pods: Mutex::new(HashMap::new()),
            reservations: Reservations::default(),
        };
        let records = sandboxes
            .store
            .pods()
            .map_err(|e| Error::internal("loading pods from the state database", e))?;
        for mut pod in records {
            if pod.state == PodState::Creating {
                tracing::warn!(pod_id = %pod.id, "removing a pod left half-created by an unclean stop");
                if let Err(e) = sandboxes.teardown(&pod) {
                    tracing::error!(pod_id = %pod.id, error = %e, "could not clean up half-created pod");
                }
                continue;
            }
            if pod.state == PodState::Ready
                && pod
                    .namespaces
                    .pins()
                    .iter()
                    .any(|p| !krio_network::netns::is_netns(p))
            {
                tracing::warn!(pod_id = %pod.id, "pod namespaces are gone; marking it NotReady");
                if let Err(e) = sandboxes.stop_network(&mut pod) {
                    tracing::error!(pod_id = %pod.id, error = %e, "could not release the pod's network");
                }
                pod.state = PodState::NotReady;
                let _ = sandboxes.store.put_pod(&pod);
            }
            sandboxes.reservations.restore(&pod.name_key, &pod.id);
            sandboxes.lock_pods().insert(pod.id.clone(), pod);
        }
        sandboxes.collect_network_garbage();
        Ok(sandboxes)
    }

    /// Releases what CNI still holds for pods krio no longer knows (a lost or
    /// reset state database): DEL from the cache for every cached attachment
    /// without a pod, then CNI GC (1.1.0 networks) naming the attachments of
    /// the pods that are up. Failures are logged: they must not stop krio.
    fn collect_network_garbage(&self) {
        let attachments = match self.cni().cached_attachments() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the CNI cache; no network garbage collection");
                return;
            }
        };
        let known: HashMap<String, PodState> = self
            .lock_pods()
            .values()
            .map(|p| (p.id.clone(), p.state))
            .collect();
        for orphan in attachments
            .iter()
            .filter(|a| !known.contains_key(&a.sandbox_id))
        {
            tracing::warn!(pod_id = %orphan.sandbox_id, network = %orphan.network, "releasing the network of a pod krio no longer knows");
            let pod = PodNetwork {
                sandbox_id: orphan.sandbox_id.clone(),
                ifname: orphan.ifname.clone(),
                ..PodNetwork::default()
            };
            if let Err(e) = self.cni().del(&pod) {
                tracing::error!(pod_id = %orphan.sandbox_id, error = %e, "could not release an orphaned pod network");
            }
        }
        let valid: Vec<(String, String)> = attachments
            .iter()
            .filter(|a| known.get(&a.sandbox_id) == Some(&PodState::Ready))
            .map(|a| (a.sandbox_id.clone(), a.ifname.clone()))
            .collect();
        match self.cni().gc(&valid) {
            Ok(()) => {}
            Err(krio_network::cni::CniError::Config(e)) => {
                tracing::debug!(reason = %e, "no network config; CNI GC skipped");
            }
            Err(e) => tracing::warn!(error = %e, "CNI GC failed"),
        }
    }

    fn lock_pods(&self) -> MutexGuard<'_, HashMap<String, PodRecord>> {
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `RunPodSandbox`: validates, then creates (or hands over the in-flight
    /// creation of) the pod and returns its id.
    pub async fn run(
        self: &Arc<Self>,
        req: &v1::RunPodSandboxRequest,
    ) -> Result<String, tonic::Status> {
        let pod = validate::validate(req, &self.config.get())?;
        let exists = |id: &str| self.lock_pods().contains_key(id);
        let this = self.clone();
        let key = pod.name_key.clone();
        self.reservations
            .run_once(&key, exists, move || async move {
                let pod_for_task = pod;
                tokio::task::spawn_blocking(move || this.create(pod_for_task))
                    .await
                    .map_err(|e| {
                        tonic::Status::from(Error::internal("creating the pod sandbox", e))
                    })?
                    .map_err(tonic::Status::from)
            })
            .await
    }

    /// The blocking part of creation, rolled back on any failure.
    fn create(&self, pod: validate::ValidPod) -> Result<String, Error> {
        let id = crate::clock::new_id()?;
        let paths = PodPaths::new(&self.config.get().root, &self.config.get().runroot, &id);
        let mut record = PodRecord {
            id: id.clone(),
            name_key: pod.name_key.clone(),
            state: PodState::Creating,
            created_at: crate::clock::now_ns(),
            runtime_handler: pod.handler.clone(),
            config: pod.config.encode_to_vec(),
            namespaces: PodNamespaces::default(),
            dir: paths.dir.clone(),
            shm: None,
            ips: Vec::new(),
            network_attached: false,
            infra_pid: None,
            resources: None,
        };
        self.store
            .put_pod(&record)
            .map_err(|e| Error::internal("recording the new pod", e))?;
        let span = tracing::info_span!("create_pod", pod_id = %id, pod = %pod.name_key);
        let _enter = span.enter();
        match self.build(&pod, &paths, &mut record) {
            Ok(()) => {
                record.state = PodState::Ready;
                self.store
                    .put_pod(&record)
                    .map_err(|e| Error::internal("recording the new pod", e))
                    .inspect_err(|_| {
                        let _ = self.teardown(&record);
                    })?;
                tracing::info!(ips = ?record.ips, "pod sandbox ready");
                self.lock_pods().insert(id.clone(), record);
                Ok(id)
            }
            Err(e) => {
                tracing::warn!(error = %e, "pod sandbox creation failed; rolling back");
                if let Err(cleanup) = self.teardown(&record) {
                    tracing::error!(error = %cleanup, "rollback of the failed pod left something behind");
                }
                Err(e)
            }
        }
    }

    fn build(
        &self,
        pod: &validate::ValidPod,
        paths: &PodPaths,
        record: &mut PodRecord,
    ) -> Result<(), Error> {
        let mut kinds = Vec::new();
        if !pod.host_network {
            kinds.extend([Kind::Net, Kind::Uts]);
        }
        if !pod.host_ipc {
            kinds.push(Kind::Ipc);
        }
        let request = PodNsRequest {
            dir: self.config.get().runroot.join("ns"),
            pod_id: record.id.clone(),
            kinds,
            hostname: pod.config.hostname.clone(),
            sysctls: pod.sysctls.clone(),
        };
        let pins = match pod.userns {
            Some((uids, gids)) => {
                krio_network::userns::create(&request, uids, gids, userns::helper_command(&request))
            }
            None => podns::create(&request),
        }
        .map_err(|e| Error::internal("creating the pod's namespaces", e))?;
        for (kind, pin) in pins {
            match kind {
                Kind::Net => record.namespaces.net = Some(pin),
                Kind::Ipc => record.namespaces.ipc = Some(pin),
                Kind::Uts => record.namespaces.uts = Some(pin),
                Kind::Pid => record.namespaces.pid = Some(pin),
                Kind::User => record.namespaces.user = Some(pin),
            }
        }
        if pod.shared_pid {
            self.start_infra(paths, record)?;
        }
        files::write_pod_files(
            &paths.dir,
            &pod.config.hostname,
            pod.config.dns_config.as_ref(),
            pod.host_network,
        )
        .map_err(|e| Error::internal(format!("writing pod files in {}", paths.dir.display()), e))?;
        if !pod.host_ipc {
            files::mount_shm(&paths.shm).map_err(|e| {
                Error::internal(format!("mounting /dev/shm at {}", paths.shm.display()), e)
            })?;
            record.shm = Some(paths.shm.clone());
        }
        if let Some(netns) = record.namespaces.net.clone() {
            // Owed from here on: even a failed ADD is cleaned up with DEL.
            record.network_attached = true;
            let status = self
                .cni()
                .add(&pod_network(record, &pod.config, netns))
                .map_err(|e| Error::internal("setting up the pod network (CNI ADD)", e))?;
            record.ips = status.ips.iter().map(ToString::to_string).collect();
        }
        Ok(())
    }

    /// Starts the infra process holding the pod's PID namespace and pins it.
    fn start_infra(&self, paths: &PodPaths, record: &mut PodRecord) -> Result<(), Error> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&paths.run_dir)
            .map_err(|e| Error::internal(format!("creating {}", paths.run_dir.display()), e))?;
        let pid_file = paths.run_dir.join("infra.pid");
        // /proc/self/exe: the running binary even if it was replaced on disk.
        let pid = infra::start(
            std::path::Path::new("/proc/self/exe"),
            &pid_file,
            &record.namespaces.pins(),
        )
        .map_err(|e| Error::internal("starting the pod's infra process", e))?;
        record.infra_pid = Some(pid);
        let pin = podns::pin_path(&self.config.get().runroot.join("ns"), Kind::Pid, &record.id);
        podns::pin_existing(
            "pid",
            std::path::Path::new(&format!("/proc/{pid}/ns/pid")),
            &pin,
        )
        .map_err(|e| Error::internal("pinning the pod's PID namespace", e))?;
        record.namespaces.pid = Some(pin);
        Ok(())
    }

    /// Kills the infra process (and with it every process in the pod's PID
    /// namespace).
    fn stop_infra(record: &mut PodRecord) {
        if let (Some(pid), Some(pin)) = (record.infra_pid, &record.namespaces.pid) {
            infra::kill(pid, pin);
        } else if let Some(pid) = record.infra_pid {
            // Creation failed before the pin: the pid is fresh, kill it.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        record.infra_pid = None;
    }

    /// Releases the pod's network (CNI DEL); a pod without one is fine.
    fn stop_network(&self, record: &mut PodRecord) -> Result<(), Error> {
        if !record.network_attached {
            return Ok(());
        }
        let config = decode_config(record);
        let netns = record.namespaces.net.clone().unwrap_or_default();
        self.cni()
            .del(&pod_network(record, &config, netns))
            .map_err(|e| Error::internal("tearing down the pod network (CNI DEL)", e))?;
        record.network_attached = false;
        record.ips.clear();
        Ok(())
    }

    /// Removes everything of a pod: network, shm, namespaces, files, record.
    fn teardown(&self, record: &PodRecord) -> Result<(), Error> {
        let mut record = record.clone();
        Self::stop_infra(&mut record);
        self.stop_network(&mut record)?;
        if let Some(shm) = &record.shm {
            files::unmount_shm(shm)
                .map_err(|e| Error::internal(format!("unmounting {}", shm.display()), e))?;
        }
        podns::remove(&record.namespaces.pins())
            .map_err(|e| Error::internal("removing the pod's namespaces", e))?;
        let paths = PodPaths::new(
            &self.config.get().root,
            &self.config.get().runroot,
            &record.id,
        );
        for dir in [&paths.run_dir, &paths.dir] {
            files::remove_dir(dir)
                .map_err(|e| Error::internal(format!("removing {}", dir.display()), e))?;
        }
        self.store
            .delete_pod(&record.id)
            .map_err(|e| Error::internal("deleting the pod record", e))
    }

    /// Finds a pod by full id or unique id prefix.
    fn resolve(&self, id: &str) -> Result<Option<PodRecord>, Error> {
        if id.is_empty() {
            return Err(Error::InvalidArgument("pod_sandbox_id is required".into()));
        }
        let pods = self.lock_pods();
        if let Some(pod) = pods.get(id) {
            return Ok(Some(pod.clone()));
        }
        let mut matches = pods.values().filter(|p| p.id.starts_with(id));
        match (matches.next(), matches.next()) {
            (Some(pod), None) => Ok(Some(pod.clone())),
            (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
                "pod sandbox id prefix {id:?} is ambiguous"
            ))),
            _ => Ok(None),
        }
    }

    /// `StopPodSandbox`: releases the network and marks the pod NotReady.
    /// A pod that does not exist is already stopped.
    pub async fn stop(self: &Arc<Self>, id: &str) -> Result<(), Error> {
        let Some(pod) = self.resolve(id)? else {
            return Ok(());
        };
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.stop_blocking(pod))
            .await
            .map_err(|e| Error::internal("stopping the pod sandbox", e))?
    }

    fn stop_blocking(&self, mut pod: PodRecord) -> Result<(), Error> {
        let _span = tracing::info_span!("stop_pod", pod_id = %pod.id).entered();
        Self::stop_infra(&mut pod);
        self.stop_network(&mut pod)?;
        if let Some(shm) = pod.shm.take() {
            files::unmount_shm(&shm)
                .map_err(|e| Error::internal(format!("unmounting {}", shm.display()), e))?;
        }
        if pod.state != PodState::NotReady {
            tracing::info!("pod sandbox stopped");
        }
        pod.state = PodState::NotReady;
        self.store
            .put_pod(&pod)
            .map_err(|e| Error::internal("recording the stopped pod", e))?;
        self.lock_pods().insert(pod.id.clone(), pod);
        Ok(())
    }

    /// `RemovePodSandbox`: stops the pod if needed and removes all of it.
    /// A pod that does not exist is already removed.
    pub async fn remove(self: &Arc<Self>, id: &str) -> Result<(), Error> {
        let Some(pod) = self.resolve(id)? else {
            return Ok(());
        };
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _span = tracing::info_span!("remove_pod", pod_id = %pod.id).entered();
            this.teardown(&pod)?;
            this.lock_pods().remove(&pod.id);
            this.reservations.release(&pod.name_key, &pod.id);
            tracing::info!("pod sandbox removed");
            Ok(())
        })
        .await
        .map_err(|e| Error::internal("removing the pod sandbox", e))?
    }

    /// A pod by id or unique prefix, for its containers.
    pub fn get(&self, id: &str) -> Result<Option<PodRecord>, Error> {
        self.resolve(id)
    }

    /// `PodSandboxStatus`.
    pub fn status(&self, id: &str, verbose: bool) -> Result<v1::PodSandboxStatusResponse, Error> {
        let pod = self
            .resolve(id)?
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id:?} not found")))?;
        Ok(view::status(&pod, &decode_config(&pod), verbose))
    }

    /// `ListPodSandbox` / `StreamPodSandboxes`, oldest first.
    pub fn list(&self, filter: &PodFilter) -> Vec<v1::PodSandbox> {
        let mut pods: Vec<PodRecord> = self.lock_pods().values().cloned().collect();
        pods.sort_by_key(|p| p.created_at);
        pods.iter()
            .map(|p| (p, decode_config(p)))
            .filter(|(p, c)| filter.matches(p, c))
            .map(|(p, c)| view::list_entry(p, &c))
            .collect()
    }
}

/// A CNI runner for the CNI dirs of `config`; the result cache stays
/// under the root dir, so DEL finds what an earlier ADD did.
fn new_cni(config: &Config) -> Arc<Cni> {
    Arc::new(Cni::new(CniOptions {
        conf_dir: config.cni.conf_dir.clone(),
        bin_dirs: config.cni.plugin_dirs.clone(),
        cache_dir: config.root.join("cni-cache"),
        plugin_timeout: CNI_PLUGIN_TIMEOUT,
    }))
}

fn decode_config(pod: &PodRecord) -> v1::PodSandboxConfig {
    v1::PodSandboxConfig::decode(pod.config.as_slice()).unwrap_or_else(|e| {
        tracing::error!(pod_id = %pod.id, error = %e, "stored pod config does not decode");
        v1::PodSandboxConfig::default()
    })
}

/// The CNI view of a pod.
fn pod_network(record: &PodRecord, config: &v1::PodSandboxConfig, netns: PathBuf) -> PodNetwork {
    let md = config.metadata.clone().unwrap_or_default();
    PodNetwork {
        sandbox_id: record.id.clone(),
        netns,
        ifname: "eth0".into(),
        pod_name: md.name,
        pod_namespace: md.namespace,
        pod_uid: md.uid,
        port_mappings: config
            .port_mappings
            .iter()
            .filter(|pm| pm.host_port > 0)
            .map(|pm| PortMapping {
                host_port: u16::try_from(pm.host_port).unwrap_or_default(),
                container_port: u16::try_from(pm.container_port).unwrap_or_default(),
                protocol: v1::Protocol::try_from(pm.protocol)
                    .unwrap_or(v1::Protocol::Tcp)
                    .as_str_name()
                    .to_ascii_lowercase(),
                host_ip: pm.host_ip.clone(),
            })
            .collect(),
        // Validated at RunPodSandbox; an old record that no longer parses
        // still gets its DEL.
        bandwidth: bandwidth::from_annotations(&config.annotations)
            .ok()
            .flatten(),
        ..PodNetwork::default()
    }
}
