//! How the waiting room scales with the crowd: the same room at 1,000,
//! 10,000 and 50,000 waiting users, each on a fresh server, with enter and
//! poll throughput and the server's peak memory (RSS) at each size.

use std::sync::Arc;

use anyhow::Context;
use boxoffice::auth::domain::Role;
use indicatif::ProgressBar;
use serde_json::{Value, json};

use crate::{
    http::CONCURRENCY,
    load, queue,
    report::{Report, ScenarioResult},
    server::Server,
    stores::Stores,
};

/// A concert whose waiting room admits next to nobody (one active turn,
/// one admission a second, turns and places kept an hour); its id.
pub async fn quiet_room(
    client: &reqwest::Client,
    server: &Server,
    title: &str,
) -> anyhow::Result<i64> {
    let concert = server.create_concert(client, title, "R", 10).await?;
    let concert_id = concert["id"].as_i64().context("concert id")?;
    client
        .put(server.url(&format!("/v1/admin/queue/{concert_id}/settings")))
        .bearer_auth(server.token(1, Role::Admin))
        .json(&json!({"admitPerSecond": 1, "maxActive": 1,
                      "activeTtlSeconds": 3600, "heartbeatGraceSeconds": 3600}))
        .send()
        .await?
        .error_for_status()?;
    Ok(concert_id)
}

pub async fn run(stores: &Stores, smoke: bool, report: &mut Report) -> anyhow::Result<()> {
    let (sizes, polls): (&[u64], u64) = if smoke {
        (&[100, 300], 500)
    } else {
        (&[1_000, 10_000, 50_000], 20_000)
    };
    let mut memory = Vec::new();
    for &users in sizes {
        let (database_url, _) = stores.fresh_database().await?;
        // Every token is polled back to back (20 times each at 1,000
        // waiting), far faster than clients are told to: the poll pace is
        // off, since this measures a poll's cost against the room's size.
        let server = Server::start(
            &database_url,
            &stores.server_redis_args(),
            &["--queue-poll-pace-ms", "0"],
        )?;
        let client = load::client(CONCURRENCY);
        let concert_id = quiet_room(&client, &server, "Scaling Night").await?;

        let (enter, entered) = queue::enter_all(
            &client,
            &server,
            concert_id,
            users,
            &format!("queue scaling: {users} entering"),
        )
        .await;
        let tokens: Arc<Vec<String>> = Arc::new(entered.into_iter().map(|(t, _)| t).collect());
        anyhow::ensure!(!tokens.is_empty(), "nobody entered the room");
        let poll = {
            let (client, url, tokens) = (
                client.clone(),
                server.url("/v1/queue/status"),
                tokens.clone(),
            );
            load::run(
                polls,
                CONCURRENCY,
                ProgressBar::new(polls).with_message(format!("queue scaling: {users} polling")),
                move |i| {
                    let (client, url, tokens) = (client.clone(), url.clone(), tokens.clone());
                    async move {
                        let token =
                            &tokens[(i.wrapping_mul(2_654_435_761) % tokens.len() as u64) as usize];
                        matches!(
                            client.get(&url).header("x-queue-token", token).send().await,
                            Ok(r) if r.status().is_success()
                        )
                    }
                },
            )
            .await
        };
        let rooms: Value = client
            .get(server.url("/v1/admin/queue"))
            .bearer_auth(server.token(1, Role::Admin))
            .send()
            .await?
            .json()
            .await?;
        let waiting = rooms["items"][0]["waiting"].as_u64().unwrap_or(0);
        let active = rooms["items"][0]["active"].as_u64().unwrap_or(0);
        let rss = server.peak_rss_mib();

        let mut row =
            ScenarioResult::from_load(&format!("queue at {users} waiting: status poll"), &poll);
        row.check(
            "every user entered (waiting or admitted)",
            waiting + active == users,
        )
        .check("no errors", enter.errors == 0 && poll.errors == 0);
        row.notes.push(format!(
            "enter: {users} users at {:.0}/s (p99 {:.1} ms); then {polls} polls spread over them, back to back (the poll pace is off on this server); {waiting} waiting and {active} admitted at the end; server peak RSS {}.",
            users as f64 / enter.elapsed.as_secs_f64(),
            enter.latencies_us.value_at_quantile(0.99) as f64 / 1000.0,
            rss.map_or("unknown".into(), |r| format!("{r:.1} MiB")),
        ));
        if let Some(rss) = rss {
            report.ratios.insert(format!("queueRssMibAt{users}"), rss);
            memory.push((users, rss));
        }
        report
            .ratios
            .insert(format!("queuePollRpsAt{users}"), row.rps);
        report.scenarios.push(row);
    }
    if let (Some((small, small_rss)), Some((large, large_rss))) = (memory.first(), memory.last())
        && large > small
    {
        // The rooms live in Redis, so the server's memory should hardly grow.
        let per_thousand = (large_rss - small_rss) / ((large - small) as f64 / 1_000.0);
        report
            .ratios
            .insert("queueServerRssMibPerThousandWaiting".into(), per_thousand);
    }
    Ok(())
}
