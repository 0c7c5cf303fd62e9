//! File descriptor operations that need raw fd numbers: adopting the
//! inherited sync fd, closing every fd the monitor did not ask for,
//! accepting on a socket, receiving the pty master over `SCM_RIGHTS`, and
//! setting a terminal's window size.
#![allow(unsafe_code)]

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockFlag, accept4, recvmsg};

/// Takes ownership of the inherited fd `fd`, after checking that it is
/// open.
pub(crate) fn adopt(fd: RawFd) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_GETFD only reads the flags of `fd`; no memory is touched.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is open (checked above) and nothing else in this
    // process owns it: it was inherited for the monitor to own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Closes every fd above 2 except those in `keep`.
pub(crate) fn close_fds_except(keep: &[RawFd]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The directory's own fd is closed now; closing its number again
    // below fails harmlessly with EBADF.
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: the fd is not owned by any Rust object the monitor
            // uses: only the fds in `keep` and 0-2 were opened on purpose
            // before this point, everything else is inherited or stale.
            unsafe { libc::close(fd) };
        }
    }
}

/// Accepts one connection, non-blocking and close-on-exec.
pub(crate) fn accept(listener: &OwnedFd) -> nix::Result<OwnedFd> {
    let fd = accept4(
        listener.as_raw_fd(),
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?;
    // SAFETY: accept4 returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Receives one fd sent with `SCM_RIGHTS` on `sock` (the OCI console
/// socket protocol); the fd is made close-on-exec.
pub(crate) fn recv_fd(sock: &OwnedFd) -> nix::Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut received: Vec<OwnedFd> = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel installed these fds in this process
                // for this message; nothing else owns them.
                received.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    // Extra fds (none expected) are closed when `received` drops.
    received.into_iter().next().ok_or(Errno::EBADMSG)
}

/// Sets the window size of the terminal behind `fd` (`TIOCSWINSZ`).
pub(crate) fn set_winsize(fd: &impl AsFd, width: u16, height: u16) -> nix::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the valid pointer given;
    // the fd is borrowed and stays open for the call.
    let r = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    Errno::result(r).map(drop)
}
