//! Per-attachment arguments: the `CNI_ARGS` key-value pairs and the
//! capability arguments that become a plugin's `runtimeConfig`.
//!
//! The capability names and shapes follow the CNI conventions document
//! (`portMappings`, `bandwidth`, `dns`, `ipRanges`).

use serde::{Deserialize, Serialize};

/// Why an argument cannot be passed to a plugin.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// A `CNI_ARGS` key or value holds a character that would break the
    /// `K=V;K=V` encoding.
    #[error(
        "CNI_ARGS {key}={value:?} is invalid: keys and values must not contain ';', '=' or NUL"
    )]
    Invalid {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
}

/// One host port forwarded to the pod (the `portMappings` capability).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The port on the host.
    pub host_port: u16,
    /// The port in the pod.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`; serialised in lower case as plugins expect.
    #[serde(serialize_with = "lower_case")]
    pub protocol: String,
    /// The host address to bind, or empty for all.
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

fn lower_case<S: serde::Serializer>(s: &str, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&s.to_ascii_lowercase())
}

/// Traffic shaping for the pod (the `bandwidth` capability). Rates are in
/// bits per second, bursts in bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    /// Ingress rate limit.
    pub ingress_rate: u64,
    /// Ingress burst.
    pub ingress_burst: u64,
    /// Egress rate limit.
    pub egress_rate: u64,
    /// Egress burst.
    pub egress_burst: u64,
}

/// The pod's DNS settings (the `dns` capability).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Search domains.
    #[serde(default)]
    pub searches: Vec<String>,
    /// Resolver options.
    #[serde(default)]
    pub options: Vec<String>,
}

/// One address range for IPAM (the `ipRanges` capability, the shape of
/// host-local's `ranges`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpRange {
    /// The subnet in CIDR form.
    pub subnet: String,
    /// First address to allocate, if not the subnet's first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<String>,
    /// Last address to allocate, if not the subnet's last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    /// The gateway, if not the subnet's first address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// The capability arguments of one attachment; each one a plugin declares
/// in its `capabilities` goes into its `runtimeConfig`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityArgs {
    /// `portMappings`; not passed when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// `bandwidth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    /// `dns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// `ipRanges`; not passed when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_ranges: Vec<Vec<IpRange>>,
}

impl CapabilityArgs {
    /// The arguments as a JSON object keyed by capability name, holding
    /// only those that are set.
    pub fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            // A struct of strings and numbers always serialises to an object.
            _ => serde_json::Map::new(),
        }
    }
}

/// Encodes `CNI_ARGS` as `K=V;K=V`, refusing keys or values that would
/// break the encoding.
pub fn encode_cni_args(pairs: &[(String, String)]) -> Result<String, ArgsError> {
    let bad = |s: &str| s.contains([';', '=', '\0']);
    let mut parts = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        if key.is_empty() || bad(key) || bad(value) {
            return Err(ArgsError::Invalid {
                key: key.clone(),
                value: value.clone(),
            });
        }
        parts.push(format!("{key}={value}"));
    }
    Ok(parts.join(";"))
}

/// The `CNI_ARGS` pairs Kubernetes runtimes pass for a pod.
pub fn kubernetes_cni_args(
    namespace: &str,
    name: &str,
    infra_container_id: &str,
    uid: &str,
) -> Vec<(String, String)> {
    [
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", namespace),
        ("K8S_POD_NAME", name),
        ("K8S_POD_INFRA_CONTAINER_ID", infra_container_id),
        ("K8S_POD_UID", uid),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_args_encode_in_order() {
        let args = kubernetes_cni_args("default", "web-0", "abc123", "u-1");
        assert_eq!(
            encode_cni_args(&args).expect("valid"),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1"
        );
    }

    #[test]
    fn separators_in_values_are_rejected() {
        let args = kubernetes_cni_args("default", "x;IP=10.0.0.1", "abc", "u");
        let err = encode_cni_args(&args).expect_err("injection");
        assert!(err.to_string().contains("K8S_POD_NAME"), "{err}");
    }

    #[test]
    fn capability_args_serialise_per_convention() {
        let caps = CapabilityArgs {
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "TCP".into(),
                host_ip: String::new(),
            }],
            bandwidth: Some(Bandwidth {
                ingress_rate: 1000,
                ingress_burst: 10,
                egress_rate: 2000,
                egress_burst: 20,
            }),
            dns: None,
            ip_ranges: vec![vec![IpRange {
                subnet: "10.1.0.0/24".into(),
                range_start: None,
                range_end: None,
                gateway: Some("10.1.0.1".into()),
            }]],
        };
        let map = serde_json::Value::Object(caps.to_map());
        assert_eq!(
            map,
            serde_json::json!({
                "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
                "bandwidth": {"ingressRate": 1000, "ingressBurst": 10, "egressRate": 2000, "egressBurst": 20},
                "ipRanges": [[{"subnet": "10.1.0.0/24", "gateway": "10.1.0.1"}]],
            })
        );
    }
}
