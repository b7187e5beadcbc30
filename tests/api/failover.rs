//! A Redis primary failing over to its replica, with the writes
//! asynchronous replication had not yet carried over lost on the way.
//!
//! Each test starts a throwaway 3 + 3 Redis Cluster of its own (killing a
//! node of the shared one would disturb every other test), puts the coupon
//! ledger or the waiting room on it, and then makes the loss certain: the
//! replica is frozen (SIGSTOP) and cut off from its primary (`CLIENT KILL
//! TYPE replica`), boxoffice keeps writing to the primary, the primary is
//! killed (SIGKILL) and the replica thawed, and the cluster promotes it,
//! without the last writes. boxoffice must carry on without a restart and
//! repair what the promoted replica lacks.

use std::{
    collections::HashMap,
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::TimeDelta;
use futures::future::join_all;
use serde_json::Value;

use crate::{
    helpers::{TestApp, count, eventually, spawn_app_with},
    sales::sale,
};

const WAIT: Duration = Duration::from_secs(60);

struct Node {
    port: u16,
    child: Option<Child>,
}

/// Six `redis-server --cluster-enabled yes` on free loopback ports, made a
/// cluster of 3 primaries with a replica each; killed when dropped.
pub(crate) struct ThrowawayCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

/// A port free for the node and for its cluster bus (port + 10000).
fn cluster_port(taken: &[u16]) -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < 55_536
            && !taken.contains(&port)
            && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return port;
        }
    }
}

pub(crate) fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{sig} {pid}");
}

impl ThrowawayCluster {
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes: Vec<Node> = Vec::new();
        for _ in 0..6 {
            let taken: Vec<u16> = nodes.iter().map(|n| n.port).collect();
            let port = cluster_port(&taken);
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                ])
                .args(["--cluster-config-file", "nodes.conf"])
                // Fail over within a few seconds, whatever the replica's lag.
                .args(["--cluster-node-timeout", "1000"])
                .args(["--cluster-replica-validity-factor", "0"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server starts");
            nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        for node in &nodes {
            eventually("a cluster node to answer", WAIT, || async {
                (cli(node.port, &["PING"]) == "PONG").then_some(())
            })
            .await;
        }
        let hosts: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&hosts)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create runs");
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = Self { nodes, _dir: dir };
        cluster.settled().await;
        cluster
    }

    /// The ports of the live primaries.
    pub(crate) fn primaries(&self) -> Vec<u16> {
        self.live()
            .filter(|n| cli(n.port, &["ROLE"]).lines().next() == Some("master"))
            .map(|n| n.port)
            .collect()
    }

    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect()
    }

    fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// Every live node says the cluster is fine.
    pub(crate) async fn settled(&self) {
        eventually("cluster_state:ok on every live node", WAIT, || async {
            self.live()
                .all(|n| cli(n.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
                .then_some(())
        })
        .await;
    }

    /// The primary serving `key`'s slot and its replica.
    pub(crate) fn owner_of(&self, key: &str) -> (u16, u16) {
        let any = self.live().next().unwrap().port;
        let slot: u16 = cli(any, &["CLUSTER", "KEYSLOT", key]).parse().unwrap();
        let nodes = cli(any, &["CLUSTER", "NODES"]);
        let mut primary = None;
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if !f[2].contains("master") {
                continue;
            }
            let serves = f[8..].iter().any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                match (lo.parse::<u16>(), hi.parse::<u16>()) {
                    (Ok(lo), Ok(hi)) => (lo..=hi).contains(&slot),
                    _ => false,
                }
            });
            if serves {
                primary = Some((f[0].to_owned(), port_of(f[1])));
            }
        }
        let (id, primary) = primary.expect("a primary serves every slot");
        let replica = nodes
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f[2].contains("slave") && f[3] == id)
            .map(|f| port_of(f[1]))
            .expect("the primary has a replica");
        (primary, replica)
    }

    fn pid(&self, port: u16) -> u32 {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .and_then(|n| n.child.as_ref())
            .expect("a live node")
            .id()
    }

    /// Freezes the replica and cuts it off from its primary: from here on
    /// the primary's writes are its alone.
    pub(crate) fn cut_off(&self, primary: u16, replica: u16) {
        assert_eq!(cli(primary, &["WAIT", "1", "5000"]), "1", "in sync so far");
        signal(self.pid(replica), "STOP");
        let killed = cli(primary, &["CLIENT", "KILL", "TYPE", "replica"]);
        assert_eq!(killed, "1", "the replication link is cut");
    }

    /// SIGKILL for the primary, the replica thawed; returns once the
    /// replica has been promoted and the cluster is whole again.
    pub(crate) async fn fail_over(&mut self, primary: u16, replica: u16) -> Duration {
        let started = Instant::now();
        let node = self.nodes.iter_mut().find(|n| n.port == primary).unwrap();
        let mut child = node.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        signal(self.pid(replica), "CONT");
        eventually("the replica to be promoted", WAIT, || async {
            cli(replica, &["ROLE"])
                .lines()
                .next()
                .is_some_and(|role| role == "master")
                .then_some(())
        })
        .await;
        self.settled().await;
        started.elapsed()
    }
}

fn port_of(address: &str) -> u16 {
    // 127.0.0.1:7000@17000
    address
        .split(['@', ','])
        .next()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("ip:port@cport")
}

impl Drop for ThrowawayCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // A frozen node must be thawed to die cleanly.
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .status();
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

async fn app_on(
    cluster: &ThrowawayCluster,
    configure: impl FnOnce(&mut boxoffice::config::Settings),
) -> TestApp {
    let nodes = cluster.urls();
    spawn_app_with(move |s| {
        s.redis_url = None;
        s.redis_cluster_nodes = nodes;
        configure(s);
    })
    .await
}

async fn counter(app: &TestApp, name: &str) -> f64 {
    app.metrics_text()
        .await
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One claim, retried while the answer is 503 (as a client honouring
/// `Retry-After` would): the final status and body, and how many 503s.
async fn claim(app: &TestApp, coupon: i64, user: i64) -> (u16, Value, u32) {
    let mut unavailable = 0;
    let started = Instant::now();
    loop {
        let resp = app.issue_coupon(coupon, user).await;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status != 503 {
            return (status, body, unavailable);
        }
        assert!(
            !body["detail"]
                .as_str()
                .unwrap_or("")
                .contains("already taken"),
            "the promoted ledger handed out a number the database already had: {body}"
        );
        unavailable += 1;
        assert!(started.elapsed() < WAIT, "still 503 after a minute: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_coupon_ledger_whose_primary_fails_over_with_lost_writes_is_rebuilt_and_never_over_issues()
 {
    const QUANTITY: i64 = 60;
    let mut cluster = ThrowawayCluster::start().await;
    let app = Arc::new(
        app_on(&cluster, |s| {
            // The reconciler stays out of it: the repair must come from the epoch.
            s.coupon_reconcile_seconds = 3_600;
        })
        .await,
    );
    let (coupon, _) = app.create_coupon(QUANTITY, TimeDelta::days(1)).await;
    let meta = format!("{}:{{coupon:{coupon}}}:meta", app.settings.redis_prefix);

    // Twenty winners, replicated.
    for user in 1..=20 {
        assert_eq!(claim(&app, coupon, user).await.0, 201);
    }
    let (primary, replica) = cluster.owner_of(&meta);
    cluster.cut_off(primary, replica);
    // Ten more on the primary alone: in the database, never replicated.
    let mut numbers: HashMap<i64, Value> = HashMap::new();
    for user in 21..=30 {
        let (status, body, _) = claim(&app, coupon, user).await;
        assert_eq!(status, 201, "{body}");
        numbers.insert(user, body["issueNumber"].clone());
    }

    // The storm starts as the primary dies: the ten again, and 150 new.
    let killed = Instant::now();
    let storm: Vec<_> = (21..=180)
        .map(|user| {
            let app = app.clone();
            tokio::spawn(async move {
                let (status, body, unavailable) = claim(&app, coupon, user).await;
                (user, status, body, unavailable, killed.elapsed())
            })
        })
        .collect();
    let promoted_in = cluster.fail_over(primary, replica).await;
    let answers: Vec<_> = join_all(storm)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let unavailable: u32 = answers.iter().map(|a| a.3).sum();
    let first_ok = answers
        .iter()
        .filter(|a| a.1 != 503)
        .map(|a| a.4)
        .min()
        .unwrap();
    let mut won = 0;
    for (user, status, body, _, _) in &answers {
        if (21..=30).contains(user) {
            assert_eq!(
                (*status, body["code"].as_str()),
                (409, Some("already_issued")),
                "user {user} won before the failover: {body}"
            );
        } else if *status == 201 {
            won += 1;
        } else {
            assert_eq!(
                (*status, body["code"].as_str()),
                (409, Some("sold_out")),
                "{body}"
            );
        }
    }
    assert_eq!(won, QUANTITY - 30, "exactly the rest of the quantity");

    let db = &app.db;
    let issued = format!("FROM user_coupons WHERE coupon_id = {coupon}");
    assert_eq!(
        count(db, &format!("SELECT COUNT(*) {issued}")).await,
        QUANTITY
    );
    assert_eq!(
        count(db, &format!("SELECT COUNT(DISTINCT issue_number) {issued}")).await,
        QUANTITY
    );
    assert_eq!(
        count(db, &format!("SELECT MAX(issue_number) {issued}")).await,
        QUANTITY
    );
    for (user, number) in &numbers {
        assert_eq!(
            count(
                db,
                &format!("SELECT issue_number {issued} AND user_id = {user}")
            )
            .await,
            number.as_i64().unwrap(),
            "user {user} kept their number"
        );
    }
    let stats = app.coupon_stats(coupon).await;
    assert_eq!(stats["issued"], QUANTITY);
    assert_eq!(
        stats["ledgerIssued"], QUANTITY,
        "ledger = database: {stats}"
    );
    assert!(counter(&app, "coupon_ledger_failovers_total").await >= 1.0);
    eprintln!(
        "coupon failover: promoted in {promoted_in:?}; first answer {first_ok:?} after the kill; \
         {unavailable} × 503 (retried); {won} more won, {} sold out, 10 already issued; \
         DB {QUANTITY} issued, ledger {}",
        answers.len() as i64 - won - 10,
        stats["ledgerIssued"]
    );
}

/// The token's status, or `None` while the room answers something else
/// (a 503 while the cluster settles).
async fn status_of(app: &TestApp, token: &str) -> Option<Value> {
    let resp = app
        .get("/v1/queue/status")
        .header("x-queue-token", token)
        .send()
        .await
        .ok()?;
    if resp.status() != 200 {
        return None;
    }
    resp.json().await.ok()
}

/// Polls, re-enters when the room lost the token, leaves once admitted;
/// returns when the user has been admitted once after the failover.
async fn until_admitted_then_leave(app: &TestApp, user: i64, concert: &Value, token: String) {
    let mut token = token;
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < WAIT, "user {user} never admitted again");
        match status_of(app, &token)
            .await
            .as_ref()
            .and_then(|s| s["status"].as_str())
        {
            Some("active") => {
                let left = app.leave_queue(&token).await.status().as_u16();
                assert!(matches!(left, 204 | 404 | 503), "leave: {left}");
                if left != 503 {
                    return;
                }
            }
            Some("expired") => {
                let resp = app
                    .post("/v1/queue/tokens")
                    .bearer_auth(app.user_token(user))
                    .json(&serde_json::json!({ "concertId": concert }))
                    .send()
                    .await
                    .unwrap();
                if resp.status() == 201 {
                    let entered: Value = resp.json().await.unwrap();
                    token = entered["token"].as_str().unwrap().to_owned();
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_waiting_room_whose_primary_fails_over_with_lost_writes_never_admits_more_than_max_active()
 {
    const MAX_ACTIVE: i64 = 5;
    let mut cluster = ThrowawayCluster::start().await;
    let app = Arc::new(
        app_on(&cluster, |s| {
            s.queue_max_active = MAX_ACTIVE;
            s.queue_admit_per_second = 50;
        })
        .await,
    );
    let sale = sale(&app, 4).await;
    let concert = sale.concert.clone();
    let meta = format!("{}:{{queue:{concert}}}:meta", app.settings.redis_prefix);

    // Watch the room and the gate the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let most_active = Arc::new(AtomicI64::new(0));
    let watcher = {
        let (app, stop, most_active, concert) = (
            app.clone(),
            stop.clone(),
            most_active.clone(),
            concert.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let resp = app
                    .get("/v1/admin/queue")
                    .bearer_auth(app.admin_token())
                    .send()
                    .await;
                if let Ok(resp) = resp
                    && resp.status() == 200
                {
                    let rooms: Value = resp.json().await.unwrap();
                    for room in rooms["items"].as_array().unwrap() {
                        if room["concertId"] == concert {
                            most_active
                                .fetch_max(room["active"].as_i64().unwrap(), Ordering::Relaxed);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // Five active, fifteen waiting: replicated.
    let mut tokens: HashMap<i64, String> = HashMap::new();
    for user in 1..=MAX_ACTIVE {
        tokens.insert(user, app.admitted_token(user, &concert).await);
    }
    for user in 6..=20 {
        let entered = app.enter_queue(user, &concert).await;
        tokens.insert(user, entered["token"].as_str().unwrap().to_owned());
    }
    let (primary, replica) = cluster.owner_of(&meta);
    cluster.cut_off(primary, replica);

    // On the primary alone: three leave, three are admitted, five enter.
    for user in 1..=3 {
        assert_eq!(app.leave_queue(&tokens[&user]).await.status(), 204);
    }
    for user in 6..=8 {
        eventually("the next three admitted", WAIT, || async {
            (app.queue_status(&tokens[&user]).await["status"] == "active").then_some(())
        })
        .await;
    }
    for user in 21..=25 {
        let entered = app.enter_queue(user, &concert).await;
        tokens.insert(user, entered["token"].as_str().unwrap().to_owned());
    }

    let killed = Instant::now();
    let promoted_in = cluster.fail_over(primary, replica).await;
    let back = eventually("the room to answer again", WAIT, || async {
        let resp = app
            .get("/v1/admin/queue")
            .bearer_auth(app.admin_token())
            .send()
            .await
            .ok()?;
        (resp.status() == 200).then(|| killed.elapsed())
    })
    .await;
    eventually("the failover noticed by the scheduler", WAIT, || async {
        (counter(&app, "queue_failovers_total").await >= 1.0).then_some(())
    })
    .await;

    // At this moment, whom does the gate let through? Never more than
    // maxActive, whatever the promoted replica forgot.
    let gate = join_all((1..=25).map(|user| {
        let (app, token, schedule) = (app.clone(), tokens[&user].clone(), sale.schedule.clone());
        async move {
            let resp = app
                .get(&format!("/v1/schedules/{schedule}/seats"))
                .bearer_auth(app.user_token(user))
                .header("x-queue-token", token)
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        }
    }))
    .await;
    let through = gate.iter().filter(|s| **s == 200).count() as i64;
    assert!(
        gate.iter().all(|s| *s == 200 || *s == 403),
        "the gate answers 200 or 403: {gate:?}"
    );
    assert!(
        through <= MAX_ACTIVE,
        "{through} users passed the gate at once, over maxActive {MAX_ACTIVE}"
    );

    // Everybody is admitted in the end, re-entering if the room lost them.
    join_all((1..=25).map(|user| {
        let (app, token, concert) = (app.clone(), tokens[&user].clone(), concert.clone());
        async move { until_admitted_then_leave(&app, user, &concert, token).await }
    }))
    .await;
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    let most = most_active.load(Ordering::Relaxed);
    assert!(
        (1..=MAX_ACTIVE).contains(&most),
        "at most {MAX_ACTIVE} active at any time, saw {most}"
    );
    eprintln!(
        "queue failover: promoted in {promoted_in:?}; room answering {back:?} after the kill; \
         gate let {through} of 25 through right after; most active seen {most} (max {MAX_ACTIVE}); \
         all 25 admitted afterwards"
    );
}
