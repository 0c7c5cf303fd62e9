//! The Container Network Interface, as the CNI specification defines it.

mod config;
mod version;

pub use config::{ConfigError, NetworkConfigList, load_default_network};
