//! Devices: the CRI `devices` list, all host devices for privileged
//! containers, and the device cgroup rules.
//!
//! A CRI device's host path is followed through symlinks and stat'ed for its
//! type and numbers (a missing path is an error; a directory adds every
//! device node under it, as containerd does). Unprivileged containers get a
//! deny-all device cgroup rule first, then one allow rule per device (runc
//! appends its own defaults: null, zero, full, random, urandom, tty, ptmx,
//! pts). Privileged containers get every host device and an allow-all rule.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use krio_proto::v1;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use super::host::{HostDevice, dev_major, dev_minor};
use super::mounts::clean_container_path;

/// How deep and how many device nodes a directory device may add.
const MAX_DIR_DEPTH: usize = 8;
const MAX_DIR_DEVICES: usize = 4096;

/// A device cannot be given to the container.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The host path does not exist or cannot be stat'ed.
    #[error("devices: host path {path}: {source}")]
    HostPath {
        /// The host path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The host path is neither a device node nor a directory of them.
    #[error("devices: host path {path} is not a device node")]
    NotADevice {
        /// The host path.
        path: PathBuf,
    },
    /// A bad container path.
    #[error("devices: container path {path:?} {reason}")]
    BadContainerPath {
        /// The path.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// Permissions other than a combination of r, w, m.
    #[error(
        "devices: permissions {permissions:?} for {path:?} must be a combination of r, w and m"
    )]
    BadPermissions {
        /// The container path.
        path: String,
        /// The value.
        permissions: String,
    },
}

/// The devices and device cgroup rules of one container.
pub(crate) struct Devices {
    pub devices: Vec<LinuxDevice>,
    pub rules: Vec<LinuxDeviceCgroup>,
}

fn device(h: &HostDevice) -> LinuxDevice {
    let mut d = LinuxDevice::default();
    d.set_path(h.path.clone());
    d.set_typ(device_type(h.block));
    d.set_major(h.major);
    d.set_minor(h.minor);
    d.set_file_mode(Some(h.mode));
    d.set_uid(Some(h.uid));
    d.set_gid(Some(h.gid));
    d
}

fn device_type(block: bool) -> LinuxDeviceType {
    if block {
        LinuxDeviceType::B
    } else {
        LinuxDeviceType::C
    }
}

fn cgroup_rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    numbers: Option<(i64, i64)>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut rule = LinuxDeviceCgroup::default();
    rule.set_allow(allow);
    rule.set_typ(typ);
    rule.set_major(numbers.map(|n| n.0));
    rule.set_minor(numbers.map(|n| n.1));
    rule.set_access(Some(access.to_owned()));
    rule
}

/// The device node at container path `path`, from the host node's `meta`.
fn node(path: PathBuf, meta: &fs::Metadata) -> Option<HostDevice> {
    let ft = meta.file_type();
    (ft.is_char_device() || ft.is_block_device()).then(|| HostDevice {
        path,
        block: ft.is_block_device(),
        major: dev_major(meta.rdev()),
        minor: dev_minor(meta.rdev()),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// Devices under a host directory, mapped under the container directory.
fn devices_in_dir(host: &Path, container: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![(host.to_path_buf(), container.to_path_buf(), 0usize)];
    while let Some((dir, target, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                continue;
            };
            let target = target.join(entry.file_name());
            if meta.is_dir() && depth < MAX_DIR_DEPTH {
                stack.push((entry.path(), target, depth + 1));
            } else if meta.file_type().is_char_device() || meta.file_type().is_block_device() {
                out.push((target, meta));
                if out.len() >= MAX_DIR_DEVICES {
                    return out;
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The container's devices from its CRI `devices`, plus all host devices when privileged.
pub(crate) fn devices(
    requested: &[v1::Device],
    privileged: bool,
    host_devices: &[HostDevice],
) -> Result<Devices, DeviceError> {
    let mut devices: Vec<LinuxDevice> = Vec::new();
    let mut rules = if privileged {
        vec![cgroup_rule(true, Some(LinuxDeviceType::A), None, "rwm")]
    } else {
        vec![cgroup_rule(false, Some(LinuxDeviceType::A), None, "rwm")]
    };
    for d in requested {
        let container_path = clean_container_path(&d.container_path).map_err(|reason| {
            DeviceError::BadContainerPath {
                path: d.container_path.clone(),
                reason,
            }
        })?;
        let permissions = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if !permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(DeviceError::BadPermissions {
                path: d.container_path.clone(),
                permissions: d.permissions.clone(),
            });
        }
        let host_path = PathBuf::from(&d.host_path);
        // Follows symlinks (/dev/disk/by-id/…), as the CRI asks.
        let meta = fs::metadata(&host_path).map_err(|source| DeviceError::HostPath {
            path: host_path.clone(),
            source,
        })?;
        let found: Vec<(PathBuf, fs::Metadata)> = if meta.is_dir() {
            devices_in_dir(&host_path, &container_path)
        } else {
            vec![(container_path, meta)]
        };
        if found.is_empty() {
            return Err(DeviceError::NotADevice { path: host_path });
        }
        for (target, meta) in found {
            let node = node(target, &meta).ok_or_else(|| DeviceError::NotADevice {
                path: host_path.clone(),
            })?;
            devices.retain(|existing| existing.path() != &node.path);
            devices.push(device(&node));
            if !privileged {
                rules.push(cgroup_rule(
                    true,
                    Some(device_type(node.block)),
                    Some((node.major, node.minor)),
                    permissions,
                ));
            }
        }
    }
    if privileged {
        for h in host_devices {
            if devices.iter().any(|d| d.path() == &h.path) {
                continue;
            }
            devices.push(device(h));
        }
    }
    Ok(Devices { devices, rules })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: &str, container: &str, permissions: &str) -> v1::Device {
        v1::Device {
            host_path: host.into(),
            container_path: container.into(),
            permissions: permissions.into(),
        }
    }

    #[test]
    fn a_device_is_stated_and_allowed() {
        let got = devices(&[req("/dev/null", "/dev/mynull", "rw")], false, &[]).expect("devices");
        assert_eq!(got.devices.len(), 1);
        let d = &got.devices[0];
        assert_eq!(d.path(), &PathBuf::from("/dev/mynull"));
        assert_eq!(d.typ(), LinuxDeviceType::C);
        assert_eq!((d.major(), d.minor()), (1, 3));
        assert_eq!(got.rules.len(), 2);
        assert!(!got.rules[0].allow());
        assert!(got.rules[1].allow());
        assert_eq!(got.rules[1].access().as_deref(), Some("rw"));
        assert_eq!(
            (got.rules[1].major(), got.rules[1].minor()),
            (Some(1), Some(3))
        );
    }

    #[test]
    fn bad_devices_are_refused() {
        assert!(matches!(
            devices(&[req("/dev/does-not-exist", "/dev/x", "")], false, &[]),
            Err(DeviceError::HostPath { .. })
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        fs::write(&file, "x").expect("write");
        assert!(matches!(
            devices(
                &[req(&file.display().to_string(), "/dev/x", "")],
                false,
                &[]
            ),
            Err(DeviceError::NotADevice { .. })
        ));
        assert!(matches!(
            devices(&[req("/dev/null", "/dev/x", "rwx")], false, &[]),
            Err(DeviceError::BadPermissions { .. })
        ));
        assert!(matches!(
            devices(&[req("/dev/null", "dev/x", "")], false, &[]),
            Err(DeviceError::BadContainerPath { .. })
        ));
        assert!(matches!(
            devices(&[req("/dev/null", "/dev/../etc/x", "")], false, &[]),
            Err(DeviceError::BadContainerPath { .. })
        ));
    }

    #[test]
    fn privileged_gets_every_host_device() {
        let host = vec![
            HostDevice {
                path: "/dev/sda".into(),
                block: true,
                major: 8,
                minor: 0,
                mode: 0o660,
                uid: 0,
                gid: 6,
            },
            HostDevice {
                path: "/dev/null".into(),
                block: false,
                major: 1,
                minor: 3,
                mode: 0o666,
                uid: 0,
                gid: 0,
            },
        ];
        let got = devices(&[req("/dev/null", "/dev/null", "r")], true, &host).expect("devices");
        assert_eq!(got.devices.len(), 2);
        assert_eq!(got.rules.len(), 1);
        assert!(got.rules[0].allow());
        assert_eq!(got.rules[0].typ(), Some(LinuxDeviceType::A));
    }
}
