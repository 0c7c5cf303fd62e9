//! Id-mapped mounts (Linux 5.12+; overlayfs 5.19+): a pod with its own user
//! namespace sees files owned by host uid 0 as its own root's.
//!
//! krio maps the mounts itself instead of asking the OCI runtime: runc 1.1
//! (Debian's) has no id-mapped mount support, but joins a user namespace by
//! path, and a mount that is already id-mapped stays so when bound.

#![allow(
    unsafe_code,
    reason = "mount_setattr(2) has no safe wrapper in nix or rustix"
)]

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use rustix::mount::{MoveMountFlags, OpenTreeFlags, move_mount, open_tree};

/// `MOUNT_ATTR_IDMAP` from `<linux/mount.h>`.
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` (version 0, 32 bytes) from `<linux/mount.h>`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Mounts an id-mapped view of `source` (a directory, not recursively) on
/// `target` (an existing directory): ownership is mapped through the user
/// namespace pinned at `userns` (the mapping the pod's containers run with),
/// so files of host uid 0 belong to the pod's root.
pub fn idmapped_bind(source: &Path, userns: &Path, target: &Path) -> std::io::Result<()> {
    let userns = std::fs::File::open(userns)?;
    let tree = open_tree(
        rustix::fs::CWD,
        source,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: u64::try_from(userns.as_raw_fd()).map_err(std::io::Error::other)?,
    };
    // SAFETY: mount_setattr(dfd, "", AT_EMPTY_PATH, &attr, size) reads
    // `size` bytes from `attr`, a live, properly laid out `struct
    // mount_attr` (version 0 is 32 bytes), and the path is a NUL-terminated
    // empty string; both outlive the call. The fds stay open across it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_fd().as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &raw const attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    move_mount(
        tree.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::process::{Command, Stdio};

    #[test]
    fn an_idmapped_bind_shows_root_files_as_the_mapped_owner() {
        if !nix::unistd::geteuid().is_root() {
            println!("SKIPPED: needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("source");
        let target = dir.path().join("target");
        std::fs::create_dir(&source).expect("mkdir");
        std::fs::create_dir(&target).expect("mkdir");
        std::fs::write(source.join("file"), b"x").expect("write");
        // A user namespace mapping 0 -> 1000 to map through: unshare(1)
        // makes it, the test (root) writes its maps.
        let mut holder = Command::new("unshare")
            .args(["--user", "sleep", "30"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let userns = std::path::PathBuf::from(format!("/proc/{}/ns/user", holder.id()));
        let ours = std::fs::read_link("/proc/self/ns/user").expect("own userns");
        for _ in 0..500 {
            if std::fs::read_link(&userns).is_ok_and(|ns| ns != ours) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for map in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{}/{map}", holder.id()), "0 1000 65536\n")
                .expect("write the map");
        }
        let result = idmapped_bind(&source, &userns, &target);
        let _ = holder.kill();
        let _ = holder.wait();
        if let Err(e) = &result
            && e.raw_os_error() == Some(libc::EINVAL)
        {
            println!("SKIPPED: this filesystem cannot be id-mapped: {e}");
            return;
        }
        result.expect("idmapped bind");
        let owner = std::fs::metadata(target.join("file")).expect("stat").uid();
        let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
        assert_eq!(owner, 1000, "host root's file seen through the mapping");
    }
}
