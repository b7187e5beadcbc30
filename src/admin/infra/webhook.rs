//! Pushes alerts to a Slack/Notion-style incoming webhook as JSON.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use crate::admin::{domain::Alert, ports::AlertNotifier};

#[derive(Clone)]
pub enum Webhook {
    Disabled,
    Post {
        client: reqwest::Client,
        url: String,
    },
}

impl Webhook {
    pub fn new(url: Option<String>) -> anyhow::Result<Self> {
        Ok(match url {
            None => Webhook::Disabled,
            Some(url) => Webhook::Post {
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .context("building the webhook HTTP client")?,
                url,
            },
        })
    }
}

impl AlertNotifier for Webhook {
    async fn notify(&self, alert: &Alert) -> anyhow::Result<()> {
        let Webhook::Post { client, url } = self else {
            return Ok(());
        };
        let body = json!({
            // `text` is what Slack-compatible webhooks display.
            "text": format!("[{}] {}: {}", alert.severity.as_str(), alert.source, alert.message),
            "alert": {
                "id": alert.id,
                "severity": alert.severity.as_str(),
                "source": alert.source,
                "message": alert.message,
                "createdAt": alert.created_at.to_rfc3339(),
            }
        });
        client
            .post(url)
            .json(&body)
            .send()
            .await
            .context("posting the alert")?
            .error_for_status()
            .context("the webhook refused the alert")?;
        Ok(())
    }
}
