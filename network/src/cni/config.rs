//! Network configuration files: finding and parsing the pod network's config.
//!
//! The CNI spec lets a directory hold several configurations; like every
//! runtime, krio uses the lexically first one that is valid.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::version;

/// Why no usable network configuration was found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config directory could not be read.
    #[error("cannot read CNI config dir {dir}: {source}")]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The directory holds no `.conflist`, `.conf` or `.json` file that is valid.
    #[error("no valid CNI network config in {dir}{}", describe_rejected(.rejected))]
    NoValidConfig {
        /// The directory.
        dir: PathBuf,
        /// Each candidate file and why it was rejected.
        rejected: Vec<(PathBuf, String)>,
    },
}

fn describe_rejected(rejected: &[(PathBuf, String)]) -> String {
    if rejected.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = rejected
        .iter()
        .map(|(p, why)| format!("{}: {why}", p.display()))
        .collect();
    format!(" (rejected: {})", parts.join("; "))
}

/// A network configuration list: the pod network and its plugin chain.
///
/// It serialises (for krio's CNI cache) to its own form, not to a CNI
/// config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfigList {
    /// The network's `name`.
    pub name: String,
    /// The CNI version krio speaks with this network's plugins: the highest
    /// supported one of the config's `cniVersion` and `cniVersions`.
    pub cni_version: String,
    /// Each plugin's configuration, in chain order (each has a `type`).
    pub plugins: Vec<serde_json::Value>,
    /// Whether CHECK is disabled for this network (`disableCheck`).
    #[serde(default)]
    pub disable_check: bool,
    /// Whether GC is disabled for this network (`disableGC`).
    #[serde(default)]
    pub disable_gc: bool,
    /// The file it was loaded from.
    pub source: PathBuf,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawList {
    cni_version: String,
    #[serde(default)]
    cni_versions: Vec<String>,
    name: String,
    plugins: Vec<serde_json::Value>,
    #[serde(default)]
    disable_check: bool,
    #[serde(default, rename = "disableGC")]
    disable_gc: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSingle {
    cni_version: String,
    name: String,
    #[serde(rename = "type")]
    plugin_type: String,
}

/// CNI versions whose results krio understands.
pub(crate) const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The highest version krio supports among the config's `cniVersion` and
/// `cniVersions` (the spec's version selection rule), or the `cniVersion`
/// itself when none is supported (validation then rejects it).
fn select_version(cni_version: String, cni_versions: &[String]) -> String {
    std::iter::once(&cni_version)
        .chain(cni_versions)
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .max_by(|a, b| version::compare(a, b))
        .cloned()
        .unwrap_or(cni_version)
}

/// Whether `name` is a valid network name: an alphanumeric character, then
/// alphanumerics, `_`, `.` or `-` (the spec's rule; it also keeps the name
/// safe as a file name in the cache).
pub(crate) fn is_valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 253
}

impl NetworkConfigList {
    /// Parses a config file's bytes; `.conflist` files hold a list, `.conf`
    /// and `.json` files a single plugin that becomes a one-plugin list.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, String> {
        let is_list = path.extension().is_some_and(|e| e == "conflist");
        let list = if is_list {
            let raw: RawList = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            NetworkConfigList {
                name: raw.name,
                cni_version: select_version(raw.cni_version, &raw.cni_versions),
                plugins: raw.plugins,
                disable_check: raw.disable_check,
                disable_gc: raw.disable_gc,
                source: path.to_path_buf(),
            }
        } else {
            let value: serde_json::Value =
                serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            let raw: RawSingle =
                serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
            if raw.plugin_type.is_empty() {
                return Err("plugin has an empty \"type\"".into());
            }
            NetworkConfigList {
                name: raw.name,
                cni_version: raw.cni_version,
                plugins: vec![value],
                disable_check: false,
                disable_gc: false,
                source: path.to_path_buf(),
            }
        };
        list.validate()?;
        Ok(list)
    }

    fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("\"name\" is empty".into());
        }
        if !is_valid_network_name(&self.name) {
            return Err(format!(
                "network name {:?} is invalid (want an alphanumeric, then alphanumerics, '_', '.' or '-')",
                self.name
            ));
        }
        if !SUPPORTED_VERSIONS.contains(&self.cni_version.as_str()) {
            return Err(format!(
                "cniVersion {:?} is not supported (supported: {})",
                self.cni_version,
                SUPPORTED_VERSIONS.join(", ")
            ));
        }
        if self.plugins.is_empty() {
            return Err("\"plugins\" is empty".into());
        }
        for (i, plugin) in self.plugins.iter().enumerate() {
            match plugin.get("type").and_then(|t| t.as_str()) {
                Some(t) if !t.is_empty() => {
                    if t.contains('/') || t == "." || t == ".." || t.contains('\0') {
                        return Err(format!("plugin {i} has an invalid \"type\" {t:?}"));
                    }
                }
                _ => return Err(format!("plugin {i} has no \"type\"")),
            }
        }
        Ok(())
    }
}

/// Loads the lexically first valid network configuration in `dir`.
pub fn load_default_network(dir: &Path) -> Result<NetworkConfigList, ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ConfigError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut candidates: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "conflist" | "conf" | "json"))
        })
        .collect();
    candidates.sort();
    let mut rejected = Vec::new();
    for path in candidates {
        match std::fs::read(&path) {
            Ok(bytes) => match NetworkConfigList::parse(&path, &bytes) {
                Ok(list) => return Ok(list),
                Err(why) => rejected.push((path, why)),
            },
            Err(e) => rejected.push((path, e.to_string())),
        }
    }
    Err(ConfigError::NoValidConfig {
        dir: dir.to_path_buf(),
        rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) {
        std::fs::write(dir.join(name), body).expect("write config");
    }

    #[test]
    fn empty_dir_is_not_ready() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = load_default_network(dir.path()).expect_err("no config");
        assert!(matches!(err, ConfigError::NoValidConfig { .. }));
        assert!(err.to_string().contains("no valid CNI network config"));
    }

    #[test]
    fn missing_dir_is_an_error_naming_it() {
        let err = load_default_network(Path::new("/nonexistent/krio-cni")).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/krio-cni"), "{err}");
    }

    #[test]
    fn lexically_first_valid_config_wins_and_invalid_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "05-broken.conflist", "{not json");
        write(
            dir.path(),
            "10-a.conflist",
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        );
        write(
            dir.path(),
            "20-b.conf",
            r#"{"cniVersion":"0.4.0","name":"b","type":"bridge"}"#,
        );
        write(dir.path(), "00-ignored.txt", "whatever");
        let net = load_default_network(dir.path()).expect("valid config");
        assert_eq!(net.name, "a");
        assert_eq!(net.plugins.len(), 2);
        assert_eq!(net.source, dir.path().join("10-a.conflist"));
    }

    #[test]
    fn single_plugin_conf_becomes_a_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "99-b.conf",
            r#"{"cniVersion":"0.3.1","name":"b","type":"bridge","bridge":"cni0"}"#,
        );
        let net = load_default_network(dir.path()).expect("valid config");
        assert_eq!(net.cni_version, "0.3.1");
        assert_eq!(net.plugins[0]["bridge"], "cni0");
    }

    #[test]
    fn highest_supported_of_cni_versions_is_selected() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "10-a.conflist",
            r#"{"cniVersion":"9.0.0","cniVersions":["0.3.1","1.1.0","1.0.0"],"name":"a",
                "disableGC":true,"plugins":[{"type":"bridge"}]}"#,
        );
        let net = load_default_network(dir.path()).expect("valid config");
        assert_eq!(net.cni_version, "1.1.0");
        assert!(net.disable_gc);
    }

    #[test]
    fn rejects_unsafe_names_and_types() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "1.conflist",
            r#"{"cniVersion":"1.0.0","name":"../x","plugins":[{"type":"bridge"}]}"#,
        );
        write(
            dir.path(),
            "2.conflist",
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"../../bin/sh"}]}"#,
        );
        let msg = load_default_network(dir.path())
            .expect_err("both invalid")
            .to_string();
        assert!(msg.contains("network name \"../x\" is invalid"), "{msg}");
        assert!(msg.contains("plugin 0 has an invalid \"type\""), "{msg}");
    }

    #[test]
    fn rejects_unsupported_version_and_missing_type() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "1.conflist",
            r#"{"cniVersion":"0.1.0","name":"a","plugins":[{"type":"bridge"}]}"#,
        );
        write(
            dir.path(),
            "2.conflist",
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"bridge":"x"}]}"#,
        );
        let err = load_default_network(dir.path()).expect_err("both invalid");
        let msg = err.to_string();
        assert!(
            msg.contains("1.conflist: cniVersion \"0.1.0\" is not supported"),
            "{msg}"
        );
        assert!(
            msg.contains("2.conflist: plugin 0 has no \"type\""),
            "{msg}"
        );
    }
}
