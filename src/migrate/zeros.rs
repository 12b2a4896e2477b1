//! `--disk-format auto`: whether an exported RAW disk is smaller as QCOW2, judged from a
//! bounded sample of its bytes before the relay starts.
//!
//! Guarantees callers can rely on:
//! * The measure is the share of the sampled bytes that lie in all-zero 64 KiB clusters (what
//!   a QCOW2 leaves out at the cluster size a conversion uses under the default `--memory`,
//!   up to 6 TiB). A disk of at most [`SAMPLES`] × [`SAMPLE_LEN`] bytes is read whole (the
//!   share is exact); a larger one is read as [`SAMPLES`] ranges of [`SAMPLE_LEN`] bytes spread
//!   evenly from its first MiB to its last, cluster-aligned: 64 ranged GETs and 64 MiB read,
//!   well under a minute of a relay that moves the whole disk.
//! * The choice ([`choose`]) is QCOW2 exactly when the zero clusters it leaves out outweigh
//!   its metadata: `max_len - vsize` of the QCOW2 planned for the disk (header, L1 and
//!   refcount table padded to the destination's minimum part, an 8-byte L2 entry and a
//!   2-byte refcount per cluster: about 0.015 % of the disk plus the head). Near that
//!   threshold the two sizes differ by about that much, so a sampling error costs at most
//!   about 0.02 % of the disk; far from it (an empty disk, an incompressible one) 64 samples
//!   do not mislead.
//! * What cannot be sampled before the upload (a `.raw.tar.gz` export: its RAW exists only as
//!   it is decoded) is not measured; the caller picks QCOW2, whose worst case is that same
//!   ≈0.02 % above the RAW.

use futures::StreamExt;

use crate::store::{ObjectStore, StoreError};
use crate::transfer::format::Container;
use crate::transfer::DiskFormat;

/// Ranges read from a large disk.
pub const SAMPLES: u64 = 64;
/// Bytes per range.
pub const SAMPLE_LEN: u64 = 1 << 20;
/// The QCOW2 cluster size the measure counts in.
pub const CLUSTER: u64 = 64 * 1024;

/// What the sample found: bytes read, and how many of them lie in all-zero clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZeroSample {
    pub sampled: u64,
    pub zero: u64,
}

impl ZeroSample {
    /// The share of the sampled bytes in all-zero clusters, 0.0 to 1.0 (0.0 for nothing read).
    pub fn share(&self) -> f64 {
        if self.sampled == 0 {
            0.0
        } else {
            self.zero as f64 / self.sampled as f64
        }
    }

    /// Counts the clusters of `data`, which starts on a cluster boundary.
    fn add(&mut self, data: &[u8]) {
        for c in data.chunks(CLUSTER as usize) {
            self.sampled += c.len() as u64;
            if c.iter().all(|&b| b == 0) {
                self.zero += c.len() as u64;
            }
        }
    }
}

/// The ranges `[start, end)` sampled from a disk of `size` bytes (see the module docs).
pub fn ranges(size: u64) -> Vec<(u64, u64)> {
    if size <= SAMPLES * SAMPLE_LEN {
        return (0..size.div_ceil(SAMPLE_LEN))
            .map(|i| (i * SAMPLE_LEN, ((i + 1) * SAMPLE_LEN).min(size)))
            .collect();
    }
    let span = size - SAMPLE_LEN;
    (0..SAMPLES)
        .map(|i| {
            let at = (span as u128 * i as u128 / (SAMPLES - 1) as u128) as u64;
            let at = at / CLUSTER * CLUSTER;
            (at, (at + SAMPLE_LEN).min(size))
        })
        .collect()
}

/// Samples the RAW disk `key` of `size` bytes in `store` (its ETag pins the object read).
pub async fn sample(
    store: &dyn ObjectStore,
    key: &str,
    size: u64,
    etag: Option<&str>,
) -> Result<ZeroSample, StoreError> {
    let mut s = ZeroSample::default();
    let mut buf = Vec::with_capacity(SAMPLE_LEN as usize);
    for (start, end) in ranges(size) {
        buf.clear();
        let mut body = store.get_range(key, start, end, etag).await?;
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk?);
        }
        s.add(&buf);
    }
    Ok(s)
}

/// QCOW2 or RAW for a RAW disk of `vsize` bytes whose all-zero clusters are `share` of it
/// (see the module docs); `min_part` is the destination's minimum part size (the QCOW2 head
/// is padded to it).
pub fn choose(share: f64, vsize: u64, min_part: u64) -> DiskFormat {
    let disk = vsize.div_ceil(512) * 512;
    // A map as large as needed (1 TiB: 64 KiB clusters for any disk QCOW2 can hold): the
    // measure counts 64 KiB clusters.
    let Ok(c) = Container::plan(DiskFormat::Qcow2, disk, 1 << 40, min_part, "") else {
        return DiskFormat::Raw;
    };
    let overhead = c.max_len().saturating_sub(vsize);
    if share * vsize as f64 > overhead as f64 {
        DiskFormat::Qcow2
    } else {
        DiskFormat::Raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn ranges_cover_small_disks_and_spread_over_large_ones() {
        assert_eq!(ranges(0), vec![]);
        assert_eq!(ranges(5), vec![(0, 5)]);
        let small = ranges(3 * SAMPLE_LEN + 7);
        assert_eq!(small.len(), 4);
        assert_eq!(small[3], (3 * SAMPLE_LEN, 3 * SAMPLE_LEN + 7));
        let size = 2u64 << 40;
        let r = ranges(size);
        assert_eq!(r.len() as u64, SAMPLES);
        assert_eq!(r[0], (0, SAMPLE_LEN));
        assert_eq!(r[63].1, size, "the last range ends at the disk's end");
        assert!(r
            .iter()
            .all(|(a, b)| a % CLUSTER == 0 && b - a == SAMPLE_LEN));
        assert!(r.windows(2).all(|w| w[0].1 <= w[1].0));
    }

    #[test]
    fn qcow2_only_when_the_zeros_outweigh_its_metadata() {
        let gib = 1u64 << 30;
        // No zero cluster: QCOW2 would only add its tables.
        assert_eq!(choose(0.0, 10 * gib, 100 * 1024), DiskFormat::Raw);
        // A mostly empty disk.
        assert_eq!(choose(0.9, 10 * gib, 100 * 1024), DiskFormat::Qcow2);
        // The threshold: about 0.015 % of the disk plus the head.
        assert_eq!(choose(0.0001, 10 * gib, 100 * 1024), DiskFormat::Raw);
        assert_eq!(choose(0.001, 10 * gib, 100 * 1024), DiskFormat::Qcow2);
        // A tiny disk: the head (padded to S3's 5 MiB minimum part) outweighs everything.
        assert_eq!(choose(0.5, 4 << 20, 5 << 20), DiskFormat::Raw);
    }

    #[tokio::test]
    async fn a_sample_tells_empty_from_incompressible() {
        let store = MemoryStore::new("z");
        // 96 MiB: sampled, not read whole. Mostly zeros with data every 16 MiB.
        let size = 96u64 << 20;
        let mut sparse = vec![0u8; size as usize];
        for at in (0..size).step_by(16 << 20) {
            sparse[at as usize..at as usize + 4096].fill(0x5a);
        }
        store.insert("sparse.raw", sparse);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        store.insert("noise.raw", noise);
        let s = sample(store.as_ref(), "sparse.raw", size, None)
            .await
            .unwrap();
        assert_eq!(s.sampled, SAMPLES * SAMPLE_LEN);
        assert!(s.share() > 0.9, "{s:?}");
        assert_eq!(choose(s.share(), size, 100 * 1024), DiskFormat::Qcow2);
        let n = sample(store.as_ref(), "noise.raw", size, None)
            .await
            .unwrap();
        assert_eq!(n.zero, 0, "{n:?}");
        assert_eq!(choose(n.share(), size, 100 * 1024), DiskFormat::Raw);
    }
}
