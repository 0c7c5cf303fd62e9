//! Layer unpacking against hand-built hostile and well-formed layers:
//! nothing is ever written outside the layer dir.

use krio_image::digest::Digest;
use krio_image::unpack::{UnpackError, unpack_layer};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One tar entry, with its raw name (no validation by the builder).
struct E {
    name: &'static str,
    kind: tar::EntryType,
    link: &'static str,
    data: &'static [u8],
    mode: u32,
    uid: u64,
    xattrs: &'static [(&'static str, &'static [u8])],
}

fn e(name: &'static str, kind: tar::EntryType) -> E {
    E {
        name,
        kind,
        link: "",
        data: b"",
        mode: if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        },
        uid: 0,
        xattrs: &[],
    }
}

fn file(name: &'static str, data: &'static [u8]) -> E {
    E {
        data,
        ..e(name, tar::EntryType::Regular)
    }
}

fn link(name: &'static str, kind: tar::EntryType, target: &'static str) -> E {
    E {
        link: target,
        ..e(name, kind)
    }
}

fn build_tar(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for ent in entries {
        if !ent.xattrs.is_empty() {
            let mut pax = Vec::new();
            for (k, v) in ent.xattrs {
                let mut rec_body = format!("SCHILY.xattr.{k}=").into_bytes();
                rec_body.extend_from_slice(v);
                rec_body.push(b'\n');
                let mut len = rec_body.len() + 3;
                loop {
                    let l = format!("{len} ").len() + rec_body.len();
                    if l == len {
                        break;
                    }
                    len = l;
                }
                pax.extend_from_slice(format!("{len} ").as_bytes());
                pax.extend_from_slice(&rec_body);
            }
            let mut h = tar::Header::new_ustar();
            raw_name(&mut h, "PaxHeader");
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_size(pax.len() as u64);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(&pax);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        let mut h = tar::Header::new_ustar();
        raw_name(&mut h, ent.name);
        h.set_entry_type(ent.kind);
        h.set_mode(ent.mode);
        h.set_uid(ent.uid);
        h.set_gid(ent.uid);
        h.set_mtime(1_000_000);
        h.set_size(ent.data.len() as u64);
        if !ent.link.is_empty() {
            let l = ent.link.as_bytes();
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
        }
        if ent.kind == tar::EntryType::Char {
            h.set_device_major(1).expect("ustar");
            h.set_device_minor(3).expect("ustar");
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(ent.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn raw_name(h: &mut tar::Header, name: &str) {
    let n = name.as_bytes();
    let old = h.as_old_mut();
    old.name = [0; 100];
    old.name[..n.len()].copy_from_slice(n);
}

/// A sandbox: `root/canary/` must stay as it is, the layer is unpacked in
/// `root/a/b/layer` (so `../../x` would land in `root/x`).
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/b/layer")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("canary")).expect("mkdir");
        std::fs::write(dir.path().join("canary/file"), b"canary").expect("write");
        Self { dir }
    }

    fn layer(&self) -> PathBuf {
        self.dir.path().join("a/b/layer")
    }

    fn unpack(&self, tar: &[u8]) -> Result<u64, UnpackError> {
        let blob = self.dir.path().join("blob");
        std::fs::write(&blob, tar).expect("write blob");
        let diff = Digest::of_bytes(tar);
        let r = unpack_layer(&blob, &self.layer(), &Digest::of_bytes(tar), &diff);
        std::fs::remove_file(&blob).expect("rm blob");
        r
    }

    /// Everything outside the layer dir is exactly as set up.
    fn assert_untouched(&self) {
        let root = self.dir.path();
        assert_eq!(list(root), ["a", "canary"], "new entries next to the layer");
        assert_eq!(list(&root.join("a")), ["b"]);
        assert_eq!(list(&root.join("a/b")), ["layer"]);
        assert_eq!(list(&root.join("canary")), ["file"]);
        assert_eq!(
            std::fs::read(root.join("canary/file")).expect("read"),
            b"canary"
        );
        let passwd = std::fs::symlink_metadata("/etc/passwd").expect("stat");
        assert_eq!(passwd.nlink(), 1, "/etc/passwd got a hard link");
    }
}

fn list(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn refused(entries: &[E]) -> String {
    let sb = Sandbox::new();
    let err = sb
        .unpack(&build_tar(entries))
        .expect_err("hostile layer accepted");
    sb.assert_untouched();
    format!("{err}: {}", err_chain(&err))
}

fn err_chain(e: &dyn std::error::Error) -> String {
    let mut s = String::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&c.to_string());
        s.push_str("; ");
        cur = c.source();
    }
    s
}

use tar::EntryType::{Char, Directory, Fifo, Link, Symlink};

/// Unpacking real layers sets owners and creates device nodes: root only.
/// False (SKIPPED) when not root, a failure with KRIO_REQUIRE_ROOT_TESTS=1.
fn root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if std::env::var("KRIO_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("{test} needs root (KRIO_REQUIRE_ROOT_TESTS=1)");
    }
    eprintln!("SKIPPED {test}: needs root");
    false
}

#[test]
fn dot_dot_is_refused() {
    let msg = refused(&[file("../x", b"evil")]);
    assert!(msg.contains("'..'"), "{msg}");
    let msg = refused(&[file("ok/../../../x", b"evil")]);
    assert!(msg.contains("'..'"), "{msg}");
}

#[test]
fn absolute_path_is_refused() {
    let msg = refused(&[file("/tmp/krio-absolute-test", b"evil")]);
    assert!(msg.contains("absolute"), "{msg}");
    assert!(!Path::new("/tmp/krio-absolute-test").exists());
}

#[test]
fn write_through_symlink_is_refused() {
    if !root("write_through_symlink_is_refused") {
        return;
    }
    let sb = Sandbox::new();
    let canary = sb.dir.path().join("canary");
    // Absolute and relative escapes, and a symlink to a dir inside.
    for target in [canary.to_str().expect("utf8"), "../../../canary"] {
        let target: &'static str = Box::leak(target.to_owned().into_boxed_str());
        let msg = refused(&[link("evil", Symlink, target), file("evil/pwned", b"evil")]);
        assert!(msg.contains("symlink"), "{msg}");
    }
    let msg = refused(&[
        e("d", Directory),
        link("s", Symlink, "d"),
        file("s/x", b"x"),
    ]);
    assert!(msg.contains("symlink"), "{msg}");
}

#[test]
fn hard_link_outside_is_refused() {
    if !root("hard_link_outside_is_refused") {
        return;
    }
    let msg = refused(&[link("hl", Link, "/etc/passwd")]);
    assert!(msg.contains("hard link"), "{msg}");
    let msg = refused(&[link("hl", Link, "../../../../../../etc/passwd")]);
    assert!(msg.contains("hard link"), "{msg}");
    // Through a symlink to outside.
    let msg = refused(&[link("up", Symlink, "/etc"), link("hl", Link, "up/passwd")]);
    assert!(msg.contains("symlink"), "{msg}");
}

#[test]
fn whiteout_outside_is_refused() {
    if !root("whiteout_outside_is_refused") {
        return;
    }
    let msg = refused(&[e("../../.wh.canary", tar::EntryType::Regular)]);
    assert!(msg.contains("'..'"), "{msg}");
    let msg = refused(&[e(".wh..", tar::EntryType::Regular)]);
    assert!(msg.contains("whiteout"), "{msg}");
    let msg = refused(&[
        link("up", Symlink, "../../../canary"),
        e("up/.wh.file", tar::EntryType::Regular),
    ]);
    assert!(msg.contains("symlink"), "{msg}");
}

#[test]
fn well_formed_layer_keeps_everything() {
    if !root("well_formed_layer_keeps_everything") {
        return;
    }
    let sb = Sandbox::new();
    let tar = build_tar(&[
        E {
            mode: 0o700,
            ..e("./", Directory)
        },
        e("bin/", Directory),
        E {
            mode: 0o4755,
            uid: 1000,
            ..file("bin/suid", b"#!/bin/sh\n")
        },
        E {
            uid: 1000,
            // vfs_cap_data v2: effective, permitted CAP_NET_RAW.
            xattrs: &[(
                "security.capability",
                &[
                    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
            )],
            ..file("bin/ping", b"ping")
        },
        link("bin/hard", Link, "bin/suid"),
        link("bin/sym", Symlink, "/bin/suid"),
        e("dev/", Directory),
        e("dev/fifo", Fifo),
        link("dev/null", Char, ""),
        e("opq/", Directory),
        e("opq/.wh..wh..opq", tar::EntryType::Regular),
        e(".wh.gone", tar::EntryType::Regular),
        E {
            xattrs: &[("user.krio", b"yes")],
            ..file("x", b"data")
        },
        // A later entry replaces an earlier one.
        file("x2", b"old"),
        file("x2", b"new"),
    ]);
    let size = sb.unpack(&tar).expect("unpacks");
    assert_eq!(size, tar.len() as u64);
    sb.assert_untouched();
    let l = sb.layer();
    let suid = std::fs::metadata(l.join("bin/suid")).expect("suid");
    assert_eq!(suid.permissions().mode() & 0o7777, 0o4755);
    assert_eq!((suid.uid(), suid.gid()), (1000, 1000));
    assert_eq!(suid.mtime(), 1_000_000);
    assert_eq!(suid.nlink(), 2);
    assert_eq!(
        std::fs::read_link(l.join("bin/sym")).expect("symlink"),
        Path::new("/bin/suid")
    );
    assert!(
        std::fs::symlink_metadata(l.join("dev/fifo"))
            .expect("fifo")
            .file_type()
            .is_fifo()
    );
    let null = std::fs::symlink_metadata(l.join("dev/null")).expect("null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    let gone = std::fs::symlink_metadata(l.join("gone")).expect("whiteout");
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    let mut buf = [0u8; 8];
    let n = rustix::fs::getxattr(l.join("opq"), "trusted.overlay.opaque", &mut buf)
        .expect("opaque xattr");
    assert_eq!(&buf[..n], b"y");
    let n = rustix::fs::getxattr(l.join("x"), "user.krio", &mut buf).expect("user xattr");
    assert_eq!(&buf[..n], b"yes");
    assert_eq!(std::fs::read(l.join("x2")).expect("x2"), b"new");
    let mut cap = [0u8; 32];
    let n = rustix::fs::getxattr(l.join("bin/ping"), "security.capability", &mut cap)
        .expect("file capability kept after chown");
    assert_eq!(n, 20);
    assert_eq!(
        std::fs::metadata(l.join("bin/ping")).expect("ping").uid(),
        1000
    );
    assert_eq!(
        std::fs::metadata(&l).expect("root").permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(l.join("bin")).expect("bin").mtime(),
        1_000_000
    );
}

#[test]
fn compressed_layers_and_diff_id_check() {
    if !root("compressed_layers_and_diff_id_check") {
        return;
    }
    let tar = build_tar(&[file("hello", b"world")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let zst = zstd::encode_all(&tar[..], 3).expect("zstd");
    for blob in [&gz, &zst] {
        let sb = Sandbox::new();
        let path = sb.dir.path().join("blob");
        std::fs::write(&path, blob).expect("write");
        unpack_layer(
            &path,
            &sb.layer(),
            &Digest::of_bytes(blob),
            &Digest::of_bytes(&tar),
        )
        .expect("unpacks");
        assert_eq!(
            std::fs::read(sb.layer().join("hello")).expect("read"),
            b"world"
        );
    }
    let sb = Sandbox::new();
    let path = sb.dir.path().join("blob");
    std::fs::write(&path, &gz).expect("write");
    let err = unpack_layer(
        &path,
        &sb.layer(),
        &Digest::of_bytes(&gz),
        &Digest::of_bytes(b"other"),
    )
    .expect_err("diff ID mismatch accepted");
    assert!(matches!(err, UnpackError::DiffId { .. }), "{err}");
}

#[test]
fn overlay_xattrs_from_the_layer_are_ignored() {
    if !root("overlay_xattrs_from_the_layer_are_ignored") {
        return;
    }
    let sb = Sandbox::new();
    let tar = build_tar(&[E {
        xattrs: &[("trusted.overlay.redirect", b"/etc")],
        ..e("d/", Directory)
    }]);
    sb.unpack(&tar).expect("unpacks");
    let mut buf = [0u8; 16];
    assert!(
        rustix::fs::getxattr(sb.layer().join("d"), "trusted.overlay.redirect", &mut buf).is_err()
    );
}
