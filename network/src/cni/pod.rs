//! The daemon's entry point to CNI: attach a pod sandbox to the default
//! network, detach it, check it, plus STATUS and GC.
//!
//! Blocking: the daemon calls it from `spawn_blocking`. Each call re-reads
//! the config dir, so a network config that appears later is used without a
//! restart; DEL and CHECK use the config cached by ADD.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use super::args::{
    ArgsError, Bandwidth, CapabilityArgs, Dns, IpRange, PortMapping, encode_cni_args,
    kubernetes_cni_args,
};
use super::cache::{Cache, CacheEntry, CacheError, validate_container_id, validate_ifname};
use super::config::{ConfigError, NetworkConfigList, load_default_network};
use super::exec::{ExecError, PluginExec, RealExec};
use super::ops::{self, Attachment, OpError};
use super::result::CniResult;
use crate::netns::is_netns;

/// Where CNI things are and how long a plugin may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniOptions {
    /// The network config dir (`/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// Plugin bin dirs, searched in order (`/opt/cni/bin`, `/usr/lib/cni`).
    pub bin_dirs: Vec<PathBuf>,
    /// The attachment cache dir (`/var/lib/krio/cni-cache`).
    pub cache_dir: PathBuf,
    /// How long one plugin run may take before it is killed (60 s).
    pub plugin_timeout: Duration,
}

impl Default for CniOptions {
    fn default() -> Self {
        CniOptions {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            cache_dir: "/var/lib/krio/cni-cache".into(),
            plugin_timeout: Duration::from_secs(60),
        }
    }
}

/// A pod sandbox's attachment to the pod network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodNetwork {
    /// The sandbox ID (`CNI_CONTAINERID`, `K8S_POD_INFRA_CONTAINER_ID`).
    pub sandbox_id: String,
    /// The pinned netns path; for DEL it may be gone or empty.
    pub netns: PathBuf,
    /// The interface name in the pod, normally `eth0`.
    pub ifname: String,
    /// `K8S_POD_NAME`.
    pub pod_name: String,
    /// `K8S_POD_NAMESPACE`.
    pub pod_namespace: String,
    /// `K8S_POD_UID`.
    pub pod_uid: String,
    /// Host ports (`portMappings`); entries with host port 0 are skipped.
    pub port_mappings: Vec<PortMapping>,
    /// Traffic shaping (`bandwidth`).
    pub bandwidth: Option<Bandwidth>,
    /// DNS settings (`dns`).
    pub dns: Option<Dns>,
    /// IPAM ranges (`ipRanges`).
    pub ip_ranges: Vec<Vec<IpRange>>,
}

/// The pod's network after ADD.
#[derive(Debug, Clone, PartialEq)]
pub struct PodNetworkStatus {
    /// The pod's IPs, the one on its own interface first.
    pub ips: Vec<IpAddr>,
    /// The full result of the last plugin.
    pub result: CniResult,
}

/// One attachment in the cache, as found by [`Cni::cached_attachments`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAttachment {
    /// The sandbox ID.
    pub sandbox_id: String,
    /// The interface name.
    pub ifname: String,
    /// The network name.
    pub network: String,
}

/// Why a pod network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// No usable network config.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The sandbox ID or interface name is not valid.
    #[error("invalid pod network request: {0}")]
    InvalidRequest(#[source] CacheError),
    /// A pod field cannot go into `CNI_ARGS`.
    #[error("invalid pod network request: {0}")]
    Args(#[from] ArgsError),
    /// A CNI operation failed.
    #[error("network {network}: {source}")]
    Op {
        /// The network name.
        network: String,
        /// The failure.
        #[source]
        source: Box<OpError>,
    },
    /// ADD failed and was rolled back with DEL (and whether that worked).
    #[error("network {network}: {source}{}", rollback_suffix(.rollback))]
    AddFailed {
        /// The network name.
        network: String,
        /// Why ADD failed.
        #[source]
        source: Box<OpError>,
        /// Why the rollback DEL failed, if it did; the cache entry is then
        /// kept so a later DEL can retry.
        rollback: Option<Box<OpError>>,
    },
    /// CHECK on an attachment with no completed ADD.
    #[error("sandbox {sandbox_id} has no completed CNI ADD on interface {ifname}")]
    NotAdded {
        /// The sandbox ID.
        sandbox_id: String,
        /// The interface name.
        ifname: String,
    },
    /// The attachment cache failed.
    #[error("{0}")]
    Cache(#[source] CacheError),
}

fn rollback_suffix(rollback: &Option<Box<OpError>>) -> String {
    match rollback {
        None => " (rolled back)".into(),
        Some(e) => format!(" (rollback failed too: {e})"),
    }
}

impl CniError {
    /// The plugin's own error, if a plugin reported one.
    pub fn plugin_error(&self) -> Option<&super::exec::PluginError> {
        match self {
            CniError::Op { source, .. } | CniError::AddFailed { source, .. } => {
                source.plugin_error()
            }
            _ => None,
        }
    }
}

/// Runs the pod network's CNI plugins for the daemon.
pub struct Cni {
    opts: CniOptions,
    exec: Box<dyn PluginExec>,
    cache: Cache,
    /// GC must not overlap ADD or DEL: they hold it shared, GC exclusive.
    gc_lock: RwLock<()>,
}

impl std::fmt::Debug for Cni {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cni").field("opts", &self.opts).finish()
    }
}

/// The netns path to pass to a plugin: empty when the namespace is gone.
fn live_netns(path: &Path) -> String {
    if !path.as_os_str().is_empty() && is_netns(path) {
        path.display().to_string()
    } else {
        String::new()
    }
}

impl Cni {
    /// Runs real plugin binaries from `opts.bin_dirs`.
    pub fn new(opts: CniOptions) -> Self {
        let exec = RealExec::new(opts.bin_dirs.clone(), opts.plugin_timeout);
        Self::with_exec(opts, Box::new(exec))
    }

    /// Runs plugins through `exec` (tests use a fake).
    pub fn with_exec(opts: CniOptions, exec: Box<dyn PluginExec>) -> Self {
        Cni {
            cache: Cache::new(opts.cache_dir.clone()),
            opts,
            exec,
            gc_lock: RwLock::new(()),
        }
    }

    /// The options in use.
    pub fn options(&self) -> &CniOptions {
        &self.opts
    }

    /// The current default network config, or why there is none (the
    /// daemon's `NetworkReady` condition).
    pub fn status(&self) -> Result<NetworkConfigList, ConfigError> {
        load_default_network(&self.opts.conf_dir)
    }

    /// Asks the default network's plugins whether they can serve ADD
    /// (CNI STATUS, 1.1.0 configs; always ready for earlier versions).
    pub fn plugin_status(&self) -> Result<(), CniError> {
        let list = self.status()?;
        ops::status(self.exec.as_ref(), &list).map_err(|source| CniError::Op {
            network: list.name.clone(),
            source: Box::new(source),
        })
    }

    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        // A panic elsewhere must not wedge networking: the lock guards no data.
        self.gc_lock.read().unwrap_or_else(|e| e.into_inner())
    }

    fn validate(pod: &PodNetwork) -> Result<(), CniError> {
        validate_container_id(&pod.sandbox_id).map_err(CniError::InvalidRequest)?;
        validate_ifname(&pod.ifname).map_err(CniError::InvalidRequest)
    }

    fn request_args(pod: &PodNetwork) -> (Vec<(String, String)>, CapabilityArgs) {
        let args = kubernetes_cni_args(
            &pod.pod_namespace,
            &pod.pod_name,
            &pod.sandbox_id,
            &pod.pod_uid,
        );
        let caps = CapabilityArgs {
            port_mappings: pod
                .port_mappings
                .iter()
                .filter(|m| m.host_port != 0)
                .cloned()
                .collect(),
            bandwidth: pod.bandwidth.clone(),
            dns: pod.dns.clone(),
            ip_ranges: pod.ip_ranges.clone(),
        };
        (args, caps)
    }

    /// Attaches the pod to the default network: ADD through every plugin,
    /// caching the result. A failed ADD is rolled back with DEL. An earlier
    /// attachment of the same sandbox and interface still in the cache is
    /// deleted first (CNI forbids a second ADD without DEL).
    pub fn add(&self, pod: &PodNetwork) -> Result<PodNetworkStatus, CniError> {
        Self::validate(pod)?;
        let (args, caps) = Self::request_args(pod);
        let cni_args = encode_cni_args(&args)?;
        let list = self.status()?;
        let _guard = self.read_lock();

        if let Some(old) = self
            .cache
            .load(&pod.sandbox_id, &pod.ifname, &list.name)
            .map_err(CniError::Cache)?
        {
            tracing::warn!(
                pod_id = %pod.sandbox_id,
                network = %list.name,
                "CNI ADD over a cached attachment: deleting it first"
            );
            self.del_entry(&old, &pod.netns)?;
        }

        let entry = CacheEntry {
            container_id: pod.sandbox_id.clone(),
            ifname: pod.ifname.clone(),
            netns: pod.netns.clone(),
            cni_args: args,
            capability_args: caps,
            config: list,
            result: None,
        };
        // Cache the config before running anything, so that a crash mid-ADD
        // still leaves what DEL needs to release what was allocated.
        self.cache.store(&entry).map_err(CniError::Cache)?;

        let caps_map = entry.capability_args.to_map();
        let netns = pod.netns.display().to_string();
        let att = Attachment {
            container_id: &pod.sandbox_id,
            netns: &netns,
            ifname: &pod.ifname,
            cni_args: &cni_args,
            capability_args: &caps_map,
        };
        let network = entry.config.name.clone();
        let mut last = None;
        let added = ops::add(self.exec.as_ref(), &entry.config, &att, &mut last);
        let source = match added {
            Ok(result) => {
                let mut done = entry.clone();
                done.result = Some(result.raw.clone());
                match self.cache.store(&done) {
                    Ok(()) => {
                        let ips = result.pod_ips(&pod.ifname);
                        tracing::info!(pod_id = %pod.sandbox_id, %network, ?ips, "CNI ADD done");
                        return Ok(PodNetworkStatus { ips, result });
                    }
                    Err(cache_err) => {
                        // Without the cached result a later DEL would run
                        // blind: undo the ADD now.
                        let _ = self.rollback(&entry, &att, last.as_ref());
                        return Err(CniError::Cache(cache_err));
                    }
                }
            }
            Err(source) => source,
        };
        if matches!(
            source,
            OpError::Exec {
                source: ExecError::NotFound { .. } | ExecError::InvalidType(_),
                ..
            }
        ) {
            // Plugins are looked up before any runs: nothing to roll back.
            let _ = self.cache.remove(&pod.sandbox_id, &pod.ifname, &network);
            return Err(CniError::Op {
                network,
                source: Box::new(source),
            });
        }
        tracing::warn!(pod_id = %pod.sandbox_id, %network, error = %source, "CNI ADD failed; rolling back");
        let rollback = self.rollback(&entry, &att, last.as_ref());
        Err(CniError::AddFailed {
            network,
            source: Box::new(source),
            rollback,
        })
    }

    /// Undoes a failed ADD with DEL (given the last result any plugin
    /// returned) and drops the cache entry if that worked; else keeps it
    /// for a later DEL and returns why.
    fn rollback(
        &self,
        entry: &CacheEntry,
        att: &Attachment<'_>,
        last_result: Option<&serde_json::Value>,
    ) -> Option<Box<OpError>> {
        match ops::del(self.exec.as_ref(), &entry.config, att, last_result) {
            Ok(()) => {
                if let Err(e) =
                    self.cache
                        .remove(&entry.container_id, &entry.ifname, &entry.config.name)
                {
                    tracing::warn!(pod_id = %entry.container_id, error = %e, "cannot drop CNI cache entry");
                }
                None
            }
            Err(e) => {
                tracing::warn!(pod_id = %entry.container_id, error = %e, "CNI rollback DEL failed");
                Some(Box::new(e))
            }
        }
    }

    /// DEL of one cached attachment, then drops it from the cache.
    fn del_entry(&self, entry: &CacheEntry, netns: &Path) -> Result<(), CniError> {
        let netns = if netns.as_os_str().is_empty() {
            live_netns(&entry.netns)
        } else {
            live_netns(netns)
        };
        let cni_args = encode_cni_args(&entry.cni_args)?;
        let caps = entry.capability_args.to_map();
        let att = Attachment {
            container_id: &entry.container_id,
            netns: &netns,
            ifname: &entry.ifname,
            cni_args: &cni_args,
            capability_args: &caps,
        };
        ops::del(
            self.exec.as_ref(),
            &entry.config,
            &att,
            entry.result.as_ref(),
        )
        .map_err(|source| CniError::Op {
            network: entry.config.name.clone(),
            source: Box::new(source),
        })?;
        self.cache
            .remove(&entry.container_id, &entry.ifname, &entry.config.name)
            .map_err(CniError::Cache)
    }

    /// DEL with the current config and the request's arguments, for an
    /// attachment with no (readable) cache entry.
    fn del_uncached(&self, pod: &PodNetwork, list: &NetworkConfigList) -> Result<(), CniError> {
        let (args, caps) = Self::request_args(pod);
        let cni_args = encode_cni_args(&args)?;
        let caps = caps.to_map();
        let netns = live_netns(&pod.netns);
        let att = Attachment {
            container_id: &pod.sandbox_id,
            netns: &netns,
            ifname: &pod.ifname,
            cni_args: &cni_args,
            capability_args: &caps,
        };
        ops::del(self.exec.as_ref(), list, &att, None).map_err(|source| CniError::Op {
            network: list.name.clone(),
            source: Box::new(source),
        })
    }

    /// Detaches the pod: DEL through every plugin in reverse order, with the
    /// config and result cached by ADD, then drops the cache entry.
    /// Idempotent: with no cache entry the current config is used, and with
    /// no config at all there is nothing to do. A netns that is gone is
    /// passed as empty, so plugins still release what they hold (IPAM).
    pub fn del(&self, pod: &PodNetwork) -> Result<(), CniError> {
        Self::validate(pod)?;
        let _guard = self.read_lock();
        let listed = self
            .cache
            .list(&pod.sandbox_id, &pod.ifname)
            .map_err(CniError::Cache)?;
        let mut first_err = None;
        let mut keep_err = |e: CniError| {
            tracing::warn!(pod_id = %pod.sandbox_id, error = %e, "CNI DEL failed");
            first_err.get_or_insert(e);
        };
        if listed.is_empty() {
            match self.status() {
                Ok(list) => self.del_uncached(pod, &list)?,
                Err(e) => {
                    tracing::info!(pod_id = %pod.sandbox_id, reason = %e, "CNI DEL: no cache entry and no network config; nothing to do");
                }
            }
            return Ok(());
        }
        for (network, entry) in listed {
            match entry {
                Ok(entry) => {
                    if let Err(e) = self.del_entry(&entry, &pod.netns) {
                        keep_err(e);
                    }
                }
                Err(corrupt) => {
                    // Fall back to the current config if it is that network.
                    tracing::warn!(pod_id = %pod.sandbox_id, error = %corrupt, "unreadable CNI cache entry");
                    let done = match self.status() {
                        Ok(list) if list.name == network => self.del_uncached(pod, &list),
                        _ => Ok(()),
                    };
                    match done.and_then(|()| {
                        self.cache
                            .remove(&pod.sandbox_id, &pod.ifname, &network)
                            .map_err(CniError::Cache)
                    }) {
                        Ok(()) => {}
                        Err(e) => keep_err(e),
                    }
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Checks the pod's attachment (CNI CHECK with the cached result) where
    /// the network's version has CHECK and it is not disabled.
    pub fn check(&self, pod: &PodNetwork) -> Result<(), CniError> {
        Self::validate(pod)?;
        let not_added = || CniError::NotAdded {
            sandbox_id: pod.sandbox_id.clone(),
            ifname: pod.ifname.clone(),
        };
        let listed = self
            .cache
            .list(&pod.sandbox_id, &pod.ifname)
            .map_err(CniError::Cache)?;
        if listed.is_empty() {
            return Err(not_added());
        }
        for (_, entry) in listed {
            let entry = entry.map_err(CniError::Cache)?;
            let result = entry.result.as_ref().ok_or_else(not_added)?;
            let cni_args = encode_cni_args(&entry.cni_args)?;
            let caps = entry.capability_args.to_map();
            let netns = pod.netns.display().to_string();
            let att = Attachment {
                container_id: &entry.container_id,
                netns: &netns,
                ifname: &entry.ifname,
                cni_args: &cni_args,
                capability_args: &caps,
            };
            ops::check(self.exec.as_ref(), &entry.config, &att, result).map_err(|source| {
                CniError::Op {
                    network: entry.config.name.clone(),
                    source: Box::new(source),
                }
            })?;
        }
        Ok(())
    }

    /// The cached ADD result of a sandbox's interface on the current default
    /// network (or, failing that, any network), e.g. to recover pod IPs
    /// after a restart.
    pub fn cached_status(
        &self,
        sandbox_id: &str,
        ifname: &str,
    ) -> Result<Option<PodNetworkStatus>, CniError> {
        validate_container_id(sandbox_id).map_err(CniError::InvalidRequest)?;
        validate_ifname(ifname).map_err(CniError::InvalidRequest)?;
        let current = self.status().ok().map(|l| l.name);
        let mut listed = self
            .cache
            .list(sandbox_id, ifname)
            .map_err(CniError::Cache)?;
        listed.sort_by_key(|(n, _)| Some(n) != current.as_ref());
        for (_, entry) in listed {
            let Ok(entry) = entry else { continue };
            let Some(raw) = entry.result else { continue };
            if let Ok(result) = CniResult::parse(raw, &entry.config.cni_version) {
                let ips = result.pod_ips(ifname);
                return Ok(Some(PodNetworkStatus { ips, result }));
            }
        }
        Ok(None)
    }

    /// Every attachment in the cache, e.g. to retry DEL at start for pods
    /// that are half torn down.
    pub fn cached_attachments(&self) -> Result<Vec<CachedAttachment>, CniError> {
        Ok(self
            .cache
            .list_all()
            .map_err(CniError::Cache)?
            .into_iter()
            .map(|(sandbox_id, ifname, network)| CachedAttachment {
                sandbox_id,
                ifname,
                network,
            })
            .collect())
    }

    /// CNI GC on the default network (1.1.0 configs without `disableGC`):
    /// plugins drop resources of attachments not in `valid` (sandbox ID,
    /// ifname). Waits for running ADDs and DELs and holds new ones off.
    pub fn gc(&self, valid: &[(String, String)]) -> Result<(), CniError> {
        let list = self.status()?;
        let _guard = self.gc_lock.write().unwrap_or_else(|e| e.into_inner());
        ops::gc(self.exec.as_ref(), &list, valid).map_err(|source| CniError::Op {
            network: list.name.clone(),
            source: Box::new(source),
        })
    }
}

#[cfg(test)]
#[path = "pod_tests.rs"]
mod tests;
