//! Every vector of s3-protocol.md §4. Values are copied from the reference, never recomputed
//! by this code.

use super::*;

const AK: &str = "AKIAIOSFODNN7EXAMPLE";
const SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn t(s: &str) -> SystemTime {
    parse_amz_datetime(s).unwrap()
}

fn s3_params() -> SigningParams<'static> {
    SigningParams {
        access_key_id: AK,
        secret_access_key: SK,
        session_token: None,
        region: "us-east-1",
        service: "s3",
        time: t("20130524T000000Z"),
    }
}

fn suite_params() -> SigningParams<'static> {
    SigningParams {
        access_key_id: "AKIDEXAMPLE",
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token: None,
        region: "us-east-1",
        service: "service",
        time: t("20150830T123600Z"),
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn sign(method: &str, uri: &str, h: &mut HeaderMap, payload: &str, p: &SigningParams) -> Signed {
    sign_headers_detailed(
        &method.parse().unwrap(),
        &uri.parse().unwrap(),
        h,
        payload,
        p,
    )
}

#[test]
fn signing_key_check_value() {
    assert_eq!(
        hex::encode(signing_key(SK, "20130524", "us-east-1", "s3")),
        "dbb893acc010964918f1fd433add87c70e8b0db6be30c1fbeafefa5ec6ba8378"
    );
    assert_eq!(
        hex::encode(s3_params().signing_key()),
        "dbb893acc010964918f1fd433add87c70e8b0db6be30c1fbeafefa5ec6ba8378"
    );
}

#[test]
fn v_get() {
    let mut h = headers(&[
        ("host", "examplebucket.s3.amazonaws.com"),
        ("range", "bytes=0-9"),
    ]);
    let s = sign("GET", "/test.txt", &mut h, EMPTY_SHA256, &s3_params());
    assert_eq!(
        s.canonical_request,
        "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
         x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
         x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256_hex(s.canonical_request.as_bytes()),
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    );
    assert_eq!(
        s.signature,
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    );
    assert_eq!(
        h[AUTHORIZATION],
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    );
    assert_eq!(h["x-amz-date"], "20130524T000000Z");
    assert_eq!(h["x-amz-content-sha256"], EMPTY_SHA256);
}

#[test]
fn v_get_host_from_uri_authority() {
    let mut h = headers(&[("range", "bytes=0-9")]);
    let s = sign(
        "GET",
        "https://examplebucket.s3.amazonaws.com:443/test.txt",
        &mut h,
        EMPTY_SHA256,
        &s3_params(),
    );
    assert_eq!(
        s.signature,
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    );
}

#[test]
fn v_put() {
    let body = b"Welcome to Amazon S3.";
    let payload = sha256_hex(body);
    assert_eq!(
        payload,
        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    );
    let mut h = headers(&[
        ("date", "Fri, 24 May 2013 00:00:00 GMT"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
    ]);
    let s = sign(
        "PUT",
        "https://examplebucket.s3.amazonaws.com/test$file.text",
        &mut h,
        &payload,
        &s3_params(),
    );
    assert!(s
        .canonical_request
        .starts_with("PUT\n/test%24file.text\n\n"));
    assert_eq!(
        sha256_hex(s.canonical_request.as_bytes()),
        "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d"
    );
    assert_eq!(
        s.signature,
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
    );
    assert_eq!(
        s.signed_headers,
        "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class"
    );
}

#[test]
fn v_lifecycle_and_list() {
    let mut h = HeaderMap::new();
    let s = sign(
        "GET",
        "https://examplebucket.s3.amazonaws.com/?lifecycle",
        &mut h,
        EMPTY_SHA256,
        &s3_params(),
    );
    assert!(s.canonical_request.starts_with("GET\n/\nlifecycle=\n"));
    assert_eq!(
        sha256_hex(s.canonical_request.as_bytes()),
        "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca"
    );
    assert_eq!(
        s.signature,
        "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
    );

    let mut h = HeaderMap::new();
    let s = sign(
        "GET",
        "https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J",
        &mut h,
        EMPTY_SHA256,
        &s3_params(),
    );
    assert!(s
        .canonical_request
        .starts_with("GET\n/\nmax-keys=2&prefix=J\n"));
    assert_eq!(
        sha256_hex(s.canonical_request.as_bytes()),
        "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7"
    );
    assert_eq!(
        s.signature,
        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
    );
}

#[test]
fn v_presign() {
    let url = presign_url(
        &Method::GET,
        &"https://examplebucket.s3.amazonaws.com/test.txt"
            .parse()
            .unwrap(),
        Duration::from_secs(86400),
        &s3_params(),
    );
    assert_eq!(
        url.to_string(),
        "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    );
}

fn chunk_data() -> Vec<u8> {
    vec![b'a'; 66560]
}

#[test]
fn v_chunked() {
    assert_eq!(signed_chunked_length(66560, 65536), 66824);
    let mut h = headers(&[
        ("content-encoding", "aws-chunked"),
        ("content-length", "66824"),
        ("x-amz-decoded-content-length", "66560"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
    ]);
    let p = s3_params();
    let s = sign(
        "PUT",
        "https://s3.amazonaws.com/examplebucket/chunkObject.txt",
        &mut h,
        STREAMING_PAYLOAD,
        &p,
    );
    assert_eq!(
        sha256_hex(s.canonical_request.as_bytes()),
        "cee3fed04b70f867d036f722359b0b1f2f0e5dc0efadbc082b76c4c60e316455"
    );
    assert_eq!(
        s.signature,
        "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    );
    let data = chunk_data();
    assert_eq!(
        sha256_hex(&data[..65536]),
        "bf718b6f653bebc184e1479f1935b8da974d701b893afcf49e701f3e2f9f9c5a"
    );
    assert_eq!(
        sha256_hex(&data[65536..]),
        "2edc986847e209b4016e141a6dc8716d3207350f416969382d431539bf292e4a"
    );
    let (key, dt, scope) = (p.signing_key(), p.datetime(), p.scope());
    let c1 = chunk_signature(&key, &dt, &scope, &s.signature, &data[..65536]);
    assert_eq!(
        c1,
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
    );
    let c2 = chunk_signature(&key, &dt, &scope, &c1, &data[65536..]);
    assert_eq!(
        c2,
        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
    );
    let c3 = chunk_signature(&key, &dt, &scope, &c2, b"");
    assert_eq!(
        c3,
        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
    );
}

#[test]
fn v_trailer() {
    let mut h = headers(&[
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("x-amz-trailer", "x-amz-checksum-crc32c"),
    ]);
    let p = s3_params();
    let s = sign(
        "PUT",
        "https://s3.amazonaws.com/examplebucket/chunkObject.txt",
        &mut h,
        STREAMING_PAYLOAD_TRAILER,
        &p,
    );
    assert_eq!(
        s.signed_headers,
        "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer"
    );
    assert_eq!(
        sha256_hex(s.canonical_request.as_bytes()),
        "44d48b8c2f70eae815a0198cc73d7a546a73a93359c070abbaa5e6c7de112559"
    );
    assert_eq!(
        s.signature,
        "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
    );
    let data = chunk_data();
    let (key, dt, scope) = (p.signing_key(), p.datetime(), p.scope());
    let c1 = chunk_signature(&key, &dt, &scope, &s.signature, &data[..65536]);
    assert_eq!(
        c1,
        "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2"
    );
    let c2 = chunk_signature(&key, &dt, &scope, &c1, &data[65536..]);
    assert_eq!(
        c2,
        "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7"
    );
    let c3 = chunk_signature(&key, &dt, &scope, &c2, b"");
    assert_eq!(
        c3,
        "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992"
    );
    let trailer = b"x-amz-checksum-crc32c:sOO8/Q==\n";
    assert_eq!(
        sha256_hex(trailer),
        "1e376db7e1a34a8ef1c4bcee131a2d60a1cb62503747488624e10995f448d774"
    );
    assert_eq!(
        trailer_signature(&key, &dt, &scope, &c3, trailer),
        "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"
    );
}

/// aws-sig-v4-test-suite: service `service`, generic (double-encoding, normalising) rules.
fn suite(uri: &str) -> Signed {
    let mut h = HeaderMap::new();
    let uri = format!("https://example.amazonaws.com{uri}");
    sign("GET", &uri, &mut h, EMPTY_SHA256, &suite_params())
}

/// The same on a raw wire path an `http::Uri` cannot hold.
fn suite_raw(path: &str, normalize: bool) -> Signed {
    let p = suite_params();
    let mut h = headers(&[("x-amz-date", &p.datetime())]);
    sign_raw(
        "GET",
        &canonical_uri_with(path, normalize, true),
        "",
        "example.amazonaws.com",
        &mut h,
        EMPTY_SHA256,
        &p,
    )
}

#[test]
fn suite_get_vanilla() {
    let mut h = HeaderMap::new();
    let s = sign(
        "GET",
        "https://example.amazonaws.com/",
        &mut h,
        EMPTY_SHA256,
        &suite_params(),
    );
    assert!(!h.contains_key("x-amz-content-sha256"), "s3 only");
    assert_eq!(
        sha256_hex(s.canonical_request.as_bytes()),
        "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
    );
    assert_eq!(
        s.signature,
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
    // The suite writes ", " between parts; we send "," like the S3 docs (both are accepted).
    assert_eq!(
        s.authorization.replace(",Signature", ", Signature"),
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request,SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
}

#[test]
fn suite_query_order_key_case() {
    let s = suite("/?Param2=value2&Param1=value1");
    assert!(s
        .canonical_request
        .contains("\nParam1=value1&Param2=value2\n"));
    assert_eq!(
        s.signature,
        "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
    );
}

#[test]
fn suite_get_utf8() {
    let s = suite_raw("/ሴ", true);
    assert!(s.canonical_request.starts_with("GET\n/%E1%88%B4\n"));
    assert_eq!(
        s.signature,
        "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"
    );
}

#[test]
fn suite_get_space_unnormalized() {
    let s = suite_raw("/example space/", false);
    assert!(s.canonical_request.starts_with("GET\n/example%20space/\n"));
    assert_eq!(
        s.signature,
        "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741"
    );
}

#[test]
fn suite_slashes_unnormalized_and_normalized() {
    let s = suite_raw("//example//", false);
    assert!(s.canonical_request.starts_with("GET\n//example//\n"));
    assert_eq!(
        s.signature,
        "87cca117541a147f6df867677d98a7d80dff226d2bfca9e4ffa899665623c7e5"
    );
    // Through the public API a non-S3 service normalises.
    let s = suite("//example//");
    assert!(s.canonical_request.starts_with("GET\n/example/\n"));
    assert_eq!(
        s.signature,
        "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84"
    );
    // … and S3 does not.
    assert_eq!(canonical_uri("//example//", "s3"), "//example//");
    assert_eq!(canonical_uri("/a/../b/./c", "s3"), "/a/../b/./c");
}

#[test]
fn suite_session_token() {
    let p = SigningParams {
        session_token: Some("6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"),
        ..suite_params()
    };
    let mut h = HeaderMap::new();
    let s = sign(
        "GET",
        "https://example.amazonaws.com/",
        &mut h,
        EMPTY_SHA256,
        &p,
    );
    assert_eq!(s.signed_headers, "host;x-amz-date;x-amz-security-token");
    assert_eq!(
        s.signature,
        "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
    );
    assert!(h.contains_key("x-amz-security-token"));
}

#[test]
fn suite_query_form() {
    let url = presign_url(
        &Method::GET,
        &"https://example.amazonaws.com/".parse().unwrap(),
        Duration::from_secs(3600),
        &suite_params(),
    );
    assert!(
        url.to_string().ends_with(
            "&X-Amz-Signature=e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d"
        ),
        "{url}"
    );
}

#[test]
fn header_values_are_trimmed_and_collapsed() {
    let h = headers(&[("x-amz-meta-a", "  one   two  "), ("x-amz-meta-a", "three")]);
    let (block, signed) = canonical_headers(&h, "h");
    assert_eq!(block, "host:h\nx-amz-meta-a:one two,three\n");
    assert_eq!(signed, "host;x-amz-meta-a");
}

#[test]
fn hop_by_hop_headers_are_not_signed() {
    let h = headers(&[("user-agent", "x"), ("transfer-encoding", "chunked")]);
    assert_eq!(canonical_headers(&h, "h").1, "host");
}

#[test]
fn query_encoding_encodes_slash_and_keeps_plus_literal() {
    assert_eq!(
        canonical_query("prefix=a/b&uploads&key-marker=x%20y"),
        "key-marker=x%20y&prefix=a%2Fb&uploads="
    );
    assert_eq!(canonical_query("k=a+b"), "k=a%2Bb");
}

#[test]
fn s3_path_encoding_is_canonicalised_once() {
    assert_eq!(canonical_uri("/a%20b/c d", "s3"), "/a%20b/c%20d");
    assert_eq!(canonical_uri("/k%2fv", "s3"), "/k%2Fv");
    // Generic services encode the wire form again.
    assert_eq!(canonical_uri("/a%20b", "sts"), "/a%2520b");
}

#[test]
fn resigning_replaces_previous_signature_and_token() {
    let p = SigningParams {
        session_token: Some("tok"),
        ..s3_params()
    };
    let mut h = headers(&[("host", "examplebucket.s3.amazonaws.com")]);
    sign("GET", "/test.txt", &mut h, EMPTY_SHA256, &p);
    sign("GET", "/test.txt", &mut h, EMPTY_SHA256, &s3_params());
    assert!(!h.contains_key("x-amz-security-token"));
    assert_eq!(h.get_all(AUTHORIZATION).iter().count(), 1);
}

#[test]
fn debug_redacts_secrets() {
    let p = SigningParams {
        session_token: Some("TOKENVALUE"),
        ..s3_params()
    };
    let d = format!("{p:?}");
    assert!(!d.contains(SK) && !d.contains("TOKENVALUE"), "{d}");
    assert!(d.contains(AK));
}

#[test]
fn presign_carries_token_and_clamps_expiry() {
    let p = SigningParams {
        session_token: Some("a/b+c"),
        ..s3_params()
    };
    let url = presign_url(
        &Method::GET,
        &"http://127.0.0.1:9000/b/k?versionId=1".parse().unwrap(),
        Duration::from_secs(10_000_000),
        &p,
    )
    .to_string();
    assert!(url.starts_with("http://127.0.0.1:9000/b/k?"), "{url}");
    assert!(url.contains("X-Amz-Expires=604800"), "{url}");
    assert!(url.contains("X-Amz-Security-Token=a%2Fb%2Bc"), "{url}");
    assert!(url.contains("versionId=1"), "{url}");
}
