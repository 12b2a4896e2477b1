//! The engine through its public API only: local file → memory store → local file, with
//! faults on the way, as the CLI and the daemon will drive it.

use std::sync::Arc;

use ossrelay::store::local::LocalFile;
use ossrelay::store::memory::{Fault, FaultRule, MemoryStore, Op};
use ossrelay::store::{ErrorClass, ObjectStore};
use ossrelay::transfer::{copy, CopyOptions, Location, Progress, TransferError};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn local_to_memory_to_local_with_faults() {
    let dir = tempfile::tempdir().unwrap();
    let src_path = dir.path().join("disk.raw");
    let bytes: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&src_path, &bytes).unwrap();

    let mem = MemoryStore::new("bucket");
    mem.inject(FaultRule::new(Op::UploadPart, Fault::Error(ErrorClass::Throttled)).times(2));
    let opts = CopyOptions {
        part_size: Some(512 * 1024),
        retry_base: std::time::Duration::from_millis(1),
        retry_cap: std::time::Duration::from_millis(5),
        state_dir: Some(dir.path().join("state")),
        ..CopyOptions::default()
    };
    let up = copy(
        Location::new(Arc::new(LocalFile::new(&src_path)), ""),
        Location::new(mem.clone() as Arc<dyn ObjectStore>, "images/disk.raw"),
        opts.clone(),
        Progress::new(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(up.parts, 6);
    assert!(up.retries >= 2);
    assert!(!up.source_crc64_known);

    let out = dir.path().join("back.raw");
    let progress = Progress::new();
    let down = copy(
        Location::new(mem.clone() as Arc<dyn ObjectStore>, "images/disk.raw"),
        Location::new(Arc::new(LocalFile::new(&out)), ""),
        opts,
        progress.clone(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(down.source_crc64_known);
    assert_eq!(down.crc64, up.crc64);
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    assert_eq!(progress.snapshot().acked_bytes, bytes.len() as u64);
    let json = serde_json::to_string(&down).unwrap();
    assert!(
        json.contains(&format!("\"crc64\":\"{}\"", down.crc64)),
        "{json}"
    );
}

#[tokio::test]
async fn missing_source_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = copy(
        Location::new(Arc::new(LocalFile::new(dir.path().join("nope.raw"))), ""),
        Location::new(MemoryStore::new("b") as Arc<dyn ObjectStore>, "k"),
        CopyOptions::default(),
        Progress::new(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, TransferError::Store { .. }));
    let msg = err.to_string();
    assert!(msg.contains("nope.raw") && !msg.contains('\n'), "{msg}");
}
