//! First-come-first-served coupons over HTTP: campaigns, the issue flood,
//! failures after the ledger step, a lost ledger, and redemption jobs.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{TimeDelta, Utc};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::helpers::{
    Backend, TestApp, assert_problem, backend, count, eventually, page_ids, spawn_app,
    spawn_app_with,
};

impl TestApp {
    pub async fn create_vendor(&self, name: &str) -> i64 {
        let resp = self
            .post("/v1/admin/vendors")
            .bearer_auth(self.admin_token())
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["balance"], 0);
        let created = crate::helpers::outbox_payloads(&self.db, "VendorCreated").await;
        assert!(
            created.contains(&json!({"vendorId": body["id"], "name": name, "adminId": 9_000})),
            "the vendor is recorded with the admin: {created:?}"
        );
        body["id"].as_i64().unwrap()
    }

    /// A campaign of `quantity` worth 500 points, valid from an hour ago
    /// for `valid_for`.
    pub async fn create_coupon(&self, quantity: i64, valid_for: TimeDelta) -> (i64, i64) {
        let vendor = self.create_vendor("Corner Café").await;
        let now = Utc::now();
        let resp = self
            .post("/v1/admin/coupons")
            .bearer_auth(self.admin_token())
            .json(&json!({
                "name": "Free coffee",
                "discount": 500,
                "quantity": quantity,
                "validFrom": now - TimeDelta::hours(1),
                "validUntil": now + valid_for,
                "vendorId": vendor,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        let body: Value = resp.json().await.unwrap();
        (body["id"].as_i64().unwrap(), vendor)
    }

    pub async fn issue_coupon(&self, coupon: i64, user: i64) -> reqwest::Response {
        self.post(&format!("/v1/coupons/{coupon}/issue"))
            .bearer_auth(self.user_token(user))
            .send()
            .await
            .unwrap()
    }

    /// Issues `coupon` to `user` and returns the user coupon id.
    pub async fn won_coupon(&self, coupon: i64, user: i64) -> i64 {
        let resp = self.issue_coupon(coupon, user).await;
        assert_eq!(resp.status(), 201);
        resp.json::<Value>().await.unwrap()["userCouponId"]
            .as_i64()
            .unwrap()
    }

    pub async fn coupon_stats(&self, coupon: i64) -> Value {
        self.get_json(&format!("/v1/admin/coupons/{coupon}")).await
    }

    /// Runs the reconciler on `coupon` now; returns what it repaired.
    pub async fn reconcile_coupon(&self, coupon: i64) -> Value {
        let resp = self
            .post(&format!("/v1/admin/coupons/{coupon}/reconcile"))
            .bearer_auth(self.admin_token())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "reconcile");
        resp.json().await.unwrap()
    }

    /// Starts a redemption and polls its job until it is finished.
    pub async fn redeem(&self, user: i64, user_coupon: i64) -> Value {
        let resp = self
            .post(&format!("/v1/user-coupons/{user_coupon}/redemptions"))
            .bearer_auth(self.user_token(user))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let accepted: Value = resp.json().await.unwrap();
        assert_eq!(accepted["pollAfterSeconds"], 1);
        self.finished_job(user, accepted["jobId"].as_str().unwrap())
            .await
    }

    pub async fn finished_job(&self, user: i64, job: &str) -> Value {
        eventually(
            "the redemption job to finish",
            Duration::from_secs(20),
            || async {
                let resp = self
                    .get(&format!("/v1/coupon-jobs/{job}"))
                    .bearer_auth(self.user_token(user))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let body: Value = resp.json().await.unwrap();
                (body["status"] != "pending").then_some(body)
            },
        )
        .await
    }
}

/// A page of `user`'s coupons; `query` is `""` or a query string.
async fn my_coupons(app: &TestApp, user: i64, query: &str) -> Value {
    let resp = app
        .get(&format!("/v1/users/me/coupons{query}"))
        .bearer_auth(app.user_token(user))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "GET /v1/users/me/coupons{query}");
    resp.json().await.unwrap()
}

async fn rows(app: &TestApp, coupon: i64) -> (i64, i64, i64, i64) {
    let q = |what: &str| format!("SELECT {what} FROM user_coupons WHERE coupon_id = {coupon}");
    (
        count(&app.db, &q("COUNT(*)")).await,
        count(&app.db, &q("COUNT(DISTINCT user_id)")).await,
        count(&app.db, &q("COUNT(DISTINCT issue_number)")).await,
        count(&app.db, &q("COALESCE(MAX(issue_number), 0)")).await,
    )
}

#[tokio::test]
async fn admins_create_validated_campaigns() {
    let app = spawn_app().await;
    let vendor = app.create_vendor("Corner Café").await;
    let now = Utc::now();
    let body = |patch: Value| {
        let mut body = json!({
            "name": "Free coffee",
            "discount": 500,
            "quantity": 10,
            "validFrom": now,
            "validUntil": now + TimeDelta::days(1),
            "vendorId": vendor,
        });
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let create = |body: Value, token: String| {
        app.post("/v1/admin/coupons")
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let user = app.user_token(1);
    assert_problem(
        create(body(json!({})), user).await.unwrap(),
        403,
        "forbidden",
    )
    .await;
    for bad in [
        json!({ "quantity": 0 }),
        json!({ "quantity": 1_000_001 }),
        json!({ "discount": -5 }),
        json!({ "name": "  " }),
        json!({ "name": 7 }),
        json!({ "validUntil": now - TimeDelta::days(1) }),
        json!({ "vendorId": vendor + 100 }),
    ] {
        let resp = create(body(bad.clone()), app.admin_token()).await.unwrap();
        assert_problem(resp, 400, "validation_failed").await;
    }
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM coupons").await, 0);

    let resp = create(body(json!({})), app.admin_token()).await.unwrap();
    assert_eq!(resp.status(), 201);
    let id = resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let stats = app.coupon_stats(id).await;
    assert_eq!(stats["quantity"], 10);
    assert_eq!(stats["issued"], 0);
    assert_eq!(stats["remaining"], 10);
    assert_eq!(stats["redeemed"], 0);
    assert_eq!(stats["vendorBalance"], 0);
    assert_eq!(stats["ledgerIssued"], 0);
    let all = app.get_json("/v1/admin/coupons").await;
    assert_eq!(
        all,
        json!({ "items": [stats] }),
        "one page, its one campaign as the campaign's own view shows it"
    );
    let resp = app
        .get("/v1/admin/coupons/999")
        .bearer_auth(app.admin_token())
        .send()
        .await
        .unwrap();
    assert_problem(resp, 404, "not_found").await;
    assert_problem(app.issue_coupon(999, 1).await, 404, "not_found").await;
}

#[tokio::test]
async fn campaigns_vendors_and_a_users_coupons_come_in_pages() {
    let app = spawn_app().await;
    let mut campaigns = Vec::new();
    let mut vendors = Vec::new();
    for _ in 0..3 {
        // A campaign of a vendor of its own.
        let (coupon, vendor) = app.create_coupon(5, TimeDelta::days(1)).await;
        campaigns.push(coupon);
        vendors.push(vendor);
    }
    assert!(campaigns.windows(2).all(|w| w[0] < w[1]), "{campaigns:?}");
    assert!(vendors.windows(2).all(|w| w[0] < w[1]), "{vendors:?}");
    // One issued coupon of the oldest campaign, used: its counts differ
    // from the others'.
    let used = app.won_coupon(campaigns[0], 7).await;
    app.won_coupon(campaigns[0], 8).await;
    assert_eq!(app.redeem(7, used).await["status"], "succeeded");

    // Campaigns: the newest two, then the rest.
    let first = app.get_json("/v1/admin/coupons?limit=2").await;
    assert_eq!(page_ids(&first), vec![campaigns[2], campaigns[1]]);
    assert_eq!(first["nextCursor"], campaigns[1]);
    let rest = app
        .get_json(&format!(
            "/v1/admin/coupons?limit=2&after={}",
            first["nextCursor"]
        ))
        .await;
    assert_eq!(page_ids(&rest), vec![campaigns[0]]);
    assert!(rest.get("nextCursor").is_none(), "{rest}");
    // Every item is what the campaign's own view shows, counts included.
    for item in first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["items"].as_array().unwrap())
    {
        let stats = app.coupon_stats(item["id"].as_i64().unwrap()).await;
        assert_eq!(item, &stats);
    }
    assert_eq!(
        (
            rest["items"][0]["issued"].clone(),
            rest["items"][0]["redeemed"].clone(),
            rest["items"][0]["remaining"].clone(),
            rest["items"][0]["ledgerIssued"].clone(),
        ),
        (json!(2), json!(1), json!(3), json!(2))
    );
    assert_eq!(
        (
            first["items"][0]["issued"].clone(),
            first["items"][0]["redeemed"].clone()
        ),
        (json!(0), json!(0))
    );
    // A page exactly full that is the last names no next page.
    let all = app.get_json("/v1/admin/coupons?limit=3").await;
    assert_eq!(
        page_ids(&all),
        vec![campaigns[2], campaigns[1], campaigns[0]]
    );
    assert!(all.get("nextCursor").is_none(), "{all}");

    // Vendors: oldest first.
    let first = app.get_json("/v1/admin/vendors?limit=2").await;
    assert_eq!(page_ids(&first), vendors[..2].to_vec());
    assert_eq!(first["nextCursor"], vendors[1]);
    let rest = app
        .get_json(&format!(
            "/v1/admin/vendors?limit=2&after={}",
            first["nextCursor"]
        ))
        .await;
    assert_eq!(page_ids(&rest), vec![vendors[2]]);
    assert!(rest.get("nextCursor").is_none(), "{rest}");
    assert_eq!(
        first["items"][0]["balance"], 500,
        "the used coupon paid the oldest vendor"
    );
    assert_eq!(rest["items"][0]["balance"], 0);

    // A user's coupons: newest first.
    let mut held = Vec::new();
    for coupon in &campaigns {
        held.push(app.won_coupon(*coupon, 4).await);
    }
    let first = my_coupons(&app, 4, "?limit=2").await;
    assert_eq!(page_ids(&first), vec![held[2], held[1]]);
    assert_eq!(first["nextCursor"], held[1]);
    let rest = my_coupons(&app, 4, &format!("?limit=2&after={}", first["nextCursor"])).await;
    assert_eq!(page_ids(&rest), vec![held[0]]);
    assert_eq!(rest["items"][0]["couponId"], campaigns[0]);
    assert!(rest.get("nextCursor").is_none(), "{rest}");
    // A cursor shows nobody else's coupons.
    assert_eq!(
        my_coupons(&app, 5, &format!("?after={}", held[2] + 1)).await,
        json!({ "items": [] })
    );
}

#[tokio::test]
async fn ten_thousand_requests_issue_exactly_the_quantity() {
    let app = Arc::new(spawn_app().await);
    let (coupon, _) = app.create_coupon(1_000, TimeDelta::days(1)).await;
    let gate = Arc::new(Semaphore::new(256));
    let tasks: Vec<_> = (0..10_000)
        .map(|i| {
            let (app, gate) = (app.clone(), gate.clone());
            // 5,000 users, each asking twice.
            let user = 1 + i % 5_000;
            tokio::spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                let resp = app.issue_coupon(coupon, user).await;
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap();
                (status, body)
            })
        })
        .collect();
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    let mut numbers = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        let key = match status {
            201 => {
                numbers.push(body["issueNumber"].as_i64().unwrap());
                "issued".to_owned()
            }
            409 => body["code"].as_str().unwrap().to_owned(),
            other => panic!("unexpected {other}: {body}"),
        };
        *outcomes.entry(key).or_default() += 1;
    }
    assert_eq!(outcomes["issued"], 1_000, "{outcomes:?}");
    assert_eq!(outcomes["sold_out"] + outcomes["already_issued"], 9_000);
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=1_000).collect::<Vec<_>>());
    assert_eq!(rows(&app, coupon).await, (1_000, 1_000, 1_000, 1_000));
    let stats = app.coupon_stats(coupon).await;
    assert_eq!(stats["issued"], 1_000);
    assert_eq!(stats["ledgerIssued"], 1_000, "Redis count = DB count");
    assert_eq!(stats["remaining"], 0);
    assert_eq!(stats["redeemed"], 0);
    // The list's counts, kept by the racing issues, agree to the coupon.
    assert_eq!(
        app.get_json("/v1/admin/coupons").await,
        json!({ "items": [stats] })
    );
    let events = count(
        &app.db,
        "SELECT COUNT(*) FROM outbox WHERE event_type = 'CouponIssued'",
    )
    .await;
    // Published rows may already have been deleted; none may be extra.
    assert!(events <= 1_000);
}

/// Makes the database refuse `user`'s coupon row, as a failing write would.
async fn fail_writes_for(app: &TestApp, user: i64) {
    let statements = match backend() {
        Backend::Sqlite => vec![format!(
            "CREATE TRIGGER fail_writes BEFORE INSERT ON user_coupons WHEN NEW.user_id = {user} \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )],
        Backend::Postgres => vec![
            format!(
                "CREATE FUNCTION fail_writes() RETURNS trigger AS $$ BEGIN \
                 IF NEW.user_id = {user} THEN RAISE EXCEPTION 'injected failure'; END IF; \
                 RETURN NEW; END $$ LANGUAGE plpgsql"
            ),
            "CREATE TRIGGER fail_writes BEFORE INSERT ON user_coupons \
             FOR EACH ROW EXECUTE FUNCTION fail_writes()"
                .to_owned(),
        ],
    };
    for sql in statements {
        app.db.execute_unprepared(&sql).await.unwrap();
    }
}

#[tokio::test]
async fn a_failed_write_revokes_the_ledger_entry_and_answers_503() {
    let app = spawn_app().await;
    let (coupon, _) = app.create_coupon(2, TimeDelta::days(1)).await;
    fail_writes_for(&app, 666).await;

    let resp = app.issue_coupon(coupon, 666).await;
    assert!(resp.headers().contains_key("retry-after"));
    assert_problem(resp, 503, "unavailable").await;
    assert_eq!(rows(&app, coupon).await.0, 0);
    assert_eq!(app.coupon_stats(coupon).await["ledgerIssued"], 0, "revoked");

    // The number went back: two other users still get both coupons.
    let mut numbers = vec![];
    for user in [1, 2] {
        let resp = app.issue_coupon(coupon, user).await;
        assert_eq!(resp.status(), 201);
        numbers.push(resp.json::<Value>().await.unwrap()["issueNumber"].clone());
    }
    assert_eq!(numbers, vec![json!(1), json!(2)]);
    assert_problem(app.issue_coupon(coupon, 3).await, 409, "sold_out").await;
    assert_problem(app.issue_coupon(coupon, 666).await, 409, "sold_out").await;
    assert_eq!(rows(&app, coupon).await, (2, 2, 2, 2));
}

#[tokio::test]
async fn rejections_and_idempotent_retries() {
    let app = spawn_app().await;
    let (coupon, vendor) = app.create_coupon(5, TimeDelta::days(1)).await;
    let issue_with_key = |user: i64, key: &'static str| {
        app.post(&format!("/v1/coupons/{coupon}/issue"))
            .bearer_auth(app.user_token(user))
            .header("idempotency-key", key)
            .send()
    };
    let first: Value = issue_with_key(1, "k-1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let again = issue_with_key(1, "k-1").await.unwrap();
    assert_eq!(again.status(), 201, "the winning key replays its answer");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_problem(
        issue_with_key(1, "k-2").await.unwrap(),
        409,
        "already_issued",
    )
    .await;
    assert_problem(app.issue_coupon(coupon, 1).await, 409, "already_issued").await;
    let resp = app
        .post(&format!("/v1/coupons/{coupon}/issue"))
        .bearer_auth(app.user_token(2))
        .header("idempotency-key", "x".repeat(200))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 400, "validation_failed").await;
    let resp = app
        .post(&format!("/v1/coupons/{coupon}/issue"))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 401, "unauthorized").await;
    assert_eq!(rows(&app, coupon).await.0, 1);

    // Outside the validity window.
    let now = Utc::now();
    for (from, until, code) in [
        (
            now + TimeDelta::hours(1),
            now + TimeDelta::hours(2),
            "coupon_not_started",
        ),
        (
            now - TimeDelta::hours(2),
            now - TimeDelta::hours(1),
            "coupon_ended",
        ),
    ] {
        let resp = app
            .post("/v1/admin/coupons")
            .bearer_auth(app.admin_token())
            .json(&json!({
                "name": "Later", "discount": 100, "quantity": 5,
                "validFrom": from, "validUntil": until, "vendorId": vendor,
            }))
            .send()
            .await
            .unwrap();
        let id = resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
        assert_problem(app.issue_coupon(id, 1).await, 409, code).await;
    }
}

#[tokio::test]
async fn a_lost_ledger_is_rebuilt_and_never_over_issues() {
    let app = Arc::new(spawn_app_with(|s| s.coupon_reconcile_grace_seconds = 0).await);
    let (coupon, _) = app.create_coupon(100, TimeDelta::days(1)).await;
    for user in 1..=40 {
        assert_eq!(app.issue_coupon(coupon, user).await.status(), 201);
    }
    // The second wave goes to a server whose ledger lost everything while
    // winners are still being written: Redis flushed under a running
    // instance, or (embedded) a restart that emptied process memory.
    let target = match backend() {
        Backend::Postgres => app.clone(),
        Backend::Sqlite => {
            let url = app.settings.database_url.clone();
            Arc::new(spawn_app_with(move |s| s.database_url = url).await)
        }
    };
    let wave: Vec<_> = (41..=400)
        .map(|user| {
            let target = target.clone();
            tokio::spawn(async move { target.issue_coupon(coupon, user).await.status().as_u16() })
        })
        .collect();
    if backend() == Backend::Postgres {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut conn = redis::Client::open(crate::helpers::redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let pattern = format!("{}:{{coupon:{coupon}}}:*", app.settings.redis_prefix);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!keys.is_empty(), "the ledger lives under {pattern}");
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    for task in wave {
        let status = task.await.unwrap();
        assert!([201, 409, 503].contains(&status), "status {status}");
    }
    let (issued, users, numbers, max) = rows(&app, coupon).await;
    assert!(issued <= 100, "over-issued: {issued}");
    assert_eq!((users, numbers), (issued, issued));
    assert!(max <= 100);

    // After reconciling, the ledger agrees with the database, and the
    // coupons nobody got (burned numbers, revoked winners) are issued.
    target.reconcile_coupon(coupon).await;
    let stats = target.coupon_stats(coupon).await;
    assert_eq!(stats["ledgerIssued"], stats["issued"], "{stats}");
    for user in 401..=700 {
        target.issue_coupon(coupon, user).await;
    }
    assert_eq!(rows(&app, coupon).await, (100, 100, 100, 100));
    let stats = target.coupon_stats(coupon).await;
    assert_eq!(
        (stats["issued"].clone(), stats["ledgerIssued"].clone()),
        (json!(100), json!(100))
    );
}

#[tokio::test]
async fn the_reconciler_repairs_drift_between_ledger_and_database() {
    let app = spawn_app_with(|s| s.coupon_reconcile_grace_seconds = 0).await;
    let (coupon, _) = app.create_coupon(10, TimeDelta::days(1)).await;
    for user in 1..=3 {
        app.won_coupon(coupon, user).await;
    }
    // A winner the ledger never heard of (written by hand), and a ledger
    // entry whose row never landed (its server crashed before the write).
    app.db
        .execute_unprepared(&format!(
            "INSERT INTO user_coupons (coupon_id, user_id, issue_number, status, version, issued_at) \
             VALUES ({coupon}, 77, 9, 'issued', 0, CURRENT_TIMESTAMP)"
        ))
        .await
        .unwrap();
    fail_writes_for(&app, 88).await;
    app.issue_coupon(coupon, 88).await;
    // The failed write was revoked; make an orphan the way a crash would.
    let orphan = app.issue_coupon(coupon, 89).await;
    assert_eq!(orphan.status(), 201);
    app.db
        .execute_unprepared("DELETE FROM user_coupons WHERE user_id = 89")
        .await
        .unwrap();

    let report = app.reconcile_coupon(coupon).await;
    assert_eq!(
        report,
        json!({ "rebuilt": false, "added": [77], "removed": [89] })
    );
    let stats = app.coupon_stats(coupon).await;
    assert_eq!(
        (stats["issued"].clone(), stats["ledgerIssued"].clone()),
        (json!(4), json!(4))
    );
    assert_problem(app.issue_coupon(coupon, 77).await, 409, "already_issued").await;
    // Nothing left to repair.
    let again = app.reconcile_coupon(coupon).await;
    assert_eq!(
        again,
        json!({ "rebuilt": false, "added": [], "removed": [] })
    );
    // The six remaining coupons go to six more users (number 9 is taken).
    let mut numbers = vec![];
    for user in 100..110 {
        let resp = app.issue_coupon(coupon, user).await;
        if resp.status() == 201 {
            numbers.push(
                resp.json::<Value>().await.unwrap()["issueNumber"]
                    .as_i64()
                    .unwrap(),
            );
        }
    }
    numbers.sort_unstable();
    assert_eq!(numbers, vec![4, 5, 6, 7, 8, 10]);
}

#[tokio::test]
async fn redemption_jobs_pay_the_vendor_once_and_explain_failures() {
    let app = spawn_app().await;
    let (coupon, vendor) = app.create_coupon(10, TimeDelta::days(1)).await;
    let mine = app.won_coupon(coupon, 1).await;
    let theirs = app.won_coupon(coupon, 2).await;

    let job = app.redeem(1, mine).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["reason"], Value::Null);
    assert_eq!(job["userCouponId"], mine);
    let stats = app.coupon_stats(coupon).await;
    assert_eq!(
        (stats["redeemed"].clone(), stats["vendorBalance"].clone()),
        (json!(1), json!(500))
    );
    assert_eq!(stats["issued"], 2);
    assert_eq!(
        app.get_json("/v1/admin/coupons").await,
        json!({ "items": [stats] }),
        "the list counts what the campaign's own view does"
    );

    for (user, user_coupon, reason) in [
        (1, mine, "already_used"),
        (1, theirs, "not_your_coupon"),
        (1, 987_654, "not_your_coupon"),
    ] {
        let job = app.redeem(user, user_coupon).await;
        assert_eq!(job["status"], "failed");
        assert_eq!(job["reason"], reason, "{job}");
        assert!(job["message"].as_str().unwrap().len() > 10);
    }
    let app = &app;
    let my_list = my_coupons(app, 1, "").await;
    assert!(my_list.get("nextCursor").is_none(), "{my_list}");
    let my_list = &my_list["items"];
    assert_eq!(my_list.as_array().unwrap().len(), 1);
    assert_eq!(my_list[0]["status"], "used");
    assert_eq!(my_list[0]["couponId"], coupon);
    assert_eq!(my_coupons(app, 2, "").await["items"][0]["status"], "issued");

    // The same coupon redeemed twice at once: one job wins, one vendor payment.
    let both: Vec<_> = (0..2)
        .map(|i| {
            app.post(&format!("/v1/user-coupons/{theirs}/redemptions"))
                .bearer_auth(app.user_token(2))
                .header("idempotency-key", format!("twice-{i}"))
                .send()
        })
        .collect();
    let mut jobs = vec![];
    for request in both {
        let accepted: Value = request.await.unwrap().json().await.unwrap();
        jobs.push(accepted["jobId"].as_str().unwrap().to_owned());
    }
    let mut outcomes = vec![];
    for job in &jobs {
        let done = app.finished_job(2, job).await;
        outcomes.push(format!("{}/{}", done["status"], done["reason"]));
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        vec!["\"failed\"/\"already_used\"", "\"succeeded\"/null"]
    );
    let payments = count(
        &app.db,
        &format!("SELECT COUNT(*) FROM vendor_payments WHERE user_coupon_id = {theirs}"),
    )
    .await;
    assert_eq!(payments, 1);
    let stats = app.coupon_stats(coupon).await;
    assert_eq!(
        (stats["redeemed"].clone(), stats["vendorBalance"].clone()),
        (json!(2), json!(1000))
    );
    // The counts are the rows': both issued coupons, both used.
    let used = count(
        &app.db,
        &format!(
            "SELECT COUNT(*) FROM user_coupons WHERE coupon_id = {coupon} AND status = 'used'"
        ),
    )
    .await;
    assert_eq!(
        (stats["issued"].clone(), stats["redeemed"].clone()),
        (json!(rows(app, coupon).await.0), json!(used))
    );
    assert_eq!(used, 2);
    assert_eq!(
        app.get_json("/v1/admin/coupons").await,
        json!({ "items": [stats] }),
        "the list counts what the campaign's own view does"
    );
    let vendors = app.get_json("/v1/admin/vendors").await;
    assert!(vendors.get("nextCursor").is_none(), "{vendors}");
    assert_eq!(vendors["items"][0]["id"], vendor);
    assert_eq!(vendors["items"][0]["balance"], 1000);

    // A retried request with the same key is the same job.
    let again: Value = app
        .post(&format!("/v1/user-coupons/{theirs}/redemptions"))
        .bearer_auth(app.user_token(2))
        .header("idempotency-key", "twice-0")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["jobId"], jobs[0].as_str());
    // Somebody else's job is not found.
    let resp = app
        .get(&format!("/v1/coupon-jobs/{}", jobs[0]))
        .bearer_auth(app.user_token(1))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 404, "not_found").await;
    let resp = app
        .get("/v1/coupon-jobs/not-a-uuid")
        .bearer_auth(app.user_token(1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Finished jobs are in the users' notifications.
    let kinds = eventually("coupon notifications", Duration::from_secs(20), || async {
        let resp = app
            .get("/v1/users/me/notifications")
            .bearer_auth(app.user_token(1))
            .send()
            .await
            .unwrap();
        let body: Value = resp.json().await.unwrap();
        let kinds: Vec<String> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["kind"].as_str().unwrap().to_owned())
            .collect();
        (kinds.len() == 4).then_some(kinds)
    })
    .await;
    assert_eq!(
        kinds,
        vec![
            "coupon_redeemed",
            "coupon_redemption_failed",
            "coupon_redemption_failed",
            "coupon_redemption_failed"
        ]
    );
}

#[tokio::test]
async fn an_expired_coupon_cannot_be_used() {
    let app = spawn_app().await;
    let (coupon, _) = app.create_coupon(10, TimeDelta::milliseconds(1_500)).await;
    let held = app.won_coupon(coupon, 1).await;
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let job = app.redeem(1, held).await;
    assert_eq!(
        (job["status"].clone(), job["reason"].clone()),
        (json!("failed"), json!("expired"))
    );
    assert_eq!(
        my_coupons(&app, 1, "").await["items"][0]["status"],
        "expired"
    );
    assert_eq!(app.coupon_stats(coupon).await["vendorBalance"], 0);
}

/// One key names one request: on another coupon (issue or redemption) it
/// is refused and takes nothing; sent ten times at once it runs once.
#[tokio::test]
async fn an_idempotency_key_names_one_request_and_runs_once_even_sent_at_once() {
    let app = spawn_app().await;
    let (first, _) = app.create_coupon(5, TimeDelta::days(1)).await;
    let (second, _) = app.create_coupon(5, TimeDelta::days(1)).await;
    let send = |path: String, key: &'static str| {
        app.post(&path)
            .bearer_auth(app.user_token(3))
            .header("idempotency-key", key)
            .send()
    };
    let issue = |coupon: i64, key| send(format!("/v1/coupons/{coupon}/issue"), key);
    let won: Value = issue(first, "issue-k").await.unwrap().json().await.unwrap();
    assert_problem(
        issue(second, "issue-k").await.unwrap(),
        409,
        "idempotency_conflict",
    )
    .await;
    assert_eq!(
        app.coupon_stats(second).await["ledgerIssued"],
        0,
        "a refused key takes no coupon"
    );
    let again: Value = issue(first, "issue-k").await.unwrap().json().await.unwrap();
    assert_eq!(again, won);

    let mine: Value = issue(second, "issue-2")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let redeem = |user_coupon: &Value| {
        send(
            format!("/v1/user-coupons/{user_coupon}/redemptions"),
            "redeem-k",
        )
    };
    let job = redeem(&won["userCouponId"]).await.unwrap();
    assert_eq!(job.status(), 202);
    let job: Value = job.json().await.unwrap();
    assert_problem(
        redeem(&mine["userCouponId"]).await.unwrap(),
        409,
        "idempotency_conflict",
    )
    .await;
    let retried: Value = redeem(&won["userCouponId"])
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(retried, job);
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM coupon_jobs").await, 1);

    // Ten identical charges at once: one runs, the others wait for it and
    // replay its answer.
    let charges = (0..10).map(|_| {
        app.post("/v1/wallet/charges")
            .bearer_auth(app.user_token(3))
            .header("idempotency-key", "charge-k")
            .json(&json!({"amount": 700}))
            .send()
    });
    let mut answers = Vec::new();
    for resp in futures::future::join_all(charges).await {
        let resp = resp.unwrap();
        assert_eq!(resp.status(), 201);
        answers.push(resp.json::<Value>().await.unwrap());
    }
    assert!(
        answers.iter().all(|a| a == &json!({"balance": 700})),
        "{answers:?}"
    );
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM wallet_transactions WHERE user_id = 3"
        )
        .await,
        1
    );
}
