//! Per-connection I/O wrapper: the WAN model's bandwidth cap (a token bucket per direction),
//! the "reset" fault (close with SO_LINGER 0 so the peer sees a TCP RST), and the runtime
//! link switches of [`Link`]: a full outage and a slow-loris dribble.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
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
        // 20 ms worth of burst keeps pacing smooth without tiny writes.
        Self::with_burst(rate, (rate as f64 / 50.0).max(16.0 * 1024.0))
    }

    fn with_burst(rate: u64, burst: f64) -> Self {
        let rate = rate.max(1) as f64;
        let burst = burst.max(1.0);
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

/// The WAN model's per-connection caps: real cross-region connections differ in speed (the
/// slowest ones finish last), so each accepted connection gets its own cap drawn uniformly
/// from `[rate × (1 − spread), rate × (1 + spread)]`. Deterministic: the `n`-th connection's
/// draw depends only on the seed and `n` (SplitMix64), so a run is reproducible.
#[derive(Debug)]
pub struct RateDraw {
    rate: u64,
    spread: f64,
    seed: u64,
    accepted: AtomicU64,
}

impl RateDraw {
    /// `spread` within `0..1` (checked by the world's constructor).
    pub fn new(rate: u64, spread: f64, seed: u64) -> Self {
        Self {
            rate,
            spread,
            seed,
            accepted: AtomicU64::new(0),
        }
    }

    /// The cap of the next connection, bytes/s (at least 1).
    pub fn next(&self) -> u64 {
        if self.spread <= 0.0 {
            return self.rate;
        }
        let n = self.accepted.fetch_add(1, Ordering::Relaxed);
        let mut x = self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        // 53 random bits → [0, 1).
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        let factor = 1.0 - self.spread + 2.0 * self.spread * u;
        ((self.rate as f64 * factor).round() as u64).max(1)
    }
}

/// Switches shared by every connection of one simulator, flipped at runtime.
#[derive(Debug, Default)]
pub struct Link {
    /// Full outage: new connections are reset at once and open ones fail their next read or
    /// write with a reset, the way a dead load balancer or a cut link looks to a client.
    pub outage: AtomicBool,
    /// Slow loris (bytes/s, 0 = off): every connection moves at most this many bytes per
    /// second in each direction, in tiny bursts, so requests neither fail nor finish.
    pub loris: AtomicU64,
    /// Connections the outage reset (on accept or mid-request).
    pub outage_resets: AtomicU64,
}

/// A slow-loris pacer, remembered with the rate it was built for.
struct Loris {
    rate: u64,
    read: Pacer,
    write: Pacer,
}

/// The server side of one TCP connection.
pub struct ConnIo {
    stream: TcpStream,
    read: Option<Pacer>,
    write: Option<Pacer>,
    reset: Arc<AtomicBool>,
    link: Arc<Link>,
    loris: Option<Loris>,
}

impl ConnIo {
    /// Wraps `stream`; `rate` caps each direction in bytes/s; setting `reset` before the
    /// connection is dropped turns the close into an RST; `link` carries the runtime
    /// outage and slow-loris switches.
    pub fn new(
        stream: TcpStream,
        rate: Option<u64>,
        reset: Arc<AtomicBool>,
        link: Arc<Link>,
    ) -> Self {
        Self {
            stream,
            read: rate.map(Pacer::new),
            write: rate.map(Pacer::new),
            reset,
            link,
            loris: None,
        }
    }

    /// `Err` when the link is down (the connection then closes with an RST).
    fn check_outage(&self) -> io::Result<()> {
        if self.reset.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if self.link.outage.load(Ordering::Relaxed) {
            self.reset.store(true, Ordering::Relaxed);
            self.link.outage_resets.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "simulated outage",
            ));
        }
        Ok(())
    }

    /// The slow-loris pacers, (re)built when the rate changed; `None` when it is off.
    fn loris(&mut self) -> Option<&mut Loris> {
        let rate = self.link.loris.load(Ordering::Relaxed);
        if rate == 0 {
            self.loris = None;
            return None;
        }
        if self.loris.as_ref().map(|l| l.rate) != Some(rate) {
            // A burst of a quarter second's worth: the peer sees a trickle, never a pause
            // long enough to look dead on its own.
            let burst = (rate as f64 / 4.0).max(1.0);
            self.loris = Some(Loris {
                rate,
                read: Pacer::with_burst(rate, burst),
                write: Pacer::with_burst(rate, burst),
            });
        }
        self.loris.as_mut()
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
        this.check_outage()?;
        let mut want = buf.remaining();
        if let Some(l) = this.loris() {
            want = ready!(l.read.poll_allow(cx, want));
            let mut limited = buf.take(want);
            ready!(Pin::new(&mut this.stream).poll_read(cx, &mut limited))?;
            let n = limited.filled().len();
            // SAFETY: `limited` wrote (and so initialised) `n` bytes of `buf`'s unfilled part.
            unsafe { buf.assume_init(n) };
            buf.advance(n);
            if let Some(l) = this.loris.as_mut() {
                l.read.consume(n);
            }
            return Poll::Ready(Ok(()));
        }
        let Some(pacer) = this.read.as_mut() else {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        };
        let allow = ready!(pacer.poll_allow(cx, want));
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
        this.check_outage()?;
        if let Some(l) = this.loris() {
            let allow = ready!(l.write.poll_allow(cx, data.len()));
            let n =
                ready!(Pin::new(&mut this.stream).poll_write(cx, &data[..allow.min(data.len())]))?;
            if let Some(l) = this.loris.as_mut() {
                l.write.consume(n);
            }
            return Poll::Ready(Ok(n));
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
        if this.write.is_none()
            && !this.reset.load(Ordering::Relaxed)
            && !this.link.outage.load(Ordering::Relaxed)
            && this.link.loris.load(Ordering::Relaxed) == 0
        {
            return Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        }
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        Pin::new(this).poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        // `poll_write_vectored` falls back to one buffer at a time once a switch is on.
        self.write.is_none()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// Per-request pacing (`x-oss-traffic-limit`)

/// Paces a body to `x-oss-traffic-limit` (bytes/s here).
pub(crate) struct Pace {
    rate: f64,
    start: tokio::time::Instant,
    done: u64,
}

impl Pace {
    pub(crate) fn new(rate: u64) -> Self {
        Self {
            rate: rate as f64,
            start: tokio::time::Instant::now(),
            done: 0,
        }
    }

    pub(crate) async fn after(&mut self, n: u64) {
        self.done += n;
        let due = self.start + Duration::from_secs_f64(self.done as f64 / self.rate);
        tokio::time::sleep_until(due).await;
    }
}

pub(crate) fn paced(
    inner: BoxStream<'static, io::Result<bytes::Bytes>>,
    rate: Option<u64>,
) -> BoxStream<'static, io::Result<bytes::Bytes>> {
    let Some(rate) = rate else {
        return inner;
    };
    stream::unfold(
        (inner, Pace::new(rate)),
        |(mut inner, mut pace)| async move {
            let item = inner.next().await?;
            if let Ok(b) = &item {
                pace.after(b.len() as u64).await;
            }
            Some((item, (inner, pace)))
        },
    )
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn rate_draws_are_spread_seeded_and_bounded() {
        let rate = 16u64 << 20;
        let flat = RateDraw::new(rate, 0.0, 7);
        assert!((0..10).all(|_| flat.next() == rate));
        let draw = |seed| {
            let d = RateDraw::new(rate, 0.5, seed);
            (0..1000).map(|_| d.next()).collect::<Vec<_>>()
        };
        let a = draw(1);
        assert_eq!(a, draw(1), "same seed, same caps");
        assert_ne!(a, draw(2), "another seed, other caps");
        let (lo, hi) = (rate / 2, rate * 3 / 2);
        assert!(
            a.iter().all(|&r| (lo..=hi).contains(&r)),
            "within rate × (1 ± 0.5)"
        );
        // Uniform: both ends of the range are reached and the mean is near the rate.
        assert!(a.iter().any(|&r| r < lo + rate / 10));
        assert!(a.iter().any(|&r| r > hi - rate / 10));
        let mean = a.iter().sum::<u64>() as f64 / a.len() as f64;
        assert!((mean / rate as f64 - 1.0).abs() < 0.05, "mean {mean}");
    }

    #[tokio::test]
    async fn write_is_paced() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut io = ConnIo::new(
                s,
                Some(1 << 20),
                Arc::new(AtomicBool::new(false)),
                Arc::new(Link::default()),
            );
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
