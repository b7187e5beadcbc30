//! The delivery audit: every committed event reaches every consumer group
//! subscribed to its type, whatever Redis loses. Real server processes on
//! the run's database with the standalone Redis; the loss is made by hand
//! in Redis, as a failover or an operator would make it.

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use sea_orm::{Database, DatabaseConnection};
use serde_json::Value;

use crate::{
    crash::{ADMIN, Server, Shopper, crash_database, exported_event_ids},
    helpers::{count, eventually, redis_cluster_nodes, redis_url, spawn_app_with},
};

/// Long enough for a repair: the audit looks every second here.
const REPAIR: Duration = Duration::from_secs(60);

/// Where a deployment's events go: a standalone Redis, or a cluster.
enum Bus {
    Redis(String),
    Cluster(Vec<String>),
}

impl Bus {
    fn args(&self) -> Vec<String> {
        match self {
            Bus::Redis(url) => vec!["--redis-url".to_owned(), url.clone()],
            Bus::Cluster(nodes) => vec!["--redis-cluster-nodes".to_owned(), nodes.join(",")],
        }
    }

    /// Deletes `key` (one key: one slot on a cluster).
    async fn del(&self, key: &str) -> i64 {
        match self {
            Bus::Redis(url) => {
                let client = redis::Client::open(url.as_str()).unwrap();
                let mut redis = client.get_multiplexed_async_connection().await.unwrap();
                redis.del(key).await.unwrap()
            }
            Bus::Cluster(nodes) => {
                let client = redis::cluster::ClusterClient::new(nodes.clone()).unwrap();
                let mut redis = client.get_async_connection().await.unwrap();
                redis.del(key).await.unwrap()
            }
        }
    }
}

/// A deployment of this test: one database, one Redis, its own stream.
struct Deployment {
    _dir: tempfile::TempDir,
    sink: std::path::PathBuf,
    database_url: String,
    shared: String,
}

impl Deployment {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database_url = crash_database(dir.path()).await;
        Self {
            sink: dir.path().join("data-platform"),
            _dir: dir,
            database_url,
            shared: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// A server of this deployment on `redis`, auditing events two seconds
    /// old.
    fn server(&self, redis: &Bus, args: &[&str]) -> Server {
        Server::with(&self.sink, &self.database_url, &self.shared, &redis.args())
            .with_args(&["--delivery-audit-after-seconds", "2"])
            .with_args(args)
    }

    async fn seats(&self, schedule: &Value) -> Vec<i64> {
        crate::helpers::column::<i64>(
            &self.db().await,
            &format!("SELECT id FROM seats WHERE schedule_id = {schedule} ORDER BY id"),
        )
        .await
    }

    fn stream(&self) -> String {
        format!("bo:crash:{}:events", self.shared)
    }

    async fn db(&self) -> DatabaseConnection {
        Database::connect(self.database_url.as_str()).await.unwrap()
    }
}

async fn payment_status(shopper: &Shopper, user: i64, payment: i64) -> String {
    let (_, body) = shopper
        .get(&format!("/v1/payments/{payment}"), user, None)
        .await
        .expect("the payment");
    body["status"].as_str().unwrap_or_default().to_owned()
}

/// The payment's `PaymentCompleted` event id.
async fn completed_event(db: &DatabaseConnection, payment: i64) -> String {
    crate::helpers::column::<uuid::Uuid>(
        db,
        &format!(
            "SELECT event_id FROM outbox WHERE event_type = 'PaymentCompleted' \
             AND aggregate_id = '{payment}' AND target_consumer IS NULL"
        ),
    )
    .await
    .pop()
    .expect("the PaymentCompleted row")
    .to_string()
}

/// The reservations group (the saga step that confirms a paid seat) is
/// paused while a payment goes through, then the event stream is deleted —
/// what a failover that loses acknowledged writes, or a `DEL`, does to
/// the entries — and the server comes back without the pause. The group
/// never received `PaymentCompleted` and cannot from the new stream: the
/// audit sends it again, and the payment ends confirmed, with one
/// receipt, one notification and one data-platform line.
#[tokio::test]
async fn an_event_lost_with_its_stream_under_a_paused_group_is_delivered_by_the_audit() {
    stream_lost_under_a_paused_group(Bus::Redis(redis_url()), "Redis").await;
}

#[tokio::test]
async fn on_the_cluster_an_event_lost_with_its_stream_under_a_paused_group_is_delivered_by_the_audit()
 {
    stream_lost_under_a_paused_group(Bus::Cluster(redis_cluster_nodes()), "the Redis Cluster")
        .await;
}

async fn stream_lost_under_a_paused_group(bus: Bus, on: &str) {
    let deployment = Deployment::new().await;
    let mut paused = deployment.server(&bus, &["--paused-consumers", "reservations"]);
    paused.start().await;
    let shopper = Shopper::of(&paused);
    let (created, _) = shopper.sale(2).await;
    let seat = deployment.seats(&created["schedules"][0]["id"]).await[0];
    let user = 7;
    let payment = shopper
        .buy(user, &created["id"], &created["schedules"][0]["id"], seat)
        .await;
    let db = deployment.db().await;
    // Every other group handled it; the paused one cannot.
    eventually("the receipt", REPAIR, || async {
        (count(
            &db,
            &format!("SELECT COUNT(*) FROM receipts WHERE payment_id = {payment}"),
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
    assert_eq!(payment_status(&shopper, user, payment).await, "paid");
    marked_published(&db, payment).await;

    // The entries are lost.
    assert_eq!(bus.del(&deployment.stream()).await, 1);
    paused.kill();

    let mut server = deployment.server(&bus, &[]);
    let lost_at = Instant::now();
    server.start().await;
    let shopper = Shopper::of(&server);
    eventually(
        "the payment confirmed by the re-sent event",
        REPAIR,
        || async { (payment_status(&shopper, user, payment).await == "confirmed").then_some(()) },
    )
    .await;
    let took = lost_at.elapsed();
    let resent = count(
        &db,
        "SELECT CAST(COALESCE(SUM(redelivered), 0) AS BIGINT) FROM event_subscriptions WHERE consumer = 'reservations'",
    )
    .await;
    eprintln!(
        "delivery audit on {on}, stream deleted under a paused group: {resent} event(s) re-sent to `reservations`, payment confirmed {took:?} after the restart"
    );
    assert!(resent >= 1);
    each_confirmed_once(&deployment, &shopper, &[(user, payment)]).await;
    // Once handled everywhere, its rows are marked delivered.
    eventually("every row of the payment delivered", REPAIR, || async {
        (count(
            &db,
            &format!(
                "SELECT COUNT(*) FROM outbox WHERE event_type = 'PaymentCompleted' \
                 AND aggregate_id = '{payment}' AND delivered_at IS NULL"
            ),
        )
        .await
            == 0)
            .then_some(())
    })
    .await;
}

/// Waits until the payment's `PaymentCompleted` row is marked published
/// with its stream id: the relay will not publish it again, so after a
/// loss only the audit can bring it back.
async fn marked_published(db: &DatabaseConnection, payment: i64) {
    eventually("the event marked published", REPAIR, || async {
        (count(
            db,
            &format!(
                "SELECT COUNT(*) FROM outbox WHERE event_type = 'PaymentCompleted' \
                 AND aggregate_id = '{payment}' AND published_at IS NOT NULL AND stream_id IS NOT NULL"
            ),
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
}

/// Each payment ended as it should: confirmed, with one receipt, one
/// `reservation_confirmed` notification and one data-platform line for
/// its `PaymentCompleted`.
async fn each_confirmed_once(deployment: &Deployment, shopper: &Shopper, payments: &[(i64, i64)]) {
    let db = deployment.db().await;
    for (user, payment) in payments {
        eventually("the payment confirmed", REPAIR, || async {
            (payment_status(shopper, *user, *payment).await == "confirmed").then_some(())
        })
        .await;
        let receipts = format!("SELECT COUNT(*) FROM receipts WHERE payment_id = {payment}");
        let notices = format!(
            "SELECT COUNT(*) FROM notifications WHERE user_id = {user} AND kind = 'reservation_confirmed'"
        );
        // A step whose event the loss took comes with the audit's re-send.
        for (what, sql) in [("receipt", &receipts), ("notification", &notices)] {
            let n = eventually(what, REPAIR, || async {
                let n = count(&db, sql).await;
                (n > 0).then_some(n)
            })
            .await;
            assert_eq!(n, 1, "one {what} for payment {payment}");
        }
        let event = completed_event(&db, *payment).await;
        let lines = eventually("the data-platform line", REPAIR, || async {
            let lines = exported_event_ids(&deployment.sink);
            lines.contains(&event).then_some(lines)
        })
        .await;
        assert_eq!(
            lines.iter().filter(|id| **id == event).count(),
            1,
            "one data-platform line for payment {payment}"
        );
    }
}

/// `FLUSHALL` in the middle of a sale (on a Redis of the test's own): the
/// stream, its groups, the waiting room and the limits are gone at once,
/// with a burst of charges still on its way through the groups. The
/// consumer groups come back by themselves, later buyers buy as before,
/// every payment ends confirmed once each and every charge is exported
/// once — what the flush took from the stream the audit sends again.
#[tokio::test]
async fn a_flushall_in_the_middle_of_a_sale_loses_no_payment() {
    let redis_server = crate::outage::OwnRedis::start(false);
    let url = redis_server.url();
    flushall_mid_sale(Bus::Redis(url.clone()), "Redis", || async move {
        let client = redis::Client::open(url).unwrap();
        let mut redis = client.get_multiplexed_async_connection().await.unwrap();
        let () = redis::cmd("FLUSHALL")
            .query_async(&mut redis)
            .await
            .unwrap();
    })
    .await;
}

/// The same on a throwaway cluster of its own: `FLUSHALL` on every primary.
#[tokio::test]
async fn on_the_cluster_a_flushall_in_the_middle_of_a_sale_loses_no_payment() {
    let cluster = crate::failover::ThrowawayCluster::start().await;
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    flushall_mid_sale(
        Bus::Cluster(cluster.urls()),
        "the Redis Cluster",
        || async move {
            for port in primaries {
                assert_eq!(crate::failover::cli(port, &["FLUSHALL"]), "OK");
            }
        },
    )
    .await;
}

async fn flushall_mid_sale<F, Fut>(bus: Bus, on: &str, flush: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let deployment = Deployment::new().await;
    let mut server = deployment.server(&bus, &[]);
    server.start().await;
    let shopper = Shopper::of(&server);
    let (created, _) = shopper.sale(8).await;
    let (concert, schedule) = (&created["id"], &created["schedules"][0]["id"]);
    let seats = deployment.seats(schedule).await;
    let mut payments = Vec::new();
    for (n, seat) in seats[..4].iter().enumerate() {
        let user = 200 + n as i64;
        payments.push((user, shopper.buy(user, concert, schedule, *seat).await));
    }
    // Right behind the fourth payment, while its saga runs and a burst of
    // 300 wallet charges is still on its way through the groups.
    let charges = futures::future::join_all((400..700).map(|user| {
        shopper.post(
            "/v1/wallet/charges",
            user,
            None,
            Some(serde_json::json!({"amount": 10})),
        )
    }))
    .await;
    assert!(
        charges
            .iter()
            .all(|c| c.as_ref().is_some_and(|(s, _)| *s == 201))
    );
    flush().await;
    let flushed_at = Instant::now();
    for (n, seat) in seats[4..].iter().enumerate() {
        let user = 300 + n as i64;
        payments.push((user, shopper.buy(user, concert, schedule, *seat).await));
    }
    each_confirmed_once(&deployment, &shopper, &payments).await;
    let db = deployment.db().await;
    // Every charge reached the data platform, once.
    let charged: Vec<String> = crate::helpers::column::<uuid::Uuid>(
        &db,
        "SELECT event_id FROM outbox WHERE event_type = 'WalletCharged' AND target_consumer IS NULL",
    )
    .await
    .into_iter()
    .map(|id| id.to_string())
    .collect();
    assert!(charged.len() >= 300);
    let lines = eventually("every charge exported", REPAIR, || async {
        let lines = exported_event_ids(&deployment.sink);
        charged.iter().all(|id| lines.contains(id)).then_some(lines)
    })
    .await;
    for id in &charged {
        assert_eq!(
            lines.iter().filter(|l| *l == id).count(),
            1,
            "{id} exported once"
        );
    }
    let resent = count(
        &db,
        "SELECT CAST(COALESCE(SUM(redelivered), 0) AS BIGINT) FROM event_subscriptions",
    )
    .await;
    eprintln!(
        "delivery audit on {on}, FLUSHALL mid-sale: {resent} event(s) re-sent, all 8 payments confirmed {:?} after the flush",
        flushed_at.elapsed()
    );
}

/// Nothing lost: the audit marks every row delivered once every group
/// handled it, and sends nothing again — on either shape (in the embedded
/// one it has nothing else to do).
#[tokio::test]
async fn with_nothing_lost_the_audit_marks_rows_delivered_and_resends_nothing() {
    let app = spawn_app_with(|s| s.delivery_audit_after_seconds = 1).await;
    let sale = crate::sales::sale(&app, 2).await;
    let token = app.admitted_token(9, &sale.concert).await;
    crate::sales::charge(&app, 9, serde_json::json!(200_000)).await;
    let held: Value = crate::sales::hold(&app, 9, &token, &sale, sale.seats[0])
        .await
        .json()
        .await
        .unwrap();
    let payment: Value = crate::sales::pay(&app, 9, &token, &held["id"])
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/v1/payments/{}", payment["id"]);
    eventually("the payment confirmed", REPAIR, || async {
        (crate::sales::get_as(&app, 9, &path).await["status"] == "confirmed").then_some(())
    })
    .await;
    assert!(
        count(&app.db, "SELECT COUNT(*) FROM event_subscriptions WHERE consumer = 'reservations' AND event_type = 'PaymentCompleted'").await == 1,
        "the handlers registered what they handle"
    );
    eventually("every row delivered", REPAIR, || async {
        (count(
            &app.db,
            "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL",
        )
        .await
            == 0)
            .then_some(())
    })
    .await;
    assert_eq!(
        count(
            &app.db,
            "SELECT CAST(COALESCE(SUM(redelivered), 0) AS BIGINT) FROM event_subscriptions"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM outbox WHERE target_consumer IS NOT NULL"
        )
        .await,
        0,
        "no re-send written"
    );
}

/// A Redis Cluster primary fails over to its replica without the last
/// writes it had acknowledged (the existing failover harness: replica
/// frozen and cut off, primary killed, replica promoted): the stream
/// entries of the last payments, written while the saga's group was
/// paused, are gone from the promoted stream. The audit sends them again
/// and every payment ends confirmed once each.
#[tokio::test]
async fn a_failover_that_loses_acknowledged_stream_entries_loses_no_payment() {
    let mut cluster = crate::failover::ThrowawayCluster::start().await;
    let bus = Bus::Cluster(cluster.urls());
    let deployment = Deployment::new().await;
    let mut paused = deployment.server(&bus, &["--paused-consumers", "reservations"]);
    paused.start().await;
    let shopper = Shopper::of(&paused);
    let (created, _) = shopper.sale(6).await;
    let (concert, schedule) = (&created["id"], &created["schedules"][0]["id"]);
    let seats = deployment.seats(schedule).await;
    let db = deployment.db().await;
    let receipted = |payments: Vec<i64>| {
        let db = db.clone();
        async move {
            for payment in payments {
                eventually("the receipt", REPAIR, || async {
                    (count(
                        &db,
                        &format!("SELECT COUNT(*) FROM receipts WHERE payment_id = {payment}"),
                    )
                    .await
                        == 1)
                        .then_some(())
                })
                .await;
            }
        }
    };
    // Two payments replicated to the replica.
    let mut payments = Vec::new();
    for (n, seat) in seats[..2].iter().enumerate() {
        let user = 500 + n as i64;
        payments.push((user, shopper.buy(user, concert, schedule, *seat).await));
    }
    receipted(payments.iter().map(|(_, p)| *p).collect()).await;
    let (primary, replica) = cluster.owner_of(&deployment.stream());
    cluster.cut_off(primary, replica);
    // Three more on the primary alone: published, handled by every group
    // but the paused one, acknowledged — and never replicated.
    for (n, seat) in seats[2..5].iter().enumerate() {
        let user = 600 + n as i64;
        payments.push((user, shopper.buy(user, concert, schedule, *seat).await));
    }
    receipted(payments[2..].iter().map(|(_, p)| *p).collect()).await;
    let took_over = cluster.fail_over(primary, replica).await;
    paused.kill();
    let mut server = deployment.server(&Bus::Cluster(cluster.urls()), &[]);
    let lost_at = Instant::now();
    server.start().await;
    let shopper = Shopper::of(&server);
    each_confirmed_once(&deployment, &shopper, &payments).await;
    let resent = count(
        &db,
        "SELECT CAST(COALESCE(SUM(redelivered), 0) AS BIGINT) FROM event_subscriptions",
    )
    .await;
    eprintln!(
        "delivery audit on the Redis Cluster, failover losing acknowledged writes (promotion took {took_over:?}): \
         {resent} event(s) re-sent, all 5 payments confirmed {:?} after the restart",
        lost_at.elapsed()
    );
    assert!(
        resent >= 3,
        "the three lost PaymentCompleted at least: {resent}"
    );
}

/// A schedule cancellation waits for a paid payment to settle; the
/// payment's `PaymentCompleted` (and the cancellation's own event) are lost
/// with the stream while the saga's group is paused. The audit sends them
/// again, the payment settles (refunded) and the cancellation finishes.
#[tokio::test]
async fn a_schedule_cancellation_waiting_on_a_lost_event_finishes() {
    let bus = Bus::Redis(redis_url());
    let deployment = Deployment::new().await;
    let mut paused = deployment.server(&bus, &["--paused-consumers", "reservations"]);
    paused.start().await;
    let shopper = Shopper::of(&paused);
    let (created, _) = shopper.sale(2).await;
    let schedule = &created["schedules"][0]["id"];
    let seat = deployment.seats(schedule).await[0];
    let user = 8;
    let payment = shopper.buy(user, &created["id"], schedule, seat).await;
    let db = deployment.db().await;
    marked_published(&db, payment).await;
    let (status, body) = shopper
        .post(
            &format!("/v1/admin/schedules/{schedule}/cancel"),
            ADMIN,
            None,
            None,
        )
        .await
        .expect("an answer");
    assert!((200..300).contains(&status), "{status} {body}");
    let sale_of = |shopper: Shopper| async move {
        let path = format!("/v1/admin/schedules/{schedule}");
        shopper
            .get(&path, ADMIN, None)
            .await
            .expect("the schedule")
            .1
    };
    // It waits for the paid payment, which the paused group never settles.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sale_of(shopper.clone()).await["status"], "cancelling");
    eventually("the cancellation's event published", REPAIR, || async {
        (count(
            &db,
            "SELECT COUNT(*) FROM outbox WHERE event_type = 'ScheduleCancellationStarted' AND published_at IS NOT NULL",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
    assert_eq!(bus.del(&deployment.stream()).await, 1);
    paused.kill();

    let mut server = deployment.server(&bus, &[]);
    let lost_at = Instant::now();
    server.start().await;
    let shopper = Shopper::of(&server);
    eventually("the cancellation finished", REPAIR, || async {
        let sale = sale_of(shopper.clone()).await;
        (sale["status"] == "cancelled"
            && payment_status(&shopper, user, payment).await == "refunded")
            .then_some(())
    })
    .await;
    let resent = count(
        &db,
        "SELECT CAST(COALESCE(SUM(redelivered), 0) AS BIGINT) FROM event_subscriptions",
    )
    .await;
    eprintln!(
        "delivery audit on Redis, a cancellation waiting on a lost event: {resent} event(s) re-sent, \
         the cancellation finished {:?} after the restart",
        lost_at.elapsed()
    );
    assert!(resent >= 1);
    // Refunded once: the wallet has its points back exactly.
    let (_, wallet) = shopper
        .get("/v1/wallet", user, None)
        .await
        .expect("the wallet");
    let refunds = count(
        &db,
        &format!("SELECT COUNT(*) FROM outbox WHERE event_type = 'PaymentRefunded' AND aggregate_id = '{payment}' AND target_consumer IS NULL"),
    )
    .await;
    assert_eq!(refunds, 1, "refunded once: {wallet}");
}
