//! A pod's own files, shared by its containers: `hostname`, `hosts`,
//! `resolv.conf`, and the `/dev/shm` tmpfs.

use std::fs::DirBuilder;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use krio_proto::v1;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// Size cap of a pod's `/dev/shm` (the Docker and containerd default).
pub const SHM_SIZE: &str = "67108864";

/// Writes `hostname`, `hosts` and `resolv.conf` into `dir` (created 0711 so
/// non-root container users can reach the bind-mounted files).
pub fn write_pod_files(
    dir: &Path,
    hostname: &str,
    dns: Option<&v1::DnsConfig>,
    host_network: bool,
) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o711).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
    let node_hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = if host_network || hostname.is_empty() {
        node_hostname
    } else {
        hostname.to_owned()
    };
    write_file(&dir.join("hostname"), format!("{name}\n").as_bytes())?;
    let hosts = if host_network {
        std::fs::read("/etc/hosts").unwrap_or_default()
    } else {
        hosts_file(&name).into_bytes()
    };
    write_file(&dir.join("hosts"), &hosts)?;
    let resolv = match dns {
        Some(dns)
            if !(dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty()) =>
        {
            resolv_conf(dns).into_bytes()
        }
        // No DNS config: the node's, as the kubelet's "Default" policy means.
        _ => std::fs::read("/etc/resolv.conf").unwrap_or_default(),
    };
    write_file(&dir.join("resolv.conf"), &resolv)
}

fn hosts_file(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
    )
}

/// `resolv.conf` from the kubelet's DNS config.
pub fn resolv_conf(dns: &v1::DnsConfig) -> String {
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}

fn write_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, path)
}

/// Mounts the pod's `/dev/shm` tmpfs at `path` (size-capped, nosuid, nodev,
/// noexec).
pub fn mount_shm(path: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o711).create(path)?;
    mount(
        Some("shm"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,size={SHM_SIZE}").as_str()),
    )
    .map_err(std::io::Error::from)
}

/// Unmounts and removes the shm dir; repeated calls are fine.
pub fn unmount_shm(path: &Path) -> std::io::Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::remove_dir(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes a directory tree; a missing one is fine.
pub fn remove_dir(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The per-pod paths under the root and run dirs.
#[derive(Debug, Clone)]
pub struct PodPaths {
    /// `<root>/sandboxes/<id>`: hostname, hosts, resolv.conf.
    pub dir: PathBuf,
    /// `<runroot>/sandboxes/<id>/shm`.
    pub shm: PathBuf,
    /// `<runroot>/sandboxes/<id>`.
    pub run_dir: PathBuf,
}

impl PodPaths {
    /// The paths of pod `id`.
    pub fn new(root: &Path, runroot: &Path, id: &str) -> Self {
        let run_dir = runroot.join("sandboxes").join(id);
        Self {
            dir: root.join("sandboxes").join(id),
            shm: run_dir.join("shm"),
            run_dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_has_search_servers_and_options() {
        let dns = v1::DnsConfig {
            servers: vec!["10.96.0.10".into(), "8.8.8.8".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into(), "timeout:1".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver 8.8.8.8\noptions ndots:5 timeout:1\n"
        );
    }

    #[test]
    fn pod_files_are_written_world_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod = dir.path().join("pod");
        let dns = v1::DnsConfig {
            servers: vec!["1.2.3.4".into()],
            ..Default::default()
        };
        write_pod_files(&pod, "web-0", Some(&dns), false).expect("write");
        assert_eq!(
            std::fs::read_to_string(pod.join("hostname")).expect("read"),
            "web-0\n"
        );
        assert!(
            std::fs::read_to_string(pod.join("hosts"))
                .expect("read")
                .contains("127.0.1.1\tweb-0")
        );
        assert_eq!(
            std::fs::read_to_string(pod.join("resolv.conf")).expect("read"),
            "nameserver 1.2.3.4\n"
        );
        let mode = std::fs::metadata(pod.join("resolv.conf"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}
