//! Per-connection I/O wrapper: the WAN model's bandwidth cap (a token bucket per direction)
//! and the "reset" fault (close with SO_LINGER 0 so the peer sees a TCP RST).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Token bucket pacing one direction of a connection.
struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Pacer {
    fn new(rate: u64) -> Self {
        let rate = rate.max(1) as f64;
        // 20 ms worth of burst keeps pacing smooth without tiny writes.
        let burst = (rate / 50.0).max(16.0 * 1024.0);
        Self {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
            sleep: None,
        }
    }

    /// How many bytes may move now; `Pending` (with a timer armed) when none.
    fn poll_allow(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<usize> {
        loop {
            if let Some(s) = self.sleep.as_mut() {
                ready!(s.as_mut().poll(cx));
                self.sleep = None;
            }
            let now = Instant::now();
            let dt = now.duration_since(self.last).as_secs_f64();
            self.last = now;
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
            if self.tokens >= 1.0 {
                return Poll::Ready((self.tokens as usize).min(want).max(1));
            }
            let wait = (1.0 - self.tokens).max(self.burst / 4.0) / self.rate;
            self.sleep = Some(Box::pin(tokio::time::sleep(Duration::from_secs_f64(wait))));
        }
    }

    fn consume(&mut self, n: usize) {
        self.tokens -= n as f64;
    }
}

use std::future::Future;

/// The server side of one TCP connection.
pub struct ConnIo {
    stream: TcpStream,
    read: Option<Pacer>,
    write: Option<Pacer>,
    reset: Arc<AtomicBool>,
}

impl ConnIo {
    /// Wraps `stream`; `rate` caps each direction in bytes/s; setting `reset` before the
    /// connection is dropped turns the close into an RST.
    pub fn new(stream: TcpStream, rate: Option<u64>, reset: Arc<AtomicBool>) -> Self {
        Self {
            stream,
            read: rate.map(Pacer::new),
            write: rate.map(Pacer::new),
            reset,
        }
    }
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Relaxed) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.reset.load(Ordering::Relaxed) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        let Some(pacer) = this.read.as_mut() else {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        };
        let allow = ready!(pacer.poll_allow(cx, buf.remaining()));
        let mut limited = buf.take(allow);
        ready!(Pin::new(&mut this.stream).poll_read(cx, &mut limited))?;
        let n = limited.filled().len();
        // SAFETY: `limited` wrote (and so initialised) `n` bytes of `buf`'s unfilled part.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        pacer.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.reset.load(Ordering::Relaxed) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        let Some(pacer) = this.write.as_mut() else {
            return Pin::new(&mut this.stream).poll_write(cx, data);
        };
        let allow = ready!(pacer.poll_allow(cx, data.len()));
        let n = ready!(Pin::new(&mut this.stream).poll_write(cx, &data[..allow.min(data.len())]))?;
        pacer.consume(n);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write.is_none() && !this.reset.load(Ordering::Relaxed) {
            return Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        }
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        Pin::new(this).poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        self.write.is_none()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn write_is_paced() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut io = ConnIo::new(s, Some(1 << 20), Arc::new(AtomicBool::new(false)));
            io.write_all(&vec![7u8; 512 * 1024]).await.unwrap();
            io.shutdown().await.unwrap();
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        let t = std::time::Instant::now();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        let el = t.elapsed();
        server.await.unwrap();
        assert_eq!(got.len(), 512 * 1024);
        // 512 KiB at 1 MiB/s ≈ 0.5 s (minus the initial burst).
        assert!(el > Duration::from_millis(350), "{el:?}");
        assert!(el < Duration::from_secs(3), "{el:?}");
    }
}
