//! Following one purchase by one id: a buyer's client sends one request id
//! (a UUID) with entering the waiting room, holding a seat and paying; the
//! server runs each request in that trace, writes it on every event, and
//! the consumers, the relay's stream entries and the data-platform lines
//! carry it on through the confirmation and the receipt. An operator finds
//! the whole purchase in the logs, the stream and the data platform by
//! that one id. A real server process, its JSON log read back.

use std::{path::Path, time::Duration};

use boxoffice::auth::domain::Role;
use reqwest::{Client, RequestBuilder};
use serde_json::{Value, json};

use crate::{
    crash::{ADMIN, Server, Shopper, WAIT, crash_database},
    helpers::eventually,
};

/// Every complete line of the data-platform files in `sink`.
fn exported_lines(sink: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(sink) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .flat_map(|e| {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let complete = text.rfind('\n').map_or("", |end| &text[..end]).to_owned();
            complete
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The JSON log lines of the server.
fn log_lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// The trace id a `traceparent` names.
fn trace_of(traceparent: &Value) -> &str {
    traceparent
        .as_str()
        .and_then(|t| t.split('-').nth(1))
        .unwrap_or_default()
}

/// What one checkout left behind.
struct Checkout {
    /// The request id the client sent with every request.
    request_id: uuid::Uuid,
    /// The trace id that request id names.
    trace: String,
    user: i64,
    payment_id: i64,
    hold: Value,
}

/// One buyer's checkout on `server`, every request with one request id:
/// charge, enter, poll until admitted, read the seat map, hold, pay.
async fn checkout(server: &Server) -> Checkout {
    let shopper = Shopper::of(server);
    let (created, _) = shopper.sale(3).await;
    let concert = created["id"].clone();
    let schedule = created["schedules"][0]["id"].clone();
    let (status, page) = shopper
        .get(&format!("/v1/concerts/{concert}/schedules"), ADMIN, None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{page}");

    // The buyer's client: one id for the whole checkout.
    let checkout = uuid::Uuid::new_v4();
    let trace = checkout.simple().to_string();
    let client = Client::new();
    let user = 4_242;
    let token = shopper.token(user, Role::User);
    let request = |method: reqwest::Method, path: &str| -> RequestBuilder {
        client
            .request(method, format!("{}{path}", server.base))
            .bearer_auth(&token)
            .header("x-request-id", checkout.to_string())
            .timeout(Duration::from_secs(10))
    };
    let send = |req: RequestBuilder| async move {
        let resp = req.send().await.unwrap();
        assert_eq!(
            resp.headers()["x-request-id"].to_str().unwrap(),
            checkout.to_string(),
            "the client's id comes back"
        );
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.unwrap_or(Value::Null))
    };
    let (status, body) = send(
        request(reqwest::Method::POST, "/v1/wallet/charges").json(&json!({"amount": 500_000})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, ticket) = send(
        request(reqwest::Method::POST, "/v1/queue/tokens").json(&json!({"concertId": concert})),
    )
    .await;
    assert_eq!(status, 201, "{ticket}");
    let queue = ticket["token"].as_str().unwrap().to_owned();
    eventually("admission", WAIT, || async {
        let (_, body) =
            send(request(reqwest::Method::GET, "/v1/queue/status").header("x-queue-token", &queue))
                .await;
        (body["status"] == "active").then_some(())
    })
    .await;
    let (status, seats) = send(
        request(
            reqwest::Method::GET,
            &format!("/v1/schedules/{schedule}/seats?status=available"),
        )
        .header("x-queue-token", &queue),
    )
    .await;
    assert_eq!(status, 200, "{seats}");
    let seat = seats["items"][0]["id"].clone();
    let (status, hold) = send(
        request(reqwest::Method::POST, "/v1/reservations")
            .header("x-queue-token", &queue)
            .json(&json!({"scheduleId": schedule, "seatId": seat})),
    )
    .await;
    assert_eq!(status, 201, "{hold}");
    let (status, payment) = send(
        request(reqwest::Method::POST, "/v1/payments")
            .header("x-queue-token", &queue)
            .json(&json!({"reservationId": hold["id"]})),
    )
    .await;
    assert_eq!(status, 201, "{payment}");
    let payment_id = payment["id"].as_i64().unwrap();
    Checkout {
        request_id: checkout,
        trace,
        user,
        payment_id,
        hold,
    }
}

#[tokio::test]
async fn one_request_id_follows_a_purchase_through_its_events_consumers_and_data_platform_line() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = crash_database(dir.path()).await;
    let mut server = Server::new(dir.path(), &database_url);
    server.env = vec![
        ("BOXOFFICE_LOG", "info,boxoffice::trace=debug".to_owned()),
        ("BOXOFFICE_LOG_FORMAT", "json".to_owned()),
    ];
    server.start().await;
    let Checkout {
        request_id: checkout,
        trace,
        user,
        payment_id,
        hold,
    } = checkout(&server).await;

    // Confirmed, with its receipt exported: the saga ran to its end.
    let sink = dir.path().join("data-platform");
    let kinds = [
        "ReservationHeld",
        "PaymentCompleted",
        "ReservationConfirmed",
        "PaymentConfirmed",
        "ReceiptIssued",
    ];
    let lines = eventually("the purchase's data-platform lines", WAIT, || async {
        let lines = exported_lines(&sink);
        kinds
            .iter()
            .all(|kind| {
                lines.iter().any(|l| {
                    l["type"] == *kind
                        && (l["payload"]["paymentId"] == payment_id
                            || l["payload"]["reservationId"] == hold["id"])
                })
            })
            .then_some(lines)
    })
    .await;
    let (status, body) = Shopper::of(&server)
        .get(&format!("/v1/payments/{payment_id}"), user, None)
        .await
        .unwrap();
    assert_eq!((status, &body["status"]), (200, &json!("confirmed")));

    // Every event of the purchase carries the checkout's trace: the ones
    // the requests wrote and the ones the consumers wrote in answer.
    let of_purchase = |kind: &str| {
        lines
            .iter()
            .find(|l| {
                l["type"] == kind
                    && (l["payload"]["paymentId"] == payment_id
                        || l["payload"]["reservationId"] == hold["id"])
            })
            .unwrap_or_else(|| panic!("no {kind} line"))
            .clone()
    };
    for kind in kinds {
        let line = of_purchase(kind);
        assert_eq!(trace_of(&line["traceparent"]), trace, "{kind}: {line}");
    }
    let charged = lines
        .iter()
        .find(|l| l["type"] == "WalletCharged" && l["payload"]["userId"] == user)
        .expect("the charge's line");
    assert_eq!(trace_of(&charged["traceparent"]), trace, "{charged}");
    // Someone else's work is not in it.
    assert!(
        lines
            .iter()
            .filter(|l| l["type"] == "ConcertCreated")
            .all(|l| trace_of(&l["traceparent"]) != trace)
    );

    // The log: the requests' lines and every consumer that handled the
    // purchase's events, all under the one trace id.
    let log = eventually("the consumers' log lines", WAIT, || async {
        let log = log_lines(&server.log);
        let consumers: std::collections::HashSet<String> = log
            .iter()
            .filter(|l| l["span"]["trace_id"] == trace.as_str())
            .filter_map(|l| l["span"]["consumer"].as_str().map(str::to_owned))
            .collect();
        [
            "reservations",
            "payments",
            "receipts",
            "data-platform",
            "notifications",
        ]
        .iter()
        .all(|c| consumers.contains(*c))
        .then_some(log)
    })
    .await;
    let answered: Vec<&str> = log
        .iter()
        .filter(|l| {
            l["span"]["name"] == "request"
                && l["span"]["request_id"] == checkout.to_string()
                && l["fields"]["message"] == "answered"
        })
        .map(|l| {
            assert_eq!(l["span"]["trace_id"], trace.as_str(), "{l}");
            l["span"]["path"].as_str().unwrap_or_default()
        })
        .collect();
    for path in ["/v1/queue/tokens", "/v1/reservations", "/v1/payments"] {
        assert!(
            answered.contains(&path),
            "no request line for {path}: {answered:?}"
        );
    }
}

/// An OTLP/HTTP collector on loopback: every JSON body posted to
/// `/v1/traces`, kept.
struct Collector {
    url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> Self {
        use poem::{EndpointExt, Route, handler, post, web::Data};
        type Bodies = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;
        #[handler]
        fn traces(body: String, bodies: Data<&Bodies>) -> poem::Response {
            if let Ok(json) = serde_json::from_str::<Value>(&body) {
                bodies.lock().unwrap().push(json);
            }
            poem::Response::builder()
                .content_type("application/json")
                .body("{}")
        }
        let bodies: Bodies = Default::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let app = Route::new()
            .at("/v1/traces", post(traces))
            .data(bodies.clone());
        let server = tokio::spawn(async move {
            poem::Server::new(poem::listener::TcpListener::bind(addr.to_string()))
                .run(app)
                .await
                .unwrap();
        });
        Self {
            url: format!("http://{addr}"),
            bodies,
            _server: server,
        }
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|body| {
                body["resourceSpans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .flat_map(|r| r["scopeSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|s| s["spans"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

/// With `--otlp-endpoint`, the purchase's spans reach the collector as one
/// trace: the requests under the client's id, and each consumer's handling
/// of the payment's event as a child of the payment request's span, whose
/// id is the one the event carries.
#[tokio::test]
async fn with_an_otlp_endpoint_the_purchase_is_exported_as_one_trace() {
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database_url = crash_database(dir.path()).await;
    let mut server = Server::new(dir.path(), &database_url);
    server.env = vec![
        ("BOXOFFICE_OTLP_ENDPOINT", collector.url.clone()),
        // Export every 100 ms instead of every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ];
    server.start().await;
    let Checkout {
        trace, payment_id, ..
    } = checkout(&server).await;
    let sink = dir.path().join("data-platform");
    let completed = eventually("the payment's data-platform line", WAIT, || async {
        exported_lines(&sink)
            .into_iter()
            .find(|l| l["type"] == "PaymentCompleted" && l["payload"]["paymentId"] == payment_id)
    })
    .await;
    let pay_span = completed["traceparent"]
        .as_str()
        .and_then(|t| t.split('-').nth(2))
        .expect("the event names its span")
        .to_owned();

    let spans = eventually("the purchase's spans at the collector", WAIT, || async {
        let spans: Vec<Value> = collector
            .spans()
            .into_iter()
            .filter(|s| s["traceId"].as_str().map(str::to_ascii_lowercase) == Some(trace.clone()))
            .collect();
        let consumers = spans
            .iter()
            .filter(|s| s["name"] == "event" && s["parentSpanId"] == pay_span.as_str())
            .count();
        (consumers >= 3).then_some(spans)
    })
    .await;
    let pay = spans
        .iter()
        .find(|s| s["spanId"] == pay_span.as_str())
        .expect("the payment request's span is exported under the id its event carries");
    assert_eq!(pay["name"], "request", "{pay}");
    let names: std::collections::HashSet<&str> =
        spans.iter().filter_map(|s| s["name"].as_str()).collect();
    assert!(
        names.contains("request") && names.contains("event"),
        "{names:?}"
    );
    assert!(
        spans.iter().filter(|s| s["name"] == "request").count() >= 4,
        "charge, enter, polls, seat map, hold and pay are in the trace"
    );
}
