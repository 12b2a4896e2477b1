//! Engine overhead check: the relay engine against a bare pipe (the same parallel ranged GETs
//! streamed straight into UploadParts, with no CRC, accounting or state), both over in-memory
//! stores that copy every chunk once on each side, as socket reads and writes would.
//!
//! `cargo run --release --example relay_throughput -- [GiB] [concurrency] [part MiB] [chunk KiB]`

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use ossrelay::store::{
    ByteStream, ListedPart, ObjectMeta, ObjectStore, PartSpec, PutOptions, StoreError, Uploaded,
};
use ossrelay::transfer::{copy, CopyOptions, Location, Progress};
use tokio_util::sync::CancellationToken;

/// Chunk size a hyper body typically yields.
const CHUNK: usize = 16 * 1024;

/// A source of `size` bytes; every chunk is a fresh buffer, as a socket read produces.
struct Source {
    size: u64,
    pattern: Bytes,
}

/// A destination that reads every byte once (as a socket write would) and keeps nothing.
#[derive(Default)]
struct Sink {
    bytes: AtomicU64,
    /// Also CRC every chunk (the "bare pipe + CRC-64" baseline).
    crc: bool,
}

fn unsupported() -> StoreError {
    StoreError::new(ossrelay::store::ErrorClass::Client, "not supported")
}

#[async_trait]
impl ObjectStore for Source {
    fn describe(&self, key: &str) -> String {
        format!("gen://{key}")
    }
    fn limits(&self) -> ossrelay::store::Limits {
        ossrelay::oss::LIMITS
    }
    fn checksums(&self) -> ossrelay::store::ChecksumCaps {
        ossrelay::store::ChecksumCaps {
            reports: &[],
            verifies: &[],
        }
    }
    async fn head(&self, _: &str) -> Result<ObjectMeta, StoreError> {
        Ok(ObjectMeta {
            size: self.size,
            etag: "E".into(),
            ..Default::default()
        })
    }
    async fn get_range(
        &self,
        _: &str,
        start: u64,
        end: u64,
        _: Option<&str>,
    ) -> Result<ByteStream, StoreError> {
        let pattern = self.pattern.clone();
        let n = (end - start).div_ceil(CHUNK as u64);
        let len = end - start;
        Ok(Box::pin(futures::stream::iter((0..n).map(move |i| {
            let take = (len - i * CHUNK as u64).min(CHUNK as u64) as usize;
            let mut b = BytesMut::with_capacity(take);
            b.extend_from_slice(&pattern[..take]);
            Ok(b.freeze())
        }))))
    }
    async fn put(
        &self,
        _: &str,
        _: ByteStream,
        _: u64,
        _: &PutOptions,
    ) -> Result<Uploaded, StoreError> {
        Err(unsupported())
    }
    async fn create_multipart(
        &self,
        _: &str,
        _: u64,
        _: &PutOptions,
    ) -> Result<String, StoreError> {
        Err(unsupported())
    }
    async fn upload_part(
        &self,
        _: &str,
        _: &str,
        _: PartSpec,
        _: ByteStream,
        _expected: &ossrelay::checksum::Checksums,
    ) -> Result<Uploaded, StoreError> {
        Err(unsupported())
    }
    async fn list_parts(&self, _: &str, _: &str) -> Result<Vec<ListedPart>, StoreError> {
        Err(unsupported())
    }
    async fn complete(
        &self,
        _: &str,
        _: &str,
        _: &[(u32, String)],
        _: u64,
        _expected: &ossrelay::checksum::Checksums,
    ) -> Result<Uploaded, StoreError> {
        Err(unsupported())
    }
    async fn abort(&self, _: &str, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn delete(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

impl Sink {
    async fn drain(&self, mut body: ByteStream) -> Result<Uploaded, StoreError> {
        let mut scratch = vec![0u8; CHUNK * 4];
        let mut crc = ossrelay::crc64::Crc64::new();
        while let Some(c) = body.next().await {
            let c = c?;
            if self.crc {
                crc.update(&c);
            }
            let n = c.len().min(scratch.len());
            scratch[..n].copy_from_slice(&c[..n]);
            std::hint::black_box(&scratch);
            self.bytes.fetch_add(c.len() as u64, Relaxed);
        }
        std::hint::black_box(crc.sum());
        Ok(Uploaded {
            etag: "P".into(),
            checksums: ossrelay::checksum::Checksums::new(),
        })
    }
}

#[async_trait]
impl ObjectStore for Sink {
    fn describe(&self, key: &str) -> String {
        format!("null://{key}")
    }
    fn limits(&self) -> ossrelay::store::Limits {
        ossrelay::oss::LIMITS
    }
    fn checksums(&self) -> ossrelay::store::ChecksumCaps {
        ossrelay::store::ChecksumCaps {
            reports: &[],
            verifies: &[],
        }
    }
    async fn head(&self, _: &str) -> Result<ObjectMeta, StoreError> {
        Err(unsupported())
    }
    async fn get_range(
        &self,
        _: &str,
        _: u64,
        _: u64,
        _: Option<&str>,
    ) -> Result<ByteStream, StoreError> {
        Err(unsupported())
    }
    async fn put(
        &self,
        _: &str,
        body: ByteStream,
        _: u64,
        _: &PutOptions,
    ) -> Result<Uploaded, StoreError> {
        self.drain(body).await
    }
    async fn create_multipart(
        &self,
        _: &str,
        _: u64,
        _: &PutOptions,
    ) -> Result<String, StoreError> {
        Ok("U".into())
    }
    async fn upload_part(
        &self,
        _: &str,
        _: &str,
        _: PartSpec,
        body: ByteStream,
        _expected: &ossrelay::checksum::Checksums,
    ) -> Result<Uploaded, StoreError> {
        self.drain(body).await
    }
    async fn list_parts(&self, _: &str, _: &str) -> Result<Vec<ListedPart>, StoreError> {
        Ok(Vec::new())
    }
    async fn complete(
        &self,
        _: &str,
        _: &str,
        _: &[(u32, String)],
        _: u64,
        _expected: &ossrelay::checksum::Checksums,
    ) -> Result<Uploaded, StoreError> {
        Ok(Uploaded {
            etag: "C".into(),
            checksums: ossrelay::checksum::Checksums::new(),
        })
    }
    async fn abort(&self, _: &str, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn delete(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

async fn bare_pipe(src: Arc<Source>, dst: Arc<Sink>, part: u64, concurrency: usize) {
    let next = Arc::new(AtomicU64::new(0));
    let parts = src.size.div_ceil(part);
    let workers = (0..concurrency).map(|_| {
        let (src, dst, next) = (src.clone(), dst.clone(), next.clone());
        tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= parts {
                    return;
                }
                let start = i * part;
                let end = (start + part).min(src.size);
                let body = src.get_range("k", start, end, Some("E")).await.unwrap();
                let spec = PartSpec {
                    number: i as u32 + 1,
                    offset: start,
                    len: end - start,
                };
                dst.upload_part("k", "U", spec, body, &ossrelay::checksum::Checksums::new())
                    .await
                    .unwrap();
            }
        })
    });
    for w in futures::future::join_all(workers).await {
        w.unwrap();
    }
}

/// VmHWM from /proc (Linux); 0 elsewhere.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let gib: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(4);
    let concurrency: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let size = gib << 30;
    let part: u64 = args
        .get(3)
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(64)
        << 20;
    let pattern = Bytes::from(
        (0..CHUNK)
            .map(|i| (i * 31 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let src = Arc::new(Source { size, pattern });

    if std::env::var_os("ENGINE_ONLY").is_some() {
        // For profiling the engine alone.
        let dst = Arc::new(Sink::default());
        let opts = CopyOptions {
            concurrency,
            part_size: Some(part),
            ..CopyOptions::default()
        };
        let t = Instant::now();
        copy(
            Location::new(src.clone(), "k"),
            Location::new(dst, "k"),
            opts,
            Progress::new(),
            CancellationToken::new(),
        )
        .await
        .expect("copy");
        println!(
            "engine {:.2} GB/s, peak RSS {} MiB",
            size as f64 / t.elapsed().as_secs_f64() / 1e9,
            peak_rss_kib() / 1024
        );
        return;
    }
    {
        // What CRC-64 alone costs on this machine, in the engine's chunk size.
        let buf = vec![7u8; CHUNK];
        let t = Instant::now();
        let mut c = ossrelay::crc64::Crc64::new();
        for _ in 0..(size / CHUNK as u64) {
            c.update(&buf);
        }
        std::hint::black_box(c.sum());
        println!(
            "CRC-64 alone: {:.2} GB/s on one core",
            size as f64 / t.elapsed().as_secs_f64() / 1e9
        );
    }
    let mut best_bare = 0f64;
    let mut best_bare_crc = 0f64;
    let mut best_engine = 0f64;
    for round in 0..3 {
        let dst = Arc::new(Sink::default());
        let t = Instant::now();
        bare_pipe(src.clone(), dst.clone(), part, concurrency).await;
        let bare = size as f64 / t.elapsed().as_secs_f64();
        assert_eq!(dst.bytes.load(Relaxed), size);

        let dst = Arc::new(Sink {
            crc: true,
            ..Sink::default()
        });
        let t = Instant::now();
        bare_pipe(src.clone(), dst.clone(), part, concurrency).await;
        let bare_crc = size as f64 / t.elapsed().as_secs_f64();

        let dst = Arc::new(Sink::default());
        let mut opts = CopyOptions {
            concurrency,
            part_size: Some(part),
            ..CopyOptions::default()
        };
        if let Some(kib) = args.get(4).and_then(|s| s.parse::<usize>().ok()) {
            opts.chunk_size = kib * 1024;
        }
        let t = Instant::now();
        let s = copy(
            Location::new(src.clone(), "k"),
            Location::new(dst.clone(), "k"),
            opts,
            Progress::new(),
            CancellationToken::new(),
        )
        .await
        .expect("copy");
        let engine = size as f64 / t.elapsed().as_secs_f64();
        assert_eq!(dst.bytes.load(Relaxed), size);
        assert_eq!(s.bytes, size);
        println!(
            "round {round}: bare {:.2} GB/s, bare + CRC-64 {:.2} GB/s, engine {:.2} GB/s \
             ({:.0} % of bare, {:.0} % of bare + CRC-64)",
            bare / 1e9,
            bare_crc / 1e9,
            engine / 1e9,
            100.0 * engine / bare,
            100.0 * engine / bare_crc
        );
        best_bare = best_bare.max(bare);
        best_bare_crc = best_bare_crc.max(bare_crc);
        best_engine = best_engine.max(engine);
    }
    println!("peak RSS of the process: {} MiB", peak_rss_kib() / 1024);
    println!(
        "best: bare {:.2} GB/s, bare + CRC-64 {:.2} GB/s, engine {:.2} GB/s ({:.0} % / {:.0} %)",
        best_bare / 1e9,
        best_bare_crc / 1e9,
        best_engine / 1e9,
        100.0 * best_engine / best_bare,
        100.0 * best_engine / best_bare_crc
    );
}
