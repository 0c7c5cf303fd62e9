//! The platform images are pulled for, and picking its manifest out of an
//! OCI index or a Docker manifest list.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An OCI platform: `os/architecture[/variant]` in OCI/Go naming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// e.g. `v8` for arm64, `v7` for arm.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this host (linux/amd64 on x86_64).
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Self {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// How well an index entry's platform fits: `None` when it does not
    /// fit, higher is better (an exact variant beats a missing one).
    pub(crate) fn score(&self, os: &str, arch: &str, variant: Option<&str>) -> Option<u8> {
        if os != self.os || arch != self.architecture {
            return None;
        }
        let want = normalize_variant(arch, self.variant.as_deref());
        let have = normalize_variant(arch, variant);
        match (want, have) {
            (w, h) if w == h => Some(2),
            (_, None) => Some(1),
            _ => None,
        }
    }
}

fn normalize_variant<'a>(arch: &str, v: Option<&'a str>) -> Option<&'a str> {
    match (arch, v) {
        ("arm64", Some("v8")) => None,
        (_, Some("")) => None,
        (_, v) => v,
    }
}

impl Default for Platform {
    fn default() -> Self {
        Self::host()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants() {
        let arm = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
        };
        assert_eq!(arm.score("linux", "arm64", None), Some(2));
        assert_eq!(arm.score("linux", "arm64", Some("v8")), Some(2));
        assert_eq!(arm.score("linux", "amd64", None), None);
        let amd = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        assert_eq!(amd.score("linux", "amd64", None), Some(2));
        assert_eq!(amd.score("linux", "amd64", Some("v3")), None);
        assert_eq!(amd.score("windows", "amd64", None), None);
    }
}
