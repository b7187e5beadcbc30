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
    load,
    report::{Report, ScenarioResult},
    server::Server,
};

const ADMIT_PER_SECOND: u64 = 100;

/// A user's queue token and the position entering answered.
type Entered = (String, u64);

pub async fn run(
    server: &Server,
    health_rps: f64,
    smoke: bool,
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
    let (enter, entered) = enter_all(&client, server, concert_id, users, "queue: entering").await;
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
    report.scenarios.push(enter_result);

    // Poll: random users poll their status (the heartbeat) while admission runs.
    let tokens: Arc<Vec<String>> = Arc::new(entered.iter().map(|(t, _)| t.clone()).collect());
    put_settings(1_000_000).await?.error_for_status()?;
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
    let measured_rate = (active_after - active_before) as f64 / window.as_secs_f64();
    let rate_error = (measured_rate - ADMIT_PER_SECOND as f64).abs() / ADMIT_PER_SECOND as f64;

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
    let user_tokens: Arc<Vec<String>> = Arc::new(
        (1..=users as i64)
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
        load::run(
            users,
            CONCURRENCY,
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
