//! The seat map under an on-sale's reads: one admitted buyer's 500-seat
//! page read over and over by 64 connections, against the health baseline
//! of the same run; once without and once with `If-None-Match` (the tag
//! of the page, answered 304 while it is unchanged). With holds going on
//! the page changes; here it does not, so the numbers are the read path's
//! own ceiling: admission check (one Redis call), snapshot lookup, and the
//! page's JSON.

use anyhow::Context;
use boxoffice::auth::domain::Role;
use indicatif::ProgressBar;
use serde_json::Value;

use crate::{
    http::{self, CONCURRENCY},
    load,
    report::{Report, ScenarioResult},
    server::Server,
    stores::Stores,
};

pub async fn run(stores: &Stores, smoke: bool, report: &mut Report) -> anyhow::Result<()> {
    let (database_url, _) = stores.fresh_database().await?;
    let server = Server::start(&database_url, &stores.server_redis_args(), &[])?;
    let health = http::health_baseline(&server, smoke, report).await;
    measure(&server, health, smoke, "", report).await?;
    drop(server);
    // The same reads with every page read from the database: what the
    // snapshots save.
    let (database_url, _) = stores.fresh_database().await?;
    let server = Server::start(
        &database_url,
        &stores.server_redis_args(),
        &["--seat-map-snapshot-ms", "0"],
    )?;
    measure(&server, health, smoke, " without snapshots", report).await
}

async fn measure(
    server: &Server,
    health: f64,
    smoke: bool,
    variant: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let total: u64 = if smoke { 500 } else { 50_000 };
    let client = load::client(CONCURRENCY);
    let concert = server.create_concert(&client, "Seat Map", "R", 500).await?;
    let concert_id = concert["id"].as_i64().context("concert id")?;
    let schedule_id = concert["schedules"][0]["id"]
        .as_i64()
        .context("schedule id")?;
    let user = server.token(70_001, Role::User);
    let queue = server.admitted(&client, &user, concert_id).await?;
    let url = server.url(&format!("/v1/schedules/{schedule_id}/seats"));
    let first = client
        .get(&url)
        .bearer_auth(&user)
        .header("x-queue-token", &queue)
        .send()
        .await?
        .error_for_status()?;
    let etag = first
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .context("an ETag")?
        .to_owned();
    let page: Value = first.json().await?;
    anyhow::ensure!(
        page["items"].as_array().map(Vec::len) == Some(500),
        "a 500-seat page"
    );

    for (name, tag, expect) in [
        (
            format!("seat map, 500-seat page (GET /v1/schedules/{{id}}/seats){variant}"),
            None,
            200,
        ),
        (
            format!("seat map revalidated (If-None-Match → 304){variant}"),
            Some(etag.clone()),
            304,
        ),
    ] {
        let (client, url, user, queue) = (client.clone(), url.clone(), user.clone(), queue.clone());
        let result = load::run(
            total,
            CONCURRENCY,
            ProgressBar::new(total).with_message(name.clone()),
            move |_| {
                let mut req = client
                    .get(&url)
                    .bearer_auth(&user)
                    .header("x-queue-token", &queue);
                if let Some(tag) = &tag {
                    req = req.header("if-none-match", tag);
                }
                async move {
                    match req.send().await {
                        Ok(r) if r.status().as_u16() == expect => r.bytes().await.is_ok(),
                        _ => false,
                    }
                }
            },
        )
        .await;
        let mut row = ScenarioResult::from_load(&name, &result);
        row.check("every read answered as expected", result.errors == 0);
        row.notes.push(format!(
            "{:.2} of the health baseline in the same run ({:.0} req/s); target ≥ 0.3 for the page.",
            row.rps / health,
            health
        ));
        let key = if variant.is_empty() {
            ""
        } else {
            "NoSnapshots"
        };
        report
            .ratios
            .insert(format!("seatMap{expect}{key}VsHealth"), row.rps / health);
        report.scenarios.push(row);
    }
    Ok(())
}
