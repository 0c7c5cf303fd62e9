//! containers-registries.conf (v2) support: `unqualified-search-registries`,
//! `[[registry]]` with `prefix`, `location`, `insecure`, `blocked`,
//! `mirror-by-digest-only` and `[[registry.mirror]]` (`location`,
//! `insecure`, `pull-from-mirror`). Drop-ins in `registries.conf.d/*.conf`
//! beside the file apply after it in lexical order, as
//! containers-registries.conf.d(5) defines: a key a drop-in sets replaces
//! the earlier value, and its `[[registry]]` tables replace those with the
//! same prefix and add the others. The files are re-read when one of them
//! changes (mtime, or a file added or removed), so edits apply without a
//! restart; a missing file means no mirrors and no blocks.

use crate::reference::ImageReference;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Why the registries configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistriesError {
    /// The file exists but cannot be read.
    #[error("reading registries config {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("parsing registries config {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A `[[registry]]` entry is not usable.
    #[error("registries config {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The reference's registry is blocked.
    #[error("pulling {reference} is blocked by the registries config")]
    Blocked {
        /// The reference.
        reference: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct FileV2 {
    /// None when the file does not set it (a drop-in keeps the earlier
    /// value).
    #[serde(default)]
    unqualified_search_registries: Option<Vec<String>>,
    #[serde(default)]
    registry: Vec<RegistryEntry>,
    /// The v1 format's `[registries.search]` etc.: refused, not ignored.
    #[serde(default)]
    registries: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RegistryEntry {
    prefix: Option<String>,
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<MirrorEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct MirrorEntry {
    location: String,
    #[serde(default)]
    insecure: bool,
    pull_from_mirror: Option<String>,
}

/// When a mirror may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MirrorUse {
    All,
    DigestOnly,
    TagOnly,
}

#[derive(Debug, Clone)]
struct Mirror {
    location: String,
    insecure: bool,
    usage: MirrorUse,
}

#[derive(Debug, Clone)]
struct Registry {
    prefix: String,
    location: String,
    insecure: bool,
    blocked: bool,
    mirrors: Vec<Mirror>,
}

/// One place to pull a reference from: a mirror or the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Registry host (with port), e.g. `127.0.0.1:5000`.
    pub host: String,
    /// Repository path at that host, e.g. `registry.k8s.io/pause`.
    pub repository: String,
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    /// A mirror rather than the origin.
    pub mirror: bool,
}

/// A parsed registries.conf.
#[derive(Debug, Clone, Default)]
pub struct RegistriesConfig {
    search: Vec<String>,
    registries: Vec<Registry>,
}

/// One file's settings, merged in file order.
#[derive(Debug, Default)]
struct Merged {
    search: Vec<String>,
    /// Entries with the file they came from (for messages), keyed by
    /// prefix (or location when the prefix is not given).
    entries: Vec<(String, PathBuf, RegistryEntry)>,
}

impl Merged {
    fn apply(&mut self, file: FileV2, path: &Path) -> Result<(), RegistriesError> {
        if file.registries.is_some() {
            return Err(RegistriesError::Invalid {
                path: path.to_owned(),
                reason: "the v1 format ([registries.*] tables) is not supported; use v2 [[registry]] entries"
                    .into(),
            });
        }
        if let Some(search) = file.unqualified_search_registries {
            self.search = search;
        }
        for entry in file.registry {
            let key = entry
                .prefix
                .clone()
                .or_else(|| entry.location.clone())
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned();
            let item = (key, path.to_owned(), entry);
            match self.entries.iter_mut().find(|(k, _, _)| *k == item.0) {
                Some(slot) => *slot = item,
                None => self.entries.push(item),
            }
        }
        Ok(())
    }
}

fn parse_file(text: &str, path: &Path) -> Result<FileV2, RegistriesError> {
    toml::from_str(text).map_err(|e| RegistriesError::Parse {
        path: path.to_owned(),
        source: Box::new(e),
    })
}

/// `<registries.conf>.d`, the drop-in directory beside the file.
fn drop_in_dir(path: &Path) -> PathBuf {
    let mut d = path.as_os_str().to_owned();
    d.push(".d");
    PathBuf::from(d)
}

/// The `*.conf` files of `dir`, in lexical order; none when it is missing.
fn drop_ins(dir: &Path) -> Result<Vec<PathBuf>, RegistriesError> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RegistriesError::Read {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in read {
        let entry = entry.map_err(|source| RegistriesError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "conf") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

impl RegistriesConfig {
    /// Parses registries.conf text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, RegistriesError> {
        let mut merged = Merged::default();
        merged.apply(parse_file(text, path)?, path)?;
        Self::build(merged)
    }

    fn build(merged: Merged) -> Result<Self, RegistriesError> {
        let mut registries = Vec::new();
        for (_, path, entry) in merged.entries {
            let invalid = |reason: String| RegistriesError::Invalid {
                path: path.clone(),
                reason,
            };
            let prefix = entry
                .prefix
                .or_else(|| entry.location.clone())
                .ok_or_else(|| invalid("a [[registry]] has neither prefix nor location".into()))?;
            let location = entry.location.unwrap_or_else(|| prefix.clone());
            let prefix = prefix.trim_end_matches('/').to_owned();
            if prefix.is_empty() {
                return Err(invalid("a [[registry]] has an empty prefix".into()));
            }
            if prefix.starts_with("*.") && location != prefix && !location.is_empty() {
                return Err(invalid(format!(
                    "wildcard prefix {prefix:?} cannot have a location"
                )));
            }
            let mut mirrors = Vec::new();
            for m in entry.mirror {
                let usage = match m.pull_from_mirror.as_deref() {
                    None | Some("all") | Some("") => MirrorUse::All,
                    Some("digest-only") => MirrorUse::DigestOnly,
                    Some("tag-only") => MirrorUse::TagOnly,
                    Some(other) => {
                        return Err(invalid(format!("unknown pull-from-mirror {other:?}")));
                    }
                };
                let usage = if entry.mirror_by_digest_only {
                    MirrorUse::DigestOnly
                } else {
                    usage
                };
                mirrors.push(Mirror {
                    location: m.location.trim_end_matches('/').to_owned(),
                    insecure: m.insecure,
                    usage,
                });
            }
            registries.push(Registry {
                prefix,
                location: location.trim_end_matches('/').to_owned(),
                insecure: entry.insecure,
                blocked: entry.blocked,
                mirrors,
            });
        }
        Ok(Self {
            search: merged.search,
            registries,
        })
    }

    /// Reads `path`, then the drop-ins of `<path>.d/*.conf` in lexical
    /// order; a missing file or directory adds nothing.
    pub fn load(path: &Path) -> Result<Self, RegistriesError> {
        let mut merged = Merged::default();
        let files = std::iter::once(path.to_owned()).chain(drop_ins(&drop_in_dir(path))?);
        for file in files {
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(RegistriesError::Read { path: file, source }),
            };
            merged.apply(parse_file(&text, &file)?, &file)?;
        }
        Self::build(merged)
    }

    /// The `unqualified-search-registries`.
    pub fn search_registries(&self) -> &[String] {
        &self.search
    }

    /// Where to pull `reference` from, in order: its mirrors, then the
    /// origin. Errors when the matching registry is blocked.
    pub fn endpoints(&self, reference: &ImageReference) -> Result<Vec<Endpoint>, RegistriesError> {
        let name = reference.name();
        let Some((reg, rest)) = self.best_match(&name) else {
            return Ok(vec![Endpoint {
                host: reference.domain().to_owned(),
                repository: reference.path().to_owned(),
                insecure: false,
                mirror: false,
            }]);
        };
        let by_digest = reference.digest().is_some();
        let mut out = Vec::new();
        for m in &reg.mirrors {
            let usable = match m.usage {
                MirrorUse::All => true,
                MirrorUse::DigestOnly => by_digest,
                MirrorUse::TagOnly => !by_digest,
            };
            if usable && let Some(ep) = endpoint(&m.location, rest, m.insecure, true) {
                out.push(ep);
            }
        }
        if reg.blocked {
            if out.is_empty() {
                return Err(RegistriesError::Blocked {
                    reference: reference.to_string(),
                });
            }
        } else {
            let location = if reg.prefix.starts_with("*.") {
                reference.domain()
            } else {
                &reg.location
            };
            let rest = if reg.prefix.starts_with("*.") {
                &name[reference.domain().len()..]
            } else {
                rest
            };
            if let Some(ep) = endpoint(location, rest, reg.insecure, false) {
                out.push(ep);
            }
        }
        Ok(out)
    }

    /// The registry entry with the longest prefix matching `name`, and the
    /// part of `name` after that prefix.
    fn best_match<'a, 'n>(&'a self, name: &'n str) -> Option<(&'a Registry, &'n str)> {
        let mut best: Option<(&Registry, &str, usize)> = None;
        for reg in &self.registries {
            let matched = if let Some(suffix) = reg.prefix.strip_prefix("*.") {
                let host = name.split('/').next().unwrap_or(name);
                host.ends_with(&format!(".{suffix}"))
                    .then(|| (&name[host.len()..], reg.prefix.len()))
            } else {
                name.strip_prefix(reg.prefix.as_str())
                    .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                    .map(|rest| (rest, reg.prefix.len()))
            };
            if let Some((rest, len)) = matched
                && best.is_none_or(|(_, _, l)| len > l)
            {
                best = Some((reg, rest, len));
            }
        }
        best.map(|(r, rest, _)| (r, rest))
    }
}

/// `location` (`host[/path]`) plus the remaining path `rest` (`/…` or empty).
fn endpoint(location: &str, rest: &str, insecure: bool, mirror: bool) -> Option<Endpoint> {
    let full = format!("{location}{rest}");
    let (host, repository) = full.split_once('/')?;
    if host.is_empty() || repository.is_empty() {
        return None;
    }
    Some(Endpoint {
        host: host.to_owned(),
        repository: repository.to_owned(),
        insecure,
        mirror,
    })
}

/// The mtimes of the file, its drop-in directory and each drop-in.
type Fingerprint = Vec<(PathBuf, Option<SystemTime>)>;

/// A registries.conf (with its drop-ins) that is re-read whenever one of
/// the files changes, appears or goes away.
#[derive(Debug)]
pub struct RegistriesWatcher {
    /// The file, and what was last read from it (mtime, config).
    state: Mutex<WatchedFile>,
}

#[derive(Debug)]
struct WatchedFile {
    path: PathBuf,
    cached: Option<(Fingerprint, Arc<RegistriesConfig>)>,
}

/// The mtimes of the file, its drop-in directory and each drop-in.
fn fingerprint(path: &Path) -> Fingerprint {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let dir = drop_in_dir(path);
    let mut files = vec![path.to_path_buf(), dir.clone()];
    files.extend(drop_ins(&dir).unwrap_or_default());
    files
        .into_iter()
        .map(|p| {
            let t = mtime(&p);
            (p, t)
        })
        .collect()
}

impl RegistriesWatcher {
    /// Watches `path` (read lazily, on first use).
    pub fn new(path: PathBuf) -> Self {
        Self {
            state: Mutex::new(WatchedFile { path, cached: None }),
        }
    }

    /// Watches `path` instead from now on (read on next use).
    pub fn set_path(&self, path: PathBuf) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = WatchedFile { path, cached: None };
    }

    /// The configuration as the files are now.
    pub fn current(&self) -> Result<Arc<RegistriesConfig>, RegistriesError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mtime = fingerprint(&state.path);
        if let Some((seen, cfg)) = state.cached.as_ref()
            && *seen == mtime
        {
            return Ok(Arc::clone(cfg));
        }
        let cfg = Arc::new(RegistriesConfig::load(&state.path)?);
        tracing::info!(path = %state.path.display(), registries = cfg.registries.len(), "loaded registries config");
        state.cached = Some((mtime, Arc::clone(&cfg)));
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_path_is_read_on_next_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = dir.path().join("first.conf");
        let second = dir.path().join("second.conf");
        std::fs::write(&first, "unqualified-search-registries = [\"a.example\"]\n").expect("write");
        std::fs::write(&second, "unqualified-search-registries = [\"b.example\"]\n")
            .expect("write");
        let watcher = RegistriesWatcher::new(first);
        let cfg = watcher.current().expect("first");
        assert_eq!(cfg.search_registries(), ["a.example"]);
        watcher.set_path(second);
        let cfg = watcher.current().expect("second");
        assert_eq!(cfg.search_registries(), ["b.example"]);
    }

    const CONF: &str = r#"
unqualified-search-registries = ["docker.io", "quay.io"]

[[registry]]
prefix = "registry.k8s.io"
location = "registry.k8s.io"
[[registry.mirror]]
location = "127.0.0.1:5000/registry.k8s.io"
insecure = true

[[registry]]
prefix = "registry.k8s.io/special"
location = "special.example.com/x"
insecure = true

[[registry]]
location = "blocked.io"
blocked = true

[[registry]]
prefix = "*.wild.io"
[[registry.mirror]]
location = "m.io/wild"
pull-from-mirror = "digest-only"
"#;

    fn eps(cfg: &RegistriesConfig, r: &str) -> Vec<(String, String, bool, bool)> {
        cfg.endpoints(&ImageReference::parse(r).expect("valid"))
            .expect("not blocked")
            .into_iter()
            .map(|e| (e.host, e.repository, e.insecure, e.mirror))
            .collect()
    }

    #[test]
    fn mirrors_then_origin_longest_prefix() {
        let cfg = RegistriesConfig::parse(CONF, Path::new("t")).expect("parses");
        assert_eq!(cfg.search_registries(), ["docker.io", "quay.io"]);
        assert_eq!(
            eps(&cfg, "registry.k8s.io/e2e-test-images/busybox:1.29-2"),
            vec![
                (
                    "127.0.0.1:5000".into(),
                    "registry.k8s.io/e2e-test-images/busybox".into(),
                    true,
                    true
                ),
                (
                    "registry.k8s.io".into(),
                    "e2e-test-images/busybox".into(),
                    false,
                    false
                ),
            ]
        );
        assert_eq!(
            eps(&cfg, "registry.k8s.io/special/a"),
            vec![("special.example.com".into(), "x/a".into(), true, false)]
        );
        // "registry.k8s.io2" does not match the prefix "registry.k8s.io".
        assert_eq!(eps(&cfg, "registry.k8s.io2/a").len(), 1);
        assert_eq!(
            eps(&cfg, "busybox"),
            vec![("docker.io".into(), "library/busybox".into(), false, false)]
        );
        assert!(matches!(
            cfg.endpoints(&ImageReference::parse("blocked.io/a").expect("valid")),
            Err(RegistriesError::Blocked { .. })
        ));
        // digest-only mirror is skipped for tags.
        assert_eq!(
            eps(&cfg, "a.wild.io/x"),
            vec![("a.wild.io".into(), "x".into(), false, false)]
        );
        let d = format!("a.wild.io/x@sha256:{}", "0".repeat(64));
        assert_eq!(
            eps(&cfg, &d)[0],
            ("m.io".into(), "wild/x".into(), false, true)
        );
    }

    #[test]
    fn drop_ins_apply_in_lexical_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registries.conf");
        std::fs::write(&path, CONF).expect("write");
        let d = dir.path().join("registries.conf.d");
        std::fs::create_dir(&d).expect("mkdir");
        // Replaces the search list and the registry.k8s.io entry, adds one.
        std::fs::write(
            d.join("20-b.conf"),
            "unqualified-search-registries = [\"b.io\"]\n\
             [[registry]]\nprefix = \"registry.k8s.io\"\nlocation = \"from-b.io\"\n\
             [[registry]]\nlocation = \"new.io\"\ninsecure = true\n",
        )
        .expect("write");
        // Sorted after 20-b: its search list wins; sets no registry.
        std::fs::write(
            d.join("30-c.conf"),
            "unqualified-search-registries = [\"c.io\"]\n",
        )
        .expect("write");
        // Sorted first: 20-b replaces its registry.k8s.io entry.
        std::fs::write(
            d.join("10-a.conf"),
            "[[registry]]\nprefix = \"registry.k8s.io\"\nlocation = \"from-a.io\"\n",
        )
        .expect("write");
        std::fs::write(d.join("99-ignored.toml"), "not toml [").expect("write");
        let w = RegistriesWatcher::new(path.clone());
        let cfg = w.current().expect("loads");
        assert_eq!(cfg.search_registries(), ["c.io"]);
        assert_eq!(
            eps(&cfg, "registry.k8s.io/pause:3.9"),
            vec![("from-b.io".into(), "pause".into(), false, false)],
            "the later drop-in's entry replaces the main file's (and its mirror)"
        );
        assert_eq!(
            eps(&cfg, "new.io/x"),
            vec![("new.io".into(), "x".into(), true, false)]
        );
        // Untouched entries of the main file stay.
        assert!(matches!(
            cfg.endpoints(&ImageReference::parse("blocked.io/a").expect("valid")),
            Err(RegistriesError::Blocked { .. })
        ));
        // A new drop-in is picked up without a restart, and a broken one
        // is an error naming it.
        std::fs::write(
            d.join("40-d.conf"),
            "[[registry]]\nlocation = \"new.io\"\nblocked = true\n",
        )
        .expect("write");
        let cfg = w.current().expect("reloads");
        assert!(
            cfg.endpoints(&ImageReference::parse("new.io/x").expect("valid"))
                .is_err()
        );
        std::fs::write(d.join("50-e.conf"), "[[registry]\n").expect("write");
        match w.current() {
            Err(RegistriesError::Parse { path, .. }) => assert!(path.ends_with("50-e.conf")),
            other => panic!("expected a parse error naming 50-e.conf: {other:?}"),
        }
    }

    #[test]
    fn v1_format_is_refused() {
        let v1 = "[registries.search]\nregistries = ['docker.io']\n";
        assert!(matches!(
            RegistriesConfig::parse(v1, Path::new("t")),
            Err(RegistriesError::Invalid { .. })
        ));
    }

    #[test]
    fn missing_file_is_empty_and_changes_are_picked_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registries.conf");
        let w = RegistriesWatcher::new(path.clone());
        assert!(w.current().expect("missing is fine").registries.is_empty());
        std::fs::write(&path, CONF).expect("write");
        assert_eq!(w.current().expect("loads").registries.len(), 4);
        std::fs::write(&path, "[[registry]]\nlocation = \"a.io\"\n").expect("write");
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        let f = std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open");
        f.set_modified(later).expect("set mtime");
        assert_eq!(w.current().expect("reloads").registries.len(), 1);
        std::fs::write(&path, "not toml [").expect("write");
        f.set_modified(later + std::time::Duration::from_secs(5))
            .expect("set mtime");
        assert!(matches!(w.current(), Err(RegistriesError::Parse { .. })));
    }
}
