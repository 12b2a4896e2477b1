//! EC2 Query API (Version 2016-11-15): DescribeImages here, VM Import/Export in [`export`] and
//! [`import`], and what they share: `.N` list and `Filter.N` / `Filters.N` parsing,
//! `TagSpecification.N.Tag.M`, ClientToken fingerprints, paging, the service-role and bucket
//! checks, and the success envelope (`<XResponse xmlns=…><requestId/>…`, lowerCamel members,
//! lists as `xxxSet/item`).
//!
//! Choices where the reference is silent or UNCONFIRMED: an image owned by another account is
//! reported as not found (no sharing, no public AMIs); `NextToken` is an opaque offset;
//! unknown filter names are `InvalidParameterValue`.

pub(crate) mod export;
pub(crate) mod import;

use std::collections::BTreeMap;

use super::{QueryError, QueryRequest};
use crate::config::valid_ami_id;
use crate::sigv4::Verified;
use crate::world::ec2::{Ami, Ec2State};
use crate::world::iam::{glob, vmie_can};
use crate::world::World;
use crate::xml::{self, el, iso};

const NS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// The success document of `action`.
pub(crate) fn wrap(action: &str, inner: &str, rid: &str) -> String {
    format!(
        "{}<{action}Response xmlns=\"{NS}\">{}{inner}</{action}Response>",
        xml::DECL,
        el("requestId", rid)
    )
}

pub(crate) fn invalid_parameter(message: impl Into<String>) -> QueryError {
    QueryError::sender(400, "InvalidParameter", message)
}

pub(crate) fn invalid_value(message: impl Into<String>) -> QueryError {
    QueryError::sender(400, "InvalidParameterValue", message)
}

pub(crate) fn missing(name: &str) -> QueryError {
    QueryError::sender(
        400,
        "MissingParameter",
        format!("The request must contain the parameter {name}"),
    )
}

/// A non-empty parameter or `MissingParameter`.
pub(crate) fn required<'a>(req: &'a QueryRequest, name: &str) -> Result<&'a str, QueryError> {
    req.p(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing(name))
}

/// A boolean parameter (`true` / `false`, absent = false).
pub(crate) fn flag(req: &QueryRequest, name: &str) -> Result<bool, QueryError> {
    match req.p(name) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(invalid_value(format!(
            "Value ({v}) for parameter {name} is invalid. Expected: 'true' or 'false'."
        ))),
    }
}

/// `DryRun=true` after every check passed: HTTP 412 `DryRunOperation`.
pub(crate) fn dry_run_passed() -> QueryError {
    QueryError::sender(
        412,
        "DryRunOperation",
        "Request would have succeeded, but DryRun flag is set.",
    )
}

/// The numbered indexes present under `prefix` (`prefix.N…`), in order.
fn indexes(req: &QueryRequest, prefix: &str) -> Vec<u32> {
    let mut out: Vec<u32> = req
        .params
        .iter()
        .filter_map(|(k, _)| {
            let rest = k.strip_prefix(prefix)?.strip_prefix('.')?;
            rest.split('.').next()?.parse().ok()
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// `name.1`, `name.2`, … values, in index order.
pub(crate) fn list(req: &QueryRequest, name: &str) -> Vec<String> {
    indexes(req, name)
        .into_iter()
        .filter_map(|n| req.p(&format!("{name}.{n}")).map(String::from))
        .collect()
}

/// `prefix.N.Name` + `prefix.N.Value.M` pairs (`Filter` or, for import tasks, `Filters`).
pub(crate) fn filters(req: &QueryRequest, prefix: &str) -> Vec<(String, Vec<String>)> {
    indexes(req, prefix)
        .into_iter()
        .filter_map(|n| {
            let name = req.p(&format!("{prefix}.{n}.Name"))?.to_string();
            Some((name, list(req, &format!("{prefix}.{n}.Value"))))
        })
        .collect()
}

/// Does `value` satisfy every filter (`fields` maps a filter name to the value it reads)?
pub(crate) fn matches(
    filters: &[(String, Vec<String>)],
    fields: &dyn Fn(&str) -> Option<String>,
) -> Result<bool, QueryError> {
    for (name, values) in filters {
        let Some(v) = fields(name) else {
            return Err(invalid_value(format!("The filter '{name}' is invalid")));
        };
        if !values.iter().any(|p| glob(p, &v)) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `TagSpecification.N.Tag.M.{Key,Value}` of specifications for `resource_type` (or none).
pub(crate) fn tags(
    req: &QueryRequest,
    resource_type: &str,
) -> Result<Vec<(String, String)>, QueryError> {
    let mut out = Vec::new();
    for n in indexes(req, "TagSpecification") {
        let rt = req
            .p(&format!("TagSpecification.{n}.ResourceType"))
            .unwrap_or(resource_type);
        if rt != resource_type {
            return Err(invalid_value(format!(
                "'{rt}' is not a valid taggable resource type for this operation."
            )));
        }
        for m in indexes(req, &format!("TagSpecification.{n}.Tag")) {
            let key = req
                .p(&format!("TagSpecification.{n}.Tag.{m}.Key"))
                .unwrap_or_default();
            if key.is_empty() || key.len() > 128 || key.starts_with("aws:") {
                return Err(invalid_value(format!("Tag key '{key}' is invalid.")));
            }
            let value = req
                .p(&format!("TagSpecification.{n}.Tag.{m}.Value"))
                .unwrap_or_default();
            out.push((key.to_string(), value.to_string()));
        }
    }
    Ok(out)
}

pub(crate) fn tag_set(tags: &[(String, String)]) -> String {
    if tags.is_empty() {
        return String::new();
    }
    let items: String = tags
        .iter()
        .map(|(k, v)| format!("<item>{}{}</item>", el("key", k), el("value", v)))
        .collect();
    format!("<tagSet>{items}</tagSet>")
}

/// Everything that defines a request, for ClientToken idempotency: the sorted parameters
/// without the token itself, DryRun and signing material.
pub(crate) fn fingerprint(req: &QueryRequest) -> String {
    let mut p: Vec<String> = req
        .params
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "ClientToken" | "DryRun" | "Version" | "SecurityToken"
            ) && !k.starts_with("X-Amz-")
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    p.sort();
    p.join("&")
}

pub(crate) fn token_mismatch(token: &str) -> QueryError {
    QueryError::sender(
        400,
        "IdempotentParameterMismatch",
        format!("The client token '{token}' was already used with different parameters."),
    )
}

/// One page of `items` per `MaxResults` (within `range`) / `NextToken`; returns the page and
/// the `<nextToken>` element (empty on the last page).
pub(crate) fn page<T>(
    items: Vec<T>,
    req: &QueryRequest,
    range: (usize, usize),
) -> Result<(Vec<T>, String), QueryError> {
    let start = match req.p("NextToken").filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|s| *s <= items.len())
            .ok_or_else(|| invalid_value(format!("The token '{t}' is invalid.")))?,
    };
    let max = match req.p("MaxResults").filter(|m| !m.is_empty()) {
        None => usize::MAX,
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|n| (range.0..=range.1).contains(n))
            .ok_or_else(|| {
                invalid_value(format!(
                    "Value ( {m} ) for parameter maxResults is invalid. Expecting a value between {} and {}.",
                    range.0, range.1
                ))
            })?,
    };
    let total = items.len();
    let end = start.saturating_add(max).min(total);
    let page: Vec<T> = items.into_iter().skip(start).take(end - start).collect();
    let next = if end < total {
        el("nextToken", &end.to_string())
    } else {
        String::new()
    };
    Ok((page, next))
}

/// The role text EC2 answers when VM Import/Export cannot use the service role.
pub(crate) fn role_refused(role: &str) -> QueryError {
    invalid_parameter(format!(
        "The service role {role} provided does not exist or does not have sufficient permissions"
    ))
}

/// Checks that VM Import/Export may use `account`'s role `role` for `needs`.
pub(crate) fn check_role(
    w: &World,
    st: &Ec2State,
    account: &str,
    role: &str,
    needs: &[(&str, String)],
) -> Result<(), QueryError> {
    let ok = st
        .roles
        .get(&(account.to_string(), role.to_string()))
        .is_some_and(|r| vmie_can(r, needs, w.now(), w.ec2.role_propagation));
    if ok {
        Ok(())
    } else {
        Err(role_refused(role))
    }
}

/// Checks that `bucket` exists in this region and belongs to `account`.
pub(crate) fn check_bucket(w: &World, account: &str, bucket: &str) -> Result<(), QueryError> {
    let owner = w.oss.lock().buckets.get(bucket).map(|b| b.account.clone());
    match owner {
        None => Err(invalid_parameter(format!(
            "The given S3 bucket {bucket} does not exist"
        ))),
        Some(_) if w.bucket_region(bucket) != w.region => Err(invalid_parameter(
            "The given S3 bucket is not local to the Region",
        )),
        Some(o) if o != account => Err(invalid_parameter(format!(
            "Access Denied: the S3 bucket {bucket} belongs to another account"
        ))),
        Some(_) => Ok(()),
    }
}

fn image_xml(i: &Ami) -> String {
    let windows = i.platform == "windows";
    let mut x = String::from("<item>");
    x += &el("imageId", &i.id);
    x += &el("imageLocation", &format!("{}/{}", i.account, i.name));
    x += &el("imageState", i.state);
    x += &el("imageOwnerId", &i.account);
    x += &el("creationDate", &iso(i.created));
    x += &el("isPublic", "false");
    x += &el("architecture", &i.architecture);
    x += &el("imageType", "machine");
    if windows {
        x += &el("platform", "windows");
    }
    x += &el(
        "platformDetails",
        if windows { "Windows" } else { "Linux/UNIX" },
    );
    x += &el(
        "usageOperation",
        if windows {
            "RunInstances:0002"
        } else {
            "RunInstances"
        },
    );
    x += &el("name", &i.name);
    if !i.description.is_empty() {
        x += &el("description", &i.description);
    }
    x += &el("rootDeviceType", "ebs");
    x += &el("rootDeviceName", "/dev/xvda");
    x += &format!(
        "<blockDeviceMapping><item>{}<ebs>{}{}{}{}{}</ebs></item></blockDeviceMapping>",
        el("deviceName", "/dev/xvda"),
        el("snapshotId", &i.snapshot_id),
        el("volumeSize", &i.volume_gib().to_string()),
        el("deleteOnTermination", "true"),
        el("volumeType", "gp3"),
        el("encrypted", "false"),
    );
    x += &el("virtualizationType", "hvm");
    x += &el("hypervisor", "xen");
    x += &el("enaSupport", "true");
    if !i.boot_mode.is_empty() {
        x += &el("bootMode", &i.boot_mode);
    }
    x += &el("imdsSupport", "v2.0");
    x += "</item>";
    x
}

fn image_field(i: &Ami, name: &str) -> Option<String> {
    Some(match name {
        "image-id" => i.id.clone(),
        "state" => i.state.to_string(),
        "architecture" => i.architecture.clone(),
        "name" => i.name.clone(),
        "description" => i.description.clone(),
        "boot-mode" => i.boot_mode.clone(),
        "owner-id" => i.account.clone(),
        "platform" => i.platform.clone(),
        "root-device-type" => "ebs".into(),
        "virtualization-type" => "hvm".into(),
        "image-type" => "machine".into(),
        "is-public" => "false".into(),
        _ => return None,
    })
}

/// DescribeImages: `ImageId.N`, `Owner.N` (`self` or account IDs), `Filter.N`; the caller's
/// AMIs only.
pub(crate) fn describe_images(
    w: &World,
    auth: &Verified,
    req: &QueryRequest,
) -> Result<String, QueryError> {
    let ids = list(req, "ImageId");
    if let Some(bad) = ids.iter().find(|i| !valid_ami_id(i)) {
        return Err(QueryError::sender(
            400,
            "InvalidAMIID.Malformed",
            format!("Invalid id: \"{bad}\" (expecting \"ami-...\")"),
        ));
    }
    let owners = list(req, "Owner");
    let filters = filters(req, "Filter");
    let dry_run = flag(req, "DryRun")?;
    let mut st = w.ec2.lock();
    st.refresh(&w.oss);
    let mine = |i: &&Ami| i.account == auth.account;
    if !ids.is_empty() {
        let missing: Vec<&String> = ids
            .iter()
            .filter(|id| st.images.get(*id).filter(mine).is_none())
            .collect();
        if !missing.is_empty() {
            let list = missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(QueryError::sender(
                400,
                "InvalidAMIID.NotFound",
                format!("The image id '[{list}]' does not exist"),
            ));
        }
    }
    if dry_run {
        return Err(dry_run_passed());
    }
    let mut out = String::new();
    let selected: BTreeMap<&String, &Ami> = st
        .images
        .iter()
        .filter(|(_, i)| mine(i))
        .filter(|(id, _)| ids.is_empty() || ids.contains(id))
        .filter(|(_, i)| owners.is_empty() || owners.iter().any(|o| o == "self" || *o == i.account))
        .collect();
    for i in selected.values() {
        if matches(&filters, &|n| image_field(i, n))? {
            out += &image_xml(i);
        }
    }
    Ok(wrap(
        "DescribeImages",
        &format!("<imagesSet>{out}</imagesSet>"),
        &req.request_id,
    ))
}
