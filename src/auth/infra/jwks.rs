//! An identity provider's key set fetched from its `jwks_uri`: at start,
//! again when a token names a key this server does not have (at most once
//! per [`MIN_REFETCH`]), and every TTL, so a key rotation needs no restart.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{FutureExt, future::BoxFuture};
use tokio_util::sync::CancellationToken;

use super::jwt::{KeyRing, ProviderKeys};
use crate::auth::{domain::AuthError, ports::KeySetSource};
use crate::kernel::Fault;

/// The shortest time between two fetches a token can cause.
pub const MIN_REFETCH: Duration = Duration::from_secs(5);

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A key set larger than this is refused (real ones are a few KiB).
const MAX_KEY_SET_BYTES: usize = 1 << 20;

/// How soon a failed periodic fetch is tried again (or the TTL, if shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// The key set at a URL, and when it was last fetched (or tried).
pub struct JwksUrl {
    url: String,
    client: reqwest::Client,
    keys: ProviderKeys,
    /// When the last fetch since start happened and whether it worked
    /// (the one at start does not hold the next back).
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl JwksUrl {
    /// Fetches the set once; a server that cannot get its identity
    /// provider's keys does not start.
    pub async fn fetch_at_start(url: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .context("building the key set's HTTP client")?;
        let ring = fetch(&client, url)
            .await
            .with_context(|| format!("fetching the key set at {url}"))?;
        Ok(Self {
            url: url.to_owned(),
            client,
            keys: ProviderKeys::new(ring),
            last: tokio::sync::Mutex::new(None),
        })
    }

    /// The keys the codec checks tokens against, replaced by each fetch.
    pub fn keys(&self) -> ProviderKeys {
        self.keys.clone()
    }

    /// Fetches the set now and puts it in place (the keys in use stay
    /// when the fetch fails).
    async fn fetch_now(&self, last: &mut Option<(Instant, bool)>) -> anyhow::Result<()> {
        let fetched = fetch(&self.client, &self.url).await;
        *last = Some((Instant::now(), fetched.is_ok()));
        match fetched {
            Ok(ring) => {
                if self.keys.replace(ring) {
                    tracing::info!(url = %self.url, "the identity provider's key set changed");
                    metrics::counter!("jwks_changes_total").increment(1);
                }
                Ok(())
            }
            Err(err) => {
                tracing::warn!(url = %self.url, error = %format!("{err:#}"), "could not fetch the identity provider's key set; the keys in use stay");
                metrics::counter!("jwks_fetch_failures_total").increment(1);
                Err(err)
            }
        }
    }

    /// Fetches the set again every `ttl` until `cancel`; after a failure,
    /// sooner (30 s, or the TTL when shorter).
    pub async fn refresh_every(self: Arc<Self>, ttl: Duration, cancel: CancellationToken) {
        let mut wait = ttl;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let mut last = self.last.lock().await;
            wait = match self.fetch_now(&mut last).await {
                Ok(()) => ttl,
                Err(_) => ttl.min(RETRY_AFTER_FAILURE),
            };
        }
    }
}

impl KeySetSource for JwksUrl {
    fn refresh(&self) -> BoxFuture<'_, Result<(), AuthError>> {
        async move {
            // One fetch at a time; who waited for it uses its result.
            let mut last = self.last.lock().await;
            if let Some((at, worked)) = *last
                && at.elapsed() < MIN_REFETCH
            {
                return if worked {
                    Ok(())
                } else {
                    Err(AuthError::Fault(Fault::Unavailable(anyhow::anyhow!(
                        "the identity provider's key set could not be fetched moments ago"
                    ))))
                };
            }
            self.fetch_now(&mut last)
                .await
                .map_err(|cause| AuthError::Fault(Fault::Unavailable(cause)))
        }
        .boxed()
    }
}

/// GETs the set, read up to [`MAX_KEY_SET_BYTES`].
async fn fetch(client: &reqwest::Client, url: &str) -> anyhow::Result<KeyRing> {
    let mut resp = client.get(url).send().await?.error_for_status()?;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_KEY_SET_BYTES {
            bail!("the key set is larger than {MAX_KEY_SET_BYTES} bytes");
        }
    }
    KeyRing::from_jwks(std::str::from_utf8(&body).context("the key set is not UTF-8")?)
}
