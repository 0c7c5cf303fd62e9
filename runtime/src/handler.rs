//! Runtime handlers: the table that maps a RuntimeClass handler name to an
//! OCI runtime binary speaking the standard CLI (runc, crun, …).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How one runtime handler is configured (`[runtime.handlers.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// Absolute path of the OCI runtime binary.
    pub path: PathBuf,
    /// The runtime's state directory (its `--root`); the runtime's own
    /// default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
}

/// Why a handler cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The handler's name is not a valid RuntimeClass handler name.
    #[error(
        "runtime handler name {0:?} is invalid: use lower-case letters, digits and '-' (a DNS label, at most 63 characters)"
    )]
    InvalidName(String),
    /// The binary's path is relative.
    #[error("runtime handler {name:?}: path {path} is not absolute")]
    RelativePath {
        /// The handler.
        name: String,
        /// The configured path.
        path: PathBuf,
    },
    /// The binary is missing or not executable.
    #[error("runtime handler {name:?}: {path} is not an executable file: {reason}")]
    NotExecutable {
        /// The handler.
        name: String,
        /// The configured path.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
}

/// Checks that `name` is a valid handler name: RuntimeClass handlers are DNS
/// labels (RFC 1123).
pub fn validate_name(name: &str) -> Result<(), HandlerError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(HandlerError::InvalidName(name.to_owned()))
    }
}

impl HandlerConfig {
    /// A handler for the binary at `path` with the runtime's default root.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            root: None,
        }
    }

    /// Checks what the config alone can tell: the name and an absolute path.
    pub fn validate(&self, name: &str) -> Result<(), HandlerError> {
        validate_name(name)?;
        if !self.path.is_absolute() {
            return Err(HandlerError::RelativePath {
                name: name.to_owned(),
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// Checks that the binary exists and is executable (a blocking call).
    pub fn check_binary(&self, name: &str) -> Result<(), HandlerError> {
        let not_exec = |reason: String| HandlerError::NotExecutable {
            name: name.to_owned(),
            path: self.path.clone(),
            reason,
        };
        let meta = std::fs::metadata(&self.path).map_err(|e| not_exec(e.to_string()))?;
        if !meta.is_file() {
            return Err(not_exec("not a regular file".into()));
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(not_exec("no execute permission".into()));
        }
        Ok(())
    }

    /// The binary's path.
    pub fn binary(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for good in ["runc", "crun", "kata-qemu", "h1"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Runc", "-x", "x-", "a_b", "a.b", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn relative_path_is_refused() {
        let err = HandlerConfig::new("runc")
            .validate("runc")
            .expect_err("relative");
        assert!(err.to_string().contains("not absolute"), "{err}");
    }

    #[test]
    fn check_binary_reports_missing_and_non_executable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = HandlerConfig::new(dir.path().join("nope"));
        let err = missing.check_binary("x").expect_err("missing");
        assert!(err.to_string().contains("nope"), "{err}");

        let file = dir.path().join("plain");
        std::fs::write(&file, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = HandlerConfig::new(&file)
            .check_binary("x")
            .expect_err("not exec");
        assert!(err.to_string().contains("no execute permission"), "{err}");

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        HandlerConfig::new(&file)
            .check_binary("x")
            .expect("executable");
    }
}
