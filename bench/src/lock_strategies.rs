//! Lock strategies side by side, through the same HTTP route and server:
//! the coupon storm's mix sent to `POST /v1/coupons/{id}/issue` of the bench
//! build of the server (`boxoffice-strategies`, the `bench-strategies`
//! feature), started once per strategy with `--coupon-lock-strategy`. The
//! strategy replaces the ledger's decision and nothing else: the same
//! authentication, campaign cache, window check, keys, answers and winner's
//! writes (`coupon::infra::locks`). So the storm's ratio to each is the
//! strategies' own difference.
//!
//! Each strategy runs twice: with the sold-out memory (as a release serves
//! the storm: once a campaign is seen sold out, refusals come from memory
//! whatever decided the issues) and without it (every request reaches the
//! strategy: the locking alone).

use anyhow::Context;

use crate::{
    coupons::{self, Storm},
    http::CONCURRENCY,
    load::Pace,
    report::{Report, ScenarioResult},
    server::Server,
    stores::Stores,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Pessimistic,
    Optimistic,
    SpinLock,
    PubSubLock,
    Ledger,
}

impl Strategy {
    const ALL: [Strategy; 5] = [
        Strategy::Pessimistic,
        Strategy::Optimistic,
        Strategy::SpinLock,
        Strategy::PubSubLock,
        Strategy::Ledger,
    ];

    /// Its `--coupon-lock-strategy` value.
    fn flag(self) -> &'static str {
        match self {
            Strategy::Pessimistic => "pessimistic",
            Strategy::Optimistic => "optimistic",
            Strategy::SpinLock => "spin-lock",
            Strategy::PubSubLock => "pub-sub-lock",
            Strategy::Ledger => "ledger",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Strategy::Pessimistic => "pessimistic (SELECT … FOR UPDATE)",
            Strategy::Optimistic => "optimistic (version + retry)",
            Strategy::SpinLock => "Redis spin lock (SET NX PX)",
            Strategy::PubSubLock => "Redis pub/sub lock (Redisson-style)",
            Strategy::Ledger => "Lua ledger (production path)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Strategy::Pessimistic => "Pessimistic",
            Strategy::Optimistic => "Optimistic",
            Strategy::SpinLock => "SpinLock",
            Strategy::PubSubLock => "PubSubLock",
            Strategy::Ledger => "LuaLedger",
        }
    }
}

fn name(strategy: Strategy, memory: bool) -> String {
    format!(
        "lock strategy over HTTP: {}, {}",
        strategy.title(),
        if memory {
            "with the sold-out memory"
        } else {
            "every request decided"
        }
    )
}

/// Lost races or failed lock tries the server counted
/// (`coupon_bench_lock_retries_total`).
async fn retries(server: &Server) -> anyhow::Result<u64> {
    let text = reqwest::get(server.url("/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("coupon_bench_lock_retries_total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

async fn measure(
    stores: &Stores,
    strategy: Strategy,
    memory: bool,
    users: u64,
    quantity: u64,
) -> anyhow::Result<ScenarioResult> {
    let (database_url, db) = stores.fresh_database().await?;
    let server = Server::start_strategies(
        &database_url,
        &["--redis-url".into(), stores.redis_url.clone()],
        &[
            "--coupon-lock-strategy",
            strategy.flag(),
            "--coupon-sold-out-memory",
            if memory { "true" } else { "false" },
        ],
    )?;
    let title = name(strategy, memory);
    let closed = Pace::Closed {
        concurrency: CONCURRENCY,
    };
    let storm: Storm = coupons::storm(&server, &db, users, quantity, &title, closed).await?;
    let mut scenario = ScenarioResult::from_load(&title, &storm.result);
    storm.check(&mut scenario);
    if strategy == Strategy::Ledger {
        scenario.check(
            "DB = Redis (issued == ledgerIssued == quantity)",
            storm.stats["issued"].as_u64() == Some(quantity)
                && storm.stats["ledgerIssued"].as_u64() == Some(quantity),
        );
    }
    let mut answers = storm.answers();
    let retried = retries(&server)
        .await
        .context("reading the server's metrics")?;
    match strategy {
        Strategy::Optimistic => {
            answers += &format!(" {retried} lost version races retried.");
        }
        Strategy::SpinLock => {
            answers += &format!(" {retried} failed lock tries (1 ms sleep between tries).");
        }
        Strategy::PubSubLock => {
            answers += &format!(" {retried} waits for a release message.");
        }
        Strategy::Pessimistic | Strategy::Ledger => {}
    }
    scenario.notes.push(answers);
    scenario
        .notes
        .extend(storm.phases(match (strategy, memory) {
            (Strategy::Ledger, _) => "winners' rows are written in batches",
            (_, true) => "one winner at a time under the lock; refusals from memory once sold out",
            (_, false) => "one request at a time under the lock",
        }));
    scenario.notes.push(storm.counts.describe() + ".");
    Ok(scenario)
}

/// Runs every strategy with and without the sold-out memory; `storm_rps`
/// is the coupon storm's rate on the release server in this run, and
/// `health_rps` the HTTP stack's own (the ceiling of any ratio here).
pub async fn run(
    stores: &Stores,
    storm_rps: Option<f64>,
    health_rps: Option<f64>,
    smoke: bool,
    report: &mut Report,
) -> anyhow::Result<()> {
    // The coupon storm's own mix, so that the ratios compare the same work.
    let (users, quantity) = if smoke {
        (100u64, 10u64)
    } else {
        (10_000, 1_000)
    };
    let mut rps = Vec::new();
    for memory in [true, false] {
        for strategy in Strategy::ALL {
            let mut scenario = measure(stores, strategy, memory, users, quantity).await?;
            if memory && strategy == Strategy::Pessimistic {
                scenario.notes.insert(
                    0,
                    format!(
                        "Every strategy is served by the bench build of the server (boxoffice-strategies, --coupon-lock-strategy) through POST /v1/coupons/{{id}}/issue: the same HTTP stack, authentication, campaign cache, keys and answers as the storm, and the same winner's writes (the row, the campaign's count and a CouponIssued event in one transaction). Same mix for each: {users} users × 2 requests (each user's two back to back) = {} requests over {CONCURRENCY} keep-alive connections, quantity {quantity}, a fresh database and server per run, PostgreSQL with durable commits. Each strategy runs twice: with the sold-out memory (refusals of a campaign seen sold out come from memory, as in a release) and with every request decided by the strategy.",
                        users * 2
                    ),
                );
            }
            rps.push(((strategy, memory), scenario.rps));
            report.scenarios.push(scenario);
        }
    }
    let rate = |s: Strategy, memory: bool| {
        rps.iter()
            .find(|(k, _)| *k == (s, memory))
            .map_or(0.0, |(_, r)| *r)
            .max(f64::EPSILON)
    };
    for other in Strategy::ALL {
        if other == Strategy::Ledger {
            continue;
        }
        // The strategies' own cost per request, nothing answered from memory.
        report.ratios.insert(
            format!("lockLuaLedgerVs{}", other.key()),
            rate(Strategy::Ledger, false) / rate(other, false),
        );
        if let Some(storm) = storm_rps {
            report.ratios.insert(
                format!("couponStormVs{}", other.key()),
                storm / rate(other, true),
            );
        }
    }
    if let Some(storm) = storm_rps {
        let ratio = storm / rate(Strategy::Pessimistic, true);
        let pessimistic = name(Strategy::Pessimistic, true);
        if let Some(first) = report.scenarios.iter_mut().find(|s| s.name == pessimistic) {
            first.notes.push(format!(
                "coupon storm on the release server ({storm:.0}/s) is {ratio:.1}× this strategy over the same route (no target: the ceiling below bounds it). The Lua ledger in this build served {:.0}/s.",
                rate(Strategy::Ledger, true),
            ));
        }
    }
    if let Some(health) = health_rps {
        // No strategy served over this route can beat the route itself.
        let (with, without) = (
            health / rate(Strategy::Pessimistic, true),
            health / rate(Strategy::Pessimistic, false),
        );
        report
            .ratios
            .insert("healthBaselineVsPessimistic".into(), with);
        let pessimistic = name(Strategy::Pessimistic, true);
        if let Some(first) = report.scenarios.iter_mut().find(|s| s.name == pessimistic) {
            first.notes.push(format!(
                "the ceiling: the HTTP stack alone (the health baseline, {health:.0}/s) is {with:.1}× this strategy with the sold-out memory and {without:.1}× with every request decided; a strategy over this route can be at most that many times faster."
            ));
        }
    }
    Ok(())
}
