//! The server under test: the release `boxoffice` binary next to this one,
//! started on a free loopback port against the benchmark's stores, and
//! killed when dropped.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context;
use boxoffice::{
    auth::{
        domain::{Identity, Role},
        infra::jwt::JwtCodec,
        ports::TokenCodec,
    },
    kernel::{UserId, Validity},
};
use chrono::{TimeDelta, Utc};

pub const JWT_SECRET: &str = "boxoffice-bench-identity-secret-0123456789";
/// The bench servers' queue-token key (a server on PostgreSQL or Redis
/// needs both, each 32 bytes or more).
const QUEUE_TOKEN_SECRET: &str = "boxoffice-bench-queue-token-secret-0123456";

pub struct Server {
    child: Child,
    pub base: String,
    /// The directory of the server's data-platform sink (`file:DIR`).
    pub data_platform_dir: PathBuf,
    codec: JwtCodec,
}

/// The server binary named `name` next to this one.
fn binary(name: &str, build: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        path.exists(),
        "{} not found: build it first ({build})",
        path.display()
    );
    Ok(path)
}

fn server_binary() -> anyhow::Result<PathBuf> {
    binary("boxoffice", "cargo build --release --bins")
}

/// The server with the coupon lock strategies compiled in (the
/// `bench-strategies` feature), for the like-for-like comparison.
fn strategies_binary() -> anyhow::Result<PathBuf> {
    binary(
        "boxoffice-strategies",
        "cargo build --release -p boxoffice --features bench-strategies --bin boxoffice-strategies",
    )
}

/// Under `cargo run`, builds the server binary of this profile first, so
/// `cargo run --release -p boxoffice-bench -- all` measures the current code.
pub fn ensure_server_binary() -> anyhow::Result<()> {
    if let Ok(cargo) = std::env::var("CARGO") {
        let me = std::env::current_exe()?;
        let release = me
            .parent()
            .and_then(|dir| dir.file_name())
            .is_some_and(|name| name == "release");
        // The release server, then the one with the lock strategies (its
        // own binary: the feature never reaches `boxoffice`).
        for (bin, features) in [
            ("boxoffice", None),
            ("boxoffice-strategies", Some("bench-strategies")),
        ] {
            let mut build = Command::new(&cargo);
            build.args(["build", "-q", "-p", "boxoffice", "--bin", bin]);
            if let Some(features) = features {
                build.args(["--features", features]);
            }
            if release {
                build.arg("--release");
            }
            let status = build.status().with_context(|| format!("building {bin}"))?;
            anyhow::ensure!(status.success(), "building {bin} failed ({status})");
        }
    }
    server_binary()?;
    strategies_binary().map(drop)
}

impl Server {
    /// `redis` is the server's Redis flags (`Stores::server_redis_args`).
    pub fn start(database_url: &str, redis: &[String], extra: &[&str]) -> anyhow::Result<Self> {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        Self::start_shared(database_url, redis, extra, &tag)
    }

    /// A server whose Redis keys and event streams are named after `tag`:
    /// servers started with the same tag (and database) are one deployment.
    pub fn start_shared(
        database_url: &str,
        redis: &[String],
        extra: &[&str],
        tag: &str,
    ) -> anyhow::Result<Self> {
        Self::spawn(server_binary()?, database_url, redis, extra, tag)
    }

    /// The bench build of the server (`boxoffice-strategies`), with
    /// `extra` choosing its coupon lock strategy.
    pub fn start_strategies(
        database_url: &str,
        redis: &[String],
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        Self::spawn(strategies_binary()?, database_url, redis, extra, &tag)
    }

    fn spawn(
        program: PathBuf,
        database_url: &str,
        redis: &[String],
        extra: &[&str],
        tag: &str,
    ) -> anyhow::Result<Self> {
        let own = uuid::Uuid::new_v4().simple().to_string();
        let data_platform_dir = std::env::temp_dir().join(format!("bo-bench-{own}"));
        let mut child = Command::new(program)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                database_url,
            ])
            .args(redis)
            .args([
                "--jwt-secret",
                JWT_SECRET,
                "--queue-token-secret",
                QUEUE_TOKEN_SECRET,
                "--seed-demo",
                "false",
                "--log-format",
                "text",
            ])
            .args([
                "--redis-prefix",
                &format!("bo:bench:{tag}"),
                "--event-stream",
                &format!("bo:bench:{tag}:events"),
            ])
            .args([
                "--data-platform-sink",
                &format!("file:{}", data_platform_dir.display()),
            ])
            .args(extra)
            .env("BOXOFFICE_LOG", "warn,boxoffice=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the server")?;
        let stderr = child.stderr.take().context("server stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("url=http://") {
                    let url = line[at + 4..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(url);
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .context("the server did not announce its URL within 60 s")?;
        Ok(Self {
            child,
            base,
            data_platform_dir,
            codec: JwtCodec::new(JWT_SECRET.as_bytes()),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn token(&self, user: i64, role: Role) -> String {
        self.codec
            .issue(
                Identity {
                    user_id: UserId(user),
                    role,
                },
                Validity::new(Utc::now(), TimeDelta::hours(2)),
            )
            .expect("signing a token")
    }

    /// Creates a concert with one schedule of `count` seats a month from now,
    /// as the admin; returns the API's answer.
    pub async fn create_concert(
        &self,
        client: &reqwest::Client,
        title: &str,
        grade: &str,
        count: u64,
    ) -> anyhow::Result<serde_json::Value> {
        let seats = serde_json::json!([{"grade": grade, "price": 1000, "count": count}]);
        self.create_concert_with_seats(client, title, seats).await
    }

    /// Creates a concert with one schedule a month from now whose seats are
    /// `seats` (the admin API's seat blocks: grade, price, count and
    /// optionally section and row), as the admin; returns the API's answer.
    pub async fn create_concert_with_seats(
        &self,
        client: &reqwest::Client,
        title: &str,
        seats: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let body = serde_json::json!({
            "title": title, "venue": "Loopback Arena",
            "schedules": [{"startsAt": (Utc::now() + TimeDelta::days(30)).to_rfc3339(),
                           "seats": seats}]
        });
        Ok(client
            .post(self.url("/v1/admin/concerts"))
            .bearer_auth(self.token(1, Role::Admin))
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// The concert's id and its first schedule's, from `create_concert`'s
    /// answer.
    pub fn concert_and_schedule(concert: &serde_json::Value) -> anyhow::Result<(i64, i64)> {
        let concert_id = concert["id"].as_i64().context("concert id")?;
        let schedule_id = concert["schedules"][0]["id"]
            .as_i64()
            .context("schedule id")?;
        Ok((concert_id, schedule_id))
    }

    /// Sets the waiting room of `concert_id` (`admitPerSecond`, `maxActive`,
    /// `activeTtlSeconds`, `heartbeatGraceSeconds`), as the admin.
    pub async fn set_room(
        &self,
        client: &reqwest::Client,
        concert_id: i64,
        settings: serde_json::Value,
    ) -> anyhow::Result<()> {
        client
            .put(self.url(&format!("/v1/admin/queue/{concert_id}/settings")))
            .bearer_auth(self.token(1, Role::Admin))
            .json(&settings)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Opens the waiting room of `concert_id` wide: everyone is admitted
    /// at once and stays for an hour, so a race after it is the buyers' own.
    pub async fn open_room(&self, client: &reqwest::Client, concert_id: i64) -> anyhow::Result<()> {
        let settings = serde_json::json!({"admitPerSecond": 100000, "maxActive": 1000000,
                                          "activeTtlSeconds": 3600, "heartbeatGraceSeconds": 600});
        self.set_room(client, concert_id, settings).await
    }

    /// Enters the waiting room of `concert_id` as the holder of `token`
    /// and polls every 200 ms until admitted; the queue token.
    pub async fn admitted(
        &self,
        client: &reqwest::Client,
        token: &str,
        concert_id: i64,
    ) -> anyhow::Result<String> {
        let ticket: serde_json::Value = client
            .post(self.url("/v1/queue/tokens"))
            .bearer_auth(token)
            .json(&serde_json::json!({"concertId": concert_id}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let queue = ticket["token"].as_str().context("queue token")?.to_owned();
        let mut status = ticket["status"].as_str().unwrap_or_default().to_owned();
        let started = std::time::Instant::now();
        while status != "active" {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "not admitted");
            tokio::time::sleep(Duration::from_millis(200)).await;
            let body: serde_json::Value = client
                .get(self.url("/v1/queue/status"))
                .header("x-queue-token", &queue)
                .send()
                .await?
                .json()
                .await?;
            status = body["status"].as_str().unwrap_or_default().to_owned();
        }
        Ok(queue)
    }

    /// Peak resident memory of the server process so far (VmHWM), in MiB.
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn peak_rss_mib(&self) -> Option<f64> {
        self.memory_mib("VmHWM:")
    }

    /// Resident memory of the server process now (VmRSS), in MiB.
    pub fn rss_mib(&self) -> Option<f64> {
        self.memory_mib("VmRSS:")
    }

    fn memory_mib(&self, field: &str) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
