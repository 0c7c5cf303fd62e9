//! The metric families krio reports through `ListPodSandboxMetrics`: the
//! cadvisor names, help texts and labels that the kubelet's CRI metrics
//! collector turns into its `/metrics/cadvisor` endpoint.
//!
//! Every family carries the [`BASE_LABELS`] first, then its own. Only
//! families krio fills are listed: a described family without values
//! would look broken to a scraper.

use krio_proto::v1::{self, MetricType};

/// The labels every family starts with, in this order.
pub const BASE_LABELS: [&str; 5] = ["container", "id", "image", "namespace", "pod"];

/// One metric family.
#[derive(Debug)]
pub struct Family {
    /// The metric name.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// Labels after the base ones.
    pub labels: &'static [&'static str],
    /// Counter or gauge.
    pub kind: MetricType,
}

impl Family {
    /// The descriptor `ListMetricDescriptors` returns.
    pub fn descriptor(&self) -> v1::MetricDescriptor {
        v1::MetricDescriptor {
            name: self.name.to_owned(),
            help: self.help.to_owned(),
            label_keys: BASE_LABELS
                .iter()
                .chain(self.labels)
                .map(|l| (*l).to_owned())
                .collect(),
        }
    }
}

macro_rules! families {
    ($($id:ident = $name:literal, $kind:ident, [$($label:literal),*], $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $id: Family = Family {
                name: $name,
                help: $help,
                labels: &[$($label),*],
                kind: MetricType::$kind,
            };
        )*
        /// Every family, in the order they are described.
        pub const ALL: &[&Family] = &[$(&$id),*];
    };
}

families! {
    CPU_USAGE = "container_cpu_usage_seconds_total", Counter, ["cpu"],
        "Cumulative CPU time consumed in seconds.";
    CPU_USER = "container_cpu_user_seconds_total", Counter, [],
        "Cumulative user CPU time consumed in seconds.";
    CPU_SYSTEM = "container_cpu_system_seconds_total", Counter, [],
        "Cumulative system CPU time consumed in seconds.";
    CFS_PERIODS = "container_cpu_cfs_periods_total", Counter, [],
        "Number of elapsed CFS enforcement period intervals.";
    CFS_THROTTLED_PERIODS = "container_cpu_cfs_throttled_periods_total", Counter, [],
        "Number of CFS period intervals in which the container was throttled.";
    CFS_THROTTLED_SECONDS = "container_cpu_cfs_throttled_seconds_total", Counter, [],
        "Total time the container has been throttled, in seconds.";
    MEMORY_USAGE = "container_memory_usage_bytes", Gauge, [],
        "Current memory usage in bytes, page cache included.";
    MEMORY_WORKING_SET = "container_memory_working_set_bytes", Gauge, [],
        "Current working set in bytes (usage minus inactive file pages).";
    MEMORY_RSS = "container_memory_rss", Gauge, [],
        "Size of anonymous memory (RSS) in bytes.";
    MEMORY_CACHE = "container_memory_cache", Gauge, [],
        "Number of bytes of page cache memory.";
    MEMORY_MAPPED_FILE = "container_memory_mapped_file", Gauge, [],
        "Size of memory-mapped files in bytes.";
    MEMORY_KERNEL = "container_memory_kernel_usage", Gauge, [],
        "Size of kernel memory allocated in bytes.";
    MEMORY_SWAP = "container_memory_swap", Gauge, [],
        "Container swap usage in bytes.";
    MEMORY_MAX_USAGE = "container_memory_max_usage_bytes", Gauge, [],
        "Maximum memory usage recorded in bytes.";
    MEMORY_FAILCNT = "container_memory_failcnt", Counter, [],
        "Number of times memory usage hit the limit.";
    MEMORY_FAILURES = "container_memory_failures_total", Counter, ["failure_type", "scope"],
        "Cumulative count of memory allocation failures (page faults), by type and scope.";
    OOM_EVENTS = "container_oom_events_total", Counter, [],
        "Count of out-of-memory kills observed for the container.";
    PROCESSES = "container_processes", Gauge, [],
        "Number of processes running inside the container.";
    THREADS = "container_threads", Gauge, [],
        "Number of threads running inside the container.";
    THREADS_MAX = "container_threads_max", Gauge, [],
        "Maximum number of threads allowed inside the container; 0 means no limit.";
    FILE_DESCRIPTORS = "container_file_descriptors", Gauge, [],
        "Number of open file descriptors of the container's processes.";
    SOCKETS = "container_sockets", Gauge, [],
        "Number of open sockets of the container's processes.";
    SPEC_CPU_PERIOD = "container_spec_cpu_period", Gauge, [],
        "CPU CFS period of the container, in microseconds.";
    SPEC_CPU_QUOTA = "container_spec_cpu_quota", Gauge, [],
        "CPU CFS quota of the container, in microseconds per period; 0 means no quota.";
    SPEC_CPU_SHARES = "container_spec_cpu_shares", Gauge, [],
        "CPU shares of the container.";
    SPEC_MEMORY_LIMIT = "container_spec_memory_limit_bytes", Gauge, [],
        "Memory limit of the container in bytes; 0 means no limit.";
    SPEC_MEMORY_RESERVATION = "container_spec_memory_reservation_limit_bytes", Gauge, [],
        "Memory reservation (soft limit) of the container in bytes; 0 means none.";
    SPEC_MEMORY_SWAP_LIMIT = "container_spec_memory_swap_limit_bytes", Gauge, [],
        "Memory swap limit of the container in bytes (memory plus swap on cgroup v1); 0 means no limit.";
    START_TIME = "container_start_time_seconds", Gauge, [],
        "Start time of the container since the Unix epoch, in seconds.";
    LAST_SEEN = "container_last_seen", Gauge, [],
        "Last time the container was seen by krio, since the Unix epoch, in seconds.";
    FS_USAGE = "container_fs_usage_bytes", Gauge, [],
        "Bytes used by the container's writable layer.";
    FS_LIMIT = "container_fs_limit_bytes", Gauge, [],
        "Size in bytes of the file system holding the container's writable layer.";
    FS_INODES_TOTAL = "container_fs_inodes_total", Gauge, [],
        "Number of inodes of the file system holding the container's writable layer.";
    FS_INODES_FREE = "container_fs_inodes_free", Gauge, [],
        "Number of free inodes of the file system holding the container's writable layer.";
    FS_READS_BYTES = "container_fs_reads_bytes_total", Counter, ["device"],
        "Cumulative count of bytes read, by block device.";
    FS_READS = "container_fs_reads_total", Counter, ["device"],
        "Cumulative count of reads completed, by block device.";
    FS_WRITES_BYTES = "container_fs_writes_bytes_total", Counter, ["device"],
        "Cumulative count of bytes written, by block device.";
    FS_WRITES = "container_fs_writes_total", Counter, ["device"],
        "Cumulative count of writes completed, by block device.";
    BLKIO_DEVICE_USAGE = "container_blkio_device_usage_total", Counter, ["device", "major", "minor", "operation"],
        "Block I/O bytes by device and operation.";
    NET_RX_BYTES = "container_network_receive_bytes_total", Counter, ["interface"],
        "Cumulative count of bytes received.";
    NET_RX_PACKETS = "container_network_receive_packets_total", Counter, ["interface"],
        "Cumulative count of packets received.";
    NET_RX_DROPPED = "container_network_receive_packets_dropped_total", Counter, ["interface"],
        "Cumulative count of packets dropped while receiving.";
    NET_RX_ERRORS = "container_network_receive_errors_total", Counter, ["interface"],
        "Cumulative count of errors encountered while receiving.";
    NET_TX_BYTES = "container_network_transmit_bytes_total", Counter, ["interface"],
        "Cumulative count of bytes transmitted.";
    NET_TX_PACKETS = "container_network_transmit_packets_total", Counter, ["interface"],
        "Cumulative count of packets transmitted.";
    NET_TX_DROPPED = "container_network_transmit_packets_dropped_total", Counter, ["interface"],
        "Cumulative count of packets dropped while transmitting.";
    NET_TX_ERRORS = "container_network_transmit_errors_total", Counter, ["interface"],
        "Cumulative count of errors encountered while transmitting.";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_cadvisor_shaped() {
        let mut names: Vec<&str> = ALL.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "duplicate family names");
        for f in ALL {
            assert!(f.name.starts_with("container_"), "{}", f.name);
            assert!(!f.help.is_empty());
            let is_counter = f.kind == MetricType::Counter;
            // Prometheus naming: counters end in _total, except the
            // cadvisor names kept for compatibility.
            assert!(
                !is_counter || f.name.ends_with("_total") || f.name == "container_memory_failcnt",
                "{}",
                f.name
            );
            let d = f.descriptor();
            assert_eq!(&d.label_keys[..BASE_LABELS.len()], BASE_LABELS);
        }
    }
}
