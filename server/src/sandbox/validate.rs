//! Checking a `RunPodSandboxRequest` before anything is created: every
//! problem is an `InvalidArgument` naming the field.

use std::collections::BTreeMap;

use krio_network::sysctl::{self, HostNamespaces};
use krio_proto::v1;

use crate::config::Config;
use crate::error::Error;

/// A request that passed validation, with what krio derives from it.
#[derive(Debug, Clone)]
pub struct ValidPod {
    /// The config as sent.
    pub config: v1::PodSandboxConfig,
    /// The kubelet's unique name for this pod attempt.
    pub name_key: String,
    /// The runtime handler (the default one when the request named none).
    pub handler: String,
    /// The pod uses the node's network (and UTS) namespace.
    pub host_network: bool,
    /// The pod uses the node's IPC namespace.
    pub host_ipc: bool,
    /// The pod's containers share one PID namespace (held by an infra process).
    pub shared_pid: bool,
    /// Sysctls to apply, sorted by key.
    pub sysctls: Vec<(String, String)>,
    /// The pod's own user namespace mappings (uids, gids), if it has one.
    pub userns: Option<super::userns::Mappings>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

/// Validates a request against the configuration.
pub fn validate(req: &v1::RunPodSandboxRequest, config: &Config) -> Result<ValidPod, Error> {
    let pod = req
        .config
        .clone()
        .ok_or_else(|| invalid("config is required"))?;
    let metadata = pod
        .metadata
        .clone()
        .ok_or_else(|| invalid("config.metadata is required"))?;
    for (field, value) in [
        ("name", &metadata.name),
        ("namespace", &metadata.namespace),
        ("uid", &metadata.uid),
    ] {
        if value.is_empty() {
            return Err(invalid(format!("config.metadata.{field} is required")));
        }
        if value.len() > 253 || value.contains(['/', '\0', '\n']) || value == "." || value == ".." {
            return Err(invalid(format!(
                "config.metadata.{field} {value:?} is not a valid name"
            )));
        }
    }
    let name_key = format!(
        "{}_{}_{}_{}",
        metadata.name, metadata.namespace, metadata.uid, metadata.attempt
    );

    let handler = if req.runtime_handler.is_empty() {
        config.runtime.default_handler.clone()
    } else {
        req.runtime_handler.clone()
    };
    if !config.runtime.handlers.contains_key(&handler) {
        let known: Vec<&str> = config.runtime.handlers.keys().map(String::as_str).collect();
        return Err(invalid(format!(
            "runtime_handler {handler:?} is not configured (configured: {})",
            known.join(", ")
        )));
    }

    if !pod.hostname.is_empty() && !valid_hostname(&pod.hostname) {
        return Err(invalid(format!(
            "config.hostname {:?} is not a valid hostname",
            pod.hostname
        )));
    }
    if !pod.log_directory.is_empty() && !pod.log_directory.starts_with('/') {
        return Err(invalid(format!(
            "config.log_directory {:?} must be absolute",
            pod.log_directory
        )));
    }

    let linux = pod.linux.clone().unwrap_or_default();
    let ns = linux
        .security_context
        .as_ref()
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let mode = |field: &str,
                value: i32,
                allowed: &[v1::NamespaceMode]|
     -> Result<v1::NamespaceMode, Error> {
        let m = v1::NamespaceMode::try_from(value).map_err(|_| {
            invalid(format!(
                "namespace_options.{field} has unknown mode {value}"
            ))
        })?;
        if allowed.contains(&m) {
            Ok(m)
        } else {
            Err(invalid(format!(
                "namespace_options.{field} = {} is not supported for a pod sandbox",
                m.as_str_name()
            )))
        }
    };
    use v1::NamespaceMode::{Container, Node, Pod, Target};
    let network = mode("network", ns.network, &[Pod, Node])?;
    let ipc = mode("ipc", ns.ipc, &[Pod, Node])?;
    let pid = mode("pid", ns.pid, &[Pod, Container, Node, Target])?;
    let userns = super::userns::validate(ns.userns_options.as_ref(), &ns)?;
    let host_network = network == Node;
    let host_ipc = ipc == Node;

    let host = HostNamespaces {
        network: host_network,
        ipc: host_ipc,
    };
    let sorted: BTreeMap<String, String> = linux.sysctls.clone().into_iter().collect();
    for (key, value) in &sorted {
        sysctl::validate(key, value, host)
            .map_err(|e| invalid(format!("config.linux.sysctls: {e}")))?;
    }

    for (i, pm) in pod.port_mappings.iter().enumerate() {
        v1::Protocol::try_from(pm.protocol).map_err(|_| {
            invalid(format!(
                "port_mappings[{i}].protocol {} is unknown",
                pm.protocol
            ))
        })?;
        if !(1..=65535).contains(&pm.container_port) {
            return Err(invalid(format!(
                "port_mappings[{i}].container_port {} is out of range 1-65535",
                pm.container_port
            )));
        }
        if !(0..=65535).contains(&pm.host_port) {
            return Err(invalid(format!(
                "port_mappings[{i}].host_port {} is out of range 0-65535",
                pm.host_port
            )));
        }
        if !pm.host_ip.is_empty() && pm.host_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(format!(
                "port_mappings[{i}].host_ip {:?} is not an IP address",
                pm.host_ip
            )));
        }
    }

    if let Some(dns) = &pod.dns_config {
        for server in &dns.servers {
            if server.parse::<std::net::IpAddr>().is_err() {
                return Err(invalid(format!(
                    "dns_config.servers: {server:?} is not an IP address"
                )));
            }
        }
        for entry in dns.searches.iter().chain(&dns.options) {
            if entry.contains(['\n', '\0']) {
                return Err(invalid(format!("dns_config: {entry:?} contains a newline")));
            }
        }
    }

    // Checked here so a bad value fails the pod before anything exists.
    super::bandwidth::from_annotations(&pod.annotations)?;

    Ok(ValidPod {
        config: pod,
        name_key,
        handler,
        host_network,
        host_ipc,
        shared_pid: pid == Pod,
        sysctls: sorted.into_iter().collect(),
        userns,
    })
}

/// RFC 1123 hostname: dot-separated labels of letters, digits and '-'.
fn valid_hostname(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> v1::RunPodSandboxRequest {
        v1::RunPodSandboxRequest {
            config: Some(v1::PodSandboxConfig {
                metadata: Some(v1::PodSandboxMetadata {
                    name: "web".into(),
                    uid: "u1".into(),
                    namespace: "default".into(),
                    attempt: 2,
                }),
                hostname: "web-0".into(),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        }
    }

    fn err_of(req: &v1::RunPodSandboxRequest) -> String {
        match validate(req, &Config::default()) {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn a_good_request_passes_with_the_default_handler() {
        let pod = validate(&request(), &Config::default()).expect("valid");
        assert_eq!(pod.handler, "runc");
        assert_eq!(pod.name_key, "web_default_u1_2");
        assert!(!pod.host_network);
    }

    #[test]
    fn missing_metadata_fields_are_named() {
        let mut req = request();
        req.config
            .as_mut()
            .expect("config")
            .metadata
            .as_mut()
            .expect("md")
            .uid
            .clear();
        assert!(err_of(&req).contains("metadata.uid"));
        req.config.as_mut().expect("config").metadata = None;
        assert!(err_of(&req).contains("metadata is required"));
        req.config = None;
        assert!(err_of(&req).contains("config is required"));
    }

    #[test]
    fn unknown_handler_lists_the_configured_ones() {
        let mut req = request();
        req.runtime_handler = "kata".into();
        let msg = err_of(&req);
        assert!(
            msg.contains("\"kata\"") && msg.contains("crun, runc"),
            "{msg}"
        );
    }

    #[test]
    fn unsafe_sysctl_and_unknown_namespace_mode_are_refused() {
        let mut req = request();
        let linux = req
            .config
            .as_mut()
            .expect("config")
            .linux
            .get_or_insert_default();
        linux.sysctls.insert("kernel.panic".into(), "1".into());
        assert!(err_of(&req).contains("kernel.panic"));

        let mut req = request();
        let linux = req
            .config
            .as_mut()
            .expect("config")
            .linux
            .get_or_insert_default();
        linux
            .security_context
            .get_or_insert_default()
            .namespace_options = Some(v1::NamespaceOption {
            network: 7,
            ..Default::default()
        });
        assert!(err_of(&req).contains("unknown mode 7"));

        let mut req = request();
        let linux = req
            .config
            .as_mut()
            .expect("config")
            .linux
            .get_or_insert_default();
        linux
            .security_context
            .get_or_insert_default()
            .namespace_options = Some(v1::NamespaceOption {
            network: v1::NamespaceMode::Container as i32,
            ..Default::default()
        });
        assert!(err_of(&req).contains("CONTAINER is not supported"));
    }

    #[test]
    fn host_network_forbids_net_sysctls() {
        let mut req = request();
        let linux = req
            .config
            .as_mut()
            .expect("config")
            .linux
            .get_or_insert_default();
        linux
            .security_context
            .get_or_insert_default()
            .namespace_options = Some(v1::NamespaceOption {
            network: v1::NamespaceMode::Node as i32,
            ..Default::default()
        });
        linux
            .sysctls
            .insert("net.ipv4.ip_forward".into(), "1".into());
        assert!(err_of(&req).contains("host network"));
    }

    #[test]
    fn bad_ports_hostnames_and_dns_are_refused() {
        let mut req = request();
        req.config
            .as_mut()
            .expect("config")
            .port_mappings
            .push(v1::PortMapping {
                container_port: 0,
                ..Default::default()
            });
        assert!(err_of(&req).contains("container_port 0"));

        let mut req = request();
        req.config.as_mut().expect("config").hostname = "bad_host!".into();
        assert!(err_of(&req).contains("hostname"));

        let mut req = request();
        req.config.as_mut().expect("config").dns_config = Some(v1::DnsConfig {
            servers: vec!["not-an-ip".into()],
            ..Default::default()
        });
        assert!(err_of(&req).contains("not-an-ip"));
    }
}
