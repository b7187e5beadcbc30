//! Mass cancellation: a schedule sold out over HTTP (each buyer charges the
//! wallet, enters the waiting room, waits for the turn, holds the seat kept
//! for them and pays), then an admin cancels the schedule. Measured: the
//! time from the cancel request until `GET /v1/admin/schedules/{id}` reads
//! `cancelled`, refunds per second, and each ticket's time from the request
//! to its refund (p50/p99). Checked: every ticket refunded exactly once,
//! every buyer's points back, no seat still sold.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use boxoffice::auth::domain::Role;
use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};

use crate::{
    http::CONCURRENCY,
    load,
    report::{Report, ScenarioResult},
    server::Server,
    stores::Stores,
};

/// The seat price of [`Server::create_concert`]; each buyer charges it.
const SEAT_PRICE: i64 = 1_000;
/// Buyers are user ids from here on.
const FIRST_BUYER: i64 = 500_001;
const SALE_TIMEOUT: Duration = Duration::from_secs(300);
const CANCEL_TIMEOUT: Duration = Duration::from_secs(900);

struct Sale {
    client: reqwest::Client,
    server: Server,
    concert: i64,
    schedule: i64,
    seats: Vec<i64>,
}

impl Sale {
    /// One buyer's whole purchase; false on any unexpected answer.
    async fn buy(&self, i: usize) -> bool {
        self.try_buy(i).await.is_ok()
    }

    async fn try_buy(&self, i: usize) -> anyhow::Result<()> {
        let token = self.server.token(FIRST_BUYER + i as i64, Role::User);
        let post = |path: &str, body: Value, queue: Option<&str>| {
            let mut req = self
                .client
                .post(self.server.url(path))
                .bearer_auth(&token)
                .json(&body);
            if let Some(queue) = queue {
                req = req.header("x-queue-token", queue);
            }
            async move {
                let resp = req.send().await?.error_for_status()?;
                anyhow::Ok(resp.json::<Value>().await?)
            }
        };
        post("/v1/wallet/charges", json!({"amount": SEAT_PRICE}), None).await?;
        let entered = post("/v1/queue/tokens", json!({"concertId": self.concert}), None).await?;
        let queue = entered["token"]
            .as_str()
            .context("a queue token")?
            .to_owned();
        let deadline = Instant::now() + SALE_TIMEOUT;
        loop {
            let status: Value = self
                .client
                .get(self.server.url("/v1/queue/status"))
                .header("x-queue-token", &queue)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            if status["status"] == "active" {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "never admitted");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let hold = json!({"scheduleId": self.schedule, "seatId": self.seats[i]});
        let held = post("/v1/reservations", hold, Some(&queue)).await?;
        post(
            "/v1/payments",
            json!({"reservationId": held["id"]}),
            Some(&queue),
        )
        .await?;
        Ok(())
    }

    async fn progress(&self) -> anyhow::Result<Value> {
        Ok(self
            .client
            .get(
                self.server
                    .url(&format!("/v1/admin/schedules/{}", self.schedule)),
            )
            .bearer_auth(self.server.token(1, Role::Admin))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }
}

async fn count(db: &DatabaseConnection, sql: &str) -> anyhow::Result<i64> {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .context("a count")?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

pub async fn run(
    stores: &Stores,
    smoke: bool,
    perf_dir: Option<&std::path::Path>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let tickets: u64 = if smoke { 100 } else { 10_000 };
    let (database_url, db) = stores.fresh_database().await?;
    let server = Server::start(&database_url, &stores.server_redis_args(), &[])?;
    let client = load::client(CONCURRENCY);
    let concert = server
        .create_concert(&client, "Cancelled Night", "S", tickets)
        .await?;
    let concert_id = concert["id"].as_i64().context("concert id")?;
    let schedule = concert["schedules"][0]["id"]
        .as_i64()
        .context("schedule id")?;
    client
        .put(server.url(&format!("/v1/admin/queue/{concert_id}/settings")))
        .bearer_auth(server.token(1, Role::Admin))
        .json(&json!({"admitPerSecond": 5_000, "maxActive": tickets,
                      "activeTtlSeconds": 3_600, "heartbeatGraceSeconds": 600}))
        .send()
        .await?
        .error_for_status()?;
    let mut seats = Vec::with_capacity(tickets as usize);
    for row in db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT id FROM seats WHERE schedule_id = {schedule} ORDER BY id"),
        ))
        .await?
    {
        seats.push(row.try_get_by_index::<i64>(0)?);
    }
    let sale = Arc::new(Sale {
        client: client.clone(),
        server,
        concert: concert_id,
        schedule,
        seats,
    });

    // The sale: every seat sold, every ticket confirmed.
    let sold = {
        let sale = sale.clone();
        load::run(
            tickets,
            CONCURRENCY,
            ProgressBar::new(tickets).with_message("selling out"),
            move |i| {
                let sale = sale.clone();
                async move { sale.buy(i as usize).await }
            },
        )
        .await
    };
    let confirmed_sql = "SELECT COUNT(*) FROM payments WHERE status = 'confirmed'";
    let deadline = Instant::now() + SALE_TIMEOUT;
    while count(&db, confirmed_sql).await? < tickets as i64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let confirmed = count(&db, confirmed_sql).await?;

    // The cancellation, timed from the request to `cancelled`.
    let profile = crate::profile::Profile::start(
        perf_dir,
        sale.server.pid(),
        "cancellation",
        "a schedule cancellation: from the request to `cancelled` (holds released, refunds scheduled and carried out)",
    )?;
    let cpu_before = crate::cpu::CpuUse::now(sale.server.pid(), stores);
    let requested_at: DateTime<Utc> = Utc::now();
    let started = Instant::now();
    let answer = client
        .post(
            sale.server
                .url(&format!("/v1/admin/schedules/{schedule}/cancel")),
        )
        .bearer_auth(sale.server.token(1, Role::Admin))
        .send()
        .await?;
    let accepted = answer.status().as_u16() == 202;
    let mut last = Value::Null;
    let bar = ProgressBar::new(tickets).with_message("refunding");
    while started.elapsed() < CANCEL_TIMEOUT {
        last = sale.progress().await?;
        bar.set_position(last["refundsDone"].as_u64().unwrap_or(0));
        if last["status"] == "cancelled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    bar.finish_and_clear();
    let cpu = cpu_before.until(&crate::cpu::CpuUse::now(sale.server.pid(), stores));
    if let Some(profile) = profile {
        println!("profile: {}", profile.finish()?.display());
    }

    // Each ticket's time from the request to its refund.
    let mut latencies = Histogram::<u64>::new(3).expect("histogram");
    for row in db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT updated_at FROM payments WHERE status = 'refunded'".to_owned(),
        ))
        .await?
    {
        let at: DateTime<Utc> = row.try_get_by_index(0)?;
        let us = (at - requested_at).num_microseconds().unwrap_or(0).max(0) as u64;
        latencies.record(us).ok();
    }
    let refunds = count(
        &db,
        "SELECT COUNT(*) FROM wallet_transactions WHERE kind = 'refund'",
    )
    .await?;
    let doubled = count(
        &db,
        "SELECT COUNT(*) FROM (SELECT payment_id FROM wallet_transactions WHERE kind = 'refund' \
         GROUP BY payment_id HAVING COUNT(*) > 1) twice",
    )
    .await?;
    let short = count(
        &db,
        &format!("SELECT COUNT(*) FROM wallets WHERE balance <> {SEAT_PRICE}"),
    )
    .await?;
    let still_sold = count(
        &db,
        &format!("SELECT COUNT(*) FROM seats WHERE schedule_id = {schedule} AND status = 'sold'"),
    )
    .await?;

    // The rate is the refunds' own: request → the last refund. The
    // schedule turns `cancelled` only once the request is 5 s old (a
    // payment on its way when the sale stopped is waited for), which
    // would cap any rate at tickets ÷ 5 s.
    let refunding = Duration::from_micros(latencies.max()).max(Duration::from_millis(1));
    let mut result = ScenarioResult::new(
        &format!("mass cancellation ({tickets} sold seats refunded)"),
        refunds as u64,
        refunding,
        &latencies,
    );
    result.errors = sold.errors;
    result
        .check(
            "every seat sold before the cancellation",
            confirmed == tickets as i64,
        )
        .check("the cancel request is accepted (202)", accepted)
        .check("the schedule ends cancelled", last["status"] == "cancelled")
        .check(
            "one refund per ticket",
            refunds == tickets as i64 && doubled == 0,
        )
        .check(
            "refundsDone counts every ticket",
            last["refundsDone"] == tickets,
        )
        .check("every buyer has every point back", short == 0)
        .check("no seat still sold", still_sold == 0);
    result.notes.push(format!(
        "selling out took {:.1} s ({} buyers × charge, enter, poll, hold, pay; {} failed)",
        sold.elapsed.as_secs_f64(),
        tickets,
        sold.errors
    ));
    result.notes.push(format!(
        "request → last refund: {:.1} s, {:.0} refunds/s (the per-second column); request → `cancelled`: {:.1} s (at least 5 s by design); latency columns: request → each ticket's refund",
        refunding.as_secs_f64(),
        refunds as f64 / refunding.as_secs_f64(),
        took.as_secs_f64(),
    ));
    result
        .notes
        .push(cpu.per(refunds as f64, "refund", took.as_secs_f64()));
    report.ratios.insert(
        "cancellationRefundsPerSecond".into(),
        refunds as f64 / refunding.as_secs_f64(),
    );
    report.scenarios.push(result);
    Ok(())
}
