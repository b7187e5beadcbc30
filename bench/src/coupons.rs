//! Coupon storm: 10,000 users each send two `POST /v1/coupons/{id}/issue`
//! (a double click: both requests of a user go out back to back, so they
//! race each other) for a campaign of 1,000 coupons. Everything goes through
//! the release server over HTTP; a 409 (`sold_out`, `already_issued`) is an
//! expected answer. Checks that exactly the quantity was issued, once per
//! user and once per number, and that the database and the Redis ledger
//! agree.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use anyhow::Context;
use boxoffice::auth::domain::Role;
use chrono::{TimeDelta, Utc};
use indicatif::ProgressBar;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement};
use serde_json::{Value, json};

use crate::{
    http::{self, CONCURRENCY},
    load::{self, LoadResult, Pace, Schedule},
    profile::Profile,
    queue::OPEN_CONNECTIONS,
    report::{Report, ScenarioResult},
    server::Server,
    stores::Stores,
};

/// How many requests got which answer.
#[derive(Default)]
struct Answers {
    issued: AtomicU64,
    sold_out: AtomicU64,
    already_issued: AtomicU64,
    /// Requests answered so far.
    answered: AtomicU64,
    /// When the last coupon was won: time since the start, requests
    /// answered by then.
    sold_out_at: std::sync::OnceLock<(std::time::Duration, u64)>,
}

/// A campaign's rows in `user_coupons`: rows, distinct users, distinct
/// numbers, smallest and largest number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowCounts {
    pub rows: i64,
    pub users: i64,
    pub numbers: i64,
    pub min_number: i64,
    pub max_number: i64,
}

impl RowCounts {
    pub async fn of(db: &DatabaseConnection, coupon: i64) -> anyhow::Result<Self> {
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT COUNT(*), COUNT(DISTINCT user_id), COUNT(DISTINCT issue_number), \
                 COALESCE(MIN(issue_number), 0), COALESCE(MAX(issue_number), 0) \
                 FROM user_coupons WHERE coupon_id = $1",
                [coupon.into()],
            ))
            .await?
            .context("counting user_coupons")?;
        Ok(Self {
            rows: row.try_get_by_index(0)?,
            users: row.try_get_by_index(1)?,
            numbers: row.try_get_by_index(2)?,
            min_number: row.try_get_by_index(3)?,
            max_number: row.try_get_by_index(4)?,
        })
    }

    /// Exactly `quantity` rows, no user twice, no number twice, numbers in
    /// 1..=quantity.
    pub fn exact(&self, quantity: u64) -> bool {
        let q = quantity as i64;
        self.rows == q
            && self.users == q
            && self.numbers == q
            && (q == 0 || (self.min_number == 1 && self.max_number == q))
    }

    pub fn describe(&self) -> String {
        format!(
            "user_coupons: {} rows, {} distinct users, {} distinct issue numbers (range {}..={})",
            self.rows, self.users, self.numbers, self.min_number, self.max_number
        )
    }
}

/// The user behind request `i` when `users` users send two requests each:
/// requests 2k and 2k+1 belong to the same user (a double click).
pub fn user_of(i: u64) -> i64 {
    (i / 2) as i64 + 1
}

/// A vendor and a campaign of `quantity` coupons valid now, made by the
/// admin on `server`; the campaign's id.
pub async fn campaign(
    client: &reqwest::Client,
    server: &Server,
    quantity: u64,
) -> anyhow::Result<i64> {
    let admin = server.token(1, Role::Admin);
    let vendor: Value = client
        .post(server.url("/v1/admin/vendors"))
        .bearer_auth(&admin)
        .json(&json!({"name": "Storm Vendor"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let now = Utc::now();
    let coupon: Value = client
        .post(server.url("/v1/admin/coupons"))
        .bearer_auth(&admin)
        .json(&json!({
            "name": "Storm Coupon", "discount": 500, "quantity": quantity,
            "validFrom": (now - TimeDelta::hours(1)).to_rfc3339(),
            "validUntil": (now + TimeDelta::days(1)).to_rfc3339(),
            "vendorId": vendor["id"],
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    coupon["id"].as_i64().context("coupon id")
}

/// One storm's outcome: the load, the answers, the rows and the admin's
/// stats of the campaign.
pub struct Storm {
    pub result: LoadResult,
    pub quantity: u64,
    pub issued: u64,
    pub sold_out: u64,
    pub already_issued: u64,
    /// When the last coupon was won: time since the start, answers by then.
    pub sold_out_at: Option<(std::time::Duration, u64)>,
    pub counts: RowCounts,
    pub stats: Value,
}

impl Storm {
    /// The checks every storm must pass, whichever strategy served it.
    pub fn check(&self, scenario: &mut ScenarioResult) {
        let quantity = self.quantity;
        scenario
            .check(
                &format!("exactly {quantity} answered 201"),
                self.issued == quantity,
            )
            .check(
                &format!("{quantity} rows, 0 duplicate users or numbers"),
                self.counts.exact(quantity),
            )
            .check(
                "each winner's other request answered already_issued",
                self.already_issued == quantity,
            )
            .check("no errors (5xx, transport)", self.result.errors == 0);
    }

    /// How long selling out took and how fast the refusals after it went;
    /// `how` says what decided the issues.
    pub fn phases(&self, how: &str) -> Option<String> {
        let (at, answered) = self.sold_out_at?;
        let requests = self.result.requests;
        let rest = self.result.elapsed.saturating_sub(at).as_secs_f64();
        Some(format!(
            "phases: the last coupon was won after {:.2} s and {answered} answers ({:.0}/s; {how}); the {} answers after it took {rest:.2} s ({:.0}/s).",
            at.as_secs_f64(),
            answered as f64 / at.as_secs_f64().max(f64::EPSILON),
            requests - answered,
            (requests - answered) as f64 / rest.max(f64::EPSILON),
        ))
    }

    pub fn answers(&self) -> String {
        format!(
            "answers: {} × 201, {} × 409 sold_out, {} × 409 already_issued, {} errors.",
            self.issued, self.sold_out, self.already_issued, self.result.errors
        )
    }
}

/// `users` users each send two issue requests (back to back, racing each
/// other) for a new campaign of `quantity` on `server`, at `pace`.
pub async fn storm(
    server: &Server,
    db: &DatabaseConnection,
    users: u64,
    quantity: u64,
    label: &str,
    pace: Pace,
) -> anyhow::Result<Storm> {
    let requests = users * 2;
    let client = load::client(match pace {
        Pace::Closed { concurrency } => concurrency,
        Pace::Open(schedule) => schedule.connections,
    });
    let admin = server.token(1, Role::Admin);
    let coupon_id = campaign(&client, server, quantity).await?;
    let tokens: Arc<Vec<String>> = Arc::new(
        (1..=users as i64)
            .map(|user| server.token(user, Role::User))
            .collect(),
    );
    let answers = Arc::new(Answers::default());
    let started = std::time::Instant::now();
    let result = {
        let (client, url, tokens, answers) = (
            client.clone(),
            server.url(&format!("/v1/coupons/{coupon_id}/issue")),
            tokens.clone(),
            answers.clone(),
        );
        pace.drive(
            requests,
            ProgressBar::new(requests).with_message(label.to_owned()),
            move |i| {
                let (client, url, tokens, answers) =
                    (client.clone(), url.clone(), tokens.clone(), answers.clone());
                async move {
                    let token = &tokens[(user_of(i) - 1) as usize];
                    let Ok(resp) = client.post(&url).bearer_auth(token).send().await else {
                        return false;
                    };
                    match resp.status().as_u16() {
                        201 => {
                            let won = answers.issued.fetch_add(1, Ordering::Relaxed) + 1;
                            let answered = answers.answered.fetch_add(1, Ordering::Relaxed) + 1;
                            if won == quantity {
                                answers
                                    .sold_out_at
                                    .get_or_init(|| (started.elapsed(), answered));
                            }
                            resp.bytes().await.is_ok()
                        }
                        409 => {
                            answers.answered.fetch_add(1, Ordering::Relaxed);
                            let Ok(body) = resp.json::<Value>().await else {
                                return false;
                            };
                            match body["code"].as_str() {
                                Some("sold_out") => {
                                    answers.sold_out.fetch_add(1, Ordering::Relaxed)
                                }
                                Some("already_issued") => {
                                    answers.already_issued.fetch_add(1, Ordering::Relaxed)
                                }
                                _ => return false,
                            };
                            true
                        }
                        _ => false,
                    }
                }
            },
        )
        .await
    };
    let stats: Value = client
        .get(server.url(&format!("/v1/admin/coupons/{coupon_id}")))
        .bearer_auth(&admin)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(Storm {
        result,
        quantity,
        issued: answers.issued.load(Ordering::Relaxed),
        sold_out: answers.sold_out.load(Ordering::Relaxed),
        already_issued: answers.already_issued.load(Ordering::Relaxed),
        sold_out_at: answers.sold_out_at.get().copied(),
        counts: RowCounts::of(db, coupon_id).await?,
        stats,
    })
}

/// Runs the storm; measures a health baseline on the same server first if
/// none was measured in this run. Returns the storm's requests per second
/// and the health baseline's.
pub async fn run(
    stores: &Stores,
    health_rps: Option<f64>,
    smoke: bool,
    perf_dir: Option<&std::path::Path>,
    report: &mut Report,
) -> anyhow::Result<(f64, f64)> {
    let (users, quantity) = if smoke {
        (200u64, 20u64)
    } else {
        (10_000, 1_000)
    };
    let requests = users * 2;
    let (database_url, db) = stores.fresh_database().await?;
    let server = Server::start(&database_url, &stores.server_redis_args(), &[])?;
    let health_rps = match health_rps {
        Some(rps) => rps,
        None => http::health_baseline(&server, smoke, report).await,
    };
    let profile = Profile::start(
        perf_dir,
        server.pid(),
        "storm",
        "POST /v1/coupons/{id}/issue, the coupon storm (1,000 won, then refusals)",
    )?;
    let closed = Pace::Closed {
        concurrency: CONCURRENCY,
    };
    let storm = storm(&server, &db, users, quantity, "coupon storm", closed).await?;
    if let Some(profile) = profile {
        println!("profile: {}", profile.finish()?.display());
    }
    let (db_issued, ledger_issued) = (
        storm.stats["issued"].as_u64(),
        storm.stats["ledgerIssued"].as_u64(),
    );

    let mut scenario =
        ScenarioResult::from_load("coupon storm (POST /v1/coupons/{id}/issue)", &storm.result);
    storm.check(&mut scenario);
    scenario.check(
        "DB = Redis (issued == ledgerIssued == quantity)",
        db_issued == Some(quantity) && ledger_issued == Some(quantity),
    );
    let vs_health = scenario.rps / health_rps;
    scenario.notes.push(format!(
        "{users} users × 2 requests (each user's two back to back, racing each other) = {requests} issue requests over {CONCURRENCY} keep-alive connections, campaign of {quantity}."
    ));
    scenario.notes.push(storm.answers());
    scenario.notes.push(format!(
        "{}; admin stats: issued {}, ledgerIssued {}.",
        storm.counts.describe(),
        db_issued.map_or("?".into(), |n| n.to_string()),
        ledger_issued.map_or("?".into(), |n| n.to_string()),
    ));
    scenario
        .notes
        .extend(storm.phases("winners' rows are written in batches"));
    scenario.notes.push(format!(
        "{:.2} of the health baseline ({health_rps:.0}/s); target ≥ 0.60: {}.",
        vs_health,
        if vs_health >= 0.6 { "met" } else { "NOT met" }
    ));
    let rps = scenario.rps;
    report
        .ratios
        .insert("couponStormVsHealth".into(), vs_health);
    report.scenarios.push(scenario);

    // The same storm open loop, on a new campaign: requests due on a fixed
    // schedule at 80% of the closed loop's rate, latency from the due time.
    let open = Pace::Open(Schedule {
        rate: (rps * 0.8).max(100.0),
        connections: OPEN_CONNECTIONS,
    });
    let again = self::storm(
        &server,
        &db,
        users,
        quantity,
        "coupon storm, open loop",
        open,
    )
    .await?;
    let mut scenario = ScenarioResult::from_load(
        "coupon storm, open loop (POST /v1/coupons/{id}/issue)",
        &again.result,
    );
    again.check(&mut scenario);
    scenario.notes.push(format!("{}.", open.label()));
    scenario.notes.push(again.answers());
    report.scenarios.push(scenario);
    Ok((rps, health_rps))
}
