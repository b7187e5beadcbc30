//! Pushes alerts to a Slack/Notion-style incoming webhook as JSON, signed
//! with HMAC-SHA256 when a secret is set, carrying the alert's trace.

use std::time::Duration;

use anyhow::Context;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::admin::{domain::Alert, ports::AlertNotifier};

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Boxoffice-Signature";

#[derive(Clone)]
pub enum Webhook {
    Disabled,
    Post {
        client: reqwest::Client,
        url: String,
        secret: Option<String>,
    },
}

impl Webhook {
    pub fn new(url: Option<String>, secret: Option<String>) -> anyhow::Result<Self> {
        Ok(match url {
            None => Webhook::Disabled,
            Some(url) => Webhook::Post {
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .context("building the webhook HTTP client")?,
                url,
                secret: secret.filter(|s| !s.is_empty()),
            },
        })
    }
}

/// `sha256=<hex>` of `body` under `secret`: what a receiver recomputes.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl AlertNotifier for Webhook {
    async fn notify(&self, alert: &Alert, traceparent: Option<&str>) -> anyhow::Result<()> {
        let Webhook::Post {
            client,
            url,
            secret,
        } = self
        else {
            return Ok(());
        };
        let body = serde_json::to_vec(&json!({
            // `text` is what Slack-compatible webhooks display.
            "text": format!("[{}] {}: {}", alert.severity.as_str(), alert.source, alert.message),
            "alert": {
                "id": alert.id,
                "severity": alert.severity.as_str(),
                "source": alert.source,
                "message": alert.message,
                "condition": alert.condition,
                "createdAt": alert.created_at.to_rfc3339(),
            }
        }))?;
        let mut request = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            // The alert id lets a receiver drop a repeat after a lost answer.
            .header("Idempotency-Key", format!("alert-{}", alert.id));
        if let Some(secret) = secret {
            request = request.header(SIGNATURE_HEADER, signature(secret, &body));
        }
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        request
            .body(body)
            .send()
            .await
            .context("posting the alert")?
            .error_for_status()
            .context("the webhook refused the alert")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_rfc_4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
