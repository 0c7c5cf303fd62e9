//! Live reload (SIGHUP): the config files are read again with the same
//! layers as at start (file, drop-ins, environment, flags), and what can
//! change safely while pods run is put in effect: the log level, the
//! registries config path, the CNI config and plugin dirs, and new runtime
//! handlers. Everything else is reported as needing a restart and keeps its
//! running value. An invalid configuration is reported and changes nothing.

use std::sync::Arc;

use crate::config::{self, Config, Overrides, Sources};
use crate::cri::Daemon;
use crate::logging::LogHandle;

/// Reads the configuration again when asked.
#[derive(Debug, Clone)]
pub struct Reloader {
    /// Where the files are, as at start.
    pub sources: Sources,
    /// Flags and `KRIO_*` environment, which keep precedence over files.
    pub overrides: Overrides,
    /// The log filter to change.
    pub log: LogHandle,
}

/// What a new configuration changes, worked out before anything is applied.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// The configuration to put in effect: the running one with the
    /// reloadable changes applied.
    pub next: Config,
    /// Changes put in effect now (`key: old -> new`).
    pub applied: Vec<String>,
    /// Changes that need a restart and are ignored until then.
    pub restart: Vec<String>,
}

impl Plan {
    /// Handlers in `next` that `old` did not have.
    fn added_handlers<'a>(&'a self, old: &'a Config) -> impl Iterator<Item = &'a String> + 'a {
        self.next
            .runtime
            .handlers
            .keys()
            .filter(|name| !old.runtime.handlers.contains_key(*name))
    }
}

/// Compares the running configuration with a newly loaded one.
pub fn plan(old: &Config, new: &Config) -> Plan {
    let mut next = old.clone();
    let mut applied = Vec::new();
    let mut restart = Vec::new();

    if new.log_level != old.log_level {
        applied.push(format!(
            "log_level: {} -> {}",
            old.log_level.as_str(),
            new.log_level.as_str()
        ));
        next.log_level = new.log_level;
    }
    if new.image.registries_conf != old.image.registries_conf {
        applied.push(format!(
            "image.registries_conf: {} -> {}",
            old.image.registries_conf.display(),
            new.image.registries_conf.display()
        ));
        next.image
            .registries_conf
            .clone_from(&new.image.registries_conf);
    }
    if new.cni != old.cni {
        applied.push(format!(
            "cni: conf_dir {} plugin_dirs {:?} -> conf_dir {} plugin_dirs {:?}",
            old.cni.conf_dir.display(),
            old.cni.plugin_dirs,
            new.cni.conf_dir.display(),
            new.cni.plugin_dirs
        ));
        next.cni = new.cni.clone();
    }
    for (name, handler) in &new.runtime.handlers {
        match old.runtime.handlers.get(name) {
            None => {
                applied.push(format!(
                    "runtime.handlers.{name}: added ({})",
                    handler.path.display()
                ));
                next.runtime.handlers.insert(name.clone(), handler.clone());
            }
            Some(current) if current != handler => {
                restart.push(format!("runtime.handlers.{name} (changed)"));
            }
            Some(_) => {}
        }
    }
    for name in old.runtime.handlers.keys() {
        if !new.runtime.handlers.contains_key(name) {
            restart.push(format!("runtime.handlers.{name} (removed)"));
        }
    }

    // Whatever else differs waits for a restart.
    let checks: [(&str, bool); 10] = [
        ("root", new.root != old.root),
        ("runroot", new.runroot != old.runroot),
        ("listen", new.listen != old.listen),
        ("cgroup_manager", new.cgroup_manager != old.cgroup_manager),
        (
            "image.auth_file",
            new.image.auth_file != old.image.auth_file,
        ),
        (
            "image.pause_image",
            new.image.pause_image != old.image.pause_image,
        ),
        ("streaming", new.streaming != old.streaming),
        ("metrics", new.metrics != old.metrics),
        (
            "runtime.default_handler",
            new.runtime.default_handler != old.runtime.default_handler,
        ),
        (
            "runtime.monitor_path",
            new.runtime.monitor_path != old.runtime.monitor_path,
        ),
    ];
    restart.extend(
        checks
            .iter()
            .filter(|(_, changed)| *changed)
            .map(|(key, _)| (*key).to_owned()),
    );
    Plan {
        next,
        applied,
        restart,
    }
}

impl Reloader {
    /// Reads the configuration again and applies what it safely can.
    pub async fn reload(&self, daemon: &Arc<Daemon>) {
        let (sources, overrides) = (self.sources.clone(), self.overrides.clone());
        let loaded = tokio::task::spawn_blocking(move || config::load(&sources, &overrides)).await;
        let (new, files) = match loaded {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reload: the configuration is invalid; keeping the one in effect");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "reload: reading the configuration failed; keeping the one in effect");
                return;
            }
        };
        let old = daemon.config.get();
        let plan = plan(&old, &new);

        if plan.next.log_level != old.log_level
            && let Err(e) = self.log.set_level(plan.next.log_level)
        {
            tracing::error!(error = %e, "reload: could not change the log level");
        }
        if plan.next.image.registries_conf != old.image.registries_conf {
            daemon
                .images
                .set_registries_conf(plan.next.image.registries_conf.clone());
        }
        if plan.next.cni != old.cni {
            daemon.sandboxes.reload_cni(&plan.next);
        }
        let added: Vec<String> = plan.added_handlers(&old).cloned().collect();
        if !added.is_empty() {
            let next = plan.next.clone();
            let probed = tokio::task::spawn_blocking(move || {
                crate::daemon::probe_handlers(&next, added.iter().map(String::as_str))
            })
            .await
            .unwrap_or_default();
            daemon
                .handler_features
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .extend(probed);
        }

        for change in &plan.applied {
            tracing::info!(change = %change, "reload: applied");
        }
        for key in &plan.restart {
            tracing::warn!(key = %key, "reload: changed, but takes effect only after a restart");
        }
        tracing::info!(
            applied = plan.applied.len(),
            need_restart = plan.restart.len(),
            "configuration reloaded"
        );
        daemon.config.set(plan.next, files);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogLevel;
    use krio_runtime::handler::HandlerConfig;

    #[test]
    fn nothing_changed_plans_nothing() {
        let c = Config::default();
        let p = plan(&c, &c);
        assert_eq!(p.next, c);
        assert!(p.applied.is_empty() && p.restart.is_empty(), "{p:?}");
    }

    #[test]
    fn reloadable_keys_are_applied() {
        let old = Config::default();
        let mut new = old.clone();
        new.log_level = LogLevel::Debug;
        new.cni.conf_dir = "/etc/other/net.d".into();
        new.image.registries_conf = "/etc/other/registries.conf".into();
        new.runtime
            .handlers
            .insert("kata".into(), HandlerConfig::new("/opt/kata/bin/kata"));
        let p = plan(&old, &new);
        assert_eq!(p.next, new);
        assert_eq!(p.applied.len(), 4, "{:?}", p.applied);
        assert!(p.restart.is_empty(), "{:?}", p.restart);
        let added: Vec<_> = p.added_handlers(&old).collect();
        assert_eq!(added, ["kata"]);
    }

    #[test]
    fn other_keys_wait_for_a_restart_and_keep_their_value() {
        let old = Config::default();
        let mut new = old.clone();
        new.root = "/srv/krio".into();
        new.metrics.enable = true;
        new.runtime.handlers.remove("crun");
        new.runtime
            .handlers
            .insert("runc".into(), HandlerConfig::new("/usr/local/sbin/runc"));
        let p = plan(&old, &new);
        assert_eq!(p.next, old, "nothing applied");
        assert!(p.applied.is_empty(), "{:?}", p.applied);
        for key in [
            "root",
            "metrics",
            "runtime.handlers.crun (removed)",
            "runtime.handlers.runc (changed)",
        ] {
            assert!(p.restart.iter().any(|r| r == key), "{key}: {:?}", p.restart);
        }
    }
}
