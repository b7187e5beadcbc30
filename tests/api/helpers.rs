use std::{future::Future, path::PathBuf, sync::OnceLock, time::Duration};

use boxoffice::{
    app::Application,
    auth::{domain::Role, usecase::mint_token},
    config::{LogFormat, Settings},
    kernel::{SystemClock, UserId},
    outbox::infra::AnyBus,
};
use chrono::TimeDelta;
use reqwest::{Client, RequestBuilder, Response};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::Value;

/// The identity secret of the test servers (32 bytes or more: the servers
/// on PostgreSQL and Redis refuse anything shorter).
pub const TEST_JWT_SECRET: &str = "integration-test-identity-secret-0123456789";
/// The queue-token secret of the test servers, a key of its own.
pub const TEST_QUEUE_SECRET: &str = "integration-test-queue-secret-0123456789ab";

/// Signs arbitrary JWT claims with HS256, to forge tokens the server must refuse.
pub fn sign(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing")
}

/// Which database this run of the suite uses (set by `scripts/test`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn backend() -> Backend {
    match std::env::var("BOXOFFICE_TEST_DATABASE").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("sqlite") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("BOXOFFICE_TEST_DATABASE must be sqlite or postgres, not {other:?}"),
    }
}

/// A Redis every run needs; missing means the suite was not started by
/// `scripts/test`, and the test fails instead of skipping.
pub fn redis_url() -> String {
    std::env::var("BOXOFFICE_TEST_REDIS_URL")
        .expect("BOXOFFICE_TEST_REDIS_URL is not set: run the suite with scripts/test")
}

/// The throwaway Redis Cluster `scripts/test` starts (3 primaries, 3
/// replicas); missing means the suite was not started by `scripts/test`.
pub fn redis_cluster_nodes() -> Vec<String> {
    std::env::var("BOXOFFICE_TEST_REDIS_CLUSTER_NODES")
        .expect("BOXOFFICE_TEST_REDIS_CLUSTER_NODES is not set: run the suite with scripts/test")
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// A connection to the test Redis Cluster, and where more come from.
pub async fn redis_cluster() -> (
    boxoffice::redis_client::RedisTarget,
    boxoffice::redis_client::Conn,
) {
    let target = boxoffice::redis_client::RedisTarget::cluster(&redis_cluster_nodes()).unwrap();
    let conn = target
        .connect()
        .await
        .expect("the Redis Cluster is reachable");
    (target, conn)
}

pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub db: DatabaseConnection,
    pub bus: AnyBus,
    pub settings: Settings,
    /// Where the data-platform exporter writes its NDJSON files.
    pub data_platform_dir: PathBuf,
    _dir: tempfile::TempDir,
}

/// Settings for a test server: fast polling and retries so pipeline tests
/// finish in moments, and a stream of its own on the shared Redis.
pub fn test_settings(dir: &std::path::Path) -> Settings {
    let mut settings = Settings::defaults();
    settings.listen = "127.0.0.1:0".into();
    settings.redis_url = None;
    settings.jwt_secret = Some(TEST_JWT_SECRET.into());
    settings.queue_token_secret = Some(TEST_QUEUE_SECRET.into());
    settings.log_format = LogFormat::Text;
    settings.seed_demo = Some(false);
    settings.shutdown_grace_seconds = 1;
    settings.data_platform_sink = format!("file:{}", dir.join("data-platform").display());
    settings.alert_webhook_url = None;
    settings.workers = true;
    settings.event_stream = format!("bo:test:{}:events", uuid::Uuid::new_v4().simple());
    settings.relay_poll_ms = 50;
    // The tests poll every 25 ms while they wait; `queue::a_flood_of_polls_is_paced`
    // turns the pace on.
    settings.queue_poll_pace_ms = 0;
    settings.consumer_claim_idle_ms = 300;
    settings.consumer_hold_ms = 1_500;
    settings.consumer_max_deliveries = 3;
    settings.redis_prefix = format!("bo:test:{}", uuid::Uuid::new_v4().simple());
    settings.queue_admit_per_second = 1_000;
    settings.queue_max_active = 1_000;
    settings.queue_tick_ms = 20;
    settings.compensation_retry_ms = 20;
    settings
}

/// Starts a server on a free port over a brand-new database. In the
/// PostgreSQL run the server also gets Redis, as in production.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    init_logs();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(dir.path());
    match backend() {
        Backend::Sqlite => {
            settings.database_url = format!("sqlite://{}", dir.path().join("test.db").display());
        }
        Backend::Postgres => {
            settings.database_url = fresh_database_url().await;
            settings.redis_url = Some(redis_url());
        }
    }
    configure(&mut settings);
    let app = Application::build(&settings)
        .await
        .expect("the application builds");
    let base = format!("http://{}", app.addr());
    let db = app.db.clone();
    let bus = app.bus.clone();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    // Tests that send events elsewhere simply find no files here.
    let data_platform_dir = PathBuf::from(
        settings
            .data_platform_sink
            .strip_prefix("file:")
            .unwrap_or_default(),
    );
    TestApp {
        base,
        client: Client::new(),
        db,
        bus,
        settings,
        data_platform_dir,
        _dir: dir,
    }
}

/// A second instance of `first`'s deployment: the same database, Redis
/// (its prefix and event stream), configured further by `configure`.
pub async fn spawn_sibling(first: &TestApp, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let database_url = first.settings.database_url.clone();
    let redis = first.settings.redis_url.clone();
    let prefix = first.settings.redis_prefix.clone();
    let stream = first.settings.event_stream.clone();
    spawn_app_with(move |s| {
        s.redis_url = redis;
        s.database_url = database_url;
        s.redis_prefix = prefix;
        s.event_stream = stream;
        configure(s);
    })
    .await
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var_os("BOXOFFICE_TEST_LOG").is_some() {
            // No exporter: nothing to keep running.
            drop(boxoffice::telemetry::init(LogFormat::Text, None));
        }
    });
}

pub async fn fresh_database_url() -> String {
    let admin_url = std::env::var("BOXOFFICE_TEST_DATABASE_URL")
        .expect("BOXOFFICE_TEST_DATABASE_URL is not set: run the suite with scripts/test");
    let name = format!("bo_test_{}", uuid::Uuid::new_v4().simple());
    let admin: DatabaseConnection = Database::connect(admin_url.as_str())
        .await
        .expect("PostgreSQL is reachable at BOXOFFICE_TEST_DATABASE_URL");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the test database");
    admin.close().await.ok();
    let (server, _) = admin_url
        .rsplit_once('/')
        .expect("the URL names a database");
    format!("{server}/{name}")
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn token(&self, user: i64, role: Role) -> String {
        let codec = boxoffice::auth::infra::jwt::JwtCodec::new(TEST_JWT_SECRET.as_bytes());
        mint_token(
            &codec,
            &SystemClock,
            UserId(user),
            role,
            TimeDelta::hours(1),
        )
        .expect("token")
    }

    pub fn user_token(&self, user: i64) -> String {
        self.token(user, Role::User)
    }

    pub fn admin_token(&self) -> String {
        self.token(9_000, Role::Admin)
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(self.url(path))
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.client.post(self.url(path))
    }

    /// Creates a concert through the admin API and returns the answer body.
    pub async fn create_concert(&self, body: &Value) -> Value {
        let resp = self
            .post("/v1/admin/concerts")
            .bearer_auth(self.admin_token())
            .json(body)
            .send()
            .await
            .expect("request");
        assert_eq!(
            resp.status(),
            201,
            "create concert: {}",
            resp.text().await.unwrap_or_default()
        );
        let created: Value = resp.json().await.expect("json");
        let recorded = outbox_payloads(&self.db, "ConcertCreated").await;
        assert!(
            recorded
                .iter()
                .any(|e| e["concertId"] == created["id"] && e["adminId"] == 9_000),
            "ConcertCreated names the admin: {recorded:?}"
        );
        created
    }
}

/// A valid create-concert body: one schedule 30 days out with `vip` VIP and
/// `r` R seats.
pub fn concert_body(vip: i64, r: i64) -> Value {
    let starts_at = (chrono::Utc::now() + TimeDelta::days(30)).to_rfc3339();
    serde_json::json!({
        "title": "Test Night",
        "venue": "Test Hall",
        "schedules": [{
            "startsAt": starts_at,
            "seats": [
                {"grade": "VIP", "price": 150000, "count": vip},
                {"grade": "R", "price": 90000, "count": r}
            ]
        }]
    })
}

/// Asserts a problem+json answer with the given status and code, and
/// returns its body.
pub async fn assert_problem(resp: Response, status: u16, code: &str) -> Value {
    let actual = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp.text().await.expect("body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    assert_eq!(content_type, "application/problem+json", "body: {text}");
    let body: Value = serde_json::from_str(&text).expect("problem body is JSON");
    assert_eq!(body["code"], code, "body: {text}");
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string());
    body
}

/// Polls `check` until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Counts rows with a plain SQL query (works on SQLite and PostgreSQL).
pub async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    use sea_orm::Statement;
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .expect("count query")
        .expect("a row");
    row.try_get_by_index::<i64>(0).expect("an integer")
}

/// The first column of every row of `sql` (works on SQLite and PostgreSQL).
pub async fn column<T: sea_orm::TryGetable>(db: &DatabaseConnection, sql: &str) -> Vec<T> {
    use sea_orm::Statement;
    db.query_all_raw(Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .expect("query")
    .iter()
    .map(|r| r.try_get_by_index::<T>(0).expect("the column's type"))
    .collect()
}

/// Waits until every outbox row is published, failing after `timeout`.
/// The payloads of every `event_type` event in the outbox, oldest first.
pub async fn outbox_payloads(db: &DatabaseConnection, event_type: &str) -> Vec<Value> {
    column::<String>(
        db,
        &format!("SELECT payload FROM outbox WHERE event_type = '{event_type}' ORDER BY id"),
    )
    .await
    .iter()
    .map(|p| serde_json::from_str(p).expect("a JSON payload"))
    .collect()
}

/// Who did each recorded admin action of this type (`adminId`).
pub async fn audited_admins(db: &DatabaseConnection, event_type: &str) -> Vec<Value> {
    outbox_payloads(db, event_type)
        .await
        .into_iter()
        .map(|p| p["adminId"].clone())
        .collect()
}

pub async fn outbox_drained(db: &DatabaseConnection, timeout: Duration) {
    eventually("the outbox to drain", timeout, || async {
        (count(db, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL").await == 0)
            .then_some(())
    })
    .await;
}

impl TestApp {
    /// Every line the data-platform exporter wrote, parsed. A line still
    /// being written (no newline yet) is left for the next read.
    pub fn data_platform_lines(&self) -> Vec<Value> {
        let Ok(entries) = std::fs::read_dir(&self.data_platform_dir) else {
            return Vec::new();
        };
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        files
            .iter()
            .flat_map(|f| {
                let text = std::fs::read_to_string(f).unwrap_or_default();
                let complete = text.rfind('\n').map_or("", |end| &text[..end]);
                complete
                    .lines()
                    .filter(|line| !line.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .map(|line| serde_json::from_str(&line).expect("each line is one JSON object"))
            .collect()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let resp = self
            .get(path)
            .bearer_auth(self.admin_token())
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json().await.expect("json")
    }
}

impl TestApp {
    /// Enters the concert's waiting room as `user`; returns the answer body.
    pub async fn enter_queue(&self, user: i64, concert: &Value) -> Value {
        let resp = self
            .post("/v1/queue/tokens")
            .bearer_auth(self.user_token(user))
            .json(&serde_json::json!({ "concertId": concert }))
            .send()
            .await
            .expect("request");
        assert_eq!(
            resp.status(),
            201,
            "enter queue: {}",
            resp.text().await.unwrap_or_default()
        );
        resp.json().await.expect("json")
    }

    /// Gives up the place behind a queue token.
    pub async fn leave_queue(&self, token: &str) -> reqwest::Response {
        self.client
            .delete(self.url("/v1/queue/tokens/current"))
            .header("x-queue-token", token)
            .send()
            .await
            .expect("request")
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        self.get("/metrics")
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("text")
    }

    pub async fn queue_status(&self, token: &str) -> Value {
        let resp = self
            .get("/v1/queue/status")
            .header("x-queue-token", token)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200, "queue status");
        resp.json().await.expect("json")
    }

    /// Enters the waiting room and polls until admitted; returns the token.
    pub async fn admitted_token(&self, user: i64, concert: &Value) -> String {
        let token = self.enter_queue(user, concert).await["token"]
            .as_str()
            .expect("token")
            .to_owned();
        eventually(
            "admission from the waiting room",
            Duration::from_secs(20),
            || async { (self.queue_status(&token).await["status"] == "active").then_some(()) },
        )
        .await;
        token
    }

    /// The whole seat map as an admitted `user` sees it: one page of the
    /// default size, which must be the last.
    pub async fn seat_map(&self, user: i64, concert: &Value, schedule: &Value) -> Vec<Value> {
        let token = self.admitted_token(user, concert).await;
        let page = self.seat_page(user, &token, schedule, "").await;
        assert!(
            page.get("nextCursor").is_none(),
            "the seat map fits one page: {page}"
        );
        page["items"].as_array().expect("items").clone()
    }

    /// One page of the seat map, `query` being the query string (`""` or
    /// `"?limit=3&after=…"`), read with an admitted queue `token`.
    pub async fn seat_page(&self, user: i64, token: &str, schedule: &Value, query: &str) -> Value {
        let resp = self
            .get(&format!("/v1/schedules/{schedule}/seats{query}"))
            .bearer_auth(self.user_token(user))
            .header("x-queue-token", token)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200, "seat map{query}");
        resp.json().await.expect("json")
    }
}

/// The ids of a list page's items (`{items, nextCursor}`), in order.
pub fn page_ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["id"].as_i64().unwrap())
        .collect()
}
