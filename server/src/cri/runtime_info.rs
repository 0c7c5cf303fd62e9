//! `Version`, `Status` and `RuntimeConfig`: what the runtime is and whether
//! it is ready.

use std::collections::HashMap;

use krio_proto::v1;

use super::{CRI_API_VERSION, Daemon, RUNTIME_NAME};
use crate::config::CgroupManager;
use crate::error::{Error, Result};

/// The CRI `Version` RPC.
pub fn version(_req: &v1::VersionRequest) -> v1::VersionResponse {
    v1::VersionResponse {
        // The version of the CRI protocol itself ("0.1.0" in every runtime).
        version: "0.1.0".to_owned(),
        runtime_name: RUNTIME_NAME.to_owned(),
        runtime_version: env!("CARGO_PKG_VERSION").to_owned(),
        runtime_api_version: CRI_API_VERSION.to_owned(),
    }
}

/// Condition type: the runtime can run containers.
const RUNTIME_READY: &str = "RuntimeReady";
/// Condition type: pods can be given a network.
const NETWORK_READY: &str = "NetworkReady";

/// The CRI `Status` RPC. Checks touch the filesystem, so they run on the
/// blocking pool.
pub async fn status(daemon: &Daemon, req: &v1::StatusRequest) -> Result<v1::StatusResponse> {
    let config = daemon.config.get();
    let (runtime, network) = tokio::task::spawn_blocking(move || {
        let default = &config.runtime.default_handler;
        let runtime = match config.runtime.handlers.get(default) {
            Some(h) => h.check_binary(default).map_err(|e| e.to_string()),
            None => Err(format!(
                "default runtime handler {default:?} is not configured"
            )),
        };
        let network = krio_network::cni::load_default_network(&config.cni.conf_dir)
            .map(|net| (net.name, net.source))
            .map_err(|e| e.to_string());
        (runtime, network)
    })
    .await
    .map_err(|e| Error::internal("checking runtime status", e))?;

    let runtime_condition = match &runtime {
        Ok(()) => condition(RUNTIME_READY, true, "", ""),
        Err(msg) => condition(RUNTIME_READY, false, "RuntimeHandlerNotReady", msg),
    };
    let network_condition = match &network {
        Ok(_) => condition(NETWORK_READY, true, "", ""),
        Err(msg) => condition(NETWORK_READY, false, "NetworkPluginNotReady", msg),
    };

    let mut info = HashMap::new();
    if req.verbose {
        let config_json = serde_json::to_string(&*daemon.config.get())
            .map_err(|e| Error::internal("encoding config", e))?;
        info.insert("config".to_owned(), config_json);
        let files: Vec<String> = daemon
            .config
            .files()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        info.insert(
            "configFiles".to_owned(),
            serde_json::json!(files).to_string(),
        );
        let network_json = match &network {
            Ok((name, source)) => serde_json::json!({"name": name, "configFile": source}),
            Err(msg) => serde_json::json!({"error": msg}),
        };
        info.insert("network".to_owned(), network_json.to_string());
    }

    Ok(v1::StatusResponse {
        status: Some(v1::RuntimeStatus {
            conditions: vec![runtime_condition, network_condition],
        }),
        info,
        runtime_handlers: runtime_handlers(daemon),
        features: Some(v1::RuntimeFeatures {
            // Set once the container side resolves supplemental groups.
            supplemental_groups_policy: false,
            user_namespaces_host_network: false,
            mount_options: false,
        }),
    })
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> v1::RuntimeCondition {
    v1::RuntimeCondition {
        r#type: kind.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
    }
}

/// The default handler (under the empty name, as the CRI asks) and each
/// configured one, with the features probed at start.
fn runtime_handlers(daemon: &Daemon) -> Vec<v1::RuntimeHandler> {
    let handler_features = daemon
        .handler_features
        .read()
        .unwrap_or_else(|p| p.into_inner());
    let features = |name: &str| {
        let f = handler_features.get(name).copied().unwrap_or_default();
        Some(v1::RuntimeHandlerFeatures {
            recursive_read_only_mounts: f.recursive_read_only_mounts,
            user_namespaces: f.user_namespaces,
        })
    };
    let config = daemon.config.get();
    let default = &config.runtime.default_handler;
    std::iter::once((String::new(), features(default)))
        .chain(
            config
                .runtime
                .handlers
                .keys()
                .map(|name| (name.clone(), features(name))),
        )
        .map(|(name, features)| v1::RuntimeHandler { name, features })
        .collect()
}

/// The CRI `RuntimeConfig` RPC: the cgroup driver the kubelet must match.
pub fn runtime_config(daemon: &Daemon) -> v1::RuntimeConfigResponse {
    let driver = match daemon.config.get().cgroup_manager {
        CgroupManager::Cgroupfs => v1::CgroupDriver::Cgroupfs,
        CgroupManager::Systemd => v1::CgroupDriver::Systemd,
    };
    v1::RuntimeConfigResponse {
        linux: Some(v1::LinuxRuntimeConfiguration {
            cgroup_driver: driver as i32,
        }),
    }
}
