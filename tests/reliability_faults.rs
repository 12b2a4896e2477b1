//! The fault matrix: the real `ossrelay copy` between two simulated regions under every fault
//! kind of the simulator at 1 %, 5 % and 20 %, on downloads and on uploads, plus a full
//! outage mid-copy, a destination clock 20 minutes ahead, credentials that expire every 3 s
//! and a slow-loris destination.
//!
//! The promise under test: the copy either succeeds and the destination is byte-identical to
//! the source, or it exits 1 with one clear line. Every destination is checked against the
//! source independently of the tool: its bytes are read back from the simulator and CRC'd
//! here. Run with `--nocapture` to see the outcome table (outcome, retries, wall time).

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use ossrelay_sim::{FaultKind, SimConfig, SimRole};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// Not a multiple of the part size: the last part is short.
const SIZE: usize = 3 * MIB as usize + 12_345;
const KEY: &str = "img.raw";
/// How long a silent response or body may last before the client cuts it (the simulator's
/// stall is 30 s).
const STALL_TIMEOUT: &str = "2";

const KINDS: [FaultKind; 6] = [
    FaultKind::Error500,
    FaultKind::Slowdown,
    FaultKind::Reset,
    FaultKind::Truncate,
    FaultKind::Corrupt,
    FaultKind::Stall,
];

fn crc64(data: &[u8]) -> u64 {
    crc::Crc::<u64>::new(&crc::CRC_64_XZ).checksum(data)
}

/// One line of the outcome table.
#[derive(Clone)]
struct Row {
    case: String,
    outcome: String,
    /// Retries the tool reported plus its hedged parts (`--json` summary; 0 when it failed).
    retries: u64,
    /// Requests the disturbed simulator failed (non-2xx or dropped), from its stats.
    failed: u64,
    secs: f64,
    note: String,
}

/// Which simulator a case disturbs.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    /// Faults on the source's GETs.
    Get,
    /// Faults on the destination's uploads.
    Upload,
    /// Both regions disturbed at once.
    Both,
}

/// Checks the promise for one finished copy and returns its table row: success with a
/// destination identical to `data` (read back and CRC'd here), or exit 1 with one clean
/// error line and no destination object. Anything else fails the test.
fn judge(w: &World, case: &str, out: &Output, data: &[u8], secs: f64, faulted: Side) -> Row {
    let err = stderr(out);
    assert!(!err.contains("panicked"), "{case}: panic: {err}");
    assert!(!err.contains("SECRET-do-not-leak"), "{case}: secret: {err}");
    let failed_now = || match faulted {
        Side::Get => ossrelay_sim::failed_requests(&w.src.stats()),
        Side::Upload => ossrelay_sim::failed_requests(&w.dst.stats()),
        Side::Both => {
            ossrelay_sim::failed_requests(&w.src.stats())
                + ossrelay_sim::failed_requests(&w.dst.stats())
        }
    };
    match out.status.code() {
        Some(0) => {
            let s = summary(out);
            let got = w
                .dst
                .get_object_bytes(DST_BUCKET, KEY)
                .unwrap_or_else(|| panic!("{case}: exit 0 but no destination object"));
            assert_eq!(got.len(), data.len(), "{case}: destination size");
            assert_eq!(
                crc64(&got),
                crc64(data),
                "{case}: SILENTLY WRONG DESTINATION"
            );
            assert!(got == data, "{case}: destination bytes differ");
            assert_eq!(
                s["crc64"].as_str(),
                Some(crc64(data).to_string().as_str()),
                "{case}: the summary's CRC-64"
            );
            assert_eq!(
                w.dst.stats()["open_uploads"].as_u64(),
                Some(0),
                "{case}: upload left open after success"
            );
            Row {
                case: case.into(),
                outcome: "ok, CRC-64 verified".into(),
                // A hedge is another attempt of a part, mending a failure the way a retry does
                // (its straggler may be cancelled in the transport's backoff, before that
                // retry was counted).
                retries: s["retries"].as_u64().unwrap_or(0)
                    + s["hedged_parts"].as_u64().unwrap_or(0),
                failed: failed_now(),
                secs,
                note: String::new(),
            }
        }
        Some(1) => {
            let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
            assert_eq!(lines.len(), 1, "{case}: one error line expected: {err}");
            assert!(lines[0].len() > 20, "{case}: terse error {:?}", lines[0]);
            if let Some(got) = w.dst.get_object_bytes(DST_BUCKET, KEY) {
                // A failure may only leave a destination behind if it is the right one.
                assert!(
                    got == data,
                    "{case}: a failed copy left a WRONG destination"
                );
            }
            Row {
                case: case.into(),
                outcome: "exit 1".into(),
                retries: 0,
                failed: failed_now(),
                secs,
                note: lines[0].to_string(),
            }
        }
        other => panic!("{case}: exit {other:?}; stderr: {err}"),
    }
}

fn print_table(title: &str, rows: &[Row]) {
    eprintln!("\n{title}");
    eprintln!(
        "{:<28} {:<20} {:>7} {:>7} {:>6}  note",
        "case", "outcome", "retries", "failed", "secs"
    );
    for r in rows {
        eprintln!(
            "{:<28} {:<20} {:>7} {:>7} {:>6.1}  {}",
            r.case,
            r.outcome,
            r.retries,
            r.failed,
            r.secs,
            r.note.chars().take(100).collect::<String>()
        );
    }
    for r in rows.iter().filter(|r| r.note.chars().count() > 100) {
        eprintln!("{}: {}", r.case, r.note);
    }
    eprintln!("(retries: the tool's --json count; failed: requests the disturbed simulator failed or dropped)");
}

/// `copy` arguments every case uses: small parts, a short stall timeout, a JSON summary.
fn args(w: &World) -> Vec<String> {
    let mut a = w.copy_args(KEY, DST_BUCKET, KEY);
    a.extend(
        [
            "--json",
            "--part-size",
            "256KiB",
            "--concurrency",
            "4",
            "--stall-timeout",
            STALL_TIMEOUT,
        ]
        .map(String::from),
    );
    a
}

async fn matrix_case(kind: FaultKind, rate: f64, side: Side, seed: u64) -> Row {
    let faults = vec![(kind, rate)];
    let (src_f, dst_f, ops): (_, _, Vec<String>) = match side {
        Side::Get => (faults, Vec::new(), vec!["GetObject".into()]),
        // Naming the upload operations lets truncate/corrupt/stall strike upload bodies.
        Side::Upload | Side::Both => (
            Vec::new(),
            faults,
            vec!["UploadPart".into(), "PutObject".into()],
        ),
    };
    let w = World::new(
        |c: &mut SimConfig| {
            c.faults = src_f;
            c.fault_ops = Some(ops.clone());
            c.fault_seed = seed;
        },
        |c: &mut SimConfig| {
            c.faults = dst_f;
            c.fault_ops = Some(ops.clone());
            c.fault_seed = seed + 1;
        },
    )
    .await;
    let data = bytes(SIZE, seed);
    w.src
        .put_object_bytes(SRC_BUCKET, KEY, Bytes::from(data.clone()));
    let t0 = Instant::now();
    let out = w.run(args(&w)).await;
    let case = format!(
        "{}/{kind}/{}%",
        if side == Side::Get { "get" } else { "upload" },
        (rate * 100.0).round()
    );
    judge(&w, &case, &out, &data, t0.elapsed().as_secs_f64(), side)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_never_leaves_a_wrong_destination() {
    let mut cases = Vec::new();
    let mut seed = 100;
    for side in [Side::Get, Side::Upload] {
        for kind in KINDS {
            for rate in [0.01, 0.05, 0.20] {
                seed += 2;
                cases.push((kind, rate, side, seed));
            }
        }
    }
    let mut rows: Vec<Row> = futures::stream::iter(cases)
        .map(|(k, r, s, seed)| matrix_case(k, r, s, seed))
        .buffered(6)
        .collect()
        .await;
    print_table("fault matrix (3 MiB, 256 KiB parts, concurrency 4)", &rows);
    assert_eq!(rows.len(), 36);
    // The faults were real: at 20 % every kind made the client retry (body faults on a GET
    // answer 206, so only the tool sees them) or fail.
    for r in rows.iter().filter(|r| r.case.ends_with("/20%")) {
        assert!(
            r.retries > 0 || r.outcome == "exit 1",
            "{}: a 20 % fault rate caused no retry",
            r.case
        );
        assert!(
            r.retries >= r.failed,
            "{}: failures not all retried",
            r.case
        );
    }
    // At 1 % and 5 % every kind is survived.
    for r in rows.iter_mut().filter(|r| !r.case.ends_with("/20%")) {
        assert_eq!(r.outcome, "ok, CRC-64 verified", "{}: {}", r.case, r.note);
    }
}

/// What happens to a running copy once its first parts landed.
#[derive(Clone, Copy)]
enum Disturb {
    Nothing,
    /// Both regions reset every connection for this long.
    Outage(Duration),
    /// The destination dribbles 512 B/s on every connection for this long.
    SlowLoris(Duration),
    /// The destination dribbles 512 B/s on every connection from the start, for good.
    SlowLorisForever,
}

/// Runs `copy` (with `--dst-profile dst_profile`) while `disturb` acts on the world, judges
/// the result, and returns the row with the destination's stats.
async fn disturbed_case(
    case: &str,
    size: usize,
    dst_cfg: impl FnOnce(&mut SimConfig),
    dst_profile: &str,
    disturb: Disturb,
) -> (Row, serde_json::Value) {
    let w = World::new(|_| {}, dst_cfg).await;
    let data = bytes(size, case.len() as u64);
    w.src
        .put_object_bytes(SRC_BUCKET, KEY, Bytes::from(data.clone()));
    let mut a = args(&w);
    if dst_profile != "dst" {
        w.add_role_profile("relay");
        let i = a.iter().position(|x| x == "--dst-profile").unwrap();
        a[i + 1] = dst_profile.into();
    }
    let mut cmd = w.command(&a);
    cmd.env("ALIBABA_CLOUD_STS_ENDPOINT", w.dst.endpoint());
    if matches!(disturb, Disturb::SlowLorisForever) {
        w.dst.set_slow_loris(Some(512));
    }
    let t0 = Instant::now();
    let child = cmd.spawn().expect("spawn ossrelay");
    let wait = tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"));
    match disturb {
        Disturb::Nothing | Disturb::SlowLorisForever => {}
        Disturb::Outage(d) => {
            w.wait_for_parts(3).await;
            w.src.set_outage(true);
            w.dst.set_outage(true);
            tokio::time::sleep(d).await;
            w.src.set_outage(false);
            w.dst.set_outage(false);
        }
        Disturb::SlowLoris(d) => {
            w.wait_for_parts(3).await;
            w.dst.set_slow_loris(Some(512));
            tokio::time::sleep(d).await;
            w.dst.set_slow_loris(None);
        }
    }
    let out = tokio::time::timeout(Duration::from_secs(150), wait)
        .await
        .unwrap_or_else(|_| panic!("{case}: the copy hung"))
        .unwrap();
    let row = judge(
        &w,
        case,
        &out,
        &data,
        t0.elapsed().as_secs_f64(),
        Side::Both,
    );
    (row, w.dst.stats())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_for_good_fails_cleanly_instead_of_hanging() {
    let (row, stats) = disturbed_case(
        "slow-loris dst for good",
        SIZE,
        |_| {},
        "dst",
        Disturb::SlowLorisForever,
    )
    .await;
    print_table(
        "a destination that never speeds up",
        std::slice::from_ref(&row),
    );
    assert_eq!(row.outcome, "exit 1", "{}", row.note);
    assert!(
        row.note.contains(DST_BUCKET),
        "names the destination: {}",
        row.note
    );
    assert_eq!(
        count(&stats, "CompleteMultipartUpload", "200"),
        0,
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_skew_expiring_credentials_and_slow_loris() {
    // ~1.5 MiB/s in all: each case runs for a few seconds, so disturbances land mid-copy.
    let paced = |c: &mut SimConfig| c.conn_rate = Some(384 * KIB);
    let six = 6 * MIB as usize;
    let outage = disturbed_case(
        "outage 10s (both regions)",
        six,
        paced,
        "dst",
        Disturb::Outage(Duration::from_secs(10)),
    );
    let skew = disturbed_case(
        "dst clock +20 min",
        SIZE,
        |c| c.clock_skew = 20 * 60,
        "dst",
        Disturb::Nothing,
    );
    let creds = disturbed_case(
        "STS creds expire every 3s",
        // Long enough to outlive two 3 s lifetimes now that round trips are hidden (parts
        // awaiting their acknowledgement hold no slot since issue #19: 6 MiB took 5 s).
        10 * MIB as usize,
        |c| {
            c.conn_rate = Some(160 * KIB);
            c.roles.push(SimRole {
                account: dst_account().name,
                name: "relay".into(),
                trusted: src_account().name,
            });
            c.sts_ttl = Some(Duration::from_secs(3));
        },
        "dst-role",
        Disturb::Nothing,
    );
    let loris = disturbed_case(
        "slow-loris dst for 8s",
        six,
        paced,
        "dst",
        Disturb::SlowLoris(Duration::from_secs(8)),
    );
    let (outage, skew, creds, loris) = futures::join!(outage, skew, creds, loris);
    let rows = [outage.0, skew.0, creds.0.clone(), loris.0];
    print_table("disturbances (256 KiB parts, concurrency 4)", &rows);
    for r in &rows {
        assert_eq!(r.outcome, "ok, CRC-64 verified", "{}: {}", r.case, r.note);
    }
    // The outage and the slow loris were felt (the client retried through them), and the
    // copies outlived them.
    assert!(
        rows[0].failed > 0 && rows[0].retries > 0,
        "outage not felt: {}",
        outage.1
    );
    assert!(rows[0].secs > 10.0, "the copy ended before the outage did");
    assert!(
        rows[3].retries > 0 && rows[3].secs > 8.0,
        "slow loris not felt"
    );
    assert_eq!(
        rows[1].retries, rows[1].failed,
        "skew: every refusal retried once"
    );
    // The credentials run outlived several 3 s lifetimes: AssumeRole was called again and
    // nothing was refused for expired credentials.
    assert!(
        rows[2].secs > 6.0,
        "too fast to see expiry: {}",
        rows[2].secs
    );
    assert!(count(&creds.1, "AssumeRole", "200") >= 2, "{}", creds.1);
    for op in [
        "UploadPart",
        "CompleteMultipartUpload",
        "InitiateMultipartUpload",
    ] {
        assert_eq!(count(&creds.1, op, "403"), 0, "{op}: {}", creds.1);
    }
}

/// One raw `GET /-/stats`: the body, or `None` when the connection failed.
async fn raw_stats(endpoint: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /-/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    text.starts_with("HTTP/1.1 200").then_some(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_switch_resets_connections_and_counts_them() {
    let w = World::new(|_| {}, |_| {}).await;
    assert!(raw_stats(&w.dst.endpoint()).await.is_some(), "up before");
    w.dst.set_outage(true);
    assert!(
        raw_stats(&w.dst.endpoint()).await.is_none(),
        "served in an outage"
    );
    assert!(
        count(&w.dst.stats(), "Connection", "outage") >= 1,
        "{}",
        w.dst.stats()
    );
    w.dst.set_outage(false);
    assert!(raw_stats(&w.dst.endpoint()).await.is_some(), "up after");
}
