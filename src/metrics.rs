//! Metric names, help texts and registration in one place.
//!
//! Guarantees callers can rely on:
//! * [`install`] is the one way a process exposes engine metrics: it installs the Prometheus
//!   recorder, *then* attaches every `# HELP`/`# TYPE` (descriptions given before a recorder
//!   exists go to the no-op recorder and are lost), creates every labelled series this module
//!   knows at zero (so `rate()` and alert rules have a series before the first event), and
//!   registers the `process_*` collector (RSS, CPU, open fds) and the build-info gauge.
//! * `ossrelay_bytes_total` counts bytes as they stream, chunk by chunk, on both sides (so a
//!   10 s `rate()` is the real throughput, not a staircase of part sizes); the exact
//!   acknowledged progress is the separate `ossrelay_acknowledged_bytes_total`.
//! * Names follow the Prometheus naming guide: base units, `_total` on counters, `_seconds`
//!   and `_bytes` suffixes.
//!
//! Code that counts things uses these constants with the `metrics` macros.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Bytes moved as they stream, `direction` = `download` (received from the source) |
/// `upload` (handed to the destination); retried bytes count again (they crossed the wire).
pub const BYTES_TOTAL: &str = "ossrelay_bytes_total";
/// Bytes the destination acknowledged (a part or object counts once its response arrived).
pub const ACKNOWLEDGED_BYTES_TOTAL: &str = "ossrelay_acknowledged_bytes_total";
/// Parts finished, `result` = `ok` | `retried` | `failed` | `skipped`.
pub const PARTS_TOTAL: &str = "ossrelay_parts_total";
/// Requests sent, labels `service`, `operation`, `status` (HTTP status or `error`).
pub const REQUESTS_TOTAL: &str = "ossrelay_requests_total";
/// Request latency in seconds, label `operation`.
pub const REQUEST_DURATION_SECONDS: &str = "ossrelay_request_duration_seconds";
/// Parts currently in flight.
pub const INFLIGHT_PARTS: &str = "ossrelay_inflight_parts";
/// Parts whose body was all sent and whose UploadPart response is pending (they hold no
/// transfer slot; at most the concurrency limit of them per copy).
pub const AWAITING_ACK_PARTS: &str = "ossrelay_parts_awaiting_ack";
/// Parts moving body bytes (first byte taken, body not all sent): what `--concurrency`
/// bounds, seen from the relay (GETs still waiting for their first byte excluded).
pub const SENDING_PARTS: &str = "ossrelay_parts_sending";
/// Straggling parts sent a second time on a fresh connection (bounded per copy).
pub const HEDGED_PARTS_TOTAL: &str = "ossrelay_hedged_parts_total";
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
/// Build information, value 1, labels `version` and `commit`.
pub const BUILD_INFO: &str = "ossrelay_build_info";

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from (`unknown` outside a git checkout, e.g. in a
/// container build without `.git`); set by `build.rs`.
pub const COMMIT: &str = env!("OSSRELAY_BUILD_COMMIT");

/// Label values known in advance: their series exist at 0 from the start.
const DIRECTIONS: &[&str] = &["download", "upload"];
const PART_RESULTS: &[&str] = &["ok", "retried", "failed", "skipped"];
const RETRY_REASONS: &[&str] = &[
    "throttled",
    "transient",
    "clock_skew",
    "timeout",
    "truncated",
    "crc_mismatch",
];

/// Latency buckets of [`REQUEST_DURATION_SECONDS`]: from a same-region HEAD to a slow part.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The exporter builder every process uses (latency buckets set).
pub fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(REQUEST_DURATION_SECONDS.to_string()),
            LATENCY_BUCKETS,
        )
        .expect("the latency bucket list is not empty")
}

/// Everything that must happen once a recorder is installed: help texts, zero series,
/// the process collector's descriptions and, with `build_info`, the build-info gauge
/// (the daemon renders its own). Call [`collect_process`] before each scrape (or every
/// second) to refresh the `process_*` gauges.
pub fn after_install(build_info: bool) {
    describe_all();
    register_zeroes();
    if build_info {
        describe_gauge!(
            BUILD_INFO,
            "Build information (value 1): version and git commit."
        );
        metrics::gauge!(BUILD_INFO, "version" => VERSION, "commit" => COMMIT).set(1.0);
    }
    let process = PROCESS.get_or_init(metrics_process::Collector::default);
    process.describe();
    process.collect();
}

/// The `process_*` collector, once a recorder is installed.
static PROCESS: std::sync::OnceLock<metrics_process::Collector> = std::sync::OnceLock::new();

/// Refreshes the `process_*` gauges (RSS, CPU seconds, open fds, threads) from the OS.
pub fn collect_process() {
    if let Some(p) = PROCESS.get() {
        p.collect();
    }
}

/// Registers help texts and units for every metric above.
fn describe_all() {
    describe_counter!(
        BYTES_TOTAL,
        Unit::Bytes,
        "Bytes moved as they stream: received from the source (download) or handed to the destination (upload), retries included."
    );
    describe_counter!(
        ACKNOWLEDGED_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes the destination acknowledged (counted per finished part or object)."
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
    describe_gauge!(
        INFLIGHT_PARTS,
        "Parts under way: moving bytes or awaiting their UploadPart response (at most 2 x concurrency)."
    );
    describe_gauge!(
        AWAITING_ACK_PARTS,
        "Parts fully sent whose UploadPart response is pending (they hold no transfer slot)."
    );
    describe_gauge!(
        SENDING_PARTS,
        "Parts moving body bytes: first byte received, body not all sent (bounded by --concurrency plus a quarter of it in early starts)."
    );
    describe_counter!(
        HEDGED_PARTS_TOTAL,
        "Straggling parts sent a second time on a fresh connection near the end of a copy."
    );
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

/// Creates every series whose labels are known in advance at 0, so dashboards and alert
/// rules see a series (and `rate()` a starting point) before anything happened.
fn register_zeroes() {
    for d in DIRECTIONS {
        metrics::counter!(BYTES_TOTAL, "direction" => *d).increment(0);
    }
    metrics::counter!(ACKNOWLEDGED_BYTES_TOTAL).increment(0);
    for r in PART_RESULTS {
        metrics::counter!(PARTS_TOTAL, "result" => *r).increment(0);
    }
    for r in RETRY_REASONS {
        metrics::counter!(RETRIES_TOTAL, "reason" => *r).increment(0);
    }
    metrics::counter!(CRC_MISMATCHES_TOTAL).increment(0);
    metrics::gauge!(INFLIGHT_PARTS).set(0.0);
    metrics::gauge!(AWAITING_ACK_PARTS).set(0.0);
    metrics::gauge!(SENDING_PARTS).set(0.0);
    metrics::counter!(HEDGED_PARTS_TOTAL).increment(0);
    metrics::gauge!(BUFFERED_BYTES).set(0.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition a fresh process shows before any transfer.
    fn fresh_render() -> String {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            after_install(true);
        });
        handle.render()
    }

    #[test]
    fn every_engine_metric_has_help_and_type_once_installed() {
        let text = fresh_render();
        for name in [
            BYTES_TOTAL,
            ACKNOWLEDGED_BYTES_TOTAL,
            PARTS_TOTAL,
            RETRIES_TOTAL,
            CRC_MISMATCHES_TOTAL,
            INFLIGHT_PARTS,
            AWAITING_ACK_PARTS,
            SENDING_PARTS,
            HEDGED_PARTS_TOTAL,
            BUFFERED_BYTES,
            BUILD_INFO,
        ] {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}:\n{text}"
            );
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "no TYPE for {name}:\n{text}"
            );
        }
    }

    #[test]
    fn labelled_series_exist_at_zero_before_anything_happened() {
        let text = fresh_render();
        for series in [
            "ossrelay_bytes_total{direction=\"download\"} 0",
            "ossrelay_bytes_total{direction=\"upload\"} 0",
            "ossrelay_acknowledged_bytes_total 0",
            "ossrelay_parts_total{result=\"ok\"} 0",
            "ossrelay_parts_total{result=\"failed\"} 0",
            "ossrelay_retries_total{reason=\"throttled\"} 0",
            "ossrelay_crc_mismatches_total 0",
        ] {
            assert!(text.contains(series), "no {series}:\n{text}");
        }
        assert!(
            text.contains(&format!(
                "ossrelay_build_info{{version=\"{VERSION}\",commit=\"{COMMIT}\"}} 1"
            )),
            "{text}"
        );
    }

    #[test]
    fn process_metrics_are_exported() {
        let text = fresh_render();
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "no {name}:\n{text}"
            );
        }
    }

    #[test]
    fn names_follow_the_prometheus_naming_guide() {
        for name in [
            BYTES_TOTAL,
            ACKNOWLEDGED_BYTES_TOTAL,
            PARTS_TOTAL,
            REQUESTS_TOTAL,
            RETRIES_TOTAL,
            CRC_MISMATCHES_TOTAL,
            CREDENTIAL_REFRESHES_TOTAL,
        ] {
            assert!(name.ends_with("_total"), "counter {name} lacks _total");
        }
        assert!(REQUEST_DURATION_SECONDS.ends_with("_seconds"));
        assert!(BUFFERED_BYTES.ends_with("_bytes"));
    }
}
