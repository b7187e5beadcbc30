//! Soak: mixed traffic for a bounded time (20 minutes; seconds in the
//! smoke run) against a server whose retention is set short, sampling the
//! tables retention keeps bounded and the server's memory as it goes.
//!
//! Every user charges their wallet, claims a coupon and redeems it, each
//! with an `Idempotency-Key` (and retries one of them with the same key).
//! That writes wallet rows, idempotency keys, user coupons, redemption
//! jobs, notifications, outbox rows and every consumer's inbox rows. The
//! business rows grow with the traffic, as they should; what retention
//! governs must level off after the first minutes. At the end: the money
//! adds up, no coupon was issued twice, every job finished, and the slope
//! of each retained table and of the server's RSS over the second half.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use boxoffice::auth::domain::Role;
use hdrhistogram::Histogram;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};

use crate::{
    load,
    report::{Report, ScenarioResult},
    server::Server,
    stores::Stores,
};

const WORKERS: u64 = 16;
/// The offered load: a steady rate the consumers keep up with on this
/// machine (what the soak watches is retention, not a backlog).
const VISITS_PER_SECOND: f64 = 20.0;
/// Short retention, so that it shows within the soak.
const RETENTION_SECONDS: &str = "60";
const RETAINED: [&str; 5] = [
    "idempotency_keys",
    "inbox",
    "notifications",
    "coupon_jobs",
    "outbox",
];
const GROWING: [&str; 2] = ["wallet_transactions", "user_coupons"];

struct Sample {
    at_s: f64,
    rows: Vec<i64>,
    rss_mib: f64,
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> anyhow::Result<i64> {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .context("a row")?;
    Ok(row.try_get_by_index::<Option<i64>>(0)?.unwrap_or(0))
}

async fn sample(db: &DatabaseConnection, server: &Server, at_s: f64) -> anyhow::Result<Sample> {
    let mut rows = Vec::new();
    for table in RETAINED.iter().chain(GROWING.iter()) {
        rows.push(scalar(db, &format!("SELECT COUNT(*) FROM {table}")).await?);
    }
    Ok(Sample {
        at_s,
        rows,
        rss_mib: server.rss_mib().unwrap_or(0.0),
    })
}

/// Least-squares slope of `y` over time, per minute.
fn slope_per_minute(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den * 60.0 }
}

struct Visit {
    client: reqwest::Client,
    server: Arc<Server>,
    coupon: i64,
}

impl Visit {
    async fn post(
        &self,
        user: i64,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .client
            .post(self.server.url(path))
            .bearer_auth(self.server.token(user, Role::User))
            .header("idempotency-key", key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        Ok((
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        ))
    }

    /// One user's visit; the charge is sent twice with one key.
    async fn run(&self, user: i64) -> anyhow::Result<()> {
        let charge = json!({"amount": 5_000});
        let key = format!("soak-charge-{user}");
        let (status, first) = self
            .post(user, "/v1/wallet/charges", &key, Some(charge.clone()))
            .await?;
        anyhow::ensure!(status == 201, "charge {status}: {first}");
        let (status, again) = self
            .post(user, "/v1/wallet/charges", &key, Some(charge))
            .await?;
        anyhow::ensure!(
            status == 201 && again == first,
            "charge retry {status}: {again}"
        );
        let path = format!("/v1/coupons/{}/issue", self.coupon);
        let (status, won) = self
            .post(user, &path, &format!("soak-issue-{user}"), None)
            .await?;
        anyhow::ensure!(status == 201, "issue {status}: {won}");
        let path = format!("/v1/user-coupons/{}/redemptions", won["userCouponId"]);
        let (status, job) = self
            .post(user, &path, &format!("soak-redeem-{user}"), None)
            .await?;
        anyhow::ensure!(status == 202, "redeem {status}: {job}");
        Ok(())
    }
}

pub async fn run(
    stores: &Stores,
    smoke: bool,
    minutes: f64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let duration = Duration::from_secs_f64(if smoke { 10.0 } else { minutes * 60.0 });
    let every = if smoke {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(15)
    };
    let (database_url, db) = stores.fresh_database().await?;
    let server = Arc::new(Server::start(
        &database_url,
        &stores.server_redis_args(),
        &[
            "--inbox-retention-seconds",
            RETENTION_SECONDS,
            "--idempotency-retention-seconds",
            RETENTION_SECONDS,
            "--notification-retention-seconds",
            RETENTION_SECONDS,
            "--coupon-job-retention-seconds",
            RETENTION_SECONDS,
            "--retention-sweep-seconds",
            "5",
            "--outbox-retention-hours",
            "0",
            // A redelivery window inside the inbox retention.
            "--consumer-claim-idle-ms",
            "2000",
            "--consumer-max-deliveries",
            "3",
        ],
    )?);
    let client = load::client(WORKERS);
    let admin = server.token(1, Role::Admin);
    let vendor: Value = client
        .post(server.url("/v1/admin/vendors"))
        .bearer_auth(&admin)
        .json(&json!({"name": "Soak Café"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let now = chrono::Utc::now();
    let campaign: Value = client
        .post(server.url("/v1/admin/coupons"))
        .bearer_auth(&admin)
        .json(
            &json!({"name": "Soak coffee", "discount": 100, "quantity": 1_000_000,
            "vendorId": vendor["id"],
            "validFrom": (now - chrono::TimeDelta::hours(1)).to_rfc3339(),
            "validUntil": (now + chrono::TimeDelta::days(1)).to_rfc3339()}),
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let visit = Arc::new(Visit {
        client,
        server: server.clone(),
        coupon: campaign["id"].as_i64().context("coupon id")?,
    });

    let started = Instant::now();
    let next_user = Arc::new(AtomicU64::new(1));
    let failures = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (visit, next_user, failures) = (visit.clone(), next_user.clone(), failures.clone());
            tokio::spawn(async move {
                let mut latencies = Histogram::<u64>::new(3).expect("a histogram");
                // Each worker's share of the rate.
                let pace = Duration::from_secs_f64(WORKERS as f64 / VISITS_PER_SECOND);
                while started.elapsed() < duration {
                    let user = 100 + next_user.fetch_add(1, Ordering::Relaxed) as i64;
                    let t = Instant::now();
                    match visit.run(user).await {
                        Ok(()) => latencies.record(t.elapsed().as_micros() as u64).ok(),
                        Err(err) => {
                            if failures.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("soak visit failed: {err:#}");
                            }
                            None
                        }
                    };
                    tokio::time::sleep(pace.saturating_sub(t.elapsed())).await;
                }
                latencies
            })
        })
        .collect();
    let mut samples = vec![sample(&db, &server, 0.0).await?];
    while started.elapsed() < duration {
        tokio::time::sleep(every.min(duration.saturating_sub(started.elapsed()))).await;
        samples.push(sample(&db, &server, started.elapsed().as_secs_f64()).await?);
    }
    let mut latencies = Histogram::<u64>::new(3)?;
    for worker in workers {
        latencies.add(worker.await?)?;
    }
    let elapsed = started.elapsed();
    let visits = latencies.len();

    // Settle: every job decided, every event handled.
    let deadline = Instant::now() + Duration::from_secs(60);
    while scalar(
        &db,
        "SELECT COUNT(*) FROM coupon_jobs WHERE status = 'pending'",
    )
    .await?
        > 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let charged = scalar(
        &db,
        "SELECT CAST(SUM(amount) AS BIGINT) FROM wallet_transactions WHERE kind = 'charge'",
    )
    .await?;
    let balances = scalar(&db, "SELECT CAST(SUM(balance) AS BIGINT) FROM wallets").await?;
    let charges = scalar(
        &db,
        "SELECT COUNT(*) FROM wallet_transactions WHERE kind = 'charge'",
    )
    .await?;
    let issued = scalar(&db, "SELECT COUNT(*) FROM user_coupons").await?;
    let doubled = scalar(
        &db,
        "SELECT COUNT(*) FROM (SELECT user_id FROM user_coupons GROUP BY coupon_id, user_id HAVING COUNT(*) > 1) d",
    )
    .await?;
    let pending = scalar(
        &db,
        "SELECT COUNT(*) FROM coupon_jobs WHERE status = 'pending'",
    )
    .await?;

    let mut result = ScenarioResult::new(
        &format!(
            "soak: {:.0} s of charge + coupon issue + redemption, retention {RETENTION_SECONDS} s",
            elapsed.as_secs_f64()
        ),
        visits,
        elapsed,
        &latencies,
    );
    result.errors = failures.load(Ordering::Relaxed);
    result
        .check("no visit failed", result.errors == 0)
        .check("Σcharged = Σbalances", charged == balances)
        .check(
            "every visit charged once (its retry replayed)",
            charges as u64 == visits,
        )
        .check(
            "one coupon per user",
            doubled == 0 && issued as u64 == visits,
        )
        .check("every redemption job finished", pending == 0);
    // The second half, past the warm-up and the first retention period.
    let half = samples.len() / 2;
    let late = &samples[half..];
    let names: Vec<&str> = RETAINED.iter().chain(GROWING.iter()).copied().collect();
    for (i, table) in names.iter().enumerate() {
        let points: Vec<(f64, f64)> = late.iter().map(|s| (s.at_s, s.rows[i] as f64)).collect();
        let series: Vec<String> = samples
            .iter()
            .map(|s| format!("{:.0}s:{}", s.at_s, s.rows[i]))
            .collect();
        result.notes.push(format!(
            "{table}: {} (second half slope {:+.0} rows/min)",
            series.join(" "),
            slope_per_minute(&points)
        ));
    }
    let rss: Vec<(f64, f64)> = late.iter().map(|s| (s.at_s, s.rss_mib)).collect();
    result.notes.push(format!(
        "server RSS MiB: {} (second half slope {:+.1} MiB/min)",
        samples
            .iter()
            .map(|s| format!("{:.0}s:{:.0}", s.at_s, s.rss_mib))
            .collect::<Vec<_>>()
            .join(" "),
        slope_per_minute(&rss)
    ));
    if !smoke {
        // Retained tables level off: over the second half they grow by at
        // most a tenth of the rows the traffic wrote meanwhile.
        let written = |s: &Sample| s.rows[RETAINED.len()] as f64;
        let traffic = written(&late[late.len() - 1]) - written(&late[0]);
        for (i, table) in RETAINED.iter().enumerate() {
            let growth = late[late.len() - 1].rows[i] as f64 - late[0].rows[i] as f64;
            result.check(
                &format!(
                    "{table} levels off (grew {growth:.0} while {traffic:.0} charges were written)"
                ),
                growth <= traffic / 10.0,
            );
        }
    }
    report.scenarios.push(result);
    Ok(())
}
