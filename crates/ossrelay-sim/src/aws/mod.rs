//! The AWS Query API (`POST /` with a form body `Action=…&Version=…`) served on the S3
//! dialect's control listener: STS today; EC2 and IAM actions are added as further entries of
//! [`ACTIONS`] and arms of [`dispatch`]. Requests are SigV4-verified with the action's signing
//! service (except the unsigned ones, e.g. AssumeRoleWithWebIdentity); answers and errors are
//! the Query protocol's XML (`<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/>`).

pub(crate) mod imds;
mod sts;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::reply::{full, response, Body};
use crate::sigv4::{self, Expect, SigError, SigRequest, Verified};
use crate::world::World;
use crate::xml::{self, el};

/// `(action, signing service, version, needs a signature)`.
const ACTIONS: &[(&str, &str, &str, bool)] = &[
    ("AssumeRole", "sts", "2011-06-15", true),
    ("GetCallerIdentity", "sts", "2011-06-15", true),
    ("AssumeRoleWithWebIdentity", "sts", "2011-06-15", false),
];

/// A Query API error.
#[derive(Debug, Clone)]
pub(crate) struct QueryError {
    pub(crate) status: u16,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) sender: bool,
}

impl QueryError {
    pub(crate) fn sender(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            sender: true,
        }
    }
}

/// One parsed Query request.
pub(crate) struct QueryRequest {
    pub(crate) params: Vec<(String, String)>,
    pub(crate) request_id: String,
}

impl QueryRequest {
    pub(crate) fn p(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn form_pairs(s: &str) -> Vec<(String, String)> {
    let dec = |x: &str| {
        percent_encoding::percent_decode_str(&x.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
}

fn request_id() -> String {
    let r: [u8; 16] = rand::random();
    let h = hex::encode(r);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn error_xml(e: &QueryError, rid: &str) -> Response<Body> {
    let body = format!(
        "{}<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>{}{}{}</Error>{}</ErrorResponse>",
        xml::DECL,
        el("Type", if e.sender { "Sender" } else { "Receiver" }),
        el("Code", e.code),
        el("Message", &e.message),
        el("RequestId", rid)
    );
    response(e.status)
        .header("content-type", "text/xml")
        .header("x-amzn-requestid", rid)
        .body(full(body))
        .expect("valid")
}

fn sig_error(e: SigError) -> QueryError {
    match e {
        SigError::Anonymous => QueryError::sender(403, "MissingAuthenticationToken", "Request is missing Authentication Token"),
        SigError::Malformed(m) => QueryError::sender(400, "IncompleteSignature", m),
        SigError::WrongRegion(r) => QueryError::sender(403, "SignatureDoesNotMatch", format!("Credential should be scoped to a valid region, not '{r}'.")),
        SigError::InvalidAccessKeyId(_) => QueryError::sender(403, "InvalidClientTokenId", "The security token included in the request is invalid."),
        SigError::InvalidToken => QueryError::sender(403, "InvalidClientTokenId", "The security token included in the request is invalid."),
        SigError::ExpiredToken => QueryError::sender(400, "ExpiredToken", "The security token included in the request is expired"),
        SigError::SignatureDoesNotMatch { string_to_sign, canonical_request, .. } => QueryError::sender(
            403,
            "SignatureDoesNotMatch",
            format!("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.\n\nThe Canonical String for this request should have been\n'{canonical_request}'\n\nThe String-to-Sign should have been\n'{string_to_sign}'\n"),
        ),
        SigError::TooSkewed { .. } => QueryError::sender(400, "RequestExpired", "Signature expired: the request time is more than 15 minutes away from the server time."),
        SigError::Expired { .. } => QueryError::sender(400, "RequestExpired", "Request has expired."),
    }
}

/// Serves one request of the control listener.
pub(crate) async fn serve(
    w: &Arc<World>,
    parts: http::request::Parts,
    body: Incoming,
) -> Response<Body> {
    let rid = request_id();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if body.len() > (1 << 20) {
        return error_xml(
            &QueryError::sender(413, "RequestEntityTooLarge", "Request body too large."),
            &rid,
        );
    }
    let mut params = form_pairs(parts.uri.query().unwrap_or(""));
    if parts.method == Method::POST {
        params.extend(form_pairs(&String::from_utf8_lossy(&body)));
    }
    let req = QueryRequest {
        params,
        request_id: rid.clone(),
    };
    let action = req.p("Action").unwrap_or_default().to_string();
    let result = match ACTIONS.iter().find(|(a, ..)| *a == action) {
        None => Err(QueryError::sender(
            400,
            "InvalidAction",
            format!(
                "Could not find operation {action:?} for version {}",
                req.p("Version").unwrap_or("")
            ),
        )),
        Some((_, service, version, signed)) => {
            if req.p("Version") != Some(version) {
                Err(QueryError::sender(
                    400,
                    "InvalidAction",
                    format!(
                        "Could not find operation {action} for version {}",
                        req.p("Version").unwrap_or("")
                    ),
                ))
            } else {
                let auth = if *signed {
                    let sreq = SigRequest {
                        method: parts.method.as_str(),
                        raw_path: parts.uri.path(),
                        raw_query: parts.uri.query().unwrap_or(""),
                        headers: &parts.headers,
                    };
                    let payload = sigv4::sha256_hex(&body);
                    let exp = Expect {
                        service,
                        region: None,
                        payload: &payload,
                        normalize: true,
                    };
                    sigv4::verify(&sreq, &exp, w.now(), &|ak| w.key_lookup(ak))
                        .map(Some)
                        .map_err(sig_error)
                } else {
                    Ok(None)
                };
                match auth {
                    Ok(a) => dispatch(w, &action, a.as_ref(), &req),
                    Err(e) => Err(e),
                }
            }
        }
    };
    let resp = match result {
        Ok(xml) => response(200)
            .header("content-type", "text/xml")
            .header("x-amzn-requestid", rid.as_str())
            .body(full(xml))
            .expect("valid"),
        Err(e) => error_xml(&e, &rid),
    };
    w.stats.record(
        if action.is_empty() { "Query" } else { &action },
        resp.status().as_str(),
    );
    resp
}

fn dispatch(
    w: &World,
    action: &str,
    auth: Option<&Verified>,
    req: &QueryRequest,
) -> Result<String, QueryError> {
    match (action, auth) {
        ("AssumeRole", Some(a)) => sts::assume_role(w, a, req),
        ("GetCallerIdentity", Some(a)) => sts::caller_identity(w, a, req),
        ("AssumeRoleWithWebIdentity", _) => sts::assume_role_with_web_identity(w, req),
        _ => Err(QueryError::sender(
            400,
            "InvalidAction",
            format!("{action} is not served"),
        )),
    }
}
