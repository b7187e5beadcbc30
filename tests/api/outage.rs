//! Dependency outages: the Redis a server uses is killed under load and
//! started again, and its PostgreSQL is cut off and restored. Meanwhile the
//! endpoints that need the missing store answer 503 `unavailable` with
//! `Retry-After`, everything else keeps working, and service comes back by
//! itself, without a restart of the server.

use std::{
    collections::BTreeMap,
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::TimeDelta;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_problem, concert_body, count, eventually, fresh_database_url, spawn_app_with,
};

const WAIT: Duration = Duration::from_secs(30);

/// A Redis server of this test's own, on a free loopback port, so that
/// stopping it cannot disturb the other tests. With `durable` it keeps an
/// append-only file, so a restart finds its data again.
pub(crate) struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
    durable: bool,
    child: Option<Child>,
}

impl OwnRedis {
    pub(crate) fn start(durable: bool) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Self {
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            durable,
            child: None,
        };
        redis.restart();
        redis
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let appendonly = if self.durable { "yes" } else { "no" };
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                appendonly,
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test installs it)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).expect("a Redis URL");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while client
            .get_connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "own redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no goodbye to the clients, as in a crash.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn spawn_on(redis: &OwnRedis) -> TestApp {
    let url = redis.url();
    spawn_app_with(|s| {
        s.redis_url = Some(url);
        // A ledger lost with Redis is rebuilt on first use; keep the
        // reconciler out of the way so the test sees that path.
        s.coupon_reconcile_seconds = 3_600;
        // A ledger step whose answer was lost with the connection leaves an
        // entry without a row; the reconciler may drop it after this long.
        s.coupon_reconcile_grace_seconds = 1;
    })
    .await
}

async fn enter(app: &TestApp, user: i64, concert: &Value) -> reqwest::Response {
    app.post("/v1/queue/tokens")
        .bearer_auth(app.user_token(user))
        .json(&json!({ "concertId": concert }))
        .send()
        .await
        .expect("request")
}

async fn issue(app: &TestApp, coupon: i64, user: i64) -> reqwest::Response {
    app.issue_coupon(coupon, user).await
}

async fn charge(app: &TestApp, user: i64) -> reqwest::Response {
    app.post("/v1/wallet/charges")
        .bearer_auth(app.user_token(user))
        .json(&json!({ "amount": 1_000 }))
        .send()
        .await
        .expect("request")
}

/// Mixed traffic until stopped: entering, polling, claiming coupons and
/// reading the catalog; every answer's status is counted by endpoint.
/// Answers counted by (endpoint, status).
type Seen = BTreeMap<(String, u16), u32>;

/// Mixed traffic running in the background until `finish`.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Stops the traffic; every request got an HTTP answer (a transport
    /// error panics its task). Returns what was answered.
    async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await
                .expect("no load task panicked (no transport errors)");
        }
        self.seen.lock().unwrap().clone()
    }
}

fn start_load(app: Arc<TestApp>, concert: Value, coupon: i64) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let tasks = (0..6)
        .map(|worker| {
            let (app, concert, stop, seen) =
                (app.clone(), concert.clone(), stop.clone(), seen.clone());
            tokio::spawn(async move {
                let mut user = 1_000 + worker * 10_000;
                while !stop.load(Ordering::Relaxed) {
                    user += 1;
                    let note = |what: &str, status: u16| {
                        *seen
                            .lock()
                            .unwrap()
                            .entry((what.to_owned(), status))
                            .or_default() += 1;
                    };
                    let entered = enter(&app, user, &concert).await;
                    note("enter", entered.status().as_u16());
                    if entered.status() == 201 {
                        let body: Value = entered.json().await.unwrap();
                        let status = app
                            .get("/v1/queue/status")
                            .header("x-queue-token", body["token"].as_str().unwrap())
                            .send()
                            .await
                            .expect("request");
                        note("status", status.status().as_u16());
                    }
                    note("issue", issue(&app, coupon, user).await.status().as_u16());
                    let concerts = app.get("/v1/concerts").send().await.expect("request");
                    note("concerts", concerts.status().as_u16());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    Load { stop, seen, tasks }
}

#[tokio::test]
async fn redis_killed_under_load_answers_503_and_service_resumes_by_itself() {
    let mut redis = OwnRedis::start(true);
    let app = Arc::new(spawn_on(&redis).await);
    let concert = app.create_concert(&concert_body(1, 9)).await["id"].clone();
    let (coupon, _) = app.create_coupon(50, TimeDelta::days(1)).await;
    let load = start_load(app.clone(), concert.clone(), coupon);
    tokio::time::sleep(Duration::from_millis(300)).await;

    redis.kill();
    // Redis-backed endpoints: 503 unavailable with Retry-After.
    let entered = enter(&app, 1, &concert).await;
    assert!(entered.headers().contains_key("retry-after"));
    assert_problem(entered, 503, "unavailable").await;
    let issued = issue(&app, coupon, 1).await;
    assert!(issued.headers().contains_key("retry-after"));
    assert_problem(issued, 503, "unavailable").await;
    let ready = app.get("/health/ready").send().await.unwrap();
    assert_eq!(ready.status(), 503);
    // Everything else goes on.
    assert_eq!(app.get("/health/live").send().await.unwrap().status(), 200);
    assert_eq!(app.get("/v1/concerts").send().await.unwrap().status(), 200);
    assert_eq!(
        charge(&app, 2).await.status(),
        201,
        "the wallet needs no Redis"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    redis.restart();
    eventually("the waiting room to answer again", WAIT, || async {
        (enter(&app, 1, &concert).await.status() == 201).then_some(())
    })
    .await;
    eventually("coupons to answer again", WAIT, || async {
        (issue(&app, coupon, 1).await.status() != 503).then_some(())
    })
    .await;
    eventually("readiness", WAIT, || async {
        (app.get("/health/ready").send().await.unwrap().status() == 200).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = load.finish().await;
    for ((what, status), n) in &seen {
        assert!(
            [200, 201, 409, 503].contains(status),
            "{what} answered {status} ({n} times): {seen:?}"
        );
        assert!(
            *status != 503 || what != "concerts",
            "the catalog does not need Redis: {seen:?}"
        );
    }
    let outage: u32 = seen
        .iter()
        .filter(|((_, s), _)| *s == 503)
        .map(|(_, n)| n)
        .sum();
    assert!(outage > 0, "the load saw the outage: {seen:?}");

    // The charge made during the outage reaches the data platform.
    eventually("the outage's charge on the data platform", WAIT, || async {
        app.data_platform_lines()
            .iter()
            .any(|l| l["type"] == "WalletCharged" && l["payload"]["userId"] == 2)
            .then_some(())
    })
    .await;
    // Never over-issued, and the ledger agrees with the database.
    let rows = count(
        &app.db,
        &format!("SELECT COUNT(*) FROM user_coupons WHERE coupon_id = {coupon}"),
    )
    .await;
    assert!(rows <= 50);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    app.reconcile_coupon(coupon).await;
    let stats = app.coupon_stats(coupon).await;
    assert_eq!(stats["issued"], rows);
    assert_eq!(stats["ledgerIssued"], rows);
}

#[tokio::test]
async fn redis_restarted_empty_is_refilled_and_the_pipeline_resumes() {
    let mut redis = OwnRedis::start(false);
    let app = spawn_on(&redis).await;
    let concert = app.create_concert(&concert_body(1, 9)).await["id"].clone();
    let (coupon, _) = app.create_coupon(3, TimeDelta::days(1)).await;
    assert_eq!(issue(&app, coupon, 1).await.status(), 201);
    assert_eq!(enter(&app, 1, &concert).await.status(), 201);
    assert_eq!(charge(&app, 1).await.status(), 201);
    eventually("the first charge on the data platform", WAIT, || async {
        app.data_platform_lines()
            .iter()
            .any(|l| l["type"] == "WalletCharged" && l["payload"]["userId"] == 1)
            .then_some(())
    })
    .await;

    redis.kill();
    redis.restart();
    // Everything Redis held is gone: the ledger is rebuilt from the
    // database on first use, so user 1 still holds their coupon.
    eventually("coupons to answer again", WAIT, || async {
        (issue(&app, coupon, 2).await.status() == 201).then_some(())
    })
    .await;
    assert_problem(issue(&app, coupon, 1).await, 409, "already_issued").await;
    assert_eq!(issue(&app, coupon, 3).await.status(), 201);
    assert_problem(issue(&app, coupon, 4).await, 409, "sold_out").await;
    assert_eq!(enter(&app, 5, &concert).await.status(), 201);

    // The consumer groups are created again, and new events flow.
    assert_eq!(charge(&app, 6).await.status(), 201);
    eventually(
        "a charge after the restart on the data platform",
        WAIT,
        || async {
            app.data_platform_lines()
                .iter()
                .any(|l| l["type"] == "WalletCharged" && l["payload"]["userId"] == 6)
                .then_some(())
        },
    )
    .await;
    let stats = app.coupon_stats(coupon).await;
    assert_eq!(stats["issued"], 3);
    assert_eq!(stats["ledgerIssued"], 3);
}

/// A loopback TCP proxy that can be cut (every connection dropped, new ones
/// refused at once, as when a database host goes away) and restored.
struct CuttableProxy {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    _accept: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let accept = {
            let up = up.clone();
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: the client sees the connection closed
                    }
                    let (upstream, mut cuts) = (upstream.clone(), cuts.clone());
                    cuts.mark_unchanged();
                    tokio::spawn(async move {
                        let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cuts.changed() => {}
                        }
                    });
                }
            })
        };
        Self {
            addr,
            up,
            cut,
            _accept: accept,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn postgres_cut_off_under_load_answers_503_and_service_resumes_by_itself() {
    let direct = fresh_database_url().await;
    let (scheme_and_host, database) = direct.rsplit_once('/').expect("a database name");
    let (prefix, host) = scheme_and_host
        .rsplit_once('@')
        .map(|(user, host)| (format!("{user}@"), host.to_owned()))
        .unwrap_or_else(|| {
            let (scheme, host) = scheme_and_host.split_once("//").expect("a URL");
            (format!("{scheme}//"), host.to_owned())
        });
    let proxy = CuttableProxy::start(host).await;
    let through_proxy = format!("{prefix}{}/{database}", proxy.addr);
    let app = Arc::new(
        spawn_app_with(move |s| {
            s.database_url = through_proxy;
            s.redis_url = Some(crate::helpers::redis_url());
            s.coupon_reconcile_seconds = 3_600;
            s.coupon_reconcile_grace_seconds = 1;
        })
        .await,
    );
    let concert = app.create_concert(&concert_body(1, 9)).await["id"].clone();
    let (coupon, _) = app.create_coupon(50, TimeDelta::days(1)).await;
    assert_eq!(charge(&app, 1).await.status(), 201);
    let load = start_load(app.clone(), concert, coupon);
    tokio::time::sleep(Duration::from_millis(300)).await;

    proxy.cut();
    let concerts = app.get("/v1/concerts").send().await.unwrap();
    assert!(concerts.headers().contains_key("retry-after"));
    assert_problem(concerts, 503, "unavailable").await;
    let charged = charge(&app, 1).await;
    assert!(charged.headers().contains_key("retry-after"));
    assert_problem(charged, 503, "unavailable").await;
    assert_eq!(app.get("/health/ready").send().await.unwrap().status(), 503);
    assert_eq!(app.get("/health/live").send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_secs(1)).await;

    proxy.restore();
    eventually("the catalog to answer again", WAIT, || async {
        (app.get("/v1/concerts").send().await.unwrap().status() == 200).then_some(())
    })
    .await;
    eventually("readiness", WAIT, || async {
        (app.get("/health/ready").send().await.unwrap().status() == 200).then_some(())
    })
    .await;
    assert_eq!(charge(&app, 1).await.status(), 201);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = load.finish().await;
    assert!(
        seen.keys()
            .all(|(_, status)| [200, 201, 409, 503].contains(status)),
        "{seen:?}"
    );
    assert!(
        seen.contains_key(&("concerts".to_owned(), 503))
            && seen.contains_key(&("concerts".to_owned(), 200)),
        "the load saw the outage and the recovery: {seen:?}"
    );
    // Never over-issued; the ledger agrees with the database once reconciled.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    app.reconcile_coupon(coupon).await;
    let rows = count(
        &app.db,
        &format!("SELECT COUNT(*) FROM user_coupons WHERE coupon_id = {coupon}"),
    )
    .await;
    assert!(rows <= 50);
    let stats = app.coupon_stats(coupon).await;
    assert_eq!(stats["issued"], rows);
    assert_eq!(stats["ledgerIssued"], rows);
    // The refused charge left nothing behind: two charges, two ledger rows.
    assert_eq!(
        count(&app.db, "SELECT COUNT(*) FROM wallet_transactions").await,
        2
    );
    assert_eq!(crate::sales::balance(&app, 1).await, 2_000);
}

/// A small tmpfs of the test's own (the suite runs as root), unmounted
/// when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}M"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root: {status}");
        Self { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.path().join("filler")).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while filler.write_all(&chunk).is_ok() {}
        let mut byte = 0;
        while filler.write_all(&[0]).is_ok() && byte < 1 << 20 {
            byte += 1;
        }
    }

    fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).expect("remove the filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The embedded store's disk fills up under a running server (a process of
/// its own: readiness remembers a storage fault per process): writes
/// answer 503 `unavailable` with `Retry-After` (never 500), reads go on,
/// `/health/ready` says not ready; once space is freed, writes succeed and
/// the server is ready again, without a restart.
#[tokio::test]
async fn a_full_disk_under_sqlite_is_an_outage_that_heals() {
    let disk = SmallDisk::mount(16);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", disk.path().join("store.db").display());
    let mut server = crate::crash::Server::new(dir.path(), &db);
    server.start().await;
    let shopper = crate::crash::Shopper::of(&server);
    let client = reqwest::Client::new();
    let charge = |user: i64| {
        client
            .post(format!("{}/v1/wallet/charges", server.base))
            .bearer_auth(shopper.token(user, boxoffice::auth::domain::Role::User))
            .json(&json!({"amount": 10}))
            .send()
    };
    let ready = || async {
        client
            .get(format!("{}/health/ready", server.base))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(charge(1).await.unwrap().status(), 201);
    assert_eq!(ready().await, 200);

    disk.fill();
    let mut refused = None;
    for user in 2..2_000 {
        let resp = charge(user).await.unwrap();
        match resp.status().as_u16() {
            201 => {}
            503 => {
                refused = Some(resp);
                break;
            }
            other => panic!(
                "a full disk answered {other}: {}",
                resp.text().await.unwrap()
            ),
        }
    }
    let refused = refused.expect("a write on a full disk is refused");
    assert!(refused.headers().contains_key("retry-after"));
    assert_problem(refused, 503, "unavailable").await;
    assert_eq!(ready().await, 503, "not ready while writes fail");
    let concerts = client
        .get(format!("{}/v1/concerts", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(concerts.status(), 200, "reads go on");

    disk.free();
    eventually("writes after space is freed", WAIT, || async {
        (charge(5_000).await.ok()?.status() == 201).then_some(())
    })
    .await;
    eventually("ready again", WAIT, || async {
        (ready().await == 200).then_some(())
    })
    .await;
}

/// Another process holds the SQLite file's write lock (as `sqlite3` or a
/// backup tool would): writes answer 503 with `Retry-After` once the busy
/// timeout passes, `/health/ready` says the file is locked, reads go on,
/// and everything heals when the lock is let go.
#[tokio::test]
async fn a_sqlite_file_locked_by_another_process_is_an_outage_that_heals() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.db");
    let db = format!("sqlite://{}", file.display());
    let mut server = crate::crash::Server::new(dir.path(), &db)
        .with_args(&["--sqlite-busy-timeout-seconds", "1"]);
    server.start().await;
    let shopper = crate::crash::Shopper::of(&server);
    let client = reqwest::Client::new();
    let charge = |user: i64| {
        client
            .post(format!("{}/v1/wallet/charges", server.base))
            .bearer_auth(shopper.token(user, boxoffice::auth::domain::Role::User))
            .json(&json!({"amount": 10}))
            .send()
    };
    let ready = || async {
        let resp = client
            .get(format!("{}/health/ready", server.base))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    assert_eq!(charge(1).await.unwrap().status(), 201);
    assert_eq!(ready().await.0, 200);

    // A writer of its own: takes the lock, says so, holds it until told.
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN IMMEDIATE')\n\
             print('locked', flush=True)\n\
             sys.stdin.readline()\n\
             c.execute('ROLLBACK')\n",
        )
        .arg(&file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut said = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut said,
    )
    .unwrap();
    assert_eq!(said.trim(), "locked");

    let refused = charge(2).await.unwrap();
    assert!(refused.headers().contains_key("retry-after"));
    assert_problem(refused, 503, "unavailable").await;
    let (status, body) = ready().await;
    assert_eq!(status, 503, "not ready while the file is locked: {body}");
    assert!(body.contains("locked"), "{body}");
    let concerts = client
        .get(format!("{}/v1/concerts", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(concerts.status(), 200, "reads go on");

    drop(holder.stdin.take()); // end of input: it rolls back and exits
    assert!(holder.wait().unwrap().success());
    eventually("ready once the lock is let go", WAIT, || async {
        (ready().await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(charge(3).await.unwrap().status(), 201);
}
