//! Caching and early refresh of temporary credentials.
//!
//! Transfers last hours while STS / instance-role credentials last about one; every request
//! asks the provider, so the cache must be cheap when fresh and refresh *before* expiry.
//!
//! Refresh rule: refresh when less than `min(15 min, lifetime / 3)` remains, where lifetime is
//! measured from when the credentials were fetched. One-hour credentials are thus refreshed
//! 15 minutes before expiry (the recommendation in the reference); short-lived ones (tests, or
//! a 900 s AssumeRole) keep two thirds of their life.

use std::fmt;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

use super::{Credentials, CredentialsError, CredentialsProvider};
use crate::metrics::CREDENTIAL_REFRESHES_TOTAL;

/// Longest refresh margin: refresh at the latest 15 minutes before expiry.
pub const DEFAULT_MAX_MARGIN: Duration = Duration::from_secs(15 * 60);
/// After a failed refresh, keep serving still-valid credentials this long before trying again,
/// so a broken STS endpoint is not hammered by every request.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Cached {
    creds: Credentials,
    fetched_at: SystemTime,
}

/// Wraps a provider that fetches fresh temporary credentials on every call (AssumeRole,
/// instance metadata) and caches them until they near expiry.
///
/// Concurrent callers share one refresh (single flight). If a refresh fails while the old
/// credentials are still valid, the old ones keep being used (with a warning) and the refresh
/// is retried after a short interval. Credentials without an expiry are fetched once.
pub struct RefreshingProvider<P> {
    inner: P,
    cached: RwLock<Option<Cached>>,
    refresh: tokio::sync::Mutex<()>,
    last_failure: Mutex<Option<Instant>>,
    max_margin: Duration,
    retry_interval: Duration,
}

impl<P: fmt::Debug> fmt::Debug for RefreshingProvider<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the key ID and expiry of the cached credentials; never the secret or token.
        let cached = self.snapshot_inner();
        f.debug_struct("RefreshingProvider")
            .field("inner", &self.inner)
            .field(
                "cached",
                &cached
                    .as_ref()
                    .map(|c| (&c.creds.access_key_id, c.creds.expiration)),
            )
            .finish_non_exhaustive()
    }
}

impl<P> RefreshingProvider<P> {
    fn snapshot_inner(&self) -> Option<Cached> {
        self.cached
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl<P: CredentialsProvider> RefreshingProvider<P> {
    /// Caches `inner` with the default margin and retry interval.
    pub fn new(inner: P) -> Self {
        Self {
            inner,
            cached: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
            last_failure: Mutex::new(None),
            max_margin: DEFAULT_MAX_MARGIN,
            retry_interval: DEFAULT_RETRY_INTERVAL,
        }
    }

    /// Caps the refresh margin (default 15 min).
    pub fn with_max_margin(mut self, margin: Duration) -> Self {
        self.max_margin = margin;
        self
    }

    /// Minimum wait between refresh attempts after a failure (default 5 s).
    pub fn with_retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    fn snapshot(&self) -> Option<Cached> {
        self.cached
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn needs_refresh(&self, c: &Cached, now: SystemTime) -> bool {
        let Some(exp) = c.creds.expiration else {
            return false;
        };
        let lifetime = exp.duration_since(c.fetched_at).unwrap_or_default();
        let margin = self.max_margin.min(lifetime / 3);
        match exp.duration_since(now) {
            Ok(remaining) => remaining <= margin,
            Err(_) => true,
        }
    }

    fn still_valid(c: &Cached, now: SystemTime) -> bool {
        match c.creds.expiration {
            Some(exp) => exp > now,
            None => true,
        }
    }

    fn failed_recently(&self) -> bool {
        self.last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < self.retry_interval)
    }
}

#[async_trait]
impl<P: CredentialsProvider> CredentialsProvider for RefreshingProvider<P> {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        if let Some(c) = self.snapshot() {
            if !self.needs_refresh(&c, SystemTime::now()) {
                return Ok(c.creds);
            }
        }
        let _flight = self.refresh.lock().await;
        // Another caller may have refreshed while we waited for the lock.
        let old = self.snapshot();
        let now = SystemTime::now();
        if let Some(c) = &old {
            if !self.needs_refresh(c, now) || (Self::still_valid(c, now) && self.failed_recently())
            {
                return Ok(c.creds.clone());
            }
        }
        let provider = self.inner.name();
        match self.inner.credentials().await {
            Ok(creds) => {
                metrics::counter!(CREDENTIAL_REFRESHES_TOTAL, "provider" => provider.clone(), "result" => "ok").increment(1);
                tracing::debug!(provider = %provider, access_key_id = %creds.access_key_id, expiration = ?creds.expiration, "credentials refreshed");
                *self.cached.write().unwrap_or_else(|e| e.into_inner()) = Some(Cached {
                    creds: creds.clone(),
                    fetched_at: SystemTime::now(),
                });
                *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
                Ok(creds)
            }
            Err(err) => {
                metrics::counter!(CREDENTIAL_REFRESHES_TOTAL, "provider" => provider.clone(), "result" => "error").increment(1);
                *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                match old {
                    Some(c) if Self::still_valid(&c, SystemTime::now()) => {
                        tracing::warn!(provider = %provider, error = %err, expiration = ?c.creds.expiration, "credential refresh failed; using the current credentials until they expire");
                        Ok(c.creds)
                    }
                    _ => Err(err),
                }
            }
        }
    }

    fn name(&self) -> String {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Hands out `key-N` with a fixed TTL; counts calls; can be told to fail.
    struct Fake {
        calls: Arc<AtomicUsize>,
        fail: Arc<AtomicBool>,
        ttl: Option<Duration>,
        delay: Duration,
    }

    impl Fake {
        fn new(ttl: Option<Duration>) -> Self {
            Self {
                calls: Arc::default(),
                fail: Arc::default(),
                ttl,
                delay: Duration::ZERO,
            }
        }
    }

    #[async_trait]
    impl CredentialsProvider for Fake {
        async fn credentials(&self) -> Result<Credentials, CredentialsError> {
            tokio::time::sleep(self.delay).await;
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if self.fail.load(Ordering::SeqCst) {
                return Err(CredentialsError::Refresh {
                    provider: "fake".into(),
                    reason: "boom".into(),
                });
            }
            Ok(Credentials {
                access_key_id: format!("key-{n}"),
                access_key_secret: "s".into(),
                security_token: Some("t".into()),
                expiration: self.ttl.map(|t| SystemTime::now() + t),
            })
        }
        fn name(&self) -> String {
            "fake".into()
        }
    }

    #[tokio::test]
    async fn caches_until_margin_then_refreshes() {
        // TTL 1.5 s → margin 0.5 s → refresh after ~1 s.
        let fake = Fake::new(Some(Duration::from_millis(1500)));
        let calls = fake.calls.clone();
        let p = RefreshingProvider::new(fake);
        assert_eq!(p.credentials().await.unwrap().access_key_id, "key-1");
        assert_eq!(p.credentials().await.unwrap().access_key_id, "key-1");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(p.credentials().await.unwrap().access_key_id, "key-1");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        // 1.1 s in: 0.4 s left < 0.5 s margin, still valid but refreshed early.
        assert_eq!(p.credentials().await.unwrap().access_key_id, "key-2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(p.name(), "fake");
    }

    #[tokio::test]
    async fn long_lived_credentials_use_the_15_minute_margin() {
        let p = RefreshingProvider::new(Fake::new(None));
        let now = SystemTime::now();
        let c = |exp: Duration| Cached {
            creds: Credentials {
                expiration: Some(now + exp),
                ..Credentials::new("a", "b")
            },
            fetched_at: now,
        };
        // 1 h lifetime: margin 15 min.
        let hour = c(Duration::from_secs(3600));
        assert!(!p.needs_refresh(&hour, now + Duration::from_secs(44 * 60)));
        assert!(p.needs_refresh(&hour, now + Duration::from_secs(46 * 60)));
        // 15 min lifetime: margin 5 min.
        let short = c(Duration::from_secs(900));
        assert!(!p.needs_refresh(&short, now + Duration::from_secs(590)));
        assert!(p.needs_refresh(&short, now + Duration::from_secs(610)));
        // Expired.
        assert!(p.needs_refresh(&short, now + Duration::from_secs(1000)));
    }

    #[tokio::test]
    async fn debug_shows_key_id_only() {
        #[derive(Debug)]
        struct Secretive;
        #[async_trait]
        impl CredentialsProvider for Secretive {
            async fn credentials(&self) -> Result<Credentials, CredentialsError> {
                let mut c = Credentials::new("STS.visible", "hidden-secret");
                c.security_token = Some("hidden-token".into());
                Ok(c)
            }
            fn name(&self) -> String {
                "secretive".into()
            }
        }
        let p = RefreshingProvider::new(Secretive);
        p.credentials().await.unwrap();
        let dbg = format!("{p:?}");
        assert!(dbg.contains("STS.visible"), "{dbg}");
        assert!(!dbg.contains("hidden"), "{dbg}");
    }

    #[tokio::test]
    async fn static_credentials_are_fetched_once() {
        let fake = Fake::new(None);
        let calls = fake.calls.clone();
        let p = RefreshingProvider::new(fake);
        for _ in 0..5 {
            assert_eq!(p.credentials().await.unwrap().access_key_id, "key-1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_refresh() {
        let mut fake = Fake::new(Some(Duration::from_secs(3600)));
        fake.delay = Duration::from_millis(200);
        let calls = fake.calls.clone();
        let p = Arc::new(RefreshingProvider::new(fake));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move { p.credentials().await.unwrap().access_key_id })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), "key-1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn failed_refresh_keeps_valid_credentials_then_recovers() {
        // TTL 1.2 s → margin 0.4 s.
        let fake = Fake::new(Some(Duration::from_millis(1200)));
        let (calls, fail) = (fake.calls.clone(), fake.fail.clone());
        let p = RefreshingProvider::new(fake).with_retry_interval(Duration::from_millis(150));
        assert_eq!(p.credentials().await.unwrap().access_key_id, "key-1");
        fail.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(900)).await;
        // Refresh due, fails, old still valid → old served.
        assert_eq!(p.credentials().await.unwrap().access_key_id, "key-1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Within the retry interval: no new attempt.
        assert_eq!(p.credentials().await.unwrap().access_key_id, "key-1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // After the interval: tries again, and succeeds once the source recovers.
        tokio::time::sleep(Duration::from_millis(160)).await;
        fail.store(false, Ordering::SeqCst);
        assert_eq!(p.credentials().await.unwrap().access_key_id, "key-3");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn failed_refresh_after_expiry_is_an_error() {
        let fake = Fake::new(Some(Duration::from_millis(300)));
        let fail = fake.fail.clone();
        let p = RefreshingProvider::new(fake).with_retry_interval(Duration::ZERO);
        p.credentials().await.unwrap();
        fail.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(350)).await;
        let err = p.credentials().await.unwrap_err();
        assert!(matches!(err, CredentialsError::Refresh { .. }), "{err}");
    }

    #[tokio::test]
    async fn first_fetch_failure_is_an_error() {
        let fake = Fake::new(Some(Duration::from_secs(60)));
        fake.fail.store(true, Ordering::SeqCst);
        let p = RefreshingProvider::new(fake);
        assert!(p.credentials().await.is_err());
    }

    #[test]
    fn counts_refreshes_by_result() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let ok = RefreshingProvider::new(Fake::new(Some(Duration::from_secs(60))));
                ok.credentials().await.unwrap();
                ok.credentials().await.unwrap();
                let bad = Fake::new(Some(Duration::from_secs(60)));
                bad.fail.store(true, Ordering::SeqCst);
                let bad = RefreshingProvider::new(bad).with_retry_interval(Duration::ZERO);
                bad.credentials().await.unwrap_err();
                bad.credentials().await.unwrap_err();
            });
        });
        let text = handle.render();
        assert!(
            text.contains(r#"ossrelay_credential_refreshes_total{provider="fake",result="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"ossrelay_credential_refreshes_total{provider="fake",result="error"} 2"#
            ),
            "{text}"
        );
    }
}
