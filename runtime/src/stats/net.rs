//! Per-interface network counters inside a pod's network namespace.
//!
//! `setns(2)` changes only the calling thread's namespace, so the read
//! happens on a short-lived thread of its own that enters the namespace,
//! reads `/proc/thread-self/net/dev` (which shows the thread's network
//! namespace, unlike `/sys/class/net`, which shows the one sysfs was
//! mounted in) and exits. The caller's thread never changes namespace.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

use super::StatsError;

/// The counters of one network interface, from `/proc/net/dev`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    /// The interface name (`eth0`, `lo`, …).
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Packets dropped on transmit.
    pub tx_dropped: u64,
}

/// The interfaces of one network namespace, in the kernel's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Every interface, `lo` included.
    pub interfaces: Vec<InterfaceStats>,
}

impl NetworkStats {
    /// The interface a pod's stats report as its default: `eth0` when there
    /// is one (the name CNI plugins give the pod's interface), else the
    /// first interface that is not `lo`.
    pub fn default_interface(&self) -> Option<&InterfaceStats> {
        self.interfaces
            .iter()
            .find(|i| i.name == "eth0")
            .or_else(|| self.interfaces.iter().find(|i| i.name != "lo"))
    }

    /// The interface called `name`.
    pub fn interface(&self, name: &str) -> Option<&InterfaceStats> {
        self.interfaces.iter().find(|i| i.name == name)
    }
}

/// Reads the interface counters of the network namespace pinned at
/// `netns_path` (a bind-mounted nsfs file such as
/// `/run/krio/ns/net/<sandbox-id>` or `/run/netns/<name>`).
///
/// Blocks while a helper thread enters the namespace and reads; from async
/// code call it through `spawn_blocking`. Needs `CAP_SYS_ADMIN`.
pub fn netns_stats(netns_path: &Path) -> Result<NetworkStats, StatsError> {
    let ns = File::open(netns_path).map_err(|e| StatsError::read(netns_path, e))?;
    let path: PathBuf = netns_path.to_owned();
    let reader = std::thread::Builder::new()
        .name("krio-netns-stats".to_owned())
        .spawn(move || -> Result<NetworkStats, StatsError> {
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
                .map_err(|source| StatsError::SetNs { path, source })?;
            let dev = Path::new("/proc/thread-self/net/dev");
            let text = std::fs::read_to_string(dev).map_err(|e| StatsError::read(dev, e))?;
            Ok(NetworkStats {
                interfaces: parse_net_dev(&text),
            })
        })
        .map_err(|source| StatsError::Spawn { source })?;
    reader.join().map_err(|_| StatsError::ThreadPanicked)?
}

/// Parses the `/proc/net/dev` format: two header lines, then
/// `name: rx bytes packets errs drop fifo frame compressed multicast
/// tx bytes packets errs drop fifo colls carrier compressed`. Lines that do
/// not parse are skipped.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let n: Vec<u64> = counters
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            if n.len() < 16 {
                return None;
            }
            Some(InterfaceStats {
                name: name.trim().to_owned(),
                rx_bytes: n[0],
                rx_packets: n[1],
                rx_errors: n[2],
                rx_dropped: n[3],
                tx_bytes: n[8],
                tx_packets: n[9],
                tx_errors: n[10],
                tx_dropped: n[11],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1400      14    0    0    0     0          0         0     1400      14    0    0    0     0       0          0
  eth0:123456789012    9876    3    4    0     0          0         0    55555     444    1    2    0     0       0          0
";

    #[test]
    fn parses_proc_net_dev() {
        let s = NetworkStats {
            interfaces: parse_net_dev(SAMPLE),
        };
        assert_eq!(s.interfaces.len(), 2);
        let lo = s.interface("lo").expect("lo");
        assert_eq!((lo.rx_bytes, lo.tx_packets), (1400, 14));
        let eth = s.default_interface().expect("default");
        assert_eq!(eth.name, "eth0");
        assert_eq!(
            (eth.rx_bytes, eth.rx_packets, eth.rx_errors, eth.rx_dropped),
            (123_456_789_012, 9876, 3, 4)
        );
        assert_eq!(
            (eth.tx_bytes, eth.tx_packets, eth.tx_errors, eth.tx_dropped),
            (55555, 444, 1, 2)
        );
    }

    #[test]
    fn default_interface_skips_lo() {
        let s = NetworkStats {
            interfaces: parse_net_dev(&SAMPLE.replace("eth0", "net1")),
        };
        assert_eq!(s.default_interface().map(|i| i.name.as_str()), Some("net1"));
        let s = NetworkStats {
            interfaces: parse_net_dev(
                SAMPLE
                    .lines()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("\n")
                    .as_str(),
            ),
        };
        assert_eq!(s.default_interface(), None);
    }

    #[test]
    fn missing_namespace_is_an_error() {
        let err = netns_stats(Path::new("/nonexistent/netns")).expect_err("must fail");
        assert!(matches!(err, StatsError::Read { .. }), "{err}");
    }
}
