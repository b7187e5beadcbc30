//! The saga hop: how long a buyer sees `paid` before `confirmed`. A payment
//! writes `PaymentCompleted` (the request's commit wakes the relay); the
//! reservation consumer confirms the hold and writes
//! `ReservationConfirmed` (its commit must wake the relay too, or the hop
//! waits for the relay's poll); the payment consumer marks the payment
//! `confirmed`. Paid → confirmed is read from the database afterwards
//! (`payments.updated_at − created_at` of each confirmed payment, both
//! written by the server's clock), so the measurement adds nothing to the
//! path.
//!
//! Every buyer is prepared first (charged, admitted, a seat held); then the
//! payments are sent at a fixed pace: one a second (an idle server, where a
//! poll-bound hop shows at once), one a second again to an API-only instance
//! (`--workers false`) of the same deployment (its commits must wake the
//! worker instance's relay through PostgreSQL `LISTEN/NOTIFY`, or the hop
//! waits for that relay's poll), then a burst at 500 a second.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use boxoffice::auth::domain::Role;
use hdrhistogram::Histogram;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement};
use serde_json::{Value, json};

use crate::{
    http::CONCURRENCY,
    load,
    report::{Report, ScenarioResult},
    server::Server,
    stores::Stores,
};

const FIRST_USER: i64 = 50_001;
const TARGET_P99_MS: f64 = 50.0;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// A buyer ready to pay: their JWT, admitted queue token and held seat.
struct Ready {
    token: String,
    queue: String,
    reservation: i64,
}

async fn prepare(
    server: &Server,
    client: &reqwest::Client,
    concert_id: i64,
    schedule_id: i64,
    seats: &[i64],
    user: i64,
) -> anyhow::Result<Ready> {
    let token = server.token(user, Role::User);
    client
        .post(server.url("/v1/wallet/charges"))
        .bearer_auth(&token)
        .json(&json!({"amount": 1_000}))
        .send()
        .await?
        .error_for_status()?;
    let queue = server.admitted(client, &token, concert_id).await?;
    let seat = seats[(user - FIRST_USER) as usize];
    let held: Value = client
        .post(server.url("/v1/reservations"))
        .bearer_auth(&token)
        .header("x-queue-token", &queue)
        .json(&json!({"scheduleId": schedule_id, "seatId": seat}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(Ready {
        token,
        queue,
        reservation: held["id"].as_i64().context("reservation id")?,
    })
}

/// Pays for every prepared hold, one every `gap`; the payment ids.
async fn pay_paced(
    server: &Server,
    client: &reqwest::Client,
    ready: Vec<Ready>,
    gap: Duration,
) -> anyhow::Result<Vec<i64>> {
    let start = tokio::time::Instant::now();
    let url = Arc::new(server.url("/v1/payments"));
    let payments = ready.into_iter().enumerate().map(|(i, r)| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(start + gap * i as u32).await;
            let paid: Value = client
                .post(url.as_str())
                .bearer_auth(&r.token)
                .header("x-queue-token", &r.queue)
                .json(&json!({"reservationId": r.reservation}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            paid["id"].as_i64().context("payment id")
        })
    });
    let mut ids = Vec::new();
    for payment in futures::future::join_all(payments).await {
        ids.push(payment??);
    }
    Ok(ids)
}

/// Paid → confirmed of `payments` (ms), once every one of them is settled.
async fn hop_latencies(db: &DatabaseConnection, payments: &[i64]) -> anyhow::Result<Vec<f64>> {
    let list = payments
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let started = Instant::now();
    loop {
        let rows = db
            .query_all_raw(Statement::from_string(
                DatabaseBackend::Postgres,
                format!(
                    "SELECT status, CAST(EXTRACT(EPOCH FROM (updated_at - created_at)) * 1000 AS DOUBLE PRECISION) AS ms \
                     FROM payments WHERE id IN ({list})"
                ),
            ))
            .await?;
        let settled = rows
            .iter()
            .filter(|r| r.try_get::<String>("", "status").is_ok_and(|s| s != "paid"))
            .count();
        if settled == payments.len() {
            return rows
                .iter()
                .filter(|r| {
                    r.try_get::<String>("", "status")
                        .is_ok_and(|s| s == "confirmed")
                })
                .map(|r| r.try_get::<f64>("", "ms").map_err(Into::into))
                .collect();
        }
        anyhow::ensure!(
            started.elapsed() < DRAIN_TIMEOUT,
            "{} of {} payments still paid after {DRAIN_TIMEOUT:?}",
            payments.len() - settled,
            payments.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn row(name: &str, hops_ms: &[f64], expected: usize, elapsed: Duration) -> ScenarioResult {
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    for ms in hops_ms {
        let _ = hist.record((ms * 1000.0).max(1.0) as u64);
    }
    let mut result = ScenarioResult::new(name, hops_ms.len() as u64, elapsed, &hist);
    let p99 = hist.value_at_quantile(0.99) as f64 / 1000.0;
    result.check("every payment confirmed", hops_ms.len() == expected);
    // A speed target, not a correctness check: reported, never failing the run.
    result.notes.push(format!(
        "target paid → confirmed p99 < {TARGET_P99_MS} ms: {} (p99 {p99:.1} ms)",
        if p99 < TARGET_P99_MS {
            "met"
        } else {
            "not met"
        }
    ));
    result
}

pub async fn run(stores: &Stores, smoke: bool, report: &mut Report) -> anyhow::Result<()> {
    let (idle, burst): (usize, usize) = if smoke { (3, 20) } else { (15, 2_000) };
    let (database_url, db) = stores.fresh_database().await?;
    // One deployment of two instances: this one runs every worker, the
    // other serves the API only.
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let redis = stores.server_redis_args();
    let server = Server::start_shared(&database_url, &redis, &[], &tag)?;
    let api_only = Server::start_shared(&database_url, &redis, &["--workers", "false"], &tag)?;
    let client = load::client(CONCURRENCY);
    let users = (2 * idle + burst) as u64;
    let concert = server
        .create_concert(&client, "Saga Hop", "S", users)
        .await?;
    let concert_id = concert["id"].as_i64().context("concert id")?;
    let schedule_id = concert["schedules"][0]["id"]
        .as_i64()
        .context("schedule id")?;
    client
        .put(server.url(&format!("/v1/admin/queue/{concert_id}/settings")))
        .bearer_auth(server.token(1, Role::Admin))
        .json(&json!({"admitPerSecond": 5_000, "maxActive": users,
                      "activeTtlSeconds": 3_600, "heartbeatGraceSeconds": 600}))
        .send()
        .await?
        .error_for_status()?;
    let seats: Vec<i64> = db
        .query_all_raw(Statement::from_string(
            DatabaseBackend::Postgres,
            format!("SELECT id FROM seats WHERE schedule_id = {schedule_id} ORDER BY number"),
        ))
        .await?
        .iter()
        .map(|r| r.try_get::<i64>("", "id"))
        .collect::<Result<_, _>>()?;

    // Every buyer charged, admitted and holding a seat, 64 at a time.
    let server = Arc::new(server);
    let prepared: Vec<anyhow::Result<Ready>> = {
        use futures::StreamExt;
        futures::stream::iter(0..users as i64)
            .map(|u| {
                let (server, client, seats) = (server.clone(), client.clone(), &seats);
                async move {
                    prepare(
                        &server,
                        &client,
                        concert_id,
                        schedule_id,
                        seats,
                        FIRST_USER + u,
                    )
                    .await
                }
            })
            .buffered(CONCURRENCY as usize)
            .collect()
            .await
    };
    let mut ready = prepared.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let burst_ready = ready.split_off(2 * idle);
    let cross_ready = ready.split_off(idle);

    let t = Instant::now();
    let idle_payments = pay_paced(&server, &client, ready, Duration::from_secs(1)).await?;
    let idle_elapsed = t.elapsed();
    let idle_hops = hop_latencies(&db, &idle_payments).await?;
    let mut idle_row = row(
        "saga hop at 1 payment/s (paid → confirmed)",
        &idle_hops,
        idle,
        idle_elapsed,
    );
    idle_row.notes.push(format!(
        "{idle} payments one a second on an otherwise idle server (PostgreSQL + Redis); \
         paid → confirmed from payments.updated_at − created_at."
    ));
    report.scenarios.push(idle_row);

    let t = Instant::now();
    let cross_payments = pay_paced(&api_only, &client, cross_ready, Duration::from_secs(1)).await?;
    let cross_elapsed = t.elapsed();
    let cross_hops = hop_latencies(&db, &cross_payments).await?;
    let mut cross_row = row(
        "saga hop across instances at 1 payment/s (paid → confirmed)",
        &cross_hops,
        idle,
        cross_elapsed,
    );
    cross_row.notes.push(format!(
        "{idle} payments one a second to an API-only instance (`--workers false`); \
         a second instance of the same deployment runs the relay and the consumers, \
         woken by PostgreSQL LISTEN/NOTIFY (its relay poll is 250 ms)."
    ));
    report.scenarios.push(cross_row);

    let t = Instant::now();
    let burst_payments = pay_paced(&server, &client, burst_ready, Duration::from_millis(2)).await?;
    let burst_elapsed = t.elapsed();
    let burst_hops = hop_latencies(&db, &burst_payments).await?;
    let mut burst_row = row(
        "saga hop at 500 payments/s (paid → confirmed)",
        &burst_hops,
        burst,
        burst_elapsed,
    );
    burst_row.notes.push(format!(
        "{burst} payments sent one every 2 ms (500/s) in {:.1} s.",
        burst_elapsed.as_secs_f64()
    ));
    report.scenarios.push(burst_row);
    Ok(())
}
