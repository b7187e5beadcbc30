//! Hostile callers. Every route against missing, forged and expired
//! credentials, the wrong role, other users' resources and queue tokens;
//! then hostile bodies, amounts and ids. Each refusal is a 4xx problem and
//! leaves the database exactly as it was.

use std::time::Duration;

use boxoffice::{
    auth::{
        domain::{Identity, Role},
        infra::jwt::JwtCodec,
        ports::TokenCodec,
    },
    kernel::{ConcertId, UserId, Validity},
    queue::{domain::QueuePass, infra::tokens::JwtQueueTokens, ports::QueueTokens},
    ticket::domain::BATCH_BODY_LIMIT,
};
use chrono::{TimeDelta, Utc};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    TEST_JWT_SECRET, TEST_QUEUE_SECRET, TestApp, assert_problem, concert_body, count, eventually,
    sign, spawn_app, spawn_app_with,
};

const WAIT: Duration = Duration::from_secs(20);
/// The buyer who owns every resource in the world below.
const OWNER: i64 = 1;
/// Another signed-in user, with nothing of their own.
const STRANGER: i64 = 2;
/// The user whose (forged, expired, …) credentials the matrix sends.
const PROBE: i64 = 5;
const TWO_POW_63: &str = "9223372036854775808";
const I64_MAX: &str = "9223372036854775807";
const I64_MIN: &str = "-9223372036854775808";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    Public,
    /// A user JWT.
    User,
    /// A user JWT and an admitted queue token for the concert.
    UserQueue,
    /// A queue token alone (any state).
    Queue,
    Admin,
    /// A staff (or admin) JWT: the door.
    Scanner,
}

struct Route {
    method: Method,
    /// The path as the OpenAPI document spells it.
    template: &'static str,
    path: String,
    guard: Guard,
    body: Option<Value>,
}

fn route(method: Method, template: &'static str, path: String, guard: Guard) -> Route {
    Route {
        method,
        template,
        path,
        guard,
        body: None,
    }
}

impl Route {
    fn with_body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

async fn call(
    app: &TestApp,
    method: &Method,
    path: &str,
    bearer: Option<&str>,
    queue: Option<&str>,
    body: Option<&Value>,
) -> Response {
    let mut req = app.client.request(method.clone(), app.url(path));
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    if let Some(token) = queue {
        req = req.header("x-queue-token", token);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    req.send().await.expect("request")
}

async fn call_raw(
    app: &TestApp,
    method: &Method,
    path: &str,
    (bearer, queue): &(Option<String>, Option<String>),
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Response {
    let mut req = app.client.request(method.clone(), app.url(path));
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    if let Some(token) = queue {
        req = req.header("x-queue-token", token);
    }
    if let Some(content_type) = content_type {
        req = req.header("content-type", content_type);
    }
    req.body(body).send().await.expect("request")
}

/// Row counts and sums that any write would move.
async fn snapshot(app: &TestApp) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for table in [
        "concerts",
        "schedules",
        "seats",
        "reservations",
        "waitlist",
        "payments",
        "wallets",
        "wallet_transactions",
        "vendors",
        "coupons",
        "user_coupons",
        "coupon_jobs",
        "outbox",
        "idempotency_keys",
        "queue_settings",
        "compensations",
    ] {
        out.push((
            table,
            count(&app.db, &format!("SELECT COUNT(*) FROM {table}")).await,
        ));
    }
    for (what, sql) in [
        (
            "wallet balances",
            "SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM wallets",
        ),
        (
            "vendor balances",
            "SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM vendors",
        ),
        (
            "seats with a holder",
            "SELECT COUNT(*) FROM seats WHERE holder_id IS NOT NULL",
        ),
        (
            "reservation statuses",
            "SELECT COUNT(DISTINCT status) FROM reservations",
        ),
        (
            "used coupons",
            "SELECT COUNT(*) FROM user_coupons WHERE used_at IS NOT NULL",
        ),
    ] {
        out.push((what, count(&app.db, sql).await));
    }
    out
}

/// What moved between two snapshots, and by how much.
fn changes(
    before: &[(&'static str, i64)],
    after: &[(&'static str, i64)],
) -> Vec<(&'static str, i64)> {
    before
        .iter()
        .zip(after)
        .filter(|(b, a)| b.1 != a.1)
        .map(|(b, a)| (b.0, a.1 - b.1))
        .collect()
}

/// A concert with two schedules, the owner's confirmed payment, held seat,
/// used and unused coupons and a finished redemption job.
struct World {
    app: TestApp,
    concert: Value,
    schedule: Value,
    /// Seats of the first schedule, in number order.
    seats: Vec<i64>,
    /// A seat of the second schedule.
    other_schedule_seat: i64,
    reservation: i64,
    paid_reservation: i64,
    payment: i64,
    coupon: i64,
    vendor: i64,
    /// The owner's coupon, still unused.
    user_coupon: i64,
    job: String,
    /// `PROBE`'s admitted queue token and held seat, so that a request of
    /// theirs fails only for the one credential a test spoils.
    probe_queue: String,
    probe_reservation: i64,
}

async fn created(resp: Response, what: &str) -> Value {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    assert!(status.is_success(), "{what}: {status} {text}");
    serde_json::from_str(&text).expect("json")
}

impl World {
    async fn build(app: TestApp) -> Self {
        let mut body = concert_body(2, 4);
        let mut second = body["schedules"][0].clone();
        second["startsAt"] = json!(Utc::now() + TimeDelta::days(31));
        body["schedules"]
            .as_array_mut()
            .expect("schedules")
            .push(second);
        let concert = app.create_concert(&body).await;
        let schedule = concert["schedules"][0]["id"].clone();
        let seats = crate::sales::seat_ids(&app, &schedule).await;
        let other_schedule_seat =
            crate::sales::seat_ids(&app, &concert["schedules"][1]["id"]).await[0];
        let token = app.admitted_token(OWNER, &concert["id"]).await;
        let owner = app.user_token(OWNER);
        created(
            call(
                &app,
                &Method::POST,
                "/v1/wallet/charges",
                Some(&owner),
                None,
                Some(&json!({"amount": 1_000_000})),
            )
            .await,
            "charge",
        )
        .await;
        let mut holds = Vec::new();
        for seat in &seats[..2] {
            let hold = call(
                &app,
                &Method::POST,
                "/v1/reservations",
                Some(&owner),
                Some(&token),
                Some(&json!({"scheduleId": schedule, "seatId": seat})),
            )
            .await;
            holds.push(created(hold, "hold").await["id"].as_i64().expect("id"));
        }
        let paid = call(
            &app,
            &Method::POST,
            "/v1/payments",
            Some(&owner),
            Some(&token),
            Some(&json!({"reservationId": holds[1]})),
        )
        .await;
        let payment = created(paid, "pay").await["id"].as_i64().expect("id");
        eventually("the payment to be confirmed", WAIT, || async {
            let resp = call(
                &app,
                &Method::GET,
                &format!("/v1/payments/{payment}"),
                Some(&owner),
                None,
                None,
            )
            .await;
            (resp.json::<Value>().await.ok()?["status"] == "confirmed").then_some(())
        })
        .await;

        let (used, _) = app.create_coupon(10, TimeDelta::days(1)).await;
        let used_coupon = app.won_coupon(used, OWNER).await;
        let job = app.redeem(OWNER, used_coupon).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        let (coupon, vendor) = app.create_coupon(10, TimeDelta::days(1)).await;
        let user_coupon = app.won_coupon(coupon, OWNER).await;
        let probe_queue = app.admitted_token(PROBE, &concert["id"]).await;
        let probe_hold = call(
            &app,
            &Method::POST,
            "/v1/reservations",
            Some(&app.user_token(PROBE)),
            Some(&probe_queue),
            Some(&json!({"scheduleId": schedule, "seatId": seats[2]})),
        )
        .await;
        let probe_reservation = created(probe_hold, "probe hold").await["id"]
            .as_i64()
            .expect("id");
        World {
            probe_queue,
            probe_reservation,
            concert: concert["id"].clone(),
            schedule,
            seats,
            other_schedule_seat,
            reservation: holds[0],
            paid_reservation: holds[1],
            payment,
            coupon,
            vendor,
            user_coupon,
            job: job["jobId"].as_str().expect("job id").to_owned(),
            app,
        }
    }

    /// Every route the server registers, with a valid body where it takes one.
    fn routes(&self) -> Vec<Route> {
        use Guard::*;
        let (concert, schedule) = (&self.concert, &self.schedule);
        let (reservation, payment) = (self.reservation, self.payment);
        let (coupon, user_coupon, job) = (self.coupon, self.user_coupon, &self.job);
        let now = Utc::now();
        vec![
            route(Method::GET, "/health/live", "/health/live".into(), Public),
            route(Method::GET, "/health/ready", "/health/ready".into(), Public),
            route(Method::GET, "/v1/concerts", "/v1/concerts".into(), Public),
            route(
                Method::GET,
                "/v1/concerts/{id}/schedules",
                format!("/v1/concerts/{concert}/schedules"),
                Public,
            ),
            route(
                Method::POST,
                "/v1/admin/concerts",
                "/v1/admin/concerts".into(),
                Admin,
            )
            .with_body(concert_body(1, 1)),
            route(
                Method::GET,
                "/v1/schedules/{id}/seats",
                format!("/v1/schedules/{schedule}/seats"),
                UserQueue,
            ),
            route(
                Method::POST,
                "/v1/queue/tokens",
                "/v1/queue/tokens".into(),
                User,
            )
            .with_body(json!({ "concertId": concert })),
            route(
                Method::GET,
                "/v1/queue/status",
                "/v1/queue/status".into(),
                Queue,
            ),
            route(
                Method::DELETE,
                "/v1/queue/tokens/current",
                "/v1/queue/tokens/current".into(),
                Queue,
            ),
            route(
                Method::GET,
                "/v1/admin/queue",
                "/v1/admin/queue".into(),
                Admin,
            ),
            route(
                Method::PUT,
                "/v1/admin/queue/{concert_id}/settings",
                format!("/v1/admin/queue/{concert}/settings"),
                Admin,
            )
            .with_body(json!({"admitPerSecond": 1, "maxActive": 1, "activeTtlSeconds": 60, "heartbeatGraceSeconds": 60})),
            route(
                Method::POST,
                "/v1/reservations",
                "/v1/reservations".into(),
                UserQueue,
            )
            .with_body(json!({"scheduleId": schedule, "seatId": self.seats[3]})),
            route(
                Method::GET,
                "/v1/reservations/{id}",
                format!("/v1/reservations/{reservation}"),
                User,
            ),
            route(
                Method::DELETE,
                "/v1/reservations/{id}",
                format!("/v1/reservations/{reservation}"),
                User,
            ),
            route(
                Method::POST,
                "/v1/schedules/{id}/waitlist",
                format!("/v1/schedules/{schedule}/waitlist"),
                User,
            ),
            route(
                Method::GET,
                "/v1/schedules/{id}/waitlist",
                format!("/v1/schedules/{schedule}/waitlist"),
                User,
            ),
            route(
                Method::DELETE,
                "/v1/schedules/{id}/waitlist",
                format!("/v1/schedules/{schedule}/waitlist"),
                User,
            ),
            route(Method::GET, "/v1/wallet", "/v1/wallet".into(), User),
            route(
                Method::POST,
                "/v1/wallet/charges",
                "/v1/wallet/charges".into(),
                User,
            )
            .with_body(json!({"amount": 100})),
            route(
                Method::GET,
                "/v1/wallet/transactions",
                "/v1/wallet/transactions".into(),
                User,
            ),
            route(Method::POST, "/v1/payments", "/v1/payments".into(), UserQueue)
                .with_body(json!({ "reservationId": self.probe_reservation })),
            route(
                Method::GET,
                "/v1/payments/{id}",
                format!("/v1/payments/{payment}"),
                User,
            ),
            route(
                Method::POST,
                "/v1/payments/{id}/refunds",
                format!("/v1/payments/{payment}/refunds"),
                User,
            ),
            route(
                Method::GET,
                "/v1/users/me/payments",
                "/v1/users/me/payments".into(),
                User,
            ),
            route(
                Method::GET,
                "/v1/tickets/keys",
                "/v1/tickets/keys".into(),
                Public,
            ),
            route(
                Method::GET,
                "/v1/users/me/tickets",
                "/v1/users/me/tickets".into(),
                User,
            ),
            route(Method::GET, "/v1/tickets/{id}", "/v1/tickets/1".into(), User),
            route(
                Method::GET,
                "/v1/tickets/{id}/qr",
                "/v1/tickets/1/qr".into(),
                User,
            ),
            route(
                Method::POST,
                "/v1/tickets/{id}/transfer",
                "/v1/tickets/1/transfer".into(),
                User,
            )
            .with_body(json!({"toUser": 2})),
            route(
                Method::POST,
                "/v1/tickets/{id}/refunds",
                "/v1/tickets/1/refunds".into(),
                User,
            ),
            route(Method::POST, "/v1/checkins", "/v1/checkins".into(), Scanner)
                .with_body(json!({"code": "x.y.z", "gate": "north"})),
            route(
                Method::POST,
                "/v1/checkins/batch",
                "/v1/checkins/batch".into(),
                Scanner,
            )
            .with_body(json!({"scans": [
                {"code": "x.y.z", "gate": "north", "scannedAt": "2026-01-01T00:00:00Z"}
            ]})),
            route(
                Method::GET,
                "/v1/schedules/{id}/checkin-list",
                format!("/v1/schedules/{schedule}/checkin-list"),
                Scanner,
            ),
            route(
                Method::GET,
                "/v1/users/me/reservations",
                "/v1/users/me/reservations".into(),
                User,
            ),
            route(Method::POST, "/v1/orders", "/v1/orders".into(), UserQueue)
                .with_body(json!({"scheduleId": schedule, "seatIds": [self.seats[3]]})),
            route(Method::GET, "/v1/orders/{id}", "/v1/orders/1".into(), User),
            route(
                Method::GET,
                "/v1/users/me/orders",
                "/v1/users/me/orders".into(),
                User,
            ),
            route(
                Method::GET,
                "/v1/admin/compensations",
                "/v1/admin/compensations".into(),
                Admin,
            ),
            route(
                Method::POST,
                "/v1/admin/compensations/{id}/retry",
                "/v1/admin/compensations/1/retry".into(),
                Admin,
            ),
            route(
                Method::POST,
                "/v1/admin/schedules/{id}/cancel",
                "/v1/admin/schedules/1/cancel".into(),
                Admin,
            ),
            route(
                Method::GET,
                "/v1/admin/schedules/{id}",
                "/v1/admin/schedules/1".into(),
                Admin,
            ),
            route(
                Method::GET,
                "/v1/admin/schedules/{id}/door",
                "/v1/admin/schedules/1/door".into(),
                Admin,
            ),
            route(
                Method::GET,
                "/v1/admin/schedules",
                "/v1/admin/schedules".into(),
                Admin,
            ),
            route(
                Method::GET,
                "/v1/users/me/notifications",
                "/v1/users/me/notifications".into(),
                User,
            ),
            route(
                Method::GET,
                "/v1/admin/alerts",
                "/v1/admin/alerts".into(),
                Admin,
            ),
            route(
                Method::POST,
                "/v1/admin/alerts/{id}/ack",
                "/v1/admin/alerts/1/ack".into(),
                Admin,
            ),
            route(
                Method::GET,
                "/v1/admin/events",
                "/v1/admin/events".into(),
                Admin,
            ),
            route(
                Method::GET,
                "/v1/admin/dead-letters",
                "/v1/admin/dead-letters".into(),
                Admin,
            ),
            route(
                Method::POST,
                "/v1/admin/dead-letters/{id}/replay",
                "/v1/admin/dead-letters/1/replay".into(),
                Admin,
            ),
            route(
                Method::POST,
                "/v1/admin/vendors",
                "/v1/admin/vendors".into(),
                Admin,
            )
            .with_body(json!({"name": "Sneaky"})),
            route(
                Method::GET,
                "/v1/admin/vendors",
                "/v1/admin/vendors".into(),
                Admin,
            ),
            route(
                Method::POST,
                "/v1/admin/coupons",
                "/v1/admin/coupons".into(),
                Admin,
            )
            .with_body(json!({
                "name": "Sneaky", "discount": 100, "quantity": 5,
                "validFrom": now - TimeDelta::hours(1), "validUntil": now + TimeDelta::days(1),
                "vendorId": self.vendor,
            })),
            route(
                Method::GET,
                "/v1/admin/coupons",
                "/v1/admin/coupons".into(),
                Admin,
            ),
            route(
                Method::GET,
                "/v1/admin/coupons/{id}",
                format!("/v1/admin/coupons/{coupon}"),
                Admin,
            ),
            route(
                Method::POST,
                "/v1/admin/coupons/{id}/reconcile",
                format!("/v1/admin/coupons/{coupon}/reconcile"),
                Admin,
            ),
            route(
                Method::POST,
                "/v1/coupons/{id}/issue",
                format!("/v1/coupons/{coupon}/issue"),
                User,
            ),
            route(
                Method::GET,
                "/v1/users/me/coupons",
                "/v1/users/me/coupons".into(),
                User,
            ),
            route(
                Method::POST,
                "/v1/user-coupons/{id}/redemptions",
                format!("/v1/user-coupons/{user_coupon}/redemptions"),
                User,
            ),
            route(
                Method::GET,
                "/v1/coupon-jobs/{job_id}",
                format!("/v1/coupon-jobs/{job}"),
                User,
            ),
        ]
    }

    /// An admitted queue token of `user` for the world's concert.
    async fn queue_token(&self, user: i64) -> String {
        self.app.admitted_token(user, &self.concert).await
    }

    fn queue_pass(&self, user: i64) -> QueuePass {
        QueuePass {
            token_id: Uuid::new_v4(),
            user: UserId(user),
            concert: ConcertId(self.concert.as_i64().expect("concert id")),
        }
    }
}

/// Identity tokens that must all be refused with 401, each claiming to be
/// `user` with the admin role so the role is never the reason.
fn bad_bearers(user: i64, queue_token: &str) -> Vec<(&'static str, String)> {
    let exp = (Utc::now() + TimeDelta::hours(1)).timestamp();
    let admin = Identity {
        user_id: UserId(user),
        role: Role::Admin,
    };
    let codec = JwtCodec::new(TEST_JWT_SECRET.as_bytes());
    let valid = codec
        .issue(admin, Validity::new(Utc::now(), TimeDelta::hours(1)))
        .expect("token");
    let payload = valid.split('.').nth(1).expect("a JWT payload");
    vec![
        ("garbage", "not-a-jwt".to_owned()),
        (
            "bad signature",
            sign(
                json!({"sub": user.to_string(), "role": "admin", "exp": exp}),
                "someone-elses-secret",
            ),
        ),
        (
            "expired",
            codec
                .issue(
                    admin,
                    Validity::new(Utc::now() - TimeDelta::hours(2), TimeDelta::hours(1)),
                )
                .expect("token"),
        ),
        (
            "alg none",
            // {"alg":"none","typ":"JWT"}, a valid payload, no signature.
            format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}."),
        ),
        ("a queue token", queue_token.to_owned()),
    ]
}

/// Queue tokens that must all be refused with 401.
fn bad_queue_tokens(world: &World, user: i64) -> Vec<(&'static str, String)> {
    let pass = world.queue_pass(user);
    vec![
        ("garbage", "x.y.z".to_owned()),
        (
            "bad signature",
            JwtQueueTokens::new(b"someone-elses-secret")
                .issue(&pass, Validity::new(Utc::now(), TimeDelta::hours(1)))
                .expect("token"),
        ),
        (
            "expired",
            JwtQueueTokens::new(TEST_QUEUE_SECRET.as_bytes())
                .issue(
                    &pass,
                    Validity::new(Utc::now() - TimeDelta::hours(2), TimeDelta::hours(1)),
                )
                .expect("token"),
        ),
        (
            // Queue tokens have a key of their own, never the identity secret.
            "signed with the identity secret",
            JwtQueueTokens::new(TEST_JWT_SECRET.as_bytes())
                .issue(&pass, Validity::new(Utc::now(), TimeDelta::hours(1)))
                .expect("token"),
        ),
        ("an identity token", world.app.user_token(user)),
    ]
}

async fn assert_unauthorized(resp: Response, what: &str) {
    assert_eq!(
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer"),
        "{what}"
    );
    let body = assert_problem(resp, 401, "unauthorized").await;
    assert!(body.get("id").is_none(), "{what}: {body}");
}

/// What the served OpenAPI document says each operation needs.
fn documented_guards(spec: &Value) -> Vec<String> {
    let mut out: Vec<String> = spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .expect("operations")
                .iter()
                .map(move |(method, op)| {
                    let schemes: Vec<&str> = op["security"]
                        .as_array()
                        .map(|all| {
                            all.iter()
                                .flat_map(|s| s.as_object().expect("scheme").keys())
                                .map(String::as_str)
                                .collect()
                        })
                        .unwrap_or_default();
                    let guard = match schemes.as_slice() {
                        [] => Guard::Public,
                        ["userToken"] => Guard::User,
                        ["userToken", "queueToken"] => Guard::UserQueue,
                        ["queueToken"] => Guard::Queue,
                        ["adminToken"] => Guard::Admin,
                        ["scannerToken"] => Guard::Scanner,
                        other => panic!("{method} {path}: unexpected security {other:?}"),
                    };
                    format!("{} {path} {guard:?}", method.to_uppercase())
                })
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn every_route_refuses_missing_forged_and_expired_credentials_and_the_wrong_role() {
    let world = World::build(spawn_app().await).await;
    let app = &world.app;
    let mut table: Vec<String> = world
        .routes()
        .iter()
        .map(|r| format!("{} {} {:?}", r.method, r.template, r.guard))
        .collect();
    table.sort();
    assert_eq!(
        table,
        documented_guards(&app.get_json("/openapi.json").await),
        "the matrix must list every operation with the guard its document names"
    );
    let probe_queue = world.probe_queue.clone();
    let probe = app.user_token(PROBE);
    let before = snapshot(app).await;
    for r in world.routes() {
        let what = |case: &str| format!("{} {} with {case}", r.method, r.path);
        let body = r.body.as_ref();
        let send = |bearer: Option<String>, queue: Option<String>| {
            let (method, path) = (r.method.clone(), r.path.clone());
            async move {
                call(
                    app,
                    &method,
                    &path,
                    bearer.as_deref(),
                    queue.as_deref(),
                    body,
                )
                .await
            }
        };
        match r.guard {
            Guard::Public => {
                let resp = send(None, None).await;
                assert_eq!(resp.status(), 200, "{}", what("no token"));
            }
            Guard::User | Guard::Admin | Guard::Scanner | Guard::UserQueue => {
                let queue = (r.guard == Guard::UserQueue).then(|| probe_queue.clone());
                assert_unauthorized(send(None, queue.clone()).await, &what("no token")).await;
                for (case, token) in bad_bearers(PROBE, &probe_queue) {
                    assert_unauthorized(send(Some(token), queue.clone()).await, &what(case)).await;
                }
                if matches!(r.guard, Guard::Admin | Guard::Scanner) {
                    let resp = send(Some(probe.clone()), None).await;
                    assert_problem(resp, 403, "forbidden").await;
                }
                if r.guard == Guard::UserQueue {
                    let resp = send(Some(probe.clone()), None).await;
                    assert_unauthorized(resp, &what("no queue token")).await;
                    for (case, token) in bad_queue_tokens(&world, PROBE) {
                        let resp = send(Some(probe.clone()), Some(token)).await;
                        assert_unauthorized(resp, &what(case)).await;
                    }
                }
            }
            Guard::Queue => {
                assert_unauthorized(send(None, None).await, &what("no token")).await;
                for (case, token) in bad_queue_tokens(&world, PROBE) {
                    assert_unauthorized(send(None, Some(token)).await, &what(case)).await;
                }
            }
        }
    }
    // The probe's own queue token is untouched by all of that.
    assert_eq!(app.queue_status(&probe_queue).await["status"], "active");
    assert_eq!(
        changes(&before, &snapshot(app).await),
        [],
        "a refused request wrote"
    );
}

#[tokio::test]
async fn routes_outside_the_api_document_are_public() {
    let app = spawn_app().await;
    for path in ["/openapi.json", "/docs", "/metrics", "/demo/coupon"] {
        let resp = app.get(path).send().await.unwrap();
        assert_eq!(resp.status(), 200, "GET {path}");
    }
}

/// A refusal that says no more than "not found": only the problem fields.
async fn assert_bare_not_found(resp: Response, what: &str) {
    let body = assert_problem(resp, 404, "not_found").await;
    let mut keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["code", "detail", "status", "title", "type"],
        "{what}: {body}"
    );
}

#[tokio::test]
async fn another_users_resources_are_not_found_and_stay_untouched() {
    let world = World::build(spawn_app().await).await;
    let app = &world.app;
    let stranger_queue = world.queue_token(STRANGER).await;
    let before = snapshot(app).await;
    let unknown_job = Uuid::new_v4();
    // Each row: a request for the owner's resource, and the same request
    // for one that does not exist; both must read the same.
    let cases = [
        (
            Method::GET,
            format!("/v1/reservations/{}", world.reservation),
            "/v1/reservations/424242".to_owned(),
        ),
        (
            Method::DELETE,
            format!("/v1/reservations/{}", world.reservation),
            "/v1/reservations/424242".to_owned(),
        ),
        (
            Method::GET,
            format!("/v1/reservations/{}", world.paid_reservation),
            "/v1/reservations/424243".to_owned(),
        ),
        (
            Method::GET,
            format!("/v1/payments/{}", world.payment),
            "/v1/payments/424242".to_owned(),
        ),
        (
            Method::POST,
            format!("/v1/payments/{}/refunds", world.payment),
            "/v1/payments/424242/refunds".to_owned(),
        ),
        (
            Method::GET,
            format!("/v1/coupon-jobs/{}", world.job),
            format!("/v1/coupon-jobs/{unknown_job}"),
        ),
    ];
    // Admins are users on these routes too: no peeking at others' things.
    for user in [STRANGER, 9_000] {
        let token = if user == 9_000 {
            app.admin_token()
        } else {
            app.user_token(user)
        };
        for (method, theirs, unknown) in &cases {
            let what = format!("user {user}: {method} {theirs}");
            assert_bare_not_found(
                call(app, method, theirs, Some(&token), None, None).await,
                &what,
            )
            .await;
            assert_bare_not_found(
                call(app, method, unknown, Some(&token), None, None).await,
                &what,
            )
            .await;
        }
    }
    for reservation in [world.reservation, world.paid_reservation] {
        let resp = call(
            app,
            &Method::POST,
            "/v1/payments",
            Some(&app.user_token(STRANGER)),
            Some(&stranger_queue),
            Some(&json!({ "reservationId": reservation })),
        )
        .await;
        assert_bare_not_found(resp, "paying for another user's hold").await;
    }

    // Redeeming someone else's coupon is accepted as a job that fails the
    // same way as for a coupon that does not exist.
    for user_coupon in [world.user_coupon, 987_654] {
        let resp = call(
            app,
            &Method::POST,
            &format!("/v1/user-coupons/{user_coupon}/redemptions"),
            Some(&app.user_token(STRANGER)),
            None,
            None,
        )
        .await;
        assert_eq!(resp.status(), 202);
        let accepted: Value = resp.json().await.unwrap();
        let job = app
            .finished_job(STRANGER, accepted["jobId"].as_str().unwrap())
            .await;
        assert_eq!(
            (job["status"].as_str(), job["reason"].as_str()),
            (Some("failed"), Some("not_your_coupon")),
            "{job}"
        );
    }
    let owner_sees = |path: String| async move {
        let resp = call(
            app,
            &Method::GET,
            &path,
            Some(&app.user_token(OWNER)),
            None,
            None,
        )
        .await;
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json::<Value>().await.unwrap()
    };
    assert_eq!(
        owner_sees(format!("/v1/reservations/{}", world.reservation)).await["status"],
        "held"
    );
    let coupons = owner_sees("/v1/users/me/coupons".into()).await;
    let unused = coupons["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == world.user_coupon)
        .expect("the owner's coupon");
    assert_eq!(unused["status"], "issued");

    // The stranger's own views show nothing of the owner's.
    let stranger = app.user_token(STRANGER);
    for (path, empty) in [
        ("/v1/wallet", json!({"balance": 0})),
        ("/v1/users/me/coupons", json!({"items": []})),
    ] {
        let resp = call(app, &Method::GET, path, Some(&stranger), None, None).await;
        assert_eq!(resp.json::<Value>().await.unwrap(), empty, "GET {path}");
    }
    for path in ["/v1/users/me/reservations", "/v1/users/me/payments"] {
        let resp = call(app, &Method::GET, path, Some(&stranger), None, None).await;
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"items": []}),
            "GET {path}"
        );
    }
    for path in ["/v1/wallet/transactions", "/v1/users/me/notifications"] {
        let resp = call(app, &Method::GET, path, Some(&stranger), None, None).await;
        let page: Value = resp.json().await.unwrap();
        let items = page["items"].as_array().expect("items");
        // The failed redemption jobs are the stranger's own.
        assert!(
            items.iter().all(|n| !n.to_string().contains("150000")),
            "GET {path}: {page}"
        );
        if path == "/v1/wallet/transactions" {
            assert!(items.is_empty(), "{page}");
        }
    }
    // Only the two failed jobs above were written (each with its
    // requested and finished events).
    assert_eq!(
        changes(&before, &snapshot(app).await),
        [("coupon_jobs", 2), ("outbox", 4)],
        "another user's request changed something"
    );
}

#[tokio::test]
async fn queue_guarded_routes_refuse_other_users_other_concerts_and_waiting_tokens() {
    const WAITER: i64 = 3;
    const HOLDER: i64 = 4;
    let world = World::build(spawn_app().await).await;
    let app = &world.app;
    let other = app.create_concert(&concert_body(1, 1)).await;
    // A room that admits one buyer at a time, so a second one waits.
    let small = app.create_concert(&concert_body(1, 3)).await;
    let small_schedule = small["schedules"][0]["id"].clone();
    let small_seats = crate::sales::seat_ids(app, &small_schedule).await;
    let settings = json!({"admitPerSecond": 100, "maxActive": 1, "activeTtlSeconds": 600, "heartbeatGraceSeconds": 600});
    let resp = app
        .client
        .put(app.url(&format!("/v1/admin/queue/{}/settings", small["id"])))
        .bearer_auth(app.admin_token())
        .json(&settings)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The waiter holds a seat while admitted, gives the turn up, and queues
    // again behind the holder.
    let given_up = app.admitted_token(WAITER, &small["id"]).await;
    let hold = call(
        app,
        &Method::POST,
        "/v1/reservations",
        Some(&app.user_token(WAITER)),
        Some(&given_up),
        Some(&json!({"scheduleId": small_schedule, "seatId": small_seats[0]})),
    )
    .await;
    let waiter_reservation = created(hold, "waiter hold").await["id"].clone();
    let left = call(
        app,
        &Method::DELETE,
        "/v1/queue/tokens/current",
        None,
        Some(&given_up),
        None,
    )
    .await;
    assert_eq!(left.status(), 204);
    app.admitted_token(HOLDER, &small["id"]).await;
    let waiting = app.enter_queue(WAITER, &small["id"]).await;
    assert_eq!(waiting["status"], "waiting", "{waiting}");
    let waiting = waiting["token"].as_str().unwrap().to_owned();

    let stranger_queue = world.queue_token(STRANGER).await;
    let probe_other_concert = app.admitted_token(PROBE, &other["id"]).await;
    // Enough points that only the queue guard can refuse a payment.
    for user in [PROBE, WAITER] {
        let resp = call(
            app,
            &Method::POST,
            "/v1/wallet/charges",
            Some(&app.user_token(user)),
            None,
            Some(&json!({"amount": 1_000_000})),
        )
        .await;
        assert_eq!(resp.status(), 201);
    }
    let before = snapshot(app).await;
    let mine = (
        world.schedule.clone(),
        world.seats[3],
        json!(world.probe_reservation),
    );
    let waiters = (small_schedule.clone(), small_seats[1], waiter_reservation);
    let cases = [
        (
            "another user's token",
            PROBE,
            &stranger_queue,
            "forbidden",
            &mine,
        ),
        (
            "another concert's token",
            PROBE,
            &probe_other_concert,
            "forbidden",
            &mine,
        ),
        (
            "a waiting token",
            WAITER,
            &waiting,
            "queue_not_admitted",
            &waiters,
        ),
        (
            "a token given up",
            WAITER,
            &given_up,
            "queue_not_admitted",
            &waiters,
        ),
    ];
    for (what, user, queue, code, (schedule, seat, reservation)) in cases {
        let bearer = app.user_token(user);
        let requests = [
            (Method::GET, format!("/v1/schedules/{schedule}/seats"), None),
            (
                Method::POST,
                "/v1/reservations".to_owned(),
                Some(json!({"scheduleId": schedule, "seatId": seat})),
            ),
            (
                Method::POST,
                "/v1/payments".to_owned(),
                Some(json!({ "reservationId": reservation })),
            ),
        ];
        for (method, path, body) in requests {
            let resp = call(
                app,
                &method,
                &path,
                Some(&bearer),
                Some(queue),
                body.as_ref(),
            )
            .await;
            let problem = assert_problem(resp, 403, code).await;
            assert!(
                problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "{method} {path} with {what}"
            );
        }
    }
    assert_eq!(app.queue_status(&waiting).await["status"], "waiting");
    assert_eq!(
        changes(&before, &snapshot(app).await),
        [],
        "a refused buyer changed something"
    );
}

impl World {
    /// Valid credentials for `guard`, all of them `PROBE`'s (or the admin's).
    fn credentials(&self, guard: Guard) -> (Option<String>, Option<String>) {
        let user = || Some(self.app.user_token(PROBE));
        match guard {
            Guard::Public => (None, None),
            Guard::User => (user(), None),
            Guard::UserQueue => (user(), Some(self.probe_queue.clone())),
            Guard::Queue => (None, Some(self.probe_queue.clone())),
            Guard::Admin => (Some(self.app.admin_token()), None),
            Guard::Scanner => (Some(self.app.token(PROBE, Role::Staff)), None),
        }
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused_on_every_route_that_writes() {
    const LIMIT: usize = 2048;
    let world = World::build(spawn_app_with(|s| s.body_limit_bytes = LIMIT).await).await;
    let app = &world.app;
    let before = snapshot(app).await;
    let writes: Vec<Route> = world
        .routes()
        .into_iter()
        .filter(|r| r.method != Method::GET)
        .collect();
    assert_eq!(writes.len(), 25);
    for r in writes {
        // Valid but for its size: an unknown field is otherwise ignored.
        let mut body = r.body.clone().unwrap_or_else(|| json!({}));
        // An upload of offline scans may be larger than other bodies.
        let limit = match r.path.as_str() {
            "/v1/checkins/batch" => BATCH_BODY_LIMIT,
            _ => LIMIT,
        };
        body["padding"] = json!("x".repeat(limit));
        let bytes = serde_json::to_vec(&body).unwrap();
        let credentials = world.credentials(r.guard);
        let json = Some("application/json");
        let announced = call_raw(app, &r.method, &r.path, &credentials, json, bytes.clone()).await;
        assert_problem(announced, 413, "payload_too_large").await;
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            bytes.chunks(256).map(|c| Ok(c.to_vec())).collect();
        let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
        let chunked = call_raw(app, &r.method, &r.path, &credentials, json, streamed).await;
        assert_problem(chunked, 413, "payload_too_large").await;
    }
    assert_eq!(
        app.queue_status(&world.probe_queue).await["status"],
        "active"
    );
    assert_eq!(
        changes(&before, &snapshot(app).await),
        [],
        "an oversized request wrote"
    );
}

/// The same body with one field of the wrong JSON type, missing, or null.
fn spoiled(body: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (key, value) in body.as_object().expect("an object body") {
        let wrong = match value {
            Value::String(_) => json!(42),
            Value::Number(_) => json!("42"),
            Value::Array(_) => json!("x"),
            _ => json!(1),
        };
        for (how, replacement) in [
            ("wrong type", Some(wrong)),
            ("null", Some(Value::Null)),
            ("an object", Some(json!({"$gt": ""}))),
            ("missing", None),
        ] {
            let mut spoilt = body.clone();
            match replacement {
                Some(v) => spoilt[key] = v,
                None => {
                    spoilt.as_object_mut().unwrap().remove(key);
                }
            }
            out.push((format!("{key}: {how}"), spoilt));
        }
    }
    out
}

#[tokio::test]
async fn malformed_bodies_are_validation_failures_that_change_nothing() {
    let world = World::build(spawn_app().await).await;
    let app = &world.app;
    let before = snapshot(app).await;
    let with_bodies: Vec<Route> = world
        .routes()
        .into_iter()
        .filter(|r| r.body.is_some())
        .collect();
    assert_eq!(with_bodies.len(), 12);
    let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let not_json: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated", b"{\"amount\": ".to_vec()),
        ("not JSON", b"hello".to_vec()),
        ("an array", b"[]".to_vec()),
        ("null", b"null".to_vec()),
        ("a string", b"\"{}\"".to_vec()),
        ("a number", b"42".to_vec()),
        ("an empty object", b"{}".to_vec()),
        ("deeply nested", deep.into_bytes()),
        ("invalid UTF-8", b"{\"name\": \"\xff\xfe\"}".to_vec()),
        ("trailing garbage", b"{} {}".to_vec()),
    ];
    let json = Some("application/json");
    for r in &with_bodies {
        let credentials = world.credentials(r.guard);
        for (what, bytes) in &not_json {
            let resp = call_raw(app, &r.method, &r.path, &credentials, json, bytes.clone()).await;
            assert_eq!(resp.status(), 400, "{} {} with {what}", r.method, r.path);
            assert_problem(resp, 400, "validation_failed").await;
        }
        for (what, body) in spoiled(r.body.as_ref().unwrap()) {
            let resp = call_raw(
                app,
                &r.method,
                &r.path,
                &credentials,
                json,
                body.to_string(),
            )
            .await;
            let text = format!("{} {} with {what}", r.method, r.path);
            assert_eq!(resp.status(), 400, "{text}");
            assert_problem(resp, 400, "validation_failed").await;
        }
        let valid = r.body.as_ref().unwrap().to_string();
        for content_type in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            None,
        ] {
            let resp = call_raw(
                app,
                &r.method,
                &r.path,
                &credentials,
                content_type,
                valid.clone(),
            )
            .await;
            assert_problem(resp, 415, "unsupported_media_type").await;
        }
    }
    assert_eq!(
        changes(&before, &snapshot(app).await),
        [],
        "a malformed request wrote"
    );
}

/// One hostile request and the problem it must get.
struct Hostile {
    method: Method,
    path: String,
    guard: Guard,
    body: Option<String>,
    status: u16,
    code: &'static str,
}

fn hostile(method: Method, path: String, guard: Guard, status: u16, code: &'static str) -> Hostile {
    Hostile {
        method,
        path,
        guard,
        body: None,
        status,
        code,
    }
}

/// `template` with `@` replaced by each raw JSON value.
fn bodies<'a>(template: &'a str, values: &'a [&'a str]) -> impl Iterator<Item = String> + 'a {
    values.iter().map(move |v| template.replace('@', v))
}

async fn assert_all_refused(world: &World, cases: Vec<Hostile>) {
    let app = &world.app;
    for case in cases {
        let credentials = world.credentials(case.guard);
        let content_type = case.body.as_ref().map(|_| "application/json");
        let resp = call_raw(
            app,
            &case.method,
            &case.path,
            &credentials,
            content_type,
            case.body.clone().unwrap_or_default(),
        )
        .await;
        let what = format!("{} {} {:?}", case.method, case.path, case.body);
        assert_eq!(resp.status(), case.status, "{what}");
        assert_problem(resp, case.status, case.code).await;
    }
}

#[tokio::test]
async fn hostile_amounts_are_refused_and_change_nothing() {
    let world = World::build(spawn_app().await).await;
    let app = &world.app;
    // One step below the wallet's ceiling.
    use sea_orm::ConnectionTrait;
    app.db
        .execute_unprepared(&format!(
            "INSERT INTO wallets (user_id, balance, updated_at) VALUES ({PROBE}, {}, CURRENT_TIMESTAMP)",
            boxoffice::kernel::Points::MAX - 5
        ))
        .await
        .expect("a nearly full wallet");
    let before = snapshot(app).await;
    let mut cases = Vec::new();
    let bad_request = |method: Method, path: &str, guard, body: String| Hostile {
        body: Some(body),
        ..hostile(method, path.to_owned(), guard, 400, "validation_failed")
    };
    let amounts = [
        "-1",
        "0",
        "10000001",
        "10000000000000000000",
        I64_MAX,
        I64_MIN,
        TWO_POW_63,
        "1e19",
        "1e400",
        "100.5",
        "1.5e2",
        "\"100\"",
        "true",
        "[100]",
        "{\"value\": 100}",
    ];
    for body in bodies("{\"amount\": @}", &amounts) {
        cases.push(bad_request(
            Method::POST,
            "/v1/wallet/charges",
            Guard::User,
            body,
        ));
    }
    cases.push(Hostile {
        body: Some("{\"amount\": 10}".into()),
        ..hostile(
            Method::POST,
            "/v1/wallet/charges".into(),
            Guard::User,
            409,
            "balance_limit",
        )
    });

    let concert = concert_body(1, 1).to_string();
    let price = concert.replace("150000", "@");
    let seat_count = concert.replacen("\"count\":1", "\"count\":@", 1);
    assert_ne!(seat_count, concert);
    let big = [I64_MAX, TWO_POW_63, "1e400", "-1", "1.5", "1000000000001"];
    for body in bodies(&price, &big).chain(bodies(
        &seat_count,
        &["0", "20001", I64_MAX, TWO_POW_63, "-1"],
    )) {
        cases.push(bad_request(
            Method::POST,
            "/v1/admin/concerts",
            Guard::Admin,
            body,
        ));
    }

    let now = Utc::now();
    let coupon = |field: &str| {
        let mut body = json!({
            "name": "Hostile", "discount": 100, "quantity": 5,
            "validFrom": now - TimeDelta::hours(1), "validUntil": now + TimeDelta::days(1),
            "vendorId": world.vendor,
        });
        body[field] = json!("@");
        body.to_string().replace("\"@\"", "@")
    };
    for field in ["discount", "quantity", "vendorId"] {
        for body in bodies(
            &coupon(field),
            &["0", "-1", I64_MAX, TWO_POW_63, "1e400", "2.5"],
        ) {
            cases.push(bad_request(
                Method::POST,
                "/v1/admin/coupons",
                Guard::Admin,
                body,
            ));
        }
    }

    let settings_path = format!("/v1/admin/queue/{}/settings", world.concert);
    for field in [
        "admitPerSecond",
        "maxActive",
        "activeTtlSeconds",
        "heartbeatGraceSeconds",
    ] {
        let mut body = json!({"admitPerSecond": 10, "maxActive": 10, "activeTtlSeconds": 60, "heartbeatGraceSeconds": 60});
        body[field] = json!("@");
        let template = body.to_string().replace("\"@\"", "@");
        for body in bodies(&template, &["0", "-1", I64_MAX, TWO_POW_63, "1e400"]) {
            cases.push(bad_request(Method::PUT, &settings_path, Guard::Admin, body));
        }
    }
    assert_all_refused(&world, cases).await;

    // Idempotency keys the server must not store.
    for key in ["", "has space", &"k".repeat(129), "tab\there"] {
        let resp = app
            .post("/v1/wallet/charges")
            .bearer_auth(app.user_token(OWNER))
            .header("idempotency-key", key)
            .json(&json!({"amount": 100}))
            .send()
            .await
            .unwrap();
        assert_problem(resp, 400, "validation_failed").await;
    }
    assert_eq!(
        changes(&before, &snapshot(app).await),
        [],
        "a hostile amount changed something"
    );
}

#[tokio::test]
async fn unknown_and_out_of_range_ids_are_4xx_problems_that_change_nothing() {
    let world = World::build(spawn_app().await).await;
    let app = &world.app;
    let before = snapshot(app).await;
    let mut cases = Vec::new();
    let settings = json!({"admitPerSecond": 10, "maxActive": 10, "activeTtlSeconds": 60, "heartbeatGraceSeconds": 60}).to_string();
    let id_routes = [
        (Method::GET, "/v1/concerts/@/schedules", Guard::Public, None),
        (Method::GET, "/v1/schedules/@/seats", Guard::UserQueue, None),
        (
            Method::PUT,
            "/v1/admin/queue/@/settings",
            Guard::Admin,
            Some(settings),
        ),
        (Method::GET, "/v1/reservations/@", Guard::User, None),
        (Method::DELETE, "/v1/reservations/@", Guard::User, None),
        (Method::POST, "/v1/schedules/@/waitlist", Guard::User, None),
        (Method::GET, "/v1/schedules/@/waitlist", Guard::User, None),
        (
            Method::DELETE,
            "/v1/schedules/@/waitlist",
            Guard::User,
            None,
        ),
        (Method::GET, "/v1/payments/@", Guard::User, None),
        (
            Method::POST,
            "/v1/admin/compensations/@/retry",
            Guard::Admin,
            None,
        ),
        (Method::POST, "/v1/admin/alerts/@/ack", Guard::Admin, None),
        (
            Method::POST,
            "/v1/admin/dead-letters/@/replay",
            Guard::Admin,
            None,
        ),
        (Method::GET, "/v1/admin/coupons/@", Guard::Admin, None),
        (
            Method::POST,
            "/v1/admin/coupons/@/reconcile",
            Guard::Admin,
            None,
        ),
        (Method::POST, "/v1/coupons/@/issue", Guard::User, None),
        (
            Method::GET,
            "/v1/admin/schedules/@/door",
            Guard::Admin,
            None,
        ),
    ];
    for (method, template, guard, body) in &id_routes {
        for (id, status, code) in [
            ("0", 404, "not_found"),
            ("-1", 404, "not_found"),
            (I64_MAX, 404, "not_found"),
            (I64_MIN, 404, "not_found"),
            (TWO_POW_63, 400, "validation_failed"),
            ("18446744073709551616", 400, "validation_failed"),
            ("abc", 400, "validation_failed"),
            ("1.5", 400, "validation_failed"),
            ("1e3", 400, "validation_failed"),
            ("%20", 400, "validation_failed"),
        ] {
            cases.push(Hostile {
                body: body.clone(),
                ..hostile(
                    method.clone(),
                    template.replace('@', id),
                    *guard,
                    status,
                    code,
                )
            });
        }
    }
    // Redemption answers a job for any well-formed id; a malformed one is refused.
    for id in [TWO_POW_63, "abc"] {
        cases.push(hostile(
            Method::POST,
            format!("/v1/user-coupons/{id}/redemptions"),
            Guard::User,
            400,
            "validation_failed",
        ));
    }
    for (job, status, code) in [
        (Uuid::nil().to_string(), 404, "not_found"),
        (Uuid::new_v4().to_string(), 404, "not_found"),
        ("not-a-uuid".to_owned(), 400, "validation_failed"),
        ("1".to_owned(), 400, "validation_failed"),
    ] {
        cases.push(hostile(
            Method::GET,
            format!("/v1/coupon-jobs/{job}"),
            Guard::User,
            status,
            code,
        ));
    }

    // Ids inside bodies.
    let body_case = |method: Method, path: &str, guard, body: String, status, code| Hostile {
        body: Some(body),
        ..hostile(method, path.to_owned(), guard, status, code)
    };
    let missing = [("0", 404), ("-1", 404), (I64_MAX, 404), (TWO_POW_63, 400)];
    for (id, status) in missing {
        let code = if status == 404 {
            "not_found"
        } else {
            "validation_failed"
        };
        let body = format!("{{\"concertId\": {id}}}");
        cases.push(body_case(
            Method::POST,
            "/v1/queue/tokens",
            Guard::User,
            body,
            status,
            code,
        ));
        for body in [
            format!("{{\"scheduleId\": {}, \"seatId\": {id}}}", world.schedule),
            format!("{{\"scheduleId\": {id}, \"seatId\": {}}}", world.seats[3]),
        ] {
            cases.push(body_case(
                Method::POST,
                "/v1/reservations",
                Guard::UserQueue,
                body,
                status,
                code,
            ));
        }
        cases.push(body_case(
            Method::POST,
            "/v1/payments",
            Guard::UserQueue,
            format!("{{\"reservationId\": {id}}}"),
            status,
            code,
        ));
    }
    // A seat of the other schedule, asked for under this one.
    cases.push(body_case(
        Method::POST,
        "/v1/reservations",
        Guard::UserQueue,
        json!({"scheduleId": world.schedule, "seatId": world.other_schedule_seat}).to_string(),
        404,
        "not_found",
    ));
    // Hostile query parameters.
    for path in [
        "/v1/wallet/transactions?limit=0",
        "/v1/wallet/transactions?limit=101",
        "/v1/wallet/transactions?limit=-1",
        "/v1/wallet/transactions?limit=18446744073709551616",
        "/v1/wallet/transactions?cursor=abc",
        "/v1/wallet/transactions?cursor=9223372036854775808",
        "/v1/wallet/transactions?after=abc",
        "/v1/wallet/transactions?after=9223372036854775808",
        "/v1/users/me/notifications?after=abc",
        "/v1/users/me/notifications?limit=0",
        "/v1/users/me/reservations?after=abc",
        "/v1/users/me/reservations?limit=0",
        "/v1/users/me/payments?after=9223372036854775808",
        "/v1/users/me/payments?limit=101",
        "/v1/users/me/coupons?limit=0",
        "/v1/users/me/coupons?limit=201",
        "/v1/users/me/coupons?after=abc",
    ] {
        cases.push(hostile(
            Method::GET,
            path.to_owned(),
            Guard::User,
            400,
            "validation_failed",
        ));
    }
    for path in [
        "/v1/admin/compensations?limit=0",
        "/v1/admin/compensations?limit=501",
        "/v1/admin/compensations?after=abc",
        "/v1/admin/compensations?status=bogus",
        "/v1/admin/alerts?severity=bogus",
        "/v1/admin/alerts?acknowledged=maybe",
        "/v1/admin/alerts?limit=501",
        "/v1/admin/alerts?after=abc",
        "/v1/admin/dead-letters?limit=0",
        "/v1/admin/dead-letters?limit=501",
        "/v1/admin/dead-letters?after=abc",
        "/v1/admin/dead-letters?includeReplayed=maybe",
        "/v1/admin/queue?limit=0",
        "/v1/admin/queue?limit=201",
        "/v1/admin/queue?after=abc",
        "/v1/admin/vendors?limit=0",
        "/v1/admin/vendors?limit=201",
        "/v1/admin/vendors?after=1.5",
        "/v1/admin/coupons?limit=0",
        "/v1/admin/coupons?limit=201",
        "/v1/admin/coupons?after=abc",
    ] {
        cases.push(hostile(
            Method::GET,
            path.to_owned(),
            Guard::Admin,
            400,
            "validation_failed",
        ));
    }
    let schedules = format!("/v1/concerts/{}/schedules", world.concert);
    for path in [
        "/v1/concerts?limit=0".to_owned(),
        "/v1/concerts?limit=201".to_owned(),
        "/v1/concerts?limit=-1".to_owned(),
        "/v1/concerts?limit=2.5".to_owned(),
        "/v1/concerts?after=abc".to_owned(),
        format!("/v1/concerts?after={TWO_POW_63}"),
        format!("{schedules}?limit=0"),
        format!("{schedules}?limit=101"),
        format!("{schedules}?after=abc"),
        // Not a schedule of this concert.
        format!("{schedules}?after=999999"),
    ] {
        cases.push(hostile(
            Method::GET,
            path,
            Guard::Public,
            400,
            "validation_failed",
        ));
    }
    let seat_map = format!("/v1/schedules/{}/seats", world.schedule);
    for query in [
        "?limit=0".to_owned(),
        "?limit=1001".to_owned(),
        "?limit=-1".to_owned(),
        "?after=abc".to_owned(),
        "?status=bogus".to_owned(),
        "?status=".to_owned(),
        "?grade=".to_owned(),
        format!("?grade={}", "G".repeat(33)),
        // Seats that are not of this schedule: of the other one, and none at all.
        format!("?after={}", world.other_schedule_seat),
        "?after=999999".to_owned(),
    ] {
        cases.push(hostile(
            Method::GET,
            format!("{seat_map}{query}"),
            Guard::UserQueue,
            400,
            "validation_failed",
        ));
    }
    assert_all_refused(&world, cases).await;
    assert_eq!(
        changes(&before, &snapshot(app).await),
        [],
        "a request for an unknown id changed something"
    );
}

#[tokio::test]
async fn an_idempotency_key_the_server_cannot_read_is_refused_not_ignored() {
    let world = World::build(spawn_app().await).await;
    let app = &world.app;
    let before = snapshot(app).await;
    let unreadable = [&b"\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87"[..], b"key-\x80"];
    let routes = [
        (
            "/v1/wallet/charges".to_owned(),
            Guard::User,
            Some(json!({"amount": 100})),
        ),
        (
            "/v1/payments".to_owned(),
            Guard::UserQueue,
            Some(json!({ "reservationId": world.probe_reservation })),
        ),
        (
            format!("/v1/coupons/{}/issue", world.coupon),
            Guard::User,
            None,
        ),
        (
            format!("/v1/user-coupons/{}/redemptions", world.user_coupon),
            Guard::User,
            None,
        ),
    ];
    for (path, guard, body) in &routes {
        let (bearer, queue) = world.credentials(*guard);
        let send = |keys: Vec<reqwest::header::HeaderValue>| {
            let mut req = app.post(path).bearer_auth(bearer.as_deref().unwrap());
            if let Some(queue) = &queue {
                req = req.header("x-queue-token", queue);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            for key in keys {
                req = req.header("idempotency-key", key);
            }
            req.send()
        };
        // Sent twice, as a retry would be: neither may run unguarded.
        for key in unreadable {
            for _ in 0..2 {
                let value = reqwest::header::HeaderValue::from_bytes(key).unwrap();
                let resp = send(vec![value]).await.unwrap();
                assert_eq!(resp.status(), 400, "POST {path} with key {key:?}");
                assert_problem(resp, 400, "validation_failed").await;
            }
        }
        let two = ["first", "second"].map(reqwest::header::HeaderValue::from_static);
        let resp = send(two.to_vec()).await.unwrap();
        assert_eq!(resp.status(), 400, "POST {path} with two keys");
        assert_problem(resp, 400, "validation_failed").await;
    }
    assert_eq!(
        changes(&before, &snapshot(app).await),
        [],
        "a request with an unreadable key ran"
    );
}
