//! Bucket and listing operations: ListBuckets, GetBucketInfo, Get/Put/DeleteBucketLifecycle,
//! ListObjects and ListObjectsV2.

use base64::Engine as _;
use hyper::body::Incoming;
use md5::{Digest as _, Md5};

use super::body::read_small;
use super::common::{
    empty, internal, invalid_argument, max_param, owner_id, parse_content_md5, quoted, Ctx,
    OssError, Res,
};
use crate::auth::Principal;
use crate::reply::{response, xml_response};
use crate::world::World;
use crate::xml::{self, el, esc, iso};

pub(crate) fn list_buckets(w: &World, _ctx: &Ctx, p: &Principal) -> Res {
    let st = w.oss.lock();
    let mut s = format!(
        "{}<ListAllMyBucketsResult><Owner><ID>{}</ID><DisplayName>{}</DisplayName></Owner><Buckets>",
        xml::DECL,
        owner_id(&p.account),
        esc(&p.account)
    );
    for (name, b) in st.buckets.iter().filter(|(_, b)| b.account == p.account) {
        s.push_str(&format!(
            "<Bucket><CreationDate>{}</CreationDate><ExtranetEndpoint>oss-{r}.aliyuncs.com</ExtranetEndpoint><IntranetEndpoint>oss-{r}-internal.aliyuncs.com</IntranetEndpoint><Location>oss-{r}</Location><Name>{}</Name><Region>{r}</Region><StorageClass>Standard</StorageClass></Bucket>",
            iso(b.created),
            esc(name),
            r = w.region
        ));
    }
    s.push_str("</Buckets></ListAllMyBucketsResult>");
    Ok(xml_response(s))
}

pub(crate) fn bucket_info(w: &World, ctx: &Ctx) -> Res {
    let st = w.oss.lock();
    let b = st
        .buckets
        .get(ctx.bucket())
        .ok_or_else(|| internal("bucket vanished"))?;
    let r = &w.region;
    Ok(xml_response(format!(
        "{}<BucketInfo><Bucket><AccessMonitor>Disabled</AccessMonitor><CreationDate>{}</CreationDate><ExtranetEndpoint>oss-{r}.aliyuncs.com</ExtranetEndpoint><IntranetEndpoint>oss-{r}-internal.aliyuncs.com</IntranetEndpoint><Location>oss-{r}</Location><StorageClass>Standard</StorageClass><DataRedundancyType>LRS</DataRedundancyType><TransferAcceleration>Disabled</TransferAcceleration><CrossRegionReplication>Disabled</CrossRegionReplication><Name>{}</Name><ResourceGroupId>rg-sim</ResourceGroupId><Owner><DisplayName>{}</DisplayName><ID>{}</ID></Owner><AccessControlList><Grant>private</Grant></AccessControlList><ServerSideEncryptionRule><SSEAlgorithm>None</SSEAlgorithm></ServerSideEncryptionRule><Versioning>Disabled</Versioning></Bucket></BucketInfo>",
        xml::DECL,
        iso(b.created),
        esc(ctx.bucket()),
        esc(&b.account),
        owner_id(&b.account),
    )))
}

pub(crate) fn get_lifecycle(w: &World, ctx: &Ctx) -> Res {
    match w.oss.lifecycle(ctx.bucket()) {
        Some(x) => Ok(xml_response(x)),
        None => Err(
            OssError::new(404, "NoSuchLifecycle", "No Row found in Lifecycle Table.")
                .with("BucketName", ctx.bucket())
                .ec("0034-00000001")
                .into(),
        ),
    }
}

pub(crate) async fn put_lifecycle(w: &World, ctx: &Ctx, body: Incoming) -> Res {
    let expected = parse_content_md5(ctx);
    let data = read_small(w, body, 1 << 20).await?;
    let Some(expected) = expected? else {
        return Err(OssError::new(
            400,
            "MissingContentMd5",
            "Missing required header for this request: Content-MD5.",
        )
        .into());
    };
    if <[u8; 16]>::from(Md5::digest(&data)) != expected {
        return Err(OssError::new(
            400,
            "InvalidDigest",
            "The Content-MD5 you specified did not match what we received.",
        )
        .ec("0017-00000503")
        .into());
    }
    let Some(stored) = xml::check_lifecycle(&data) else {
        return Err(OssError::new(
            400,
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our published schema.",
        )
        .ec("0016-00000608")
        .into());
    };
    if let Some(b) = w.oss.lock().buckets.get_mut(ctx.bucket()) {
        b.lifecycle = Some(stored);
    }
    Ok(response(200).body(empty()).expect("valid"))
}

pub(crate) fn list_objects(w: &World, ctx: &Ctx) -> Res {
    let v2 = ctx.op == "ListObjectsV2";
    let max = max_param(ctx, "max-keys", 100, 1000)?;
    let prefix = ctx.q("prefix").unwrap_or_default();
    let delimiter = ctx.q("delimiter").unwrap_or_default();
    let token = ctx.q("continuation-token").filter(|t| !t.is_empty());
    let after: String = if v2 {
        match token {
            Some(t) => base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    invalid_argument("The continuation token provided is incorrect.")
                        .with("ArgumentName", "continuation-token")
                })?,
            None => ctx.q("start-after").unwrap_or_default().to_string(),
        }
    } else {
        ctx.q("marker").unwrap_or_default().to_string()
    };
    let st = w.oss.lock();
    let b = st
        .buckets
        .get(ctx.bucket())
        .ok_or_else(|| internal("bucket vanished"))?;
    let mut contents = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    let mut truncated = false;
    let mut last = String::new();
    let range = b.objects.range::<str, _>((
        std::ops::Bound::Excluded(after.as_str()),
        std::ops::Bound::Unbounded,
    ));
    for (k, o) in range {
        if !k.starts_with(prefix) {
            if k.as_str() > prefix {
                break;
            }
            continue;
        }
        if contents.len() + prefixes.len() >= max {
            truncated = true;
            break;
        }
        if !delimiter.is_empty() {
            if let Some(i) = k[prefix.len()..].find(delimiter) {
                let cp = &k[..prefix.len() + i + delimiter.len()];
                if prefixes.last().map(String::as_str) != Some(cp) {
                    prefixes.push(cp.to_string());
                }
                last = k.clone();
                continue;
            }
        }
        contents.push((k, o));
        last = k.clone();
    }
    let mut s = format!(
        "{}<ListBucketResult>{}{}{}{}",
        xml::DECL,
        el("Name", ctx.bucket()),
        el("Prefix", &ctx.enc(prefix)),
        el("MaxKeys", &max.to_string()),
        el("Delimiter", &ctx.enc(delimiter)),
    );
    if ctx.url_encoding() {
        s.push_str(&el("EncodingType", "url"));
    }
    s.push_str(&el("IsTruncated", if truncated { "true" } else { "false" }));
    if v2 {
        if let Some(sa) = ctx.q("start-after") {
            s.push_str(&el("StartAfter", &ctx.enc(sa)));
        }
        if let Some(t) = token {
            s.push_str(&el("ContinuationToken", t));
        }
        if truncated {
            s.push_str(&el(
                "NextContinuationToken",
                &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.as_bytes()),
            ));
        }
    } else {
        s.push_str(&el("Marker", &ctx.enc(&after)));
        if truncated {
            s.push_str(&el("NextMarker", &ctx.enc(&last)));
        }
    }
    let fetch_owner = !v2 || ctx.q("fetch-owner") == Some("true");
    for (k, o) in &contents {
        s.push_str(&format!(
            "<Contents>{}{}{}{}{}{}",
            el("Key", &ctx.enc(k)),
            el("LastModified", &iso(o.last_modified)),
            el("ETag", &quoted(&o.etag)),
            el("Type", o.object_type),
            el("Size", &o.size.to_string()),
            el("StorageClass", &o.storage_class),
        ));
        if fetch_owner {
            s.push_str(&format!(
                "<Owner><ID>{}</ID><DisplayName>{}</DisplayName></Owner>",
                owner_id(&b.account),
                esc(&b.account)
            ));
        }
        s.push_str("</Contents>");
    }
    for p in &prefixes {
        s.push_str(&format!(
            "<CommonPrefixes>{}</CommonPrefixes>",
            el("Prefix", &ctx.enc(p))
        ));
    }
    if v2 {
        s.push_str(&el(
            "KeyCount",
            &(contents.len() + prefixes.len()).to_string(),
        ));
    }
    s.push_str("</ListBucketResult>");
    Ok(xml_response(s))
}
