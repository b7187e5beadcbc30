//! The health baseline: what the HTTP stack itself manages on this
//! machine (`GET /health/live`), to which the other scenarios are compared.

use indicatif::ProgressBar;

use crate::{
    load,
    report::{Report, ScenarioResult},
    server::Server,
};

pub const CONCURRENCY: u64 = 64;

/// Returns the baseline's requests per second.
pub async fn health_baseline(server: &Server, smoke: bool, report: &mut Report) -> f64 {
    let total = if smoke { 500 } else { 50_000 };
    let client = load::client(CONCURRENCY);
    let url = server.url("/health/live");
    let result = load::run(
        total,
        CONCURRENCY,
        ProgressBar::new(total).with_message("health baseline"),
        move |_| {
            let client = client.clone();
            let url = url.clone();
            async move { matches!(client.get(&url).send().await, Ok(r) if r.status().is_success()) }
        },
    )
    .await;
    let mut scenario = ScenarioResult::from_load("health baseline (GET /health/live)", &result);
    scenario.check("no errors", result.errors == 0);
    scenario.notes.push(format!(
        "{CONCURRENCY} keep-alive connections from the same machine; server, stores and load generator share the 2 cores."
    ));
    let rps = scenario.rps;
    report.ratios.insert("healthBaselineRps".into(), rps);
    report.scenarios.push(scenario);
    rps
}
