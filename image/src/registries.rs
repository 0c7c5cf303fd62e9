//! containers-registries.conf (v2) support: `unqualified-search-registries`,
//! `[[registry]]` with `prefix`, `location`, `insecure`, `blocked`,
//! `mirror-by-digest-only` and `[[registry.mirror]]` (`location`,
//! `insecure`, `pull-from-mirror`). The file is re-read when its mtime
//! changes, so edits apply without a restart; a missing file means no
//! mirrors and no blocks.

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
    #[serde(default)]
    unqualified_search_registries: Vec<String>,
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

impl RegistriesConfig {
    /// Parses registries.conf text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, RegistriesError> {
        let file: FileV2 = toml::from_str(text).map_err(|e| RegistriesError::Parse {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        let invalid = |reason: String| RegistriesError::Invalid {
            path: path.to_owned(),
            reason,
        };
        if file.registries.is_some() {
            return Err(invalid(
                "the v1 format ([registries.*] tables) is not supported; use v2 [[registry]] entries"
                    .into(),
            ));
        }
        let mut registries = Vec::new();
        for entry in file.registry {
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
            search: file.unqualified_search_registries,
            registries,
        })
    }

    /// Reads `path`; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<Self, RegistriesError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(RegistriesError::Read {
                path: path.to_owned(),
                source,
            }),
        }
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

/// A registries.conf that is re-read whenever its mtime (or existence)
/// changes.
#[derive(Debug)]
pub struct RegistriesWatcher {
    /// The file, and what was last read from it (mtime, config).
    state: Mutex<WatchedFile>,
}

#[derive(Debug)]
struct WatchedFile {
    path: PathBuf,
    cached: Option<(Option<SystemTime>, Arc<RegistriesConfig>)>,
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

    /// The configuration as the file is now.
    pub fn current(&self) -> Result<Arc<RegistriesConfig>, RegistriesError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mtime = std::fs::metadata(&state.path)
            .and_then(|m| m.modified())
            .ok();
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
