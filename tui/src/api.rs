//! The admin API as the console sees it: one snapshot of everything per
//! refresh, and the few commands an operator issues.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueSettings {
    pub admit_per_second: u32,
    pub max_active: u32,
    pub active_ttl_seconds: u32,
    pub heartbeat_grace_seconds: u32,
    /// Before this the room pre-queues and admits nobody.
    #[serde(default)]
    pub opens_at: Option<DateTime<Utc>>,
    /// `fifo`, `random` or `closed`.
    #[serde(default = "fifo")]
    pub queueing_method: String,
    #[serde(default)]
    pub paused: bool,
}

fn fifo() -> String {
    "fifo".into()
}

impl QueueSettings {
    /// The room's state in a word or two: `closed`, `paused`, `opens
    /// HH:MM:SS` (before `now`'s opening), `random` or `open`.
    pub fn state(&self, now: DateTime<Utc>) -> String {
        match self.opens_at {
            _ if self.queueing_method == "closed" => "closed".into(),
            _ if self.paused => "paused".into(),
            Some(at) if at > now => format!("opens {}", at.format("%H:%M:%S")),
            _ if self.queueing_method == "random" => "random".into(),
            _ => "open".into(),
        }
    }

    /// A change that keeps these rates and changes nothing else.
    pub fn change(&self) -> SettingsChange {
        SettingsChange {
            admit_per_second: self.admit_per_second,
            max_active: self.max_active,
            active_ttl_seconds: self.active_ttl_seconds,
            heartbeat_grace_seconds: self.heartbeat_grace_seconds,
            opens_at: None,
            queueing_method: None,
            paused: None,
        }
    }
}

/// The body of `PUT /v1/admin/queue/{concertId}/settings`: the four rates,
/// and only the opening rules being changed (the server keeps the others).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsChange {
    pub admit_per_second: u32,
    pub max_active: u32,
    pub active_ttl_seconds: u32,
    pub heartbeat_grace_seconds: u32,
    /// `Some(None)` is sent as `null`: the opening time is removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opens_at: Option<Option<DateTime<Utc>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queueing_method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueRoom {
    pub concert_id: i64,
    pub waiting: u64,
    pub active: u64,
    pub admitted_last_minute: u64,
    pub admitted_total: u64,
    pub oldest_wait_seconds: u64,
    pub tail_wait_seconds: u64,
    pub settings: QueueSettings,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub id: i64,
    pub severity: String,
    pub source: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
    pub acknowledged: bool,
    /// A watchdog's condition, for the alerts that stand for one.
    #[serde(default)]
    pub condition: Option<String>,
    #[serde(default)]
    pub resolved_at: Option<DateTime<Utc>>,
    /// `none`, `queued`, `delivered` or `gave_up`.
    #[serde(default)]
    pub webhook: String,
    #[serde(default)]
    pub webhook_attempts: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Compensation {
    pub id: i64,
    pub saga: String,
    pub step: String,
    pub payment_id: i64,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerLag {
    pub name: String,
    pub pending: u64,
    pub lag: u64,
    /// Events the delivery audit sent the group again.
    #[serde(default)]
    pub redelivered: u64,
    /// Per partition of the event stream (one entry unless partitioned).
    #[serde(default)]
    pub partitions: Vec<PartitionLag>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionLag {
    pub partition: u16,
    pub stream: String,
    pub pending: u64,
    pub lag: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventPipeline {
    pub outbox_pending: u64,
    pub oldest_pending_seconds: f64,
    pub consumers: Vec<ConsumerLag>,
    pub dead_letters: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: i64,
    pub consumer: String,
    pub event_type: String,
    pub deliveries: i64,
    pub last_error: String,
    /// The event as delivered, JSON text (absent from older servers).
    #[serde(default)]
    pub envelope: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CouponStats {
    pub id: i64,
    pub name: String,
    pub quantity: i64,
    pub issued: u64,
    pub redeemed: u64,
    pub remaining: u64,
    pub vendor_balance: i64,
    pub ledger_issued: Option<u64>,
}

/// A schedule's sale and its cancellation's progress.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSale {
    pub id: i64,
    /// `on_sale`, `cancelling` or `cancelled`.
    pub status: String,
    pub seats: u64,
    pub sold: u64,
    pub refunds_pending: u64,
    pub refunds_failed: u64,
    pub refunds_done: u64,
}

/// One gate of a schedule's door.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoorGate {
    pub gate: String,
    pub checked_in: u64,
    pub last_minute: u64,
    /// The last 15 minutes, oldest first.
    pub per_minute: Vec<u64>,
}

/// A refused scan.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoorRefusal {
    pub gate: String,
    /// The problem code the scanner heard, e.g. `already_checked_in`.
    pub reason: String,
    #[serde(default)]
    pub ticket_id: Option<i64>,
    pub at: DateTime<Utc>,
}

/// A schedule's door: `GET /v1/admin/schedules/{id}/door`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Door {
    pub schedule_id: i64,
    pub tickets_sold: u64,
    pub checked_in: u64,
    pub gates: Vec<DoorGate>,
    /// Every gate's check-ins in the last 15 minutes, oldest first.
    pub checkins_per_minute: Vec<u64>,
    /// Newest first.
    pub recent_refusals: Vec<DoorRefusal>,
}

/// One page of a list: `{items, nextCursor}` (no `nextCursor` on the last page).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default)]
    pub next_cursor: Option<i64>,
}

/// At most this many pages of waiting rooms a refresh (rooms in use only:
/// idle rooms retire).
const MAX_ROOM_PAGES: usize = 5;

/// At most this many pages (of [`PAGE`]) of failed compensations a refresh:
/// every failed step needs a human, however many newer steps succeeded.
const MAX_FAILED_PAGES: usize = 10;
/// Pending steps are retried by the server; the oldest page is enough.
const MAX_PENDING_PAGES: usize = 1;
const PAGE: usize = 200;

/// Everything the console shows, fetched together once a refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub rooms: Vec<QueueRoom>,
    pub alerts: Vec<Alert>,
    pub compensations: Vec<Compensation>,
    pub events: EventPipeline,
    pub dead_letters: Vec<DeadLetter>,
    pub coupons: Vec<CouponStats>,
    pub schedules: Vec<ScheduleSale>,
}

/// Why a call failed, as the banner tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// No answer: connection refused, timeout, DNS.
    Unreachable(String),
    /// 401 or 403: the token is wrong, expired or not an admin's.
    Rejected(String),
    /// The server answered with an error (the problem's detail).
    Refused(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Unreachable(m) | ApiError::Rejected(m) | ApiError::Refused(m) => {
                f.write_str(m)
            }
        }
    }
}

#[derive(Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminClient {
    pub fn new(base: &str, token: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|err| {
                ApiError::Unreachable(format!("cannot reach {}: {}", self.base, root_cause(&err)))
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let detail = response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|p| p["detail"].as_str().map(str::to_owned))
            .unwrap_or_else(|| status.to_string());
        Err(match status.as_u16() {
            401 | 403 => ApiError::Rejected(format!(
                "the server rejected the token ({}): {detail}",
                status.as_u16()
            )),
            _ => ApiError::Refused(format!("{}: {detail}", status.as_u16())),
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let response = self
            .send(self.http.get(format!("{}{path}", self.base)))
            .await?;
        response
            .json()
            .await
            .map_err(|err| ApiError::Refused(format!("unexpected answer from {path}: {err}")))
    }

    async fn post(&self, path: &str) -> Result<(), ApiError> {
        self.send(self.http.post(format!("{}{path}", self.base)))
            .await
            .map(drop)
    }

    /// One refresh: the rooms in use, every open alert (up to 200) and the
    /// latest acknowledged ones, the failed and pending compensations
    /// (asked by status and paged, never picked from the newest), dead letters,
    /// campaigns and schedules (one page each: the campaign page costs the server one
    /// query and one ledger round trip, whatever the number of campaigns).
    pub async fn snapshot(&self) -> Result<Snapshot, ApiError> {
        let (rooms, open, acknowledged, failed, pending, events, dead_letters, coupons, schedules) =
            futures::try_join!(
                self.rooms(),
                self.get::<Page<Alert>>("/v1/admin/alerts?acknowledged=false&limit=200"),
                self.get::<Page<Alert>>("/v1/admin/alerts?acknowledged=true&limit=50"),
                self.pages::<Compensation>(
                    "/v1/admin/compensations?status=failed",
                    MAX_FAILED_PAGES
                ),
                self.pages::<Compensation>(
                    "/v1/admin/compensations?status=pending",
                    MAX_PENDING_PAGES
                ),
                self.get::<EventPipeline>("/v1/admin/events"),
                self.get::<Page<DeadLetter>>("/v1/admin/dead-letters?limit=200"),
                self.get::<Page<CouponStats>>("/v1/admin/coupons?limit=50"),
                self.get::<Page<ScheduleSale>>("/v1/admin/schedules?limit=50"),
            )?;
        let mut alerts = open.items;
        alerts.extend(acknowledged.items);
        let mut compensations = failed;
        compensations.extend(pending);
        Ok(Snapshot {
            rooms,
            alerts,
            compensations,
            events,
            dead_letters: dead_letters.items,
            coupons: coupons.items,
            schedules: schedules.items,
        })
    }

    /// Up to `max_pages` pages of a filtered list (`path` has a query).
    async fn pages<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        max_pages: usize,
    ) -> Result<Vec<T>, ApiError> {
        let mut items = Vec::new();
        let mut next = format!("{path}&limit={PAGE}");
        for _ in 0..max_pages {
            let page = self.get::<Page<T>>(&next).await?;
            items.extend(page.items);
            let Some(after) = page.next_cursor else { break };
            next = format!("{path}&limit={PAGE}&after={after}");
        }
        Ok(items)
    }

    async fn rooms(&self) -> Result<Vec<QueueRoom>, ApiError> {
        let mut rooms = Vec::new();
        let mut path = "/v1/admin/queue?limit=200".to_owned();
        for _ in 0..MAX_ROOM_PAGES {
            let page = self.get::<Page<QueueRoom>>(&path).await?;
            rooms.extend(page.items);
            let Some(after) = page.next_cursor else { break };
            path = format!("/v1/admin/queue?limit=200&after={after}");
        }
        Ok(rooms)
    }

    pub async fn ack_alert(&self, id: i64) -> Result<(), ApiError> {
        self.post(&format!("/v1/admin/alerts/{id}/ack")).await
    }

    pub async fn retry_compensation(&self, id: i64) -> Result<(), ApiError> {
        self.post(&format!("/v1/admin/compensations/{id}/retry"))
            .await
    }

    pub async fn replay_dead_letter(&self, id: i64) -> Result<(), ApiError> {
        self.post(&format!("/v1/admin/dead-letters/{id}/replay"))
            .await
    }

    /// The door of schedule `id`: sold, admitted per gate and minute, and
    /// the latest refusals.
    pub async fn door(&self, id: i64) -> Result<Door, ApiError> {
        self.get(&format!("/v1/admin/schedules/{id}/door")).await
    }

    pub async fn cancel_schedule(&self, id: i64) -> Result<(), ApiError> {
        self.post(&format!("/v1/admin/schedules/{id}/cancel")).await
    }

    pub async fn update_queue_settings(
        &self,
        concert: i64,
        settings: &SettingsChange,
    ) -> Result<(), ApiError> {
        self.send(
            self.http
                .put(format!("{}/v1/admin/queue/{concert}/settings", self.base))
                .json(settings),
        )
        .await
        .map(drop)
    }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::fixtures::{self, opening_rooms};

    #[test]
    fn a_page_reads_with_and_without_a_next_cursor() {
        let more: Page<DeadLetter> = serde_json::from_value(serde_json::json!({
            "items": [{
                "id": 7, "consumer": "receipts", "eventId": "e", "eventType": "PaymentCompleted",
                "deliveries": 5, "lastError": "down", "createdAt": "2026-12-03T10:00:00Z"
            }],
            "nextCursor": 7
        }))
        .unwrap();
        assert_eq!(more.items.len(), 1);
        assert_eq!(more.next_cursor, Some(7));
        let last: Page<DeadLetter> =
            serde_json::from_value(serde_json::json!({"items": []})).unwrap();
        assert!(last.items.is_empty());
        assert_eq!(last.next_cursor, None);
    }

    #[test]
    fn a_rooms_state_reads_closed_paused_opening_random_or_open() {
        let now = fixtures::now();
        let rooms = opening_rooms(0).rooms;
        let states: Vec<String> = rooms.iter().map(|r| r.settings.state(now)).collect();
        assert_eq!(states, ["open", "paused", "closed", "opens 10:00:00"]);
        let mut random = rooms[0].settings.clone();
        random.queueing_method = "random".into();
        assert_eq!(random.state(now), "random");
        let mut opened = rooms[3].settings.clone();
        opened.opens_at = Some(now - TimeDelta::seconds(1));
        assert_eq!(opened.state(now), "open");
    }
}
