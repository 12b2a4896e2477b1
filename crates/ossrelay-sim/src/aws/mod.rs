//! The AWS Query API (`POST /` with a form body, or `GET /?…`, `Action=…&Version=…`) served on
//! the S3 dialect's control listener: STS, EC2 (VM Import/Export, DescribeImages) and IAM
//! (roles). Requests are SigV4-verified with the action's signing service and scope (EC2: the
//! simulator's region; IAM: always `us-east-1`; STS: any) except the unsigned ones (e.g.
//! AssumeRoleWithWebIdentity). Answers are each service's XML: STS and IAM
//! `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/>`, EC2
//! `<Response><Errors><Error><Code/><Message/></Error></Errors><RequestID/></Response>`.
//! `--rpc-fault ACTION:CODE[:STATUS[:COUNT]]` scripts errors for these actions too (after the
//! signature check), rendered in the action's service's error format.

mod ec2;
mod iam;
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

const EC2_VERSION: &str = "2016-11-15";
const IAM_VERSION: &str = "2010-05-08";

/// `(action, signing service, version, needs a signature)`.
const ACTIONS: &[(&str, &str, &str, bool)] = &[
    ("AssumeRole", "sts", "2011-06-15", true),
    ("GetCallerIdentity", "sts", "2011-06-15", true),
    ("AssumeRoleWithWebIdentity", "sts", "2011-06-15", false),
    ("DescribeImages", "ec2", EC2_VERSION, true),
    ("ExportImage", "ec2", EC2_VERSION, true),
    ("DescribeExportImageTasks", "ec2", EC2_VERSION, true),
    ("CancelExportTask", "ec2", EC2_VERSION, true),
    ("ImportImage", "ec2", EC2_VERSION, true),
    ("DescribeImportImageTasks", "ec2", EC2_VERSION, true),
    ("CancelImportTask", "ec2", EC2_VERSION, true),
    ("GetRole", "iam", IAM_VERSION, true),
    ("CreateRole", "iam", IAM_VERSION, true),
    ("PutRolePolicy", "iam", IAM_VERSION, true),
    ("GetRolePolicy", "iam", IAM_VERSION, true),
];

/// Whose XML dialect an answer is written in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Sts,
    Ec2,
    Iam,
}

impl Flavor {
    fn of_service(service: &str) -> Self {
        match service {
            "ec2" => Flavor::Ec2,
            "iam" => Flavor::Iam,
            _ => Flavor::Sts,
        }
    }

    /// For an unknown action: the service its `Version` names.
    fn of_version(version: &str) -> Self {
        match version {
            EC2_VERSION => Flavor::Ec2,
            IAM_VERSION => Flavor::Iam,
            _ => Flavor::Sts,
        }
    }
}

/// A Query API error.
#[derive(Debug, Clone)]
pub(crate) struct QueryError {
    pub(crate) status: u16,
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) sender: bool,
}

impl QueryError {
    pub(crate) fn sender(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
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

fn error_xml(e: &QueryError, rid: &str, flavor: Flavor) -> Response<Body> {
    let ns = match flavor {
        Flavor::Iam => "https://iam.amazonaws.com/doc/2010-05-08/",
        _ => "https://sts.amazonaws.com/doc/2011-06-15/",
    };
    let body = if flavor == Flavor::Ec2 {
        format!(
            "{}<Response><Errors><Error>{}{}</Error></Errors>{}</Response>",
            xml::DECL,
            el("Code", &e.code),
            el("Message", &e.message),
            el("RequestID", rid)
        )
    } else {
        format!(
            "{}<ErrorResponse xmlns=\"{ns}\"><Error>{}{}{}</Error>{}</ErrorResponse>",
            xml::DECL,
            el("Type", if e.sender { "Sender" } else { "Receiver" }),
            el("Code", &e.code),
            el("Message", &e.message),
            el("RequestId", rid)
        )
    };
    response(e.status)
        .header("content-type", "text/xml")
        .header("x-amzn-requestid", rid)
        .body(full(body))
        .expect("valid")
}

/// EC2 answers every credential problem with `AuthFailure` (401), a stale request with
/// `RequestExpired`.
fn ec2_sig_error(e: SigError) -> QueryError {
    match e {
        SigError::TooSkewed { .. } | SigError::Expired { .. } => QueryError::sender(
            400,
            "RequestExpired",
            "Request has expired.",
        ),
        SigError::WrongService { signed, expected } => QueryError::sender(
            401,
            "AuthFailure",
            format!("AWS was not able to validate the provided access credentials (credential scoped to service '{signed}', not '{expected}')."),
        ),
        SigError::WrongRegion(r) => QueryError::sender(
            401,
            "AuthFailure",
            format!("AWS was not able to validate the provided access credentials (credential scoped to region '{r}')."),
        ),
        _ => QueryError::sender(
            401,
            "AuthFailure",
            "AWS was not able to validate the provided access credentials",
        ),
    }
}

fn sig_error(e: SigError) -> QueryError {
    match e {
        SigError::WrongService { expected, .. } => QueryError::sender(403, "SignatureDoesNotMatch", format!("Credential should be scoped to correct service: '{expected}'.")),
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
            Flavor::Sts,
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
    let version = req.p("Version").unwrap_or("").to_string();
    let entry = ACTIONS.iter().find(|(a, ..)| *a == action);
    let flavor = match entry {
        Some((_, service, ..)) => Flavor::of_service(service),
        None => Flavor::of_version(&version),
    };
    let result = match entry {
        None => Err(QueryError::sender(
            400,
            "InvalidAction",
            format!("Could not find operation {action:?} for version {version}"),
        )),
        Some(_) if version.is_empty() && flavor == Flavor::Ec2 => Err(QueryError::sender(
            400,
            "MissingParameter",
            "The request must contain the parameter Version",
        )),
        Some((_, _, want, _)) if version != *want => Err(QueryError::sender(
            400,
            "InvalidAction",
            format!("Could not find operation {action} for version {version}"),
        )),
        Some((_, service, _, signed)) => {
            let auth = if *signed {
                let sreq = SigRequest {
                    method: parts.method.as_str(),
                    raw_path: parts.uri.path(),
                    raw_query: parts.uri.query().unwrap_or(""),
                    headers: &parts.headers,
                };
                let payload = sigv4::sha256_hex(&body);
                let region = match flavor {
                    Flavor::Ec2 => Some(w.region.as_str()),
                    Flavor::Iam => Some("us-east-1"),
                    Flavor::Sts => None,
                };
                let exp = Expect {
                    service,
                    region,
                    payload: &payload,
                    normalize: true,
                };
                sigv4::verify(&sreq, &exp, w.now(), &|ak| w.key_lookup(ak))
                    .map(Some)
                    .map_err(|e| match flavor {
                        Flavor::Ec2 => ec2_sig_error(e),
                        _ => sig_error(e),
                    })
            } else {
                Ok(None)
            };
            match auth {
                Ok(a) => match w.cloud.scripted_fault(&action) {
                    Some(f) => Err(QueryError {
                        status: f.status,
                        code: f.code,
                        message: f.message,
                        sender: f.status < 500,
                    }),
                    None => dispatch(w, &action, a.as_ref(), &req),
                },
                Err(e) => Err(e),
            }
        }
    };
    let resp = match result {
        Ok(xml) => response(200)
            .header("content-type", "text/xml;charset=UTF-8")
            .header("x-amzn-requestid", rid.as_str())
            .body(full(xml))
            .expect("valid"),
        Err(e) => {
            tracing::debug!(action = %action, code = %e.code, status = e.status, "query error");
            error_xml(&e, &rid, flavor)
        }
    };
    w.stats.record(
        if action.is_empty() { "Query" } else { &action },
        resp.status().as_str(),
    );
    resp
}

fn dispatch(
    w: &Arc<World>,
    action: &str,
    auth: Option<&Verified>,
    req: &QueryRequest,
) -> Result<String, QueryError> {
    match (action, auth) {
        ("DescribeImages", Some(a)) => ec2::describe_images(w, a, req),
        ("ExportImage", Some(a)) => ec2::export::export_image(w, a, req),
        ("DescribeExportImageTasks", Some(a)) => {
            ec2::export::describe_export_image_tasks(w, a, req)
        }
        ("CancelExportTask", Some(a)) => ec2::export::cancel_export_task(w, a, req),
        ("ImportImage", Some(a)) => ec2::import::import_image(w, a, req),
        ("DescribeImportImageTasks", Some(a)) => {
            ec2::import::describe_import_image_tasks(w, a, req)
        }
        ("CancelImportTask", Some(a)) => ec2::import::cancel_import_task(w, a, req),
        ("GetRole", Some(a)) => iam::get_role(w, a, req),
        ("CreateRole", Some(a)) => iam::create_role(w, a, req),
        ("PutRolePolicy", Some(a)) => iam::put_role_policy(w, a, req),
        ("GetRolePolicy", Some(a)) => iam::get_role_policy(w, a, req),
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
