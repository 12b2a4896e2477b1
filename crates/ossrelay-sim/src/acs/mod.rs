//! The RPC router (ECS, RAM, STS on the shared listener): parse the query and form body,
//! verify the signature (except the anonymous AssumeRoleWithOIDC), apply injected and
//! scripted faults, dispatch by `Version` (product) and `Action`, render JSON or XML.

pub(crate) mod ecs;
pub(crate) mod ram;
pub(crate) mod sts;

use std::sync::Arc;

use http::{HeaderMap, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::{Digest as _, Sha256};

use crate::reply::Body;
use crate::rpc::{
    decode_form, error_json, new_request_id, render, verify, Product, RpcError, RpcRequest,
};
use crate::world::World;

/// Largest form body accepted.
const MAX_FORM: usize = 1 << 20;

/// Serves one RPC request end to end: parse, verify, dispatch, render.
pub(crate) async fn serve(
    world: &Arc<World>,
    parts: http::request::Parts,
    body: Incoming,
    host_id: String,
) -> Response<Body> {
    let mut params = decode_form(parts.uri.query().unwrap_or(""));
    let form = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let raw = match http_body_util::Limited::new(body, MAX_FORM).collect().await {
        Ok(c) => Some(c.to_bytes()),
        Err(_) => None,
    };
    let mut req = RpcRequest {
        method: parts.method.as_str().to_string(),
        query_count: params.len(),
        params: Vec::new(),
        host_id,
        request_id: new_request_id(),
        body_sha256: String::new(),
    };
    let Some(raw) = raw else {
        req.params = params;
        let e = RpcError::new(
            400,
            "InvalidParameter",
            "The request body is too large or was cut off.",
        );
        world.rpc_record("Unsupported", 400);
        return render(
            400,
            "Error",
            &error_json(&e, &req, None),
            req.json(),
            &req.request_id,
        );
    };
    req.body_sha256 = hex::encode(Sha256::digest(&raw));
    if form {
        params.extend(decode_form(&String::from_utf8_lossy(&raw)));
    }
    req.params = params;
    let action = req.action_in(&parts.headers);
    let version = req.version_in(&parts.headers);
    let product = Product::from_version(&version);
    let op = if action.is_empty() {
        "Unsupported"
    } else {
        action.as_str()
    };
    let result = dispatch(world, &req, &parts.headers, product, &action, &version);
    let resp = match result {
        Ok(mut v) => {
            if let Some(m) = v.as_object_mut() {
                m.insert("RequestId".into(), req.request_id.clone().into());
            }
            render(
                200,
                &format!("{action}Response"),
                &v,
                req.json(),
                &req.request_id,
            )
        }
        Err(e) => {
            tracing::debug!(action = %action, code = %e.code, status = e.status, "RPC error");
            render(
                e.status,
                "Error",
                &error_json(&e, &req, product),
                req.json(),
                &req.request_id,
            )
        }
    };
    world.rpc_record(op, resp.status().as_u16());
    resp
}

fn dispatch(
    world: &Arc<World>,
    req: &RpcRequest,
    headers: &HeaderMap,
    product: Option<Product>,
    action: &str,
    version: &str,
) -> Result<serde_json::Value, RpcError> {
    if action.is_empty() {
        return Err(RpcError::missing("Action"));
    }
    let Some(product) = product else {
        return match version {
            "" => Err(RpcError::missing("Version")),
            v => Err(RpcError::new(
                400,
                "InvalidVersion",
                format!("Specified parameter Version {v:?} is not valid."),
            )),
        };
    };
    let known = match product {
        Product::Ecs => ecs::ACTIONS.contains(&action),
        Product::Ram => ram::ACTIONS.contains(&action),
        Product::Sts => sts::ACTIONS.contains(&action),
    };
    if !known {
        return Err(RpcError::new(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        ));
    }
    // AssumeRoleWithOIDC is anonymous on the real service: the caller has no AccessKey yet and
    // the OIDC token in the parameters is what is verified (in crate::sts).
    if product == Product::Sts && action == "AssumeRoleWithOIDC" {
        if let Some(e) = world.rpc_fault(action) {
            return Err(e);
        }
        if let Some(e) = world.cloud.scripted_fault(action) {
            return Err(e);
        }
        return sts::assume_role_with_oidc(world, req);
    }
    let caller = {
        let now = world.now();
        let lookup = |ak: &str| world.key_lookup(ak);
        let mut nonces = world.cloud.nonces.lock().expect("nonce lock");
        verify(req, headers, now, &lookup, &mut nonces)?
    };
    if let Some(e) = world.rpc_fault(action) {
        return Err(e);
    }
    if let Some(e) = world.cloud.scripted_fault(action) {
        return Err(e);
    }
    match product {
        Product::Ecs => ecs::handle(world, &caller, req, action),
        Product::Ram => ram::handle(world, &caller, req, action),
        Product::Sts => sts::handle(world, &caller, req, action),
    }
}
