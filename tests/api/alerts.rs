use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use boxoffice::{
    admin::{
        infra::{db::DbAlerts, webhook::signature as signature_of},
        usecase::AlertService,
    },
    kernel::{
        SystemClock,
        alerts::{NewAlert, Severity},
        trace::TraceContext,
    },
};
use serde_json::Value;

use crate::helpers::{
    assert_problem, audited_admins, eventually, outbox_payloads, spawn_app, spawn_app_with,
};

const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

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
    let service = AlertService::new(DbAlerts::new(app.db.clone()), SystemClock, false);
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

/// A post the receiver took: its signature and traceparent headers, body.
type Taken = (Option<String>, Option<String>, String);

/// A webhook receiver that answers 503 while `down`, and records every
/// post it took: (signature header, traceparent header, body).
#[derive(Clone, Default)]
struct Receiver {
    down: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    taken: Arc<Mutex<Vec<Taken>>>,
}

async fn receiver() -> (String, Receiver) {
    use poem::{
        EndpointExt, Route, Server, handler,
        listener::{Acceptor, Listener, TcpListener},
        post,
        web::Data,
    };
    #[handler]
    fn receive(req: &poem::Request, body: String, r: Data<&Receiver>) -> poem::http::StatusCode {
        if r.down.load(Ordering::SeqCst) {
            r.refused.fetch_add(1, Ordering::SeqCst);
            return poem::http::StatusCode::SERVICE_UNAVAILABLE;
        }
        let header = |name: &str| req.header(name).map(str::to_owned);
        (r.taken.lock().unwrap()).push((
            header("x-boxoffice-signature"),
            header("traceparent"),
            body,
        ));
        poem::http::StatusCode::NO_CONTENT
    }
    let r = Receiver::default();
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    let app = Route::new().at("/", post(receive)).data(r.clone());
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    (format!("http://{addr}/"), r)
}

#[tokio::test]
async fn alerts_raised_while_the_webhook_is_down_arrive_signed_in_order_once_it_is_back() {
    let (url, webhook) = receiver().await;
    webhook.down.store(true, Ordering::SeqCst);
    let app = spawn_app_with(|s| {
        s.alert_webhook_url = Some(url);
        s.alert_webhook_secret = Some("s3cret".into());
    })
    .await;
    // Raised in a request's trace by another instance's alert service:
    // the queue is the database, the app's worker delivers it.
    let service = AlertService::new(DbAlerts::new(app.db.clone()), SystemClock, true);
    let trace = TraceContext::root(None);
    let mut raised = Vec::new();
    for message in ["first", "second"] {
        let alert = NewAlert {
            severity: Severity::Critical,
            source: "test".into(),
            message: message.into(),
        };
        raised.push(trace.scope(service.raise(alert)).await.unwrap().id);
    }
    eventually("the webhook refused three posts", WAIT, || async {
        (webhook.refused.load(Ordering::SeqCst) >= 3).then_some(())
    })
    .await;
    let listed = app.get_json("/v1/admin/alerts").await;
    for alert in listed["items"].as_array().unwrap() {
        assert_eq!(alert["webhook"], "queued", "{alert}");
    }
    assert!(
        listed["items"][1]["webhookAttempts"].as_i64().unwrap() >= 2,
        "{listed}"
    );

    webhook.down.store(false, Ordering::SeqCst);
    eventually("both alerts at the webhook", WAIT, || async {
        (webhook.taken.lock().unwrap().len() >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let taken = webhook.taken.lock().unwrap().clone();
    let ids: Vec<i64> = (taken.iter())
        .map(|(_, _, body)| {
            serde_json::from_str::<Value>(body).unwrap()["alert"]["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, raised, "each once, oldest first");
    for (signature, traceparent, body) in &taken {
        assert_eq!(
            signature.as_deref(),
            Some(signature_of("s3cret", body.as_bytes()).as_str()),
            "signed with the secret over the body"
        );
        assert_eq!(traceparent.as_deref(), Some(trace.traceparent().as_str()));
    }
    let listed = app.get_json("/v1/admin/alerts").await;
    for alert in listed["items"].as_array().unwrap() {
        assert_eq!(alert["webhook"], "delivered", "{alert}");
    }
    // Each alert is an event too.
    let events = outbox_payloads(&app.db, "AlertRaised").await;
    let messages: Vec<&str> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, vec!["first", "second"]);
}

/// The open watchdog alerts: (condition, message).
async fn watchdog_alerts(app: &crate::helpers::TestApp) -> Vec<(String, String, bool)> {
    let page = app.get_json("/v1/admin/alerts?limit=500").await;
    (page["items"].as_array().unwrap().iter())
        .filter_map(|a| {
            Some((
                a["condition"].as_str()?.to_owned(),
                a["message"].as_str().unwrap().to_owned(),
                a.get("resolvedAt").is_some(),
            ))
        })
        .collect()
}

#[tokio::test]
async fn a_payment_left_paid_is_alerted_naming_it_and_resolved_once_it_is_settled() {
    use crate::sales::{charge, exec, hold, pay, sale};
    // The saga's confirming group does not run: the payment stays paid.
    let app = spawn_app_with(|s| {
        s.paused_consumers = vec!["reservations".into()];
        s.watchdog_after_seconds = 2;
    })
    .await;
    let sale = sale(&app, 2).await;
    let token = app.admitted_token(5, &sale.concert).await;
    charge(&app, 5, serde_json::json!(150_000)).await;
    let reservation: Value = hold(&app, 5, &token, &sale, sale.seats[0])
        .await
        .json()
        .await
        .unwrap();
    let payment: Value = pay(&app, 5, &token, &reservation["id"])
        .await
        .json()
        .await
        .unwrap();
    let id = payment["id"].as_i64().unwrap();

    let (_, message, _) = eventually("the watchdog's alert on the paid payment", WAIT, || async {
        (watchdog_alerts(&app).await.into_iter()).find(|(c, _, _)| c == "watchdog:payments-paid")
    })
    .await;
    assert!(message.starts_with("1 payment(s) left paid"), "{message}");
    assert!(
        message.ends_with(&format!(": {id}")),
        "names the payment: {message}"
    );
    if app.settings.redis_url.is_some() {
        // The group is behind on the stream too.
        eventually("the lagging group's alert", WAIT, || async {
            (watchdog_alerts(&app).await.into_iter())
                .find(|(c, _, _)| c == "watchdog:groups:lag:reservations")
        })
        .await;
    }
    // Still stuck a few passes later: still one alert.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let paid: Vec<_> = (watchdog_alerts(&app).await.into_iter())
        .filter(|(c, _, _)| c == "watchdog:payments-paid")
        .collect();
    assert_eq!(paid.len(), 1, "{paid:?}");

    // Settled (as the saga would): the alert is resolved, with an event.
    exec(
        &app,
        &format!("UPDATE payments SET status = 'confirmed' WHERE id = {id}"),
    )
    .await;
    eventually("the alert resolved", WAIT, || async {
        (watchdog_alerts(&app).await.into_iter())
            .any(|(c, _, resolved)| c == "watchdog:payments-paid" && resolved)
            .then_some(())
    })
    .await;
    let resolved = outbox_payloads(&app.db, "AlertResolved").await;
    assert!(
        resolved
            .iter()
            .any(|e| e["condition"] == "watchdog:payments-paid"),
        "{resolved:?}"
    );
    // (The gauge is process-wide and every test app runs a watchdog: its
    // value belongs to whichever looked last; that it is exported is what
    // this can check.)
    assert!(
        app.metrics_text()
            .await
            .contains("watchdog_oldest_stall_seconds{probe=\"watchdog:payments-paid\"}")
    );
}
