//! The monitor's `poll(2)` loop: container output to the log and the
//! attach clients, stdin from the clients, `ctl` requests, `SIGCHLD`
//! through a signalfd; it ends when the container has exited and its output
//! is drained.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{MsgFlags, recv, send};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::attach::{AttachServer, ClientInput, MAX_PACKET};
use super::cri_log::{CriLog, Stream};
use super::oom::OomCounter;
use super::supervise::{diag, now_ns};
use super::{CtlReply, CtlRequest, ExitInfo, fd, tag};

/// How much is read from the container at a time.
const READ_CHUNK: usize = 32 * 1024;
/// Stdin bytes waiting for the container before attach clients are no
/// longer read.
const STDIN_BUFFER: usize = 64 * 1024;
/// How long output is drained after the container exited when some
/// other process still holds the write end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Pending `ctl` connections kept at once.
const MAX_CTL_CLIENTS: usize = 8;
/// The terminal's EOF character, sent for "close stdin" with a TTY.
const VEOF: u8 = 0x04;

/// What a poll entry stands for.
#[derive(Clone, Copy, Debug)]
enum Token {
    Output(usize),
    StdinPipe,
    Signal,
    CtlListener,
    Ctl(usize),
    AttachListener,
    Attach(usize),
}

/// The running monitor's state.
pub(super) struct Monitor {
    pub(super) tty: bool,
    pub(super) stdin_once: bool,
    pub(super) has_stdin: bool,
    pub(super) log: CriLog,
    /// stdout (or the pty master) and stderr.
    pub(super) outputs: [Option<OwnedFd>; 2],
    /// The write end of the stdin pipe (no TTY).
    pub(super) stdin: Option<OwnedFd>,
    pub(super) stdin_buf: Vec<u8>,
    /// Close stdin once `stdin_buf` is written.
    pub(super) stdin_close: bool,
    pub(super) attach: AttachServer,
    pub(super) ctl: OwnedFd,
    pub(super) ctl_clients: Vec<OwnedFd>,
    pub(super) sigfd: SignalFd,
    pub(super) pid: i32,
    pub(super) oom: Option<OomCounter>,
    /// Exit code and time, once reaped.
    pub(super) exit: Option<(i32, i64)>,
    pub(super) drain_until: Option<Instant>,
}

impl Monitor {
    /// The loop; returns the exit record.
    pub(super) fn run(&mut self) -> ExitInfo {
        let mut buf = vec![0u8; READ_CHUNK.max(MAX_PACKET + 1)];
        self.reap();
        loop {
            let done_draining = self.outputs.iter().all(Option::is_none);
            let timeout = match self.drain_until {
                Some(_) if done_draining => break,
                Some(until) => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    crate::oci::poll_timeout(left)
                }
                None => PollTimeout::NONE,
            };
            let events = match self.poll_once(timeout) {
                Ok(events) => events,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    diag!("poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            // Clients are handled from the highest index down, since one
            // that leaves shifts those after it.
            for (token, revents) in events.into_iter().rev() {
                self.handle(token, revents, &mut buf);
            }
        }
        for stream in [Stream::Stdout, Stream::Stderr] {
            self.log.finish(stream);
        }
        self.attach.close_all();
        let (code, at) = self.exit.unwrap_or((255, now_ns()));
        let oom_killed = self.oom.as_ref().and_then(OomCounter::read).unwrap_or(0) > 0;
        ExitInfo::new(code, at, oom_killed)
    }

    fn poll_once(&self, timeout: PollTimeout) -> nix::Result<Vec<(Token, PollFlags)>> {
        let mut entries: Vec<(Token, BorrowedFd<'_>, PollFlags)> =
            Vec::with_capacity(8 + self.attach.len());
        let mut add = |token, fd, flags| entries.push((token, fd, flags));
        add(Token::Signal, self.sigfd.as_fd(), PollFlags::POLLIN);
        for (i, out) in self.outputs.iter().enumerate() {
            if let Some(out) = out {
                let mut flags = PollFlags::POLLIN;
                if i == 0 && self.tty && !self.stdin_buf.is_empty() {
                    flags |= PollFlags::POLLOUT;
                }
                add(Token::Output(i), out.as_fd(), flags);
            }
        }
        if let Some(stdin) = &self.stdin
            && !self.stdin_buf.is_empty()
        {
            add(Token::StdinPipe, stdin.as_fd(), PollFlags::POLLOUT);
        }
        if self.exit.is_none() {
            add(Token::CtlListener, self.ctl.as_fd(), PollFlags::POLLIN);
            add(
                Token::AttachListener,
                self.attach.listener(),
                PollFlags::POLLIN,
            );
        }
        for (i, c) in self.ctl_clients.iter().enumerate() {
            add(Token::Ctl(i), c.as_fd(), PollFlags::POLLIN);
        }
        let take_stdin = self.stdin_buf.len() < STDIN_BUFFER;
        for i in 0..self.attach.len() {
            let (sock, queued) = self.attach.client(i);
            let mut flags = PollFlags::empty();
            if take_stdin {
                flags |= PollFlags::POLLIN;
            }
            if queued {
                flags |= PollFlags::POLLOUT;
            }
            add(Token::Attach(i), sock, flags);
        }
        let mut fds: Vec<PollFd<'_>> = entries
            .iter()
            .map(|&(_, fd, flags)| PollFd::new(fd, flags))
            .collect();
        poll(&mut fds, timeout)?;
        Ok(entries
            .iter()
            .map(|&(token, _, _)| token)
            .zip(fds.iter())
            .filter_map(|(t, p)| p.revents().filter(|r| !r.is_empty()).map(|r| (t, r)))
            .collect())
    }

    fn handle(&mut self, token: Token, revents: PollFlags, buf: &mut [u8]) {
        match token {
            Token::Signal => {
                while let Ok(Some(_)) = self.sigfd.read_signal() {}
                self.reap();
            }
            Token::Output(i) => {
                if revents.contains(PollFlags::POLLOUT) {
                    self.flush_stdin();
                }
                if revents.intersects(!PollFlags::POLLOUT) {
                    self.read_output(i, &mut buf[..READ_CHUNK]);
                }
            }
            Token::StdinPipe => self.flush_stdin(),
            Token::CtlListener => {
                while let Ok(sock) = fd::accept(&self.ctl) {
                    if self.ctl_clients.len() >= MAX_CTL_CLIENTS {
                        self.ctl_clients.remove(0);
                    }
                    self.ctl_clients.push(sock);
                }
            }
            Token::Ctl(i) => self.serve_ctl(i, buf),
            Token::AttachListener => self.attach.accept(),
            Token::Attach(i) => {
                let readable = revents.intersects(!PollFlags::POLLOUT);
                let writable = revents.contains(PollFlags::POLLOUT);
                if let Some(input) = self.attach.ready(i, readable, writable, buf) {
                    self.client_input(input);
                }
            }
        }
    }

    /// Reaps every exited child; notes the container's exit.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.reaped(pid, code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.reaped(pid, 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    diag!("waitpid: {e}");
                    return;
                }
            }
        }
    }

    fn reaped(&mut self, pid: Pid, code: i32) {
        if pid.as_raw() == self.pid && self.exit.is_none() {
            self.exit = Some((code, now_ns()));
            self.drain_until = Some(Instant::now() + DRAIN_TIMEOUT);
        }
    }

    fn read_output(&mut self, i: usize, buf: &mut [u8]) {
        let Some(out) = &self.outputs[i] else { return };
        let stream = if i == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        match nix::unistd::read(out, buf) {
            Ok(0) | Err(Errno::EIO) => {
                self.outputs[i] = None;
                self.log.finish(stream);
            }
            Ok(n) => {
                let data = &buf[..n];
                self.log.write(stream, data);
                if let Some(e) = self.log.failed.take() {
                    diag!("cannot write the log: {e}");
                }
                let t = if i == 0 { tag::STDOUT } else { tag::STDERR };
                for gone in self.attach.broadcast(t, data) {
                    self.client_input(gone);
                }
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(e) => {
                diag!("reading the container's {stream:?}: {e}");
                self.outputs[i] = None;
                self.log.finish(stream);
            }
        }
    }

    fn client_input(&mut self, input: ClientInput) {
        match input {
            ClientInput::Stdin(data) if self.has_stdin && !self.stdin_close => {
                self.stdin_buf.extend_from_slice(&data);
                self.flush_stdin();
            }
            ClientInput::Stdin(_) => {}
            ClientInput::CloseStdin => self.close_stdin(),
            ClientInput::Gone { first } => {
                if first && self.stdin_once {
                    self.close_stdin();
                }
            }
            ClientInput::Resize(w, h) => {
                if let Err(e) = self.resize(w, h) {
                    diag!("resize: {e}");
                }
            }
        }
    }

    fn close_stdin(&mut self) {
        if !self.has_stdin || self.stdin_close {
            return;
        }
        if self.tty {
            self.stdin_buf.push(VEOF);
        }
        self.stdin_close = true;
        self.flush_stdin();
    }

    /// Writes buffered stdin without blocking; closes stdin when asked
    /// and everything is written.
    fn flush_stdin(&mut self) {
        let target = if self.tty {
            self.outputs[0].as_ref()
        } else {
            self.stdin.as_ref()
        };
        let Some(target) = target else {
            self.stdin_buf = Vec::new();
            return;
        };
        let mut broken = false;
        while !self.stdin_buf.is_empty() {
            match nix::unistd::write(target, &self.stdin_buf) {
                Ok(n) => {
                    self.stdin_buf.drain(..n);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        if broken {
            self.stdin_buf = Vec::new();
            self.stdin = None;
        } else if self.stdin_buf.is_empty() {
            self.stdin_buf = Vec::new();
            if self.stdin_close {
                self.stdin = None;
            }
        }
    }

    fn resize(&self, width: u16, height: u16) -> Result<(), String> {
        match (&self.outputs[0], self.tty) {
            (Some(master), true) => {
                fd::set_winsize(master, width, height).map_err(|e| format!("TIOCSWINSZ: {e}"))
            }
            (None, true) => Err("the container's terminal is closed".to_owned()),
            (_, false) => Err("the container has no terminal".to_owned()),
        }
    }

    fn serve_ctl(&mut self, i: usize, buf: &mut [u8]) {
        let sock = &self.ctl_clients[i];
        let n = match recv(sock.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => return,
            Err(_) => 0,
        };
        if n > 0 {
            let result = match serde_json::from_slice::<CtlRequest>(&buf[..n]) {
                Ok(CtlRequest::ReopenLog) => self
                    .log
                    .reopen()
                    .map_err(|e| format!("cannot reopen the log file: {e}")),
                Ok(CtlRequest::Resize { width, height }) => self.resize(width, height),
                Err(e) => Err(format!("bad request: {e}")),
            };
            if let Err(e) = &result {
                diag!("ctl: {e}");
            }
            let reply = CtlReply {
                ok: result.is_ok(),
                error: result.err(),
            };
            if let Ok(json) = serde_json::to_vec(&reply) {
                let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
                let _ = send(self.ctl_clients[i].as_raw_fd(), &json, flags);
            }
        }
        self.ctl_clients.remove(i);
    }
}
