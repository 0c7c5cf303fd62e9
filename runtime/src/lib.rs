//! krio's container side: OCI runtime handlers, OCI spec generation, the
//! container lifecycle and the per-container monitor.

pub mod handler;
pub mod idmap;
pub mod monitor;
pub mod oci;
pub mod spec;
pub mod stats;
