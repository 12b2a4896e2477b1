//! Body adapters: what hyper sends (bytes, nothing, or a one-shot stream of known length) and
//! what callers read (a [`crate::store::ByteStream`] under the stall timer).

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::transport::Activity;
use crate::store::{ByteStream, ErrorClass, StoreError};

/// A request body handed to hyper. Stream chunks pass through untouched (no copies).
pub enum ReqBody {
    Empty,
    /// Bytes in memory: the request is replayable.
    Full(Option<Bytes>),
    /// A one-shot stream of exactly `remaining` bytes: the request is not replayable.
    Stream {
        stream: ByteStream,
        remaining: u64,
        /// Set by the transport: every chunk taken proves the peer is still reading.
        activity: Option<Arc<Activity>>,
    },
}

impl ReqBody {
    /// Bytes that can be sent again.
    pub fn full(b: Bytes) -> Self {
        ReqBody::Full(Some(b))
    }

    /// A one-shot stream that must yield exactly `len` bytes.
    pub fn stream(stream: ByteStream, len: u64) -> Self {
        ReqBody::Stream {
            stream,
            remaining: len,
            activity: None,
        }
    }

    pub(super) fn track(&mut self, a: &Arc<Activity>) {
        if let ReqBody::Stream { activity, .. } = self {
            *activity = Some(a.clone());
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = StoreError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StoreError>>> {
        match &mut *self {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ReqBody::Stream {
                stream,
                remaining,
                activity,
            } => loop {
                match ready!(stream.as_mut().poll_next(cx)) {
                    Some(Ok(chunk)) => {
                        if chunk.is_empty() {
                            continue;
                        }
                        let n = chunk.len() as u64;
                        if n > *remaining {
                            return Poll::Ready(Some(Err(StoreError::new(
                                ErrorClass::Client,
                                format!("request body is longer than its declared length ({} extra bytes)", n - *remaining),
                            ))));
                        }
                        *remaining -= n;
                        if let Some(a) = activity {
                            a.touch();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                    Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                    None if *remaining > 0 => {
                        return Poll::Ready(Some(Err(StoreError::transient(format!(
                            "request body ended {} bytes short of its declared length",
                            remaining
                        )))))
                    }
                    None => return Poll::Ready(None),
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Full(b) => b.is_none(),
            ReqBody::Stream { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ReqBody::Stream { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

/// A response body as a [`ByteStream`] source: hyper errors, silence longer than the stall
/// timeout, and a body shorter or longer than expected all end it with a transient error.
pub struct BodyStream {
    body: Incoming,
    idle: Pin<Box<tokio::time::Sleep>>,
    idle_timeout: Duration,
    last_data: Instant,
    expected: Option<u64>,
    received: u64,
    what: String,
    done: bool,
}

impl BodyStream {
    /// `what` names the request in errors; `expected` is the exact length, when known.
    pub fn new(
        body: Incoming,
        expected: Option<u64>,
        idle_timeout: Duration,
        what: String,
    ) -> Self {
        BodyStream {
            body,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            last_data: Instant::now(),
            expected,
            received: 0,
            what,
            done: false,
        }
    }

    fn fail(&mut self, msg: String) -> Poll<Option<Result<Bytes, StoreError>>> {
        self.done = true;
        Poll::Ready(Some(Err(StoreError::transient(msg))))
    }
}

impl Stream for BodyStream {
    type Item = Result<Bytes, StoreError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    this.received += data.len() as u64;
                    if let Some(exp) = this.expected {
                        if this.received > exp {
                            let msg = format!(
                                "{}: response body longer than the expected {exp} bytes",
                                this.what
                            );
                            return this.fail(msg);
                        }
                    }
                    // Resetting the timer per chunk is costly at GB/s; remember the time
                    // and push the deadline out only when it fires.
                    this.last_data = Instant::now();
                    return Poll::Ready(Some(Ok(data)));
                }
                Poll::Ready(Some(Err(e))) => {
                    let msg = format!(
                        "{}: response body broke off after {} bytes: {}",
                        this.what,
                        this.received,
                        error_chain(&e)
                    );
                    return this.fail(msg);
                }
                Poll::Ready(None) => {
                    if let Some(exp) = this.expected {
                        if this.received < exp {
                            let msg = format!(
                                "{}: response body truncated: got {} of {exp} bytes",
                                this.what, this.received
                            );
                            return this.fail(msg);
                        }
                    }
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => loop {
                    if this.idle.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let deadline = this.last_data + this.idle_timeout;
                    if Instant::now() >= deadline {
                        let msg = format!(
                            "{}: no data for {:?} after {} bytes (stalled body)",
                            this.what, this.idle_timeout, this.received
                        );
                        return this.fail(msg);
                    }
                    this.idle.as_mut().reset(deadline.into());
                },
            }
        }
    }
}

/// Reads a whole (small) body, at most `limit` bytes, under the stall timer.
pub async fn read_limited(
    body: Incoming,
    limit: usize,
    idle: Duration,
    what: &str,
) -> Result<Bytes, StoreError> {
    let mut s = BodyStream::new(body, None, idle, what.to_string());
    let mut buf = BytesMut::new();
    while let Some(chunk) = s.next().await {
        let chunk = chunk?;
        if buf.len() + chunk.len() > limit {
            return Err(StoreError::transient(format!(
                "{what}: response body larger than {limit} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// An error and its sources as one line, repeated messages folded.
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if parts.last() != Some(&t) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}
