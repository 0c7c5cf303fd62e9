//! The stream idle timeout for transports that have none of their own
//! (WebSocket sessions): [`IdleTimeout`] wraps an upgraded connection and
//! fails its reads and writes once no byte has moved in either direction
//! for the timeout. The session reading it then ends as if the client had
//! gone, which stops the exec and closes the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// An I/O object that times out after `timeout` without traffic.
#[derive(Debug)]
pub struct IdleTimeout<IO> {
    io: IO,
    timeout: Duration,
    last: Instant,
    sleep: Pin<Box<Sleep>>,
    expired: bool,
}

impl<IO> IdleTimeout<IO> {
    /// Wraps `io`; the clock starts now.
    pub fn new(io: IO, timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            io,
            timeout,
            last: now,
            sleep: Box::pin(tokio::time::sleep_until(now + timeout)),
            expired: false,
        }
    }

    fn touch(&mut self) {
        // The timer is not reset here (that would cost a timer update per
        // read); `check` moves it forward when it fires early.
        self.last = Instant::now();
    }

    /// Whether the timeout has passed; registers `cx` to be woken when it
    /// may have.
    fn check(&mut self, cx: &mut Context<'_>) -> bool {
        if self.expired {
            return true;
        }
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            let deadline = self.last + self.timeout;
            if Instant::now() >= deadline {
                tracing::debug!(timeout = ?self.timeout, "stream idle timeout");
                self.expired = true;
                return true;
            }
            self.sleep.as_mut().reset(deadline);
        }
    }

    fn timed_out() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "stream idle timeout")
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for IdleTimeout<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(Self::timed_out()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.check(cx) => Poll::Ready(Err(Self::timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(Self::timed_out()));
        }
        match Pin::new(&mut this.io).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.touch();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // A peer that stops reading is idle too.
            Poll::Pending if this.check(cx) => Poll::Ready(Err(Self::timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_it_open_and_silence_times_it_out() {
        let (mut peer, io) = tokio::io::duplex(1024);
        let mut io = IdleTimeout::new(io, Duration::from_secs(60));
        let mut buf = [0u8; 16];
        // Reads and writes, each within the timeout, keep it alive for
        // longer than one timeout in total.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(40)).await;
            peer.write_all(b"ping").await.expect("peer write");
            assert_eq!(io.read(&mut buf).await.expect("read"), 4);
            tokio::time::sleep(Duration::from_secs(40)).await;
            io.write_all(b"pong").await.expect("write");
            assert_eq!(peer.read(&mut buf).await.expect("peer read"), 4);
        }
        // Silence: the pending read fails, and so does everything after.
        let err = io.read(&mut buf).await.expect_err("idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let err = io.write_all(b"late").await.expect_err("still idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_times_out_a_writer() {
        let (_peer, io) = tokio::io::duplex(8);
        let mut io = IdleTimeout::new(io, Duration::from_secs(5));
        let err = io.write_all(&[0u8; 64]).await.expect_err("blocked writer");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
