//! The transport loops of a connection: reading frames and dispatching them
//! to streams, and writing the frames streams queue.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};

use super::config::FlowControl;
use super::connection::{ConnectionError, Out, Shared, lock, wait_until};
use super::frame::{
    Data, Frame, FrameDecoder, FrameEncoder, GoAway, GoAwayStatus, RstStatus, RstStream,
    settings_id,
};
use super::stream::{Handle, Stream, StreamShared, StreamState};

const MAX_WINDOW: i64 = 0x7fff_ffff;

/// Encodes queued frames and writes them, batching what is ready.
pub(super) async fn write_loop<W: AsyncWrite>(
    wr: W,
    mut encoder: FrameEncoder,
    mut rx: mpsc::Receiver<Out>,
    shared: Arc<Shared>,
) -> Result<(), ConnectionError> {
    tokio::pin!(wr);
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        buf.clear();
        let mut close = false;
        let mut next = Some(first);
        while let Some(out) = next.take() {
            match out {
                Out::Frame(f) => encoder.encode(&f, &mut buf)?,
                Out::Close => {
                    close = true;
                    break;
                }
            }
            if buf.len() < 64 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        wr.write_all(&buf).await?;
        wr.flush().await?;
        shared.touch();
        if close {
            wr.shutdown().await?;
            return Ok(());
        }
    }
    Ok(())
}

/// Reads and dispatches frames until EOF, an error or the idle timeout.
pub(super) async fn read_loop<R: AsyncRead>(
    rd: R,
    mut decoder: FrameDecoder,
    shared: Arc<Shared>,
    incoming: mpsc::Sender<Stream>,
) -> Result<(), ConnectionError> {
    tokio::pin!(rd);
    let mut incoming = Some(incoming);
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let decoded = decoder.decode(&buf);
        match decoded {
            Ok(Some((frame, used))) => {
                buf.drain(..used);
                shared.touch();
                if let Err(e) = handle_frame(&shared, &mut incoming, frame).await {
                    go_away(&shared, GoAwayStatus::PROTOCOL_ERROR).await;
                    return Err(e);
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, "spdy: bad frame, sending GOAWAY");
                go_away(&shared, GoAwayStatus::PROTOCOL_ERROR).await;
                return Err(e.into());
            }
        }
        buf.reserve(16 * 1024);
        let read = rd.read_buf(&mut buf);
        let n = match shared.config.idle_timeout {
            None => read.await?,
            Some(idle) => match tokio::time::timeout(idle, read).await {
                Ok(n) => n?,
                Err(_) => {
                    if shared.idle_for() >= idle {
                        tracing::debug!(?idle, "spdy: idle connection, sending GOAWAY");
                        go_away(&shared, GoAwayStatus::OK).await;
                        return Ok(());
                    }
                    continue;
                }
            },
        };
        if n == 0 {
            let _ = shared.out.send(Out::Close).await;
            return Ok(());
        }
    }
}

/// Sends GOAWAY and closes the transport.
pub(super) async fn go_away(shared: &Shared, status: GoAwayStatus) {
    let last = lock(&shared.state).last_peer_stream;
    let frame = Frame::GoAway(GoAway {
        last_good_stream_id: last,
        status,
    });
    let _ = shared.out.send(Out::Frame(frame)).await;
    let _ = shared.out.send(Out::Close).await;
}

/// Sends RST_STREAM.
pub(super) async fn rst(shared: &Shared, stream_id: u32, status: RstStatus) {
    let _ = shared
        .send(Frame::RstStream(RstStream { stream_id, status }))
        .await;
}

/// Applies one frame from the peer.
pub(super) async fn handle_frame(
    shared: &Arc<Shared>,
    incoming: &mut Option<mpsc::Sender<Stream>>,
    frame: Frame,
) -> Result<(), ConnectionError> {
    match frame {
        Frame::SynStream(syn) => {
            let id = syn.stream_id;
            if id == 0 || id % 2 == 0 {
                return Err(ConnectionError::Protocol("client stream id must be odd"));
            }
            let refused = {
                let mut st = lock(&shared.state);
                if id <= st.last_peer_stream {
                    return Err(ConnectionError::Protocol("stream id not increasing"));
                }
                st.last_peer_stream = id;
                st.streams.len() >= shared.config.max_streams || incoming.is_none()
            };
            if refused {
                rst(shared, id, RstStatus::REFUSED_STREAM).await;
                return Ok(());
            }
            let s = Arc::new(StreamShared {
                id,
                headers: syn.headers,
                state: Mutex::new(StreamState {
                    recv: VecDeque::new(),
                    remote_fin: syn.fin,
                    local_fin: syn.unidirectional,
                    reset: None,
                    conn_closed: false,
                    replied: false,
                    send_window: shared.peer_initial_window.load(Ordering::Acquire),
                    recv_window: i64::from(shared.config.initial_window),
                    unacked: 0,
                }),
                changed: Notify::new(),
            });
            lock(&shared.state).streams.insert(id, s.clone());
            let stream = Stream {
                handle: Arc::new(Handle {
                    stream: s,
                    conn: shared.clone(),
                }),
            };
            let sent = incoming.as_ref().map(|tx| tx.try_send(stream));
            if !matches!(sent, Some(Ok(()))) {
                // Dropping the refused stream's handle sends RST CANCEL;
                // say REFUSED_STREAM first so the client knows why.
                shared.remove(id);
                rst(shared, id, RstStatus::REFUSED_STREAM).await;
            }
        }
        Frame::SynReply(r) => {
            rst(shared, r.stream_id, RstStatus::PROTOCOL_ERROR).await;
        }
        Frame::Data(d) => handle_data(shared, d).await,
        Frame::RstStream(r) => {
            let s = lock(&shared.state).streams.remove(&r.stream_id);
            if let Some(s) = s {
                lock(&s.state).reset = Some(r.status);
                s.changed.notify_waiters();
            }
        }
        Frame::Settings(settings) => {
            for e in settings.entries {
                if e.id == settings_id::INITIAL_WINDOW_SIZE {
                    let new = i64::from(e.value).min(MAX_WINDOW);
                    let old = shared.peer_initial_window.swap(new, Ordering::AcqRel);
                    shared.peer_flow_control.store(true, Ordering::Release);
                    let streams: Vec<_> = lock(&shared.state).streams.values().cloned().collect();
                    for s in streams {
                        lock(&s.state).send_window += new - old;
                        s.changed.notify_waiters();
                    }
                }
            }
        }
        Frame::Ping(id) => {
            // Odd ids are the client's; even ones answer ours.
            if id % 2 == 1 {
                let _ = shared.send(Frame::Ping(id)).await;
            }
        }
        Frame::GoAway(_) => {
            *incoming = None;
        }
        Frame::Headers(h) => {
            if !lock(&shared.state).streams.contains_key(&h.stream_id) {
                rst(shared, h.stream_id, RstStatus::INVALID_STREAM).await;
            }
        }
        Frame::WindowUpdate(w) => {
            shared.peer_flow_control.store(true, Ordering::Release);
            let delta = i64::from(w.delta);
            if w.stream_id == 0 {
                let now = shared
                    .session_send_window
                    .fetch_add(delta, Ordering::AcqRel)
                    + delta;
                if now > MAX_WINDOW {
                    return Err(ConnectionError::Protocol("session window overflow"));
                }
                shared.notify_all();
            } else {
                let s = lock(&shared.state).streams.get(&w.stream_id).cloned();
                if let Some(s) = s {
                    let overflow = {
                        let mut st = lock(&s.state);
                        st.send_window += delta;
                        st.send_window > MAX_WINDOW
                    };
                    if overflow {
                        reset_local(shared, &s, RstStatus::FLOW_CONTROL_ERROR).await;
                    } else {
                        s.changed.notify_waiters();
                    }
                }
            }
        }
        Frame::Unknown { frame_type } => {
            tracing::debug!(frame_type, "spdy: ignoring unknown control frame");
        }
    }
    Ok(())
}

/// Resets a stream from our side.
pub(super) async fn reset_local(shared: &Shared, s: &StreamShared, status: RstStatus) {
    shared.remove(s.id);
    lock(&s.state).reset = Some(status);
    s.changed.notify_waiters();
    rst(shared, s.id, status).await;
}

/// Buffers a DATA frame for its stream, within the bounds.
pub(super) async fn handle_data(shared: &Arc<Shared>, d: Data) {
    let s = lock(&shared.state).streams.get(&d.stream_id).cloned();
    let Some(s) = s else {
        rst(shared, d.stream_id, RstStatus::INVALID_STREAM).await;
        return;
    };
    let len = d.data.len();
    let strict = shared.config.flow_control == FlowControl::Enforce;
    let cap = shared.config.max_stream_buffer;
    enum Verdict {
        Ok,
        Closed,
        Overrun,
        Gone,
    }
    let verdict = wait_until(&s, |st| {
        if st.reset.is_some() || st.conn_closed {
            return Some(Verdict::Gone);
        }
        if st.remote_fin {
            return Some(Verdict::Closed);
        }
        let len64 = i64::try_from(len).unwrap_or(i64::MAX);
        if strict && len64 > st.recv_window {
            return Some(Verdict::Overrun);
        }
        // A peer that ignores our window is slowed down by not reading
        // the transport while this stream's buffer is full.
        if !st.recv.is_empty() && st.recv.len() + len > cap {
            return None;
        }
        st.recv_window -= len64;
        st.recv.extend(&d.data);
        st.remote_fin = d.fin;
        Some(Verdict::Ok)
    })
    .await;
    match verdict {
        Verdict::Ok => {
            s.changed.notify_waiters();
            let done = {
                let st = lock(&s.state);
                st.remote_fin && st.local_fin
            };
            if done {
                shared.remove(s.id);
            }
        }
        Verdict::Closed => reset_local(shared, &s, RstStatus::STREAM_ALREADY_CLOSED).await,
        Verdict::Overrun => reset_local(shared, &s, RstStatus::FLOW_CONTROL_ERROR).await,
        Verdict::Gone => {}
    }
}
