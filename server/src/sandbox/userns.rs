//! Pods with their own user namespace (`userns_options.mode = POD`, the
//! kubelet's `hostUsers: false`): the request's mappings are checked, and a
//! `krio pod-userns` helper process creates the user namespace and the
//! pod's other namespaces inside it (see [`krio_network::userns`]).

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use krio_network::podns::{Kind, PodNsRequest};
use krio_network::userns::IdMap;
use krio_proto::v1;

use crate::error::Error;

/// Arguments of `krio pod-userns` (internal).
#[derive(Debug, Clone, clap::Args)]
pub struct UsernsArgs {
    /// Namespace kinds to create inside the user namespace.
    #[arg(long = "kind")]
    pub kinds: Vec<String>,
    /// The pod's hostname.
    #[arg(long, default_value = "")]
    pub hostname: String,
    /// `key=value` sysctls (validated by the daemon).
    #[arg(long = "sysctl")]
    pub sysctls: Vec<String>,
}

/// The pod's user namespace mappings (uids, gids).
pub type Mappings = (IdMap, IdMap);

/// Checks `userns_options`: `None` for the node's user namespace, the
/// mappings for `POD`. One mapping each for uids and gids, starting at
/// container ID 0, never mapping host ID 0, is what the kubelet sends and
/// all krio accepts.
pub fn validate(
    options: Option<&v1::UserNamespace>,
    pod_ns: &v1::NamespaceOption,
) -> Result<Option<Mappings>, Error> {
    let invalid =
        |m: String| Error::InvalidArgument(format!("namespace_options.userns_options: {m}"));
    let Some(options) = options else {
        return Ok(None);
    };
    match v1::NamespaceMode::try_from(options.mode) {
        Ok(v1::NamespaceMode::Node) => return Ok(None),
        Ok(v1::NamespaceMode::Pod) => {}
        Ok(other) => {
            return Err(invalid(format!(
                "mode {} is not supported (POD or NODE)",
                other.as_str_name()
            )));
        }
        Err(_) => return Err(invalid(format!("unknown mode {}", options.mode))),
    }
    let host = v1::NamespaceMode::Node as i32;
    if pod_ns.network == host || pod_ns.ipc == host || pod_ns.pid == host {
        return Err(invalid(
            "a pod with its own user namespace cannot use the node's network, IPC or PID namespace"
                .into(),
        ));
    }
    let one = |field: &str, maps: &[v1::IdMapping]| -> Result<IdMap, Error> {
        let [m] = maps else {
            return Err(invalid(format!(
                "{field}: exactly one mapping is supported, got {}",
                maps.len()
            )));
        };
        if m.container_id != 0 {
            return Err(invalid(format!(
                "{field}: container ID 0 must be mapped (the mapping starts at {})",
                m.container_id
            )));
        }
        if m.host_id == 0 || m.length == 0 || m.host_id.checked_add(m.length).is_none() {
            return Err(invalid(format!(
                "{field}: host_id {} length {} must not map host ID 0, be empty or overflow",
                m.host_id, m.length
            )));
        }
        Ok(IdMap {
            inside: 0,
            outside: m.host_id,
            length: m.length,
        })
    };
    Ok(Some((
        one("uids", &options.uids)?,
        one("gids", &options.gids)?,
    )))
}

/// The helper command for [`krio_network::userns::create`]: krio itself.
pub fn helper_command(req: &PodNsRequest) -> Command {
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("krio"));
    let mut cmd = Command::new(exe);
    cmd.arg("pod-userns").arg("--hostname").arg(&req.hostname);
    for kind in &req.kinds {
        cmd.arg("--kind").arg(kind.name());
    }
    for (key, value) in &req.sysctls {
        cmd.arg("--sysctl").arg(format!("{key}={value}"));
    }
    cmd
}

/// Runs in the `krio pod-userns` process, before any thread exists.
pub fn run_helper(args: &UsernsArgs) -> ExitCode {
    let kinds = args
        .kinds
        .iter()
        .filter_map(|k| match k.as_str() {
            "net" => Some(Kind::Net),
            "ipc" => Some(Kind::Ipc),
            "uts" => Some(Kind::Uts),
            _ => None,
        })
        .collect();
    let sysctls = args
        .sysctls
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    krio_network::userns::helper_main(&PodNsRequest {
        dir: PathBuf::new(),
        pod_id: String::new(),
        kinds,
        hostname: args.hostname.clone(),
        sysctls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(mode: v1::NamespaceMode, maps: Vec<v1::IdMapping>) -> v1::UserNamespace {
        v1::UserNamespace {
            mode: mode as i32,
            uids: maps.clone(),
            gids: maps,
        }
    }

    fn map(container_id: u32, host_id: u32, length: u32) -> v1::IdMapping {
        v1::IdMapping {
            container_id,
            host_id,
            length,
        }
    }

    fn pod_ns() -> v1::NamespaceOption {
        v1::NamespaceOption {
            pid: v1::NamespaceMode::Container as i32,
            ..Default::default()
        }
    }

    #[test]
    fn one_mapping_from_zero_is_accepted() {
        let got = validate(
            Some(&opts(v1::NamespaceMode::Pod, vec![map(0, 1000, 100_000)])),
            &pod_ns(),
        )
        .expect("valid");
        let (uids, gids) = got.expect("a user namespace");
        assert_eq!(
            uids,
            IdMap {
                inside: 0,
                outside: 1000,
                length: 100_000
            }
        );
        assert_eq!(gids, uids);
        let node = opts(v1::NamespaceMode::Node, vec![]);
        assert!(validate(Some(&node), &pod_ns()).expect("node").is_none());
        assert!(validate(None, &pod_ns()).expect("none").is_none());
    }

    #[test]
    fn what_krio_cannot_honour_is_invalid() {
        let bad = [
            opts(
                v1::NamespaceMode::Pod,
                vec![map(0, 1000, 10), map(10, 2000, 10)],
            ),
            opts(v1::NamespaceMode::Pod, vec![map(1, 1000, 100_000)]),
            opts(v1::NamespaceMode::Pod, vec![map(0, 0, 100_000)]),
            opts(v1::NamespaceMode::Pod, vec![]),
            opts(v1::NamespaceMode::Container, vec![]),
            opts(v1::NamespaceMode::Target, vec![]),
        ];
        for o in bad {
            let err = validate(Some(&o), &pod_ns()).expect_err("invalid");
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        }
        let mut host_net = pod_ns();
        host_net.network = v1::NamespaceMode::Node as i32;
        let o = opts(v1::NamespaceMode::Pod, vec![map(0, 1000, 100_000)]);
        assert!(validate(Some(&o), &host_net).is_err());
        let mut shared_pid = pod_ns();
        shared_pid.pid = v1::NamespaceMode::Pod as i32;
        assert!(
            validate(Some(&o), &shared_pid)
                .expect("shared PID")
                .is_some()
        );
    }
}
