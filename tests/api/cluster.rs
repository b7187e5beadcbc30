//! The production shape on a Redis Cluster (3 primaries, 3 replicas): the
//! waiting room, the coupon ledger and the event bus each keep their keys
//! in hash-tagged slots spread over the nodes, and the server follows the
//! cluster's slot map. The event stream is split in 3 partitions, one per
//! primary.

use std::{collections::HashMap, sync::Arc};

use chrono::TimeDelta;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::{
    helpers::{TestApp, count, eventually, redis_cluster_nodes, spawn_app_with},
    sales::{WAIT, assert_invariants, charge, get_as, hold, pay, sale},
};

async fn spawn_on_cluster() -> TestApp {
    spawn_app_with(|s| {
        s.redis_url = None;
        s.redis_cluster_nodes = redis_cluster_nodes();
        s.event_stream_partitions = 3;
    })
    .await
}

#[tokio::test]
async fn a_sale_runs_end_to_end_on_a_redis_cluster() {
    let app = spawn_on_cluster().await;
    let ready = app.get_json("/health/ready").await;
    assert_eq!(ready["redis"], "ok", "{ready}");

    // Waiting room → hold → pay → the saga confirms through the bus.
    let sale = sale(&app, 2).await;
    let token = app.admitted_token(3, &sale.concert).await;
    charge(&app, 3, json!(200_000)).await;
    let reservation: Value = hold(&app, 3, &token, &sale, sale.seats[0])
        .await
        .json()
        .await
        .unwrap();
    let resp = pay(&app, 3, &token, &reservation["id"]).await;
    assert_eq!(resp.status(), 201);
    let payment: Value = resp.json().await.unwrap();
    let path = format!("/v1/payments/{}", payment["id"]);
    eventually("the payment to be confirmed", WAIT, || async {
        (get_as(&app, 3, &path).await["status"] == "confirmed").then_some(())
    })
    .await;
    eventually("the buyer's notification", WAIT, || async {
        let page = get_as(&app, 3, "/v1/users/me/notifications").await;
        (!page["items"].as_array()?.is_empty()).then_some(())
    })
    .await;
    assert_invariants(&app).await;

    // Every consumer group reads all 3 partitions, and drains them all.
    let status = eventually("every partition to drain", WAIT, || async {
        let status = app.get_json("/v1/admin/events").await;
        let consumers = status["consumers"].as_array()?.clone();
        let drained =
            !consumers.is_empty() && consumers.iter().all(|c| c["pending"] == 0 && c["lag"] == 0);
        drained.then_some(status)
    })
    .await;
    let mut streams = std::collections::HashSet::new();
    for consumer in status["consumers"].as_array().unwrap() {
        let partitions = consumer["partitions"].as_array().unwrap();
        let numbers: Vec<u64> = partitions
            .iter()
            .map(|p| p["partition"].as_u64().unwrap())
            .collect();
        assert_eq!(numbers, vec![0, 1, 2], "{consumer}");
        streams.extend(partitions.iter().map(|p| p["stream"].to_string()));
    }
    assert_eq!(streams.len(), 3, "three streams in all: {status}");
    eventually("consumer gauges per partition", WAIT, || async {
        let metrics = app.get("/metrics").send().await.ok()?.text().await.ok()?;
        metrics
            .lines()
            .any(|l| l.starts_with("consumer_lag{") && l.contains(r#"partition="2""#))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_coupon_storm_on_a_redis_cluster_issues_exactly_the_quantity() {
    let app = Arc::new(spawn_on_cluster().await);
    // Several campaigns, so their ledgers land on different primaries.
    let mut campaigns = Vec::new();
    for _ in 0..3 {
        campaigns.push(app.create_coupon(40, TimeDelta::days(1)).await.0);
    }
    let gate = Arc::new(Semaphore::new(32));
    let tasks: Vec<_> = (0..600)
        .map(|i| {
            let (app, gate) = (app.clone(), gate.clone());
            let coupon = campaigns[i % 3];
            // 100 users per campaign, each asking twice.
            let user = 1 + (i / 3) % 100;
            tokio::spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                let resp = app.issue_coupon(coupon, user as i64).await;
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap();
                (coupon, status, body)
            })
        })
        .collect();
    let mut numbers: HashMap<i64, Vec<i64>> = HashMap::new();
    for task in tasks {
        let (coupon, status, body) = task.await.unwrap();
        match status {
            201 => numbers
                .entry(coupon)
                .or_default()
                .push(body["issueNumber"].as_i64().unwrap()),
            409 => assert!(
                ["sold_out", "already_issued"].contains(&body["code"].as_str().unwrap()),
                "{body}"
            ),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    for coupon in &campaigns {
        let mut got = numbers.remove(coupon).unwrap_or_default();
        got.sort_unstable();
        assert_eq!(got, (1..=40).collect::<Vec<_>>(), "campaign {coupon}");
        let stats = app.coupon_stats(*coupon).await;
        assert_eq!(stats["issued"], 40);
        assert_eq!(
            stats["ledgerIssued"], 40,
            "the cluster's ledger = the database"
        );
        let rows = count(
            &app.db,
            &format!("SELECT COUNT(*) FROM user_coupons WHERE coupon_id = {coupon}"),
        )
        .await;
        assert_eq!(rows, 40);
    }
    // The campaign list reads every ledger of its page (one slot each).
    let list = app.get_json("/v1/admin/coupons").await;
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ledgerIssued"] == 40),
        "{list}"
    );
}
