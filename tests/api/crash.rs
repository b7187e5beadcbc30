//! Crash recovery: the real `boxoffice` binary is killed with SIGKILL in
//! the middle of mixed traffic (charge, enter, hold, pay, claim and redeem
//! coupons), then started again on the same database (and Redis in the
//! PostgreSQL run). Afterwards no event is lost or applied twice, the money
//! adds up, coupons never exceed their quantity and Redis agrees with the
//! database, and every payment has exactly one receipt.

use std::{
    collections::HashSet,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use boxoffice::auth::domain::Role;
use chrono::TimeDelta;
use futures::future::join_all;
use reqwest::Client;
use sea_orm::Database;
use serde_json::{Value, json};

use crate::{
    helpers::{
        Backend, TEST_JWT_SECRET, TEST_QUEUE_SECRET, backend, column, concert_body, count,
        eventually, fresh_database_url, outbox_drained, redis_url,
    },
    sales::assert_ledger_invariants,
};

const BIN: &str = env!("CARGO_BIN_EXE_boxoffice");
pub(crate) const WAIT: Duration = Duration::from_secs(60);
const SEATS: i64 = 40;
/// The user id that stands for "an admin" in `Shopper` calls.
pub(crate) const ADMIN: i64 = 0;
const COUPONS: i64 = 30;

/// The server as an operator runs it, on a fixed port so clients find it
/// again after the restart.
pub(crate) struct Server {
    args: Vec<String>,
    child: Option<Child>,
    pub(crate) base: String,
    /// The server's log (warnings and errors of every run), next to its
    /// data-platform sink: what a failed test prints.
    pub(crate) log: PathBuf,
    /// More environment for the process (e.g. `BOXOFFICE_LOG`).
    pub(crate) env: Vec<(&'static str, String)>,
}

impl Server {
    /// The Redis of this run: the standalone one on PostgreSQL, none
    /// (in-process adapters) on SQLite.
    pub(crate) fn new(dir: &Path, database_url: &str) -> Self {
        let redis = if backend() == Backend::Postgres {
            vec!["--redis-url".to_owned(), redis_url()]
        } else {
            Vec::new()
        };
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Self::with(&dir.join("data-platform"), database_url, &suffix, &redis)
    }

    /// A server writing its data-platform lines to `sink`, on the database
    /// and Redis arguments given, its Redis keys and streams named after
    /// `shared`: servers given the same `shared` are one deployment.
    pub(crate) fn with(sink: &Path, database_url: &str, shared: &str, redis: &[String]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut args: Vec<String> = [
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            database_url,
            "--jwt-secret",
            TEST_JWT_SECRET,
            "--queue-token-secret",
            TEST_QUEUE_SECRET,
            "--data-platform-sink",
            &format!("file:{}", sink.display()),
            "--seed-demo",
            "false",
            "--event-stream",
            &format!("bo:crash:{shared}:events"),
            "--redis-prefix",
            &format!("bo:crash:{shared}"),
            "--relay-poll-ms",
            "50",
            "--consumer-claim-idle-ms",
            "300",
            "--consumer-max-deliveries",
            "20",
            "--consumer-hold-ms",
            "2000",
            "--queue-admit-per-second",
            "1000",
            "--queue-max-active",
            "1000",
            "--queue-tick-ms",
            "20",
            "--compensation-retry-ms",
            "50",
            "--coupon-reconcile-grace-seconds",
            "1",
            "--coupon-reconcile-seconds",
            "2",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(redis.iter().cloned());
        Self {
            args,
            child: None,
            base: format!("http://127.0.0.1:{port}"),
            log: sink.with_file_name(format!("server-{port}.log")),
            env: Vec::new(),
        }
    }

    /// The same server with more flags.
    pub(crate) fn with_args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|arg| (*arg).to_owned()));
        self
    }

    /// The running process's id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// The same server, seeding the demo concert into an empty catalog.
    pub(crate) fn seeding_demo(mut self) -> Self {
        let at = self.seed_demo_flag();
        self.args[at + 1] = "true".into();
        self
    }

    fn seed_demo_flag(&self) -> usize {
        self.args
            .iter()
            .position(|arg| arg == "--seed-demo")
            .expect("the server is given --seed-demo")
    }

    pub(crate) async fn start(&mut self) {
        self.start_with_failpoints("").await;
    }

    /// Starts the server without waiting for it to be ready.
    pub(crate) fn launch(&mut self) {
        self.launch_with_failpoints("");
    }

    /// Starts the server with `--seed-demo` left to its default.
    pub(crate) fn launch_with_defaults(&mut self) {
        let at = self.seed_demo_flag();
        self.args.drain(at..at + 2);
        self.launch();
    }

    fn launch_with_failpoints(&mut self, failpoints: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the server's log file");
        let child = Command::new(BIN)
            .env_remove("BOXOFFICE_LOG")
            .env_remove("BOXOFFICE_LOG_FORMAT")
            // The tests poll every 25 ms while they wait.
            .env("BOXOFFICE_QUEUE_POLL_PACE_MS", "0")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(&self.args)
            .env("FAILPOINTS", failpoints)
            .env_remove("BOXOFFICE_DATABASE_URL")
            .env_remove("BOXOFFICE_REDIS_URL")
            .env_remove("BOXOFFICE_REDIS_CLUSTER_NODES")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the server binary starts");
        self.child = Some(child);
    }

    /// Waits until the server answers ready.
    pub(crate) async fn ready(&self) {
        let client = Client::new();
        let ready = format!("{}/health/ready", self.base);
        eventually("the server to be ready", WAIT, || async {
            let resp = client.get(&ready).send().await.ok()?;
            (resp.status() == 200).then_some(())
        })
        .await;
    }

    /// Starts the server with `FAILPOINTS` armed (`name=action;…`).
    async fn start_with_failpoints(&mut self, failpoints: &str) {
        self.launch_with_failpoints(failpoints);
        self.ready().await;
    }

    /// SIGKILL: no shutdown hook, no flush, as in a power cut.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().ok();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A client of the running server: requests that die with the process
/// count as failed, not as test failures.
#[derive(Clone)]
pub(crate) struct Shopper {
    client: Client,
    base: String,
    codec: Arc<boxoffice::auth::infra::jwt::JwtCodec>,
}

impl Shopper {
    pub(crate) fn token(&self, user: i64, role: Role) -> String {
        boxoffice::auth::usecase::mint_token(
            &*self.codec,
            &boxoffice::kernel::SystemClock,
            boxoffice::kernel::UserId(user),
            role,
            TimeDelta::hours(1),
        )
        .unwrap()
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        user: i64,
        queue: Option<&str>,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        self.send_keyed(method, path, user, queue, body, None).await
    }

    async fn send_keyed(
        &self,
        method: reqwest::Method,
        path: &str,
        user: i64,
        queue: Option<&str>,
        body: Option<Value>,
        key: Option<&str>,
    ) -> Option<(u16, Value)> {
        let token = if user == ADMIN {
            self.token(9_000, Role::Admin)
        } else {
            self.token(user, Role::User)
        };
        self.send_as(method, path, &token, queue, body, key).await
    }

    /// The request with `token` as the bearer (a staff scanner's, say).
    pub(crate) async fn send_as(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        queue: Option<&str>,
        body: Option<Value>,
        key: Option<&str>,
    ) -> Option<(u16, Value)> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .timeout(Duration::from_secs(10));
        if let Some(queue) = queue {
            req = req.header("x-queue-token", queue);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        let resp = req.send().await.ok()?;
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        Some((status, body))
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        user: i64,
        queue: Option<&str>,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        self.send(reqwest::Method::POST, path, user, queue, body)
            .await
    }

    pub(crate) async fn get(
        &self,
        path: &str,
        user: i64,
        queue: Option<&str>,
    ) -> Option<(u16, Value)> {
        self.send(reqwest::Method::GET, path, user, queue, None)
            .await
    }

    /// One user's whole visit; stops at the first request the crash took
    /// (`None`). Every answer it does get must be one the API promises.
    pub(crate) async fn visit(
        &self,
        user: i64,
        concert: &Value,
        schedule: &Value,
        seats: &[i64],
        coupon: i64,
    ) -> Option<()> {
        let (status, body) = self
            .post(
                "/v1/wallet/charges",
                user,
                None,
                Some(json!({"amount": 200_000})),
            )
            .await?;
        assert_eq!(status, 201, "charge: {body}");
        let (status, ticket) = self
            .post(
                "/v1/queue/tokens",
                user,
                None,
                Some(json!({"concertId": concert})),
            )
            .await?;
        assert_eq!(status, 201, "enter: {ticket}");
        let queue = ticket["token"].as_str().expect("a queue token").to_owned();
        loop {
            let (status, body) = self.get("/v1/queue/status", user, Some(&queue)).await?;
            assert_eq!(status, 200, "status: {body}");
            if body["status"] == "active" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seat = seats[user as usize % seats.len()];
        let hold = json!({"scheduleId": schedule, "seatId": seat});
        let (status, reservation) = self
            .post("/v1/reservations", user, Some(&queue), Some(hold))
            .await?;
        assert!(
            status == 201 || status == 409,
            "hold {status}: {reservation}"
        );
        if status == 201 {
            let pay = json!({"reservationId": reservation["id"]});
            let (status, body) = self
                .post("/v1/payments", user, Some(&queue), Some(pay))
                .await?;
            assert_eq!(status, 201, "pay: {body}");
        }
        let (status, won) = self
            .post(&format!("/v1/coupons/{coupon}/issue"), user, None, None)
            .await?;
        assert!(status == 201 || status == 409, "issue {status}: {won}");
        if status == 201 {
            let path = format!("/v1/user-coupons/{}/redemptions", won["userCouponId"]);
            let (status, body) = self.post(&path, user, None, None).await?;
            assert_eq!(status, 202, "redeem: {body}");
        }
        Some(())
    }
}

impl Shopper {
    /// A confirmed-to-be ticket: charge, enter, wait for the turn, hold
    /// `seat` and pay. The payment's id.
    pub(crate) async fn buy(&self, user: i64, concert: &Value, schedule: &Value, seat: i64) -> i64 {
        let (status, body) = self
            .post(
                "/v1/wallet/charges",
                user,
                None,
                Some(json!({"amount": 200_000})),
            )
            .await
            .expect("charge");
        assert_eq!(status, 201, "charge: {body}");
        let (status, ticket) = self
            .post(
                "/v1/queue/tokens",
                user,
                None,
                Some(json!({"concertId": concert})),
            )
            .await
            .expect("enter");
        assert_eq!(status, 201, "enter: {ticket}");
        let queue = ticket["token"].as_str().expect("a queue token").to_owned();
        eventually("the buyer's turn", WAIT, || async {
            let (_, body) = self.get("/v1/queue/status", user, Some(&queue)).await?;
            (body["status"] == "active").then_some(())
        })
        .await;
        let (status, reservation) = self
            .post(
                "/v1/reservations",
                user,
                Some(&queue),
                Some(json!({"scheduleId": schedule, "seatId": seat})),
            )
            .await
            .expect("hold");
        assert_eq!(status, 201, "hold: {reservation}");
        let (status, payment) = self
            .post(
                "/v1/payments",
                user,
                Some(&queue),
                Some(json!({"reservationId": reservation["id"]})),
            )
            .await
            .expect("pay");
        assert_eq!(status, 201, "pay: {payment}");
        payment["id"].as_i64().expect("a payment id")
    }
}

fn data_platform_event_ids(dir: &Path) -> Vec<String> {
    exported_event_ids(&dir.join("data-platform"))
}

/// The event ids in the NDJSON files of a data-platform directory.
pub(crate) fn exported_event_ids(sink: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(sink) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .flat_map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                // A line cut by the kill is not JSON; its event is written again.
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|l| l["eventId"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A database of its own for one crash test: a file in `dir`, or a fresh
/// PostgreSQL database.
pub(crate) async fn crash_database(dir: &Path) -> String {
    match backend() {
        Backend::Sqlite => format!("sqlite://{}", dir.join("crash.db").display()),
        Backend::Postgres => fresh_database_url().await,
    }
}

impl Shopper {
    /// A concert of `seats` seats on one schedule, and a vendor.
    pub(crate) async fn sale(&self, seats: i64) -> (Value, Value) {
        let (status, created) = self
            .post(
                "/v1/admin/concerts",
                ADMIN,
                None,
                Some(concert_body(1, seats - 1)),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{created}");
        let (status, vendor) = self
            .post(
                "/v1/admin/vendors",
                ADMIN,
                None,
                Some(json!({"name": "Crash Cafe"})),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{vendor}");
        (created, vendor)
    }

    /// A coupon campaign of the vendor's, valid now; its id.
    pub(crate) async fn campaign(&self, vendor: &Value, quantity: i64) -> i64 {
        let now = chrono::Utc::now();
        let (status, campaign) = self
            .post(
                "/v1/admin/coupons",
                ADMIN,
                None,
                Some(
                    json!({"name": "Crash coffee", "discount": 500, "quantity": quantity,
                    "vendorId": vendor["id"],
                    "validFrom": (now - TimeDelta::hours(1)).to_rfc3339(),
                    "validUntil": (now + TimeDelta::days(1)).to_rfc3339()}),
                ),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{campaign}");
        campaign["id"].as_i64().unwrap()
    }

    /// Reconciles the campaign's ledger with the database once the
    /// reconciler's grace (1 s here) has passed for every write in flight;
    /// the campaign's stats afterwards.
    pub(crate) async fn reconciled(&self, coupon: i64) -> Value {
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let (status, body) = self
            .post(
                &format!("/v1/admin/coupons/{coupon}/reconcile"),
                ADMIN,
                None,
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let (status, stats) = self
            .get(&format!("/v1/admin/coupons/{coupon}"), ADMIN, None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{stats}");
        stats
    }

    pub(crate) fn of(server: &Server) -> Self {
        Self {
            client: Client::new(),
            base: server.base.clone(),
            codec: Arc::new(boxoffice::auth::infra::jwt::JwtCodec::new(
                TEST_JWT_SECRET.as_bytes(),
            )),
        }
    }
}

#[tokio::test]
async fn a_server_killed_mid_traffic_recovers_without_losing_or_doubling_anything() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = crash_database(dir.path()).await;
    let mut server = Server::new(dir.path(), &database_url);
    server.start().await;
    let shopper = Shopper::of(&server);

    // The sale: one schedule of seats, a vendor and a coupon campaign.
    let (created, vendor) = shopper.sale(SEATS).await;
    let concert = created["id"].clone();
    let schedule = created["schedules"][0]["id"].clone();
    let coupon = shopper.campaign(&vendor, COUPONS).await;
    let db = Database::connect(database_url.as_str()).await.unwrap();
    let seats: Vec<i64> = column(
        &db,
        &format!("SELECT id FROM seats WHERE schedule_id = {schedule}"),
    )
    .await;

    // Traffic, killed once a few payments have gone through.
    let visits = (1..=120).map(|user| {
        let (shopper, concert, schedule, seats) = (
            shopper.clone(),
            concert.clone(),
            schedule.clone(),
            seats.clone(),
        );
        tokio::spawn(async move {
            shopper
                .visit(user, &concert, &schedule, &seats, coupon)
                .await
        })
    });
    let visits: Vec<_> = visits.collect();
    eventually("payments before the crash", WAIT, || async {
        (count(&db, "SELECT COUNT(*) FROM payments").await >= 5).then_some(())
    })
    .await;
    server.kill();
    let finished = join_all(visits).await;
    assert!(
        finished.iter().all(Result::is_ok),
        "every answer before the kill was one the API promises"
    );
    let cut_short = finished.iter().filter(|v| matches!(v, Ok(None))).count();
    assert!(
        cut_short > 0,
        "the kill landed in the middle of the traffic"
    );

    // Restarted on the same stores; a few more visits after the restart.
    server.start().await;
    for user in 201..=205 {
        shopper
            .visit(user, &concert, &schedule, &seats, coupon)
            .await
            .expect("the restarted server answers");
    }

    // Everything in flight settles.
    outbox_drained(&db, WAIT).await;
    let settled = async {
        eventually("every payment settled", WAIT, || async {
            (count(&db, "SELECT COUNT(*) FROM payments WHERE status = 'paid'").await == 0)
                .then_some(())
        })
        .await;
    };
    if futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(settled))
        .await
        .is_err()
    {
        panic!(
            "payments left unsettled:\n{}",
            unsettled(&db, &server.log).await
        );
    }
    eventually("every redemption job finished", WAIT, || async {
        (count(
            &db,
            "SELECT COUNT(*) FROM coupon_jobs WHERE status = 'pending'",
        )
        .await
            == 0)
            .then_some(())
    })
    .await;
    let payments = count(&db, "SELECT COUNT(*) FROM payments").await;
    assert!(payments >= 5);
    eventually("one receipt per payment", WAIT, || async {
        (count(&db, "SELECT COUNT(*) FROM receipts").await == payments).then_some(())
    })
    .await;
    assert_eq!(
        count(&db, "SELECT COUNT(DISTINCT payment_id) FROM receipts").await,
        payments,
        "each payment's receipt, once"
    );

    // The money adds up and no seat went twice.
    assert_ledger_invariants(&db).await;
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM reservations WHERE status = 'confirmed'"
        )
        .await,
        count(
            &db,
            "SELECT COUNT(*) FROM payments WHERE status = 'confirmed'"
        )
        .await,
    );

    // Coupons: never more than the quantity, the vendor paid once per use,
    // and the ledger agrees with the database once reconciled.
    let issued = count(
        &db,
        &format!("SELECT COUNT(*) FROM user_coupons WHERE coupon_id = {coupon}"),
    )
    .await;
    assert!(issued <= COUPONS);
    let used = count(
        &db,
        &format!(
            "SELECT COUNT(*) FROM user_coupons WHERE coupon_id = {coupon} AND status = 'used'"
        ),
    )
    .await;
    let (_, stats) = shopper
        .get(&format!("/v1/admin/coupons/{coupon}"), ADMIN, None)
        .await
        .unwrap();
    assert_eq!(stats["vendorBalance"], used * 500, "{stats}");
    let stats = shopper.reconciled(coupon).await;
    assert_eq!(stats["issued"], issued);
    assert_eq!(stats["redeemed"], used, "{stats}");
    assert_eq!(
        stats["ledgerIssued"], issued,
        "Redis = DB after reconciliation"
    );
    // The campaign list's counters, kept through the kill, say the same.
    let (status, campaigns) = shopper.get("/v1/admin/coupons", ADMIN, None).await.unwrap();
    assert_eq!(status, 200, "{campaigns}");
    assert_eq!(campaigns, json!({ "items": [stats] }));

    // Every event reached the data platform. The file sink is at least once
    // (a line written just before the kill is written again after it, and
    // the data platform keys on eventId); the database effects above are
    // exactly once.
    let events: HashSet<String> = column::<uuid::Uuid>(&db, "SELECT event_id FROM outbox")
        .await
        .iter()
        .map(uuid::Uuid::to_string)
        .collect();
    let exported = eventually("every event exported", WAIT, || async {
        let ids: HashSet<String> = data_platform_event_ids(dir.path()).into_iter().collect();
        events.is_subset(&ids).then_some(ids)
    })
    .await;
    assert!(!exported.is_empty());
}

#[tokio::test]
async fn a_server_killed_during_a_mass_cancellation_refunds_every_ticket_exactly_once() {
    const TICKETS: i64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let database_url = crash_database(dir.path()).await;
    let mut server = Server::new(dir.path(), &database_url);
    server.start().await;
    let shopper = Shopper::of(&server);
    let (created, _) = shopper.sale(TICKETS + 10).await;
    let (concert, schedule) = (created["id"].clone(), created["schedules"][0]["id"].clone());
    let db = Database::connect(database_url.as_str()).await.unwrap();
    let seats: Vec<i64> = column(
        &db,
        &format!("SELECT id FROM seats WHERE schedule_id = {schedule} ORDER BY id"),
    )
    .await;
    let buyers = (0..TICKETS).map(|i| {
        let (shopper, concert, schedule, seat) = (
            shopper.clone(),
            concert.clone(),
            schedule.clone(),
            seats[i as usize],
        );
        tokio::spawn(async move { shopper.buy(1_000 + i, &concert, &schedule, seat).await })
    });
    for buyer in join_all(buyers).await {
        buyer.expect("a buyer");
    }
    eventually("every ticket confirmed", WAIT, || async {
        (count(
            &db,
            "SELECT COUNT(*) FROM payments WHERE status = 'confirmed'",
        )
        .await
            == TICKETS)
            .then_some(())
    })
    .await;

    let (status, started) = shopper
        .post(
            &format!("/v1/admin/schedules/{schedule}/cancel"),
            ADMIN,
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{started}");
    let refunded = "SELECT COUNT(*) FROM payments WHERE status = 'refunded'";
    eventually("the first refunds", WAIT, || async {
        (count(&db, refunded).await >= TICKETS / 10).then_some(())
    })
    .await;
    server.kill();
    let at_kill = count(&db, refunded).await;
    assert!(
        at_kill < TICKETS,
        "the kill landed mid-way ({at_kill} refunded)"
    );

    server.start().await;
    let done = eventually("the schedule cancelled", WAIT, || async {
        let (_, body) = shopper
            .get(&format!("/v1/admin/schedules/{schedule}"), ADMIN, None)
            .await?;
        (body["status"] == "cancelled").then_some(body)
    })
    .await;
    assert_eq!(done["refundsDone"], TICKETS, "{done}");
    assert_eq!(done["sold"], 0, "{done}");
    assert_eq!(count(&db, refunded).await, TICKETS);
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM (SELECT payment_id FROM wallet_transactions WHERE kind = 'refund' \
             GROUP BY payment_id HAVING COUNT(*) > 1) twice",
        )
        .await,
        0,
        "nobody refunded twice"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM wallet_transactions WHERE kind = 'refund'"
        )
        .await,
        TICKETS
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM wallets WHERE balance <> 200000").await,
        0,
        "every buyer has every point back"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM reservations WHERE status = 'confirmed'"
        )
        .await,
        0
    );
    assert_ledger_invariants(&db).await;
    eventually("every receipt voided", WAIT, || async {
        (count(
            &db,
            "SELECT COUNT(*) FROM receipts WHERE cancelled_at IS NOT NULL",
        )
        .await
            == TICKETS)
            .then_some(())
    })
    .await;
    println!("mass cancellation: {TICKETS} tickets, {at_kill} refunded before the kill");
}

/// What a test that found payments unsettled prints: each such payment
/// with its reservation, compensation, inbox and dead-letter rows, and the
/// end of the server's log.
pub(crate) async fn unsettled(db: &sea_orm::DatabaseConnection, log: &Path) -> String {
    let mut out = Vec::new();
    for (what, sql) in [
        (
            "payments",
            "SELECT 'payment ' || CAST(p.id AS TEXT) || ' ' || p.status || ' reservation ' \
             || CAST(r.id AS TEXT) || ' ' || r.status || ' expires ' || CAST(r.expires_at AS TEXT) \
             FROM payments p JOIN reservations r ON r.id = p.reservation_id \
             WHERE p.status = 'paid'",
        ),
        (
            "compensations",
            "SELECT CAST(c.id AS TEXT) || ' payment ' || CAST(c.payment_id AS TEXT) || ' ' \
             || c.status || ' attempts ' || CAST(c.attempts AS TEXT) || ' ' \
             || COALESCE(c.last_error, '') \
             FROM compensations c JOIN payments p ON p.id = c.payment_id WHERE p.status = 'paid'",
        ),
        (
            "events",
            "SELECT CAST(o.id AS TEXT) || ' ' || o.event_type || ' ' || o.aggregate_id || ' ' \
             || COALESCE(CAST(o.published_at AS TEXT), 'unpublished') FROM outbox o \
             JOIN payments p ON o.aggregate_id = CAST(p.id AS TEXT) OR o.payload LIKE \
             '%\"paymentId\":' || CAST(p.id AS TEXT) || ',%' WHERE p.status = 'paid'",
        ),
        (
            "dead letters",
            "SELECT d.consumer || ' ' || d.event_type || ' ' || d.last_error FROM dead_letters d",
        ),
    ] {
        let rows = sea_orm::ConnectionTrait::query_all_raw(
            db,
            sea_orm::Statement::from_string(db.get_database_backend(), sql.to_owned()),
        )
        .await;
        let rows = match rows {
            Ok(rows) => rows
                .iter()
                .map(|r| r.try_get_by_index::<String>(0).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n  "),
            Err(err) => format!("({err})"),
        };
        out.push(format!("{what}:\n  {rows}"));
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(60).collect();
    out.push(format!(
        "server log (last lines):\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    ));
    out.join("\n")
}

/// A user's four keyed requests (charge, pay, coupon issue, redemption)
/// against a server that is killed around their commits.
struct KeyedVisit {
    shopper: Shopper,
    user: i64,
    concert: Value,
    schedule: Value,
    seats: Vec<i64>,
    vendor: Value,
}

/// What a keyed request is, and where its effect shows in the database.
#[derive(Clone)]
struct KeyedRequest {
    path: String,
    queue: Option<String>,
    body: Option<Value>,
    key: String,
    created: u16,
    effects: String,
}

impl KeyedVisit {
    async fn admitted(&self) -> String {
        let (status, ticket) = self
            .shopper
            .post(
                "/v1/queue/tokens",
                self.user,
                None,
                Some(json!({"concertId": self.concert})),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{ticket}");
        let queue = ticket["token"].as_str().unwrap().to_owned();
        eventually("admission", WAIT, || async {
            let (_, body) = self
                .shopper
                .get("/v1/queue/status", self.user, Some(&queue))
                .await?;
            (body["status"] == "active").then_some(())
        })
        .await;
        queue
    }

    /// Four fresh keyed requests, named by `round`: a new seat held, a new
    /// campaign to win, a coupon won without a key to redeem.
    async fn requests(&self, round: usize) -> Vec<KeyedRequest> {
        let user = self.user;
        let queue = self.admitted().await;
        let (status, reservation) = self
            .shopper
            .post(
                "/v1/reservations",
                user,
                Some(&queue),
                Some(json!({"scheduleId": self.schedule, "seatId": self.seats[round]})),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{reservation}");
        let to_win = self.shopper.campaign(&self.vendor, 5).await;
        let owned = self.shopper.campaign(&self.vendor, 5).await;
        let (status, won) = self
            .shopper
            .post(&format!("/v1/coupons/{owned}/issue"), user, None, None)
            .await
            .unwrap();
        assert_eq!(status, 201, "{won}");
        let user_coupon = won["userCouponId"].as_i64().unwrap();
        let amount = 1_000 + round as i64;
        vec![
            KeyedRequest {
                path: "/v1/wallet/charges".into(),
                queue: None,
                body: Some(json!({"amount": amount})),
                key: format!("charge-{round}"),
                created: 201,
                effects: format!(
                    "SELECT COUNT(*) FROM wallet_transactions WHERE user_id = {user} AND amount = {amount}"
                ),
            },
            KeyedRequest {
                path: "/v1/payments".into(),
                queue: Some(queue),
                body: Some(json!({"reservationId": reservation["id"]})),
                key: format!("pay-{round}"),
                created: 201,
                effects: format!(
                    "SELECT COUNT(*) FROM payments WHERE reservation_id = {}",
                    reservation["id"]
                ),
            },
            KeyedRequest {
                path: format!("/v1/coupons/{to_win}/issue"),
                queue: None,
                body: None,
                key: format!("issue-{round}"),
                created: 201,
                effects: format!("SELECT COUNT(*) FROM user_coupons WHERE coupon_id = {to_win}"),
            },
            KeyedRequest {
                path: format!("/v1/user-coupons/{user_coupon}/redemptions"),
                queue: None,
                body: None,
                key: format!("redeem-{round}"),
                created: 202,
                effects: format!(
                    "SELECT COUNT(*) FROM coupon_jobs WHERE user_coupon_id = {user_coupon}"
                ),
            },
        ]
    }

    pub(crate) async fn send(&self, req: &KeyedRequest) -> Option<(u16, Value)> {
        self.shopper
            .send_keyed(
                reqwest::Method::POST,
                &req.path,
                self.user,
                req.queue.as_deref(),
                req.body.clone(),
                Some(&req.key),
            )
            .await
    }

    /// Sends every request without waiting for the (stalled) answers.
    fn fire(&self, requests: &[KeyedRequest]) -> Vec<tokio::task::JoinHandle<()>> {
        requests
            .iter()
            .map(|req| {
                let (visit, req) = (self.clone(), req.clone());
                tokio::spawn(async move {
                    visit.send(&req).await;
                })
            })
            .collect()
    }
}

impl Clone for KeyedVisit {
    fn clone(&self) -> Self {
        Self {
            shopper: self.shopper.clone(),
            user: self.user,
            concert: self.concert.clone(),
            schedule: self.schedule.clone(),
            seats: self.seats.clone(),
            vendor: self.vendor.clone(),
        }
    }
}

/// The answer a retry gets once the restarted server has settled (a coupon
/// win cut off before its row is `503` until the reconciler frees it). A
/// payment whose turn is gone enters again and retries with the same key:
/// the embedded shape's waiting room does not outlive the process, and on
/// Redis the previous round's `PaymentCompleted`, handled late after the
/// restart, ends the buyer's turn in the concert, the new one included.
async fn retried(visit: &KeyedVisit, req: &mut KeyedRequest) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some((status, body)) = visit.send(req).await {
            if status == req.created {
                return body;
            }
            if status == 403 && body["code"] == "queue_not_admitted" {
                req.queue = Some(visit.admitted().await);
                continue;
            }
            assert_eq!(status, 503, "{}: {body}", req.key);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never answered",
            req.key
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_server_killed_around_a_keyed_commit_answers_every_retried_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = crash_database(dir.path()).await;
    // Keyed requests stall (asynchronously) after their commits; the
    // process is killed there.
    let mut server = Server::new(dir.path(), &database_url);
    server
        .start_with_failpoints("idempotency::committed=return(60000)")
        .await;
    let shopper = Shopper::of(&server);
    let (created, vendor) = shopper.sale(4).await;
    let db = Database::connect(database_url.as_str()).await.unwrap();
    let schedule = created["schedules"][0]["id"].clone();
    let visit = KeyedVisit {
        shopper,
        user: 77,
        concert: created["id"].clone(),
        seats: column(
            &db,
            &format!("SELECT id FROM seats WHERE schedule_id = {schedule} ORDER BY id"),
        )
        .await,
        schedule,
        vendor,
    };
    let (status, _) = visit
        .shopper
        .post(
            "/v1/wallet/charges",
            visit.user,
            None,
            Some(json!({"amount": 500_000})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201);

    // 1. Killed after the commits: the work is done, the replies lost.
    let mut first = visit.requests(0).await;
    let stalled = visit.fire(&first);
    for req in &first {
        eventually(&format!("{} committed", req.key), WAIT, || async {
            (count(&db, &req.effects).await == 1).then_some(())
        })
        .await;
    }
    server.kill();
    join_all(stalled).await;
    // Restarted with keyed requests stalling after their claims, to be
    // killed there next.
    server
        .start_with_failpoints("idempotency::claimed=return(60000)")
        .await;
    for req in &mut first {
        let answer = retried(&visit, req).await;
        assert_eq!(
            visit.send(req).await.unwrap(),
            (req.created, answer.clone()),
            "{}: the same answer every time",
            req.key
        );
        assert_eq!(count(&db, &req.effects).await, 1, "{}: once", req.key);
    }

    // 2. Killed before the commits: the keys were claimed (the coupon's
    // number taken), nothing landed.
    let mut second = visit.requests(1).await;
    let stalled = visit.fire(&second);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for req in &second {
        assert_eq!(count(&db, &req.effects).await, 0, "{}: not yet", req.key);
    }
    server.kill();
    join_all(stalled).await;
    server.start().await;
    for req in &mut second {
        let answer = retried(&visit, req).await;
        assert_eq!(
            visit.send(req).await.unwrap(),
            (req.created, answer),
            "{}",
            req.key
        );
        assert_eq!(
            count(&db, &req.effects).await,
            1,
            "{}: run afresh, once",
            req.key
        );
    }
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM idempotency_keys").await,
        8,
        "eight keys, each with its answer"
    );
    outbox_drained(&db, WAIT).await;
    assert_ledger_invariants(&db).await;
}
