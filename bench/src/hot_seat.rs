//! Hot seat: 1,000 admitted buyers try to hold the same seat at the same
//! moment. Exactly one may win; the rest must get 409 quickly. Then again
//! open loop, on a second seat: the holds go out on a fixed schedule and
//! each latency counts from its due time.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use anyhow::Context;
use boxoffice::auth::domain::Role;
use indicatif::ProgressBar;
use serde_json::{Value, json};

use crate::{
    load::{self, Pace, Schedule},
    report::{Report, ScenarioResult},
    server::Server,
};

pub async fn run(server: &Server, smoke: bool, report: &mut Report) -> anyhow::Result<()> {
    let buyers: u64 = if smoke { 50 } else { 1_000 };
    let client = load::client(buyers);
    let concert = server.create_concert(&client, "Hot Seat", "VIP", 2).await?;
    let (concert_id, schedule_id) = Server::concert_and_schedule(&concert)?;
    server.open_room(&client, concert_id).await?;
    let seat_id = {
        let user = server.token(2_000_001, Role::User);
        let queue = admitted(&client, server, &user, concert_id).await?;
        let seats: Value = client
            .get(server.url(&format!("/v1/schedules/{schedule_id}/seats")))
            .bearer_auth(&user)
            .header("x-queue-token", queue)
            .send()
            .await?
            .json()
            .await?;
        [0, 1].map(|i| seats["items"][i]["id"].as_i64())
    };
    let [Some(seat_id), Some(open_seat)] = seat_id else {
        anyhow::bail!("the hot-seat schedule lacks its two seats");
    };

    // Everyone is admitted first, so the holds below race only each other.
    let mut pairs = Vec::with_capacity(buyers as usize);
    for user in 1..=buyers as i64 {
        let token = server.token(user, Role::User);
        let queue = admitted(&client, server, &token, concert_id).await?;
        pairs.push((token, queue));
    }
    let pairs = Arc::new(pairs);
    // Open the connections first, so the race measures holds, not TCP set-up.
    load::warm(&client, &server.url("/health/live"), buyers).await?;
    let closed = Pace::Closed {
        concurrency: buyers,
    };
    let (result, won, refused) = race(&client, server, &pairs, schedule_id, seat_id, closed).await;
    let mut scenario = ScenarioResult::from_load(
        "hot seat (1 seat, concurrent POST /v1/reservations)",
        &result,
    );
    let fast = smoke || scenario.p99_ms < 100.0;
    scenario
        .check("exactly one winner", won == 1)
        .check("everyone else refused with 409", refused == buyers - 1)
        .check("p99 under 100 ms", fast);
    scenario
        .notes
        .push(format!("{buyers} admitted buyers send their hold at once over {buyers} connections; {won} won, {refused} got 409."));
    report.ratios.insert("hotSeatP99Ms".into(), scenario.p99_ms);
    report.scenarios.push(scenario);

    // Open loop: the same buyers, a second seat, holds due 100 µs apart.
    let open = Pace::Open(Schedule {
        rate: 10_000.0,
        connections: buyers,
    });
    let (result, won, refused) = race(&client, server, &pairs, schedule_id, open_seat, open).await;
    let mut scenario = ScenarioResult::from_load(
        "hot seat, open loop (1 seat, POST /v1/reservations on a schedule)",
        &result,
    );
    scenario
        .check("exactly one winner", won == 1)
        .check("everyone else refused with 409", refused == buyers - 1);
    scenario
        .notes
        .push(format!("{}; {won} won, {refused} got 409.", open.label()));
    report
        .ratios
        .insert("hotSeatOpenLoopP99Ms".into(), scenario.p99_ms);
    report.scenarios.push(scenario);
    Ok(())
}

/// Every buyer of `pairs` tries to hold `seat` at `pace`: the load, and how
/// many won and were refused (409).
async fn race(
    client: &reqwest::Client,
    server: &Server,
    pairs: &Arc<Vec<(String, String)>>,
    schedule_id: i64,
    seat_id: i64,
    pace: Pace,
) -> (load::LoadResult, u64, u64) {
    let buyers = pairs.len() as u64;
    let (won, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let result = {
        let (client, url, pairs, won, refused) = (
            client.clone(),
            server.url("/v1/reservations"),
            pairs.clone(),
            won.clone(),
            refused.clone(),
        );
        pace.drive(
            buyers,
            ProgressBar::new(buyers).with_message("hot seat"),
            move |i| {
                let (client, url, pairs, won, refused) = (
                    client.clone(),
                    url.clone(),
                    pairs.clone(),
                    won.clone(),
                    refused.clone(),
                );
                async move {
                    let (token, queue) = &pairs[i as usize];
                    let Ok(resp) = client
                        .post(&url)
                        .bearer_auth(token)
                        .header("x-queue-token", queue)
                        .json(&json!({"scheduleId": schedule_id, "seatId": seat_id}))
                        .send()
                        .await
                    else {
                        return false;
                    };
                    match resp.status().as_u16() {
                        201 => won.fetch_add(1, Ordering::Relaxed),
                        409 => refused.fetch_add(1, Ordering::Relaxed),
                        _ => return false,
                    };
                    true
                }
            },
        )
        .await
    };
    let (won, refused) = (won.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    (result, won, refused)
}

/// Enters the room and polls until admitted; returns the queue token.
async fn admitted(
    client: &reqwest::Client,
    server: &Server,
    user: &str,
    concert: i64,
) -> anyhow::Result<String> {
    let ticket: Value = client
        .post(server.url("/v1/queue/tokens"))
        .bearer_auth(user)
        .json(&json!({"concertId": concert}))
        .send()
        .await?
        .json()
        .await?;
    let token = ticket["token"].as_str().context("queue token")?.to_owned();
    for _ in 0..500 {
        let status: Value = client
            .get(server.url("/v1/queue/status"))
            .header("x-queue-token", &token)
            .send()
            .await?
            .json()
            .await?;
        if status["status"] == "active" {
            return Ok(token);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    anyhow::bail!("not admitted within 10 s")
}
