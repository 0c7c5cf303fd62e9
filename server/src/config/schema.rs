//! The configuration schema. Every key has a default, so krio runs with no
//! file at all; unknown keys are errors.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use krio_runtime::handler::HandlerConfig;
use serde::{Deserialize, Serialize};

/// The effective configuration of one krio daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Persistent state: the store, blobs, layers, container dirs.
    pub root: PathBuf,
    /// Volatile state: pinned namespaces, monitor sockets, exit files.
    pub runroot: PathBuf,
    /// The CRI socket (a path; `unix://` prefixes are accepted on flags).
    pub listen: PathBuf,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// The cgroup driver, reported to the kubelet through `RuntimeConfig`.
    pub cgroup_manager: CgroupManager,
    /// Pod networking.
    pub cni: CniConfig,
    /// Images and registries.
    pub image: ImageConfig,
    /// The streaming server for exec, attach and port-forward.
    pub streaming: StreamingConfig,
    /// OCI runtime handlers.
    pub runtime: RuntimeConfig,
    /// krio's own Prometheus metrics.
    pub metrics: MetricsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            root: "/var/lib/krio".into(),
            runroot: "/run/krio".into(),
            listen: "/run/krio/krio.sock".into(),
            log_level: LogLevel::Info,
            cgroup_manager: CgroupManager::Cgroupfs,
            cni: CniConfig::default(),
            image: ImageConfig::default(),
            streaming: StreamingConfig::default(),
            runtime: RuntimeConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// Log verbosity, from most to least verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything, including per-RPC traces.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Problems that krio worked around.
    Warn,
    /// Failures only.
    Error,
}

impl LogLevel {
    /// The level as a tracing filter directive.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// The cgroup driver. Only `cgroupfs` works on hosts without systemd as PID 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CgroupManager {
    /// Write cgroups through the cgroup filesystem.
    Cgroupfs,
    /// Ask systemd for cgroups (transient scopes).
    Systemd,
}

/// Pod networking (`[cni]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CniConfig {
    /// Where network configs (`.conflist`, `.conf`, `.json`) are read from.
    pub conf_dir: PathBuf,
    /// Where plugin binaries are looked up, in order.
    pub plugin_dirs: Vec<PathBuf>,
}

impl Default for CniConfig {
    fn default() -> Self {
        Self {
            conf_dir: "/etc/cni/net.d".into(),
            plugin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
        }
    }
}

/// Images and registries (`[image]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageConfig {
    /// Registries configuration in the containers-registries.conf v2 format.
    pub registries_conf: PathBuf,
    /// Credentials in the containers `auth.json` / docker `config.json` format.
    pub auth_file: PathBuf,
    /// Per-registry CAs, containers-certs.d style: `DIR/HOST:PORT/*.crt`.
    pub certs_dir: PathBuf,
    /// Bound on the uncompressed bytes one pull may unpack; a layer that
    /// crosses it (a gzip bomb) is refused.
    pub max_unpacked_bytes: u64,
    /// The pause image, reported as pinned and never garbage-collected.
    pub pause_image: String,
}

impl Default for ImageConfig {
    fn default() -> Self {
        Self {
            registries_conf: "/etc/containers/registries.conf".into(),
            auth_file: "/etc/krio/auth.json".into(),
            certs_dir: "/etc/containers/certs.d".into(),
            max_unpacked_bytes: krio_image::DEFAULT_MAX_UNPACKED_BYTES,
            pause_image: "registry.k8s.io/pause:3.9".into(),
        }
    }
}

/// The streaming server (`[streaming]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// Address to listen on.
    pub address: IpAddr,
    /// Port to listen on; 0 picks a free one.
    pub port: u16,
    /// TLS certificate (PEM); TLS is on when both it and `tls_key` are set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Close an exec, attach or port-forward connection after this long
    /// with no traffic either way (`"4h"`, `"30m"`); `"0s"` never does.
    #[serde(with = "duration_text")]
    pub stream_idle_timeout: Duration,
    /// Time a client has after connecting to finish the TLS handshake,
    /// send its request and open the streams it asked for.
    #[serde(with = "duration_text")]
    pub stream_creation_timeout: Duration,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self {
            address: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            tls_cert: None,
            tls_key: None,
            // The kubelet's defaults.
            stream_idle_timeout: Duration::from_secs(4 * 60 * 60),
            stream_creation_timeout: Duration::from_secs(30),
        }
    }
}

/// Durations as human-readable text in the config file (`"30s"`,
/// `"1h 30m"`).
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Writes `"4h"`, `"30s"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Reads `"4h"`, `"90s"`, `"1h 30m"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            D::Error::custom(format!(
                "invalid duration {text:?} ({e}); write e.g. \"30s\" or \"4h\""
            ))
        })
    }
}

/// OCI runtime handlers (`[runtime]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// The handler used when a pod names none.
    pub default_handler: String,
    /// RuntimeClass handler name → OCI runtime (`[runtime.handlers.NAME]`).
    pub handlers: BTreeMap<String, HandlerConfig>,
    /// The `krio-monitor` binary; by default the one beside `krio`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor_path: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let mut handlers = BTreeMap::new();
        handlers.insert("runc".to_owned(), HandlerConfig::new("/usr/sbin/runc"));
        handlers.insert("crun".to_owned(), HandlerConfig::new("/usr/bin/crun"));
        Self {
            default_handler: "runc".to_owned(),
            handlers,
            monitor_path: None,
        }
    }
}

/// krio's own Prometheus metrics (`[metrics]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` over HTTP.
    pub enable: bool,
    /// Address and port of the endpoint (`127.0.0.1:9537`).
    pub address: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enable: false,
            address: SocketAddr::from(([127, 0, 0, 1], 9537)),
        }
    }
}
