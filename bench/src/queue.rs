//! The waiting room under a crowd: 10,000 users enter one concert's room,
//! then poll their status while the scheduler admits them at 100/s.
//! Reports enter and poll throughput and latency, the measured admission
//! rate, and checks that positions stay strictly in arrival order.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use boxoffice::auth::domain::Role;
use indicatif::ProgressBar;
use serde_json::{Value, json};

use crate::{
    http::CONCURRENCY,
    load::{self, Pace, Schedule},
    profile::Profile,
    report::{Report, ScenarioResult},
    server::Server,
};

const ADMIT_PER_SECOND: u64 = 100;

/// The open-loop generator's connections: enough that the schedule, not
/// the generator, sets the pace.
pub const OPEN_CONNECTIONS: u64 = 512;

/// A user's queue token and the position entering answered.
type Entered = (String, u64);

pub async fn run(
    server: &Server,
    health_rps: f64,
    smoke: bool,
    perf_dir: Option<&std::path::Path>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (users, polls) = if smoke {
        (200u64, 1_000u64)
    } else {
        (10_000, 100_000)
    };
    let client = load::client(CONCURRENCY);
    let admin = server.token(1, Role::Admin);

    let concert = server
        .create_concert(&client, "Bench Night", "R", 100)
        .await?;
    let concert_id = concert["id"].as_i64().context("concert id")?;
    let settings = |max_active: u64| {
        json!({"admitPerSecond": ADMIT_PER_SECOND, "maxActive": max_active,
               "activeTtlSeconds": 3600, "heartbeatGraceSeconds": 600})
    };
    let put_settings = |max_active: u64| {
        client
            .put(server.url(&format!("/v1/admin/queue/{concert_id}/settings")))
            .bearer_auth(&admin)
            .json(&settings(max_active))
            .send()
    };
    // A first visitor is admitted and fills the only active slot, so the
    // crowd below queues up in pure arrival order before admission starts.
    put_settings(1).await?.error_for_status()?;
    let blocker: Value = client
        .post(server.url("/v1/queue/tokens"))
        .bearer_auth(server.token(1_000_000, Role::User))
        .json(&json!({"concertId": concert_id}))
        .send()
        .await?
        .json()
        .await?;
    let blocker_token = blocker["token"].as_str().context("queue token")?.to_owned();
    loop {
        let status: Value = client
            .get(server.url("/v1/queue/status"))
            .header("x-queue-token", &blocker_token)
            .send()
            .await?
            .json()
            .await?;
        if status["status"] == "active" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Enter: every user once, concurrently.
    let profile = Profile::start(
        perf_dir,
        server.pid(),
        "enter",
        "POST /v1/queue/tokens, distinct users entering one room at 64 connections",
    )?;
    let (enter, entered) = enter_all(&client, server, concert_id, users, "queue: entering").await;
    if let Some(profile) = profile {
        println!("profile: {}", profile.finish()?.display());
    }
    let mut first_positions: Vec<u64> = entered.iter().map(|(_, p)| *p).collect();
    first_positions.sort_unstable();
    let unique_positions = first_positions == (1..=entered.len() as u64).collect::<Vec<_>>();
    let mut enter_result = ScenarioResult::from_load("queue enter (POST /v1/queue/tokens)", &enter);
    enter_result
        .check("every user entered", entered.len() as u64 == users)
        .check("positions are exactly 1..n", unique_positions);
    enter_result.notes.push(format!(
        "{users} users enter one room concurrently while its one active slot is taken."
    ));
    report
        .ratios
        .insert("queueEnterVsHealth".into(), enter_result.rps / health_rps);

    // The same crowd again, open loop: as many new users enter on a fixed
    // schedule at 80% of the rate the closed loop reached, each latency
    // counted from its request's due time (no coordinated omission).
    let schedule = Schedule {
        rate: (enter_result.rps * 0.8).max(100.0),
        connections: OPEN_CONNECTIONS,
    };
    let (open, open_entered) = enter_from(
        &load::client(OPEN_CONNECTIONS),
        server,
        concert_id,
        3_000_000,
        users,
        "queue: entering, open loop",
        Pace::Open(schedule),
    )
    .await;
    let mut open_positions: Vec<u64> = open_entered.iter().map(|(_, p)| *p).collect();
    open_positions.sort_unstable();
    let mut open_result =
        ScenarioResult::from_load("queue enter, open loop (POST /v1/queue/tokens)", &open);
    open_result
        .check("every user entered", open_entered.len() as u64 == users)
        .check(
            "positions are exactly n+1..2n, behind the first crowd",
            open_positions == (users + 1..=2 * users).collect::<Vec<_>>(),
        );
    open_result.notes.push(format!(
        "{}; the closed-loop enter above: p99 {:.2} ms at {:.0} req/s.",
        Pace::Open(schedule).label(),
        enter_result.p99_ms,
        enter_result.rps
    ));
    report.scenarios.push(enter_result);
    report.scenarios.push(open_result);

    // Poll: random users poll their status (the heartbeat) while admission runs.
    let tokens: Arc<Vec<String>> = Arc::new(entered.iter().map(|(t, _)| t.clone()).collect());
    put_settings(1_000_000).await?.error_for_status()?;
    let profile = Profile::start(
        perf_dir,
        server.pid(),
        "poll",
        "GET /v1/queue/status, waiting users polling at 64 connections",
    )?;
    let active_before = room_active(&client, server, &admin).await?;
    let window_start = Instant::now();
    let poll = {
        let (client, url, tokens) = (
            client.clone(),
            server.url("/v1/queue/status"),
            tokens.clone(),
        );
        load::run(polls, CONCURRENCY, ProgressBar::new(polls).with_message("queue: polling"), move |i| {
            let (client, url, tokens) = (client.clone(), url.clone(), tokens.clone());
            async move {
                // A cheap spread over all users (a multiplicative hash).
                let token = &tokens[(i.wrapping_mul(2_654_435_761) % tokens.len() as u64) as usize];
                matches!(client.get(&url).header("x-queue-token", token).send().await, Ok(r) if r.status().is_success())
            }
        })
        .await
    };
    let active_after = room_active(&client, server, &admin).await?;
    let window = window_start.elapsed();
    if let Some(profile) = profile {
        println!("profile: {}", profile.finish()?.display());
    }
    let measured_rate = (active_after - active_before) as f64 / window.as_secs_f64();
    let rate_error = (measured_rate - ADMIT_PER_SECOND as f64).abs() / ADMIT_PER_SECOND as f64;

    // Honest pollers (every waiting user polls at its pollAfterSeconds),
    // first alone, then beside a flood of tokens polling as fast as they
    // can: the flood is paced from memory, so it must not slow them.
    let flood_users = if smoke { 20 } else { 200 };
    let (_, flooders) = enter_from(
        &client,
        server,
        concert_id,
        2_000_000,
        flood_users,
        "queue: the flood enters",
        Pace::Closed {
            concurrency: CONCURRENCY,
        },
    )
    .await;
    let honest_window = if smoke {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(12)
    };
    let alone = honest_polls(&client, server, &tokens, &[], honest_window).await;
    let flood_tokens: Vec<String> = flooders.into_iter().map(|(t, _)| t).collect();
    let beside = honest_polls(&client, server, &tokens, &flood_tokens, honest_window).await;
    for (name, run) in [
        ("queue: honest polls at pollAfterSeconds", &alone),
        (
            "queue: honest polls beside a flood of too-fast pollers",
            &beside,
        ),
    ] {
        let mut result = ScenarioResult::new(name, run.honest, honest_window, &run.latencies_us);
        result.errors = run.honest_errors;
        result.check("every honest poll answered 200", run.honest_errors == 0);
        if run.flood > 0 {
            result.check(
                "the flood was paced (most of it answered 429)",
                run.flood_paced * 2 > run.flood,
            );
            result.notes.push(format!(
                "{} tokens polled back to back over {CONCURRENCY} connections: {} polls ({:.0}/s), {} answered 429 rate_limited from memory, {} errors; honest p99 {:.2} ms beside it vs {:.2} ms alone.",
                flood_tokens.len(),
                run.flood,
                run.flood as f64 / honest_window.as_secs_f64(),
                run.flood_paced,
                run.flood_errors,
                run.latencies_us.value_at_quantile(0.99) as f64 / 1000.0,
                alone.latencies_us.value_at_quantile(0.99) as f64 / 1000.0,
            ));
            report.ratios.insert(
                "queueHonestPollP99BesideFloodVsAlone".into(),
                run.latencies_us.value_at_quantile(0.99) as f64
                    / alone.latencies_us.value_at_quantile(0.99).max(1) as f64,
            );
        } else {
            result.notes.push(format!(
                "{} waiting users, each polling again after the pollAfterSeconds its last answer gave (first polls spread over the first 10 s), for {:.0} s; admission runs at {ADMIT_PER_SECOND}/s.",
                tokens.len(),
                honest_window.as_secs_f64()
            ));
        }
        report.scenarios.push(result);
    }

    // Freeze admission (cap below the active count), then read every place.
    put_settings(1).await?.error_for_status()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut places = Vec::with_capacity(entered.len());
    for (token, first) in &entered {
        let status: Value = client
            .get(server.url("/v1/queue/status"))
            .header("x-queue-token", token)
            .send()
            .await?
            .json()
            .await?;
        places.push((
            *first,
            status["status"].as_str().unwrap_or("").to_owned(),
            status["position"].as_u64(),
        ));
    }
    let ordered = positions_follow_arrival(&places);

    let mut poll_result =
        ScenarioResult::from_load("queue status poll (GET /v1/queue/status)", &poll);
    let rate_ok = smoke || rate_error <= 0.05;
    poll_result
        .check("positions strictly in arrival order", ordered)
        .check("admission rate within 5% of the setting", rate_ok)
        .check("no errors", poll.errors == 0);
    poll_result.notes.push(format!(
        "{polls} polls spread over {} waiting users at {CONCURRENCY} connections; admission at {ADMIT_PER_SECOND}/s measured {measured_rate:.1}/s over {:.1} s ({:+.1}%).",
        tokens.len(),
        window.as_secs_f64(),
        (measured_rate / ADMIT_PER_SECOND as f64 - 1.0) * 100.0
    ));
    if let Some(rss) = server.peak_rss_mib() {
        poll_result
            .notes
            .push(format!("server peak RSS so far: {rss:.0} MiB"));
        report.ratios.insert("serverPeakRssMib".into(), rss);
    }
    report
        .ratios
        .insert("queueStatusVsHealth".into(), poll_result.rps / health_rps);
    report
        .ratios
        .insert("queueAdmitRateMeasured".into(), measured_rate);
    report.scenarios.push(poll_result);
    Ok(())
}

/// Users 1..=`users` enter the concert's room once each, concurrently; the
/// queue token and first position of everyone who got in.
pub async fn enter_all(
    client: &reqwest::Client,
    server: &Server,
    concert_id: i64,
    users: u64,
    label: &str,
) -> (load::LoadResult, Vec<Entered>) {
    let pace = Pace::Closed {
        concurrency: CONCURRENCY,
    };
    enter_from(client, server, concert_id, 1, users, label, pace).await
}

/// Users `first`..`first + users` enter at `pace`, as [`enter_all`].
async fn enter_from(
    client: &reqwest::Client,
    server: &Server,
    concert_id: i64,
    first: i64,
    users: u64,
    label: &str,
    pace: Pace,
) -> (load::LoadResult, Vec<Entered>) {
    let user_tokens: Arc<Vec<String>> = Arc::new(
        (first..first + users as i64)
            .map(|u| server.token(u, Role::User))
            .collect(),
    );
    let entered: Arc<Mutex<Vec<Option<Entered>>>> =
        Arc::new(Mutex::new(vec![None; users as usize]));
    let enter = {
        let (client, url, user_tokens, entered) = (
            client.clone(),
            server.url("/v1/queue/tokens"),
            user_tokens.clone(),
            entered.clone(),
        );
        pace.drive(
            users,
            ProgressBar::new(users).with_message(label.to_owned()),
            move |i| {
                let (client, url, user_tokens, entered) = (
                    client.clone(),
                    url.clone(),
                    user_tokens.clone(),
                    entered.clone(),
                );
                async move {
                    let Ok(resp) = client
                        .post(&url)
                        .bearer_auth(&user_tokens[i as usize])
                        .json(&json!({"concertId": concert_id}))
                        .send()
                        .await
                    else {
                        return false;
                    };
                    let Ok(body) = resp.json::<Value>().await else {
                        return false;
                    };
                    let (Some(token), position) = (
                        body["token"].as_str(),
                        body["position"].as_u64().unwrap_or(0),
                    ) else {
                        return false;
                    };
                    entered.lock().unwrap_or_else(|e| e.into_inner())[i as usize] =
                        Some((token.to_owned(), position));
                    true
                }
            },
        )
        .await
    };
    let entered: Vec<(String, u64)> = entered
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .flatten()
        .cloned()
        .collect();
    (enter, entered)
}

async fn room_active(
    client: &reqwest::Client,
    server: &Server,
    admin: &str,
) -> anyhow::Result<u64> {
    let rooms: Value = client
        .get(server.url("/v1/admin/queue"))
        .bearer_auth(admin)
        .send()
        .await?
        .json()
        .await?;
    rooms["items"][0]["active"].as_u64().context("active count")
}

/// Everyone admitted was ahead of everyone still waiting, and the waiting
/// keep their order with no two on one position.
fn positions_follow_arrival(places: &[(u64, String, Option<u64>)]) -> bool {
    let latest_admitted = places
        .iter()
        .filter(|p| p.1 == "active")
        .map(|p| p.0)
        .max()
        .unwrap_or(0);
    let mut waiting: Vec<(u64, u64)> = places
        .iter()
        .filter(|p| p.1 == "waiting")
        .filter_map(|p| Some((p.0, p.2?)))
        .collect();
    waiting.sort_unstable();
    let earliest_waiting = waiting.first().map_or(u64::MAX, |w| w.0);
    let all_placed = places.iter().all(|p| p.1 == "active" || p.1 == "waiting");
    all_placed && latest_admitted < earliest_waiting && waiting.windows(2).all(|w| w[0].1 < w[1].1)
}

/// What the honest pollers and the flood got in one window.
struct PollWindow {
    honest: u64,
    honest_errors: u64,
    latencies_us: hdrhistogram::Histogram<u64>,
    flood: u64,
    flood_paced: u64,
    flood_errors: u64,
}

/// Every token in `honest` polls at the `pollAfterSeconds` it is told
/// (its first poll at a random moment of the first 10 s) while every
/// token in `flood` is polled back to back over `CONCURRENCY` connections,
/// for `window`.
async fn honest_polls(
    client: &reqwest::Client,
    server: &Server,
    honest: &Arc<Vec<String>>,
    flood: &[String],
    window: Duration,
) -> PollWindow {
    use std::sync::atomic::{AtomicU64, Ordering};
    let url = server.url("/v1/queue/status");
    let end = Instant::now() + window;
    let honest_client = load::client(1_024);
    let honest_tasks: Vec<_> = honest
        .iter()
        .map(|token| {
            let (client, url, token) = (honest_client.clone(), url.clone(), token.clone());
            let first = Duration::from_millis(rand::random_range(0..10_000));
            tokio::spawn(async move {
                let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
                let mut errors = 0;
                let mut next = Instant::now() + first;
                while next < end {
                    tokio::time::sleep_until(next.into()).await;
                    let t = Instant::now();
                    let answer = client
                        .get(&url)
                        .header("x-queue-token", &token)
                        .send()
                        .await;
                    let after = match answer {
                        Ok(resp) if resp.status().is_success() => resp
                            .json::<Value>()
                            .await
                            .ok()
                            .and_then(|v| v["pollAfterSeconds"].as_u64()),
                        _ => None,
                    };
                    let _ = hist.record(t.elapsed().as_micros() as u64);
                    match after {
                        Some(0) => break,
                        Some(seconds) => next = t + Duration::from_secs(seconds),
                        None => {
                            errors += 1;
                            next = t + Duration::from_secs(1);
                        }
                    }
                }
                (hist, errors)
            })
        })
        .collect();
    let flood_count = Arc::new(AtomicU64::new(0));
    let flood_paced = Arc::new(AtomicU64::new(0));
    let flood_errors = Arc::new(AtomicU64::new(0));
    let flood_tokens: Arc<Vec<String>> = Arc::new(flood.to_vec());
    let flooders: Vec<_> = if flood.is_empty() {
        Vec::new()
    } else {
        (0..CONCURRENCY)
            .map(|worker| {
                let (client, url, tokens) = (client.clone(), url.clone(), flood_tokens.clone());
                let (count, paced, errors) = (
                    flood_count.clone(),
                    flood_paced.clone(),
                    flood_errors.clone(),
                );
                tokio::spawn(async move {
                    let mut i = worker as usize;
                    while Instant::now() < end {
                        let token = &tokens[i % tokens.len()];
                        i += CONCURRENCY as usize;
                        count.fetch_add(1, Ordering::Relaxed);
                        match client.get(&url).header("x-queue-token", token).send().await {
                            Ok(resp) if resp.status() == 429 => {
                                paced.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(resp) if resp.status().is_success() => {}
                            _ => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect()
    };
    let mut latencies_us = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    let mut honest_errors = 0;
    for task in honest_tasks {
        if let Ok((hist, errors)) = task.await {
            let _ = latencies_us.add(hist);
            honest_errors += errors;
        }
    }
    for flooder in flooders {
        let _ = flooder.await;
    }
    PollWindow {
        honest: latencies_us.len(),
        honest_errors,
        latencies_us,
        flood: flood_count.load(Ordering::Relaxed),
        flood_paced: flood_paced.load(Ordering::Relaxed),
        flood_errors: flood_errors.load(Ordering::Relaxed),
    }
}
