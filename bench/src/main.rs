//! `boxoffice-bench`: runs the benchmark scenarios against real stores on
//! this machine and writes `bench/results/latest.{md,json}`.
//!
//! Every scenario is bounded in count and time and targets loopback only.

mod cancellation;
mod checkin;
mod coupons;
mod cpu;
mod full_flow;
mod hot_seat;
mod http;
mod load;
mod lock_strategies;
mod orders;
mod processes;
mod profile;
mod queue;
mod queue_scaling;
mod relay;
mod report;
mod rooms;
mod saga_hop;
mod seat_map;
mod server;
mod services;
mod soak;
mod stores;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::report::Report;

#[derive(Debug, Parser)]
#[command(name = "boxoffice-bench", about = "boxoffice benchmark scenarios")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// PostgreSQL server URL (a fresh database is created on it per
    /// scenario). Without it (or without --redis-url) the run starts its own
    /// throwaway PostgreSQL and Redis.
    #[arg(long, env = "BOXOFFICE_TEST_DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// Redis URL.
    #[arg(long, env = "BOXOFFICE_TEST_REDIS_URL", global = true)]
    redis_url: Option<String>,
    /// Run the servers on this Redis Cluster (comma-separated node URLs)
    /// instead of the standalone Redis; scenarios that drive the stores
    /// directly (relay, rooms, lock strategies) keep the standalone one.
    #[arg(long, env = "BOXOFFICE_BENCH_REDIS_CLUSTER_NODES", global = true)]
    redis_cluster_nodes: Option<String>,
    /// Where the report goes.
    #[arg(long, default_value = "bench/results", global = true)]
    out: PathBuf,
    /// Tiny counts, a few seconds in all: checks the scenarios still run
    /// (used by scripts/test); writes its report to a temp dir.
    #[arg(long, global = true)]
    smoke: bool,
    /// Profile the server with `perf` while users enter and while they
    /// poll (queue scenario) and write text summaries into this directory.
    #[arg(long, global = true)]
    perf_dir: Option<PathBuf>,
    /// How long the soak runs.
    #[arg(long, default_value_t = 20.0, global = true)]
    soak_minutes: f64,
}

#[derive(Debug, Clone, Copy, Subcommand)]
enum Scenario {
    /// Every scenario.
    All,
    /// Outbox relay, PostgreSQL → Redis: events/s and commit→stream latency.
    Relay,
    /// Health baseline, then 10,000 users entering and polling a waiting room.
    Queue,
    /// 1,000 concurrent holds on one seat.
    HotSeat,
    /// The waiting room at 1,000, 10,000 and 50,000 waiting users: poll
    /// throughput and the server's peak memory at each size.
    QueueScaling,
    /// Coupon storm: 10,000 users × 2 issue requests over HTTP for a campaign
    /// of 1,000 (with its own health baseline when `queue` did not run).
    Coupons,
    /// Pessimistic lock, optimistic version, Redis spin lock, Redis pub/sub
    /// lock and Lua ledger side by side through the same HTTP route (the
    /// bench build `boxoffice-strategies`), with and without the sold-out
    /// memory (runs the coupon storm too when it did not run, for the
    /// storm-vs-strategy ratios).
    LockStrategies,
    /// Mixed keyed traffic (charge, coupon issue, redemption) for
    /// `--soak-minutes` with retention set short: invariants, and the
    /// retained tables' sizes and the server's RSS over time with their
    /// slopes. Not part of `all` (it takes 20 minutes); 10 s in the smoke run.
    Soak,
    /// Scheduler rounds with 10 live rooms, then with 5,000 abandoned rooms
    /// more, then after those retired.
    Rooms,
    /// 1 and then 3 server processes as one deployment (one database, one
    /// Redis or Redis Cluster, one stream partition per process), the
    /// load round-robin over them: the coupon storm and a crowd entering a
    /// waiting room, with exactness checks across processes.
    Processes,
    /// A schedule of 10,000 seats sold out over HTTP, then cancelled by an
    /// admin: time to `cancelled`, refunds/s, and exactly one refund each.
    Cancellation,
    /// 2,000 users through the whole sale over HTTP (charge → queue → seat
    /// map → hold → pay): per-step latency, then the end-to-end invariants
    /// (no seat sold twice, the wallet ledger adds up, one receipt and one
    /// data-platform line per payment).
    FullFlow,
    /// Paid → confirmed (one saga hop through the relay and two consumers)
    /// at one payment a second and at 500 a second.
    SagaHop,
    /// 2,000 buyers race for overlapping orders of four seats in 50 rows of
    /// 20 (half by seat ids, half best-available), winners paying by
    /// order: orders/s, hold and pay p99, the saga's drain, then no partial
    /// order, no seat in two orders, every paid order confirmed whole, the
    /// wallet ledger, and best-available parties seated together.
    Orders,
    /// A 500-seat page of the seat map read by 64 connections, plain and
    /// revalidated with If-None-Match, against the health baseline.
    SeatMap,
    /// 5,000 tickets sold, scanned at 10 gates by 64 scanners (each code
    /// twice) and a fifth uploaded as offline batches (twice): scans/s and
    /// p50/p99, every ticket admitted once, every re-scan refused.
    Checkin,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Without URLs the run brings its own throwaway stores (stopped when
    // `own` is dropped, also on an error).
    let own = match (&cli.database_url, &cli.redis_url) {
        (Some(_), Some(_)) => None,
        _ => Some(services::Services::start()?),
    };
    let database_url = cli
        .database_url
        .clone()
        .or_else(|| own.as_ref().map(|s| s.postgres_url.clone()));
    let redis_url = cli
        .redis_url
        .clone()
        .or_else(|| own.as_ref().map(|s| s.redis_url.clone()));
    server::ensure_server_binary()?;
    let mut stores = stores::Stores::connect(database_url.as_deref(), redis_url.as_deref()).await?;
    stores.redis_cluster_nodes = cli.redis_cluster_nodes.clone();
    let mut report = Report::new(cli.smoke);
    report.redis = match &cli.redis_cluster_nodes {
        Some(nodes) => format!("servers on a Redis Cluster ({})", nodes),
        None => "servers on a standalone Redis".into(),
    };
    report.postgres = stores.describe_postgres().await?;
    // Ratios are measured in the same run: what the later scenarios compare
    // with, if an earlier one measured it.
    let mut health_rps = None;
    if matches!(cli.scenario, Scenario::All | Scenario::Relay) {
        relay::run(&stores, cli.smoke, &mut report).await?;
    }
    if matches!(cli.scenario, Scenario::All | Scenario::Queue) {
        let (database_url, _) = stores.fresh_database().await?;
        let server = server::Server::start(&database_url, &stores.server_redis_args(), &[])?;
        let health = http::health_baseline(&server, cli.smoke, &mut report).await;
        health_rps = Some(health);
        queue::run(
            &server,
            health,
            cli.smoke,
            cli.perf_dir.as_deref(),
            &mut report,
        )
        .await?;
    }
    if matches!(cli.scenario, Scenario::All | Scenario::QueueScaling) {
        queue_scaling::run(&stores, cli.smoke, &mut report).await?;
    }
    // The soak is bounded but long: only on its own, or in the smoke run.
    if matches!(cli.scenario, Scenario::Soak)
        || (cli.smoke && matches!(cli.scenario, Scenario::All))
    {
        soak::run(&stores, cli.smoke, cli.soak_minutes, &mut report).await?;
    }
    if matches!(cli.scenario, Scenario::All | Scenario::Rooms) {
        rooms::run(&stores, cli.smoke, &mut report).await?;
    }
    if matches!(cli.scenario, Scenario::All | Scenario::HotSeat) {
        let (database_url, _) = stores.fresh_database().await?;
        let server = server::Server::start(&database_url, &stores.server_redis_args(), &[])?;
        hot_seat::run(&server, cli.smoke, &mut report).await?;
    }
    let mut storm_rps = None;
    if matches!(
        cli.scenario,
        Scenario::All | Scenario::Coupons | Scenario::LockStrategies
    ) {
        let (storm, health) = coupons::run(
            &stores,
            health_rps,
            cli.smoke,
            cli.perf_dir.as_deref(),
            &mut report,
        )
        .await?;
        (storm_rps, health_rps) = (Some(storm), Some(health));
    }
    if matches!(cli.scenario, Scenario::All | Scenario::LockStrategies) {
        lock_strategies::run(&stores, storm_rps, health_rps, cli.smoke, &mut report).await?;
    }
    if matches!(cli.scenario, Scenario::All | Scenario::Processes) {
        processes::run(&stores, cli.smoke, &mut report).await?;
    }
    if matches!(cli.scenario, Scenario::All | Scenario::FullFlow) {
        full_flow::run(&stores, cli.smoke, cli.perf_dir.as_deref(), &mut report).await?;
    }
    if matches!(cli.scenario, Scenario::All | Scenario::Orders) {
        orders::run(&stores, cli.smoke, &mut report).await?;
    }
    if matches!(cli.scenario, Scenario::All | Scenario::SeatMap) {
        seat_map::run(&stores, cli.smoke, &mut report).await?;
    }
    if matches!(cli.scenario, Scenario::All | Scenario::SagaHop) {
        saga_hop::run(&stores, cli.smoke, &mut report).await?;
    }
    if matches!(cli.scenario, Scenario::All | Scenario::Checkin) {
        checkin::run(&stores, cli.smoke, &mut report).await?;
    }
    if matches!(cli.scenario, Scenario::All | Scenario::Cancellation) {
        cancellation::run(&stores, cli.smoke, cli.perf_dir.as_deref(), &mut report).await?;
    }
    let out = if cli.smoke {
        std::env::temp_dir().join("boxoffice-bench-smoke")
    } else {
        cli.out
    };
    let (md, json) = report.write(&out)?;
    println!("{}", report.markdown());
    eprintln!("report written to {} and {}", md.display(), json.display());
    anyhow::ensure!(
        report.all_checks_pass(),
        "some correctness checks failed (see the report)"
    );
    Ok(())
}
