//! Loading the configuration: defaults, then the main file, then drop-ins in
//! lexical order, then `KRIO_*` environment and flags (both arrive through
//! clap as [`Overrides`]). Each file is checked on its own first, so an
//! unknown key or a bad value is reported with the file that holds it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::schema::{CgroupManager, Config, LogLevel};

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file (or the drop-in dir) could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid TOML.
    #[error("{file}: invalid TOML: {message}")]
    Syntax {
        /// The file.
        file: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key in a file is unknown or has a value of the wrong kind.
    #[error("{file}: key `{key}`: {message}")]
    Key {
        /// The file.
        file: PathBuf,
        /// The dotted key path.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The merged configuration breaks a rule.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The dotted key path.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// Values from the command line or `KRIO_*` environment, which win over files.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--root`.
    pub root: Option<PathBuf>,
    /// `--runroot`.
    pub runroot: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--log-level`.
    pub log_level: Option<LogLevel>,
    /// `--cgroup-manager`.
    pub cgroup_manager: Option<CgroupManager>,
    /// `--cni-config-dir`.
    pub cni_config_dir: Option<PathBuf>,
    /// `--cni-plugin-dir` (repeatable).
    pub cni_plugin_dirs: Vec<PathBuf>,
    /// `--registries-conf`.
    pub registries_conf: Option<PathBuf>,
    /// `--stream-address`.
    pub stream_address: Option<IpAddr>,
    /// `--stream-port`.
    pub stream_port: Option<u16>,
    /// `--default-runtime`.
    pub default_runtime: Option<String>,
}

/// Where the files come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The main file; a missing file is an error only if `required`.
    pub file: PathBuf,
    /// Whether the main file was named explicitly (then it must exist).
    pub required: bool,
    /// The drop-in directory (`*.toml`, lexical order); may be missing.
    pub dir: PathBuf,
}

/// Loads the effective configuration, returning it with the files it read.
pub fn load(
    sources: &Sources,
    overrides: &Overrides,
) -> Result<(Config, Vec<PathBuf>), ConfigError> {
    let mut merged =
        toml::Table::try_from(Config::default()).map_err(|e| ConfigError::Invalid {
            key: String::new(),
            message: format!("defaults do not serialise: {e}"),
        })?;
    let mut read = Vec::new();

    match std::fs::read_to_string(&sources.file) {
        Ok(text) => {
            merge_file(&mut merged, &sources.file, &text)?;
            read.push(sources.file.clone());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !sources.required => {}
        Err(source) => {
            return Err(ConfigError::Read {
                path: sources.file.clone(),
                source,
            });
        }
    }

    for file in drop_ins(&sources.dir)? {
        let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
            path: file.clone(),
            source,
        })?;
        merge_file(&mut merged, &file, &text)?;
        read.push(file);
    }

    let mut config: Config =
        from_table(merged).map_err(|(key, message)| ConfigError::Invalid { key, message })?;
    apply(&mut config, overrides);
    normalise(&mut config);
    validate(&config)?;
    Ok((config, read))
}

/// The `*.toml` files of the drop-in dir in lexical order.
fn drop_ins(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfigError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Checks one file on its own, then merges it over `base`.
fn merge_file(base: &mut toml::Table, file: &Path, text: &str) -> Result<(), ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            file: file.to_path_buf(),
            message: e.message().to_owned(),
        })?;
    from_table(table.clone()).map_err(|(key, message)| ConfigError::Key {
        file: file.to_path_buf(),
        key,
        message,
    })?;
    deep_merge(base, table);
    Ok(())
}

/// Deserialises a table, keeping the dotted path of the key that failed.
fn from_table(table: toml::Table) -> Result<Config, (String, String)> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.message().to_owned();
        // For an unknown key the path ends at the table; name the key itself.
        let key = match unknown_field(&message) {
            Some(field) if path == "." => field.to_owned(),
            Some(field) => format!("{path}.{field}"),
            None => path,
        };
        (key, message)
    })
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// Tables merge key by key; any other value (arrays included) replaces.
fn deep_merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => deep_merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn apply(config: &mut Config, o: &Overrides) {
    if let Some(v) = &o.root {
        config.root.clone_from(v);
    }
    if let Some(v) = &o.runroot {
        config.runroot.clone_from(v);
    }
    if let Some(v) = &o.listen {
        config.listen = PathBuf::from(v);
    }
    if let Some(v) = o.log_level {
        config.log_level = v;
    }
    if let Some(v) = o.cgroup_manager {
        config.cgroup_manager = v;
    }
    if let Some(v) = &o.cni_config_dir {
        config.cni.conf_dir.clone_from(v);
    }
    if !o.cni_plugin_dirs.is_empty() {
        config.cni.plugin_dirs.clone_from(&o.cni_plugin_dirs);
    }
    if let Some(v) = &o.registries_conf {
        config.image.registries_conf.clone_from(v);
    }
    if let Some(v) = o.stream_address {
        config.streaming.address = v;
    }
    if let Some(v) = o.stream_port {
        config.streaming.port = v;
    }
    if let Some(v) = &o.default_runtime {
        config.runtime.default_handler.clone_from(v);
    }
}

/// Accepts `unix:///path` for the socket, as the kubelet and crictl write it.
fn normalise(config: &mut Config) {
    if let Some(path) = config
        .listen
        .to_str()
        .and_then(|s| s.strip_prefix("unix://"))
    {
        config.listen = PathBuf::from(path);
    }
}

fn validate(config: &Config) -> Result<(), ConfigError> {
    let absolute = |key: &str, path: &Path| {
        if path.is_absolute() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                message: format!("{} is not an absolute path", path.display()),
            })
        }
    };
    absolute("root", &config.root)?;
    absolute("runroot", &config.runroot)?;
    absolute("listen", &config.listen)?;
    absolute("cni.conf_dir", &config.cni.conf_dir)?;
    for dir in &config.cni.plugin_dirs {
        absolute("cni.plugin_dirs", dir)?;
    }
    absolute("image.registries_conf", &config.image.registries_conf)?;
    absolute("image.auth_file", &config.image.auth_file)?;
    absolute("image.certs_dir", &config.image.certs_dir)?;
    if config.image.max_unpacked_bytes == 0 {
        return Err(ConfigError::Invalid {
            key: "image.max_unpacked_bytes".into(),
            message: "must be more than 0".into(),
        });
    }
    if config.image.pause_image.trim().is_empty() {
        return Err(ConfigError::Invalid {
            key: "image.pause_image".into(),
            message: "must name an image".into(),
        });
    }
    if config.streaming.tls_cert.is_some() != config.streaming.tls_key.is_some() {
        return Err(ConfigError::Invalid {
            key: "streaming.tls_cert".into(),
            message: "tls_cert and tls_key must be set together".into(),
        });
    }
    if config.metrics.enable
        && config.metrics.address.port() != 0
        && config.metrics.address.ip() == config.streaming.address
        && config.metrics.address.port() == config.streaming.port
    {
        return Err(ConfigError::Invalid {
            key: "metrics.address".into(),
            message: format!(
                "{} is also the streaming server's address; give metrics another port",
                config.metrics.address
            ),
        });
    }
    for (name, handler) in &config.runtime.handlers {
        handler.validate(name).map_err(|e| ConfigError::Invalid {
            key: format!("runtime.handlers.{name}"),
            message: e.to_string(),
        })?;
    }
    if !config
        .runtime
        .handlers
        .contains_key(&config.runtime.default_handler)
    {
        let known: Vec<&str> = config.runtime.handlers.keys().map(String::as_str).collect();
        return Err(ConfigError::Invalid {
            key: "runtime.default_handler".into(),
            message: format!(
                "{:?} is not a configured handler (configured: {})",
                config.runtime.default_handler,
                known.join(", ")
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(dir: &Path) -> Sources {
        Sources {
            file: dir.join("krio.toml"),
            required: false,
            dir: dir.join("krio.d"),
        }
    }

    #[test]
    fn no_files_gives_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (config, read) = load(&sources(dir.path()), &Overrides::default()).expect("load");
        assert_eq!(config, Config::default());
        assert!(read.is_empty());
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = sources(dir.path());
        s.required = true;
        let err = load(&s, &Overrides::default()).expect_err("missing");
        assert!(err.to_string().contains("krio.toml"), "{err}");
    }

    #[test]
    fn unknown_nested_key_names_file_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("krio.toml"), "[cni]\nconf_dirs = \"/x\"\n").expect("write");
        let err = load(&sources(dir.path()), &Overrides::default()).expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains("krio.toml"), "{msg}");
        assert!(msg.contains("cni.conf_dirs"), "{msg}");
        assert!(msg.contains("conf_dir"), "allowed keys listed: {msg}");
    }

    #[test]
    fn bad_enum_value_lists_allowed_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("krio.toml"), "log_level = \"loud\"\n").expect("write");
        let msg = load(&sources(dir.path()), &Overrides::default())
            .expect_err("bad value")
            .to_string();
        assert!(msg.contains("key `log_level`"), "{msg}");
        assert!(msg.contains("debug"), "{msg}");
    }

    #[test]
    fn drop_ins_merge_tables_and_apply_in_lexical_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("krio.d");
        std::fs::create_dir(&d).expect("mkdir");
        std::fs::write(
            d.join("20-b.toml"),
            "[runtime.handlers.kata]\npath = \"/opt/kata\"\nroot = \"/run/kata\"\n",
        )
        .expect("write");
        std::fs::write(
            d.join("10-a.toml"),
            "[runtime]\ndefault_handler = \"crun\"\n",
        )
        .expect("write");
        std::fs::write(
            d.join("30-c.toml"),
            "[runtime]\ndefault_handler = \"kata\"\n",
        )
        .expect("write");
        std::fs::write(d.join("ignored.conf"), "garbage = [").expect("write");
        let (config, read) = load(&sources(dir.path()), &Overrides::default()).expect("load");
        assert_eq!(config.runtime.default_handler, "kata");
        assert_eq!(
            config.runtime.handlers.len(),
            3,
            "defaults kept, kata added"
        );
        assert_eq!(read.len(), 3);
    }

    #[test]
    fn default_handler_must_exist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Overrides {
            default_runtime: Some("youki".into()),
            ..Overrides::default()
        };
        let msg = load(&sources(dir.path()), &o)
            .expect_err("unknown handler")
            .to_string();
        assert!(msg.contains("runtime.default_handler"), "{msg}");
        assert!(msg.contains("crun, runc"), "{msg}");
    }

    #[test]
    fn unix_scheme_is_stripped_from_listen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Overrides {
            listen: Some("unix:///tmp/k.sock".into()),
            ..Overrides::default()
        };
        let (config, _) = load(&sources(dir.path()), &o).expect("load");
        assert_eq!(config.listen, PathBuf::from("/tmp/k.sock"));
    }

    #[test]
    fn metrics_are_off_by_default_and_the_address_is_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (config, _) = load(&sources(dir.path()), &Overrides::default()).expect("load");
        assert!(!config.metrics.enable);
        std::fs::write(
            dir.path().join("krio.toml"),
            "[metrics]\nenable = true\naddress = \"localhost\"\n",
        )
        .expect("write");
        let msg = load(&sources(dir.path()), &Overrides::default())
            .expect_err("not a socket address")
            .to_string();
        assert!(msg.contains("metrics.address"), "{msg}");
        std::fs::write(
            dir.path().join("krio.toml"),
            "[metrics]\nenable = true\naddress = \"127.0.0.1:10250\"\n[streaming]\nport = 10250\n",
        )
        .expect("write");
        let msg = load(&sources(dir.path()), &Overrides::default())
            .expect_err("same address as streaming")
            .to_string();
        assert!(msg.contains("metrics.address"), "{msg}");
        assert!(msg.contains("streaming"), "{msg}");
    }

    #[test]
    fn syntax_error_names_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("krio.toml"), "root = \n").expect("write");
        let msg = load(&sources(dir.path()), &Overrides::default())
            .expect_err("syntax")
            .to_string();
        assert!(msg.contains("krio.toml: invalid TOML"), "{msg}");
    }
}
