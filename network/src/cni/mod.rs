//! The Container Network Interface, as the CNI specification defines it:
//! config loading ([`config`]), plugin execution ([`exec`]), results
//! ([`result`]), the operations on a network ([`ops`]), the attachment cache
//! ([`cache`]) and the daemon's façade ([`Cni`]).

pub mod args;
pub mod cache;
mod config;
pub mod exec;
#[cfg(test)]
mod fake;
pub mod ops;
mod pod;
pub mod result;
mod version;

pub use args::{Bandwidth, CapabilityArgs, Dns, IpRange, PortMapping};
pub use cache::{Cache, CacheEntry, CacheError};
pub use config::{ConfigError, NetworkConfigList, load_default_network};
pub use exec::{CniCommand, ExecError, PluginError, PluginExec, PluginOutput, RealExec};
pub use ops::OpError;
pub use pod::{CachedAttachment, Cni, CniError, CniOptions, PodNetwork, PodNetworkStatus};
pub use result::{CniResult, DnsResult, Interface, IpConfig, IpPrefix, Route};
