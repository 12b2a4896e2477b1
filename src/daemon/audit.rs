//! The audit trail: one structured log line per state-changing API request.
//!
//! Guarantees callers can rely on:
//! * Every request that may change state (any method but GET/HEAD on the API, authenticated
//!   or not) yields exactly one `tracing` event at INFO, message `audit`, with these fields
//!   and no others: `time` (RFC 3339, UTC), `remote` (peer `IP:port`), `caller` (the token's
//!   name, `anonymous` without tokens, `-` when no valid token was sent), `action` (`submit`,
//!   `cancel`, `pause`, `resume`, `delete`, `reload`, or `other`), `job` (the job id, `-` when
//!   none), `status` (the HTTP status answered) and `result` (`ok`, `refused` for 4xx,
//!   `failed` for 5xx).
//! * No field ever holds a token, a credential or a request body: values are either fixed
//!   words, validated job ids, caller names from the token file or numbers.
//! * The event's target is [`TARGET`] (`ossrelay::audit`); `ossrelay serve` logs it at INFO
//!   whatever `--log` says unless the filter names that target itself.

use std::net::SocketAddr;

use http::Method;

/// The `tracing` target of audit events (`ossrelay serve` enables it at INFO unless `--log`
/// names it, e.g. `--log warn,ossrelay::audit=off`).
pub const TARGET: &str = "ossrelay::audit";

/// What a request does, from its method and path (`None` for reads, which are not audited).
pub fn action(method: &Method, path: &str) -> Option<(&'static str, Option<String>)> {
    if matches!(*method, Method::GET | Method::HEAD) {
        return None;
    }
    if path == "/v1/admin/reload" {
        return Some(("reload", None));
    }
    let segs: Vec<&str> = match path.strip_prefix("/v1/jobs") {
        Some(rest) => rest.split('/').filter(|s| !s.is_empty()).collect(),
        None => return Some(("other", None)),
    };
    let id = |s: &str| super::jobs::valid_id(s).then(|| s.to_string());
    Some(match (method, segs.as_slice()) {
        (&Method::POST, []) => ("submit", None),
        (&Method::DELETE, [j]) => ("delete", id(j)),
        (&Method::POST, [j, "cancel"]) => ("cancel", id(j)),
        (&Method::POST, [j, "pause"]) => ("pause", id(j)),
        (&Method::POST, [j, "resume"]) => ("resume", id(j)),
        (_, [j, ..]) => ("other", id(j)),
        _ => ("other", None),
    })
}

/// Writes the audit line.
pub fn record(remote: SocketAddr, caller: &str, action: &str, job: Option<&str>, status: u16) {
    let result = match status {
        200..=399 => "ok",
        400..=499 => "refused",
        _ => "failed",
    };
    tracing::info!(
        target: TARGET,
        time = %chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        remote = %remote,
        caller,
        action,
        job = job.unwrap_or("-"),
        status,
        result,
        "audit"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_named_from_method_and_path() {
        let id = "j-0123456789abcdef";
        assert_eq!(action(&Method::GET, "/v1/jobs"), None);
        assert_eq!(action(&Method::POST, "/v1/jobs"), Some(("submit", None)));
        for (m, p, a) in [
            (Method::POST, format!("/v1/jobs/{id}/cancel"), "cancel"),
            (Method::POST, format!("/v1/jobs/{id}/pause"), "pause"),
            (Method::POST, format!("/v1/jobs/{id}/resume"), "resume"),
            (Method::DELETE, format!("/v1/jobs/{id}"), "delete"),
        ] {
            assert_eq!(action(&m, &p), Some((a, Some(id.to_string()))), "{p}");
        }
        assert_eq!(
            action(&Method::POST, "/v1/admin/reload"),
            Some(("reload", None))
        );
        // Ids that are not job ids never reach the log.
        assert_eq!(
            action(&Method::DELETE, "/v1/jobs/%0Aforged"),
            Some(("delete", None))
        );
        assert_eq!(action(&Method::PUT, "/elsewhere"), Some(("other", None)));
    }
}
