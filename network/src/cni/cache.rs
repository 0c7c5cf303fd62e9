//! The on-disk cache of attachments: for each (network, container, ifname),
//! the config list, arguments and result of its ADD, so DEL and CHECK work
//! after a daemon restart or a config change.
//!
//! Layout: `<cache dir>/<container id>/<ifname>/<network name>.json`, each
//! file written atomically (temp file, fsync, rename, fsync of the dir).
//! Every path component is validated first; none comes from a plugin.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::args::CapabilityArgs;
use super::config::{NetworkConfigList, is_valid_network_name};

/// Longest container ID accepted.
pub const MAX_CONTAINER_ID_LEN: usize = 128;

/// Why the cache could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A container ID that is empty, too long or holds characters other
    /// than `[A-Za-z0-9_.-]` (or does not start with an alphanumeric).
    #[error(
        "invalid container id {0:?}: want 1 to {MAX_CONTAINER_ID_LEN} characters of [A-Za-z0-9_.-], starting with a letter or digit"
    )]
    InvalidContainerId(String),
    /// An interface name Linux would not accept.
    #[error(
        "invalid interface name {0:?}: want 1 to 15 bytes, not \".\" or \"..\", without '/', ':' or whitespace"
    )]
    InvalidIfname(String),
    /// A network name that is not safe as a file name.
    #[error("invalid network name {0:?}")]
    InvalidNetworkName(String),
    /// Reading or writing a cache file failed.
    #[error("CNI cache {path}: {source}")]
    Io {
        /// The file or dir.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A cache file does not hold a valid entry.
    #[error("CNI cache file {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Checks a container ID before it is used as a file name or passed to a
/// plugin.
pub fn validate_container_id(id: &str) -> Result<(), CacheError> {
    let mut chars = id.chars();
    let ok = id.len() <= MAX_CONTAINER_ID_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CacheError::InvalidContainerId(id.to_string()))
    }
}

/// Checks an interface name the way Linux does.
pub fn validate_ifname(name: &str) -> Result<(), CacheError> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '/' || c == ':' || c == '\0' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(CacheError::InvalidIfname(name.to_string()))
    }
}

const ENTRY_VERSION: u32 = 1;

/// One cached attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    /// The container (sandbox) ID.
    pub container_id: String,
    /// The interface name in the container.
    pub ifname: String,
    /// The netns path passed to ADD.
    pub netns: PathBuf,
    /// The `CNI_ARGS` pairs passed to ADD.
    pub cni_args: Vec<(String, String)>,
    /// The capability arguments passed to ADD.
    pub capability_args: CapabilityArgs,
    /// The network config list ADD used.
    pub config: NetworkConfigList,
    /// The final ADD result, as the last plugin wrote it; `None` while the
    /// ADD is in progress (so a crash mid-ADD still leaves what DEL needs).
    pub result: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    #[serde(flatten)]
    entry: CacheEntry,
}

/// One file found by [`Cache::list`]: the network name and its entry, or
/// why it could not be read.
pub type ListedEntry = (String, Result<CacheEntry, CacheError>);

/// The attachment cache under one directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Cache {
    /// A cache kept under `dir` (created on first write, mode 0700).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Cache { dir: dir.into() }
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn attachment_dir(&self, container_id: &str, ifname: &str) -> Result<PathBuf, CacheError> {
        validate_container_id(container_id)?;
        validate_ifname(ifname)?;
        Ok(self.dir.join(container_id).join(ifname))
    }

    fn entry_path(
        &self,
        container_id: &str,
        ifname: &str,
        network: &str,
    ) -> Result<PathBuf, CacheError> {
        if !is_valid_network_name(network) {
            return Err(CacheError::InvalidNetworkName(network.to_string()));
        }
        Ok(self
            .attachment_dir(container_id, ifname)?
            .join(format!("{network}.json")))
    }

    /// Stores an entry atomically, replacing any earlier one.
    pub fn store(&self, entry: &CacheEntry) -> Result<(), CacheError> {
        let path = self.entry_path(&entry.container_id, &entry.ifname, &entry.config.name)?;
        let bytes = serde_json::to_vec_pretty(&OnDisk {
            version: ENTRY_VERSION,
            entry: entry.clone(),
        })
        .map_err(|source| CacheError::Corrupt {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &bytes)
    }

    /// Loads the entry for one attachment, if there is one.
    pub fn load(
        &self,
        container_id: &str,
        ifname: &str,
        network: &str,
    ) -> Result<Option<CacheEntry>, CacheError> {
        let path = self.entry_path(container_id, ifname, network)?;
        match std::fs::read(&path) {
            Ok(bytes) => read_entry(&path, &bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// All entries of a container's interface, one per network, sorted by
    /// network name. A file that cannot be read is listed with its error.
    pub fn list(&self, container_id: &str, ifname: &str) -> Result<Vec<ListedEntry>, CacheError> {
        let dir = self.attachment_dir(container_id, ifname)?;
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut out = Vec::new();
        for dent in rd {
            let dent = dent.map_err(io_err(&dir))?;
            let name = dent.file_name();
            let Some(network) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !is_valid_network_name(network) {
                continue;
            }
            let path = dent.path();
            let entry = std::fs::read(&path)
                .map_err(io_err(&path))
                .and_then(|bytes| read_entry(&path, &bytes));
            out.push((network.to_string(), entry));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Every cached attachment as (container id, ifname, network name), for
    /// retrying DELs at start.
    pub fn list_all(&self) -> Result<Vec<(String, String, String)>, CacheError> {
        let mut out = Vec::new();
        let containers = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err(&self.dir)(e)),
        };
        for c in containers {
            let c = c.map_err(io_err(&self.dir))?;
            let Some(cid) = c.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if validate_container_id(&cid).is_err() {
                continue;
            }
            let Ok(ifnames) = std::fs::read_dir(c.path()) else {
                continue;
            };
            for i in ifnames.flatten() {
                let Some(ifname) = i.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if validate_ifname(&ifname).is_err() {
                    continue;
                }
                for (network, _) in self.list(&cid, &ifname)? {
                    out.push((cid.clone(), ifname.clone(), network));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes an attachment's entry; removing a missing one is fine.
    pub fn remove(
        &self,
        container_id: &str,
        ifname: &str,
        network: &str,
    ) -> Result<(), CacheError> {
        let path = self.entry_path(container_id, ifname, network)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&path)(e)),
        }
        let ifname_dir = self.dir.join(container_id).join(ifname);
        sync_dir(&ifname_dir)?;
        // Drop the now-empty dirs; one still in use stays.
        if std::fs::remove_dir(&ifname_dir).is_ok() {
            let _ = std::fs::remove_dir(self.dir.join(container_id));
        }
        Ok(())
    }
}

fn read_entry(path: &Path, bytes: &[u8]) -> Result<CacheEntry, CacheError> {
    let corrupt = |source| CacheError::Corrupt {
        path: path.to_path_buf(),
        source,
    };
    let disk: OnDisk = serde_json::from_slice(bytes).map_err(corrupt)?;
    if disk.version != ENTRY_VERSION {
        return Err(corrupt(serde::de::Error::custom(format!(
            "unknown cache entry version {}",
            disk.version
        ))));
    }
    Ok(disk.entry)
}

fn sync_dir(dir: &Path) -> Result<(), CacheError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Writes `bytes` to `path` so that a reader sees the old content or the
/// new, never a mix, even across a crash.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(path)(e));
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cid: &str, network: &str) -> CacheEntry {
        CacheEntry {
            container_id: cid.into(),
            ifname: "eth0".into(),
            netns: "/run/krio/ns/net/abc".into(),
            cni_args: vec![("K8S_POD_NAME".into(), "web".into())],
            capability_args: CapabilityArgs::default(),
            config: NetworkConfigList {
                name: network.into(),
                cni_version: "1.0.0".into(),
                plugins: vec![serde_json::json!({"type": "bridge", "bridge": "cni0"})],
                disable_check: false,
                disable_gc: false,
                source: "/etc/cni/net.d/10-a.conflist".into(),
            },
            result: Some(serde_json::json!({"cniVersion": "1.0.0", "ips": []})),
        }
    }

    #[test]
    fn container_id_validation() {
        for ok in ["abc", "a", "0123456789abcdef", "a.b_c-d", &"a".repeat(128)] {
            validate_container_id(ok).expect(ok);
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "-a",
            "_a",
            "a b",
            "a\0",
            "é",
            &"a".repeat(129),
        ] {
            assert!(validate_container_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ifname_validation() {
        for ok in ["eth0", "net1", "a", "x".repeat(15).as_str()] {
            validate_ifname(ok).expect(ok);
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", &"x".repeat(16)] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn round_trip_list_and_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(dir.path().join("cache"));
        assert_eq!(cache.load("abc", "eth0", "net").expect("load"), None);
        assert!(cache.list("abc", "eth0").expect("list").is_empty());

        let a = entry("abc", "net");
        cache.store(&a).expect("store");
        let b = entry("abc", "other");
        cache.store(&b).expect("store");
        assert_eq!(
            cache.load("abc", "eth0", "net").expect("load"),
            Some(a.clone())
        );

        let listed = cache.list("abc", "eth0").expect("list");
        let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["net", "other"]);
        assert_eq!(listed[1].1.as_ref().expect("entry"), &b);
        assert_eq!(
            cache.list_all().expect("all"),
            vec![
                ("abc".into(), "eth0".into(), "net".into()),
                ("abc".into(), "eth0".into(), "other".into())
            ]
        );

        // Overwrite is atomic and leaves no temp files.
        let mut a2 = a.clone();
        a2.result = None;
        cache.store(&a2).expect("store");
        assert_eq!(cache.load("abc", "eth0", "net").expect("load"), Some(a2));
        let files: Vec<_> = std::fs::read_dir(dir.path().join("cache/abc/eth0"))
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(files.len(), 2, "{files:?}");

        let mode = std::fs::metadata(dir.path().join("cache/abc/eth0/net.json"))
            .expect("stat")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        cache.remove("abc", "eth0", "net").expect("remove");
        cache.remove("abc", "eth0", "net").expect("remove twice");
        cache.remove("abc", "eth0", "other").expect("remove");
        assert!(!dir.path().join("cache/abc").exists());
        assert!(cache.list_all().expect("all").is_empty());
    }

    #[test]
    fn corrupt_entries_are_reported_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(dir.path());
        cache.store(&entry("abc", "net")).expect("store");
        std::fs::write(dir.path().join("abc/eth0/broken.json"), "{").expect("write");
        let listed = cache.list("abc", "eth0").expect("list");
        assert_eq!(listed.len(), 2);
        let err = listed[0].1.as_ref().expect_err("corrupt");
        assert!(err.to_string().contains("broken.json"), "{err}");
        assert!(listed[1].1.is_ok());
    }

    #[test]
    fn bad_ids_never_touch_the_filesystem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(dir.path().join("c"));
        assert!(matches!(
            cache.store(&entry("../escape", "net")),
            Err(CacheError::InvalidContainerId(_))
        ));
        assert!(matches!(
            cache.load("abc", "eth0", "../x"),
            Err(CacheError::InvalidNetworkName(_))
        ));
        assert!(!dir.path().join("c").exists());
    }
}
