//! The OCI console-socket protocol for callers outside the monitor (a TTY
//! `exec` in the daemon): wait for the runtime to connect, take the pty
//! master it sends, and size the terminal.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

/// Waits (at most `timeout`, or until `gave_up` says the runtime is gone)
/// for the runtime to connect to `listener` and send the pty master.
pub fn receive_pty_master(
    listener: &UnixListener,
    timeout: Duration,
    gave_up: impl Fn() -> bool,
) -> std::io::Result<OwnedFd> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let conn = loop {
        match listener.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if gave_up() || Instant::now() >= deadline {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the OCI runtime sent no console",
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    };
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(timeout))?;
    let conn = OwnedFd::from(conn);
    super::fd::recv_fd(&conn).map_err(std::io::Error::from)
}

/// Sets the terminal size of a pty master.
pub fn set_size(master: &impl AsFd, width: u16, height: u16) -> std::io::Result<()> {
    super::fd::set_winsize(master, width, height).map_err(std::io::Error::from)
}
