//! Several server processes as one deployment: one database, one Redis (or
//! Redis Cluster), shared keys and event streams (one partition per
//! process), the load spread round-robin over the processes as a load
//! balancer spreads it. The same coupon storm and the same crowd entering a
//! waiting room, on 1 process and then on 3, in one run: what a process
//! adds on this machine, and that the answers stay exact across processes.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context;
use boxoffice::auth::domain::Role;
use indicatif::ProgressBar;
use serde_json::{Value, json};

use crate::{
    coupons::{RowCounts, campaign, user_of},
    http::CONCURRENCY,
    load,
    queue_scaling::quiet_room,
    report::{Report, ScenarioResult},
    server::Server,
    stores::Stores,
};

pub async fn run(stores: &Stores, smoke: bool, report: &mut Report) -> anyhow::Result<()> {
    let (users, quantity, entering) = if smoke {
        (200u64, 20u64, 300u64)
    } else {
        (10_000, 1_000, 10_000)
    };
    for processes in [1usize, 3] {
        let (database_url, db) = stores.fresh_database().await?;
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let partitions = processes.to_string();
        let extra = ["--event-stream-partitions", partitions.as_str()];
        let redis = stores.server_redis_args();
        // The first migrates the database; the others start on it.
        let mut servers = vec![Server::start_shared(&database_url, &redis, &extra, &tag)?];
        for _ in 1..processes {
            servers.push(Server::start_shared(&database_url, &redis, &extra, &tag)?);
        }
        let servers = Arc::new(servers);
        let client = load::client(CONCURRENCY);
        let first = &servers[0];
        let admin = first.token(1, Role::Admin);
        let label = |what: &str| {
            format!(
                "{processes} process{} behind round-robin: {what}",
                if processes == 1 { "" } else { "es" }
            )
        };

        // The coupon storm: every user twice, spread over the processes.
        let coupon_id = campaign(&client, first, quantity).await?;
        let tokens: Arc<Vec<String>> = Arc::new(
            (1..=users as i64)
                .map(|user| first.token(user, Role::User))
                .collect(),
        );
        let won = Arc::new(AtomicU64::new(0));
        let storm = {
            let (client, servers, tokens, won) =
                (client.clone(), servers.clone(), tokens.clone(), won.clone());
            load::run(
                users * 2,
                CONCURRENCY,
                ProgressBar::new(users * 2).with_message(label("coupon storm")),
                move |i| {
                    let (client, servers, tokens, won) =
                        (client.clone(), servers.clone(), tokens.clone(), won.clone());
                    async move {
                        let server = &servers[i as usize % servers.len()];
                        let url = server.url(&format!("/v1/coupons/{coupon_id}/issue"));
                        let token = &tokens[(user_of(i) - 1) as usize];
                        let Ok(resp) = client.post(&url).bearer_auth(token).send().await else {
                            return false;
                        };
                        let status = resp.status().as_u16();
                        if status == 201 {
                            won.fetch_add(1, Ordering::Relaxed);
                        }
                        resp.bytes().await.is_ok() && (status == 201 || status == 409)
                    }
                },
            )
            .await
        };
        let counts = RowCounts::of(&db, coupon_id).await?;
        let stats: Value = client
            .get(servers[processes - 1].url(&format!("/v1/admin/coupons/{coupon_id}")))
            .bearer_auth(&admin)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut scenario = ScenarioResult::from_load(&label("coupon storm"), &storm);
        scenario
            .check(
                &format!("exactly {quantity} answered 201"),
                won.load(Ordering::Relaxed) == quantity,
            )
            .check(
                "database rows exact (no user or number twice)",
                counts.exact(quantity),
            )
            .check(
                "ledger = database",
                stats["ledgerIssued"].as_u64() == Some(quantity),
            );
        scenario.notes.push(counts.describe());
        report.scenarios.push(scenario);

        // A crowd entering one room (nobody admitted meanwhile), spread
        // over the processes: each gets a place of its own.
        let concert_id = quiet_room(&client, first, "Processes Night").await?;
        // One person takes the only active turn first, so nobody is admitted
        // while the crowd enters and every place is a place in the queue.
        let blocker: Value = client
            .post(first.url("/v1/queue/tokens"))
            .bearer_auth(first.token(99_999, Role::User))
            .json(&json!({"concertId": concert_id}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let blocker = blocker["token"].as_str().context("queue token")?.to_owned();
        let admitted_by = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let status: Value = client
                .get(first.url("/v1/queue/status"))
                .header("x-queue-token", &blocker)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            if status["status"] == "active" {
                break;
            }
            anyhow::ensure!(
                std::time::Instant::now() < admitted_by,
                "the first person was never admitted"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let places = Arc::new(std::sync::Mutex::new(Vec::new()));
        let enter = {
            let (client, servers, places) = (client.clone(), servers.clone(), places.clone());
            let tokens: Arc<Vec<String>> = Arc::new(
                (1..=entering as i64)
                    .map(|user| first.token(100_000 + user, Role::User))
                    .collect(),
            );
            load::run(
                entering,
                CONCURRENCY,
                ProgressBar::new(entering).with_message(label("entering the waiting room")),
                move |i| {
                    let (client, servers, places, tokens) = (
                        client.clone(),
                        servers.clone(),
                        places.clone(),
                        tokens.clone(),
                    );
                    async move {
                        let server = &servers[i as usize % servers.len()];
                        let Ok(resp) = client
                            .post(server.url("/v1/queue/tokens"))
                            .bearer_auth(&tokens[i as usize])
                            .json(&json!({"concertId": concert_id}))
                            .send()
                            .await
                        else {
                            return false;
                        };
                        let Ok(body) = resp.json::<Value>().await else {
                            return false;
                        };
                        match (body["status"].as_str(), body["position"].as_u64()) {
                            (Some("waiting"), Some(position)) => {
                                places
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(position);
                                true
                            }
                            _ => false,
                        }
                    }
                },
            )
            .await
        };
        let places = places.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let distinct: HashSet<u64> = places.iter().copied().collect();
        let mut scenario = ScenarioResult::from_load(&label("entering the waiting room"), &enter);
        scenario.check(
            "every waiting place distinct, 1..=entered",
            places.len() as u64 == entering && distinct == (1..=entering).collect::<HashSet<u64>>(),
        );
        scenario.notes.push(format!(
            "{} waiting places handed out, {} distinct",
            places.len(),
            distinct.len()
        ));
        report.scenarios.push(scenario);
    }
    Ok(())
}
