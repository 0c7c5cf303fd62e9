//! Block I/O of a cgroup per device: v1 `blkio.throttle.*_recursive`,
//! v2 `io.stat`.

use std::collections::BTreeMap;

use super::CgroupDirs;
use super::usage::existing_v1;

/// The I/O a cgroup did on one block device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceIo {
    /// The device's major number.
    pub major: u64,
    /// The device's minor number.
    pub minor: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Read operations.
    pub reads: u64,
    /// Write operations.
    pub writes: u64,
}

impl DeviceIo {
    /// The device's node name (`/dev/sda`), from sysfs; `None` when sysfs
    /// does not know it.
    pub fn device_name(&self) -> Option<String> {
        let uevent = std::fs::read_to_string(format!(
            "/sys/dev/block/{}:{}/uevent",
            self.major, self.minor
        ))
        .ok()?;
        uevent
            .lines()
            .find_map(|l| l.strip_prefix("DEVNAME="))
            .map(|n| format!("/dev/{n}"))
    }
}

/// Reads the per-device I/O counters of the cgroup, v1 `blkio` when its
/// directory exists, else the unified `io.stat`; devices in `major:minor`
/// order. Empty when nothing can be read.
pub fn read_io(dirs: &CgroupDirs) -> Vec<DeviceIo> {
    if let Some(dir) = existing_v1(dirs, "blkio") {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        parse_blkio_v1(
            &read("blkio.throttle.io_service_bytes_recursive"),
            &read("blkio.throttle.io_serviced_recursive"),
        )
    } else if let Some(dir) = dirs.unified() {
        parse_io_stat(&std::fs::read_to_string(dir.join("io.stat")).unwrap_or_default())
    } else {
        Vec::new()
    }
}

fn device<'a>(
    map: &'a mut BTreeMap<(u64, u64), DeviceIo>,
    majmin: &str,
) -> Option<&'a mut DeviceIo> {
    let (major, minor) = majmin.split_once(':')?;
    let key = (major.parse().ok()?, minor.parse().ok()?);
    Some(map.entry(key).or_insert_with(|| DeviceIo {
        major: key.0,
        minor: key.1,
        ..DeviceIo::default()
    }))
}

/// v1: lines `MAJ:MIN Read|Write|Sync|Async|Discard|Total N`.
fn parse_blkio_v1(bytes: &str, ops: &str) -> Vec<DeviceIo> {
    let mut map = BTreeMap::new();
    for (text, is_bytes) in [(bytes, true), (ops, false)] {
        for line in text.lines() {
            let mut f = line.split_whitespace();
            let (Some(majmin), Some(op), Some(value)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            let Some(dev) = device(&mut map, majmin) else {
                continue;
            };
            match (op, is_bytes) {
                ("Read", true) => dev.read_bytes = value,
                ("Write", true) => dev.write_bytes = value,
                ("Read", false) => dev.reads = value,
                ("Write", false) => dev.writes = value,
                _ => {}
            }
        }
    }
    map.into_values().collect()
}

/// v2: lines `MAJ:MIN rbytes=N wbytes=N rios=N wios=N …`.
fn parse_io_stat(text: &str) -> Vec<DeviceIo> {
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(dev) = f.next().and_then(|m| device(&mut map, m)) else {
            continue;
        };
        for pair in f {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            match key {
                "rbytes" => dev.read_bytes = value,
                "wbytes" => dev.write_bytes = value,
                "rios" => dev.reads = value,
                "wios" => dev.writes = value,
                _ => {}
            }
        }
    }
    map.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1_and_v2() {
        let v1 = parse_blkio_v1(
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\nTotal 12288\n",
            "8:0 Read 1\n8:0 Write 2\n",
        );
        assert_eq!(
            v1,
            vec![DeviceIo {
                major: 8,
                minor: 0,
                read_bytes: 4096,
                write_bytes: 8192,
                reads: 1,
                writes: 2
            }]
        );
        let v2 = parse_io_stat("259:0 rbytes=10 wbytes=20 rios=3 wios=4 dbytes=0 dios=0\nbad\n");
        assert_eq!(v2.len(), 1);
        assert_eq!((v2[0].major, v2[0].read_bytes, v2[0].writes), (259, 10, 4));
    }
}
