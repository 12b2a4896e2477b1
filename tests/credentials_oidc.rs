//! RRSA / OIDC credentials against the simulator's STS: the default chain picks them up from
//! `ALIBABA_CLOUD_ROLE_ARN` / `_OIDC_PROVIDER_ARN` / `_OIDC_TOKEN_FILE`, the unsigned
//! AssumeRoleWithOIDC call is verified by the simulator (provider, issuer, audience, expiry,
//! trust), the credentials work on OSS, and they are refreshed (with the token file re-read)
//! before they expire.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ossrelay::credentials::chain::default_chain_with;
use ossrelay::credentials::oidc::OidcProvider;
use ossrelay::credentials::{CredentialsProvider, EnvLookup};
use ossrelay::oss::{EndpointSpec, OssClient, OssConfig};
use ossrelay::proxy::ProxyConfig;
use ossrelay_sim::{
    self as sim, SimAccount, SimBucket, SimConfig, SimOidcProvider, SimRole, SimServer,
};

const ACCOUNT: &str = "1000000000000001";
const BUCKET: &str = "pods-data";
const ISSUER: &str = "https://oidc-ack-cn-hangzhou.oss-cn-hangzhou.aliyuncs.com/c1234";
const PROVIDER: &str = "acs:ram::1000000000000001:oidc-provider/ack-rrsa-c1234";
const ROLE: &str = "acs:ram::1000000000000001:role/pod-app";
const UNTRUSTING_ROLE: &str = "acs:ram::1000000000000001:role/other-app";

async fn start(sts_ttl: Option<Duration>) -> SimServer {
    sim::start(SimConfig {
        accounts: vec![SimAccount {
            name: ACCOUNT.into(),
            access_key_id: "LTAIowner".into(),
            access_key_secret: "owner-secret".into(),
        }],
        buckets: vec![SimBucket {
            name: BUCKET.into(),
            account: ACCOUNT.into(),
        }],
        oidc_providers: vec![SimOidcProvider {
            account: ACCOUNT.into(),
            name: "ack-rrsa-c1234".into(),
            issuer_url: ISSUER.into(),
            client_ids: vec!["sts.aliyuncs.com".into()],
        }],
        roles: vec![
            SimRole {
                account: ACCOUNT.into(),
                name: "pod-app".into(),
                trusted: "oidc:ack-rrsa-c1234".into(),
            },
            SimRole {
                account: ACCOUNT.into(),
                name: "other-app".into(),
                trusted: "2000000000000002".into(),
            },
        ],
        sts_ttl,
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts")
}

/// A JWT as a projected service-account token looks (the simulator does not check signatures).
fn jwt(iss: &str, aud: &str, exp_in: i64, sub: &str) -> String {
    let b = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({
        "iss": iss, "aud": [aud], "sub": sub, "iat": now, "exp": now + exp_in,
    });
    format!(
        "{}.{}.{}",
        b(r#"{"alg":"RS256","kid":"k1"}"#),
        b(&claims.to_string()),
        b("signature-bytes")
    )
}

fn good_jwt(sub: &str) -> String {
    jwt(ISSUER, "sts.aliyuncs.com", 3600, sub)
}

/// The pod's environment as the RRSA webhook sets it, pointing STS at the simulator; nothing
/// else (no AccessKey, no profile files, no metadata service).
fn env(s: &SimServer, dir: &Path, role: &str, provider: &str) -> EnvLookup {
    let token = dir.join("token").to_str().unwrap().to_string();
    EnvLookup::from_map([
        ("ALIBABA_CLOUD_ROLE_ARN", role.to_string()),
        ("ALIBABA_CLOUD_OIDC_PROVIDER_ARN", provider.to_string()),
        ("ALIBABA_CLOUD_OIDC_TOKEN_FILE", token),
        ("ALIBABA_CLOUD_STS_ENDPOINT", s.endpoint()),
        ("ALIBABA_CLOUD_ROLE_SESSION_NAME", "pod-app-7f9c".into()),
        (
            "ALIBABA_CLOUD_CONFIG_FILE",
            dir.join("none.json").to_str().unwrap().into(),
        ),
        (
            "ALIBABA_CLOUD_CREDENTIALS_FILE",
            dir.join("none.ini").to_str().unwrap().into(),
        ),
        ("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true".into()),
    ])
}

fn oidc_calls(s: &SimServer) -> u64 {
    s.stats()["requests"]["AssumeRoleWithOIDC"]["200"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_uses_oidc_credentials_on_oss_and_refreshes_them() {
    // Three-second credentials: the cache refreshes when a third of their life is left.
    let s = start(Some(Duration::from_secs(3))).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("token"),
        good_jwt("system:serviceaccount:ns:a"),
    )
    .unwrap();
    let chain = default_chain_with(env(&s, dir.path(), ROLE, PROVIDER));

    let first = chain.credentials().await.unwrap();
    assert_eq!(chain.name(), "oidc");
    assert!(first.access_key_id.starts_with("STS."), "{first:?}");
    assert!(first.security_token.is_some() && first.expiration.is_some());
    assert_eq!(oidc_calls(&s), 1);

    // The simulator's OSS accepts them for the role's account.
    let mut cfg = OssConfig::new(EndpointSpec::Url(s.endpoint()), s.region(), chain.clone());
    cfg.proxy = ProxyConfig::none();
    let bucket = OssClient::new(cfg).unwrap().bucket(BUCKET);
    bucket
        .list_multipart_uploads(None)
        .await
        .expect("OIDC credentials accepted by OSS");

    // The kubelet rotates the token; the next AssumeRoleWithOIDC must send the new one.
    std::fs::write(
        dir.path().join("token"),
        good_jwt("system:serviceaccount:ns:b"),
    )
    .unwrap();
    // Still fresh: served from the cache, no new STS call.
    assert_eq!(chain.credentials().await.unwrap(), first);
    assert_eq!(oidc_calls(&s), 1);

    tokio::time::sleep(Duration::from_millis(2300)).await;
    let second = chain.credentials().await.unwrap();
    assert_ne!(second.access_key_id, first.access_key_id, "not refreshed");
    assert_eq!(oidc_calls(&s), 2);
    bucket
        .list_multipart_uploads(None)
        .await
        .expect("refreshed credentials accepted by OSS");

    // A token that expired meanwhile shows at the next refresh as a clear error.
    std::fs::write(
        dir.path().join("token"),
        jwt(
            ISSUER,
            "sts.aliyuncs.com",
            -60,
            "system:serviceaccount:ns:b",
        ),
    )
    .unwrap();
    let p = OidcProvider::from_env(&env(&s, dir.path(), ROLE, PROVIDER))
        .unwrap()
        .unwrap();
    let e = p.credentials().await.unwrap_err().to_string();
    assert!(e.contains("AuthenticationFail.OIDCToken.Expired"), "{e}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_part_of_the_request_is_checked() {
    let s = start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");

    // Returns the one-line error of one AssumeRoleWithOIDC with this token and these ARNs.
    let attempt = |token: String, role: &'static str, provider: &'static str| {
        let env = env(&s, dir.path(), role, provider);
        let token_path = token_path.clone();
        async move {
            std::fs::write(&token_path, &token).unwrap();
            let p = OidcProvider::from_env(&env).unwrap().unwrap();
            let msg = p.credentials().await.unwrap_err().to_string();
            assert!(!msg.contains(&token), "the token leaked: {msg}");
            assert_eq!(msg.lines().count(), 1, "{msg}");
            msg
        }
    };

    let wrong_provider = "acs:ram::1000000000000001:oidc-provider/someone-else";
    let msg = attempt(good_jwt("sa"), ROLE, wrong_provider).await;
    assert!(msg.contains("EntityNotExist.OIDCProvider"), "{msg}");
    assert!(msg.contains(wrong_provider), "names the ARN: {msg}");
    assert!(
        msg.contains("check ALIBABA_CLOUD_OIDC_PROVIDER_ARN"),
        "says what to do: {msg}"
    );

    let msg = attempt(
        jwt(
            "https://another-issuer.example/c9",
            "sts.aliyuncs.com",
            3600,
            "sa",
        ),
        ROLE,
        PROVIDER,
    )
    .await;
    assert!(msg.contains("issuer (iss)"), "{msg}");

    let msg = attempt(
        jwt(ISSUER, "kubernetes.default.svc", 3600, "sa"),
        ROLE,
        PROVIDER,
    )
    .await;
    assert!(msg.contains("audience (aud)"), "{msg}");

    let msg = attempt(jwt(ISSUER, "sts.aliyuncs.com", -1, "sa"), ROLE, PROVIDER).await;
    assert!(
        msg.contains("AuthenticationFail.OIDCToken.Expired"),
        "{msg}"
    );

    let msg = attempt("not-a-jwt-at-all".into(), ROLE, PROVIDER).await;
    assert!(msg.contains("InvalidParameter.OIDCToken"), "{msg}");

    let msg = attempt(good_jwt("sa"), UNTRUSTING_ROLE, PROVIDER).await;
    assert!(msg.contains("NoPermission"), "{msg}");

    let msg = attempt(
        good_jwt("sa"),
        "acs:ram::1000000000000001:role/no-such-role",
        PROVIDER,
    )
    .await;
    assert!(msg.contains("EntityNotExist.Role"), "{msg}");

    // Nothing above got credentials; the good request does, without any AccessKey.
    assert_eq!(oidc_calls(&s), 0);
    std::fs::write(&token_path, good_jwt("sa")).unwrap();
    let p = Arc::new(
        OidcProvider::from_env(&env(&s, dir.path(), ROLE, PROVIDER))
            .unwrap()
            .unwrap(),
    );
    p.credentials().await.unwrap();
    assert_eq!(oidc_calls(&s), 1);
    s.shutdown().await;
}
