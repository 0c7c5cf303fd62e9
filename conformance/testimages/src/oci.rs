//! OCI / Docker image JSON: configs, manifests and indexes, serialized with a
//! fixed key order (struct field order, `BTreeMap` for maps) so the same
//! input always gives the same bytes and digests.

use std::collections::BTreeMap;
use std::rc::Rc;

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::layer::Layer;

/// OCI image index.
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config.
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer.
pub const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Docker schema 2 manifest.
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config.
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const MEDIA_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The `created` time of every image and history entry.
pub const CREATED: &str = "2024-01-01T00:00:00Z";

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// A content-addressed blob: bytes, their digest and media type.
#[derive(Clone, Debug)]
pub struct Blob {
    /// Media type used in descriptors (and as Content-Type for manifests).
    pub media_type: &'static str,
    /// `sha256:<hex>` of `data`.
    pub digest: String,
    /// The bytes.
    pub data: Rc<[u8]>,
}

impl Blob {
    /// Wraps `data`, computing its digest.
    pub fn new(media_type: &'static str, data: Vec<u8>) -> Self {
        Self {
            media_type,
            digest: sha256_digest(&data),
            data: data.into(),
        }
    }

    fn json<T: Serialize>(media_type: &'static str, value: &T) -> Result<Self> {
        let data = serde_json::to_vec(value).context("serializing JSON")?;
        Ok(Self::new(media_type, data))
    }

    fn descriptor(&self, media_type: &'static str, platform: Option<Platform>) -> Descriptor {
        Descriptor {
            media_type,
            digest: self.digest.clone(),
            size: self.data.len() as u64,
            platform,
        }
    }
}

/// How an image is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OCI index with a linux/amd64 manifest and a linux/arm64/v8 manifest
    /// (the same layers; only the config's platform differs).
    OciIndex,
    /// A single linux/amd64 OCI manifest.
    OciManifest,
    /// A single linux/amd64 Docker schema 2 manifest.
    DockerManifest,
}

/// The runtime part of an image config (`config` in the JSON).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunConfig {
    /// `User`: uid, name, `uid:gid` or `name:gid`.
    #[serde(rename = "User", skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `ExposedPorts`: `"80/tcp"` and the like.
    #[serde(rename = "ExposedPorts", skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, Empty>,
    /// `Env`: `KEY=value` entries.
    #[serde(rename = "Env", skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// `Entrypoint`.
    #[serde(rename = "Entrypoint", skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    #[serde(rename = "Cmd", skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// `WorkingDir`.
    #[serde(rename = "WorkingDir", skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    /// `Labels`.
    #[serde(rename = "Labels", skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The empty JSON object (`{}`), the value type of `ExposedPorts`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Empty {}

/// One step of an image's history.
#[derive(Clone, Debug, Serialize)]
pub struct History {
    created: &'static str,
    created_by: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    empty_layer: bool,
}

impl History {
    /// A step that added a layer.
    pub fn layer(created_by: impl Into<String>) -> Self {
        Self {
            created: CREATED,
            created_by: created_by.into(),
            empty_layer: false,
        }
    }

    /// A step that only changed the config.
    pub fn config(created_by: impl Into<String>) -> Self {
        Self {
            created: CREATED,
            created_by: created_by.into(),
            empty_layer: true,
        }
    }
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<&'a str>,
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    architecture: &'static str,
    config: &'a RunConfig,
    created: &'static str,
    history: &'a [History],
    os: &'static str,
    rootfs: RootFs<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
struct Platform {
    architecture: &'static str,
    os: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
}

#[derive(Serialize)]
struct Manifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Serialize)]
struct Index {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

/// What an image is made of, before it is turned into JSON.
pub struct Content {
    /// Layers, base first.
    pub layers: Vec<Rc<Layer>>,
    /// Runtime config.
    pub config: RunConfig,
    /// History, one entry per layer plus config-only steps.
    pub history: Vec<History>,
}

/// An image ready to push: every blob, child manifests and the top-level
/// manifest or index (the one tags point at).
pub struct Assembled {
    /// Layers and configs.
    pub blobs: Vec<Blob>,
    /// Manifests an index refers to (pushed by digest before the index).
    pub children: Vec<Blob>,
    /// The manifest or index that tags point at.
    pub top: Blob,
}

const AMD64: Platform = Platform {
    architecture: "amd64",
    os: "linux",
    variant: None,
};
const ARM64: Platform = Platform {
    architecture: "arm64",
    os: "linux",
    variant: Some("v8"),
};

fn config_blob(content: &Content, platform: &Platform, media_type: &'static str) -> Result<Blob> {
    let config = ImageConfig {
        architecture: platform.architecture,
        config: &content.config,
        created: CREATED,
        history: &content.history,
        os: platform.os,
        rootfs: RootFs {
            kind: "layers",
            diff_ids: content.layers.iter().map(|l| l.diff_id.as_str()).collect(),
        },
        variant: platform.variant,
    };
    Blob::json(media_type, &config)
}

fn manifest_blob(
    content: &Content,
    config: &Blob,
    manifest_type: &'static str,
    layer_type: &'static str,
) -> Result<Blob> {
    let manifest = Manifest {
        schema_version: 2,
        media_type: manifest_type,
        config: config.descriptor(config.media_type, None),
        layers: content
            .layers
            .iter()
            .map(|l| l.blob.descriptor(layer_type, None))
            .collect(),
    };
    Blob::json(manifest_type, &manifest)
}

/// Turns `content` into configs, manifests and, for [`Format::OciIndex`],
/// an index.
pub fn assemble(content: &Content, format: Format) -> Result<Assembled> {
    let mut blobs: Vec<Blob> = content.layers.iter().map(|l| l.blob.clone()).collect();
    match format {
        Format::OciManifest | Format::DockerManifest => {
            let (manifest_type, config_type, layer_type) = if format == Format::DockerManifest {
                (
                    MEDIA_DOCKER_MANIFEST,
                    MEDIA_DOCKER_CONFIG,
                    MEDIA_DOCKER_LAYER_GZIP,
                )
            } else {
                (MEDIA_OCI_MANIFEST, MEDIA_OCI_CONFIG, MEDIA_OCI_LAYER_GZIP)
            };
            let config = config_blob(content, &AMD64, config_type)?;
            let top = manifest_blob(content, &config, manifest_type, layer_type)?;
            blobs.push(config);
            Ok(Assembled {
                blobs,
                children: Vec::new(),
                top,
            })
        }
        Format::OciIndex => {
            let mut children = Vec::new();
            let mut entries = Vec::new();
            for platform in [AMD64, ARM64] {
                let config = config_blob(content, &platform, MEDIA_OCI_CONFIG)?;
                let manifest =
                    manifest_blob(content, &config, MEDIA_OCI_MANIFEST, MEDIA_OCI_LAYER_GZIP)?;
                entries.push(manifest.descriptor(MEDIA_OCI_MANIFEST, Some(platform)));
                blobs.push(config);
                children.push(manifest);
            }
            let top = Blob::json(
                MEDIA_OCI_INDEX,
                &Index {
                    schema_version: 2,
                    media_type: MEDIA_OCI_INDEX,
                    manifests: entries,
                },
            )?;
            Ok(Assembled {
                blobs,
                children,
                top,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Tree;

    fn content() -> Content {
        let mut tree = Tree::new();
        tree.file("/hello", 0o644, b"hi".to_vec()).expect("file");
        Content {
            layers: vec![Rc::new(tree.build().expect("layer"))],
            config: RunConfig {
                cmd: vec!["sh".into()],
                ..RunConfig::default()
            },
            history: vec![History::layer("test")],
        }
    }

    #[test]
    fn index_has_two_platforms_sharing_layers() {
        let a = assemble(&content(), Format::OciIndex).expect("assemble");
        let index: serde_json::Value = serde_json::from_slice(&a.top.data).expect("json");
        assert_eq!(index["mediaType"], MEDIA_OCI_INDEX);
        assert_eq!(index["manifests"][0]["platform"]["architecture"], "amd64");
        assert_eq!(index["manifests"][1]["platform"]["architecture"], "arm64");
        assert_eq!(a.children.len(), 2);
        let m0: serde_json::Value = serde_json::from_slice(&a.children[0].data).expect("json");
        let m1: serde_json::Value = serde_json::from_slice(&a.children[1].data).expect("json");
        assert_eq!(m0["layers"], m1["layers"]);
        assert_ne!(m0["config"]["digest"], m1["config"]["digest"]);
    }

    #[test]
    fn docker_manifest_uses_docker_media_types() {
        let a = assemble(&content(), Format::DockerManifest).expect("assemble");
        let m: serde_json::Value = serde_json::from_slice(&a.top.data).expect("json");
        assert_eq!(m["mediaType"], MEDIA_DOCKER_MANIFEST);
        assert_eq!(m["config"]["mediaType"], MEDIA_DOCKER_CONFIG);
        assert_eq!(m["layers"][0]["mediaType"], MEDIA_DOCKER_LAYER_GZIP);
    }

    #[test]
    fn deterministic() {
        let a = assemble(&content(), Format::OciIndex).expect("assemble");
        let b = assemble(&content(), Format::OciIndex).expect("assemble");
        assert_eq!(a.top.digest, b.top.digest);
    }
}
