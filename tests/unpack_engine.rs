//! `copy_unpack` through the library API: a streamed member above 8 GiB, corruption, resume.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress};
use futures::StreamExt;
use ossrelay::crc64::{self, Crc64};
use ossrelay::store::memory::MemoryStore;
use ossrelay::store::{
    ByteStream, ListedPart, ObjectMeta, ObjectStore, PartSpec, PutOptions, StoreError, Uploaded,
};
use ossrelay::transfer::{self, tar, CopyOptions, Location, Progress, TransferError, UnpackTarget};
use tokio_util::sync::CancellationToken;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// Deflates `data` with a full flush (byte-aligned, no reference to earlier data), so the
/// output can be repeated to stand for repeated input.
fn deflate(c: &mut Compress, data: &[u8], flush: FlushCompress) -> Vec<u8> {
    let mut out = Vec::new();
    let start_in = c.total_in();
    loop {
        out.reserve(64 * 1024);
        let consumed = (c.total_in() - start_in) as usize;
        c.compress_vec(&data[consumed..], &mut out, flush).unwrap();
        let consumed = (c.total_in() - start_in) as usize;
        // Not filling the output means the flush is complete.
        if consumed == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    out
}

/// A gzip'd GNU tar holding one member of `zero_mib` MiB + `extra` zero bytes, built from one
/// deflated MiB repeated (the archive is small, the member is not). Returns the archive.
fn zero_archive(name: &str, zero_mib: u64, extra: u64) -> Vec<u8> {
    let size = zero_mib * MIB + extra;
    let header = tar::gnu_header(name, size, b'0');
    let mut c = Compress::new(Compression::best(), false);
    let mut crc = Crc::new();
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    out.extend(deflate(&mut c, &header, FlushCompress::Full));
    crc.update(&header);
    let zeros = vec![0u8; MIB as usize];
    let block = deflate(&mut c, &zeros, FlushCompress::Full);
    let mut mib_crc = Crc::new();
    mib_crc.update(&zeros);
    for _ in 0..zero_mib {
        out.extend_from_slice(&block);
        crc.combine(&mib_crc);
    }
    let pad = (512 - extra % 512) % 512;
    let tail = vec![0u8; (extra + pad + 1024) as usize];
    out.extend(deflate(&mut c, &tail, FlushCompress::Finish));
    crc.update(&tail);
    let total = 512 + size + pad + 1024;
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out
}

/// A destination that keeps only each part's length and CRC-64, like a discard bucket.
#[derive(Default)]
struct Discard {
    parts: Mutex<Vec<(u32, u64, u64)>>,
    completed: Mutex<Option<(u64, u64)>>,
}

#[async_trait]
impl ObjectStore for Discard {
    fn describe(&self, key: &str) -> String {
        format!("discard://{key}")
    }
    fn limits(&self) -> ossrelay::store::Limits {
        ossrelay::oss::LIMITS
    }
    fn checksums(&self) -> ossrelay::store::ChecksumCaps {
        ossrelay::store::ChecksumCaps {
            reports: &[ossrelay::checksum::Algorithm::Crc64Xz],
            verifies: &[],
        }
    }
    async fn head(&self, _key: &str) -> Result<ObjectMeta, StoreError> {
        Err(StoreError::new(
            ossrelay::store::ErrorClass::NotFound,
            "no such object",
        ))
    }
    async fn get_range(
        &self,
        _key: &str,
        _start: u64,
        _end: u64,
        _if_match: Option<&str>,
    ) -> Result<ByteStream, StoreError> {
        Err(StoreError::transient("discard store cannot be read"))
    }
    async fn put(
        &self,
        _key: &str,
        mut body: ByteStream,
        _len: u64,
        _opts: &PutOptions,
    ) -> Result<Uploaded, StoreError> {
        let mut crc = Crc64::new();
        while let Some(b) = body.next().await {
            crc.update(&b?);
        }
        *self.completed.lock().unwrap() = Some((crc.len(), crc.sum()));
        Ok(Uploaded {
            etag: "put".into(),
            checksums: ossrelay::checksum::Checksum::Crc64Xz(crc.sum()).into(),
        })
    }
    async fn create_multipart(
        &self,
        _key: &str,
        _total: u64,
        _opts: &PutOptions,
    ) -> Result<String, StoreError> {
        Ok("upload-1".into())
    }
    async fn upload_part(
        &self,
        _key: &str,
        _upload_id: &str,
        part: PartSpec,
        mut body: ByteStream,
        _expected: &ossrelay::checksum::Checksums,
    ) -> Result<Uploaded, StoreError> {
        let mut crc = Crc64::new();
        while let Some(b) = body.next().await {
            crc.update(&b?);
        }
        assert_eq!(crc.len(), part.len, "part {} length", part.number);
        self.parts
            .lock()
            .unwrap()
            .push((part.number, crc.len(), crc.sum()));
        Ok(Uploaded {
            etag: format!("p{}", part.number),
            checksums: ossrelay::checksum::Checksum::Crc64Xz(crc.sum()).into(),
        })
    }
    async fn list_parts(&self, _key: &str, _id: &str) -> Result<Vec<ListedPart>, StoreError> {
        Ok(Vec::new())
    }
    async fn complete(
        &self,
        _key: &str,
        _id: &str,
        parts: &[(u32, String)],
        size: u64,
        _expected: &ossrelay::checksum::Checksums,
    ) -> Result<Uploaded, StoreError> {
        let mut got = self.parts.lock().unwrap().clone();
        got.sort();
        assert_eq!(got.len(), parts.len(), "each part uploaded once");
        let crc = crc64::combine_all(got.iter().map(|&(_, len, crc)| (crc, len)));
        let len = got.iter().map(|p| p.1).sum();
        assert_eq!(
            size, len,
            "Complete is told the size of the object it makes"
        );
        *self.completed.lock().unwrap() = Some((len, crc));
        Ok(Uploaded {
            etag: "done".into(),
            checksums: ossrelay::checksum::Checksum::Crc64Xz(crc).into(),
        })
    }
    async fn abort(&self, _key: &str, _id: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn delete(&self, _key: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

fn opts() -> CopyOptions {
    CopyOptions {
        concurrency: 4,
        memory: 64 * MIB,
        ..CopyOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_above_8_gib_streams_through_in_bounded_memory() {
    // 8 GiB + 1000 bytes: the size needs GNU base-256 in the header.
    let archive = zero_archive("big_system.raw", 8 * 1024, 1000);
    assert!(archive.len() < 16 * MIB as usize, "{}", archive.len());
    let src = MemoryStore::new("src");
    src.insert("img.raw.tar.gz", archive.clone());
    let dst = Arc::new(Discard::default());
    let progress = Progress::new();
    let s = transfer::copy_unpack(
        Location::new(src, "img.raw.tar.gz"),
        UnpackTarget::Fixed(Location::new(dst.clone(), "big_system.raw")),
        opts(),
        progress.clone(),
        CancellationToken::new(),
    )
    .await
    .expect("unpack");
    let size = 8 * GIB + 1000;
    assert_eq!(s.copy.bytes, size);
    assert_eq!(s.member, "big_system.raw");
    assert_eq!(s.copy.crc64, crc64::zeros(size));
    assert_eq!(s.source_bytes, archive.len() as u64);
    assert_eq!(s.source_crc64, crc64::checksum(&archive));
    assert_eq!(
        *dst.completed.lock().unwrap(),
        Some((size, crc64::zeros(size)))
    );
    let peak = progress
        .peak_buffered_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(peak <= 64 * MIB, "peak buffered {peak}");
}

fn small_archive(data: &[u8]) -> Vec<u8> {
    let mut tar_bytes = tar::gnu_header("disk_system.raw", data.len() as u64, b'0').to_vec();
    tar_bytes.extend_from_slice(data);
    tar_bytes.resize(tar_bytes.len().div_ceil(512) * 512 + 1024, 0);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
    std::io::Write::write_all(&mut enc, &tar_bytes).unwrap();
    enc.finish().unwrap()
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Unpacks `archive` (as `img.tar.gz` of a memory store) into `disk.raw` of a fresh memory
/// store, with 1 MiB parts unless `opts` says otherwise.
async fn unpack_in_memory(
    archive: Vec<u8>,
    opts: CopyOptions,
) -> (
    Result<transfer::UnpackSummary, TransferError>,
    Arc<MemoryStore>,
) {
    let src = MemoryStore::new("src");
    src.insert("img.tar.gz", archive);
    let dst = MemoryStore::new("dst");
    let r = transfer::copy_unpack(
        Location::new(src, "img.tar.gz"),
        UnpackTarget::Fixed(Location::new(dst.clone(), "disk.raw")),
        CopyOptions {
            part_size: opts.part_size.or(Some(MIB)),
            ..opts
        },
        Progress::new(),
        CancellationToken::new(),
    )
    .await;
    (r, dst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_compressed_byte_leaves_no_object_and_no_upload() {
    let data = noise(3 * MIB as usize, 5);
    let mut archive = small_archive(&data);
    let i = archive.len() / 2;
    archive[i] ^= 0x40;
    let state = tempfile::tempdir().unwrap();
    let opts = CopyOptions {
        state_dir: Some(state.path().to_path_buf()),
        ..opts()
    };
    let (r, dst) = unpack_in_memory(archive, opts).await;
    let err = r.expect_err("corruption must be detected");
    assert!(
        matches!(err.root(), TransferError::Archive(m) if m.contains("archive itself is damaged")),
        "{err}"
    );
    assert!(dst.object("disk.raw").is_none());
    assert_eq!(dst.open_uploads(), 0, "the upload was aborted");
    assert_eq!(
        std::fs::read_dir(state.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json"))
            .count(),
        0,
        "no resume state is kept for a broken archive"
    );
}

/// gzip's trailer is checked against CRC-32s computed partly by the decoder (tar blocks) and
/// partly by the part cutter (member data): a wrong CRC-32 or length fails as a damaged
/// archive, after every part was sent, and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_gzip_trailer_leaves_no_object_and_no_upload() {
    let data = noise(3 * MIB as usize + 100, 9);
    let good = small_archive(&data);
    let n = good.len();
    for (what, at) in [
        ("CRC-32", n - 8),
        ("CRC-32 high byte", n - 5),
        ("length", n - 4),
    ] {
        let mut archive = good.clone();
        archive[at] ^= 0x01;
        let (r, dst) = unpack_in_memory(archive, opts()).await;
        let err = r.expect_err(what);
        assert!(
            matches!(err.root(), TransferError::Archive(m)
                if m.contains("gzip trailer does not match") && m.contains("archive itself is damaged")),
            "{what}: {err}"
        );
        assert!(dst.object("disk.raw").is_none(), "{what}");
        assert_eq!(dst.open_uploads(), 0, "{what}: the upload was aborted");
    }
}

/// Optional gzip header fields (as `gzip` writes for a named file) are skipped correctly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_headers_with_optional_fields_unpack() {
    let data = noise(MIB as usize + 3, 11);
    let plain = small_archive(&data);
    // FEXTRA + FNAME + FCOMMENT + FHCRC before the same deflate stream and trailer.
    let mut archive = vec![0x1f, 0x8b, 8, 4 | 8 | 16 | 2, 0, 0, 0, 0, 0, 3];
    archive.extend_from_slice(&[5, 0, b'A', b'B', 1, 0, b'z']);
    archive.extend_from_slice(b"disk_system.raw.tar\0");
    archive.extend_from_slice(b"an export\0");
    archive.extend_from_slice(&[0xAB, 0xCD]);
    archive.extend_from_slice(&plain[10..]);
    let (r, dst) = unpack_in_memory(archive, opts()).await;
    r.expect("unpacks");
    assert_eq!(dst.object("disk.raw").unwrap().as_ref(), &data[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_destination_round_trip_with_part_cutting() {
    // Sizes around the part boundary, chunk boundaries and the zero-length member.
    for len in [0usize, 1, 511, 512, MIB as usize, 3 * MIB as usize + 77] {
        let data = noise(len, len as u64 + 1);
        let archive = small_archive(&data);
        let opts = CopyOptions {
            chunk_size: 100_000,
            ..opts()
        };
        let (r, dst) = unpack_in_memory(archive.clone(), opts).await;
        let s = r.unwrap_or_else(|e| panic!("len {len}: {e}"));
        assert_eq!(
            dst.object("disk.raw").unwrap().as_ref(),
            &data[..],
            "len {len}"
        );
        assert_eq!(s.copy.crc64, crc64::checksum(&data));
        assert_eq!(s.source_crc64, crc64::checksum(&archive));
        assert_eq!(s.copy.parts as u64, (len as u64).div_ceil(MIB));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_chunks_cut_at_odd_part_boundaries_keep_every_check() {
    // All-zero chunks travel as views of one shared buffer and their CRCs are derived from
    // their length; parts of an odd size split them (and data chunks) at odd offsets. Any
    // slip shows in a part CRC (checked against UploadPart's), the whole-RAW CRC, the gzip
    // CRC-32 trailer, or the bytes themselves.
    let chunk = 64 * 1024;
    let mut data = noise(9 * MIB as usize + 333, 77);
    for (i, c) in data.chunks_mut(chunk).enumerate() {
        if i % 5 != 2 {
            c.fill(0);
        }
    }
    let archive = small_archive(&data);
    let opts = CopyOptions {
        chunk_size: chunk,
        part_size: Some(MIB + 4097),
        ..opts()
    };
    let (r, dst) = unpack_in_memory(archive.clone(), opts).await;
    let s = r.expect("unpack");
    assert!(dst.object("disk.raw").unwrap().as_ref() == &data[..]);
    assert_eq!(s.copy.crc64, crc64::checksum(&data));
    assert_eq!(
        s.copy.parts as u64,
        (data.len() as u64).div_ceil(MIB + 4097)
    );
    assert_eq!(s.source_crc64, crc64::checksum(&archive));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_target_takes_the_member_name() {
    let data = noise(1000, 9);
    let src = MemoryStore::new("src");
    src.insert("x/a.tar.gz", Bytes::from(small_archive(&data)));
    let dst = MemoryStore::new("dst");
    let d2 = dst.clone();
    let s = transfer::copy_unpack(
        Location::new(src, "x/a.tar.gz"),
        UnpackTarget::Named(Box::new(move |name: &str| {
            Ok(Location::new(d2, format!("images/{name}")))
        })),
        opts(),
        Progress::new(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(s.copy.destination, dst.describe("images/disk_system.raw"));
    assert_eq!(
        dst.object("images/disk_system.raw").unwrap().as_ref(),
        &data[..]
    );
}

/// A source whose bytes can be swapped while HEAD keeps reporting the same fingerprint: the
/// only way to make a resumed run regenerate different bytes for a recorded part.
struct Swappable {
    meta: ObjectMeta,
    data: Mutex<Bytes>,
}

#[async_trait]
impl ObjectStore for Swappable {
    fn describe(&self, key: &str) -> String {
        format!("swap://{key}")
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
    async fn head(&self, _key: &str) -> Result<ObjectMeta, StoreError> {
        Ok(self.meta.clone())
    }
    async fn get_range(
        &self,
        _key: &str,
        start: u64,
        end: u64,
        _if_match: Option<&str>,
    ) -> Result<ByteStream, StoreError> {
        let b = self
            .data
            .lock()
            .unwrap()
            .slice(start as usize..end as usize);
        Ok(Box::pin(futures::stream::iter([Ok(b)])))
    }
    async fn put(
        &self,
        _: &str,
        _: ByteStream,
        _: u64,
        _: &PutOptions,
    ) -> Result<Uploaded, StoreError> {
        unreachable!("source only")
    }
    async fn create_multipart(
        &self,
        _: &str,
        _: u64,
        _: &PutOptions,
    ) -> Result<String, StoreError> {
        unreachable!("source only")
    }
    async fn upload_part(
        &self,
        _: &str,
        _: &str,
        _: PartSpec,
        _: ByteStream,
        _expected: &ossrelay::checksum::Checksums,
    ) -> Result<Uploaded, StoreError> {
        unreachable!("source only")
    }
    async fn list_parts(&self, _: &str, _: &str) -> Result<Vec<ListedPart>, StoreError> {
        unreachable!("source only")
    }
    async fn complete(
        &self,
        _: &str,
        _: &str,
        _: &[(u32, String)],
        _: u64,
        _expected: &ossrelay::checksum::Checksums,
    ) -> Result<Uploaded, StoreError> {
        unreachable!("source only")
    }
    async fn abort(&self, _: &str, _: &str) -> Result<(), StoreError> {
        unreachable!("source only")
    }
    async fn delete(&self, _: &str) -> Result<(), StoreError> {
        unreachable!("source only")
    }
}

/// Stored (level 0) gzip: flipping a RAW byte keeps the archive's length.
fn stored_archive(data: &[u8]) -> Vec<u8> {
    let mut tar_bytes = tar::gnu_header("r_system.raw", data.len() as u64, b'0').to_vec();
    tar_bytes.extend_from_slice(data);
    tar_bytes.resize(tar_bytes.len().div_ceil(512) * 512 + 1024, 0);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), Compression::none());
    std::io::Write::write_all(&mut enc, &tar_bytes).unwrap();
    enc.finish().unwrap()
}

async fn unpack_into(
    src: Arc<Swappable>,
    dst: Arc<MemoryStore>,
    state: &std::path::Path,
) -> Result<transfer::UnpackSummary, TransferError> {
    transfer::copy_unpack(
        Location::new(src, "r.raw.tar.gz"),
        UnpackTarget::Fixed(Location::new(dst, "r_system.raw")),
        CopyOptions {
            concurrency: 1,
            part_size: Some(MIB),
            state_dir: Some(state.to_path_buf()),
            max_attempts: 1,
            ..opts()
        },
        Progress::new(),
        CancellationToken::new(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_skips_recorded_parts_only_when_regenerated_bytes_match() {
    use ossrelay::store::memory::{Fault, FaultRule, Op};
    let raw = noise(4 * MIB as usize, 11);
    let good = stored_archive(&raw);
    let mut changed_raw = raw.clone();
    changed_raw[(MIB + MIB / 2) as usize] ^= 1; // inside part 2
    let changed = stored_archive(&changed_raw);
    assert_eq!(good.len(), changed.len());
    let meta = ObjectMeta {
        size: good.len() as u64,
        etag: "same-etag".into(),
        checksums: ossrelay::checksum::Checksum::Crc64Xz(crc64::checksum(&good)).into(),
        ..ObjectMeta::default()
    };

    for swap in [false, true] {
        let state = tempfile::tempdir().unwrap();
        let src = Arc::new(Swappable {
            meta: meta.clone(),
            data: Mutex::new(Bytes::from(good.clone())),
        });
        let dst = MemoryStore::new("dst");
        // Run 1 dies at part 4 (one part at a time, so parts 1-3 are recorded).
        dst.inject(
            FaultRule::new(
                Op::UploadPart,
                Fault::Error(ossrelay::store::ErrorClass::Auth),
            )
            .part(4),
        );
        let err = unpack_into(src.clone(), dst.clone(), state.path())
            .await
            .expect_err("part 4 fails");
        assert!(matches!(err, TransferError::Resumable { .. }), "{err}");
        dst.clear_faults();
        dst.reset_part_uploads();
        if swap {
            *src.data.lock().unwrap() = Bytes::from(changed.clone());
        }
        let r = unpack_into(src, dst.clone(), state.path()).await;
        if swap {
            // Part 2 regenerated differently: not trusted, sent again (parts 1 and 3 were
            // verified and kept); then the compressed stream's CRC-64 exposes the changed
            // source, and each of the 2 repair rounds starts over with all 4 parts.
            assert_eq!(
                dst.part_uploads(1),
                2,
                "part 1: verified on resume, then 2 rounds"
            );
            assert_eq!(
                dst.part_uploads(3),
                2,
                "part 3: verified on resume, then 2 rounds"
            );
            assert_eq!(dst.part_uploads(2), 3, "a mismatching part must be resent");
            assert_eq!(dst.part_uploads(4), 3);
            let err = r.expect_err("changed source");
            assert!(matches!(err, TransferError::CrcMismatch { .. }), "{err}");
            assert!(dst.object("r_system.raw").is_none());
            assert_eq!(dst.open_uploads(), 0);
        } else {
            let s = r.expect("resume completes");
            assert_eq!(dst.part_uploads(1), 0, "part 1 was verified, not resent");
            assert_eq!(dst.part_uploads(3), 0, "part 3 was verified, not resent");
            assert_eq!(dst.part_uploads(4), 1);
            assert_eq!(dst.part_uploads(2), 0);
            assert_eq!(s.copy.resumed_bytes, 3 * MIB);
            assert_eq!(dst.object("r_system.raw").unwrap().as_ref(), &raw[..]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_damaged_in_transit_are_told_from_a_damaged_archive_and_repaired() {
    use ossrelay::store::memory::{Fault, FaultRule, Op};
    let data = noise(2 * MIB as usize, 21);
    let archive = small_archive(&data);
    let src = MemoryStore::new("src");
    src.insert("t.tar.gz", archive.clone());
    // The 3rd ranged GET has one byte flipped on the way: the object itself is fine.
    src.inject(FaultRule::new(Op::Get, Fault::Corrupt { at: 1000 }).nth(3));
    let dst = MemoryStore::new("dst");
    let s = transfer::copy_unpack(
        Location::new(src.clone(), "t.tar.gz"),
        UnpackTarget::Fixed(Location::new(dst.clone(), "t.raw")),
        CopyOptions {
            part_size: Some(MIB),
            memory: 4 * MIB,
            ..opts()
        },
        Progress::new(),
        CancellationToken::new(),
    )
    .await
    .expect("a damaged range is repaired by another attempt");
    assert!(s.copy.retries >= 1, "{s:?}");
    assert_eq!(dst.object("t.raw").unwrap().as_ref(), &data[..]);
    assert_eq!(s.source_crc64, crc64::checksum(&archive));
    assert_eq!(dst.open_uploads(), 0);
}

/// A kill -9 between the service's CompleteMultipartUpload and the removal of the state file:
/// the rerun proves the destination against the recorded CRC-64 and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_after_a_completed_unpack_sends_nothing() {
    use ossrelay::store::memory::{Fault, FaultRule, Op};
    let raw = noise(4 * MIB as usize, 12);
    let archive = stored_archive(&raw);
    let meta = ObjectMeta {
        size: archive.len() as u64,
        etag: "etag".into(),
        checksums: ossrelay::checksum::Checksum::Crc64Xz(crc64::checksum(&archive)).into(),
        ..ObjectMeta::default()
    };
    let state = tempfile::tempdir().unwrap();
    let src = Arc::new(Swappable {
        meta,
        data: Mutex::new(Bytes::from(archive)),
    });
    let dst = MemoryStore::new("dst");
    dst.inject(
        FaultRule::new(
            Op::Complete,
            Fault::Error(ossrelay::store::ErrorClass::Client),
        )
        .times(1),
    );
    let err = unpack_into(src.clone(), dst.clone(), state.path())
        .await
        .expect_err("Complete fails");
    assert!(matches!(err, TransferError::Resumable { .. }), "{err}");
    // The service completes it after all, and the state file stays: what a kill -9 leaves.
    let path = std::fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("state file");
    let st = ossrelay::transfer::state::load(&path).unwrap().unwrap();
    assert!(st.completing.is_some());
    let parts: Vec<(u32, String)> = st
        .parts
        .iter()
        .map(|p| (p.number, p.etag.clone()))
        .collect();
    dst.complete(
        "r_system.raw",
        &st.upload_id,
        &parts,
        0,
        &ossrelay::checksum::Checksums::new(),
    )
    .await
    .unwrap();
    dst.reset_part_uploads();
    let creates = dst.calls(Op::CreateMultipart);
    let s = unpack_into(src, dst.clone(), state.path())
        .await
        .expect("reported complete");
    assert_eq!(s.copy.resumed_bytes, 4 * MIB);
    assert_eq!(s.copy.crc64, crc64::checksum(&raw));
    assert!((1..=4).all(|n| dst.part_uploads(n) == 0), "nothing resent");
    assert_eq!(dst.calls(Op::CreateMultipart), creates, "no new upload");
    assert_eq!(dst.object("r_system.raw").unwrap().as_ref(), &raw[..]);
    assert!(!path.exists(), "state removed");
}

/// Parts throttled at the start of the upload side: the unpack must halve its uploads in
/// flight (AIMD, as a plain copy does) rather than hammer a store that says "slow down",
/// and still finish byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowdown_storm_lowers_upload_concurrency_and_the_unpack_finishes() {
    use ossrelay::store::memory::{Fault, FaultRule, Op};
    use ossrelay::store::ErrorClass;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    let data = noise(24 * MIB as usize, 11);
    let archive = small_archive(&data);
    let src = MemoryStore::new("src");
    src.insert("img.tar.gz", archive);
    let dst = MemoryStore::new("dst");
    dst.inject(FaultRule::new(Op::UploadPart, Fault::Error(ErrorClass::Throttled)).times(12));
    let progress = Progress::new();
    let s = transfer::copy_unpack(
        Location::new(src, "img.tar.gz"),
        UnpackTarget::Fixed(Location::new(dst.clone(), "disk.raw")),
        CopyOptions {
            concurrency: 8,
            part_size: Some(MIB),
            retry_base: Duration::from_millis(1),
            retry_cap: Duration::from_millis(20),
            max_attempts: 20,
            ..opts()
        },
        progress.clone(),
        CancellationToken::new(),
    )
    .await
    .expect("the unpack finishes through the storm");
    assert_eq!(dst.object("disk.raw").unwrap().as_ref(), &data[..]);
    let lowest = progress.lowest_concurrency_limit.load(Relaxed);
    assert!(
        (1..8).contains(&lowest),
        "throttling must lower the limit below 8: lowest {lowest}"
    );
    assert!(s.copy.retries >= 12, "{} retries", s.copy.retries);
    assert_eq!(dst.open_uploads(), 0);
}

/// A part the destination refused waits for its retry in the scheduler's queue, holding no
/// slot: with one slot, the parts cut after it are sent while it backs off, and it is then
/// sent again from memory (the decoder is not rewound). An unpack's retry used to sleep
/// inside the upload task, holding the slot and stalling every later part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_backing_off_holds_no_slot_and_is_resent_from_memory() {
    use ossrelay::store::memory::{Fault, FaultRule, Op};
    use ossrelay::store::ErrorClass;
    use std::time::Duration;

    let data = noise(4 * MIB as usize, 5);
    let src = MemoryStore::new("src");
    src.insert("img.tar.gz", small_archive(&data));
    let dst = MemoryStore::new("dst");
    dst.inject(
        FaultRule::new(Op::UploadPart, Fault::Error(ErrorClass::Transient))
            .part(1)
            .times(1),
    );
    // Parts 2-4 as they stood when part 1 was finally stored.
    let watch = {
        let dst = dst.clone();
        tokio::spawn(async move {
            while dst.part_uploads(1) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (2..=4).map(|n| dst.part_uploads(n)).collect::<Vec<_>>()
        })
    };
    let s = transfer::copy_unpack(
        Location::new(src, "img.tar.gz"),
        UnpackTarget::Fixed(Location::new(dst.clone(), "disk.raw")),
        CopyOptions {
            concurrency: 1,
            part_size: Some(MIB),
            retry_base: Duration::from_secs(2),
            retry_cap: Duration::from_secs(2),
            ..opts()
        },
        Progress::new(),
        CancellationToken::new(),
    )
    .await
    .expect("the unpack finishes after one retry");
    assert_eq!(dst.object("disk.raw").unwrap().as_ref(), &data[..]);
    assert_eq!(
        watch.await.unwrap(),
        vec![1, 1, 1],
        "parts 2-4 were sent while part 1 backed off"
    );
    assert_eq!(dst.part_uploads(1), 1);
    assert!(s.copy.retries >= 1, "{} retries", s.copy.retries);
}

/// A part refused on every attempt fails the unpack with one line that names the part's
/// RAW bytes and the attempts made, after exactly `max_attempts` UploadParts of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_refused_on_every_attempt_fails_with_its_raw_bytes_and_attempts() {
    use ossrelay::store::memory::{Fault, FaultRule, Op};
    use ossrelay::store::ErrorClass;
    use std::time::Duration;

    let data = noise(3 * MIB as usize, 9);
    let src = MemoryStore::new("src");
    src.insert("img.tar.gz", small_archive(&data));
    let dst = MemoryStore::new("dst");
    dst.inject(FaultRule::new(Op::UploadPart, Fault::Error(ErrorClass::Transient)).part(2));
    let e = transfer::copy_unpack(
        Location::new(src, "img.tar.gz"),
        UnpackTarget::Fixed(Location::new(dst.clone(), "disk.raw")),
        CopyOptions {
            concurrency: 2,
            part_size: Some(MIB),
            max_attempts: 3,
            retry_base: Duration::from_millis(1),
            retry_cap: Duration::from_millis(5),
            ..opts()
        },
        Progress::new(),
        CancellationToken::new(),
    )
    .await
    .expect_err("part 2 never goes through");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("part 2 (RAW bytes {}-{})", MIB, 2 * MIB))
            && msg.contains("failed after 3 attempt(s)"),
        "{msg}"
    );
    assert_eq!(dst.part_uploads(2), 0);
    assert_eq!(dst.open_uploads(), 0, "no state dir: the upload is aborted");
}
