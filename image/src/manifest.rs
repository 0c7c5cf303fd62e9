//! The registry documents krio reads: OCI image indexes and Docker manifest
//! lists, OCI and Docker schema 2 manifests, and the parts of the image
//! config a pull needs. Parsed leniently (unknown fields ignored), checked
//! strictly (media types, digests, sizes).

use crate::digest::Digest;
use crate::platform::Platform;
use serde::Deserialize;

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Every manifest media type a pull accepts.
pub const ACCEPTED: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// Largest manifest or index accepted (containerd uses the same bound).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Largest image config accepted.
pub const MAX_CONFIG_SIZE: u64 = 8 << 20;
/// Most layers an image may have (overlayfs stacks at most 500).
pub const MAX_LAYERS: usize = 500;

/// Why a registry document is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of the expected shape.
    #[error("parsing {what} {digest}")]
    Parse {
        /// manifest, index or config.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A media type krio does not pull.
    #[error("{digest}: unsupported media type {media_type:?}")]
    MediaType {
        /// The document's digest.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// A descriptor's digest is not a valid sha256 digest.
    #[error("{digest}: descriptor has an invalid digest {bad:?}")]
    BadDigest {
        /// The document's digest.
        digest: String,
        /// The descriptor's digest.
        bad: String,
    },
    /// The index has no manifest for the platform.
    #[error("index {digest} has no manifest for platform {platform}")]
    NoPlatform {
        /// The index digest.
        digest: String,
        /// The platform asked for.
        platform: String,
    },
    /// The config's diff IDs do not match the manifest's layers.
    #[error("image {digest}: config lists {diff_ids} layers but the manifest {layers}")]
    LayerCount {
        /// The manifest digest.
        digest: String,
        /// diff_ids in the config.
        diff_ids: usize,
        /// layers in the manifest.
        layers: usize,
    },
    /// More layers than overlayfs can stack.
    #[error("image {digest} has {layers} layers, more than the {max} allowed")]
    TooManyLayers {
        /// The manifest digest.
        digest: String,
        /// Its layer count.
        layers: usize,
        /// The limit.
        max: usize,
    },
    /// A size is out of bounds.
    #[error("{what} {digest} is {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// manifest or config.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
}

/// A content descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    #[serde(default)]
    pub media_type: String,
    /// Digest (unvalidated as read; see [`Descriptor::checked_digest`]).
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Platform, in index entries.
    #[serde(default)]
    pub platform: Option<PlatformJson>,
}

impl Descriptor {
    /// The validated digest.
    pub fn checked_digest(&self, parent: &Digest) -> Result<Digest, ManifestError> {
        Digest::parse(&self.digest).map_err(|_| ManifestError::BadDigest {
            digest: parent.to_string(),
            bad: self.digest.clone(),
        })
    }
}

/// A platform as an index entry spells it.
#[derive(Debug, Clone, Deserialize)]
pub struct PlatformJson {
    /// OS.
    pub os: String,
    /// Architecture.
    pub architecture: String,
    /// Variant.
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

/// An index or a manifest.
#[derive(Debug)]
pub enum Document {
    /// OCI index or Docker manifest list.
    Index(Vec<Descriptor>),
    /// OCI or Docker schema 2 manifest.
    Manifest(Manifest),
}

/// An image manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// The config blob.
    pub config: Descriptor,
    /// Layers, base first.
    pub layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct IndexJson {
    manifests: Vec<Descriptor>,
}

/// Parses a manifest or index; `header_type` is the HTTP Content-Type (or
/// empty) and the document's own `mediaType` wins when present.
pub fn parse_document(
    bytes: &[u8],
    digest: &Digest,
    header_type: &str,
) -> Result<Document, ManifestError> {
    let parse_err = |what, source| ManifestError::Parse {
        what,
        digest: digest.to_string(),
        source,
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| parse_err("manifest", e))?;
    let media_type = probe.media_type.clone().unwrap_or_else(|| {
        if probe.manifests.is_some() {
            OCI_INDEX.to_owned()
        } else if header_type.is_empty() {
            OCI_MANIFEST.to_owned()
        } else {
            header_type.to_owned()
        }
    });
    match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => {
            let idx: IndexJson =
                serde_json::from_slice(bytes).map_err(|e| parse_err("index", e))?;
            Ok(Document::Index(idx.manifests))
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let m: Manifest =
                serde_json::from_slice(bytes).map_err(|e| parse_err("manifest", e))?;
            Ok(Document::Manifest(m))
        }
        other => Err(ManifestError::MediaType {
            digest: digest.to_string(),
            media_type: other.to_owned(),
        }),
    }
}

/// The index entry for `platform` (best variant match, first on ties).
pub fn select_platform<'a>(
    entries: &'a [Descriptor],
    platform: &Platform,
    index_digest: &Digest,
) -> Result<&'a Descriptor, ManifestError> {
    let mut best: Option<(&Descriptor, u8)> = None;
    for e in entries {
        if !matches!(e.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST | "") {
            continue;
        }
        let Some(p) = &e.platform else { continue };
        if let Some(s) = platform.score(&p.os, &p.architecture, p.variant.as_deref())
            && best.is_none_or(|(_, b)| s > b)
        {
            best = Some((e, s));
        }
    }
    best.map(|(e, _)| e)
        .ok_or_else(|| ManifestError::NoPlatform {
            digest: index_digest.to_string(),
            platform: platform.to_string(),
        })
}

/// What a pull needs from the image config.
#[derive(Debug, Deserialize)]
pub struct ConfigSummary {
    /// `rootfs.diff_ids`.
    pub rootfs: RootFs,
    /// `config`.
    #[serde(default)]
    pub config: Option<ConfigInner>,
    /// `created` (RFC 3339).
    #[serde(default)]
    pub created: Option<String>,
}

/// `rootfs` of a config.
#[derive(Debug, Deserialize)]
pub struct RootFs {
    /// Uncompressed layer digests, base first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// `config` of a config.
#[derive(Debug, Deserialize)]
pub struct ConfigInner {
    /// `User`.
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

/// Parses the parts of an image config a pull needs.
pub fn parse_config(bytes: &[u8], digest: &Digest) -> Result<ConfigSummary, ManifestError> {
    serde_json::from_slice(bytes).map_err(|source| ManifestError::Parse {
        what: "config",
        digest: digest.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_platform_from_index() {
        let d = Digest::of_bytes(b"x");
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{a}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{b}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            a = "a".repeat(64),
            b = "b".repeat(64)
        );
        let Document::Index(entries) = parse_document(idx.as_bytes(), &d, "").expect("parses")
        else {
            panic!("not an index");
        };
        let amd = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        assert!(
            select_platform(&entries, &amd, &d)
                .expect("found")
                .digest
                .contains("bbbb")
        );
        let s390 = Platform {
            os: "linux".into(),
            architecture: "s390x".into(),
            variant: None,
        };
        assert!(select_platform(&entries, &s390, &d).is_err());
    }

    #[test]
    fn rejects_unknown_media_type() {
        let d = Digest::of_bytes(b"x");
        let doc = br#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#;
        assert!(matches!(
            parse_document(doc, &d, ""),
            Err(ManifestError::MediaType { .. })
        ));
    }
}
