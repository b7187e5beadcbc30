//! The `/demo/coupon` web view in headless Chromium: the button dims and
//! stays dimmed while the page polls a pending job, and only the final
//! answer re-enables it and shows the message.

use std::{
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use boxoffice::{
    admin::{infra::db::DbAlerts, usecase::AlertService},
    coupon::usecase::CouponRedeemer,
    kernel::SystemClock,
    outbox::infra::consumer::{ConsumerRunner, ConsumerSettings},
};
use chrono::TimeDelta;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, eventually, spawn_app_with};

/// chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    let path =
        std::env::var("BOXOFFICE_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(&path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| {
            panic!("cannot start {path} ({err}): install chromium and chromium-driver (scripts/test does)")
        });
    let driver = Driver { child, port };
    let status = format!("http://127.0.0.1:{port}/status");
    eventually(
        "chromedriver to answer",
        Duration::from_secs(20),
        || async {
            let ready = reqwest::get(&status)
                .await
                .ok()?
                .json::<Value>()
                .await
                .ok()?;
            (ready["value"]["ready"] == true).then_some(())
        },
    )
    .await;
    driver
}

async fn browser(driver: &Driver) -> Client {
    let chromium =
        std::env::var("BOXOFFICE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a headless Chromium session")
}

/// What the test looks at: (button disabled, button dimmed, page state,
/// polls so far, result text).
async fn page_state(browser: &Client) -> (bool, bool, String, u32, String) {
    let state = browser
        .execute(
            "const b = document.getElementById('use-coupon');
             return [b.disabled, b.classList.contains('dimmed'), document.body.dataset.state,
                     Number(document.body.dataset.polls || 0),
                     document.getElementById('result').textContent];",
            vec![],
        )
        .await
        .expect("script runs");
    (
        state[0].as_bool().unwrap(),
        state[1].as_bool().unwrap(),
        state[2].as_str().unwrap().to_owned(),
        u32::try_from(state[3].as_u64().unwrap()).unwrap(),
        state[4].as_str().unwrap().to_owned(),
    )
}

async fn wait_for_state(browser: &Client, wanted: &str) -> (bool, bool, String, u32, String) {
    eventually(
        &format!("the page to reach {wanted}"),
        Duration::from_secs(20),
        || async {
            let state = page_state(browser).await;
            (state.2 == wanted).then_some(state)
        },
    )
    .await
}

/// Runs the redemption worker the server was started without.
fn start_worker(app: &TestApp) -> CancellationToken {
    let cancel = CancellationToken::new();
    let alerts = AlertService::new(DbAlerts::new(app.db.clone()), SystemClock, false);
    let runner = ConsumerRunner::new(
        app.db.clone(),
        app.bus.clone(),
        Arc::new(CouponRedeemer::new(SystemClock)),
        "demo-page-test".into(),
        ConsumerSettings {
            batch_size: 16,
            block: Duration::from_millis(200),
            claim_idle: Duration::from_millis(300),
            max_deliveries: 3,
            lanes: 1,
            ownership: Duration::from_millis(1_500),
        },
        Arc::new(alerts),
    );
    tokio::spawn(runner.run(cancel.clone()));
    cancel
}

#[tokio::test]
async fn the_use_coupon_button_dims_while_the_job_runs() {
    // The worker is paused so the job stays pending while we look.
    let app = spawn_app_with(|s| s.paused_consumers = vec!["coupon-redemptions".into()]).await;
    let (coupon, _) = app.create_coupon(5, TimeDelta::days(1)).await;
    let held = app.won_coupon(coupon, 1).await;
    let driver = start_driver().await;
    let browser = browser(&driver).await;
    browser
        .goto(&app.url(&format!(
            "/demo/coupon?token={}&userCouponId={held}",
            app.user_token(1)
        )))
        .await
        .unwrap();
    let button = browser.find(Locator::Id("use-coupon")).await.unwrap();
    assert_eq!(
        page_state(&browser).await,
        (false, false, "idle".into(), 0, String::new())
    );

    button.click().await.unwrap();
    let (disabled, dimmed, _, _, result) = wait_for_state(&browser, "working").await;
    assert!(disabled && dimmed && result.is_empty());
    // Still pending after several polls: still dimmed, no answer shown.
    let (disabled, dimmed, state, polls, result) = eventually(
        "two polls of the pending job",
        Duration::from_secs(20),
        || async {
            let state = page_state(&browser).await;
            (state.3 >= 2).then_some(state)
        },
    )
    .await;
    assert_eq!((disabled, dimmed, state.as_str()), (true, true, "working"));
    assert!(polls >= 2 && result.is_empty());

    let worker = start_worker(&app);
    let (disabled, dimmed, _, _, result) = wait_for_state(&browser, "succeeded").await;
    assert_eq!(
        (disabled, dimmed),
        (false, false),
        "the final answer re-enables the button"
    );
    assert_eq!(result, "Coupon used. Enjoy!");

    // Using it again fails, and says why.
    button.click().await.unwrap();
    let (disabled, dimmed, _, _, result) = wait_for_state(&browser, "failed").await;
    assert_eq!((disabled, dimmed), (false, false));
    assert_eq!(result, "This coupon has already been used.");
    assert_eq!(app.coupon_stats(coupon).await["vendorBalance"], 500);

    worker.cancel();
    browser.close().await.unwrap();
}
