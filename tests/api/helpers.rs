use std::sync::OnceLock;

use boxoffice::{
    app::Application,
    auth::{domain::Role, usecase::mint_token},
    config::{LogFormat, Settings},
    kernel::{SystemClock, UserId},
};
use chrono::TimeDelta;
use reqwest::{Client, RequestBuilder, Response};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::Value;

pub const TEST_JWT_SECRET: &str = "integration-test-secret";

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

pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub db: DatabaseConnection,
    _sqlite_dir: Option<tempfile::TempDir>,
}

pub fn test_settings() -> Settings {
    Settings {
        listen: "127.0.0.1:0".into(),
        database_url: String::new(),
        redis_url: None,
        jwt_secret: TEST_JWT_SECRET.into(),
        log_format: LogFormat::Text,
        body_limit_bytes: 64 * 1024,
        seed_demo: false,
        shutdown_grace_seconds: 1,
    }
}

/// Starts a server on a free port over a brand-new database. In the
/// PostgreSQL run the server also gets Redis, as in production.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    init_logs();
    let mut settings = test_settings();
    let mut sqlite_dir = None;
    match backend() {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            settings.database_url = format!("sqlite://{}", dir.path().join("test.db").display());
            sqlite_dir = Some(dir);
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
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    TestApp {
        base,
        client: Client::new(),
        db,
        _sqlite_dir: sqlite_dir,
    }
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var_os("BOXOFFICE_TEST_LOG").is_some() {
            boxoffice::telemetry::init(LogFormat::Text);
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
        resp.json().await.expect("json")
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
