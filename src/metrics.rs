//! Metric names, descriptions and registration in one place.
//!
//! Code that counts things uses these constants with the `metrics` macros; `describe_all`
//! attaches help texts and units once, before an exporter is installed.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Bytes moved, `direction` = `download` | `upload` (acknowledged by the destination).
pub const BYTES_TOTAL: &str = "ossrelay_bytes_total";
/// Parts finished, `result` = `ok` | `retried` | `failed` | `skipped`.
pub const PARTS_TOTAL: &str = "ossrelay_parts_total";
/// Requests sent, labels `service`, `operation`, `status` (HTTP status or `error`).
pub const REQUESTS_TOTAL: &str = "ossrelay_requests_total";
/// Request latency in seconds, label `operation`.
pub const REQUEST_DURATION_SECONDS: &str = "ossrelay_request_duration_seconds";
/// Parts currently in flight.
pub const INFLIGHT_PARTS: &str = "ossrelay_inflight_parts";
/// Bytes currently held in buffers between downloads and uploads.
pub const BUFFERED_BYTES: &str = "ossrelay_buffered_bytes";
/// Current adaptive concurrency limit.
pub const CONCURRENCY_LIMIT: &str = "ossrelay_concurrency_limit";
/// Retries, label `reason` (an `ErrorClass` label such as `throttled`, or `crc_mismatch`).
pub const RETRIES_TOTAL: &str = "ossrelay_retries_total";
/// CRC-64 mismatches detected (part or whole object).
pub const CRC_MISMATCHES_TOTAL: &str = "ossrelay_crc_mismatches_total";
/// Credential refreshes, labels `provider` and `result` = `ok` | `error`.
pub const CREDENTIAL_REFRESHES_TOTAL: &str = "ossrelay_credential_refreshes_total";

/// Registers help texts and units for every metric above.
pub fn describe_all() {
    describe_counter!(
        BYTES_TOTAL,
        Unit::Bytes,
        "Bytes transferred; upload bytes count only once the destination acknowledged them."
    );
    describe_counter!(PARTS_TOTAL, "Parts finished, by result.");
    describe_counter!(
        REQUESTS_TOTAL,
        "Requests sent to cloud services, by service, operation and status."
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from sending a request to its response headers (or error)."
    );
    describe_gauge!(INFLIGHT_PARTS, "Parts currently being transferred.");
    describe_gauge!(
        BUFFERED_BYTES,
        Unit::Bytes,
        "Bytes held in memory between ranged GETs and UploadParts."
    );
    describe_gauge!(
        CONCURRENCY_LIMIT,
        "Current adaptive limit on parts in flight (lowered on throttling)."
    );
    describe_counter!(RETRIES_TOTAL, "Retried requests or parts, by reason.");
    describe_counter!(
        CRC_MISMATCHES_TOTAL,
        "CRC-64 mismatches detected between computed and reported checksums."
    );
    describe_counter!(
        CREDENTIAL_REFRESHES_TOTAL,
        "Fetches of temporary credentials (STS, instance RAM role), by provider and result."
    );
}

/// Makes label-less counters visible at 0 before anything happened, so dashboards and alert
/// rules see a series (call after an exporter is installed).
pub fn register_zeroes() {
    metrics::counter!(CRC_MISMATCHES_TOTAL).increment(0);
}
