//! Parsers under hostile input: everything a server, an archive or a config file can hand us
//! is parsed without panicking, round-trips where we also write it, and never allocates in
//! proportion to a number the input merely declares (a counting allocator checks that).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::time::SystemTime;

use proptest::prelude::*;

use ossrelay::oss::error::{ErrorContext, OssError};
use ossrelay::oss::xml;
use ossrelay::transfer::tar;

// --- a per-thread peak-allocation counter -------------------------------------------------

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = LIVE.try_with(|l| {
        let v = (l.get() as isize + delta).max(0) as usize;
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size() as isize);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        note(-(l.size() as isize));
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new as isize - l.size() as isize);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Peak bytes allocated on this thread by `f`, above what was live before.
fn peak_alloc<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, PEAK.with(|p| p.get()) - base)
}

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Byte-level damage: flips, truncation, insertion of XML-ish fragments.
fn mutate(mut doc: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    const FRAGS: [&[u8]; 8] = [
        b"<",
        b"</Part>",
        b"<Part>",
        b"&amp;",
        b"&#xFFFFFFFF;",
        b"<![CDATA[",
        b"\xff\xfe",
        b"99999999999999999999999",
    ];
    for &(pos, op, byte) in edits {
        if doc.is_empty() {
            break;
        }
        let i = pos % doc.len();
        match op % 4 {
            0 => doc[i] = byte,
            1 => doc.truncate(i),
            2 => {
                let f = FRAGS[byte as usize % FRAGS.len()];
                doc.splice(i..i, f.iter().copied());
            }
            _ => {
                doc.remove(i);
            }
        }
    }
    doc
}

fn list_parts_doc(parts: &[(u32, u64, String, Option<u64>)], truncated: bool) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListPartsResult><Bucket>b</Bucket><Key>k</Key><UploadId>u</UploadId>",
    );
    s += &format!(
        "<IsTruncated>{truncated}</IsTruncated><NextPartNumberMarker>{}</NextPartNumberMarker><MaxParts>1000</MaxParts>",
        parts.last().map_or(0, |p| p.0)
    );
    for (n, size, etag, crc) in parts {
        s += &format!(
            "<Part><PartNumber>{n}</PartNumber><LastModified>2024-01-01T00:00:00.000Z</LastModified><ETag>&quot;{etag}&quot;</ETag><Size>{size}</Size>"
        );
        if let Some(c) = crc {
            s += &format!("<HashCrc64ecma>{c}</HashCrc64ecma>");
        }
        s += "</Part>";
    }
    s + "</ListPartsResult>"
}

fn all_oss_parsers(b: &[u8]) {
    let _ = xml::parse(b);
    let _ = xml::parse_list_parts(b);
    let _ = xml::parse_list_uploads(b);
    let _ = xml::parse_initiate(b);
    let _ = xml::parse_complete(b);
    let _ = xml::parse_bucket_info(b);
    let _ = xml::parse_lifecycle(b);
    let _ = xml::parse_error_fields(b);
}

fn error_from(status: u16, headers: &http::HeaderMap, body: &[u8]) -> OssError {
    let ctx = ErrorContext {
        operation: "GetObject",
        bucket: Some("bkt"),
        key: Some("k"),
        region_flag: "--src-region",
        signing_region: "cn-hangzhou",
        endpoint_host: "127.0.0.1",
    };
    OssError::from_response(status, headers, body, &ctx)
}

proptest! {
    #![proptest_config(cfg(256))]

    #[test]
    fn oss_xml_parsers_survive_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..2048)) {
        all_oss_parsers(&b);
    }

    #[test]
    fn list_parts_round_trips_and_survives_mutation(
        parts in proptest::collection::vec(
            (1u32..=10_000, any::<u64>(), "[0-9A-F]{32}", proptest::option::of(any::<u64>())),
            0..40,
        ),
        truncated in any::<bool>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..8),
    ) {
        let doc = list_parts_doc(&parts, truncated);
        let page = xml::parse_list_parts(doc.as_bytes()).unwrap();
        prop_assert_eq!(page.parts.len(), parts.len());
        prop_assert_eq!(page.is_truncated, truncated);
        for (got, want) in page.parts.iter().zip(&parts) {
            prop_assert_eq!(got.number, want.0);
            prop_assert_eq!(got.size, want.1);
            prop_assert_eq!(&got.etag, &want.2);
            prop_assert_eq!(got.checksums.crc64_xz(), want.3);
        }
        all_oss_parsers(&mutate(doc.into_bytes(), &edits));
    }

    #[test]
    fn complete_body_round_trips(
        parts in proptest::collection::vec((1u32..=10_000, "[0-9A-F]{32}"), 0..50),
    ) {
        let body = xml::build_complete(&parts);
        let root = xml::parse(body.as_bytes()).unwrap();
        let got: Vec<(u32, String)> = root
            .children_named("Part")
            .map(|p| {
                (
                    p.child_text("PartNumber").unwrap().parse().unwrap(),
                    xml::unquote_etag(p.child_text("ETag").unwrap()),
                )
            })
            .collect();
        prop_assert_eq!(got, parts);
    }

    #[test]
    fn list_uploads_and_initiate_survive_mutation(
        keys in proptest::collection::vec("[a-zA-Z0-9/%+. _-]{0,40}", 0..20),
        url in any::<bool>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..8),
    ) {
        let mut doc = String::from("<ListMultipartUploadsResult>");
        if url {
            doc += "<EncodingType>url</EncodingType>";
        }
        doc += "<IsTruncated>true</IsTruncated><NextKeyMarker>%ZZ%</NextKeyMarker><NextUploadIdMarker>x</NextUploadIdMarker>";
        for k in &keys {
            doc += &format!("<Upload><Key>{}</Key><UploadId>id</UploadId><Initiated>2024</Initiated></Upload>", k.replace('&', "&amp;").replace('<', "&lt;"));
        }
        doc += "</ListMultipartUploadsResult>";
        let page = xml::parse_list_uploads(doc.as_bytes()).unwrap();
        prop_assert_eq!(page.uploads.len(), keys.len());
        if !url {
            for (u, k) in page.uploads.iter().zip(&keys) {
                prop_assert_eq!(&u.key, k);
            }
        }
        all_oss_parsers(&mutate(doc.into_bytes(), &edits));
        let init = format!("<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>{}</UploadId></InitiateMultipartUploadResult>", keys.first().map(|k| k.replace(['&', '<'], "")).unwrap_or_else(|| "u".into()));
        all_oss_parsers(&mutate(init.into_bytes(), &edits));
    }

    /// Whatever a server puts in an error, the message is one line of bounded length, and it
    /// never panics (bodies, base64 `x-oss-err`, odd headers).
    #[test]
    fn oss_errors_are_one_bounded_line(
        status in 100u16..600,
        code in "[ -~\n\r\t]{0,40}",
        message in "(?s).{0,3000}",
        ec in "[ -~]{0,40}",
        raw in proptest::collection::vec(any::<u8>(), 0..512),
        use_header in any::<bool>(),
    ) {
        let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;");
        let body = format!(
            "<?xml version=\"1.0\"?><Error><Code>{}</Code><Message>{}</Message><RequestId>{}</RequestId><HostId>h</HostId><EC>{}</EC><ServerTime>{}</ServerTime></Error>",
            esc(&code), esc(&message), esc(&ec), esc(&ec), esc(&code)
        );
        let mut headers = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&ec) {
            headers.insert("x-oss-ec", v.clone());
            headers.insert("date", v);
        }
        let e = if use_header {
            use base64::Engine;
            headers.insert(
                "x-oss-err",
                http::HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(body.as_bytes())).unwrap(),
            );
            error_from(status, &headers, b"")
        } else {
            error_from(status, &headers, body.as_bytes())
        };
        let shown = e.to_string();
        prop_assert!(!shown.contains('\n') && !shown.contains('\r'), "multi-line: {:?}", shown);
        prop_assert!(shown.len() <= 2048, "{} bytes: {:?}", shown.len(), shown);
        let raw_err = error_from(status, &headers, &raw).to_string();
        prop_assert!(!raw_err.contains('\n') && !raw_err.contains('\r'), "multi-line: {:?}", raw_err);
    }

    #[test]
    fn tar_reader_survives_arbitrary_and_mutated_headers(
        junk in proptest::collection::vec(any::<u8>(), 0..2048),
        name in "[a-zA-Z0-9._/-]{1,100}",
        size in any::<u64>(),
        kind in prop_oneof![Just(b'0'), Just(b'5'), Just(b'x'), Just(b'L'), Just(b'g'), any::<u8>()],
        flips in proptest::collection::vec((0usize..512, any::<u8>()), 0..6),
        fix_checksum in any::<bool>(),
    ) {
        let _ = tar::next_header(&mut junk.as_slice());
        // A valid header reads back as written.
        let h = tar::gnu_header(&name, size, b'0');
        let mut one = h.to_vec();
        one.extend_from_slice(&[0u8; 1024]);
        let m = tar::next_header(&mut one.as_slice()).unwrap().unwrap();
        if name.len() <= 100 {
            prop_assert_eq!(&m.name, &name);
        }
        prop_assert_eq!(m.size, size);
        // Damaged (and then re-checksummed, to get past the checksum) headers of any kind.
        let mut h = tar::gnu_header(&name, size, kind).to_vec();
        for (i, b) in &flips {
            h[*i] = *b;
        }
        if fix_checksum {
            h[148..156].copy_from_slice(b"        ");
            let sum: u32 = h.iter().map(|&b| b as u32).sum();
            h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        }
        h.extend_from_slice(&junk);
        let (_, peak) = peak_alloc(|| tar::next_header(&mut h.as_slice()));
        // Extended headers are capped at 1 MiB; the declared size (up to 2^64) is not trusted.
        prop_assert!(peak < 4 << 20, "allocated {} bytes", peak);
    }

    #[test]
    fn config_files_survive_arbitrary_text(text in "(?s).{0,1500}", name in "[a-z]{0,8}") {
        use ossrelay::credentials::{ini::IniFile, profile::ProfileFile};
        if let Ok(f) = IniFile::parse(&text, Path::new("credentials")) {
            let _ = f.credentials_for(&name);
            let _ = f.credentials_for("default");
        }
        if let Ok(f) = ProfileFile::parse(&text, Path::new("config.json")) {
            for n in f.names() {
                let _ = f.credentials_for(n);
            }
            let _ = f.credentials_for(&name);
        }
    }

    #[test]
    fn config_json_survives_structured_mutation(
        mode in prop_oneof![Just("AK".to_string()), Just("StsToken".to_string()), Just("RamRoleArn".to_string()), Just("EcsRamRole".to_string()), Just("ChainableRamRoleArn".to_string()), "[A-Za-z]{0,12}"],
        fields in proptest::collection::vec(("[a-z_]{1,20}", prop_oneof![
            "[ -~]{0,30}".prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            Just(serde_json::json!([1, {"a": []}])),
        ]), 0..10),
        ini_lines in proptest::collection::vec(prop_oneof![
            Just("[default]".to_string()), Just("[profile x]".to_string()),
            "[a-z_]{1,20} = [ -~]{0,30}", "[ -~]{0,40}",
        ], 0..12),
    ) {
        use ossrelay::credentials::{ini::IniFile, profile::ProfileFile};
        let mut p = serde_json::json!({"name": "p", "mode": mode});
        for (k, v) in &fields {
            p[k] = v.clone();
        }
        let doc = serde_json::json!({"current": "p", "profiles": [p]}).to_string();
        if let Ok(f) = ProfileFile::parse(&doc, Path::new("config.json")) {
            let _ = f.credentials_for("p");
        }
        let ini = ini_lines.join("\n");
        if let Ok(f) = IniFile::parse(&ini, Path::new("credentials")) {
            let _ = f.credentials_for("default");
            let _ = f.credentials_for("x");
        }
    }

    /// ECS, RAM and STS answers: arbitrary bytes and mutated JSON go through the typed
    /// decoding and the accessors the engine uses, without panicking.
    #[test]
    fn ecs_and_sts_json_survive_hostile_bodies(
        junk in proptest::collection::vec(any::<u8>(), 0..1024),
        status in 100u16..600,
        percent in "[ -~]{0,12}",
        size in "[ -~]{0,12}",
        expiration in "[ -~]{0,30}",
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..6),
    ) {
        use ossrelay::acs::ecs::{ImageList, TaskAttribute, TaskList};
        use ossrelay::acs::sts::{AssumeRoleOutput, CallerIdentity};
        let creds = ossrelay::credentials::Credentials::new("LTAIid", "hostile-secret");
        let task = serde_json::json!({
            "RequestId": "r", "TaskId": "t-1", "TaskStatus": "Processing", "TaskProcess": percent,
            "TaskAction": "ExportImage", "SupportCancel": "true", "CreationTime": expiration,
            "OperationProgressSet": {"OperationProgress": [{"OperationStatus": "Failed", "ErrorCode": percent, "ErrorMsg": size,
                "RelatedItemSet": {"RelatedItem": [{"Name": "OSSObject", "Value": size}]}}]}
        }).to_string();
        let images = serde_json::json!({
            "RequestId": "r", "TotalCount": 1, "Images": {"Image": [{"ImageId": "m-1", "Size": size, "Progress": percent,
            "DiskDeviceMappings": {"DiskDeviceMapping": [{"Type": "system", "Size": size, "Device": percent}]},
            "Tags": {"Tag": {"TagKey": "k", "TagValue": "v"}}}]}
        }).to_string();
        let sts = serde_json::json!({
            "RequestId": "r", "Credentials": {"AccessKeyId": "STS.x", "AccessKeySecret": "s", "SecurityToken": "t", "Expiration": expiration},
            "AssumedRoleUser": {"Arn": "a", "AssumedRoleId": "i"}
        }).to_string();
        for body in [junk.clone(), mutate(task.into_bytes(), &edits), mutate(images.into_bytes(), &edits), mutate(sts.into_bytes(), &edits)] {
            if let Ok(t) = serde_json::from_slice::<TaskAttribute>(&body) {
                let _ = (t.percent(), t.failure(), t.cancellable(), t.exported_objects("b"));
            }
            if let Ok(l) = serde_json::from_slice::<TaskList>(&body) {
                let _ = format!("{l:?}");
            }
            if let Ok(l) = serde_json::from_slice::<ImageList>(&body) {
                for i in &l.images {
                    let _ = (i.system_disk().map(|d| d.size_gib()), i.data_disks(), i.percent(), i.tag("k"));
                }
            }
            let _ = serde_json::from_slice::<AssumeRoleOutput>(&body);
            let _ = serde_json::from_slice::<CallerIdentity>(&body);
            let s = http::StatusCode::from_u16(status).unwrap();
            if let Err(e) = ossrelay::acs::rpc::interpret_response("DescribeTasks", "https://ecs.example", s, None, &body, &creds) {
                let shown = e.to_string();
                prop_assert!(!shown.contains('\n'), "multi-line: {:?}", shown);
                prop_assert!(!shown.contains("hostile-secret"));
            }
        }
    }

    /// The simulator's signature verifier (V1 and V4, header and presigned) on arbitrary and
    /// structurally valid-but-mutated Authorization values.
    #[test]
    fn sim_auth_parser_survives_hostile_headers(
        scheme in prop_oneof![Just("OSS4-HMAC-SHA256 ".to_string()), Just("OSS ".to_string()), Just(String::new()), "[ -~]{0,10}"],
        rest in "[ -~]{0,300}",
        cred_parts in proptest::collection::vec("[ -~]{0,12}", 0..7),
        additional in "[ -~;]{0,40}",
        sig in "[0-9a-f]{0,70}",
        date in "[0-9TZ]{0,20}",
        query in proptest::collection::vec(("[ -~]{0,24}", "[ -~]{0,40}"), 0..6),
        presign in any::<bool>(),
    ) {
        use ossrelay_sim::auth::{verify, AuthRequest, KeyInfo};
        let lookup = |ak: &str| {
            (ak == "LTAIkey").then(|| KeyInfo { secret: "s".into(), account: "1".into(), token: None })
        };
        let structured = format!(
            "OSS4-HMAC-SHA256 Credential={},AdditionalHeaders={additional},Signature={sig}",
            cred_parts.join("/")
        );
        for auth in [format!("{scheme}{rest}"), structured, format!("OSS LTAIkey:{rest}")] {
            let mut headers = http::HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(&auth) {
                headers.insert("authorization", v);
            }
            if let Ok(v) = http::HeaderValue::from_str(&date) {
                headers.insert("x-oss-date", v.clone());
                headers.insert("date", v);
            }
            let mut q: Vec<(String, String)> = query.clone();
            if presign {
                headers.remove("authorization");
                q.push(("x-oss-signature-version".into(), "OSS4-HMAC-SHA256".into()));
                q.push(("x-oss-credential".into(), cred_parts.join("/")));
                q.push(("x-oss-date".into(), date.clone()));
                q.push(("x-oss-expires".into(), rest.chars().take(12).collect()));
                q.push(("x-oss-signature".into(), sig.clone()));
                q.push(("OSSAccessKeyId".into(), "LTAIkey".into()));
                q.push(("Expires".into(), date.clone()));
                q.push(("Signature".into(), rest.clone()));
            }
            let req = AuthRequest { method: "GET", bucket: Some("bkt"), key: "k", query: &q, headers: &headers };
            let _ = verify(&req, "cn-hangzhou", SystemTime::now(), &lookup);
        }
    }
}

/// A ListParts page declaring a billion parts, huge sizes and markers allocates for what it
/// contains, not for what it claims.
#[test]
fn declared_counts_do_not_drive_allocation() {
    let doc = format!(
        "<ListPartsResult><IsTruncated>true</IsTruncated><MaxParts>1000000000</MaxParts>\
         <NextPartNumberMarker>4294967295</NextPartNumberMarker><PartNumberMarker>999999999999</PartNumberMarker>{}\
         </ListPartsResult>",
        "<Part><PartNumber>1000000000</PartNumber><Size>18446744073709551615</Size><ETag>x</ETag></Part>"
            .repeat(3)
    );
    let (page, peak) = peak_alloc(|| xml::parse_list_parts(doc.as_bytes()));
    let page = page.unwrap();
    assert_eq!(page.parts.len(), 3);
    assert_eq!(page.next_part_number_marker, Some(u32::MAX));
    assert!(peak < 256 << 10, "parsing 3 parts allocated {peak} bytes");
    // A Size beyond u64 is an error, not a wrap-around.
    let over = doc.replace("18446744073709551615", "18446744073709551616");
    assert!(xml::parse_list_parts(over.as_bytes()).is_err());
    // Deep nesting (a billion-laughs cousin without entities) stays proportional to input.
    let deep = format!("{}{}", "<a>".repeat(20_000), "</a>".repeat(20_000));
    let (_, peak) = peak_alloc(|| xml::parse(deep.as_bytes()));
    assert!(peak < 64 << 20, "deep nesting allocated {peak} bytes");
    // Entity expansion is not a thing: an undeclared entity is an error or literal, not a bomb.
    let bomb = "<!DOCTYPE x [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">]><Error><Code>&c;&c;&c;&c;</Code></Error>";
    let (fields, peak) = peak_alloc(|| xml::parse_error_fields(bomb.as_bytes()));
    assert!(peak < 1 << 20, "entities allocated {peak} bytes");
    assert!(fields.get("Code").map_or(0, |c| c.len()) < 1000);
    // A tar PAX header declaring 2^63 bytes is refused before any buffer is sized for it.
    let mut h = tar::gnu_header("pax", 1 << 62, b'x').to_vec();
    h.extend_from_slice(&[0u8; 1024]);
    let (r, peak) = peak_alloc(|| tar::next_header(&mut h.as_slice()));
    assert!(r.is_err());
    assert!(peak < 64 << 10, "allocated {peak} bytes");
}
