//! Collection of unreferenced layers and blobs, and repair on open.

use crate::db;
use crate::digest::{Digest, is_sha256_hex};
use crate::error::ImageError;
use crate::store::Inner;
use std::collections::HashSet;
use std::path::Path;

/// Repairs the store after an unclean stop (called from `open`):
/// empties `tmp/`, drops records whose config blob or layers are missing,
/// then collects what no record references.
pub fn repair(inner: &Inner) -> Result<(), ImageError> {
    let layout = &inner.layout;
    let tmp = layout.tmp_dir();
    let mut cleaned = 0usize;
    for entry in read_dir(&tmp)? {
        remove_any(&entry);
        cleaned += 1;
    }
    if cleaned > 0 {
        tracing::warn!(entries = cleaned, dir = %tmp.display(), "removed partial downloads and unpacks");
    }
    let _gc = inner.gc_lock.lock().unwrap_or_else(|p| p.into_inner());
    let dropped = db::retain_images(&inner.db, |rec| {
        // Configs are small: check their content, not just presence.
        let whole = Digest::parse(&rec.id)
            .is_ok_and(|d| std::fs::read(layout.blob(&d)).is_ok_and(|b| Digest::of_bytes(&b) == d))
            && rec
                .layers
                .iter()
                .all(|l| Digest::parse(l).is_ok_and(|c| layout.layer(&c).is_dir()));
        if !whole {
            tracing::warn!(image = %rec.id, tags = ?rec.repo_tags, "dropping image whose blobs or layers are missing");
        }
        whole
    })?;
    if !dropped.is_empty() {
        tracing::warn!(images = ?dropped, "repaired image store");
    }
    collect(inner)
}

/// Removes layers, short links and blobs that no record references and
/// no pull in progress has pinned. The caller holds `gc_lock`.
pub fn collect(inner: &Inner) -> Result<(), ImageError> {
    let layout = &inner.layout;
    let records = db::list(&inner.db)?;
    let layers: HashSet<String> = records
        .iter()
        .flat_map(|r| r.layers.iter())
        .filter_map(|l| l.strip_prefix("sha256:").map(str::to_owned))
        .collect();
    let blobs: HashSet<String> = records
        .iter()
        .filter_map(|r| r.id.strip_prefix("sha256:").map(str::to_owned))
        .collect();
    // Layers: decide and move away under the pin lock, so a pull that
    // pins a layer either sees it gone or keeps it.
    let mut doomed = Vec::new();
    {
        let pins = inner.pins.lock();
        for path in read_dir(&layout.layers_dir())? {
            let Some(name) = file_name(&path) else {
                continue;
            };
            if layers.contains(&name) || pins.contains_key(&format!("sha256:{name}")) {
                continue;
            }
            let away = layout.temp_path("gc-layer");
            match std::fs::rename(&path, &away) {
                Ok(()) => doomed.push((name, away)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "moving unused layer away")
                }
            }
        }
    }
    for (name, away) in doomed {
        tracing::info!(layer = %format!("sha256:{name}"), "removing unused layer");
        remove_any(&away);
    }
    // Short links whose layer is gone.
    for link in read_dir(&layout.links_dir())? {
        if !link.exists() {
            remove_any(&link);
        }
    }
    let pins = inner.pins.lock();
    for path in read_dir(&layout.blobs_dir())? {
        let Some(name) = file_name(&path) else {
            continue;
        };
        if !blobs.contains(&name) && !pins.contains_key(&format!("sha256:{name}")) {
            tracing::info!(blob = %format!("sha256:{name}"), "removing unused blob");
            remove_any(&path);
        }
    }
    Ok(())
}

fn file_name(p: &Path) -> Option<String> {
    let n = p.file_name()?.to_str()?;
    if is_sha256_hex(n) {
        Some(n.to_owned())
    } else {
        // Not ours: leave it, but say so.
        tracing::warn!(path = %p.display(), "unexpected entry in the image store");
        None
    }
}

fn read_dir(dir: &Path) -> Result<Vec<std::path::PathBuf>, ImageError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ImageError::io("listing", dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        out.push(e.map_err(ImageError::io("listing", dir))?.path());
    }
    Ok(out)
}

/// Removes a file, symlink or directory tree (never following symlinks).
pub fn remove_any(p: &Path) {
    let r = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(_) => Ok(()),
    };
    if let Err(e) = r {
        tracing::warn!(path = %p.display(), error = %e, "removing");
    }
}
