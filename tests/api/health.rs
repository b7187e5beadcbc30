use crate::helpers::{Backend, backend, spawn_app, spawn_app_with};

#[tokio::test]
async fn live_and_ready_answer_ok() {
    let app = spawn_app().await;
    let live = app.get("/health/live").send().await.unwrap();
    assert_eq!(live.status(), 200);

    let ready: serde_json::Value = app
        .get("/health/ready")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ok");
    assert_eq!(ready["database"], "ok");
    let expected_redis = match backend() {
        Backend::Sqlite => "not_configured",
        Backend::Postgres => "ok",
    };
    assert_eq!(ready["redis"], expected_redis);
}

#[tokio::test]
async fn ready_checks_redis_when_configured() {
    let app = spawn_app_with(|s| s.redis_url = Some(crate::helpers::redis_url())).await;
    let ready: serde_json::Value = app
        .get("/health/ready")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["redis"], "ok");
}

#[tokio::test]
async fn metrics_expose_request_counts_and_latency_by_operation() {
    let app = spawn_app().await;
    assert_eq!(app.get("/v1/concerts").send().await.unwrap().status(), 200);
    let resp = app.get("/metrics").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(r#"http_requests_total{method="GET",operation="listConcerts",status="200"}"#),
        "{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn swagger_ui_and_spec_are_served() {
    let app = spawn_app().await;
    let docs = app.get("/docs").send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("swagger")
    );
    let spec: serde_json::Value = app
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["paths"]["/v1/concerts"].is_object());
}
