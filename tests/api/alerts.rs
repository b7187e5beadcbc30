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

use crate::helpers::{assert_problem, audited_admins, spawn_app};

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
    let messages: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, vec!["fyi", "down", "slow"], "newest first");

    let critical = app.get_json("/v1/admin/alerts?severity=critical").await;
    assert_eq!(critical.as_array().unwrap().len(), 1);
    let id = critical[0]["id"].as_i64().unwrap();
    assert_eq!(critical[0]["acknowledged"], false);

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
    let all = app.get_json("/v1/admin/alerts").await;
    assert_eq!(
        all.as_array().unwrap().last().unwrap()["id"],
        id,
        "acknowledged alerts come last"
    );
    assert_eq!(
        app.get_json("/v1/admin/alerts?acknowledged=false")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );

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
    let resp = app
        .get("/v1/admin/alerts?limit=0")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_problem(resp, 400, "validation_failed").await;
    let resp = app
        .get("/v1/admin/alerts")
        .bearer_auth(app.user_token(3))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 403, "forbidden").await;
}
