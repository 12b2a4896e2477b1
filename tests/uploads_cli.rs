//! `ossrelay uploads list|abort|protect` as a user runs them: the real binary, credentials from
//! the environment, against an in-process simulator.

use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use ossrelay::credentials::{Credentials, StaticProvider};
use ossrelay::oss::xml::XmlElement;
use ossrelay::oss::{
    EndpointSpec, LifecycleAction, LifecycleConfiguration, LifecycleRule, OssBucket, OssClient,
    OssConfig,
};
use ossrelay::store::PutOptions;
use ossrelay_sim::{self as sim, SimAccount, SimBucket, SimConfig, SimServer};

const AK: &str = "LTAIuploadsAccessKey";
const SK: &str = "uploads-SECRET-never-printed";
const BUCKET: &str = "images-fra";

async fn start() -> SimServer {
    sim::start(SimConfig {
        accounts: vec![SimAccount {
            name: "1000000000000001".into(),
            access_key_id: AK.into(),
            access_key_secret: SK.into(),
        }],
        buckets: vec![SimBucket {
            name: BUCKET.into(),
            account: "1000000000000001".into(),
        }],
        remote_buckets: vec![("images-bj".into(), "cn-beijing".into())],
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts")
}

fn bucket(s: &SimServer) -> OssBucket {
    OssClient::new(OssConfig::new(
        EndpointSpec::Url(s.endpoint()),
        s.region(),
        Arc::new(StaticProvider(Credentials::new(AK, SK))),
    ))
    .unwrap()
    .bucket(BUCKET)
}

async fn initiate(b: &OssBucket, keys: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for k in keys {
        ids.push(
            b.initiate_multipart_upload(k, &PutOptions::default())
                .await
                .unwrap(),
        );
    }
    ids
}

/// Runs `ossrelay uploads ARGS --endpoint <sim>` with only the environment credentials.
async fn uploads(s: &SimServer, secret: &str, args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ossrelay"));
    cmd.arg("uploads")
        .args(args)
        .args(["--endpoint", &s.endpoint(), "--region", s.region()])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", AK)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", secret)
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run ossrelay"))
        .await
        .unwrap();
    drop(home);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains(SK), "secret leaked: {all}");
    assert!(!all.contains("panicked"), "{all}");
    assert!(
        !all.contains('\x1b'),
        "terminal colour codes in piped output: {all:?}"
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
}

/// Exit `code` with exactly one `error:` line on stderr that mentions `needle`.
fn assert_one_line_error(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(
        lines[0].contains(needle),
        "{:?} should mention {needle:?}",
        lines[0]
    );
}

async fn open_ids(b: &OssBucket, prefix: &str) -> Vec<String> {
    let mut ids: Vec<String> = b
        .list_multipart_uploads(Some(prefix))
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.upload_id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_abort_stay_inside_the_prefix() {
    let s = start().await;
    let b = bucket(&s);
    let ours = initiate(&b, &["exports/a.raw", "exports/a.raw", "exports/sub/b.vhd"]).await;
    let theirs = initiate(&b, &["exportsX/c.raw", "other/d.raw"]).await;

    let out = uploads(&s, SK, &["list", &format!("oss://{BUCKET}/exports/")]).await;
    assert_ok(&out);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 3, "{text}");
    for id in &ours {
        assert_eq!(text.matches(id.as_str()).count(), 1, "{id} in {text}");
    }
    for id in &theirs {
        assert!(!text.contains(id.as_str()), "{id} listed: {text}");
    }
    assert!(
        text.contains(&format!("oss://{BUCKET}/exports/sub/b.vhd")),
        "{text}"
    );
    assert!(
        stderr(&out).contains("3 open multipart upload(s)"),
        "{}",
        stderr(&out)
    );

    let out = uploads(
        &s,
        SK,
        &["list", &format!("oss://{BUCKET}/exports/"), "--json"],
    )
    .await;
    assert_ok(&out);
    let mut listed: Vec<String> = Vec::new();
    for line in stdout(&out).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let obj = v.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["bucket", "initiated", "key", "upload_id"]);
        assert_eq!(v["bucket"], BUCKET);
        assert!(v["key"].as_str().unwrap().starts_with("exports/"));
        chrono::DateTime::parse_from_rfc3339(v["initiated"].as_str().unwrap()).unwrap();
        listed.push(v["upload_id"].as_str().unwrap().to_string());
    }
    listed.sort();
    let mut want = ours.clone();
    want.sort();
    assert_eq!(listed, want);

    // The whole bucket when no prefix is given.
    let out = uploads(&s, SK, &["list", &format!("oss://{BUCKET}")]).await;
    assert_ok(&out);
    assert_eq!(stdout(&out).lines().count(), 5);

    assert_eq!(s.stats()["open_uploads"], 5);
    let out = uploads(
        &s,
        SK,
        &["abort", &format!("oss://{BUCKET}/exports/"), "--yes"],
    )
    .await;
    assert_ok(&out);
    assert_eq!(
        stdout(&out)
            .lines()
            .filter(|l| l.starts_with("aborted "))
            .count(),
        3
    );
    assert!(
        stderr(&out).contains("3 upload(s) aborted"),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.stats()["open_uploads"], 2, "only the prefix was aborted");
    assert!(open_ids(&b, "exports/").await.is_empty());
    let mut rest = open_ids(&b, "").await;
    rest.sort();
    let mut theirs_sorted = theirs.clone();
    theirs_sorted.sort();
    assert_eq!(rest, theirs_sorted);

    // Nothing left: still a success.
    let out = uploads(&s, SK, &["abort", &format!("oss://{BUCKET}/exports/")]).await;
    assert_ok(&out);
    assert!(stderr(&out).contains("0 upload(s) aborted"));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_older_than_uses_the_service_clock() {
    let s = start().await;
    let b = bucket(&s);
    // This host's clock is 30 h ahead of OSS: uploads OSS just started must not look 30 h old.
    s.set_clock_skew(-30 * 3600);
    let early = initiate(&b, &["age/one", "age/two"]).await;
    let out = uploads(
        &s,
        SK,
        &[
            "abort",
            &format!("oss://{BUCKET}/age/"),
            "--older-than",
            "24h",
        ],
    )
    .await;
    assert_ok(&out);
    assert!(
        stderr(&out).contains("0 upload(s) aborted"),
        "{}",
        stderr(&out)
    );
    assert_eq!(open_ids(&b, "age/").await.len(), 2);

    // Clocks agree again: those uploads are now 30 h old, new ones are fresh.
    s.set_clock_skew(0);
    let fresh = initiate(&b, &["age/three", "age/one"]).await;
    let out = uploads(
        &s,
        SK,
        &[
            "abort",
            &format!("oss://{BUCKET}/age/"),
            "--older-than",
            "24h",
            "--yes",
        ],
    )
    .await;
    assert_ok(&out);
    let text = stdout(&out);
    for id in &early {
        assert!(text.contains(id.as_str()), "{id} not aborted: {text}");
    }
    for id in &fresh {
        assert!(!text.contains(id.as_str()), "fresh {id} aborted: {text}");
    }
    let mut want = fresh.clone();
    want.sort();
    assert_eq!(open_ids(&b, "age/").await, want);

    let out = uploads(
        &s,
        SK,
        &[
            "abort",
            &format!("oss://{BUCKET}/age/"),
            "--older-than",
            "soon",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("24h"), "{}", stderr(&out));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protect_merges_a_rule_and_is_idempotent() {
    let s = start().await;
    let b = bucket(&s);
    let existing = LifecycleRule {
        id: Some("expire-logs".into()),
        prefix: Some("logs/".into()),
        status: "Enabled".into(),
        expiration: Some(LifecycleAction::after_days(30)),
        // An element ossrelay does not model must survive the merge untouched.
        other: vec![XmlElement {
            name: "Transition".into(),
            text: String::new(),
            children: vec![
                XmlElement {
                    name: "Days".into(),
                    text: "7".into(),
                    children: vec![],
                },
                XmlElement {
                    name: "StorageClass".into(),
                    text: "IA".into(),
                    children: vec![],
                },
            ],
        }],
        ..Default::default()
    };
    b.put_bucket_lifecycle(&LifecycleConfiguration {
        rules: vec![existing.clone()],
    })
    .await
    .unwrap();

    let target = format!("oss://{BUCKET}/exports/");
    let out = uploads(&s, SK, &["protect", &target, "--days", "3"]).await;
    assert_ok(&out);
    assert!(
        stdout(&out).contains("lifecycle rule added"),
        "{}",
        stdout(&out)
    );
    let cfg = b.get_bucket_lifecycle().await.unwrap().expect("rules");
    assert_eq!(cfg.rules.len(), 2, "{cfg:?}");
    assert_eq!(
        cfg.rules[0], existing,
        "the existing rule is kept as it was"
    );
    let ours = &cfg.rules[1];
    assert_eq!(ours.prefix.as_deref(), Some("exports/"));
    assert_eq!(ours.status, "Enabled");
    assert_eq!(
        ours.abort_multipart_upload.as_ref().and_then(|a| a.days),
        Some(3)
    );
    assert_eq!(ours.expiration, None, "protect never expires objects");

    let puts = s.stats()["requests"]["PutBucketLifecycle"]["200"].as_u64();
    let out = uploads(&s, SK, &["protect", &target, "--days", "3"]).await;
    assert_ok(&out);
    assert!(stdout(&out).contains("nothing changed"), "{}", stdout(&out));
    assert_eq!(b.get_bucket_lifecycle().await.unwrap(), Some(cfg));
    assert_eq!(
        s.stats()["requests"]["PutBucketLifecycle"]["200"].as_u64(),
        puts,
        "no second write"
    );

    // A whole-bucket rule that already aborts sooner covers every prefix.
    let whole = LifecycleRule {
        id: Some("abort-all".into()),
        prefix: Some(String::new()),
        status: "Enabled".into(),
        abort_multipart_upload: Some(LifecycleAction::after_days(1)),
        ..Default::default()
    };
    let seeded = LifecycleConfiguration {
        rules: vec![existing.clone(), whole],
    };
    b.put_bucket_lifecycle(&seeded).await.unwrap();
    let out = uploads(
        &s,
        SK,
        &[
            "protect",
            &format!("oss://{BUCKET}/deep/er/"),
            "--days",
            "3",
        ],
    )
    .await;
    assert_ok(&out);
    assert!(stdout(&out).contains("nothing changed"), "{}", stdout(&out));
    assert_eq!(b.get_bucket_lifecycle().await.unwrap(), Some(seeded));

    let out = uploads(&s, SK, &["protect", &target, "--days", "0"]).await;
    assert_one_line_error(&out, 2, "--days");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_targets_and_credentials_fail_in_one_line() {
    let s = start().await;
    for (args, needle) in [
        // s3:// is a bucket target now; a bad bucket name is still a usage error.
        (vec!["list", "s3://x"], "invalid bucket name \"x\""),
        (vec!["list", "gs://bkt"], "unsupported scheme"),
        (
            vec!["abort", "./exports/disk.raw"],
            "is not a bucket: give oss://BUCKET[/PREFIX] or s3://BUCKET[/PREFIX]",
        ),
        (
            vec!["protect", "/tmp/x", "--days", "3"],
            "is not a bucket: give oss://BUCKET[/PREFIX] or s3://BUCKET[/PREFIX]",
        ),
        (vec!["list", "oss://Bad_Bucket/x"], "bucket"),
    ] {
        let out = uploads(&s, SK, &args).await;
        assert_one_line_error(&out, 2, needle);
    }
    assert!(
        s.stats()["requests"].as_object().unwrap().is_empty(),
        "usage errors send nothing: {}",
        s.stats()
    );

    let out = uploads(&s, "wrong-secret", &["list", &format!("oss://{BUCKET}/")]).await;
    assert_one_line_error(&out, 1, "check the AccessKey secret");
    let out = uploads(&s, SK, &["list", "oss://no-such-bucket/"]).await;
    assert_one_line_error(&out, 1, "no-such-bucket does not exist");
    let out = uploads(&s, SK, &["abort", "oss://images-bj/x/"]).await;
    assert_one_line_error(&out, 1, "is in region cn-beijing; use --region cn-beijing");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_failures_exit_1_and_keep_the_uploads() {
    let s = start().await;
    let b = bucket(&s);
    let ids = initiate(&b, &["broken/a.raw"]).await;
    s.set_fault_ops(Some(vec!["AbortMultipartUpload".into()]));
    s.set_faults(vec![(ossrelay_sim::FaultKind::Error500, 1.0)]);
    let out = uploads(&s, SK, &["abort", &format!("oss://{BUCKET}/broken/")]).await;
    s.set_faults(vec![]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("warning: cannot abort") && l.contains(&ids[0])),
        "{err}"
    );
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("rerun"), "{err}");
    assert_eq!(
        open_ids(&b, "broken/").await,
        ids,
        "the upload is still there"
    );
    assert!(
        s.stats()["requests"]["AbortMultipartUpload"]["500"].as_u64() > Some(1),
        "retried"
    );
    // Rerunning once OSS is healthy finishes the job.
    let out = uploads(&s, SK, &["abort", &format!("oss://{BUCKET}/broken/")]).await;
    assert_ok(&out);
    assert!(open_ids(&b, "broken/").await.is_empty());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_of_several_needs_yes_and_dry_run_aborts_nothing() {
    let s = start().await;
    let b = bucket(&s);
    let mut ids = initiate(&b, &["many/a.raw", "many/b.raw", "many/c.raw"]).await;
    ids.sort();
    let target = format!("oss://{BUCKET}/many/");

    // --dry-run lists all three and aborts none.
    let out = uploads(&s, SK, &["abort", &target, "--dry-run"]).await;
    assert_ok(&out);
    let listed: Vec<String> = stdout(&out)
        .lines()
        .filter(|l| l.starts_with("would abort "))
        .map(str::to_string)
        .collect();
    assert_eq!(listed.len(), 3, "{}", stdout(&out));
    for id in &ids {
        assert!(listed.iter().any(|l| l.contains(id.as_str())), "{listed:?}");
    }
    assert!(
        stderr(&out).contains("3 upload(s) would be aborted"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        open_ids(&b, "many/").await,
        ids,
        "dry run aborted something"
    );
    assert!(
        s.stats()["requests"]["AbortMultipartUpload"].is_null(),
        "{}",
        s.stats()
    );

    // No terminal (stdin is /dev/null) and no --yes: refused with exit 2, one line naming both
    // ways forward, nothing aborted.
    let out = uploads(&s, SK, &["abort", &target]).await;
    assert_one_line_error(&out, 2, "--yes");
    assert!(stderr(&out).contains("--dry-run"), "{}", stderr(&out));
    assert!(stderr(&out).contains("3 uploads"), "{}", stderr(&out));
    assert_eq!(
        open_ids(&b, "many/").await,
        ids,
        "refusal aborted something"
    );

    // A single matching upload needs no confirmation.
    let one = initiate(&b, &["single/x.raw"]).await;
    let out = uploads(&s, SK, &["abort", &format!("oss://{BUCKET}/single/")]).await;
    assert_ok(&out);
    assert!(stdout(&out).contains(one[0].as_str()), "{}", stdout(&out));
    assert!(open_ids(&b, "single/").await.is_empty());

    // --yes aborts them all.
    let out = uploads(&s, SK, &["abort", &target, "-y"]).await;
    assert_ok(&out);
    assert!(
        stderr(&out).contains("3 upload(s) aborted"),
        "{}",
        stderr(&out)
    );
    assert!(open_ids(&b, "many/").await.is_empty());
    s.shutdown().await;
}
