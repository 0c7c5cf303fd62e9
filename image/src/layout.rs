//! Where the store keeps things under its directory:
//!
//! ```text
//! blobs/sha256/<hex>    verified config blobs
//! layers/<chain hex>/   unpacked layers (overlay lower dirs), by chain ID
//! l/<short>             short symlinks to layers (for overlay options)
//! containers/<id>/      per-container upper/ and work/ dirs
//! tmp/                  downloads and unpacks in progress; wiped on open
//! ```
//!
//! Nothing appears outside `tmp/` until it is complete and verified: files
//! and directories are written in `tmp/` and renamed into place.

use crate::digest::Digest;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The store's directory layout.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `root`.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Verified blobs.
    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// The verified blob `d`.
    pub fn blob(&self, d: &Digest) -> PathBuf {
        self.blobs_dir().join(d.hex())
    }

    /// Unpacked layers.
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// The unpacked layer with chain ID `chain`.
    pub fn layer(&self, chain: &Digest) -> PathBuf {
        self.layers_dir().join(chain.hex())
    }

    /// Short links to layers.
    pub fn links_dir(&self) -> PathBuf {
        self.root.join("l")
    }

    /// The short link name of a layer: 20 hex digits of its chain ID
    /// (80 bits: collisions among a node's layers are not a concern).
    pub fn link_name(chain: &Digest) -> &str {
        &chain.hex()[..20]
    }

    /// Per-container directories.
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// Work in progress.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A fresh unique path in `tmp/`.
    pub fn temp_path(&self, what: &str) -> PathBuf {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.tmp_dir()
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Creates the directories (private: 0700).
    pub fn create(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        for d in [
            self.root.clone(),
            self.blobs_dir(),
            self.layers_dir(),
            self.links_dir(),
            self.containers_dir(),
            self.tmp_dir(),
        ] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)?;
        }
        Ok(())
    }
}

/// Removes a path when dropped unless disarmed: temp files and dirs of a
/// failed or cancelled pull never outlive it.
pub struct TempGuard {
    path: Option<PathBuf>,
}

impl TempGuard {
    /// Guards `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path: Some(path) }
    }

    /// The guarded path.
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Keeps the path (it was renamed away or is wanted).
    pub fn disarm(mut self) {
        self.path = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let r = match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
                Ok(_) => std::fs::remove_file(&p),
                Err(_) => Ok(()),
            };
            if let Err(e) = r {
                tracing::warn!(path = %p.display(), error = %e, "removing temporary path");
            }
        }
    }
}
