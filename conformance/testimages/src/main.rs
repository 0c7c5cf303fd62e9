//! `krio-testimages`: builds the container images that critest (cri-tools
//! v1.37.0) pulls, offline and reproducibly, and pushes each one to a local
//! registry as `REGISTRY/HOST/PATH:TAG` (so a registry mirror with location
//! `REGISTRY/HOST` serves `HOST/PATH:TAG` under its upstream name).
//!
//! ```text
//! krio-testimages build --registry 127.0.0.1:5000 [--work DIR]
//! krio-testimages list
//! krio-testimages bench --registry 127.0.0.1:5000 [--size-mib 160] [--layers 8]
//! ```

mod bench;
mod catalog;
mod host;
mod layer;
mod oci;
mod registry;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::catalog::{Builder, IMAGES};
use crate::host::Assets;
use crate::oci::{Assembled, Blob};
use crate::registry::Registry;

/// Builds critest's container images offline and pushes them to a registry.
#[derive(Parser)]
#[command(name = "krio-testimages", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build every image and push it; prints `NAME:TAG@DIGEST` per tag.
    Build {
        /// Registry address (`host:port`), reached over plain HTTP.
        #[arg(long, default_value = "127.0.0.1:5000")]
        registry: String,
        /// Directory for build files (compiled programs, blobs); kept after
        /// the run. Default: a temporary directory, removed afterwards.
        #[arg(long)]
        work: Option<PathBuf>,
    },
    /// Print the upstream name (`HOST/PATH:TAG`) of every image.
    List,
    /// Build and push the pull benchmark's two large images,
    /// `PREFIX/pull-a:v1` and `PREFIX/pull-b:v1` (all layers shared but the
    /// last); prints `NAME:TAG@DIGEST COMPRESSED_BYTES LAST_LAYER_BYTES` per
    /// image.
    Bench {
        /// Registry address (`host:port`), reached over plain HTTP.
        #[arg(long, default_value = "127.0.0.1:5000")]
        registry: String,
        /// Repository prefix (an upstream-style name a mirror can serve).
        #[arg(long, default_value = "bench.krio.test")]
        prefix: String,
        /// Uncompressed size of each image, MiB.
        #[arg(long, default_value_t = 160)]
        size_mib: u64,
        /// Layers per image.
        #[arg(long, default_value_t = 8)]
        layers: usize,
        /// Files per layer.
        #[arg(long, default_value_t = 8)]
        files: usize,
        /// Generator seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::List => {
            let mut out = std::io::stdout().lock();
            for image in IMAGES {
                for tag in image.tags {
                    writeln!(out, "{}:{tag}", image.repo)?;
                }
            }
            Ok(())
        }
        Cmd::Bench {
            registry,
            prefix,
            size_mib,
            layers,
            files,
            seed,
        } => {
            let spec = bench::Spec {
                size_mib,
                layers,
                files,
                seed,
            };
            push_bench(&registry, &prefix, &spec)
        }
        Cmd::Build { registry, work } => match work {
            Some(dir) => {
                fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                build(&registry, &dir)
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("krio-testimages.")
                    .tempdir()
                    .context("creating a temporary work directory")?;
                build(&registry, dir.path())
            }
        },
    }
}

/// Writes `blob` to `work/blobs/sha256/<hex>` (an OCI-layout-style store,
/// handy for inspecting what was pushed).
fn store(work: &Path, blob: &Blob) -> Result<()> {
    let hex = blob.digest.trim_start_matches("sha256:");
    let path = work.join("blobs/sha256").join(hex);
    if !path.exists() {
        fs::write(&path, &blob.data[..]).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn push_bench(registry_addr: &str, prefix: &str, spec: &bench::Spec) -> Result<()> {
    let registry = Registry::new(registry_addr);
    registry.ping().with_context(|| {
        format!("registry {registry_addr} is not answering (conformance/registry.sh start)")
    })?;
    let (a, b) = bench::contents(spec)?;
    let mut out = std::io::stdout().lock();
    for (name, content) in [("pull-a", a), ("pull-b", b)] {
        let repo = format!("{prefix}/{name}");
        let Assembled { blobs, top, .. } = oci::assemble(&content, bench::FORMAT)?;
        for blob in &blobs {
            registry
                .push_blob(&repo, blob)
                .with_context(|| format!("pushing {} to {repo}", blob.digest))?;
        }
        registry
            .push_manifest(&repo, "v1", &top)
            .with_context(|| format!("pushing {repo}:v1"))?;
        let bytes: usize = blobs.iter().map(|b| b.data.len()).sum();
        let last = content.layers.last().map_or(0, |l| l.blob.data.len());
        writeln!(out, "{repo}:v1@{} {bytes} {last}", top.digest)?;
    }
    Ok(())
}

fn build(registry_addr: &str, work: &Path) -> Result<()> {
    let registry = Registry::new(registry_addr);
    registry.ping().with_context(|| {
        format!("registry {registry_addr} is not answering (conformance/registry.sh start)")
    })?;
    fs::create_dir_all(work.join("blobs/sha256")).context("creating the blob directory")?;

    let assets = Assets::collect(work)?;
    let mut builder = Builder::new(&assets);
    let mut out = std::io::stdout().lock();
    for image in IMAGES {
        let content = builder
            .content(image.kind)
            .with_context(|| format!("building {}", image.repo))?;
        let Assembled {
            blobs,
            children,
            top,
        } = oci::assemble(&content, image.format)?;
        let repo = image.repo;
        let mut uploaded = 0;
        for blob in &blobs {
            store(work, blob)?;
            if registry
                .push_blob(repo, blob)
                .with_context(|| format!("pushing {} to {repo}", blob.digest))?
            {
                uploaded += 1;
            }
        }
        for manifest in children.iter().chain(std::iter::once(&top)) {
            store(work, manifest)?;
        }
        for manifest in &children {
            registry
                .push_manifest(repo, &manifest.digest, manifest)
                .with_context(|| format!("pushing manifest {} to {repo}", manifest.digest))?;
        }
        for tag in image.tags {
            registry
                .push_manifest(repo, tag, &top)
                .with_context(|| format!("pushing {repo}:{tag}"))?;
            writeln!(out, "{repo}:{tag}@{}", top.digest)?;
        }
        eprintln!(
            "krio-testimages: {repo}: {} blob(s), {uploaded} uploaded",
            blobs.len()
        );
    }
    Ok(())
}
