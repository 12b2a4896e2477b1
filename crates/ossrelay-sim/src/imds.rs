//! Simulated ECS instance metadata service (credentials.md §6): the IMDSv2 token and the
//! instance RAM role's rotating temporary credentials.
//!
//! Served on the simulator's listener under `/latest/` (so a bucket named `latest` cannot be
//! used path-style). Choices: a new credential set is issued at the start of every rotation
//! period and expires two periods after its issue, so the previous set stays valid while
//! clients switch; a wrong or expired token is `401`; requests without a token (v1) are served
//! unless tokens are configured as required (then `401`); with tokens unsupported the token
//! call is `404`, as on old metadata servers.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response};
use http_body_util::{BodyExt, Full};

use crate::config::ImdsTokens;
use crate::reply::Body;
use crate::rpc::ts;
use crate::world::cloud::{new_triple, Issued, Session};
use crate::world::World;

const TOKEN_TTL_HEADER: &str = "x-aliyun-ecs-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aliyun-ecs-metadata-token";
const CREDS_PATH: &str = "/latest/meta-data/ram/security-credentials/";

/// True for the paths the metadata service owns.
pub(crate) fn is_imds(parts: &http::request::Parts) -> bool {
    parts.uri.path().starts_with("/latest/")
}

fn reply(status: u16, ct: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", ct)
        .body(
            Full::new(body.into())
                .map_err(|e: Infallible| match e {})
                .boxed_unsync(),
        )
        .expect("valid response")
}

fn not_found() -> Response<Body> {
    reply(
        404,
        "text/html",
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<title>404 - Not Found</title>\n",
    )
}

/// Serves one metadata request.
pub(crate) fn serve(world: &World, parts: &http::request::Parts) -> Response<Body> {
    let now = world.now();
    let path = parts.uri.path();
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
    let cloud = &world.cloud;
    let mut guard = cloud.state.lock().expect("cloud lock");
    let st = &mut *guard;
    let imds = &mut st.imds;
    let mode = cloud.imds_tokens;
    if path == "/latest/api/token" {
        if mode == ImdsTokens::Unsupported {
            return not_found();
        }
        if parts.method != Method::PUT {
            return reply(405, "text/plain", "Method Not Allowed");
        }
        let ttl = header(TOKEN_TTL_HEADER)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|t| (1..=21600).contains(t));
        let Some(ttl) = ttl else {
            return reply(
                400,
                "text/plain",
                "X-aliyun-ecs-metadata-token-ttl-seconds must be between 1 and 21600",
            );
        };
        imds.tokens.retain(|_, exp| now < *exp);
        let token = format!("AQAE{}", hex::encode(rand::random::<[u8; 24]>()));
        imds.tokens
            .insert(token.clone(), now + Duration::from_secs(ttl));
        return reply(200, "text/plain", token);
    }
    if parts.method != Method::GET {
        return reply(405, "text/plain", "Method Not Allowed");
    }
    match header(TOKEN_HEADER) {
        _ if mode == ImdsTokens::Unsupported => {}
        Some(t) if imds.tokens.get(t).is_none_or(|exp| now >= *exp) => {
            return reply(401, "text/plain", "Unauthorized");
        }
        Some(_) => {}
        None if mode == ImdsTokens::Required => {
            return reply(401, "text/plain", "Unauthorized");
        }
        None => {}
    }
    let Some((account, role)) = cloud.imds_role.clone() else {
        return not_found();
    };
    if path == CREDS_PATH || path == CREDS_PATH.trim_end_matches('/') {
        return reply(200, "text/plain", role);
    }
    let Some(asked) = path.strip_prefix(CREDS_PATH) else {
        return not_found();
    };
    if asked != role {
        return not_found();
    }
    let rotation = cloud.imds_rotation.max(Duration::from_millis(1));
    let since = now
        .duration_since(cloud.started)
        .unwrap_or_default()
        .as_nanos();
    let period = (since / rotation.as_nanos()) as u64;
    if imds.current.as_ref().map(|c| c.period) != Some(period) {
        let issued = cloud.started
            + Duration::from_nanos(
                (rotation.as_nanos() * period as u128).min(u64::MAX as u128) as u64
            );
        let (ak, secret, token) = new_triple();
        let expires = issued + rotation * 2;
        world
            .oss
            .add_temporary_credentials(&ak, &secret, &token, &account, expires);
        let role_id = st
            .roles
            .get(&account, &role)
            .map(|r| r.id.clone())
            .unwrap_or_default();
        st.sessions.insert(
            ak.clone(),
            Session {
                account: account.clone(),
                role_name: role.clone(),
                role_id,
                session_name: "ecs-instance".into(),
            },
        );
        let imds = &mut st.imds;
        imds.current = Some(Issued {
            period,
            ak,
            secret,
            token,
            issued,
            expires,
        });
    }
    let c = st.imds.current.as_ref().expect("issued above");
    let body = serde_json::json!({
        "AccessKeyId": c.ak,
        "AccessKeySecret": c.secret,
        "SecurityToken": c.token,
        "Expiration": ts(c.expires),
        "LastUpdated": ts(c.issued),
        "Code": "Success",
    });
    reply(200, "text/plain", body.to_string())
}
