//! Check-in: the tickets of one schedule, sold over HTTP (orders and
//! payments), scanned at the door. Most are scanned online by `C` scanners
//! at `G` gates at once, each code twice (the re-scan must be refused);
//! the rest are uploaded as offline scans in batches of 500, then uploaded
//! again with later scan times. Measured: scans/s and p50/p99 of first
//! scans, re-scans and batch uploads. Checked: every ticket admitted
//! exactly once, every re-scan `already_checked_in` with the first scan's
//! gate, and in the database as many tickets checked in (and
//! `TicketCheckedIn` events) as tickets.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use boxoffice::auth::domain::Role;
use chrono::{TimeDelta, Utc};
use futures::StreamExt;
use indicatif::ProgressBar;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement};
use serde_json::{Value, json};

use crate::{
    full_flow::{Failures, Step, count, describe},
    load::{self, LoadResult},
    report::{Report, ScenarioResult},
    server::Server,
    stores::Stores,
};

const SEAT_PRICE: i64 = 1_000;
/// User ids start here (the admin is user 1).
const FIRST_USER: i64 = 50_001;
/// Buyers set up at once.
const SETUP_CONCURRENCY: usize = 16;
/// How long the saga may take to issue every ticket.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(120);
/// Scans a batch upload carries (the most the API takes).
const BATCH: usize = 500;
/// Batch uploads in flight at once.
const BATCH_CONCURRENCY: usize = 4;

pub async fn run(stores: &Stores, smoke: bool, report: &mut Report) -> anyhow::Result<()> {
    // (tickets, seats a buyer orders at once, gates, scanners at once)
    let (tickets, per_buyer, gates, scanners): (usize, usize, usize, u64) = if smoke {
        (24, 4, 3, 4)
    } else {
        (5_000, 50, 10, 64)
    };
    let buyers = tickets / per_buyer;
    let (database_url, db) = stores.fresh_database().await?;
    let hold_limit = per_buyer.to_string();
    let server = Server::start(
        &database_url,
        &stores.server_redis_args(),
        &["--hold-limit", &hold_limit],
    )?;
    let client = load::client(scanners.max(SETUP_CONCURRENCY as u64));

    // Set-up: one schedule of `tickets` seats, sold out by `buyers` orders.
    let concert = server
        .create_concert(&client, "Check-in", "R", tickets as u64)
        .await?;
    let (concert_id, schedule_id) = Server::concert_and_schedule(&concert)?;
    server.open_room(&client, concert_id).await?;
    let seats: Vec<i64> = column(
        &db,
        &format!("SELECT id FROM seats WHERE schedule_id = {schedule_id} ORDER BY number"),
    )
    .await?;
    anyhow::ensure!(
        seats.len() == tickets,
        "the schedule has not {tickets} seats"
    );
    let setup = ProgressBar::new(buyers as u64).with_message("check-in: sell the tickets");
    let sold: Vec<anyhow::Result<()>> = futures::stream::iter(seats.chunks(per_buyer).enumerate())
        .map(|(i, seats)| {
            let (client, server, setup) = (&client, &server, &setup);
            async move {
                let token = server.token(FIRST_USER + i as i64, Role::User);
                buy(client, server, &token, concert_id, schedule_id, seats).await?;
                setup.inc(1);
                Ok(())
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    setup.finish();
    sold.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let issued_sql = format!(
        "SELECT COUNT(*) FROM tickets WHERE schedule_id = {schedule_id} AND status = 'valid' AND code <> ''"
    );
    let waited = Instant::now();
    while count(&db, &issued_sql).await? < tickets as i64 {
        anyhow::ensure!(
            waited.elapsed() < ISSUE_TIMEOUT,
            "not every ticket issued within {} s",
            ISSUE_TIMEOUT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let codes = Arc::new(
        column(
            &db,
            &format!("SELECT code FROM tickets WHERE schedule_id = {schedule_id} ORDER BY id"),
        )
        .await?,
    );
    // A fifth of the tickets go through the offline scanners.
    let offline_from = tickets - tickets / 5;
    let online = offline_from as u64;
    load::warm(&client, &server.url("/health/live"), scanners).await?;

    let staff = server.token(2, Role::Staff);
    let door = Arc::new(Door {
        client: client.clone(),
        url: server.url("/v1/checkins"),
        staff: staff.clone(),
        codes: codes.clone(),
        schedule_id,
        gates: gates as u64,
        failures: Failures::default(),
    });
    // First scans: every online ticket once, at gates in turn; then every
    // one again, at the next gate.
    let (first, admitted) = door.clone().pass(Pass::First, online, scanners).await;
    let (again, refused) = door.clone().pass(Pass::Again, online, scanners).await;
    let failures = &door.failures;

    // Offline: the rest uploaded in batches, then uploaded again later.
    let offline: Vec<usize> = (offline_from..tickets).collect();
    let batch_url = server.url("/v1/checkins/batch");
    let upload = Step::new();
    let scanned = Utc::now() - TimeDelta::minutes(30);
    let started = Instant::now();
    let firsts = door.uploads(&batch_url, &offline, scanned, &upload).await;
    let upload_took = started.elapsed();
    let upload_again = Step::new();
    let later = scanned + TimeDelta::minutes(10);
    let started = Instant::now();
    let rescans = door
        .uploads(&batch_url, &offline, later, &upload_again)
        .await;
    let again_took = started.elapsed();
    let offline_admitted = firsts.iter().filter(|r| r.as_str() == "admitted").count();
    let offline_refused = rescans
        .iter()
        .filter(|r| r.as_str() == "already_checked_in")
        .count();

    let checked_in = count(
        &db,
        &format!(
            "SELECT COUNT(*) FROM tickets WHERE schedule_id = {schedule_id} AND checked_in_at IS NOT NULL"
        ),
    )
    .await?;
    let events = count(
        &db,
        "SELECT COUNT(*) FROM outbox WHERE event_type = 'TicketCheckedIn' AND target_consumer IS NULL",
    )
    .await?;
    let events_tickets = count(
        &db,
        "SELECT COUNT(DISTINCT aggregate_id) FROM outbox WHERE event_type = 'TicketCheckedIn' AND target_consumer IS NULL",
    )
    .await?;

    let mut scenario = ScenarioResult::from_load(
        &format!("check-in: first scans (POST /v1/checkins, {scanners} scanners, {gates} gates)"),
        &first,
    );
    let total = tickets as u64;
    scenario
        .check(
            &format!("every ticket admitted exactly once ({admitted} online + {offline_admitted} offline of {total})"),
            admitted == online && offline_admitted == offline.len() && first.errors == 0,
        )
        .check(
            &format!("every re-scan 409 already_checked_in with the first gate ({refused} online + {offline_refused} offline)"),
            refused == online && offline_refused == offline.len() && again.errors == 0,
        )
        .check(
            &format!("checked in in the database = tickets ({checked_in} of {total})"),
            checked_in == total as i64,
        )
        .check(
            &format!("one TicketCheckedIn per ticket ({events} events, {events_tickets} tickets)"),
            events == total as i64 && events_tickets == total as i64,
        );
    scenario.notes.push(format!(
        "{total} tickets of one schedule sold by {buyers} orders of {per_buyer}; {online} scanned online by {scanners} scanners at {gates} gates, then each again at the next gate; {} scanned offline, uploaded in batches of {BATCH} ({BATCH_CONCURRENCY} at once), then uploaded again with later scan times.",
        offline.len()
    ));
    scenario.notes.extend(failures.notes());
    let rescan = ScenarioResult::from_load("check-in: re-scans (409 already_checked_in)", &again);
    let batch = upload.row(
        &format!("check-in: offline uploads (POST /v1/checkins/batch, {BATCH} scans each)"),
        upload_took,
    );
    let batch_again = upload_again.row(
        "check-in: offline uploads again (every scan already_checked_in)",
        again_took,
    );
    let batch_scans_per_second = offline.len() as f64 / upload_took.as_secs_f64().max(f64::EPSILON);
    report
        .ratios
        .insert("checkinScansPerSecond".into(), scenario.rps);
    report.ratios.insert("checkinP50Ms".into(), scenario.p50_ms);
    report.ratios.insert("checkinP99Ms".into(), scenario.p99_ms);
    report
        .ratios
        .insert("checkinRescanP99Ms".into(), rescan.p99_ms);
    report
        .ratios
        .insert("checkinBatchScansPerSecond".into(), batch_scans_per_second);
    report.scenarios.push(scenario);
    report.scenarios.push(rescan);
    report.scenarios.push(batch);
    report.scenarios.push(batch_again);
    drop(server);
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Each ticket's first scan: 200.
    First,
    /// A re-scan at the next gate: 409 `already_checked_in`.
    Again,
}

/// The online scanners: the tickets' codes and where to send them.
struct Door {
    client: reqwest::Client,
    url: String,
    staff: String,
    codes: Arc<Vec<String>>,
    schedule_id: i64,
    gates: u64,
    failures: Failures,
}

impl Door {
    /// The gate of ticket `i`'s first scan.
    fn gate(&self, i: u64) -> String {
        format!("gate-{}", i % self.gates)
    }

    /// Scans the first `tickets` codes with `scanners` at once: the load,
    /// and how many were answered as `pass` expects, naming the first
    /// scan's gate.
    async fn pass(self: Arc<Self>, pass: Pass, tickets: u64, scanners: u64) -> (LoadResult, u64) {
        let answered = Arc::new(AtomicU64::new(0));
        let name = match pass {
            Pass::First => "check-in: scans",
            Pass::Again => "check-in: re-scans",
        };
        let bar = ProgressBar::new(tickets).with_message(name);
        let load = {
            let answered = answered.clone();
            load::run(tickets, scanners, bar, move |i| {
                let (door, answered) = (self.clone(), answered.clone());
                async move {
                    let ok = door.scan(pass, i).await;
                    answered.fetch_add(u64::from(ok), Ordering::Relaxed);
                    ok
                }
            })
            .await
        };
        (load, answered.load(Ordering::Relaxed))
    }

    async fn scan(&self, pass: Pass, i: u64) -> bool {
        let (gate, expected) = match pass {
            Pass::First => (self.gate(i), 200),
            Pass::Again => (self.gate(i + 1), 409),
        };
        let body =
            json!({"code": self.codes[i as usize], "gate": gate, "scheduleId": self.schedule_id});
        let answer = (self.client.post(&self.url))
            .bearer_auth(&self.staff)
            .json(&body)
            .send()
            .await;
        match answer {
            Ok(r) if r.status().as_u16() == expected => {
                let body = r.json::<Value>().await.unwrap_or_default();
                let refused = body["code"] == "already_checked_in";
                let ok = body["gate"] == self.gate(i) && (refused == (pass == Pass::Again));
                ok || self
                    .failures
                    .note(format!("{pass:?} scan {i}: {expected} {body}"))
            }
            other => (self.failures).note(format!("{pass:?} scan {i}: {}", describe(other).await)),
        }
    }
}

/// One buyer: charged, admitted, orders `seats` and pays for them.
async fn buy(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    concert_id: i64,
    schedule_id: i64,
    seats: &[i64],
) -> anyhow::Result<()> {
    client
        .post(server.url("/v1/wallet/charges"))
        .bearer_auth(token)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"amount": SEAT_PRICE * seats.len() as i64}))
        .send()
        .await?
        .error_for_status()?;
    let queue = server.admitted(client, token, concert_id).await?;
    let order: Value = client
        .post(server.url("/v1/orders"))
        .bearer_auth(token)
        .header("x-queue-token", &queue)
        .json(&json!({"scheduleId": schedule_id, "seatIds": seats}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let order = order["id"].as_i64().context("order id")?;
    client
        .post(server.url("/v1/payments"))
        .bearer_auth(token)
        .header("x-queue-token", &queue)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"orderId": order}))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

impl Door {
    /// Uploads a scan of each ticket of `which` (by index in the codes)
    /// at `gate-offline`, `at` plus its place in milliseconds, to `url` in
    /// batches; answers each scan's `result` (an empty string for a failed
    /// upload or an answer naming another gate).
    async fn uploads(
        &self,
        url: &str,
        which: &[usize],
        at: chrono::DateTime<Utc>,
        step: &Step,
    ) -> Vec<String> {
        let answers: Vec<Vec<String>> = futures::stream::iter(which.chunks(BATCH))
            .map(|chunk| {
                let scans: Vec<Value> = (chunk.iter())
                    .map(|&i| {
                        let scanned = at + TimeDelta::milliseconds(i as i64);
                        json!({"code": self.codes[i], "gate": "gate-offline", "scannedAt": scanned.to_rfc3339()})
                    })
                    .collect();
                self.upload(url, scans, step)
            })
            .buffered(BATCH_CONCURRENCY)
            .collect()
            .await;
        answers.into_iter().flatten().collect()
    }

    async fn upload(&self, url: &str, scans: Vec<Value>, step: &Step) -> Vec<String> {
        let (t, len) = (Instant::now(), scans.len());
        let answer = (self.client.post(url))
            .bearer_auth(&self.staff)
            .json(&json!({"scans": scans}))
            .send()
            .await;
        let body = match answer {
            Ok(r) if r.status().as_u16() == 200 => r.json::<Value>().await.ok(),
            other => {
                (self.failures).note(format!("upload: {}", describe(other).await));
                None
            }
        };
        let results: Vec<String> = body
            .and_then(|b| {
                let results = b["results"].as_array()?.iter();
                results
                    .map(|r| {
                        let result = r["result"].as_str()?;
                        let first_gate = r["gate"] == "gate-offline";
                        Some(if first_gate {
                            result.to_owned()
                        } else {
                            String::new()
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        step.record(t, results.len() == len);
        results
    }
}

/// The first column of every row `sql` reads.
async fn column<T: sea_orm::TryGetable>(
    db: &DatabaseConnection,
    sql: &str,
) -> anyhow::Result<Vec<T>> {
    let rows = db
        .query_all_raw(Statement::from_string(DatabaseBackend::Postgres, sql))
        .await?;
    rows.iter()
        .map(|row| Ok(row.try_get_by_index(0)?))
        .collect()
}
