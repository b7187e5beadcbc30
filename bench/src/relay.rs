//! Outbox relay, PostgreSQL → Redis Streams.
//!
//! 1. Throughput: a backlog of events is relayed by one relay in batches;
//!    events per second, and every event exactly once in the stream.
//! 2. Latency: writers commit events at a steady rate (1,000/s), each commit
//!    waking the relay as the use cases do; a reader on the stream records
//!    when each event arrives. Commit→stream latency percentiles.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use boxoffice::{
    kernel::events::{NewEvent, RelayWake},
    outbox::infra::{
        AnyBus,
        db::append_events,
        redis::{RedisBus, read_all},
        relay::{Relay, RelaySettings, RelayWaker},
    },
};
use chrono::Utc;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use redis::{
    AsyncCommands, AsyncConnectionConfig,
    streams::{StreamReadOptions, StreamReadReply},
};
use tokio_util::sync::CancellationToken;

use crate::{
    report::{Report, ScenarioResult},
    stores::Stores,
};

fn event(seq: u64) -> NewEvent {
    NewEvent::new(
        "BenchEvent",
        "bench",
        seq,
        &serde_json::json!({ "seq": seq, "pad": "x".repeat(64) }),
    )
}

fn stream_name() -> String {
    format!("bo:bench:{}:events", uuid::Uuid::new_v4().simple())
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>28} [{bar:40}] {pos}/{len} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar
}

pub async fn run(stores: &Stores, smoke: bool, report: &mut Report) -> anyhow::Result<()> {
    throughput(stores, if smoke { 500 } else { 50_000 }, report).await?;
    let (rate, seconds) = if smoke { (200, 1) } else { (1_000, 10) };
    latency(stores, rate, seconds, report).await
}

async fn throughput(stores: &Stores, events: u64, report: &mut Report) -> anyhow::Result<()> {
    let (_, db) = stores.fresh_database().await?;
    let fill = progress(events, "relay: filling the outbox");
    for start in (0..events).step_by(1_000) {
        let end = (start + 1_000).min(events);
        append_events(&db, (start..end).map(event).collect(), Utc::now()).await?;
        fill.set_position(end);
    }
    fill.finish();

    let (client, mut conn) = stores.redis().await?;
    let stream = stream_name();
    let bus = AnyBus::Redis(RedisBus::new(client, conn.clone(), &stream, 10_000_000));
    let relay = Relay::new(
        db.clone(),
        bus,
        RelayWaker::default(),
        RelaySettings {
            batch_size: 1_000,
            poll_interval: Duration::from_millis(50),
            retention: Duration::from_secs(3_600),
        },
    );
    let bar = progress(events, "relay: publishing");
    let mut batch_us = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    let mut relayed = 0u64;
    loop {
        let t = Instant::now();
        let n = relay.relay_batch().await? as u64;
        if n == 0 {
            break;
        }
        batch_us.record(t.elapsed().as_micros() as u64)?;
        relayed += n;
        bar.set_position(relayed);
    }
    let elapsed = started.elapsed();
    bar.finish();

    let published = read_all(&mut conn, &stream).await?;
    let unique: std::collections::HashSet<_> = published.iter().map(|m| m.event.event_id).collect();
    let mut result = ScenarioResult::new(
        "relay throughput (1 relay, batch 1000)",
        relayed,
        elapsed,
        &batch_us,
    );
    result
        .check(
            "every event in the stream",
            published.len() as u64 == events,
        )
        .check("no event twice", unique.len() == published.len());
    result.notes.push(format!(
        "{events} committed outbox rows relayed to Redis in {:.2} s; latency columns are per batch of 1,000 \
         (SELECT … FOR UPDATE SKIP LOCKED, pipelined XADD, UPDATE, COMMIT). Target ≥ 10,000 events/s.",
        elapsed.as_secs_f64()
    ));
    report
        .ratios
        .insert("relayEventsPerSecond".into(), result.rps);
    report.scenarios.push(result);
    conn.del::<_, ()>(&stream).await?;
    Ok(())
}

async fn latency(
    stores: &Stores,
    rate: u64,
    seconds: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    const WRITERS: u64 = 4;
    let total = rate * seconds;
    let (_, db) = stores.fresh_database().await?;
    let (client, mut conn) = stores.redis().await?;
    let stream = stream_name();
    let bus = AnyBus::Redis(RedisBus::new(
        client.clone(),
        conn.clone(),
        &stream,
        10_000_000,
    ));
    let waker = RelayWaker::default();
    let cancel = CancellationToken::new();
    let relay = Relay::new(
        db.clone(),
        bus,
        waker.clone(),
        RelaySettings {
            batch_size: 500,
            poll_interval: Duration::from_millis(250),
            retention: Duration::from_secs(3_600),
        },
    );
    let relay_task = tokio::spawn(relay.run(cancel.clone()));

    let commits: Arc<Mutex<Vec<Option<Instant>>>> =
        Arc::new(Mutex::new(vec![None; total as usize]));
    let arrivals: Arc<Mutex<Vec<Option<Instant>>>> =
        Arc::new(Mutex::new(vec![None; total as usize]));
    let duplicates = Arc::new(Mutex::new(0u64));

    let reader = {
        let arrivals = arrivals.clone();
        let duplicates = duplicates.clone();
        let stream = stream.clone();
        let config =
            AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(5)));
        let mut reader_conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        tokio::spawn(async move {
            let mut last = "0-0".to_owned();
            let mut received = 0u64;
            let deadline = Instant::now() + Duration::from_secs(seconds + 30);
            while received < total && Instant::now() < deadline {
                let options = StreamReadOptions::default().count(1_000).block(500);
                let reply: Option<StreamReadReply> = reader_conn
                    .xread_options(&[&stream], &[&last], &options)
                    .await?;
                let now = Instant::now();
                for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                    last = entry.id.clone();
                    let payload: String = entry.get("payload").context("payload field")?;
                    let seq = serde_json::from_str::<serde_json::Value>(&payload)?["seq"]
                        .as_u64()
                        .context("seq")? as usize;
                    let mut arrivals = arrivals.lock().unwrap_or_else(|e| e.into_inner());
                    if arrivals[seq].replace(now).is_some() {
                        *duplicates.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                    } else {
                        received += 1;
                    }
                }
            }
            anyhow::Ok(received)
        })
    };

    let bar = progress(total, &format!("relay: committing {rate}/s"));
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let db = db.clone();
            let waker = waker.clone();
            let commits = commits.clone();
            let bar = bar.clone();
            tokio::spawn(async move {
                let period = Duration::from_secs_f64(WRITERS as f64 / rate as f64);
                let mut ticks = tokio::time::interval(period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut errors = 0u64;
                for seq in (w..total).step_by(WRITERS as usize) {
                    ticks.tick().await;
                    match append_events(&db, vec![event(seq)], Utc::now()).await {
                        Ok(()) => {
                            commits.lock().unwrap_or_else(|e| e.into_inner())[seq as usize] =
                                Some(Instant::now());
                            waker.wake();
                        }
                        Err(_) => errors += 1,
                    }
                    bar.inc(1);
                }
                errors
            })
        })
        .collect();
    let mut errors = 0;
    for writer in writers {
        errors += writer.await?;
    }
    let write_elapsed = started.elapsed();
    bar.finish();
    let received = reader.await??;
    cancel.cancel();
    relay_task.await?;

    let mut latency_us = Histogram::<u64>::new(3)?;
    {
        let commits = commits.lock().unwrap_or_else(|e| e.into_inner());
        let arrivals = arrivals.lock().unwrap_or_else(|e| e.into_inner());
        for (commit, arrival) in commits.iter().zip(arrivals.iter()) {
            if let (Some(commit), Some(arrival)) = (commit, arrival) {
                latency_us.record(arrival.saturating_duration_since(*commit).as_micros() as u64)?;
            }
        }
    }
    let mut result = ScenarioResult::new(
        &format!("relay commit→stream latency at {rate}/s"),
        total,
        write_elapsed,
        &latency_us,
    );
    result.errors = errors;
    let duplicates = *duplicates.lock().unwrap_or_else(|e| e.into_inner());
    result
        .check("every committed event arrived", received == total - errors)
        .check("no event twice", duplicates == 0);
    result.notes.push(format!(
        "{WRITERS} writers commit one event per transaction at {rate}/s in all for {seconds} s and wake the relay \
         after each commit; a reader blocked on XREAD timestamps arrivals. Target p99 < 50 ms."
    ));
    report
        .ratios
        .insert("relayCommitToStreamP99Ms".into(), result.p99_ms);
    report.scenarios.push(result);
    conn.del::<_, ()>(&stream).await?;
    Ok(())
}
