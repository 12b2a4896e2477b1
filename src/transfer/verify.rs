//! Proof helpers: re-reading source ranges to locate a part whose bytes were corrupted on the
//! way in (the per-part check only proves the destination stored what we sent; the source's
//! whole-object CRC-64 proves what we sent is what the source holds).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::checksum::crc64::Crc64;
use crate::store::{PartSpec, StoreError};

use super::{Location, Progress};
use crate::store::retry::{should_retry, Backoff};

/// CRC-64 of source bytes `[start, end)`, read without buffering.
pub(crate) async fn range_crc(
    src: &Location,
    start: u64,
    end: u64,
    if_match: Option<&str>,
    idle: Option<Duration>,
    request_timeout: Option<Duration>,
) -> Result<u64, StoreError> {
    if start == end {
        return Ok(0);
    }
    let mut stream = super::within(
        request_timeout,
        src.store.get_range(&src.key, start, end, if_match),
    )
    .await
    .ok_or_else(|| StoreError::transient(format!("no response from {}", src.describe())))??;
    let mut crc = Crc64::new();
    loop {
        match super::within(idle, stream.next()).await {
            None => return Err(StoreError::transient("the source stalled while re-reading")),
            Some(None) => break,
            Some(Some(chunk)) => crc.update(&chunk?),
        }
    }
    if crc.len() != end - start {
        return Err(StoreError::transient(format!(
            "the source body ended after {} of {} bytes",
            crc.len(),
            end - start
        )));
    }
    Ok(crc.sum())
}

/// Parts (indexes into `parts`) whose source bytes do not have the recorded CRC-64.
/// Reads up to `concurrency` ranges at once, retrying transient errors.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn find_bad_parts(
    src: Location,
    parts: Vec<PartSpec>,
    recorded: Vec<u64>,
    if_match: String,
    concurrency: usize,
    max_attempts: u32,
    backoff: Backoff,
    idle: Option<Duration>,
    request_timeout: Option<Duration>,
    progress: Arc<Progress>,
) -> Result<Vec<usize>, StoreError> {
    // Every future owns its inputs: borrowed captures here would cost `copy` its `Send` proof.
    let checks = parts.into_iter().enumerate().map(move |(i, p)| {
        let mut backoff = backoff.clone();
        let src = src.clone();
        let if_match = if_match.clone();
        let progress = progress.clone();
        async move {
            let mut attempt = 1;
            loop {
                match range_crc(
                    &src,
                    p.offset,
                    p.offset + p.len,
                    Some(&if_match),
                    idle,
                    request_timeout,
                )
                .await
                {
                    Ok(c) => {
                        progress.downloaded_bytes.fetch_add(p.len, Relaxed);
                        metrics::counter!(crate::metrics::BYTES_TOTAL, "direction" => "download")
                            .increment(p.len);
                        return Ok((i, c));
                    }
                    Err(e) if should_retry(e.class, attempt, max_attempts) => {
                        attempt += 1;
                        tokio::time::sleep(backoff.next(e.class)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    });
    let mut results = futures::stream::iter(checks).buffer_unordered(concurrency.max(1));
    let mut bad = Vec::new();
    while let Some(r) = results.next().await {
        let (i, c) = r?;
        if c != recorded[i] {
            bad.push(i);
        }
    }
    bad.sort_unstable();
    Ok(bad)
}
