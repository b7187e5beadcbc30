use crate::helpers::{assert_problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    assert_problem(
        app.get("/v1/nothing-here").send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.client
            .delete(app.url("/v1/concerts"))
            .send()
            .await
            .unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let app = spawn_app_with(|s| s.body_limit_bytes = 1024).await;
    let admin = app.admin_token();
    let big = format!("{{\"title\": \"{}\"}}", "x".repeat(4096));

    let announced = app
        .post("/v1/admin/concerts")
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_problem(announced, 413, "payload_too_large").await;

    // Chunked, so the server cannot know the size up front.
    let stream = futures::stream::iter(
        big.into_bytes()
            .chunks(512)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let chunked = app
        .post("/v1/admin/concerts")
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_problem(chunked, 413, "payload_too_large").await;
}

/// Every answer carries `X-Request-Id` — a fresh one, or the client's own
/// when it sent one — problems included, so a client's report names the
/// request an operator can find in the logs.
#[tokio::test]
async fn every_answer_carries_a_request_id_and_a_clients_own_is_kept() {
    let app = spawn_app().await;
    let id_of = |resp: &reqwest::Response| {
        resp.headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let ok = app.get("/v1/concerts").send().await.unwrap();
    let first = id_of(&ok);
    assert!(uuid::Uuid::parse_str(&first).is_ok(), "{first:?}");
    let again = app.get("/v1/concerts").send().await.unwrap();
    assert_ne!(id_of(&again), first, "one id per request");
    let problem = app.get("/v1/wallet").send().await.unwrap();
    assert!(
        uuid::Uuid::parse_str(&id_of(&problem)).is_ok(),
        "a 401 has one too"
    );
    assert_problem(problem, 401, "unauthorized").await;
    let mine = app
        .get("/v1/concerts")
        .header("x-request-id", "checkout-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(id_of(&mine), "checkout-7f3a");
}
