//! EC2 instance metadata (IMDSv2, AWS shapes) on the S3 dialect's main listener:
//! `PUT /latest/api/token` (TTL 1..21600 s, `403` when `X-Forwarded-For` is present),
//! `GET /latest/meta-data/iam/security-credentials/` (the role name) and `…/<role>` (the
//! credential document). Every GET needs a live token (`401` otherwise: the simulated
//! instance enforces v2). Credentials rotate every `imds_rotation` and live two periods; they
//! are registered with the key table, so the S3 listener accepts them.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response};

use crate::reply::{full, response, Body};
use crate::world::aws::new_creds;
use crate::world::World;
use crate::xml::iso;

pub(crate) fn is_imds(parts: &http::request::Parts) -> bool {
    parts.uri.path().starts_with("/latest/")
}

fn reply(status: u16, ct: &str, body: impl Into<Bytes>) -> Response<Body> {
    response(status)
        .header("content-type", ct)
        .body(full(body.into()))
        .expect("valid")
}

pub(crate) fn serve(w: &World, parts: &http::request::Parts) -> Response<Body> {
    let path = parts.uri.path();
    let h = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
    let now = w.now();
    if path == "/latest/api/token" {
        if parts.method != Method::PUT {
            return reply(405, "text/plain", "");
        }
        if h("x-forwarded-for").is_some() {
            return reply(403, "text/plain", "Forbidden");
        }
        let ttl =
            h("x-aws-ec2-metadata-token-ttl-seconds").and_then(|v| v.trim().parse::<u64>().ok());
        let Some(ttl) = ttl.filter(|t| (1..=21_600).contains(t)) else {
            return reply(400, "text/plain", "Bad Request");
        };
        let token = crate::sigv4::sha256_hex(&rand::random::<[u8; 32]>());
        let mut st = w.aws.lock();
        st.imds_tokens.retain(|_, exp| *exp > now);
        st.imds_tokens
            .insert(token.clone(), now + Duration::from_secs(ttl));
        return response(200)
            .header("content-type", "text/plain")
            .header("x-aws-ec2-metadata-token-ttl-seconds", ttl.to_string())
            .body(full(token))
            .expect("valid");
    }
    let live = h("x-aws-ec2-metadata-token")
        .and_then(|t| w.aws.lock().imds_tokens.get(t).copied())
        .is_some_and(|exp| exp > now);
    if !live {
        return reply(401, "text/plain", "Unauthorized");
    }
    let Some((account, role)) = w.aws.imds_role.clone() else {
        return reply(404, "text/plain", "Not Found");
    };
    match path.strip_prefix("/latest/meta-data/iam/security-credentials") {
        Some("" | "/") => reply(200, "text/plain", role),
        Some(rest) if rest.trim_start_matches('/') == role => {
            let c = {
                let mut st = w.aws.lock();
                let fresh = st
                    .imds_creds
                    .as_ref()
                    .is_some_and(|c| now < c.issued + w.aws.imds_rotation);
                if !fresh {
                    let c = new_creds(now, w.aws.imds_rotation * 2);
                    w.oss.add_temporary_credentials(
                        &c.access_key_id,
                        &c.secret,
                        &c.token,
                        &account,
                        c.expires,
                    );
                    st.imds_creds = Some(c);
                }
                st.imds_creds.clone().expect("just set")
            };
            let doc = serde_json::json!({
                "Code": "Success",
                "LastUpdated": iso(c.issued).replace(".000Z", "Z"),
                "Type": "AWS-HMAC",
                "AccessKeyId": c.access_key_id,
                "SecretAccessKey": c.secret,
                "Token": c.token,
                "Expiration": iso(c.expires).replace(".000Z", "Z"),
            });
            reply(
                200,
                "text/plain",
                serde_json::to_vec_pretty(&doc).unwrap_or_default(),
            )
        }
        _ => reply(404, "text/plain", "Not Found"),
    }
}
