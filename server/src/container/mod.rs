//! Containers: CRI config → OCI bundle → `krio-monitor` → OCI runtime, and
//! back from the monitor's exit file to the CRI's view.
//!
//! The daemon never holds a container as its child: each runs under its own
//! monitor, which outlives daemon restarts. Exits are read from the
//! monitor's exit file, as soon as it appears (an inotify watch) and again
//! whenever the state is asked for.

mod census;
mod create;
pub mod exec;
mod exit_watch;
mod idmapped_mounts;
mod image_volumes;
mod stats;
mod update;
mod userns_rootfs;
mod view;

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use krio_image::ImageStore;
use krio_proto::v1;
use krio_runtime::monitor;
use krio_runtime::oci::{OciCli, OciError, OciRuntime};
use krio_runtime::spec::HostInfo;
use prost::Message;

use crate::config::{CgroupManager, Live};
use crate::error::Error;
use crate::events::{Event, EventKind, EventSink};
use crate::state::{ContainerRecord, ContainerState, Store};

pub use view::ContainerFilter;

/// Every container of this daemon.
pub struct Containers {
    config: Live,
    store: Store,
    images: ImageStore,
    host: HostInfo,
    records: Mutex<HashMap<String, ContainerRecord>>,
    names: Mutex<HashMap<String, String>>,
    cpu_rate: krio_runtime::stats::CpuRate,
    events: EventSink,
    exits: Option<Arc<exit_watch::ExitWatcher>>,
    exit_bell: exit_watch::ExitBell,
}

impl std::fmt::Debug for Containers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containers").finish_non_exhaustive()
    }
}

/// How long StopContainer waits after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl Containers {
    /// Loads the containers from the store, reading exits that happened
    /// while the daemon was down. Blocking.
    pub fn recover(
        live: Live,
        store: Store,
        images: ImageStore,
        features: &crate::cri::HandlerFeatures,
        events: EventSink,
    ) -> Result<Self, Error> {
        let config = live.get();
        let logs = config.runroot.join("runtime-logs");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&logs)
            .map_err(|e| Error::internal(format!("creating {}", logs.display()), e))?;
        let mut host = HostInfo::detect();
        host.systemd_cgroup = config.cgroup_manager == CgroupManager::Systemd;
        // `rro` needs both the kernel and the default handler's runtime.
        host.rro_mounts = features
            .get(&config.runtime.default_handler)
            .is_some_and(|f| f.recursive_read_only_mounts);
        let containers = Self {
            config: live,
            store,
            images,
            host,
            records: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            cpu_rate: krio_runtime::stats::CpuRate::new(),
            events,
            exit_bell: exit_watch::ExitBell::default(),
            exits: match exit_watch::ExitWatcher::new() {
                Ok(w) => Some(Arc::new(w)),
                Err(e) => {
                    tracing::warn!(error = %e, "no inotify: container exits are seen only on demand");
                    None
                }
            },
        };
        let records = containers
            .store
            .containers()
            .map_err(|e| Error::internal("loading containers from the state database", e))?;
        for mut record in records {
            if record.state != ContainerState::Exited {
                containers.watch_exit(&record);
            }
            let was = record.state;
            containers.refresh(&mut record);
            if record.state != was
                && let Err(e) = containers.store.put_container(&record)
            {
                tracing::error!(container_id = %record.id, error = %e, "could not record an exit seen at start");
            }
            containers
                .lock_names()
                .insert(record.name_key.clone(), record.id.clone());
            containers.lock().insert(record.id.clone(), record);
        }
        Ok(containers)
    }

    /// Starts the thread that reads exits as they happen and reports them
    /// (`GetContainerEvents`). It ends with the process.
    pub fn start_exit_watcher(self: &Arc<Self>) {
        let Some(exits) = self.exits.clone() else {
            return;
        };
        let this: Weak<Self> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("exit-watcher".into())
            .spawn(move || {
                exits.run(|id| {
                    if let Some(containers) = this.upgrade() {
                        // Reading it records the exit and emits the event.
                        let _ = containers.get(id);
                        containers.exit_bell.ring();
                    }
                })
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the exit watcher: exits are seen only on demand");
        }
    }

    fn watch_exit(&self, record: &ContainerRecord) {
        if let Some(exits) = &self.exits
            && let Err(e) = exits.watch(&record.id, &record.state_dir)
        {
            tracing::warn!(container_id = %record.id, error = %e, "cannot watch for the exit; it is seen on demand");
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, ContainerRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_names(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The handler's config as now in effect (a reload may add handlers).
    fn handler(&self, name: &str) -> Result<krio_runtime::handler::HandlerConfig, Error> {
        self.config
            .get()
            .runtime
            .handlers
            .get(name)
            .cloned()
            .ok_or_else(|| {
                Error::FailedPrecondition(format!("runtime handler {name:?} is not configured"))
            })
    }

    fn runtime(&self, record: &ContainerRecord) -> Result<OciCli, Error> {
        let handler = self.handler(&record.runtime_handler)?;
        Ok(OciCli::new(handler.path)
            .with_root(handler.root)
            .with_log_dir(self.config.get().runroot.join("runtime-logs")))
    }

    fn monitor_binary(&self) -> PathBuf {
        if let Some(path) = &self.config.get().runtime.monitor_path {
            return path.clone();
        }
        // Beside the daemon's own binary.
        std::fs::read_link("/proc/self/exe")
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("krio-monitor")))
            .unwrap_or_else(|| PathBuf::from("/usr/local/bin/krio-monitor"))
    }

    /// Reads the monitor's exit file into the record (and the store) when
    /// the container has exited.
    fn refresh(&self, record: &mut ContainerRecord) {
        if record.state == ContainerState::Exited {
            return;
        }
        let exit = match monitor::read_exit(&record.state_dir) {
            Ok(Some(exit)) => exit,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(container_id = %record.id, error = %e, "unreadable exit file");
                return;
            }
        };
        let apply = |r: &mut ContainerRecord| {
            r.state = ContainerState::Exited;
            r.exit_code = exit.exit_code;
            r.finished_at = exit.finished_at_ns;
            r.reason.clone_from(&exit.reason);
            if exit.oom_killed {
                r.message = "the container was killed by the kernel's OOM killer".into();
            }
        };
        // The exit goes into the shared record (the caller's copy may be
        // stale: the exit watcher can race a start), under the lock, so the
        // store sees the transitions in order and one caller reports it.
        let mut records = self.lock();
        match records.get_mut(&record.id) {
            Some(known) if known.state != ContainerState::Exited => {
                apply(known);
                *record = known.clone();
            }
            Some(known) => {
                *record = known.clone();
                return;
            }
            // Not shared: recovery persists it itself; a removed container
            // must not be written back.
            None => {
                apply(record);
                return;
            }
        }
        if let Err(e) = self.store.put_container(record) {
            tracing::error!(container_id = %record.id, error = %e, "could not record the exit");
        }
        drop(records);
        tracing::info!(container_id = %record.id, exit_code = record.exit_code, reason = %record.reason, "container exited");
        self.events
            .send(Event::now(EventKind::Stopped, &record.id, &record.pod_id));
    }

    /// Finds a container by id or unique prefix, with its exit read.
    fn get(&self, id: &str) -> Result<Option<ContainerRecord>, Error> {
        if id.is_empty() {
            return Err(Error::InvalidArgument("container_id is required".into()));
        }
        let found = {
            let records = self.lock();
            if let Some(r) = records.get(id) {
                Some(r.clone())
            } else {
                let mut matches = records.values().filter(|r| r.id.starts_with(id));
                match (matches.next(), matches.next()) {
                    (Some(r), None) => Some(r.clone()),
                    (Some(_), Some(_)) => {
                        return Err(Error::InvalidArgument(format!(
                            "container id prefix {id:?} is ambiguous"
                        )));
                    }
                    _ => None,
                }
            }
        };
        Ok(found.map(|mut r| {
            // Updates the shared record too when the exit is new.
            self.refresh(&mut r);
            r
        }))
    }

    fn save(&self, record: &ContainerRecord) -> Result<(), Error> {
        self.store
            .put_container(record)
            .map_err(|e| Error::internal("recording the container", e))?;
        self.lock().insert(record.id.clone(), record.clone());
        Ok(())
    }

    /// Ids of a pod's containers.
    pub fn of_pod(&self, pod_id: &str) -> Vec<String> {
        self.lock()
            .values()
            .filter(|r| r.pod_id == pod_id)
            .map(|r| r.id.clone())
            .collect()
    }

    /// Undoes whatever of a container exists (blocking, best effort).
    fn cleanup(&self, record: &ContainerRecord) {
        // The monitor did the slow part (runtime delete, unmount) at exit.
        let cleaned = monitor::cleaned_after_exit(&record.state_dir);
        if !cleaned && let Ok(runtime) = self.runtime(record) {
            match runtime.delete(&record.id, true) {
                Ok(()) | Err(OciError::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(container_id = %record.id, error = %e, "runtime delete failed")
                }
            }
        }
        if !cleaned {
            let _ = nix::mount::umount2(&record.rootfs, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Err(e) = self.images.remove_rootfs(&record.id) {
            tracing::warn!(container_id = %record.id, error = %e, "could not remove the container's rootfs");
        }
        let run_dir = record.bundle.parent().map(Path::to_path_buf);
        if let Some(run_dir) = &run_dir
            && let Ok(config) = v1::ContainerConfig::decode(record.config.as_slice())
        {
            image_volumes::unmount_all(&self.images, &record.id, run_dir, &config);
            idmapped_mounts::unmount_all(&record.id, run_dir, &config);
        }
        for dir in run_dir.iter().chain(std::iter::once(&record.state_dir)) {
            if let Err(e) = std::fs::remove_dir_all(dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(container_id = %record.id, error = %e, dir = %dir.display(), "could not remove a container dir");
            }
        }
        if let Err(e) = self.store.delete_container(&record.id) {
            tracing::warn!(container_id = %record.id, error = %e, "could not delete the container record");
        }
        self.lock().remove(&record.id);
    }

    /// `StartContainer` (blocking).
    pub fn start(&self, id: &str) -> Result<(), Error> {
        let mut record = self
            .get(id)?
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))?;
        if record.state != ContainerState::Created {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}, not created",
                record.id, record.state
            )));
        }
        let _span = tracing::info_span!("start_container", container_id = %record.id, pod_id = %record.pod_id).entered();
        // Taken before the start: a process that exits at once must not
        // look as if it finished before it started.
        let started_at = crate::clock::now_ns();
        self.runtime(&record)?
            .start(&record.id)
            .map_err(|e| Error::internal("starting the container", e))?;
        record.state = ContainerState::Running;
        record.started_at = started_at;
        self.save(&record)?;
        self.events
            .send(Event::now(EventKind::Started, &record.id, &record.pod_id));
        // It may already have run to completion.
        self.refresh(&mut record);
        tracing::info!("container started");
        Ok(())
    }

    /// `StopContainer` (blocking): the stop signal, then SIGKILL after the
    /// timeout. A container that is not running (or absent) is stopped.
    pub fn stop(&self, id: &str, timeout: i64) -> Result<(), Error> {
        let Some(mut record) = self.get(id)? else {
            return Ok(());
        };
        if record.state == ContainerState::Exited {
            return Ok(());
        }
        let _span = tracing::info_span!("stop_container", container_id = %record.id, pod_id = %record.pod_id).entered();
        let runtime = self.runtime(&record)?;
        if record.state == ContainerState::Created {
            // Never started: nothing to signal gracefully.
            let _ = runtime.kill(&record.id, 9, true);
        } else if timeout > 0 {
            if let Err(e) = runtime.kill(&record.id, record.stop_signal, false) {
                tracing::debug!(error = %e, "stop signal not delivered");
            }
            self.wait_exit(&mut record, Duration::from_secs(timeout.unsigned_abs()));
        }
        if record.state != ContainerState::Exited {
            if let Err(e) = runtime.kill(&record.id, 9, true) {
                tracing::debug!(error = %e, "SIGKILL not delivered");
            }
            self.wait_exit(&mut record, KILL_WAIT);
        }
        if record.state != ContainerState::Exited && record.started_at == 0 {
            // A created container that was killed before start has no
            // monitor exit yet; record the kill.
            record.state = ContainerState::Exited;
            record.exit_code = 137;
            record.finished_at = crate::clock::now_ns();
            record.reason = "Error".into();
        }
        if record.state != ContainerState::Exited {
            return Err(Error::internal(
                "stopping the container",
                std::io::Error::other(format!(
                    "container {} did not exit after SIGKILL",
                    record.id
                )),
            ));
        }
        self.save(&record)?;
        tracing::info!(exit_code = record.exit_code, "container stopped");
        Ok(())
    }

    fn wait_exit(&self, record: &mut ContainerRecord, limit: Duration) {
        let deadline = Instant::now() + limit;
        // Without the watcher nothing rings: look again every 20 ms.
        let recheck = if self.exits.is_some() {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(20)
        };
        loop {
            let seen = self.exit_bell.rings();
            self.refresh(record);
            let now = Instant::now();
            if record.state == ContainerState::Exited || now >= deadline {
                return;
            }
            self.exit_bell.wait_after(seen, recheck.min(deadline - now));
        }
    }

    /// `RemoveContainer` (blocking): stops it if needed, then removes all of
    /// it. An absent container is removed.
    pub fn remove(&self, id: &str) -> Result<(), Error> {
        let Some(record) = self.get(id)? else {
            return Ok(());
        };
        if record.state != ContainerState::Exited {
            self.stop(&record.id, 0)?;
        }
        let _span = tracing::info_span!("remove_container", container_id = %record.id, pod_id = %record.pod_id).entered();
        self.cleanup(&record);
        self.cpu_rate.remove(&record.id);
        self.events
            .send(Event::now(EventKind::Deleted, &record.id, &record.pod_id));
        let mut names = self.lock_names();
        if names.get(&record.name_key) == Some(&record.id) {
            names.remove(&record.name_key);
        }
        tracing::info!("container removed");
        Ok(())
    }

    /// `ContainerStatus`.
    pub fn status(&self, id: &str, verbose: bool) -> Result<v1::ContainerStatusResponse, Error> {
        let record = self
            .get(id)?
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))?;
        Ok(view::status(&record, verbose))
    }

    /// The containers whose id and pod id start with the given prefixes
    /// (empty: any), with their exits read, oldest first. Only those are
    /// copied out of the shared map.
    fn snapshot(&self, id: &str, pod_id: &str) -> Vec<ContainerRecord> {
        let mut records: Vec<ContainerRecord> = self
            .lock()
            .values()
            .filter(|r| r.id.starts_with(id) && r.pod_id.starts_with(pod_id))
            .cloned()
            .collect();
        for record in &mut records {
            self.refresh(record);
        }
        records.sort_by_key(|r| r.created_at);
        records
    }

    /// `ListContainers`, oldest first.
    pub fn list(&self, filter: &ContainerFilter) -> Vec<v1::Container> {
        self.records(filter).iter().map(view::list_entry).collect()
    }

    /// The statuses of a pod's containers, oldest first (for events and
    /// `PodSandboxStatus`).
    pub fn statuses_of_pod(&self, pod_id: &str) -> Vec<v1::ContainerStatus> {
        self.snapshot("", pod_id)
            .iter()
            .filter(|r| r.pod_id == pod_id)
            .filter_map(|r| view::status(r, false).status)
            .collect()
    }

    /// `ContainerStats` (blocking).
    pub fn stats(&self, id: &str) -> Result<v1::ContainerStats, Error> {
        let record = self
            .get(id)?
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))?;
        Ok(stats::container_stats(&record, &self.cpu_rate))
    }

    /// `ListContainerStats` (blocking).
    pub fn list_stats(&self, filter: &ContainerFilter) -> Vec<v1::ContainerStats> {
        self.records(filter)
            .iter()
            .map(|r| stats::container_stats(r, &self.cpu_rate))
            .collect()
    }

    /// The records that pass `filter`, oldest first, exits read
    /// (blocking). For readers such as the metrics collector.
    pub fn records(&self, filter: &ContainerFilter) -> Vec<ContainerRecord> {
        // State and labels are checked once exits are read.
        self.snapshot(&filter.id, &filter.pod_id)
            .into_iter()
            .filter(|r| filter.matches(r))
            .collect()
    }

    /// `ReopenContainerLog` (blocking).
    pub fn reopen_log(&self, id: &str) -> Result<(), Error> {
        let record = self
            .get(id)?
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))?;
        if record.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        monitor::reopen_log(&record.state_dir)
            .map_err(|e| Error::internal("reopening the container log", e))
    }

    /// The container, which must be running (for exec and attach).
    pub fn running(&self, id: &str) -> Result<ContainerRecord, Error> {
        let record = self
            .get(id)?
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))?;
        if record.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        Ok(record)
    }

    /// A streaming exec's command, ready to spawn (blocking).
    pub fn exec_command(
        &self,
        id: &str,
        cmd: &[String],
        tty: bool,
    ) -> Result<exec::PreparedExec, Error> {
        let record = self.running(id)?;
        exec::prepare(&self.runtime(&record)?, &record, cmd, tty)
    }

    /// `ExecSync` (blocking).
    pub fn exec_sync(&self, req: &v1::ExecSyncRequest) -> Result<v1::ExecSyncResponse, Error> {
        let record = self.get(&req.container_id)?.ok_or_else(|| {
            Error::NotFound(format!("container {:?} not found", req.container_id))
        })?;
        if record.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        if req.cmd.is_empty() {
            return Err(Error::InvalidArgument("cmd is required".into()));
        }
        exec::exec_sync(&self.runtime(&record)?, &record, &req.cmd, req.timeout)
    }
}

fn libc_sigterm() -> i32 {
    nix::sys::signal::Signal::SIGTERM as i32
}
