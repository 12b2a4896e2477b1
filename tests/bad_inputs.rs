//! The bad-input table: every way a user (or a hostile server) can hand `ossrelay` something
//! wrong, each with the exit code and the one actionable line it must produce. One place that
//! lists them all; each row runs the real binary against two simulators.

mod common;
mod daemon_support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use ossrelay_sim::{self as sim, SimConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::*;
use serde_json::json;

const GIB: u64 = 1 << 30;

/// What a row needs besides its arguments.
#[derive(Default)]
struct Case {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// RLIMIT_FSIZE for the child (a full disk without needing a mount).
    fsize_limit: Option<u64>,
    code: i32,
    /// Must appear (case-insensitively) in the one error line; for successes, in stderr.
    needle: &'static str,
    /// For successes: a destination that must now exist, with its expected size.
    expect_object: Option<(&'static str, &'static str, u64)>,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Replaces the value following `flag` (or appends `flag value`).
fn set(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    match args.iter().position(|a| a == flag) {
        Some(i) => args[i + 1] = value.to_string(),
        None => args.extend([flag.to_string(), value.to_string()]),
    }
    args
}

fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    args.extend(extra.iter().map(|x| x.to_string()));
    args
}

/// Removes `flag` and its value.
fn without(mut args: Vec<String>, flag: &str) -> Vec<String> {
    if let Some(i) = args.iter().position(|a| a == flag) {
        args.drain(i..i + 2);
    }
    args
}

/// How the hand-rolled hostile server misbehaves.
#[derive(Clone, Copy)]
enum Garbage {
    /// A 403 whose XML body is cut in the middle of a tag.
    BadXmlError,
    /// A 200 HEAD without Content-Length, ETag or any OSS header.
    NoHeaders,
    /// HEAD is fine; GET declares 1 MiB and sends 10 bytes, then closes.
    ShortBody,
    /// Not HTTP at all.
    NotHttp,
    /// A 200 InitiateMultipartUpload (and everything else) answered with `<html>` junk.
    HtmlOk,
}

/// A tiny TCP server that answers every request with the same kind of garbage.
async fn garbage_server(kind: Garbage) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut got = Vec::new();
                // Read the request head (bodies are ignored: the answer does not depend on them).
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&got).to_string();
                let is_head = head.starts_with("HEAD ");
                let resp: Vec<u8> = match kind {
                    Garbage::BadXmlError => {
                        let body = "<?xml version=\"1.0\"?><Error><Code>AccessDen";
                        format!(
                            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nx-oss-request-id: R1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                            body.len(),
                            if is_head { "" } else { body }
                        )
                        .into_bytes()
                    }
                    Garbage::NoHeaders => b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec(),
                    Garbage::ShortBody => {
                        let h = "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\nETag: \"0123456789ABCDEF0123456789ABCDEF\"\r\nLast-Modified: Wed, 01 Jan 2025 00:00:00 GMT\r\nx-oss-object-type: Normal\r\nx-oss-request-id: R1\r\nConnection: close\r\n\r\n";
                        if is_head {
                            h.as_bytes().to_vec()
                        } else {
                            let h = h.replace("200 OK", "206 Partial Content").replace(
                                "Content-Length: 1048576\r\n",
                                "Content-Length: 1048576\r\nContent-Range: bytes 0-1048575/1048576\r\n",
                            );
                            let mut v = h.into_bytes();
                            v.extend_from_slice(b"0123456789");
                            v
                        }
                    }
                    Garbage::NotHttp => b"SSH-2.0-OpenSSH_9.6\r\nhello there\r\n".to_vec(),
                    Garbage::HtmlOk => {
                        let body = "<html><body>captive portal</body></html>";
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                            body.len(),
                            if is_head { "" } else { body }
                        )
                        .into_bytes()
                    }
                };
                let _ = c.write_all(&resp).await;
                let _ = c.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

fn config_with(w: &World, name: &str, body: &str) -> String {
    let p = w.dir.path().join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_fails_with_one_clear_line() {
    let w = World::new(
        |c: &mut SimConfig| {
            for (key, size) in [
                ("empty.raw", 0),
                // Over 10,000 parts of 5 GiB: no part plan exists.
                ("huge.raw", 10_000 * 5 * GIB + 1),
                ("big.raw", 20 * GIB),
            ] {
                c.synthetic.push(sim::SyntheticObject {
                    bucket: SRC_BUCKET.into(),
                    key: key.into(),
                    size,
                });
            }
        },
        |c| {
            c.remote_buckets
                .push(("elsewhere-bucket".into(), "cn-beijing".into()))
        },
    )
    .await;
    w.src
        .put_object_bytes(SRC_BUCKET, "obj", Bytes::from(bytes(300_000, 3)));
    // Temporary credentials of the source account: one expired, one valid.
    let past = SystemTime::now() - Duration::from_secs(3600);
    let future = SystemTime::now() + Duration::from_secs(3600);
    let src_acct = src_account().name;
    w.src.add_temporary_credentials(
        "STS.expiredKey",
        "sts-expired-secret",
        "expired-token",
        &src_acct,
        past,
    );
    w.src.add_temporary_credentials(
        "STS.liveKey",
        "sts-live-secret",
        "live-token",
        &src_acct,
        future,
    );
    w.add_profiles([
        serde_json::json!({"name": "sts-expired", "mode": "StsToken", "access_key_id": "STS.expiredKey",
            "access_key_secret": "sts-expired-secret", "sts_token": "expired-token", "region_id": SRC_REGION}),
        serde_json::json!({"name": "sts-badtoken", "mode": "StsToken", "access_key_id": "STS.liveKey",
            "access_key_secret": "sts-live-secret", "sts_token": "not-the-token", "region_id": SRC_REGION}),
        serde_json::json!({"name": "nomode", "access_key_id": "x", "access_key_secret": "y"}),
        serde_json::json!({"name": "weird", "mode": "Kerberos", "access_key_id": "x", "access_key_secret": "y"}),
        serde_json::json!({"name": "nokey", "mode": "AK", "access_key_id": "", "access_key_secret": ""}),
        serde_json::json!({"name": "unknown-ak", "mode": "AK", "access_key_id": "LTAInobodyKnowsMe",
            "access_key_secret": "whatever", "region_id": SRC_REGION}),
    ]);
    let bad_json = config_with(&w, "bad.json", "{\"current\": \"src\", \"profiles\": [ {");
    let not_object = config_with(&w, "list.json", "[1, 2, 3]");
    let binary_cfg = config_with(&w, "binary.json", "\u{0}\u{1}\u{2}\u{fffd}garbage");
    let bad_ini = config_with(&w, "bad.ini", "[default\ntype = access_key\n");

    let bad_xml = garbage_server(Garbage::BadXmlError).await;
    let no_headers = garbage_server(Garbage::NoHeaders).await;
    let short_body = garbage_server(Garbage::ShortBody).await;
    let not_http = garbage_server(Garbage::NotHttp).await;
    let html_ok = garbage_server(Garbage::HtmlOk).await;

    let local_src = w.dir.path().join("local.raw");
    std::fs::write(&local_src, bytes(200_000, 5)).unwrap();
    let local_big = w.dir.path().join("local-big.raw");
    std::fs::write(&local_big, bytes(3 << 20, 6)).unwrap();
    let a_file = w.dir.path().join("a-file");
    std::fs::write(&a_file, b"x").unwrap();
    let out_dir = w.dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let p = |x: &PathBuf| x.display().to_string();

    // State files: a corrupted one and one from a future version, where the next copies look.
    let state = w.state_dir();
    std::fs::write(
        ossrelay::transfer::state::state_path(
            &state,
            &format!("oss://{SRC_BUCKET}/obj"),
            &format!("oss://{DST_BUCKET}/corrupt-state"),
        ),
        b"{\"version\": 1, \"parts\": [tru",
    )
    .unwrap();
    std::fs::write(
        ossrelay::transfer::state::state_path(
            &state,
            &format!("oss://{SRC_BUCKET}/obj"),
            &format!("oss://{DST_BUCKET}/future-state"),
        ),
        serde_json::to_string(&ossrelay::transfer::state::CopyState {
            version: 99,
            source: format!("oss://{SRC_BUCKET}/obj"),
            destination: format!("oss://{DST_BUCKET}/future-state"),
            upload_id: "upload-from-the-future".into(),
            part_size: 100 << 10,
            tail: None,
            source_meta: ossrelay::transfer::state::SourceFingerprint {
                size: 300_000,
                etag: "x".into(),
                last_modified: None,
                checksums: Default::default(),
            },
            parts: vec![],
            completing: None,
        })
        .unwrap(),
    )
    .unwrap();

    let base = |key: &str, dst_key: &str| w.copy_args(key, DST_BUCKET, dst_key);
    let ok = || base("obj", "x");
    let cases = vec![
        // --- URLs ---
        Case {
            name: "empty source",
            args: {
                let mut a = ok();
                a[1] = String::new();
                a
            },
            code: 2,
            needle: "empty",
            ..Default::default()
        },
        Case {
            name: "oss:// without bucket",
            args: {
                let mut a = ok();
                a[1] = "oss://".into();
                a
            },
            code: 2,
            needle: "bucket name",
            ..Default::default()
        },
        Case {
            name: "oss:///key",
            args: {
                let mut a = ok();
                a[1] = "oss:///k".into();
                a
            },
            code: 2,
            needle: "bucket name",
            ..Default::default()
        },
        Case {
            name: "unknown scheme gs",
            args: {
                let mut a = ok();
                a[1] = "gs://a/b".into();
                a
            },
            code: 2,
            needle: "scheme",
            ..Default::default()
        },
        Case {
            name: "s3 bucket name too short",
            args: {
                let mut a = ok();
                a[1] = "s3://a/b".into();
                a
            },
            code: 2,
            needle: "invalid bucket name",
            ..Default::default()
        },
        Case {
            name: "unknown S3 provider",
            args: {
                let mut a = ok();
                a[1] = "s3://abc/b".into();
                a.push("--src-provider".into());
                a.push("azure".into());
                a
            },
            code: 2,
            needle: "--src-provider",
            ..Default::default()
        },
        Case {
            name: "unknown scheme http",
            args: {
                let mut a = ok();
                a[2] = "http://example.com/k".into();
                a
            },
            code: 2,
            needle: "scheme",
            ..Default::default()
        },
        Case {
            name: "source key empty",
            args: {
                let mut a = ok();
                a[1] = format!("oss://{SRC_BUCKET}/");
                a
            },
            code: 2,
            needle: "does not name an object",
            ..Default::default()
        },
        Case {
            name: "source key is a prefix",
            args: {
                let mut a = ok();
                a[1] = format!("oss://{SRC_BUCKET}/dir/");
                a
            },
            code: 2,
            needle: "does not name an object",
            ..Default::default()
        },
        Case {
            name: "key starting with /",
            args: {
                let mut a = ok();
                a[1] = format!("oss://{SRC_BUCKET}//k");
                a
            },
            code: 2,
            needle: "key",
            ..Default::default()
        },
        Case {
            name: "key over 1023 bytes",
            args: {
                let mut a = ok();
                a[2] = format!("oss://{DST_BUCKET}/{}", "k".repeat(1100));
                a
            },
            code: 2,
            needle: "key",
            ..Default::default()
        },
        // --- bucket naming rules ---
        Case {
            name: "bucket too short",
            args: {
                let mut a = ok();
                a[1] = "oss://ab/k".into();
                a
            },
            code: 2,
            needle: "\"ab\"",
            ..Default::default()
        },
        Case {
            name: "bucket too long",
            args: {
                let mut a = ok();
                a[2] = format!("oss://{}/k", "b".repeat(64));
                a
            },
            code: 2,
            needle: "bucket name",
            ..Default::default()
        },
        Case {
            name: "bucket upper case/underscore",
            args: {
                let mut a = ok();
                a[1] = "oss://Bad_Bucket/k".into();
                a
            },
            code: 2,
            needle: "Bad_Bucket",
            ..Default::default()
        },
        Case {
            name: "bucket leading hyphen",
            args: {
                let mut a = ok();
                a[2] = "oss://-abc/k".into();
                a
            },
            code: 2,
            needle: "-abc",
            ..Default::default()
        },
        Case {
            name: "bucket trailing hyphen",
            args: {
                let mut a = ok();
                a[2] = "oss://abc-/k".into();
                a
            },
            code: 2,
            needle: "abc-",
            ..Default::default()
        },
        // --- profiles and config files ---
        Case {
            name: "unknown profile",
            args: set(ok(), "--dst-profile", "nobody"),
            code: 1,
            needle: "nobody",
            ..Default::default()
        },
        Case {
            name: "config file missing",
            args: ok(),
            env: vec![(
                "ALIBABA_CLOUD_CONFIG_FILE",
                p(&w.dir.path().join("nope.json")),
            )],
            code: 1,
            needle: "nope.json",
            ..Default::default()
        },
        Case {
            name: "config file truncated JSON",
            args: ok(),
            env: vec![("ALIBABA_CLOUD_CONFIG_FILE", bad_json.clone())],
            code: 1,
            needle: "bad.json",
            ..Default::default()
        },
        Case {
            name: "config file not an object",
            args: ok(),
            env: vec![("ALIBABA_CLOUD_CONFIG_FILE", not_object)],
            code: 1,
            needle: "list.json",
            ..Default::default()
        },
        Case {
            name: "config file binary junk",
            args: ok(),
            env: vec![("ALIBABA_CLOUD_CONFIG_FILE", binary_cfg)],
            code: 1,
            needle: "binary.json",
            ..Default::default()
        },
        Case {
            name: "profile without mode",
            args: set(ok(), "--src-profile", "nomode"),
            code: 1,
            needle: "mode",
            ..Default::default()
        },
        Case {
            name: "profile with unsupported mode",
            args: set(ok(), "--src-profile", "weird"),
            code: 1,
            needle: "Kerberos",
            ..Default::default()
        },
        Case {
            name: "profile with empty keys",
            args: set(ok(), "--src-profile", "nokey"),
            code: 1,
            needle: "access_key_id",
            ..Default::default()
        },
        Case {
            name: "malformed shared credentials INI",
            args: without(ok(), "--src-profile"),
            env: vec![
                (
                    "ALIBABA_CLOUD_CONFIG_FILE",
                    p(&w.dir.path().join("nope.json")),
                ),
                ("ALIBABA_CLOUD_CREDENTIALS_FILE", bad_ini),
            ],
            code: 1,
            needle: "bad.ini",
            ..Default::default()
        },
        // --- credentials against the server ---
        Case {
            name: "no credentials anywhere",
            args: without(without(ok(), "--src-profile"), "--dst-profile"),
            env: vec![(
                "ALIBABA_CLOUD_CONFIG_FILE",
                p(&w.dir.path().join("nope.json")),
            )],
            code: 1,
            needle: "no credentials",
            ..Default::default()
        },
        Case {
            name: "wrong secret",
            args: set(ok(), "--dst-profile", "wrong"),
            code: 1,
            needle: "secret",
            ..Default::default()
        },
        Case {
            name: "unknown AccessKey id",
            args: set(ok(), "--src-profile", "unknown-ak"),
            code: 1,
            needle: "AccessKey ID",
            ..Default::default()
        },
        Case {
            name: "expired STS token",
            args: set(ok(), "--src-profile", "sts-expired"),
            code: 1,
            needle: "expired",
            ..Default::default()
        },
        Case {
            name: "wrong STS token",
            args: set(ok(), "--src-profile", "sts-badtoken"),
            code: 1,
            needle: "token",
            ..Default::default()
        },
        Case {
            name: "env AK with wrong secret",
            args: without(ok(), "--src-profile"),
            env: vec![
                ("ALIBABA_CLOUD_ACCESS_KEY_ID", src_account().access_key_id),
                ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "nope".into()),
            ],
            code: 1,
            needle: "secret",
            ..Default::default()
        },
        // --- regions, endpoints, buckets ---
        Case {
            name: "unknown region (no such endpoint)",
            args: without(set(ok(), "--src-region", "xx-nowhere-9"), "--src-endpoint"),
            code: 1,
            needle: "xx-nowhere-9",
            ..Default::default()
        },
        Case {
            name: "region not matching the endpoint",
            args: set(ok(), "--src-region", "ap-southeast-1"),
            code: 1,
            needle: "region",
            ..Default::default()
        },
        Case {
            name: "endpoint unreachable",
            args: set(ok(), "--src-endpoint", "http://127.0.0.1:9"),
            code: 1,
            needle: "127.0.0.1:9",
            ..Default::default()
        },
        Case {
            name: "endpoint not a URL",
            args: set(ok(), "--src-endpoint", "not a url"),
            code: 1,
            needle: "endpoint",
            ..Default::default()
        },
        Case {
            name: "endpoint with ftp scheme",
            args: set(ok(), "--dst-endpoint", "ftp://127.0.0.1:21"),
            code: 1,
            needle: "endpoint",
            ..Default::default()
        },
        Case {
            name: "bucket in another region",
            args: w.copy_args("obj", "elsewhere-bucket", "x"),
            code: 1,
            needle: "cn-beijing",
            ..Default::default()
        },
        Case {
            name: "bucket of another account",
            args: set(ok(), "--dst-profile", "src"),
            code: 1,
            needle: "denied",
            ..Default::default()
        },
        Case {
            name: "missing source object",
            args: base("no-such-key", "x"),
            code: 1,
            needle: "no-such-key",
            ..Default::default()
        },
        Case {
            name: "missing source bucket",
            args: {
                let mut a = ok();
                a[1] = "oss://no-such-src/k".into();
                a
            },
            code: 1,
            needle: "no-such-src",
            ..Default::default()
        },
        Case {
            name: "missing destination bucket",
            args: w.copy_args("obj", "no-such-bucket", "x"),
            code: 1,
            needle: "no-such-bucket",
            ..Default::default()
        },
        Case {
            name: "source of size 0 succeeds",
            args: base("empty.raw", "empty-copy.raw"),
            code: 0,
            needle: "",
            expect_object: Some((DST_BUCKET, "empty-copy.raw", 0)),
            ..Default::default()
        },
        // --- part planning, flags ---
        Case {
            name: "object over 10,000 x 5 GiB",
            args: base("huge.raw", "huge.raw"),
            code: 1,
            needle: "10000 parts",
            ..Default::default()
        },
        Case {
            name: "--part-size below 100KiB",
            args: with(ok(), &["--part-size", "1KiB"]),
            code: 2,
            needle: "part-size",
            ..Default::default()
        },
        Case {
            name: "--part-size above 5GiB",
            args: with(ok(), &["--part-size", "6GiB"]),
            code: 2,
            needle: "part-size",
            ..Default::default()
        },
        Case {
            name: "--part-size not a size",
            args: with(ok(), &["--part-size", "lots"]),
            code: 2,
            needle: "part-size",
            ..Default::default()
        },
        Case {
            name: "--concurrency 0",
            args: with(ok(), &["--concurrency", "0"]),
            code: 2,
            needle: "concurrency",
            ..Default::default()
        },
        Case {
            name: "--concurrency negative",
            args: with(ok(), &["--concurrency", "-3"]),
            code: 2,
            needle: "-3",
            ..Default::default()
        },
        Case {
            name: "--concurrency absurd",
            args: with(ok(), &["--concurrency", "100000"]),
            code: 2,
            needle: "concurrency",
            ..Default::default()
        },
        Case {
            name: "--memory absurd",
            args: with(ok(), &["--memory", "100TiB"]),
            code: 2,
            needle: "memory",
            ..Default::default()
        },
        Case {
            name: "--memory too small",
            args: with(ok(), &["--memory", "1"]),
            code: 2,
            needle: "memory",
            ..Default::default()
        },
        Case {
            name: "--memory overflowing u64",
            args: with(ok(), &["--memory", "99999999999999999999999"]),
            code: 2,
            needle: "memory",
            ..Default::default()
        },
        Case {
            name: "--bandwidth 0",
            args: with(ok(), &["--bandwidth", "0/s"]),
            code: 2,
            needle: "bandwidth",
            ..Default::default()
        },
        Case {
            name: "unknown flag",
            args: with(ok(), &["--turbo"]),
            code: 2,
            needle: "--turbo",
            ..Default::default()
        },
        Case {
            name: "--metrics-listen not an address",
            args: with(ok(), &["--metrics-listen", "localhost"]),
            code: 2,
            needle: "metrics-listen",
            ..Default::default()
        },
        // --- same object, local files ---
        Case {
            name: "destination equal to source",
            args: {
                let mut a = ok();
                a[2] = format!("oss://{SRC_BUCKET}/obj");
                dst_side_src(&w, a)
            },
            code: 2,
            needle: "same object",
            ..Default::default()
        },
        Case {
            name: "local destination equal to source",
            args: s(&[
                "copy",
                &p(&local_src),
                &p(&local_src),
                "--quiet",
                "--state-dir",
                &p(&state),
            ]),
            code: 2,
            needle: "same object",
            ..Default::default()
        },
        Case {
            name: "missing local source",
            args: s(&[
                "copy",
                &p(&w.dir.path().join("gone.raw")),
                &p(&out_dir.join("y.raw")),
                "--quiet",
                "--state-dir",
                &p(&state),
            ]),
            code: 1,
            needle: "gone.raw",
            ..Default::default()
        },
        Case {
            name: "local source is a directory",
            args: s(&[
                "copy",
                &p(&out_dir),
                &p(&w.dir.path().join("y.raw")),
                "--quiet",
                "--state-dir",
                &p(&state),
            ]),
            code: 1,
            needle: "not a regular file",
            ..Default::default()
        },
        Case {
            name: "local destination not writable",
            args: [
                s(&[
                    "copy",
                    &format!("oss://{SRC_BUCKET}/obj"),
                    "/sys/ossrelay-test.raw",
                ]),
                src_side_args(&w),
            ]
            .concat(),
            code: 1,
            needle: "/sys/ossrelay-test",
            ..Default::default()
        },
        Case {
            name: "local destination under a file",
            args: s(&[
                "copy",
                &p(&local_src),
                &p(&a_file.join("y.raw")),
                "--quiet",
                "--state-dir",
                &p(&state),
            ]),
            code: 1,
            needle: "a-file",
            ..Default::default()
        },
        Case {
            name: "local destination disk full",
            args: s(&[
                "copy",
                &p(&local_big),
                &p(&out_dir.join("full.raw")),
                "--quiet",
                "--state-dir",
                &p(&state),
            ]),
            fsize_limit: Some(1 << 20),
            code: 1,
            needle: "full.raw",
            ..Default::default()
        },
        // --- state ---
        Case {
            name: "state file corrupted: warned, started over",
            args: base("obj", "corrupt-state"),
            code: 0,
            needle: "ignoring unreadable resume state",
            expect_object: Some((DST_BUCKET, "corrupt-state", 300_000)),
            ..Default::default()
        },
        Case {
            name: "state file of another version: warned, started over",
            args: base("obj", "future-state"),
            code: 0,
            needle: "another version",
            expect_object: Some((DST_BUCKET, "future-state", 300_000)),
            ..Default::default()
        },
        Case {
            name: "state dir is a file",
            args: with(
                set(ok(), "--state-dir", &p(&a_file)),
                &["--part-size", "100KiB"],
            ),
            code: 1,
            needle: "a-file",
            ..Default::default()
        },
        Case {
            name: "state dir under a file",
            args: with(
                set(ok(), "--state-dir", &p(&a_file.join("st"))),
                &["--part-size", "100KiB"],
            ),
            code: 1,
            needle: "a-file",
            ..Default::default()
        },
        Case {
            name: "state dir not writable",
            args: with(
                set(ok(), "--state-dir", "/sys/ossrelay-state"),
                &["--part-size", "100KiB"],
            ),
            code: 1,
            needle: "/sys/ossrelay-state",
            ..Default::default()
        },
        // --- hostile or broken servers ---
        Case {
            name: "error body with truncated XML",
            args: set(ok(), "--src-endpoint", &bad_xml),
            code: 1,
            needle: "403",
            ..Default::default()
        },
        Case {
            name: "HEAD without Content-Length",
            args: set(ok(), "--src-endpoint", &no_headers),
            code: 1,
            needle: "content-length",
            ..Default::default()
        },
        Case {
            name: "GET shorter than its Content-Length",
            args: set(ok(), "--src-endpoint", &short_body),
            code: 1,
            needle: "obj",
            ..Default::default()
        },
        Case {
            name: "server not speaking HTTP",
            args: set(ok(), "--src-endpoint", &not_http),
            code: 1,
            needle: "127.0.0.1",
            ..Default::default()
        },
        Case {
            name: "destination answering HTML",
            args: set(ok(), "--dst-endpoint", &html_ok),
            code: 1,
            needle: "x",
            ..Default::default()
        },
    ];
    assert!(cases.len() >= 60, "{} cases", cases.len());

    // Rows that hit retry backoff (unreachable endpoints, garbage servers) mostly sleep: run
    // several at once so the table stays fast on two cores. Rows copy the same pair, which
    // one state directory lets only one run at a time: each row gets a copy of the shared
    // one (holding the prepared state files).
    let shared = w.state_dir();
    let runs = futures::stream::iter(cases.into_iter().enumerate().map(|(row, mut case)| {
        if let Some(i) = case.args.iter().position(|a| a == "--state-dir") {
            if Path::new(&case.args[i + 1]) == shared {
                let own = w.dir.path().join(format!("state-row-{row}"));
                std::fs::create_dir_all(&own).unwrap();
                for e in std::fs::read_dir(&shared).unwrap() {
                    let e = e.unwrap();
                    std::fs::copy(e.path(), own.join(e.file_name())).unwrap();
                }
                case.args[i + 1] = own.display().to_string();
            }
        }
        let mut cmd = w.command(&case.args);
        for (k, v) in &case.env {
            cmd.env(k, v);
        }
        if let Some(limit) = case.fsize_limit {
            // SAFETY: setrlimit is async-signal-safe and touches only the child.
            unsafe {
                cmd.pre_exec(move || {
                    let l = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        async move {
            let t0 = std::time::Instant::now();
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap();
            (case, out, t0.elapsed())
        }
    }))
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await;
    let mut failures = Vec::new();
    for (case, out, took) in &runs {
        eprintln!("{:>6} ms  {}", took.as_millis(), case.name);
        if let Err(e) = check(&w, case, out) {
            failures.push(format!("[{}] {e}", case.name));
        }
        if *took > Duration::from_secs(90) {
            failures.push(format!(
                "[{}] took {took:?}: a bad input must fail fast",
                case.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing rows:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    // Nothing was left behind by any failed attempt.
    assert_eq!(w.dst.stats()["open_uploads"].as_u64(), Some(0));
}

/// Source-side flags of `copy_args` (endpoint, region, profile, state dir).
fn src_side_args(w: &World) -> Vec<String> {
    s(&[
        "--src-endpoint",
        &w.src.endpoint(),
        "--src-region",
        SRC_REGION,
        "--src-profile",
        "src",
        "--state-dir",
        &w.state_dir().display().to_string(),
        "--quiet",
    ])
}

/// Points the destination side at the source simulator with the source's credentials.
fn dst_side_src(w: &World, args: Vec<String>) -> Vec<String> {
    let a = set(args, "--dst-endpoint", &w.src.endpoint());
    let a = set(a, "--dst-region", SRC_REGION);
    set(a, "--dst-profile", "src")
}

/// One row's verdict, as text (so every failing row is reported, not just the first).
fn check(w: &World, case: &Case, out: &std::process::Output) -> Result<(), String> {
    let err = stderr(out);
    if err.contains("panicked") || err.contains("RUST_BACKTRACE") || err.contains("Error: ") {
        return Err(format!("panic or debug dump: {err}"));
    }
    if err.contains("SECRET-do-not-leak") {
        return Err(format!("secret leaked: {err}"));
    }
    if out.status.code() != Some(case.code) {
        return Err(format!(
            "exit {:?}, want {}; stderr: {err}",
            out.status.code(),
            case.code
        ));
    }
    if case.code == 0 {
        if !err.contains(case.needle) {
            return Err(format!("stderr should mention {:?}: {err}", case.needle));
        }
        if let Some((b, k, size)) = case.expect_object {
            let got = w.dst.object_crc64(b, k).map(|(len, _)| len);
            if got != Some(size) {
                return Err(format!("{b}/{k}: size {got:?}, want {size}"));
            }
        }
        return Ok(());
    }
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    if lines.len() != 1 {
        return Err(format!("want one error line, got: {err}"));
    }
    if !lines[0]
        .to_lowercase()
        .contains(&case.needle.to_lowercase())
    {
        return Err(format!(
            "error line should mention {:?}: {}",
            case.needle, lines[0]
        ));
    }
    // Anything else on stderr is clap's "For more information" hint or a log line, never a
    // second copy of the error.
    for l in err.lines().filter(|l| !l.starts_with("error")) {
        if !(l.is_empty()
            || l.starts_with("For more information")
            || l.contains("WARN")
            || l.starts_with("  ")
            || l.starts_with("Usage:")
            || l.starts_with("  tip:"))
        {
            return Err(format!("unexpected stderr line {l:?} in: {err}"));
        }
    }
    Ok(())
}

/// (name, method, path, body, status, blamed field or "").
type ApiCase = (
    &'static str,
    &'static str,
    String,
    Option<String>,
    u16,
    &'static str,
);

/// The daemon API's share of the table (the cases tests/daemon_api.rs already runs — invalid
/// JSON, unknown kind and fields, oversize bodies, unknown ids, traversal — are not repeated):
/// each request is refused with its status, a named field where one is to blame, a readable
/// message, and the daemon stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_api_bad_inputs() {
    let w = World::new(|_| {}, |_| {}).await;
    let d = daemon_support::start_daemon(w.dir.path(), &w.state_dir(), &[]).await;
    let good = daemon_support::copy_job(&w, "x.raw", DST_BUCKET, "x.raw");
    let with = |k: &str, v: serde_json::Value| {
        let mut b = good.clone();
        b[k] = v;
        b.to_string()
    };
    let without = |k: &str| {
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove(k);
        b.to_string()
    };
    // (name, method, path, body, status, field or "" when no single field is to blame)
    let cases: Vec<ApiCase> = vec![
        (
            "empty body",
            "POST",
            "/v1/jobs".into(),
            Some(String::new()),
            400,
            "",
        ),
        (
            "JSON null",
            "POST",
            "/v1/jobs".into(),
            Some("null".into()),
            400,
            "",
        ),
        (
            "JSON string",
            "POST",
            "/v1/jobs".into(),
            Some("\"copy\"".into()),
            400,
            "",
        ),
        (
            "trailing garbage",
            "POST",
            "/v1/jobs".into(),
            Some(format!("{good} {{")),
            400,
            "",
        ),
        (
            "missing source",
            "POST",
            "/v1/jobs".into(),
            Some(without("source")),
            400,
            "source",
        ),
        (
            "missing destination",
            "POST",
            "/v1/jobs".into(),
            Some(without("destination")),
            400,
            "destination",
        ),
        (
            "source not a string",
            "POST",
            "/v1/jobs".into(),
            Some(with("source", json!(5))),
            400,
            "source",
        ),
        (
            "source empty key",
            "POST",
            "/v1/jobs".into(),
            Some(with("source", json!(format!("oss://{SRC_BUCKET}/")))),
            400,
            "source",
        ),
        (
            "destination bad bucket",
            "POST",
            "/v1/jobs".into(),
            Some(with("destination", json!("oss://Bad_Bucket/k"))),
            400,
            "destination",
        ),
        (
            "concurrency 0",
            "POST",
            "/v1/jobs".into(),
            Some(with("concurrency", json!(0))),
            400,
            "concurrency",
        ),
        (
            "concurrency 1e30",
            "POST",
            "/v1/jobs".into(),
            Some(with("concurrency", json!(1e30))),
            400,
            "concurrency",
        ),
        (
            "part_size 6GiB",
            "POST",
            "/v1/jobs".into(),
            Some(with("part_size", json!("6GiB"))),
            400,
            "part_size",
        ),
        (
            "memory absurd",
            "POST",
            "/v1/jobs".into(),
            Some(with("memory", json!("100TiB"))),
            400,
            "memory",
        ),
        (
            "src_profile not a string",
            "POST",
            "/v1/jobs".into(),
            Some(with("src_profile", json!({"a": 1}))),
            400,
            "src_profile",
        ),
        (
            "id with a NUL",
            "GET",
            "/v1/jobs/j-%00".into(),
            None,
            404,
            "",
        ),
        (
            "id of 5000 chars",
            "GET",
            format!("/v1/jobs/j-{}", "a".repeat(5000)),
            None,
            404,
            "",
        ),
        (
            "id with unicode",
            "DELETE",
            "/v1/jobs/j-%E2%80%AE0123".into(),
            None,
            404,
            "",
        ),
    ];
    let mut failures = Vec::new();
    for (name, method, path, body, status, field) in &cases {
        let (s, text) = d.call_raw(method, path, "", body.as_deref()).await;
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        let msg = v["error"]["message"].as_str().unwrap_or("");
        let ok = s == *status
            && (field.is_empty() || v["error"]["field"] == *field)
            && (*status == 404 || msg.len() > 5)
            && !msg.contains('\n');
        if !ok {
            failures.push(format!(
                "[{name}] {method} {}: {s} {text}",
                &path[..path.len().min(60)]
            ));
        }
    }
    // Still alive and serving.
    let (s, _) = d.call("GET", "/v1/jobs", None).await;
    assert_eq!(s, 200);
    assert!(
        failures.is_empty(),
        "{} failing rows:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
