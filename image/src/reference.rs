//! Image references, normalised the way the kubelet and containerd do it:
//! `busybox` → `docker.io/library/busybox:latest`, `user/x` →
//! `docker.io/user/x:latest`, `host:5000/x` keeps its host, and
//! `name:tag@digest` keeps both.

use crate::digest::Digest;
use std::fmt;

/// The default registry of unqualified names.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The tag of a reference that names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// Why a reference is not valid.
#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    /// The reference as given.
    pub reference: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
    qualified: bool,
}

impl ImageReference {
    /// Parses and normalises `s`. A reference without tag and digest gets
    /// the tag `latest`.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let err = |reason| ReferenceError {
            reference: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(err("empty reference"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(
                    Digest::parse(d)
                        .map_err(|_| err("digest must be sha256:<64 lower-case hex>"))?,
                ),
            ),
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(err("tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
        }
        let (domain, path, qualified) = split_domain(name);
        if !valid_domain(&domain) {
            return Err(err("invalid registry host"));
        }
        if path.is_empty() {
            return Err(err("empty repository name"));
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err("repository name must be lowercase"));
        }
        if !path.split('/').all(valid_path_component) {
            return Err(err(
                "repository path components must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*",
            ));
        }
        if domain.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(err("repository name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_owned()),
        };
        Ok(Self {
            domain,
            path,
            tag,
            digest,
            qualified,
        })
    }

    /// The registry host (with port), e.g. `docker.io`, `127.0.0.1:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry, e.g. `library/busybox`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `domain/path`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag, if any (`latest` when neither tag nor digest was given).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// False when the input named no registry (`busybox`, `user/x`): such
    /// names may be looked up in the unqualified-search registries.
    pub fn is_qualified(&self) -> bool {
        self.qualified
    }

    /// `name:tag`, if the reference has a tag.
    pub fn tagged_name(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `name@digest` for the given digest.
    pub fn digested_name(&self, digest: &Digest) -> String {
        format!("{}@{digest}", self.name())
    }

    /// The same repository path and tag/digest under another registry
    /// (for unqualified-search registries).
    pub fn with_domain(&self, domain: &str) -> Self {
        let mut path = self.path.clone();
        if self.domain == DEFAULT_DOMAIN
            && domain != DEFAULT_DOMAIN
            && let Some(p) = path.strip_prefix("library/")
        {
            path = p.to_owned();
        }
        Self {
            domain: domain.to_owned(),
            path,
            tag: self.tag.clone(),
            digest: self.digest.clone(),
            qualified: true,
        }
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn split_domain(name: &str) -> (String, String, bool) {
    let (domain, path, qualified) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_owned(), rest.to_owned(), true)
        }
        _ => (DEFAULT_DOMAIN.to_owned(), name.to_owned(), false),
    };
    let domain = if domain == "index.docker.io" {
        DEFAULT_DOMAIN.to_owned()
    } else {
        domain
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    (domain, path, qualified)
}

fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || domain.starts_with('[') => (h, Some(p)),
        _ => (domain, None),
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if let Some(v6) = host.strip_prefix('[') {
        return v6
            .strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok());
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|s| s == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ImageReference::parse(s)
            .expect("valid reference")
            .to_string()
    }

    #[test]
    fn normalises_like_the_kubelet() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.29"), "docker.io/library/busybox:1.29");
        assert_eq!(norm("user/x"), "docker.io/user/x:latest");
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(norm("index.docker.io/a/b"), "docker.io/a/b:latest");
        assert_eq!(norm("host:5000/x"), "host:5000/x:latest");
        assert_eq!(norm("localhost/x:1"), "localhost/x:1");
        assert_eq!(
            norm("registry.k8s.io/e2e-test-images/busybox:1.29-2"),
            "registry.k8s.io/e2e-test-images/busybox:1.29-2"
        );
        assert_eq!(
            norm(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(norm(&format!("h.io/a/b:t@{d}")), format!("h.io/a/b:t@{d}"));
        assert_eq!(norm("[::1]:5000/a"), "[::1]:5000/a:latest");
        assert!(
            !ImageReference::parse("busybox")
                .expect("valid")
                .is_qualified()
        );
        assert!(
            ImageReference::parse("a.io/b")
                .expect("valid")
                .is_qualified()
        );
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "",
            "Busybox",
            "docker.io/Library/busybox",
            "busybox@sha256:abc",
            "busybox@md5:aaaa",
            "busybox:",
            "busybox:-x",
            "a//b",
            "a/../b",
            "a/.b",
            "host:port/x",
            "x:tag:tag",
            &format!("busybox:{}", "t".repeat(129)),
        ] {
            assert!(ImageReference::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn search_domain_drops_library() {
        let r = ImageReference::parse("busybox").expect("valid");
        assert_eq!(
            r.with_domain("quay.io").to_string(),
            "quay.io/busybox:latest"
        );
    }
}
