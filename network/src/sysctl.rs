//! Pod sysctls: which keys a pod may set, and their values checked strictly
//! (CVE-2022-0811 injected a second sysctl through a value with `+`/`=`).

use std::path::PathBuf;

/// Why a sysctl is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SysctlError {
    /// The key is not namespaced, or not safe to set for a pod.
    #[error(
        "sysctl {0:?} is not allowed: only namespaced keys (kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, net.*) can be set for a pod"
    )]
    NotNamespaced(String),
    /// A `net.*` key on a pod that uses the node's network namespace.
    #[error("sysctl {0:?} is not allowed for a pod in the host network namespace")]
    HostNetwork(String),
    /// An IPC key on a pod that uses the node's IPC namespace.
    #[error("sysctl {0:?} is not allowed for a pod in the host IPC namespace")]
    HostIpc(String),
    /// The key has characters that could address another file.
    #[error("sysctl key {0:?} is malformed")]
    BadKey(String),
    /// The value has characters that could smuggle another setting.
    #[error(
        "sysctl {key:?} has a malformed value {value:?}: no newlines, NULs, '=' or '+' allowed"
    )]
    BadValue {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
}

/// Which namespaces of the node a pod shares: those keys can't be set.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostNamespaces {
    /// The pod uses the node's network namespace.
    pub network: bool,
    /// The pod uses the node's IPC namespace.
    pub ipc: bool,
}

/// Checks one sysctl for a pod.
pub fn validate(key: &str, value: &str, host: HostNamespaces) -> Result<(), SysctlError> {
    let key_ok = !key.is_empty()
        && key.len() <= 256
        && key.split(['.', '/']).all(|part| {
            !part.is_empty()
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !key_ok {
        return Err(SysctlError::BadKey(key.to_owned()));
    }
    let normalised = key.replace('/', ".");
    let ipc = normalised.starts_with("kernel.shm")
        || normalised.starts_with("kernel.msg")
        || normalised == "kernel.sem"
        || normalised.starts_with("fs.mqueue.");
    let net = normalised.starts_with("net.");
    if !ipc && !net {
        return Err(SysctlError::NotNamespaced(key.to_owned()));
    }
    if net && host.network {
        return Err(SysctlError::HostNetwork(key.to_owned()));
    }
    if ipc && host.ipc {
        return Err(SysctlError::HostIpc(key.to_owned()));
    }
    if value.len() > 4096
        || value
            .bytes()
            .any(|b| matches!(b, b'\n' | b'\r' | 0 | b'=' | b'+'))
    {
        return Err(SysctlError::BadValue {
            key: key.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// The `/proc/sys` file of a (validated) key: `a.b.c` or `a/b/c` (the form
/// to use when a component itself has a dot, like an interface `eth0.100`).
pub fn proc_path(key: &str) -> PathBuf {
    let relative = if key.contains('/') {
        key.to_owned()
    } else {
        key.replace('.', "/")
    };
    PathBuf::from("/proc/sys").join(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: HostNamespaces = HostNamespaces {
        network: false,
        ipc: false,
    };

    #[test]
    fn namespaced_keys_pass() {
        for key in [
            "kernel.shm_rmid_forced",
            "kernel.msgmax",
            "kernel.sem",
            "fs.mqueue.msg_max",
            "net.ipv4.ip_unprivileged_port_start",
            "net/ipv4/ping_group_range",
        ] {
            validate(key, "1", POD).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
    }

    #[test]
    fn node_wide_and_malformed_keys_fail() {
        assert!(matches!(
            validate("kernel.panic", "1", POD),
            Err(SysctlError::NotNamespaced(_))
        ));
        assert!(matches!(
            validate("vm.swappiness", "1", POD),
            Err(SysctlError::NotNamespaced(_))
        ));
        assert!(matches!(
            validate("net.../../x", "1", POD),
            Err(SysctlError::BadKey(_))
        ));
        assert!(matches!(
            validate("", "1", POD),
            Err(SysctlError::BadKey(_))
        ));
    }

    #[test]
    fn injection_through_the_value_fails() {
        // The CVE-2022-0811 payload: a second key smuggled in the value.
        let err = validate("kernel.shm_rmid_forced", "1+kernel.core_pattern=|/x", POD)
            .expect_err("injection");
        assert!(matches!(err, SysctlError::BadValue { .. }));
        assert!(validate("net.ipv4.ping_group_range", "0 2147483647\nkernel.x=1", POD).is_err());
        assert!(validate("net.ipv4.ping_group_range", "0 2147483647", POD).is_ok());
    }

    #[test]
    fn host_namespaces_block_their_keys() {
        let host_net = HostNamespaces {
            network: true,
            ipc: false,
        };
        assert!(matches!(
            validate("net.ipv4.ip_forward", "1", host_net),
            Err(SysctlError::HostNetwork(_))
        ));
        assert!(validate("kernel.shm_rmid_forced", "1", host_net).is_ok());
        let host_ipc = HostNamespaces {
            network: false,
            ipc: true,
        };
        assert!(matches!(
            validate("kernel.msgmax", "1", host_ipc),
            Err(SysctlError::HostIpc(_))
        ));
    }

    #[test]
    fn proc_path_maps_dots() {
        assert_eq!(
            proc_path("net.ipv4.ip_forward"),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
    }
}
