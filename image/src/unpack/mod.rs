//! Unpacking one image layer (a tar, plain, gzip or zstd) into its own
//! directory, in overlayfs form.
//!
//! Layers are hostile input. Every entry name is checked lexically
//! ([`path`]) and every filesystem step is confined to the layer directory
//! ([`inroot`]): `..`, absolute paths, symlinked parents, hard links to
//! outside and whiteouts naming outside paths are refused, and the pull
//! fails. OCI whiteouts become overlay whiteouts: `.wh.NAME` → a 0/0
//! character device `NAME`, `.wh..wh..opq` → `trusted.overlay.opaque=y` on
//! the directory. Modes (setuid included), ownership, mtimes, xattrs
//! (except `trusted.overlay.*`, which would steer overlayfs), hard links,
//! symlinks, device nodes and fifos are kept. GNU sparse entries are
//! refused (no sparse-map or hole expansion). The uncompressed stream is
//! hashed and must equal the config's diff ID, and counted against a
//! [`SizeBudget`] (a gzip bomb is refused).
//!
//! The caller unpacks into a fresh private temp directory and renames it
//! into place only when this returns `Ok`.

pub mod inroot;
mod limit;
pub mod path;

pub use limit::SizeBudget;

use crate::digest::{Digest, HashingReader};
use inroot::{InRootError, LayerRoot};
use limit::LimitReader;
use path::Name;
use rustix::fs::{FileType, Mode, OFlags};
use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use tar::EntryType;

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry is refused (hostile or unsupported).
    #[error("layer {layer}: entry {entry:?}: {reason}")]
    Refused {
        /// The layer's digest.
        layer: String,
        /// The entry path as in the archive.
        entry: String,
        /// Why.
        reason: &'static str,
    },
    /// A filesystem operation on an entry failed.
    #[error("layer {layer}: entry {entry:?}")]
    Entry {
        /// The layer's digest.
        layer: String,
        /// The entry path as in the archive.
        entry: String,
        /// The cause.
        #[source]
        source: InRootError,
    },
    /// The archive could not be read or decompressed.
    #[error("layer {layer}: reading the archive")]
    Archive {
        /// The layer's digest.
        layer: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The uncompressed content is larger than the pull's budget allows.
    #[error(
        "layer {layer}: unpacked content exceeds the limit of {max} bytes per image (max_unpacked_bytes); refused"
    )]
    TooLarge {
        /// The layer's digest.
        layer: String,
        /// The bound in bytes.
        max: u64,
    },
    /// The uncompressed content does not match the config's diff ID.
    #[error(
        "layer {layer}: uncompressed digest {actual} does not match the config's diff ID {expected}"
    )]
    DiffId {
        /// The layer's digest.
        layer: String,
        /// The diff ID from the config.
        expected: String,
        /// What the content hashes to.
        actual: String,
    },
}

/// Unpacks the layer blob at `blob` into the existing empty directory
/// `dest`; `layer` names the blob in errors. Returns the uncompressed size.
pub fn unpack_layer(
    blob: &Path,
    dest: &Path,
    layer: &Digest,
    diff_id: &Digest,
) -> Result<u64, UnpackError> {
    unpack_layer_within(blob, dest, layer, diff_id, &SizeBudget::unlimited())
}

/// [`unpack_layer`], refusing the layer with [`UnpackError::TooLarge`] once
/// the uncompressed stream takes more than what is left of `budget`. What
/// was written to `dest` stays: the caller removes it.
pub fn unpack_layer_within(
    blob: &Path,
    dest: &Path,
    layer: &Digest,
    diff_id: &Digest,
    budget: &SizeBudget,
) -> Result<u64, UnpackError> {
    let tripped = Cell::new(false);
    let result = unpack_counted(blob, dest, layer, diff_id, budget, &tripped);
    if tripped.get() {
        return Err(UnpackError::TooLarge {
            layer: layer.to_string(),
            max: budget.max(),
        });
    }
    result
}

fn unpack_counted(
    blob: &Path,
    dest: &Path,
    layer: &Digest,
    diff_id: &Digest,
    budget: &SizeBudget,
    tripped: &Cell<bool>,
) -> Result<u64, UnpackError> {
    let archive_err = |source| UnpackError::Archive {
        layer: layer.to_string(),
        source,
    };
    let file = std::fs::File::open(blob).map_err(archive_err)?;
    let reader = decompress(BufReader::with_capacity(256 * 1024, file)).map_err(archive_err)?;
    let mut hashing = HashingReader::new(LimitReader {
        inner: reader,
        budget,
        tripped,
    });
    let root = LayerRoot::open(dest).map_err(|source| UnpackError::Entry {
        layer: layer.to_string(),
        entry: String::new(),
        source,
    })?;
    let mut unpacker = Unpacker {
        root: &root,
        layer,
        dir_times: Vec::new(),
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive.entries().map_err(archive_err)?;
        for entry in entries {
            let mut entry = entry.map_err(archive_err)?;
            unpacker.entry(&mut entry)?;
        }
    }
    unpacker.finish_dir_times()?;
    let (actual, size) = hashing.finish().map_err(archive_err)?;
    if &actual != diff_id {
        return Err(UnpackError::DiffId {
            layer: layer.to_string(),
            expected: diff_id.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(size)
}

/// Picks the decompressor from the stream's magic bytes.
fn decompress<R: BufRead + Send + 'static>(mut r: R) -> io::Result<Box<dyn Read + Send>> {
    let head = r.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r)?))
    } else {
        Ok(Box::new(r))
    }
}

struct Unpacker<'a> {
    root: &'a LayerRoot,
    layer: &'a Digest,
    dir_times: Vec<(Vec<OsString>, u64)>,
}

impl Unpacker<'_> {
    fn refused(&self, entry: &[u8], reason: &'static str) -> UnpackError {
        UnpackError::Refused {
            layer: self.layer.to_string(),
            entry: String::from_utf8_lossy(entry).into_owned(),
            reason,
        }
    }

    fn fs_err(&self, entry: &[u8]) -> impl FnOnce(InRootError) -> UnpackError + use<> {
        let entry = String::from_utf8_lossy(entry).into_owned();
        let layer = self.layer.to_string();
        move |source| UnpackError::Entry {
            layer,
            entry,
            source,
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_path = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        if kind.is_gnu_sparse() {
            return Err(self.refused(&raw_path, "sparse files are not supported"));
        }
        let mut comps =
            path::components(&raw_path).map_err(|r| self.refused(&raw_path, r.reason()))?;
        let Some(name) = comps.pop() else {
            // The layer root itself ("./"): keep its mode, owner and mtime.
            if kind == EntryType::Directory {
                return self.root_metadata(entry, &raw_path);
            }
            return Err(self.refused(&raw_path, path::PathRefusal::Empty.reason()));
        };
        let parent = self
            .root
            .dir(&comps, true)
            .map_err(self.fs_err(&raw_path))?;
        match path::classify(&name) {
            Name::AufsMeta => return Ok(()),
            Name::BadWhiteout => return Err(self.refused(&raw_path, "whiteout of an invalid name")),
            Name::Opaque => {
                return inroot::set_dir_xattr(&parent, "trusted.overlay.opaque", b"y")
                    .map_err(self.fs_err(&raw_path));
            }
            Name::Whiteout(target) => {
                let target = target.to_owned();
                inroot::remove_at(&parent, &target).map_err(self.fs_err(&raw_path))?;
                return rustix::fs::mknodat(
                    &parent,
                    target.as_os_str(),
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(|e| (self.fs_err(&raw_path))(io_err("creating a whiteout", e)));
            }
            Name::Plain => {}
        }
        let header = entry.header().clone();
        let meta = Meta::of(&header).map_err(|e| self.archive_err(e))?;
        let (Ok(uid), Ok(gid)) = (u32::try_from(meta.uid), u32::try_from(meta.gid)) else {
            return Err(self.refused(&raw_path, "uid or gid out of range"));
        };
        // An existing entry is replaced, except a directory by a directory.
        let existing = inroot::kind_at(&parent, &name).map_err(self.fs_err(&raw_path))?;
        let keep_dir = kind == EntryType::Directory && existing == Some(FileType::Directory);
        if existing.is_some() && !keep_dir {
            inroot::remove_at(&parent, &name).map_err(self.fs_err(&raw_path))?;
        }
        if !self.create_node(entry, &header, &parent, &name, &raw_path, keep_dir)? {
            return Ok(());
        }
        if kind == EntryType::Directory {
            let mut full = comps;
            full.push(name.clone());
            self.dir_times.push((full, meta.mtime));
        }
        inroot::chown_at(&parent, &name, uid, gid).map_err(self.fs_err(&raw_path))?;
        if kind != EntryType::Symlink {
            // After chown: chown clears setuid/setgid.
            rustix::fs::chmodat(
                &parent,
                name.as_os_str(),
                Mode::from_raw_mode(meta.mode),
                rustix::fs::AtFlags::empty(),
            )
            .map_err(|e| self.fs_err(&raw_path)(io_err("chmod", e)))?;
        }
        // After chown: chown drops security.capability.
        self.xattrs(entry, &parent, &name, &raw_path)?;
        if kind != EntryType::Directory {
            inroot::set_times_at(&parent, &name, meta.mtime).map_err(self.fs_err(&raw_path))?;
        }
        Ok(())
    }

    /// Creates the inode of a non-whiteout entry (`keep_dir`: the
    /// directory exists already). False when there is nothing to set
    /// metadata on (hard links share their target's; unsupported types).
    fn create_node<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        header: &tar::Header,
        parent: &OwnedFd,
        name: &OsStr,
        raw_path: &[u8],
        keep_dir: bool,
    ) -> Result<bool, UnpackError> {
        let fs = self.fs_err(raw_path);
        let kind = header.entry_type();
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let file = rustix::fs::openat(
                    parent,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| fs(io_err("creating a file", e)))?;
                let mut file = std::fs::File::from(file);
                io::copy(entry, &mut file).map_err(|e| self.archive_err(e))?;
            }
            EntryType::Directory => {
                if !keep_dir {
                    rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| fs(io_err("creating a directory", e)))?;
                }
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| self.refused(raw_path, "symlink without a target"))?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), parent, name)
                    .map_err(|e| fs(io_err("creating a symlink", e)))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.refused(raw_path, "hard link without a target"))?;
                let mut tcomps = path::components(&target)
                    .map_err(|r| self.refused(raw_path, hard_link_reason(r)))?;
                let tname = tcomps
                    .pop()
                    .ok_or_else(|| self.refused(raw_path, "hard link to the layer root"))?;
                // The target is resolved like any path: no symlink, no
                // escape.
                let tparent = self
                    .root
                    .dir(&tcomps, false)
                    .map_err(self.fs_err(raw_path))?;
                rustix::fs::linkat(&tparent, &tname, parent, name, rustix::fs::AtFlags::empty())
                    .map_err(|e| fs(io_err("creating a hard link", e)))?;
                // A hard link shares its target's inode and metadata.
                return Ok(false);
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (ft, dev) = match kind {
                    EntryType::Fifo => (FileType::Fifo, 0),
                    _ => {
                        let major = header.device_major().ok().flatten().unwrap_or(0);
                        let minor = header.device_minor().ok().flatten().unwrap_or(0);
                        let ft = if kind == EntryType::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rustix::fs::makedev(major, minor))
                    }
                };
                rustix::fs::mknodat(parent, name, ft, Mode::from_raw_mode(0o600), dev)
                    .map_err(|e| fs(io_err("creating a device node", e)))?;
            }
            other => {
                tracing::warn!(
                    layer = %self.layer,
                    entry = %String::from_utf8_lossy(raw_path),
                    kind = ?other,
                    "skipping unsupported tar entry type"
                );
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn xattrs<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        parent: &std::os::fd::OwnedFd,
        name: &OsStr,
        raw_path: &[u8],
    ) -> Result<(), UnpackError> {
        let Some(exts) = entry.pax_extensions().map_err(|e| self.archive_err(e))? else {
            return Ok(());
        };
        for ext in exts {
            let ext = ext.map_err(|e| self.archive_err(e))?;
            let Some(key) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                continue;
            };
            if key.starts_with(b"trusted.overlay.") || key.starts_with(b"user.overlay.") {
                tracing::warn!(layer = %self.layer, entry = %String::from_utf8_lossy(raw_path), "ignoring overlay xattr in layer");
                continue;
            }
            inroot::set_xattr_at(parent, name, OsStr::from_bytes(key), ext.value_bytes())
                .map_err(self.fs_err(raw_path))?;
        }
        Ok(())
    }

    fn root_metadata<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
    ) -> Result<(), UnpackError> {
        let meta = Meta::of(entry.header()).map_err(|e| self.archive_err(e))?;
        let (Ok(uid), Ok(gid)) = (u32::try_from(meta.uid), u32::try_from(meta.gid)) else {
            return Err(self.refused(raw, "uid or gid out of range"));
        };
        let (mode, mtime) = (meta.mode, meta.mtime);
        let fd = self.root.fd();
        rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .map_err(|e| self.fs_err(raw)(io_err("chown", e)))?;
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
            .map_err(|e| self.fs_err(raw)(io_err("chmod", e)))?;
        self.dir_times.push((Vec::new(), mtime));
        Ok(())
    }

    fn archive_err(&self, source: io::Error) -> UnpackError {
        UnpackError::Archive {
            layer: self.layer.to_string(),
            source,
        }
    }

    /// Directory mtimes are set last (creating children changes them),
    /// deepest first.
    fn finish_dir_times(&mut self) -> Result<(), UnpackError> {
        let mut times = std::mem::take(&mut self.dir_times);
        times.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        for (comps, mtime) in times {
            let raw = comps.join(OsStr::new("/"));
            let (dir, name) = match comps.split_last() {
                Some((name, parents)) => (self.root.dir(parents, false), name.clone()),
                None => (
                    rustix::io::dup(self.root.fd()).map_err(|e| io_err("dup", e)),
                    OsString::from("."),
                ),
            };
            let dir = dir.map_err(self.fs_err(raw.as_bytes()))?;
            inroot::set_times_at(&dir, &name, mtime).map_err(self.fs_err(raw.as_bytes()))?;
        }
        Ok(())
    }
}

/// Mode, owner and mtime from a tar header.
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

impl Meta {
    fn of(h: &tar::Header) -> io::Result<Self> {
        Ok(Self {
            mode: h.mode()? & 0o7777,
            uid: h.uid()?,
            gid: h.gid()?,
            mtime: h.mtime()?,
        })
    }
}

fn hard_link_reason(r: path::PathRefusal) -> &'static str {
    match r {
        path::PathRefusal::Absolute => "hard link to an absolute path refused",
        path::PathRefusal::DotDot => "hard link through '..' refused",
        path::PathRefusal::Empty => "hard link to the layer root refused",
    }
}

fn io_err(op: &'static str, e: rustix::io::Errno) -> InRootError {
    InRootError::Io {
        op,
        source: e.into(),
    }
}
