//! Deterministic filesystem layers: an in-memory tree of entries written as
//! a sorted tar stream (fixed mtime, numeric owners, no user or group names)
//! and compressed with gzip (mtime 0, fixed level, no file name).
//!
//! The deflate stream comes from `miniz_oxide` directly rather than through
//! a `flate2` encoder: flate2 picks its backend by cargo features, which are
//! unified across the workspace, so another crate enabling e.g. `zlib-rs`
//! would silently change every layer digest.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use anyhow::{Context, Result, bail, ensure};

use crate::oci::Blob;

/// Modification time of every tar entry (the Unix epoch).
const MTIME: u64 = 0;
/// Deflate level of every layer (miniz_oxide scale, 0–10).
const DEFLATE_LEVEL: u8 = 9;

/// What a tree entry is.
#[derive(Clone, Debug)]
enum Kind {
    Dir,
    File(Rc<[u8]>),
    /// A hard link to another path (a `File`) of the same tree.
    HardLink(String),
}

#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
}

/// The contents of one layer, keyed by path relative to the root
/// (`bin/sh`, never `/bin/sh`).
#[derive(Clone, Debug, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

/// A built layer: its uncompressed digest (the config's diff ID) and the
/// compressed blob the manifest refers to.
#[derive(Debug)]
pub struct Layer {
    /// `sha256:…` of the uncompressed tar stream.
    pub diff_id: String,
    /// The gzip-compressed tar stream.
    pub blob: Blob,
}

fn normalize(path: &str) -> Result<String> {
    let rel = path.trim_start_matches('/').trim_end_matches('/');
    ensure!(!rel.is_empty(), "empty path {path:?}");
    for part in rel.split('/') {
        ensure!(
            !part.is_empty() && part != "." && part != "..",
            "bad path {path:?}"
        );
    }
    Ok(rel.to_owned())
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, path: &str, kind: Kind, mode: u32, uid: u64, gid: u64) -> Result<()> {
        let path = normalize(path)?;
        self.nodes.insert(
            path,
            Node {
                kind,
                mode,
                uid,
                gid,
            },
        );
        Ok(())
    }

    /// Adds (or replaces) a directory owned by root.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        self.insert(path, Kind::Dir, mode, 0, 0)
    }

    /// Adds (or replaces) a directory with the given owner.
    pub fn dir_owned(&mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Result<()> {
        self.insert(path, Kind::Dir, mode, uid, gid)
    }

    /// Adds (or replaces) a regular file owned by root.
    pub fn file(&mut self, path: &str, mode: u32, data: impl Into<Rc<[u8]>>) -> Result<()> {
        self.insert(path, Kind::File(data.into()), mode, 0, 0)
    }

    /// Adds (or replaces) a hard link to `target`, a regular file of this tree.
    pub fn hardlink(&mut self, path: &str, target: &str) -> Result<()> {
        let target = normalize(target)?;
        self.insert(path, Kind::HardLink(target), 0, 0, 0)
    }

    /// Writes the tree as a tar stream: entries sorted by path, every
    /// missing parent directory added (0755, root), each group of hard
    /// links stored once under its first path and linked from the others.
    pub fn to_tar(&self) -> Result<Vec<u8>> {
        let mut nodes = self.nodes.clone();
        for path in self.nodes.keys() {
            let mut parent = path.as_str();
            while let Some((p, _)) = parent.rsplit_once('/') {
                nodes.entry(p.to_owned()).or_insert(Node {
                    kind: Kind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                });
                parent = p;
            }
        }

        // Hard-link groups: target path -> every path of the group, sorted.
        let mut groups: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (path, node) in &nodes {
            if let Kind::HardLink(target) = &node.kind {
                match nodes.get(target) {
                    Some(Node {
                        kind: Kind::File(_),
                        ..
                    }) => {}
                    _ => bail!("hard link {path} -> {target}: target is not a regular file"),
                }
                let group = groups.entry(target.as_str()).or_default();
                group.insert(target.as_str());
                group.insert(path.as_str());
            }
        }

        let mut builder = tar::Builder::new(Vec::new());
        for (path, node) in &nodes {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(MTIME);
            header.set_uid(node.uid);
            header.set_gid(node.gid);
            header.set_mode(node.mode);
            // The group this path belongs to, if any: (target, first path).
            let group_target = match &node.kind {
                Kind::HardLink(target) => Some(target.as_str()),
                Kind::File(_) if groups.contains_key(path.as_str()) => Some(path.as_str()),
                _ => None,
            };
            if let Some(target) = group_target {
                let first = groups
                    .get(target)
                    .and_then(|g| g.first().copied())
                    .context("hard link group")?;
                let target_node = &nodes[target];
                // Every entry of the group carries the file's metadata.
                header.set_mode(target_node.mode);
                header.set_uid(target_node.uid);
                header.set_gid(target_node.gid);
                if first != path {
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, path, first)
                        .with_context(|| format!("tar: {path}"))?;
                    continue;
                }
                // The first path of the group carries the target's data.
                let Kind::File(data) = &target_node.kind else {
                    bail!("hard link target {target} is not a file");
                };
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, path, &data[..])
                    .with_context(|| format!("tar: {path}"))?;
                continue;
            }
            match &node.kind {
                Kind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, path, std::io::empty())
                        .with_context(|| format!("tar: {path}"))?;
                }
                Kind::File(data) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(data.len() as u64);
                    builder
                        .append_data(&mut header, path, &data[..])
                        .with_context(|| format!("tar: {path}"))?;
                }
                Kind::HardLink(_) => unreachable!("hard links are handled above"),
            }
        }
        builder.into_inner().context("finishing tar stream")
    }

    /// Builds the layer: tar, digest, gzip.
    pub fn build(&self) -> Result<Layer> {
        self.build_with_level(DEFLATE_LEVEL)
    }

    /// Builds the layer with deflate `level` (0–10; the benchmark's large
    /// random layers use a fast one).
    pub fn build_with_level(&self, level: u8) -> Result<Layer> {
        let tar = self.to_tar()?;
        Ok(Layer {
            diff_id: crate::oci::sha256_digest(&tar),
            blob: Blob::new(crate::oci::MEDIA_OCI_LAYER_GZIP, gzip(&tar, level)),
        })
    }
}

/// Wraps a raw deflate stream of `data` in a gzip member (RFC 1952): no
/// name, mtime 0, XFL 2 (slowest compression), OS 255 (unknown).
fn gzip(data: &[u8], level: u8) -> Vec<u8> {
    let deflated = miniz_oxide::deflate::compress_to_vec(data, level);
    let mut crc = flate2::Crc::new();
    crc.update(data);
    let mut out = Vec::with_capacity(deflated.len() + 18);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
    out.extend_from_slice(&deflated);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the input size modulo 2^32: the truncation is the format.
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar: &[u8]) -> Vec<(String, tar::EntryType, String)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let link = e
                    .link_name()
                    .expect("link name")
                    .map(|l| l.display().to_string())
                    .unwrap_or_default();
                (
                    e.path().expect("path").display().to_string(),
                    e.header().entry_type(),
                    link,
                )
            })
            .collect()
    }

    #[test]
    fn sorted_with_parents_and_hard_links() {
        let mut t = Tree::new();
        t.file("/bin/busybox", 0o755, b"BB".to_vec()).expect("file");
        t.hardlink("/bin/sh", "/bin/busybox").expect("link");
        t.hardlink("/bin/[", "/bin/busybox").expect("link");
        t.file("/etc/passwd", 0o644, b"root".to_vec())
            .expect("file");
        let tar = t.to_tar().expect("tar");
        let got = entries(&tar);
        let names: Vec<_> = got.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "bin/[", "bin/busybox", "bin/sh", "etc", "etc/passwd"]
        );
        assert_eq!(got[1].1, tar::EntryType::Regular);
        assert_eq!(got[2].1, tar::EntryType::Link);
        assert_eq!(got[2].2, "bin/[");
        assert_eq!(got[3].2, "bin/[");
    }

    #[test]
    fn reproducible() {
        let mut t = Tree::new();
        t.file("/a", 0o644, b"x".to_vec()).expect("file");
        let a = t.build().expect("build");
        let b = t.build().expect("build");
        assert_eq!(a.blob.digest, b.blob.digest);
        assert_eq!(a.diff_id, b.diff_id);
    }

    #[test]
    fn gzip_round_trip() {
        use std::io::Read;
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let gz = gzip(&data, DEFLATE_LEVEL);
        assert_eq!(&gz[..4], &[0x1f, 0x8b, 8, 0]);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .expect("gunzip");
        assert_eq!(back, data);
    }

    #[test]
    fn rejects_dot_dot() {
        let mut t = Tree::new();
        assert!(t.file("/a/../b", 0o644, b"x".to_vec()).is_err());
    }
}
