//! The command line. Every flag can also come from a `KRIO_*` environment
//! variable; flags win over the environment, which wins over config files.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{CgroupManager, LogLevel, Overrides, Sources};

/// krio: a Kubernetes container runtime serving the CRI over a unix socket.
#[derive(Debug, Parser)]
#[command(name = "krio", version, about)]
pub struct Cli {
    /// Main configuration file.
    #[arg(long, env = "KRIO_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Drop-in directory: every `*.toml` in it is applied in lexical order.
    #[arg(long, env = "KRIO_CONFIG_DIR", global = true, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Persistent state directory.
    #[arg(long, env = "KRIO_ROOT", global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Volatile state directory.
    #[arg(long, env = "KRIO_RUNROOT", global = true, value_name = "DIR")]
    pub runroot: Option<PathBuf>,
    /// CRI socket path (`unix://` prefix allowed).
    #[arg(long, env = "KRIO_LISTEN", global = true, value_name = "SOCKET")]
    pub listen: Option<String>,
    /// Log level.
    #[arg(long, env = "KRIO_LOG_LEVEL", global = true, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
    /// cgroup driver.
    #[arg(
        long,
        env = "KRIO_CGROUP_MANAGER",
        global = true,
        value_name = "DRIVER"
    )]
    pub cgroup_manager: Option<CgroupManager>,
    /// CNI network config directory.
    #[arg(long, env = "KRIO_CNI_CONFIG_DIR", global = true, value_name = "DIR")]
    pub cni_config_dir: Option<PathBuf>,
    /// CNI plugin directory (repeat for several; replaces the configured list).
    #[arg(
        long,
        env = "KRIO_CNI_PLUGIN_DIR",
        global = true,
        value_name = "DIR",
        value_delimiter = ':'
    )]
    pub cni_plugin_dir: Vec<PathBuf>,
    /// Registries configuration (containers-registries.conf v2).
    #[arg(long, env = "KRIO_REGISTRIES_CONF", global = true, value_name = "FILE")]
    pub registries_conf: Option<PathBuf>,
    /// Streaming server address.
    #[arg(long, env = "KRIO_STREAM_ADDRESS", global = true, value_name = "IP")]
    pub stream_address: Option<IpAddr>,
    /// Streaming server port (0: any free port).
    #[arg(long, env = "KRIO_STREAM_PORT", global = true, value_name = "PORT")]
    pub stream_port: Option<u16>,
    /// Runtime handler used when a pod names none.
    #[arg(
        long,
        env = "KRIO_DEFAULT_RUNTIME",
        global = true,
        value_name = "HANDLER"
    )]
    pub default_runtime: Option<String>,
    /// What to do; serve the CRI when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// krio's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the effective configuration as TOML, defaults included.
    Config,
    /// Print krio's version and the CRI version it serves.
    Version,
    /// Ask the running daemon for its view: conditions, handlers, pods,
    /// containers, images and the configuration in effect.
    Status(crate::status::StatusArgs),
    /// Internal: run a detached OCI runtime exec and wait for its process.
    #[command(hide = true)]
    ExecWait(crate::exec_wait::ExecWaitArgs),
    /// Internal: hold a pod's shared PID namespace (started by the daemon).
    #[command(hide = true)]
    PodInfra(crate::sandbox::infra::InfraArgs),
    /// Internal: create a pod's user namespace and its namespaces inside it.
    #[command(hide = true)]
    PodUserns(crate::sandbox::userns::UsernsArgs),
}

/// Default location of the main configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/krio/krio.toml";
/// Default drop-in directory.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/krio/krio.d";

impl Cli {
    /// The configuration files to read.
    pub fn sources(&self) -> Sources {
        Sources {
            file: self.config.clone().unwrap_or_else(|| DEFAULT_CONFIG.into()),
            required: self.config.is_some(),
            dir: self
                .config_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_CONFIG_DIR.into()),
        }
    }

    /// The values that win over the files.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            root: self.root.clone(),
            runroot: self.runroot.clone(),
            listen: self.listen.clone(),
            log_level: self.log_level,
            cgroup_manager: self.cgroup_manager,
            cni_config_dir: self.cni_config_dir.clone(),
            cni_plugin_dirs: self.cni_plugin_dir.clone(),
            registries_conf: self.registries_conf.clone(),
            stream_address: self.stream_address,
            stream_port: self.stream_port,
            default_runtime: self.default_runtime.clone(),
        }
    }
}
