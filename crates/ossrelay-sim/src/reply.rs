//! The HTTP response body every simulated service answers with, and its constructors (leaf).

use std::convert::Infallible;
use std::io;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use http::Response;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;

/// A response body: in memory or streamed.
pub(crate) type Body = UnsyncBoxBody<Bytes, io::Error>;

pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

pub(crate) fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

pub(crate) fn stream_body(s: BoxStream<'static, io::Result<Bytes>>) -> Body {
    StreamBody::new(s.map(|r| r.map(Frame::data))).boxed_unsync()
}

/// A response builder with `status`.
pub(crate) fn response(status: u16) -> http::response::Builder {
    Response::builder().status(status)
}

/// `200` with an XML document.
pub(crate) fn xml_response(body: String) -> Response<Body> {
    response(200)
        .header("content-type", "application/xml")
        .body(full(body))
        .expect("valid response")
}

/// Returned to hyper to drop the connection (reset fault, or the client went away).
#[derive(Debug)]
pub(crate) struct ConnDrop;

impl std::fmt::Display for ConnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the simulator")
    }
}

impl std::error::Error for ConnDrop {}
