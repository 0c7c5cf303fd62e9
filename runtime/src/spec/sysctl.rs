//! Pod sysctls: only namespaced keys, and only for namespaces the pod owns
//! (CVE-2022-0811 was a sysctl value smuggling a second setting).
//!
//! Allowed: `kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*` (IPC
//! namespace, not with host IPC) and `net.*` (network namespace, not with
//! host network). Keys are dotted or slashed names of `[A-Za-z0-9_-]`
//! components; values must not contain a newline or a NUL byte.

use std::collections::HashMap;

/// A sysctl the container cannot get.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// A key that is not namespaced (it would change the host).
    #[error(
        "sysctls: {key:?} is not a namespaced sysctl (allowed: kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, net.*)"
    )]
    NotNamespaced {
        /// The key.
        key: String,
    },
    /// A namespaced key for a namespace the pod shares with the host.
    #[error(
        "sysctls: {key:?} would change the host, because the pod uses the host's {namespace} namespace"
    )]
    HostNamespace {
        /// The key.
        key: String,
        /// `network` or `IPC`.
        namespace: &'static str,
    },
    /// A malformed key.
    #[error(
        "sysctls: key {key:?} is malformed (components of letters, digits, '_' and '-', separated by '.' or '/')"
    )]
    BadKey {
        /// The key (escaped).
        key: String,
    },
    /// A value with a newline or NUL byte.
    #[error("sysctls: the value of {key:?} contains a newline or a NUL byte")]
    BadValue {
        /// The key.
        key: String,
    },
}

#[derive(PartialEq)]
enum Namespace {
    Ipc,
    Net,
}

fn namespace_of(key: &str) -> Option<Namespace> {
    let dotted = key.replace('/', ".");
    if dotted.starts_with("net.") {
        return Some(Namespace::Net);
    }
    let ipc = dotted == "kernel.sem"
        || dotted.starts_with("kernel.shm")
        || dotted.starts_with("kernel.msg")
        || dotted.starts_with("fs.mqueue.");
    ipc.then_some(Namespace::Ipc)
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.split(['.', '/']).all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// Validates the pod's sysctls for a container with the given host namespaces.
pub(crate) fn sysctls(
    requested: Option<&HashMap<String, String>>,
    host_network: bool,
    host_ipc: bool,
) -> Result<HashMap<String, String>, SysctlError> {
    let Some(requested) = requested else {
        return Ok(HashMap::new());
    };
    let mut keys: Vec<&String> = requested.keys().collect();
    keys.sort();
    for key in keys {
        if !valid_key(key) {
            return Err(SysctlError::BadKey {
                key: key.escape_debug().to_string(),
            });
        }
        match namespace_of(key) {
            None => return Err(SysctlError::NotNamespaced { key: key.clone() }),
            Some(Namespace::Net) if host_network => {
                return Err(SysctlError::HostNamespace {
                    key: key.clone(),
                    namespace: "network",
                });
            }
            Some(Namespace::Ipc) if host_ipc => {
                return Err(SysctlError::HostNamespace {
                    key: key.clone(),
                    namespace: "IPC",
                });
            }
            Some(_) => {}
        }
        if requested[key].contains(['\n', '\r', '\0']) {
            return Err(SysctlError::BadValue { key: key.clone() });
        }
    }
    Ok(requested.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn namespaced_keys_pass() {
        let ok = map(&[
            ("kernel.shm_rmid_forced", "1"),
            ("kernel.msgmax", "8192"),
            ("kernel.sem", "250 32000 32 128"),
            ("fs.mqueue.msg_max", "10"),
            ("net.ipv4.ip_unprivileged_port_start", "0"),
            ("net/ipv4/conf/eth0/forwarding", "1"),
        ]);
        assert_eq!(sysctls(Some(&ok), false, false).expect("valid"), ok);
        assert!(sysctls(None, true, true).expect("none").is_empty());
    }

    #[test]
    fn host_wide_keys_are_refused() {
        for key in [
            "kernel.hostname_x",
            "vm.overcommit_memory",
            "kernel.pid_max",
            "fs.file-max",
        ] {
            assert!(matches!(
                sysctls(Some(&map(&[(key, "1")])), false, false),
                Err(SysctlError::NotNamespaced { .. })
            ));
        }
    }

    #[test]
    fn host_namespaces_refuse_their_keys() {
        assert!(matches!(
            sysctls(Some(&map(&[("net.ipv4.ip_forward", "1")])), true, false),
            Err(SysctlError::HostNamespace { .. })
        ));
        assert!(matches!(
            sysctls(Some(&map(&[("kernel.shmmax", "1")])), false, true),
            Err(SysctlError::HostNamespace { .. })
        ));
        assert!(sysctls(Some(&map(&[("kernel.shmmax", "1")])), true, false).is_ok());
    }

    #[test]
    fn injection_is_refused() {
        // CVE-2022-0811: a value carrying a second key.
        let payload = map(&[("kernel.shm_rmid_forced", "1+kernel.core_pattern=|/evil")]);
        assert!(
            sysctls(Some(&payload), false, false).is_ok(),
            "'+' alone is harmless to runc"
        );
        for value in ["1\nkernel.core_pattern=|/evil", "1\0", "1\r"] {
            assert!(matches!(
                sysctls(Some(&map(&[("kernel.shmmax", value)])), false, false),
                Err(SysctlError::BadValue { .. })
            ));
        }
        for key in ["net..x", "net.ipv4/../../x", "net.a b", "", "net.ipv4.\n"] {
            assert!(matches!(
                sysctls(Some(&map(&[(key, "1")])), false, false),
                Err(SysctlError::BadKey { .. })
            ));
        }
    }
}
