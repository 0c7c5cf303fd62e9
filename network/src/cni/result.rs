//! Plugin results: parsing the ADD result of every supported CNI version
//! (0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0) into one normalised type.
//!
//! The versions differ little: before 1.0.0 each IP carries a `version`
//! ("4" or "6") and 1.0.0 dropped it; 1.1.0 adds nothing a runtime reads.
//! The raw JSON is kept beside the parsed form, since chaining and the
//! cache pass the plugin's own bytes on, not a re-encoding of them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::version;

/// Why a plugin's result could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// The result is not the JSON object the spec defines.
    #[error("malformed CNI result: {0}")]
    Malformed(#[source] serde_json::Error),
    /// The result's `cniVersion` is one krio does not read.
    #[error("CNI result version {0:?} is not supported")]
    UnsupportedVersion(String),
    /// An address, gateway or route is not valid.
    #[error("invalid {what} {value:?} in CNI result")]
    InvalidField {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// An IP refers to an interface the result does not list.
    #[error(
        "CNI result IP {address} refers to interface {index}, but there are {count} interfaces"
    )]
    BadInterfaceIndex {
        /// The IP.
        address: String,
        /// The index.
        index: usize,
        /// How many interfaces there are.
        count: usize,
    },
}

/// An address with a prefix length, e.g. `10.1.0.5/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length (at most 32 for IPv4, 128 for IPv6).
    pub prefix_len: u8,
}

impl FromStr for IpPrefix {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (addr, len) = s.split_once('/').ok_or(())?;
        let addr: IpAddr = addr.parse().map_err(|_| ())?;
        let prefix_len: u8 = len.parse().map_err(|_| ())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(());
        }
        Ok(IpPrefix { addr, prefix_len })
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// An interface the attachment created or uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its hardware address, if it has one.
    pub mac: Option<String>,
    /// Its MTU, if reported.
    pub mtu: Option<u32>,
    /// The netns path it lives in; `None` for a host interface.
    pub sandbox: Option<String>,
    /// A socket for the interface (vhost-user and the like), if any.
    pub socket_path: Option<String>,
    /// The PCI device of the interface, if any.
    pub pci_id: Option<String>,
}

/// An address assigned by the attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// The address and prefix.
    pub address: IpPrefix,
    /// The subnet's gateway, if any.
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`] of the interface it is on.
    pub interface: Option<usize>,
}

/// A route the attachment created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination.
    pub dst: IpPrefix,
    /// Next hop, if set.
    pub gw: Option<IpAddr>,
    /// Path MTU (1.1.0).
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0).
    pub advmss: Option<u32>,
    /// Priority, lower is preferred (1.1.0).
    pub priority: Option<u32>,
    /// Routing table (1.1.0).
    pub table: Option<u32>,
    /// Scope (1.1.0).
    pub scope: Option<u32>,
}

/// DNS settings a plugin reported.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DnsResult {
    /// Name servers, in priority order.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default)]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default)]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default)]
    pub options: Vec<String>,
}

/// The result of an ADD, whatever its version.
#[derive(Debug, Clone, PartialEq)]
pub struct CniResult {
    /// The version the plugin answered in.
    pub cni_version: String,
    /// Interfaces.
    pub interfaces: Vec<Interface>,
    /// Addresses.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<Route>,
    /// DNS settings.
    pub dns: DnsResult,
    /// The result exactly as the plugin wrote it.
    pub raw: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResult {
    #[serde(default)]
    cni_version: Option<String>,
    #[serde(default)]
    interfaces: Vec<RawInterface>,
    #[serde(default)]
    ips: Vec<RawIp>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    dns: Option<DnsResult>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawInterface {
    #[serde(default)]
    name: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    sandbox: Option<String>,
    #[serde(default)]
    socket_path: Option<String>,
    #[serde(default, rename = "pciID")]
    pci_id: Option<String>,
}

#[derive(Deserialize)]
struct RawIp {
    /// "4" or "6" before 1.0.0.
    #[serde(default)]
    version: Option<String>,
    address: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    advmss: Option<u32>,
    #[serde(default)]
    priority: Option<u32>,
    #[serde(default)]
    table: Option<u32>,
    #[serde(default)]
    scope: Option<u32>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn parse_addr(what: &'static str, value: &str) -> Result<IpAddr, ResultError> {
    value.parse().map_err(|_| ResultError::InvalidField {
        what,
        value: value.to_string(),
    })
}

fn parse_prefix(what: &'static str, value: &str) -> Result<IpPrefix, ResultError> {
    value.parse().map_err(|()| ResultError::InvalidField {
        what,
        value: value.to_string(),
    })
}

fn parse_opt_addr(what: &'static str, v: Option<String>) -> Result<Option<IpAddr>, ResultError> {
    non_empty(v).map(|v| parse_addr(what, &v)).transpose()
}

impl CniResult {
    /// Parses a result; `default_version` is used when the result carries
    /// no `cniVersion` (it then must be the version of the request).
    pub fn parse(raw: serde_json::Value, default_version: &str) -> Result<Self, ResultError> {
        let parsed: RawResult =
            serde_json::from_value(raw.clone()).map_err(ResultError::Malformed)?;
        let cni_version =
            non_empty(parsed.cni_version).unwrap_or_else(|| default_version.to_string());
        if !version::at_least(&cni_version, "0.3.0")
            || !super::config::SUPPORTED_VERSIONS.contains(&cni_version.as_str())
        {
            return Err(ResultError::UnsupportedVersion(cni_version));
        }
        let interfaces: Vec<Interface> = parsed
            .interfaces
            .into_iter()
            .map(|i| Interface {
                name: i.name,
                mac: non_empty(i.mac),
                mtu: i.mtu,
                sandbox: non_empty(i.sandbox),
                socket_path: non_empty(i.socket_path),
                pci_id: non_empty(i.pci_id),
            })
            .collect();
        let mut ips = Vec::with_capacity(parsed.ips.len());
        for ip in parsed.ips {
            let address = parse_prefix("address", &ip.address)?;
            if let Some(v) = non_empty(ip.version) {
                let matches = match v.as_str() {
                    "4" => address.addr.is_ipv4(),
                    "6" => address.addr.is_ipv6(),
                    _ => false,
                };
                if !matches {
                    return Err(ResultError::InvalidField {
                        what: "IP version",
                        value: format!("{v} for {}", ip.address),
                    });
                }
            }
            if let Some(index) = ip.interface
                && index >= interfaces.len()
            {
                return Err(ResultError::BadInterfaceIndex {
                    address: ip.address,
                    index,
                    count: interfaces.len(),
                });
            }
            ips.push(IpConfig {
                address,
                gateway: parse_opt_addr("gateway", ip.gateway)?,
                interface: ip.interface,
            });
        }
        let mut routes = Vec::with_capacity(parsed.routes.len());
        for r in parsed.routes {
            routes.push(Route {
                dst: parse_prefix("route dst", &r.dst)?,
                gw: parse_opt_addr("route gw", r.gw)?,
                mtu: r.mtu,
                advmss: r.advmss,
                priority: r.priority,
                table: r.table,
                scope: r.scope,
            });
        }
        Ok(CniResult {
            cni_version,
            interfaces,
            ips,
            routes,
            dns: parsed.dns.unwrap_or_default(),
            raw,
        })
    }

    /// Parses a plugin's stdout.
    pub fn from_slice(bytes: &[u8], default_version: &str) -> Result<Self, ResultError> {
        let raw: serde_json::Value =
            serde_json::from_slice(bytes).map_err(ResultError::Malformed)?;
        Self::parse(raw, default_version)
    }

    /// The pod's IPs, without duplicates: first those on the container's
    /// interface `ifname` (the interface with that name inside a sandbox),
    /// then those on any other sandbox interface or on no stated interface.
    /// Host-side addresses are left out. Result order is kept otherwise, so
    /// the network config decides which family is the primary one.
    pub fn pod_ips(&self, ifname: &str) -> Vec<IpAddr> {
        let is_container_if = |i: Option<usize>| {
            i.and_then(|i| self.interfaces.get(i))
                .is_some_and(|iface| iface.sandbox.is_some() && iface.name == ifname)
        };
        let is_host_if = |i: Option<usize>| {
            i.and_then(|i| self.interfaces.get(i))
                .is_some_and(|iface| iface.sandbox.is_none())
        };
        let mut out: Vec<IpAddr> = Vec::new();
        let first = self.ips.iter().filter(|ip| is_container_if(ip.interface));
        let rest = self
            .ips
            .iter()
            .filter(|ip| !is_container_if(ip.interface) && !is_host_if(ip.interface));
        for ip in first.chain(rest) {
            if !out.contains(&ip.address.addr) {
                out.push(ip.address.addr);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str, default_version: &str) -> CniResult {
        CniResult::from_slice(json.as_bytes(), default_version).expect("valid result")
    }

    const BRIDGE_031: &str = r#"{
        "cniVersion": "0.3.1",
        "interfaces": [
            {"name": "cni0", "mac": "aa:bb:cc:00:00:01"},
            {"name": "veth1234", "mac": "aa:bb:cc:00:00:02"},
            {"name": "eth0", "mac": "aa:bb:cc:00:00:03", "sandbox": "/run/krio/ns/net/abc"}
        ],
        "ips": [
            {"version": "4", "interface": 2, "address": "10.22.0.5/16", "gateway": "10.22.0.1"}
        ],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {}
    }"#;

    #[test]
    fn parses_0_3_1_bridge_result() {
        let r = parse(BRIDGE_031, "0.3.1");
        assert_eq!(r.cni_version, "0.3.1");
        assert_eq!(r.interfaces.len(), 3);
        assert_eq!(
            r.interfaces[2].sandbox.as_deref(),
            Some("/run/krio/ns/net/abc")
        );
        assert_eq!(r.interfaces[0].sandbox, None);
        assert_eq!(r.ips[0].address.to_string(), "10.22.0.5/16");
        assert_eq!(r.ips[0].gateway, Some("10.22.0.1".parse().expect("ip")));
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(r.routes[0].dst.to_string(), "0.0.0.0/0");
        assert_eq!(r.routes[0].gw, None);
        assert_eq!(
            r.pod_ips("eth0"),
            vec!["10.22.0.5".parse::<IpAddr>().expect("ip")]
        );
    }

    #[test]
    fn parses_0_3_0_and_0_4_0_results() {
        for v in ["0.3.0", "0.4.0"] {
            let json = BRIDGE_031.replace("0.3.1", v);
            assert_eq!(parse(&json, v).cni_version, v);
        }
    }

    #[test]
    fn parses_1_0_0_dual_stack_result_with_container_ips_first() {
        let r = parse(
            r#"{
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:00:00:01"},
                {"name": "vethx", "mac": "aa:bb:cc:00:00:02", "mtu": 1500},
                {"name": "eth0", "mac": "aa:bb:cc:00:00:03", "sandbox": "/ns"}
            ],
            "ips": [
                {"interface": 0, "address": "10.22.0.1/16"},
                {"interface": 2, "address": "10.22.0.5/16", "gateway": "10.22.0.1"},
                {"interface": 2, "address": "fd00:22::5/64", "gateway": "fd00:22::1"}
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.22.0.1"}, {"dst": "::/0"}],
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
        }"#,
            "1.0.0",
        );
        assert_eq!(r.interfaces[1].mtu, Some(1500));
        assert_eq!(
            r.pod_ips("eth0"),
            vec![
                "10.22.0.5".parse::<IpAddr>().expect("ip"),
                "fd00:22::5".parse::<IpAddr>().expect("ip"),
            ]
        );
        assert_eq!(r.routes[0].gw, Some("10.22.0.1".parse().expect("ip")));
        assert_eq!(r.dns.nameservers, vec!["10.96.0.10"]);
        assert_eq!(r.dns.search, vec!["svc.cluster.local"]);
    }

    #[test]
    fn parses_1_1_0_route_attributes() {
        let r = parse(
            r#"{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/ns","pciID":"0000:04:00.5"}],
                "ips":[{"address":"10.0.0.2/24","interface":0}],
                "routes":[{"dst":"10.1.0.0/16","gw":"10.0.0.1","mtu":1400,"advmss":1360,"priority":10,"table":100,"scope":0}]}"#,
            "1.1.0",
        );
        assert_eq!(r.interfaces[0].pci_id.as_deref(), Some("0000:04:00.5"));
        let route = &r.routes[0];
        assert_eq!(
            (
                route.mtu,
                route.advmss,
                route.priority,
                route.table,
                route.scope
            ),
            (Some(1400), Some(1360), Some(10), Some(100), Some(0))
        );
    }

    #[test]
    fn ips_without_interface_still_count_for_the_pod() {
        let r = parse(
            r#"{"cniVersion":"1.0.0","ips":[{"address":"fd00::2/64"},{"address":"10.0.0.2/24"}]}"#,
            "1.0.0",
        );
        assert_eq!(
            r.pod_ips("eth0"),
            vec![
                "fd00::2".parse::<IpAddr>().expect("ip"),
                "10.0.0.2".parse::<IpAddr>().expect("ip"),
            ]
        );
    }

    #[test]
    fn missing_version_uses_the_request_version() {
        let r = parse(r#"{"ips":[{"address":"10.0.0.2/24"}]}"#, "1.0.0");
        assert_eq!(r.cni_version, "1.0.0");
    }

    #[test]
    fn rejects_bad_results() {
        let bad = [
            (
                r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24"}}"#,
                "not supported",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.300/24"}]}"#,
                "address",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.3"}]}"#,
                "address",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.3/33"}]}"#,
                "address",
            ),
            (
                r#"{"cniVersion":"0.3.1","ips":[{"version":"6","address":"10.0.0.3/24"}]}"#,
                "IP version",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.3/24","interface":1}]}"#,
                "interface 1",
            ),
            (r#"[1,2]"#, "malformed"),
        ];
        for (json, want) in bad {
            let err = CniResult::from_slice(json.as_bytes(), "1.0.0").expect_err(json);
            assert!(err.to_string().contains(want), "{json}: {err}");
        }
    }
}
