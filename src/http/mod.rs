//! One HTTP transport for every client of the crate: OSS ([`crate::oss`]), the Alibaba Cloud
//! RPC APIs ([`crate::acs::rpc`]), the instance metadata service
//! ([`crate::credentials::imds`]) and `ossrelay jobs`, the daemon API's client.
//!
//! # The one rule for failure
//!
//! **The transport retries replayable requests; the transfer engine's part scheduler retries
//! parts; nobody else retries.**
//!
//! * A request is *replayable* when its body can be sent again: no body, or bytes held in
//!   memory (HEAD, GET up to its response head, ListParts, Initiate, Complete, Abort, every
//!   RPC and metadata call). A request with a streaming body (PutObject, UploadPart) is
//!   attempted exactly once: its bytes are gone once sent, and only the part scheduler can
//!   fetch them again (a new ranged GET feeding a new upload).
//! * Whether a failure is retried is decided in one place, [`should_retry`]: the error class
//!   is retryable ([`ErrorClass::Throttled`], [`ErrorClass::Transient`],
//!   [`ErrorClass::ClockSkew`]) and the attempt was not the last one allowed.
//! * Attempts per request are bounded by the client's [`RetryPolicy::max_attempts`], counting
//!   the first: **4** for OSS ([`OSS_MAX_ATTEMPTS`], `OssConfig::max_attempts`), **5** for
//!   the RPC APIs ([`RPC_MAX_ATTEMPTS`]), **1** for the metadata service (it answers in
//!   microseconds or the machine is not an ECS instance; the credentials cache retries the
//!   refresh on its own schedule). A control request of a copy (HEAD, ListParts, Complete…) is
//!   therefore sent at most 4 times, and a part at most `CopyOptions::max_attempts` times
//!   (each time one GET, whose response head the transport may retry, and one upload).
//! * Delays between attempts come from the one [`Backoff`] (jittered exponential, capped),
//!   at least as long as a `Retry-After` the service sent; clock-skew errors retry at once
//!   (the signer's clock was corrected).
//!
//! # Timeouts
//!
//! One stall timer per request ([`Transport::send`]): the response head must arrive within
//! the stall timeout of the last request-body byte sent (so a slow large upload is not cut
//! off, and a peer that stops reading the body is), and each response-body chunk within the
//! stall timeout of the previous one ([`BodyStream`]). `--stall-timeout` sets exactly this
//! timer (through `OssConfig::read_timeout`); the transfer engine keeps no timer of its own
//! for HTTP stores. Connecting has its own limit (`connect_timeout`), and the small-answer
//! clients (RPC, metadata) bound a whole attempt as well ([`Timeouts::attempt`]).
//!
//! # What else lives here
//! * TLS: rustls with the webpki roots, or a private CA ([`Roots`]: `ossrelay jobs --cacert`);
//!   certificate verification cannot be turned off.
//! * Proxies from the environment ([`proxy`]); loopback and the metadata service never go
//!   through one.
//! * Network errors classified into [`ErrorClass`] ([`NetError::class`]); dialects map their
//!   error answers themselves and never widen the taxonomy.
//! * Request metrics: `ossrelay_requests_total{service,operation,status}`,
//!   `ossrelay_request_duration_seconds{operation}` and `ossrelay_retries_total{reason}`.

mod body;
pub mod proxy;
mod transport;

use std::future::Future;
use std::time::Duration;

/// The one retry decision and delay live with the error taxonomy ([`crate::store::retry`]).
pub use crate::store::retry::{should_retry, Backoff};
pub use body::{error_chain, read_limited, BodyStream, ReqBody};
pub use transport::{Metered, NetError, Roots, Timeouts, Transport, TransportConfig};

use crate::store::ErrorClass;

/// Attempts per OSS request (the first included), unless `OssConfig::max_attempts` says
/// otherwise.
pub const OSS_MAX_ATTEMPTS: u32 = 4;
/// Attempts per RPC call (ECS, RAM, STS), unless [`RetryPolicy`] says otherwise.
pub const RPC_MAX_ATTEMPTS: u32 = 5;

/// How often and how patiently one client retries its replayable requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, including the first.
    pub max_attempts: u32,
    /// The first delay is between half of this and this; later ones double.
    pub base_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// The RPC APIs' policy: 5 attempts, 0.5 s doubling up to 20 s.
    fn default() -> Self {
        Self {
            max_attempts: RPC_MAX_ATTEMPTS,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// OSS: `max_attempts`, 0.4 s doubling up to 10 s.
    pub fn oss(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            base_delay: Duration::from_millis(400),
            max_delay: Duration::from_secs(10),
        }
    }

    /// One attempt, no retry (the metadata service; non-replayable requests).
    pub fn once() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// A fresh delay sequence for one request.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.base_delay / 2, self.max_delay)
    }

    /// Delay before attempt `attempt + 1` (attempt counts from 1) after a transient error,
    /// at least `retry_after` when the service asked for it.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let d = self.backoff().delay(attempt, ErrorClass::Transient);
        retry_after.map_or(d, |r| r.max(d))
    }
}

/// What [`retry`] needs to know about a failed attempt.
pub trait Retryable: std::fmt::Display {
    fn class(&self) -> ErrorClass;
    /// The service's `Retry-After` (or `x-acs-retry-after`), if it sent one.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// Whether a request's body can be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// No body, or bytes in memory: the transport may retry it.
    Replayable,
    /// A streaming body: exactly one attempt.
    Once,
}

/// Runs `attempt(n)` for n = 1, 2, … until it succeeds or [`should_retry`] says stop,
/// sleeping the policy's [`Backoff`] (at least the service's `Retry-After`) in between.
/// `attempt` builds the request anew each time (fresh signature, nonce and date).
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    replay: Replay,
    what: &str,
    mut attempt: F,
) -> Result<T, E>
where
    E: Retryable,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let max = match replay {
        Replay::Replayable => policy.max_attempts.max(1),
        Replay::Once => 1,
    };
    let mut backoff = policy.backoff();
    let mut n = 1;
    loop {
        match attempt(n).await {
            Ok(v) => return Ok(v),
            Err(e) if should_retry(e.class(), n, max) => {
                let class = e.class();
                let mut delay = backoff.next(class);
                if let Some(r) = e.retry_after() {
                    delay = delay.max(r);
                }
                metrics::counter!(crate::metrics::RETRIES_TOTAL, "reason" => class.as_str())
                    .increment(1);
                tracing::debug!(what, attempt = n, error = %e, delay_ms = delay.as_millis() as u64, "retrying request");
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                n += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
