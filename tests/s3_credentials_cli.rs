//! `ossrelay copy`, `uploads` and the daemon on `s3://` as a user runs them: the real binary
//! with a controlled environment (HOME in a temp dir, every variable cleared), against an
//! in-process S3-dialect simulator whose STS and IMDSv2 serve every AWS credential source.
//! Each run copies a small object and checks its bytes, or checks the exact one-line failure,
//! and that no secret (secret key, session token) reaches stdout or stderr.

mod common;
mod daemon_support;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ossrelay::credentials::aws::AwsCredentialOptions;
use ossrelay::credentials::{Credentials, EnvLookup, StaticProvider};
use ossrelay::s3::{Provider, S3Bucket, S3Client, S3Config, S3Lifecycle};
use ossrelay::store::PutOptions;
use ossrelay_sim::{self as sim, Dialect, SimAccount, SimAwsRole, SimBucket, SimConfig, SimServer};

use common::{command_in, stderr, stdout};

const ACCOUNT: &str = "111122223333";
const AK: &str = "AKIAS3CREDCLITEST001";
const SK: &str = "aws-SECRET-do-not-leak-0123456789";
/// A second account the simulator knows, whose keys own no bucket.
const OTHER_ACCOUNT: &str = "444455556666";
const OTHER_AK: &str = "AKIAOTHERCLITEST0002";
const OTHER_SK: &str = "other-SECRET-do-not-leak-98765";
const REGION: &str = "us-west-2";
const BUCKET: &str = "s3cred-bucket";
const FAR_BUCKET: &str = "s3cred-far";
const FAR_REGION: &str = "eu-west-1";
const KEY: &str = "images/small.bin";
const SIZE: usize = 300_001;
const WEB_TOKEN: &str = "web-identity-token-do-not-leak";
const EXTERNAL_ID: &str = "ext-7788";
const SECRETS: [&str; 3] = [SK, OTHER_SK, WEB_TOKEN];

fn data() -> Vec<u8> {
    common::bytes(SIZE, 13)
}

/// An S3 simulator in `REGION` holding `BUCKET/KEY`, with roles `reader` (no external ID) and
/// `guarded` (external ID required), a web identity token and an instance role.
async fn s3_sim(cfg: impl FnOnce(&mut SimConfig)) -> SimServer {
    let mut c = SimConfig {
        region: REGION.into(),
        dialect: Dialect::S3,
        accounts: vec![
            SimAccount {
                name: ACCOUNT.into(),
                access_key_id: AK.into(),
                access_key_secret: SK.into(),
            },
            SimAccount {
                name: OTHER_ACCOUNT.into(),
                access_key_id: OTHER_AK.into(),
                access_key_secret: OTHER_SK.into(),
            },
        ],
        buckets: vec![SimBucket {
            name: BUCKET.into(),
            account: ACCOUNT.into(),
        }],
        remote_buckets: vec![(FAR_BUCKET.into(), FAR_REGION.into())],
        aws_roles: vec![
            SimAwsRole {
                account: ACCOUNT.into(),
                name: "reader".into(),
                external_id: None,
            },
            SimAwsRole {
                account: ACCOUNT.into(),
                name: "guarded".into(),
                external_id: Some(EXTERNAL_ID.into()),
            },
        ],
        web_identity_tokens: vec![WEB_TOKEN.into()],
        imds_role: Some((ACCOUNT.into(), "vm-role".into())),
        ..SimConfig::default()
    };
    cfg(&mut c);
    let s = sim::start(c).await.expect("start the S3 simulator");
    s.put_object_bytes(BUCKET, KEY, Bytes::from(data()));
    s
}

fn sts(s: &SimServer) -> String {
    s.ec2_endpoint().expect("the S3 dialect serves STS")
}

fn role_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

/// Runs the binary in `home` (HOME, AWS files under it) with only `env` set besides PATH,
/// HOME and the isolation of the aliyun side; the instance metadata service is off unless
/// `env` names it. Asserts no secret in the output.
async fn run_in(home: &Path, env: &[(&str, String)], args: Vec<String>) -> Output {
    let mut cmd = command_in(home, &args);
    if !env
        .iter()
        .any(|(k, _)| k.starts_with("AWS_EC2_METADATA_SERVICE"))
    {
        cmd.env("AWS_EC2_METADATA_DISABLED", "true");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run ossrelay"))
        .await
        .unwrap();
    let all = format!("{}{}", stdout(&out), stderr(&out));
    for s in SECRETS {
        assert!(!all.contains(s), "secret leaked: {all}");
    }
    assert!(!all.contains("panicked"), "{all}");
    out
}

/// `copy s3://BUCKET/KEY <home>/out.bin` from the simulator, plus `extra` flags.
fn copy_down(s: &SimServer, home: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "copy".into(),
        format!("s3://{BUCKET}/{KEY}"),
        home.join("out.bin").display().to_string(),
        "--src-endpoint".into(),
        s.endpoint(),
        "--state-dir".into(),
        home.join("state").display().to_string(),
        "--quiet".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn assert_copied(o: &Output, home: &Path) {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    let got = std::fs::read(home.join("out.bin")).expect("the copy wrote the file");
    assert!(got == data(), "the copy differs from the source");
}

/// Exit `code`, exactly one non-empty stderr line, starting `error:` and containing every
/// needle.
fn assert_error(o: &Output, code: i32, needles: &[&str]) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "{:?} should mention {n:?}", lines[0]);
    }
    lines[0].to_string()
}

fn env_keys() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", AK.into()),
        ("AWS_SECRET_ACCESS_KEY", SK.into()),
    ]
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn keys_ini(ak: &str, sk: &str) -> String {
    format!("aws_access_key_id = {ak}\naws_secret_access_key = {sk}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_keys_and_env_session_token() {
    let s = s3_sim(|_| {}).await;
    let home = tempfile::tempdir().unwrap();
    let out = run_in(
        home.path(),
        &env_keys(),
        copy_down(&s, home.path(), &["--src-region", REGION]),
    )
    .await;
    assert_copied(&out, home.path());

    // Temporary keys from the simulator's STS, handed over as AWS_SESSION_TOKEN.
    let token_file = home.path().join("token");
    std::fs::write(&token_file, WEB_TOKEN).unwrap();
    let env = EnvLookup::from_map([
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        ("AWS_ROLE_ARN", role_arn("reader")),
        ("AWS_ENDPOINT_URL_STS", sts(&s)),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]);
    let provider =
        ossrelay::credentials::aws::resolve(None, &AwsCredentialOptions::default(), &env).unwrap();
    let temp = provider.credentials().await.unwrap();
    let token = temp.security_token.clone().expect("a session token");
    assert!(temp.access_key_id.starts_with("ASIA"), "{temp:?}");
    let home2 = tempfile::tempdir().unwrap();
    let session = vec![
        ("AWS_ACCESS_KEY_ID", temp.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY", temp.access_key_secret.clone()),
        ("AWS_SESSION_TOKEN", token.clone()),
        ("AWS_REGION", REGION.to_string()),
    ];
    let out = run_in(home2.path(), &session, copy_down(&s, home2.path(), &[])).await;
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains(&token) && !all.contains(&temp.access_key_secret));
    assert_copied(&out, home2.path());

    // Without the token the temporary key is not accepted: the token really went out.
    let home3 = tempfile::tempdir().unwrap();
    let out = run_in(
        home3.path(),
        &session[..2]
            .iter()
            .cloned()
            .chain([("AWS_REGION", REGION.to_string())])
            .collect::<Vec<_>>(),
        copy_down(&s, home3.path(), &[]),
    )
    .await;
    let line = assert_error(
        &out,
        1,
        &[
            "cannot read s3://s3cred-bucket/images/small.bin",
            "the session token is malformed or invalid; check AWS_SESSION_TOKEN",
            "InvalidToken, HTTP 400",
        ],
    );
    assert!(!line.contains(&temp.access_key_secret), "{line}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_from_the_credentials_file_the_config_file_and_aws_profile() {
    let s = s3_sim(|_| {}).await;

    // --src-profile NAME from AWS_SHARED_CREDENTIALS_FILE (not under ~/.aws).
    let home = tempfile::tempdir().unwrap();
    let creds = home.path().join("elsewhere/creds");
    write(
        &creds,
        &format!(
            "[default]\n{}\n[ops]\n{}",
            keys_ini(OTHER_AK, OTHER_SK),
            keys_ini(AK, SK)
        ),
    );
    let env = vec![
        ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
        // Env keys lose to an explicit profile.
        ("AWS_ACCESS_KEY_ID", OTHER_AK.to_string()),
        ("AWS_SECRET_ACCESS_KEY", OTHER_SK.to_string()),
    ];
    let out = run_in(
        home.path(),
        &env,
        copy_down(
            &s,
            home.path(),
            &["--src-profile", "ops", "--src-region", REGION],
        ),
    )
    .await;
    assert_copied(&out, home.path());

    // --src-profile NAME from AWS_CONFIG_FILE's `[profile NAME]`, with its region.
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("conf/aws-config");
    write(
        &config,
        &format!(
            "[default]\nregion = {FAR_REGION}\n\n[profile cfg]\nregion = {REGION}\n{}",
            keys_ini(AK, SK)
        ),
    );
    let env = vec![("AWS_CONFIG_FILE", config.display().to_string())];
    let out = run_in(
        home.path(),
        &env,
        copy_down(&s, home.path(), &["--src-profile", "cfg"]),
    )
    .await;
    assert_copied(&out, home.path());

    // AWS_PROFILE picks the profile from the default files under HOME (~/.aws).
    let home = tempfile::tempdir().unwrap();
    write(
        &home.path().join(".aws/credentials"),
        &format!(
            "[default]\n{}\n[picked]\n{}",
            keys_ini(OTHER_AK, OTHER_SK),
            keys_ini(AK, SK)
        ),
    );
    write(
        &home.path().join(".aws/config"),
        &format!("[profile picked]\nregion = {REGION}\n"),
    );
    let env = vec![("AWS_PROFILE", "picked".to_string())];
    let out = run_in(home.path(), &env, copy_down(&s, home.path(), &[])).await;
    assert_copied(&out, home.path());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_arn_with_source_profile_via_the_flag_and_via_aws_endpoint_url_sts() {
    let s = s3_sim(|_| {}).await;
    let config = |home: &Path| {
        write(
            &home.join(".aws/credentials"),
            &format!("[base]\n{}", keys_ini(OTHER_AK, OTHER_SK)),
        );
        write(
            &home.join(".aws/config"),
            &format!(
                "[profile plain]\nrole_arn = {}\nsource_profile = base\nregion = {REGION}\n\n\
                 [profile guarded]\nrole_arn = {}\nsource_profile = base\nexternal_id = {EXTERNAL_ID}\n\
                 duration_seconds = 900\nrole_session_name = ossrelay-cli-test\nregion = {REGION}\n\n\
                 [profile no-ext]\nrole_arn = {}\nsource_profile = base\nregion = {REGION}\n\n\
                 [profile too-short]\nrole_arn = {}\nsource_profile = base\nduration_seconds = 60\nregion = {REGION}\n",
                role_arn("reader"),
                role_arn("guarded"),
                role_arn("guarded"),
                role_arn("reader"),
            ),
        );
    };
    let assumed = || common::count(&s.stats(), "AssumeRole", "200");
    // --src-sts-endpoint, a plain role. (The source profile's own keys belong to another
    // account, which may not read the bucket: only the role's credentials can succeed.)
    let home = tempfile::tempdir().unwrap();
    config(home.path());
    let out = run_in(
        home.path(),
        &[],
        copy_down(
            &s,
            home.path(),
            &["--src-profile", "plain", "--src-sts-endpoint", &sts(&s)],
        ),
    )
    .await;
    assert_copied(&out, home.path());
    assert!(assumed() >= 1, "{}", s.stats());

    // AWS_ENDPOINT_URL_STS, a role requiring an external ID and a short session.
    let n = assumed();
    let home = tempfile::tempdir().unwrap();
    config(home.path());
    let env = vec![("AWS_ENDPOINT_URL_STS", sts(&s))];
    let out = run_in(
        home.path(),
        &env,
        copy_down(&s, home.path(), &["--src-profile", "guarded"]),
    )
    .await;
    assert_copied(&out, home.path());
    assert!(assumed() > n, "{}", s.stats());

    // The same role without the external ID: STS refuses, and the message says so.
    let home = tempfile::tempdir().unwrap();
    config(home.path());
    let out = run_in(
        home.path(),
        &env,
        copy_down(&s, home.path(), &["--src-profile", "no-ext"]),
    )
    .await;
    assert_error(
        &out,
        1,
        &[
            "cannot read credentials from STS AssumeRole into arn:aws:iam::111122223333:role/guarded",
            "AccessDenied",
            "ExternalId",
        ],
    );

    // duration_seconds is read from the profile: below STS's 900 s minimum it is refused
    // before any request.
    let out = run_in(
        home.path(),
        &env,
        copy_down(&s, home.path(), &["--src-profile", "too-short"]),
    )
    .await;
    assert_error(
        &out,
        1,
        &[
            "profile \"too-short\"",
            "duration_seconds must be 900 to 43200 seconds, got \"60\"",
        ],
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_identity_and_the_instance_role() {
    let s = s3_sim(|_| {}).await;
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("eks/token");
    write(&token_file, WEB_TOKEN);
    let env = vec![
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        ("AWS_ROLE_ARN", role_arn("reader")),
        ("AWS_ROLE_SESSION_NAME", "eks-pod".to_string()),
        ("AWS_ENDPOINT_URL_STS", sts(&s)),
        ("AWS_REGION", REGION.to_string()),
    ];
    let out = run_in(home.path(), &env, copy_down(&s, home.path(), &[])).await;
    assert_copied(&out, home.path());
    assert!(
        common::count(&s.stats(), "AssumeRoleWithWebIdentity", "200") >= 1,
        "{}",
        s.stats()
    );

    // Nothing but the metadata endpoint (the instance role, IMDSv2).
    let home = tempfile::tempdir().unwrap();
    let env = vec![("AWS_EC2_METADATA_SERVICE_ENDPOINT", s.endpoint())];
    let out = run_in(
        home.path(),
        &env,
        copy_down(&s, home.path(), &["--src-region", REGION]),
    )
    .await;
    assert_copied(&out, home.path());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_flag_is_looked_up_in_the_file_family_of_its_scheme() {
    // oss:// source (aliyun config `prod`) → s3:// destination (AWS credentials `[prod]`).
    let w = common::World::new(
        |c| {
            c.synthetic.push(sim::SyntheticObject {
                bucket: common::SRC_BUCKET.into(),
                key: "disk.raw".into(),
                size: SIZE as u64,
            })
        },
        |_| {},
    )
    .await;
    w.add_profiles([serde_json::json!({
        "name": "prod", "mode": "AK",
        "access_key_id": common::src_account().access_key_id,
        "access_key_secret": common::src_account().access_key_secret,
        "region_id": common::SRC_REGION
    })]);
    let s = s3_sim(|_| {}).await;
    write(
        &w.dir.path().join(".aws/credentials"),
        &format!("[prod]\n{}region = {REGION}\n", keys_ini(AK, SK)),
    );
    let args: Vec<String> = [
        "copy",
        &format!("oss://{}/disk.raw", common::SRC_BUCKET),
        &format!("s3://{BUCKET}/from-oss/disk.raw"),
        "--src-endpoint",
        &w.src.endpoint(),
        "--dst-endpoint",
        &s.endpoint(),
        "--src-profile",
        "prod",
        "--dst-profile",
        "prod",
        "--state-dir",
        &w.state_dir().display().to_string(),
        "--quiet",
    ]
    .map(String::from)
    .to_vec();
    let out = run_in(w.dir.path(), &[], args).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let want = w
        .src
        .get_object_bytes(common::SRC_BUCKET, "disk.raw")
        .unwrap();
    let got = s
        .get_object_bytes(BUCKET, "from-oss/disk.raw")
        .expect("the object arrived");
    assert!(got == want, "the copy differs from the source");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_and_request_errors_are_one_line_without_secrets() {
    let s = s3_sim(|_| {}).await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let region = ["--src-region", REGION];

    // Wrong secret.
    let env = vec![
        ("AWS_ACCESS_KEY_ID", AK.to_string()),
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret".to_string()),
    ];
    let out = run_in(h, &env, copy_down(&s, h, &region)).await;
    let line = assert_error(
        &out,
        1,
        &[
            "cannot read s3://s3cred-bucket/images/small.bin",
            "S3 rejected the request signature; check the secret access key",
            "SignatureDoesNotMatch, HTTP 403",
        ],
    );
    assert!(!line.contains("not-the-secret"), "{line}");

    // Unknown access key.
    let env = vec![
        ("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000".to_string()),
        ("AWS_SECRET_ACCESS_KEY", SK.to_string()),
    ];
    let out = run_in(h, &env, copy_down(&s, h, &region)).await;
    assert_error(
        &out,
        1,
        &[
            "S3 does not know this access key ID",
            "InvalidAccessKeyId, HTTP 403",
        ],
    );

    // Valid keys of an account that does not own the bucket.
    let env = vec![
        ("AWS_ACCESS_KEY_ID", OTHER_AK.to_string()),
        ("AWS_SECRET_ACCESS_KEY", OTHER_SK.to_string()),
    ];
    let out = run_in(h, &env, copy_down(&s, h, &region)).await;
    assert_error(&out, 1, &["AccessDenied, HTTP 403"]);

    // Wrong secret on the destination side: the upload's own request names the cause, and
    // nothing is left behind.
    std::fs::write(h.join("in.bin"), data()).unwrap();
    let bad = vec![
        ("AWS_ACCESS_KEY_ID", AK.to_string()),
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret".to_string()),
    ];
    let up: Vec<String> = [
        "copy",
        &h.join("in.bin").display().to_string(),
        &format!("s3://{BUCKET}/uploaded.bin"),
        "--dst-endpoint",
        &s.endpoint(),
        "--dst-region",
        REGION,
        "--state-dir",
        &h.join("state").display().to_string(),
        "--quiet",
    ]
    .map(String::from)
    .to_vec();
    let out = run_in(h, &bad, up.clone()).await;
    assert_error(
        &out,
        1,
        &[
            "PutObject on s3://s3cred-bucket/uploaded.bin",
            "SignatureDoesNotMatch, HTTP 403",
        ],
    );
    assert!(s.get_object_bytes(BUCKET, "uploaded.bin").is_none());
    assert_eq!(s.stats()["open_uploads"], 0, "{}", s.stats());
    // The same upload with the right keys arrives intact.
    let out = run_in(h, &env_keys(), up).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(s.get_object_bytes(BUCKET, "uploaded.bin").unwrap() == data());

    // No credentials at all: what was tried, and how to configure.
    let out = run_in(h, &[], copy_down(&s, h, &region)).await;
    assert_error(
        &out,
        1,
        &[
            "no AWS credentials found",
            "AWS_ACCESS_KEY_ID",
            "aws configure",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "tried:",
            "imds: disabled by AWS_EC2_METADATA_DISABLED",
        ],
    );

    // An instance without a role: the metadata service answers, but has nothing to give.
    let bare = s3_sim(|c| c.imds_role = None).await;
    let env = vec![("AWS_EC2_METADATA_SERVICE_ENDPOINT", bare.endpoint())];
    let out = run_in(h, &env, copy_down(&bare, h, &region)).await;
    assert_error(
        &out,
        1,
        &[
            "no AWS credentials found",
            "tried: env: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY not set",
            "no IAM role is attached to this instance (HTTP 404); attach an instance profile",
        ],
    );
    bare.shutdown().await;

    // Unknown profile: the available ones are listed.
    write(
        &h.join(".aws/credentials"),
        &format!(
            "[alpha]\n{}\n[beta]\n{}",
            keys_ini(AK, SK),
            keys_ini(AK, SK)
        ),
    );
    let out = run_in(
        h,
        &env_keys(),
        copy_down(&s, h, &["--src-profile", "gamma", "--src-region", REGION]),
    )
    .await;
    assert_error(
        &out,
        1,
        &[
            "profile \"gamma\" not found in ",
            "(available: alpha, beta)",
        ],
    );
    std::fs::remove_dir_all(h.join(".aws")).unwrap();

    // Wrong region: the bucket's region and the flag to use.
    let mut args = copy_down(&s, h, &region);
    args[1] = format!("s3://{FAR_BUCKET}/{KEY}");
    let out = run_in(h, &env_keys(), args).await;
    assert_error(
        &out,
        1,
        &["bucket s3cred-far is in region eu-west-1, not us-west-2; pass --src-region eu-west-1"],
    );

    // Missing bucket, missing key.
    let mut args = copy_down(&s, h, &region);
    args[1] = format!("s3://no-such-bucket-here/{KEY}");
    let out = run_in(h, &env_keys(), args).await;
    // A HEAD's 404 has no body, so bucket and key cannot be told apart here (as with S3).
    assert_error(
        &out,
        1,
        &["s3://no-such-bucket-here/images/small.bin not found"],
    );
    let mut args = copy_down(&s, h, &region);
    args[1] = format!("s3://{BUCKET}/images/missing.bin");
    let out = run_in(h, &env_keys(), args).await;
    assert_error(
        &out,
        1,
        &["s3://s3cred-bucket/images/missing.bin not found"],
    );
    assert!(!h.join("out.bin").exists(), "nothing written on failure");

    // Provider errors, found before any request.
    let up = |provider: &str, endpoint: Option<&str>| {
        let mut a: Vec<String> = vec![
            "copy".into(),
            h.join("in.bin").display().to_string(),
            format!("s3://{BUCKET}/up.bin"),
            "--dst-provider".into(),
            provider.into(),
            "--state-dir".into(),
            h.join("state").display().to_string(),
            "--quiet".into(),
        ];
        if let Some(e) = endpoint {
            a.extend(["--dst-endpoint".into(), e.into()]);
        }
        a
    };
    std::fs::write(h.join("in.bin"), b"tiny").unwrap();
    let out = run_in(h, &env_keys(), up("azure", Some(&s.endpoint()))).await;
    assert_error(
        &out,
        2,
        &["--dst-provider: unknown S3 provider \"azure\": expected one of aws, cos, obs, gcs, minio, r2, oss, other"],
    );
    let out = run_in(h, &env_keys(), up("r2", None)).await;
    assert_error(
        &out,
        1,
        &[
            "destination s3://s3cred-bucket/up.bin",
            "provider r2 needs an explicit endpoint: pass --dst-endpoint https://",
        ],
    );
    s.shutdown().await;
}

fn s3_bucket(s: &SimServer) -> S3Bucket {
    let mut cfg = S3Config::new(
        Provider::Aws,
        REGION,
        Some(s.endpoint()),
        Arc::new(StaticProvider(Credentials::new(AK, SK))),
    );
    cfg.path_style = Some(true);
    S3Client::new(cfg).unwrap().bucket(BUCKET)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_list_abort_and_protect_on_s3() {
    let s = s3_sim(|_| {}).await;
    let b = s3_bucket(&s);
    let mut ours = Vec::new();
    for k in ["exports/a.raw", "exports/sub/b.raw"] {
        ours.push(
            b.create_multipart_upload(k, &PutOptions::default())
                .await
                .unwrap(),
        );
    }
    let theirs = b
        .create_multipart_upload("exportsX/c.raw", &PutOptions::default())
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let uploads = |args: &[&str]| {
        let mut a: Vec<String> = vec!["uploads".into()];
        a.extend(args.iter().map(|s| s.to_string()));
        a.extend(["--endpoint".into(), s.endpoint()]);
        a
    };
    let env: Vec<(&str, String)> = env_keys()
        .into_iter()
        .chain([("AWS_DEFAULT_REGION", REGION.to_string())])
        .collect();
    let target = format!("s3://{BUCKET}/exports/");

    let out = run_in(home.path(), &env, uploads(&["list", &target])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 2, "{text}");
    for id in &ours {
        assert_eq!(text.matches(id.as_str()).count(), 1, "{id} in {text}");
    }
    assert!(!text.contains(theirs.as_str()), "{text}");
    assert!(
        text.contains(&format!("s3://{BUCKET}/exports/sub/b.raw")),
        "{text}"
    );

    let out = run_in(home.path(), &env, uploads(&["list", &target, "--json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for line in stdout(&out).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["bucket"], BUCKET, "{v}");
        assert!(v["key"].as_str().unwrap().starts_with("exports/"), "{v}");
    }

    let out = run_in(home.path(), &env, uploads(&["abort", &target, "--yes"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out)
            .lines()
            .filter(|l| l.starts_with("aborted "))
            .count(),
        2,
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("2 upload(s) aborted"),
        "{}",
        stderr(&out)
    );
    let left: Vec<String> = b
        .list_multipart_uploads(None)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.upload_id)
        .collect();
    assert_eq!(left, vec![theirs.clone()], "only the prefix was aborted");

    // Wrong secret: one line, exit 1.
    let bad = vec![
        ("AWS_ACCESS_KEY_ID", AK.to_string()),
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret".to_string()),
        ("AWS_DEFAULT_REGION", REGION.to_string()),
    ];
    let out = run_in(home.path(), &bad, uploads(&["list", &target])).await;
    assert_error(&out, 1, &["SignatureDoesNotMatch"]);

    // --profile (a role assumed through --sts-endpoint) and --region on uploads.
    let home = tempfile::tempdir().unwrap();
    write(
        &home.path().join(".aws/credentials"),
        &format!("[base]\n{}", keys_ini(OTHER_AK, OTHER_SK)),
    );
    write(
        &home.path().join(".aws/config"),
        &format!(
            "[profile ops]\nrole_arn = {}\nsource_profile = base\n",
            role_arn("reader")
        ),
    );
    let n = common::count(&s.stats(), "AssumeRole", "200");
    let all = format!("s3://{BUCKET}");
    let out = run_in(
        home.path(),
        &[],
        uploads(&[
            "list",
            &all,
            "--profile",
            "ops",
            "--sts-endpoint",
            &sts(&s),
            "--region",
            REGION,
        ]),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains(theirs.as_str()), "{}", stdout(&out));
    assert!(common::count(&s.stats(), "AssumeRole", "200") > n);

    // A bucket in another region: the hint names uploads' own flag.
    let out = run_in(
        home.path(),
        &env,
        uploads(&["list", &format!("s3://{FAR_BUCKET}/x/")]),
    )
    .await;
    assert_error(
        &out,
        1,
        &["bucket s3cred-far is in region eu-west-1, not us-west-2; pass --region eu-west-1"],
    );
    s.shutdown().await;
}

/// A lifecycle rule nobody at ossrelay wrote: a tag filter, an expiration and a transition.
const FOREIGN_RULE: &str = "<Rule><ID>expire-logs</ID><Filter><And><Prefix>logs/</Prefix><Tag><Key>team</Key><Value>ops</Value></Tag></And></Filter><Status>Enabled</Status><Transition><Days>30</Days><StorageClass>GLACIER</StorageClass></Transition><Expiration><Days>365</Days></Expiration></Rule>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_protect_on_s3_merges_one_rule_and_keeps_foreign_ones() {
    let s = s3_sim(|_| {}).await;
    let b = s3_bucket(&s);
    let home = tempfile::tempdir().unwrap();
    let env: Vec<(&str, String)> = env_keys()
        .into_iter()
        .chain([("AWS_DEFAULT_REGION", REGION.to_string())])
        .collect();
    let protect = |extra: &[&str]| {
        let mut a: Vec<String> = ["uploads", "protect", &format!("s3://{BUCKET}/exports/")]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend(["--endpoint".into(), s.endpoint()]);
        a
    };
    let puts = |s: &SimServer| common::count(&s.stats(), "PutBucketLifecycleConfiguration", "200");

    // No configuration yet: the dry run says what it would do and writes nothing.
    assert_eq!(b.get_lifecycle().await.unwrap(), None);
    let out = run_in(home.path(), &env, protect(&["--days", "3", "--dry-run"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("would add lifecycle rule"),
        "{}",
        stdout(&out)
    );
    assert_eq!(b.get_lifecycle().await.unwrap(), None, "dry run wrote");
    assert_eq!(puts(&s), 0);

    // A foreign rule is already there.
    let foreign = S3Lifecycle::parse(
        format!("<LifecycleConfiguration>{FOREIGN_RULE}</LifecycleConfiguration>").as_bytes(),
    )
    .unwrap();
    b.put_lifecycle(&foreign).await.unwrap();
    let out = run_in(home.path(), &env, protect(&["--days", "3", "--dry-run"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(b.get_lifecycle().await.unwrap().as_ref(), Some(&foreign));
    assert_eq!(puts(&s), 1, "only the seeding PUT");

    let out = run_in(home.path(), &env, protect(&["--days", "3"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("lifecycle rule added: incomplete multipart uploads under s3://{BUCKET}/exports/ are aborted after 3 day(s)")), "{}", stdout(&out));
    let cfg = b.get_lifecycle().await.unwrap().expect("rules");
    assert_eq!(cfg.rules.len(), 2, "{cfg:?}");
    assert_eq!(
        cfg.rules[0], foreign.rules[0],
        "the foreign rule is untouched"
    );
    let mut ours = String::new();
    cfg.rules[1].write(&mut ours);
    assert_eq!(ours, "<Rule><ID>ossrelay-abort-incomplete-exports/</ID><Filter><Prefix>exports/</Prefix></Filter><Status>Enabled</Status><AbortIncompleteMultipartUpload><DaysAfterInitiation>3</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule>");

    // Twice: one rule, no second write.
    let out = run_in(home.path(), &env, protect(&["--days", "3"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("nothing changed"), "{}", stdout(&out));
    assert_eq!(b.get_lifecycle().await.unwrap(), Some(cfg.clone()));
    assert_eq!(puts(&s), 2);

    // Uploads are still listed (and not expired: they are fresh).
    let id = b
        .create_multipart_upload("exports/a.raw", &PutOptions::default())
        .await
        .unwrap();
    let listed = b.list_multipart_uploads(Some("exports/")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].upload_id, id);

    // Wrong secret: one line, exit 1, nothing written.
    let bad = vec![
        ("AWS_ACCESS_KEY_ID", AK.to_string()),
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret".to_string()),
        ("AWS_DEFAULT_REGION", REGION.to_string()),
    ];
    let out = run_in(home.path(), &bad, protect(&["--days", "1"])).await;
    assert_error(&out, 1, &["SignatureDoesNotMatch"]);
    assert_eq!(b.get_lifecycle().await.unwrap(), Some(cfg));
    let out = run_in(home.path(), &env, protect(&["--days", "0"])).await;
    assert_error(&out, 2, &["--days"]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_interrupted_by_kill_leaves_an_upload_that_uploads_abort_removes() {
    const BIG: u64 = 64 * 1024 * 1024;
    let s = s3_sim(|c| {
        c.synthetic.push(sim::SyntheticObject {
            bucket: BUCKET.into(),
            key: "big.raw".into(),
            size: BIG,
        });
        c.conn_rate = Some(4 * 1024 * 1024);
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let args: Vec<String> = [
        "copy",
        &format!("s3://{BUCKET}/big.raw"),
        &format!("s3://{BUCKET}/copies/big.raw"),
        "--src-endpoint",
        &s.endpoint(),
        "--dst-endpoint",
        &s.endpoint(),
        "--src-region",
        REGION,
        "--dst-region",
        REGION,
        "--part-size",
        "8MiB",
        "--state-dir",
        &h.join("state").display().to_string(),
        "--quiet",
    ]
    .map(String::from)
    .to_vec();
    let mut cmd = command_in(h, &args);
    cmd.env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in env_keys() {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let t0 = std::time::Instant::now();
    while s.stats()["open_uploads"].as_u64().unwrap_or(0) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(30), "no upload started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();

    let env: Vec<(&str, String)> = env_keys()
        .into_iter()
        .chain([("AWS_REGION", REGION.to_string())])
        .collect();
    let ep = s.endpoint();
    let target = format!("s3://{BUCKET}/copies/");
    let list = vec![
        "uploads".into(),
        "list".into(),
        target.clone(),
        "--endpoint".into(),
        ep.clone(),
    ];
    let out = run_in(h, &env, list.clone()).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains("copies/big.raw"), "{}", stdout(&out));
    let abort = vec![
        "uploads".into(),
        "abort".into(),
        target,
        "--yes".into(),
        "--endpoint".into(),
        ep,
    ];
    let out = run_in(h, &env, abort).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 upload(s) aborted"),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.stats()["open_uploads"], 0);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_jobs_copy_s3_to_oss_with_env_keys_and_with_a_role_profile() {
    let w = common::World::new(|_| {}, |_| {}).await;
    let s = s3_sim(|_| {}).await;
    let (d, _) = daemon_support::start_daemon_with(w.dir.path(), &w.state_dir(), &[], |c| {
        c.env("AWS_EC2_METADATA_DISABLED", "true");
        for (k, v) in env_keys() {
            c.env(k, v);
        }
    })
    .await;
    let body = serde_json::json!({
        "kind": "copy",
        "source": format!("s3://{BUCKET}/{KEY}"),
        "destination": format!("oss://{}/from-s3/small.bin", common::DST_BUCKET),
        "src_endpoint": s.endpoint(),
        "src_region": REGION,
        "dst_endpoint": w.dst.endpoint(),
        "dst_region": common::DST_REGION,
        "dst_profile": "dst",
    });
    let job = d.submit(&body).await;
    let id = job["id"].as_str().unwrap().to_string();
    let done = d
        .wait_job(&id, Duration::from_secs(60), |j| {
            ["succeeded", "failed", "cancelled"].contains(&j["state"].as_str().unwrap_or(""))
        })
        .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(!done.to_string().contains(SK), "secret in the job: {done}");
    let got = w
        .dst
        .get_object_bytes(common::DST_BUCKET, "from-s3/small.bin")
        .expect("the object arrived");
    assert!(got == data(), "the copy differs from the source");

    // A second job: the s3:// side's profile (a role) and STS endpoint from the job JSON,
    // looked up in the daemon's ~/.aws.
    write(
        &w.dir.path().join(".aws/credentials"),
        &format!("[base]\n{}", keys_ini(OTHER_AK, OTHER_SK)),
    );
    write(
        &w.dir.path().join(".aws/config"),
        &format!(
            "[profile jobrole]\nrole_arn = {}\nsource_profile = base\n",
            role_arn("reader")
        ),
    );
    let mut body = body;
    body["destination"] = serde_json::json!(format!("oss://{}/role/small.bin", common::DST_BUCKET));
    body["src_profile"] = serde_json::json!("jobrole");
    body["src_sts_endpoint"] = serde_json::json!(sts(&s));
    let n = common::count(&s.stats(), "AssumeRole", "200");
    let job = d.submit(&body).await;
    let id = job["id"].as_str().unwrap().to_string();
    let done = d
        .wait_job(&id, Duration::from_secs(60), |j| {
            ["succeeded", "failed", "cancelled"].contains(&j["state"].as_str().unwrap_or(""))
        })
        .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(common::count(&s.stats(), "AssumeRole", "200") > n);
    let got = w
        .dst
        .get_object_bytes(common::DST_BUCKET, "role/small.bin")
        .expect("the object arrived");
    assert!(got == data(), "the copy differs from the source");
    s.shutdown().await;
}
