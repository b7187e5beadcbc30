use boxoffice::{
    admin::{
        infra::{db::DbAlerts, webhook::Webhook},
        usecase::AlertService,
    },
    kernel::{
        SystemClock,
        alerts::{NewAlert, Severity},
    },
};
use serde_json::Value;

use crate::helpers::{assert_problem, audited_admins, spawn_app};

/// The messages of a page of alerts, in order.
fn messages(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| a["message"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn alerts_are_listed_filtered_and_acknowledged() {
    let app = spawn_app().await;
    let service = AlertService::new(
        DbAlerts::new(app.db.clone()),
        Webhook::Disabled,
        SystemClock,
    );
    for (severity, message) in [
        (Severity::Warning, "slow"),
        (Severity::Critical, "down"),
        (Severity::Info, "fyi"),
    ] {
        service
            .raise(NewAlert {
                severity,
                source: "test".into(),
                message: message.into(),
            })
            .await
            .unwrap();
    }
    let all = app.get_json("/v1/admin/alerts").await;
    assert!(all.get("nextCursor").is_none(), "{all}");
    assert_eq!(messages(&all), vec!["fyi", "down", "slow"], "newest first");
    let ids: Vec<i64> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();

    // A page at a time: each next page holds the next older alert.
    let first = app.get_json("/v1/admin/alerts?limit=1").await;
    assert_eq!(messages(&first), vec!["fyi"]);
    assert_eq!(first["nextCursor"], ids[0]);
    let second = app
        .get_json(&format!(
            "/v1/admin/alerts?limit=1&after={}",
            first["nextCursor"]
        ))
        .await;
    assert_eq!(messages(&second), vec!["down"]);
    assert_eq!(second["nextCursor"], ids[1]);
    let last = app
        .get_json(&format!(
            "/v1/admin/alerts?limit=2&after={}",
            second["nextCursor"]
        ))
        .await;
    assert_eq!(messages(&last), vec!["slow"]);
    assert!(last.get("nextCursor").is_none(), "{last}");

    let critical = app.get_json("/v1/admin/alerts?severity=critical").await;
    assert_eq!(critical["items"].as_array().unwrap().len(), 1);
    let id = critical["items"][0]["id"].as_i64().unwrap();
    assert_eq!(id, ids[1]);
    assert_eq!(critical["items"][0]["acknowledged"], false);

    let admin = app.admin_token();
    for _ in 0..2 {
        let resp = app
            .post(&format!("/v1/admin/alerts/{id}/ack"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "acknowledging twice is fine");
    }
    assert_eq!(
        audited_admins(&app.db, "AlertAcknowledged").await,
        vec![serde_json::json!(9_000)],
        "acknowledged once, by that admin"
    );
    // Acknowledging moves nothing: the list stays newest first.
    let all = app.get_json("/v1/admin/alerts").await;
    assert_eq!(messages(&all), vec!["fyi", "down", "slow"]);
    let acknowledged: Vec<bool> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["acknowledged"].as_bool().unwrap())
        .collect();
    assert_eq!(acknowledged, vec![false, true, false]);
    let open = app.get_json("/v1/admin/alerts?acknowledged=false").await;
    assert_eq!(messages(&open), vec!["fyi", "slow"]);
    assert_eq!(
        messages(&app.get_json("/v1/admin/alerts?acknowledged=true").await),
        vec!["down"]
    );
    // Filtered pages skip what the filter leaves out.
    let open_first = app
        .get_json("/v1/admin/alerts?acknowledged=false&limit=1")
        .await;
    assert_eq!(messages(&open_first), vec!["fyi"]);
    assert_eq!(open_first["nextCursor"], ids[0]);
    let open_next = app
        .get_json(&format!(
            "/v1/admin/alerts?acknowledged=false&limit=1&after={}",
            open_first["nextCursor"]
        ))
        .await;
    assert_eq!(messages(&open_next), vec!["slow"]);
    assert!(open_next.get("nextCursor").is_none(), "{open_next}");

    let resp = app
        .post("/v1/admin/alerts/424242/ack")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_problem(resp, 404, "not_found").await;
    let resp = app
        .get("/v1/admin/alerts?severity=loud")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_problem(resp, 400, "validation_failed").await;
    for query in ["limit=0", "limit=501", "after=abc"] {
        let resp = app
            .get(&format!("/v1/admin/alerts?{query}"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_problem(resp, 400, "validation_failed").await;
    }
    let resp = app
        .get("/v1/admin/alerts")
        .bearer_auth(app.user_token(3))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 403, "forbidden").await;
}
