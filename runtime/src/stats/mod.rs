//! Container and pod statistics for `ContainerStats` / `PodSandboxStats`:
//! where a container's cgroups are, what they say, and the pod's network
//! and writable-layer usage.
//!
//! - [`CgroupDirs`] finds a container's cgroup directories, from
//!   `/proc/<pid>/cgroup` of its init process or from the OCI
//!   `linux.cgroupsPath` runc was given, against the mount table. It
//!   handles cgroup v1, the unified (v2) hierarchy, and hybrid hosts with
//!   both.
//! - [`CgroupStats::read`] reads CPU, memory, swap, pids and OOM kill
//!   counters from those directories; every figure is an `Option`, `None`
//!   when the file is missing or unreadable (the cgroup is gone, the
//!   controller is not mounted, the kernel is too old).
//! - [`CpuRate`] turns cumulative CPU usage into the kubelet's
//!   `usage_nano_cores` over the window between two samples.
//! - [`netns_stats`] reads per-interface counters inside a pinned network
//!   namespace from a short-lived thread, so the caller's namespaces never
//!   change.
//! - [`fs_usage`] counts the bytes and inodes under a container's writable
//!   layer, bounded in the number of entries it visits; [`fs_capacity`]
//!   reports the size of the file system under it.
//! - [`CgroupLimits`] reads what the cgroup is limited to (the "spec"
//!   figures of cadvisor's metrics), [`ProcessStats`] counts its processes,
//!   threads and open files, [`read_io`] its block I/O per device.

mod cgroup;
mod fs;
mod io;
mod limits;
mod net;
mod procs;
mod rate;
mod usage;

use std::path::PathBuf;

pub use cgroup::{CgroupDirs, Mount, parse_mountinfo};
pub use fs::{FsCapacity, FsUsage, fs_capacity, fs_usage};
pub use io::{DeviceIo, read_io};
pub use limits::CgroupLimits;
pub use net::{InterfaceStats, NetworkStats, netns_stats, parse_net_dev};
pub use procs::ProcessStats;
pub use rate::CpuRate;
pub use usage::{CgroupStats, CpuStats, MemoryStats, PidsStats};

/// Why statistics could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// A file the statistics depend on could not be read or opened.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// Entering a network namespace failed.
    #[error("cannot enter network namespace {path}: {source}")]
    SetNs {
        /// The pinned namespace file.
        path: PathBuf,
        /// What `setns(2)` said.
        #[source]
        source: nix::Error,
    },
    /// The helper thread that reads inside a namespace could not be
    /// started.
    #[error("cannot start the network namespace reader thread: {source}")]
    Spawn {
        /// What `clone(2)` said.
        #[source]
        source: std::io::Error,
    },
    /// The helper thread that reads inside a namespace panicked.
    #[error("the network namespace reader thread panicked")]
    ThreadPanicked,
}

impl StatsError {
    pub(crate) fn read(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Read {
            path: path.into(),
            source,
        }
    }
}
