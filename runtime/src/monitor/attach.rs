//! The `attach` socket: the monitor's fan-out of the container's output to
//! attached clients and their stdin, and the daemon's [`AttachClient`].
//! The protocol is in the [module docs](super).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr, bind, connect, listen, recv,
    sendmsg, socket,
};

use super::fd;
use super::tag;

/// How far a client may fall behind before it is dropped.
pub(crate) const CLIENT_BUFFER: usize = 256 * 1024;
/// How many clients may attach at once.
const MAX_CLIENTS: usize = 16;
/// The largest packet either side sends.
pub(crate) const MAX_PACKET: usize = 64 * 1024;

/// A listening `SOCK_SEQPACKET` socket at `path`, replacing a stale one;
/// mode 0600, inside the 0700 state dir.
pub(crate) fn listen_seqpacket(path: &Path) -> std::io::Result<OwnedFd> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    bind(sock.as_raw_fd(), &UnixAddr::new(path)?)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    listen(&sock, Backlog::new(16)?)?;
    Ok(sock)
}

/// Connects a blocking `SOCK_SEQPACKET` socket to `path`.
pub(crate) fn connect_seqpacket(path: &Path) -> std::io::Result<OwnedFd> {
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    connect(sock.as_raw_fd(), &UnixAddr::new(path)?)?;
    Ok(sock)
}

/// Sends one packet `tag` + `data`.
fn send_packet(sock: BorrowedFd<'_>, tag: u8, data: &[u8], flags: MsgFlags) -> nix::Result<()> {
    let t = [tag];
    let iov = [IoSlice::new(&t), IoSlice::new(data)];
    sendmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &iov,
        &[],
        flags | MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// What a client asked for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClientInput {
    /// Bytes for the container's stdin.
    Stdin(Vec<u8>),
    /// Close the container's stdin.
    CloseStdin,
    /// Resize the terminal.
    Resize(u16, u16),
    /// The client went away; `first` when it was the first to attach.
    Gone { first: bool },
}

struct Client {
    fd: OwnedFd,
    queue: VecDeque<Vec<u8>>,
    queued: usize,
    first: bool,
}

/// The monitor's side of the attach socket.
pub(crate) struct AttachServer {
    listener: OwnedFd,
    clients: Vec<Client>,
    anyone_attached: bool,
}

impl AttachServer {
    /// Listens at `path`.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            listener: listen_seqpacket(path)?,
            clients: Vec::new(),
            anyone_attached: false,
        })
    }

    /// The listening socket, for poll.
    pub fn listener(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// The number of clients.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Client `i`'s socket and whether it has output waiting.
    pub fn client(&self, i: usize) -> (BorrowedFd<'_>, bool) {
        let c = &self.clients[i];
        (c.fd.as_fd(), !c.queue.is_empty())
    }

    /// Accepts pending connections (beyond the limit they are closed).
    pub fn accept(&mut self) {
        loop {
            match fd::accept(&self.listener) {
                Ok(sock) if self.clients.len() < MAX_CLIENTS => {
                    let first = !self.anyone_attached;
                    self.anyone_attached = true;
                    self.clients.push(Client {
                        fd: sock,
                        queue: VecDeque::new(),
                        queued: 0,
                        first,
                    });
                }
                Ok(_) => {}
                Err(Errno::EINTR | Errno::ECONNABORTED) => {}
                Err(_) => return,
            }
        }
    }

    /// Sends output to every client; a client too far behind is dropped
    /// and reported in the result like a client that left.
    pub fn broadcast(&mut self, tag: u8, data: &[u8]) -> Vec<ClientInput> {
        let mut gone = Vec::new();
        self.clients.retain_mut(|c| {
            let ok = if c.queue.is_empty() {
                match send_packet(c.fd.as_fd(), tag, data, MsgFlags::MSG_DONTWAIT) {
                    Ok(()) => true,
                    Err(Errno::EAGAIN) => enqueue(c, tag, data),
                    Err(_) => false,
                }
            } else {
                enqueue(c, tag, data)
            };
            if !ok {
                gone.push(ClientInput::Gone { first: c.first });
            }
            ok
        });
        gone
    }

    /// Sends what client `i` has queued; `false` when it must be dropped.
    fn flush_one(c: &mut Client) -> bool {
        while let Some(p) = c.queue.front() {
            match send_packet(c.fd.as_fd(), p[0], &p[1..], MsgFlags::MSG_DONTWAIT) {
                Ok(()) => {
                    c.queued -= p.len();
                    c.queue.pop_front();
                }
                Err(Errno::EAGAIN) => return true,
                Err(_) => return false,
            }
        }
        c.queue = VecDeque::new();
        true
    }

    /// Handles readiness of client `i`: writable, readable or hung up.
    /// Returns what the client asked for; the client is removed when gone
    /// (indices after `i` shift down).
    pub fn ready(
        &mut self,
        i: usize,
        readable: bool,
        writable: bool,
        buf: &mut [u8],
    ) -> Option<ClientInput> {
        let c = &mut self.clients[i];
        let mut alive = !writable || Self::flush_one(c);
        let mut input = None;
        if alive && readable {
            match recv(c.fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => alive = false,
                Ok(n) => input = parse_input(&buf[..n]),
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(_) => alive = false,
            }
        }
        if alive {
            return input;
        }
        let c = self.clients.remove(i);
        Some(ClientInput::Gone { first: c.first })
    }

    /// Tries once more to deliver queued output, then disconnects
    /// everyone.
    pub fn close_all(&mut self) {
        for c in &mut self.clients {
            Self::flush_one(c);
        }
        self.clients.clear();
    }
}

fn enqueue(c: &mut Client, tag: u8, data: &[u8]) -> bool {
    if c.queued + data.len() + 1 > CLIENT_BUFFER {
        return false;
    }
    let mut p = Vec::with_capacity(data.len() + 1);
    p.push(tag);
    p.extend_from_slice(data);
    c.queued += p.len();
    c.queue.push_back(p);
    true
}

fn parse_input(packet: &[u8]) -> Option<ClientInput> {
    let (&t, body) = packet.split_first()?;
    match t {
        tag::STDIN if !body.is_empty() => Some(ClientInput::Stdin(body.to_vec())),
        tag::CLOSE_STDIN => Some(ClientInput::CloseStdin),
        tag::RESIZE if body.len() >= 4 => Some(ClientInput::Resize(
            u16::from_be_bytes([body[0], body[1]]),
            u16::from_be_bytes([body[2], body[3]]),
        )),
        _ => None,
    }
}

/// Output received by an [`AttachClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachEvent {
    /// Bytes the container wrote to stdout (everything, with a TTY).
    Stdout(Vec<u8>),
    /// Bytes the container wrote to stderr.
    Stderr(Vec<u8>),
}

/// A blocking connection to a monitor's `attach` socket.
#[derive(Debug)]
pub struct AttachClient {
    sock: OwnedFd,
}

impl AttachClient {
    /// Connects to the monitor with state dir `state_dir`.
    pub fn connect(state_dir: &Path) -> std::io::Result<Self> {
        Ok(Self {
            sock: connect_seqpacket(&state_dir.join(super::ATTACH_SOCKET))?,
        })
    }

    /// Waits for the next output; `None` once the monitor closed the
    /// connection (the container exited and its output was drained, or this
    /// client fell too far behind).
    pub fn recv(&self) -> std::io::Result<Option<AttachEvent>> {
        let mut buf = vec![0u8; MAX_PACKET + 1];
        loop {
            let n = match recv(self.sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            let data = buf.split_off(1);
            match buf[0] {
                tag::STDOUT => return Ok(Some(AttachEvent::Stdout(data))),
                tag::STDERR => return Ok(Some(AttachEvent::Stderr(data))),
                _ => buf = vec![0u8; MAX_PACKET + 1],
            }
        }
    }

    /// Sends bytes to the container's stdin.
    pub fn send_stdin(&self, data: &[u8]) -> std::io::Result<()> {
        for chunk in data.chunks(MAX_PACKET - 1) {
            send_packet(self.sock.as_fd(), tag::STDIN, chunk, MsgFlags::empty())?;
        }
        Ok(())
    }

    /// Asks the monitor to close the container's stdin.
    pub fn close_stdin(&self) -> std::io::Result<()> {
        Ok(send_packet(
            self.sock.as_fd(),
            tag::CLOSE_STDIN,
            &[],
            MsgFlags::empty(),
        )?)
    }

    /// Resizes the container's terminal.
    pub fn resize(&self, width: u16, height: u16) -> std::io::Result<()> {
        let w = width.to_be_bytes();
        let h = height.to_be_bytes();
        Ok(send_packet(
            self.sock.as_fd(),
            tag::RESIZE,
            &[w[0], w[1], h[0], h[1]],
            MsgFlags::empty(),
        )?)
    }

    /// A second handle on the same connection (one thread reads, another
    /// writes).
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Self {
            sock: self.sock.try_clone()?,
        })
    }
}

impl AsFd for AttachClient {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs() {
        assert_eq!(
            parse_input(&[0, b'a']),
            Some(ClientInput::Stdin(b"a".to_vec()))
        );
        assert_eq!(parse_input(&[0]), None);
        assert_eq!(parse_input(&[3]), Some(ClientInput::CloseStdin));
        assert_eq!(
            parse_input(&[4, 0, 80, 0, 24]),
            Some(ClientInput::Resize(80, 24))
        );
        assert_eq!(parse_input(&[4, 0]), None);
        assert_eq!(parse_input(&[]), None);
    }

    #[test]
    fn slow_client_is_dropped_fast_client_gets_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = AttachServer::bind(&dir.path().join("attach")).expect("bind");
        let slow = AttachClient::connect(dir.path()).expect("connect");
        let fast = AttachClient::connect(dir.path()).expect("connect");
        server.accept();
        assert_eq!(server.len(), 2);
        let chunk = vec![b'x'; 16 * 1024];
        let reader = std::thread::spawn(move || {
            let mut total = 0;
            while let Ok(Some(AttachEvent::Stdout(d))) = fast.recv() {
                total += d.len();
            }
            total
        });
        let mut dropped = false;
        for _ in 0..200 {
            let gone = server.broadcast(tag::STDOUT, &chunk);
            dropped |= gone == vec![ClientInput::Gone { first: true }];
            // Let the fast reader keep up.
            let mut buf = [0u8; 16];
            for i in 0..server.len() {
                let _ = server.ready(i, false, true, &mut buf);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(dropped, "the slow client was not dropped");
        assert_eq!(server.len(), 1);
        server.close_all();
        drop(server);
        let got = reader.join().expect("reader");
        assert!(got > 0);
        drop(slow);
    }
}
