//! A tiny SPDY client built from the crate's frame types, for tests.
#![allow(dead_code)]

use std::time::Duration;

use krio_streaming::spdy::frame::{Data, SynStream, WindowUpdate};
use krio_streaming::spdy::{Frame, FrameDecoder, FrameEncoder, HeaderBlock, Limits};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

pub struct Client<IO> {
    rd: ReadHalf<IO>,
    wr: WriteHalf<IO>,
    enc: FrameEncoder,
    dec: FrameDecoder,
    buf: Vec<u8>,
}

impl<IO: AsyncRead + AsyncWrite> Client<IO> {
    pub fn new(io: IO) -> Self {
        let (rd, wr) = tokio::io::split(io);
        Self {
            rd,
            wr,
            enc: FrameEncoder::new().expect("encoder"),
            dec: FrameDecoder::new(Limits::default()),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, frame: Frame) {
        let mut out = Vec::new();
        self.enc.encode(&frame, &mut out).expect("encode");
        self.send_raw(&out).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).await.expect("write");
        self.wr.flush().await.expect("flush");
    }

    pub async fn open(&mut self, id: u32, pairs: &[(&str, &str)]) {
        let mut headers = HeaderBlock::new();
        for (n, v) in pairs {
            headers.push(n, *v);
        }
        self.send(Frame::SynStream(SynStream {
            stream_id: id,
            associated_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers,
        }))
        .await;
    }

    pub async fn data(&mut self, id: u32, data: &[u8], fin: bool) {
        self.send(Frame::Data(Data {
            stream_id: id,
            fin,
            data: data.to_vec(),
        }))
        .await;
    }

    pub async fn window_update(&mut self, id: u32, delta: u32) {
        self.send(Frame::WindowUpdate(WindowUpdate {
            stream_id: id,
            delta,
        }))
        .await;
    }

    /// The next frame, or `None` on EOF or when nothing comes within `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Frame> {
        loop {
            if let Some((f, used)) = self.dec.decode(&self.buf).expect("decode") {
                self.buf.drain(..used);
                return Some(f);
            }
            self.buf.reserve(64 * 1024);
            match tokio::time::timeout(wait, self.rd.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Err(_) => return None,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("read: {e}"),
            }
        }
    }

    pub async fn recv(&mut self) -> Frame {
        self.recv_within(Duration::from_secs(5))
            .await
            .expect("a frame within 5s")
    }

    /// Collects DATA payload for `id` until FIN, skipping other frames.
    pub async fn read_stream(&mut self, id: u32) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            match self.recv().await {
                Frame::Data(d) if d.stream_id == id => {
                    out.extend_from_slice(&d.data);
                    if d.fin {
                        return out;
                    }
                }
                _ => {}
            }
        }
    }
}
