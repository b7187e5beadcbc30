//! One contract, two coupon issue ledgers (Redis, in-process).

use std::collections::HashSet;

use boxoffice::{
    coupon::{
        domain::{Campaign, LedgerDrift, LedgerEntry, LedgerStep, Winner},
        infra::{AnyCouponLedger, memory::MemoryCouponLedger, redis::RedisCouponLedger},
        ports::{CouponLedger, IssueRequest},
    },
    kernel::{CouponId, UserId, VendorId},
};
use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::helpers::{redis_cluster, redis_url};

const COUPON: CouponId = CouponId(42);

/// The ledger, and a way to make it lose everything (a restart for the
/// in-process one, a flush for Redis).
struct Subject {
    ledger: AnyCouponLedger,
    prefix: String,
    /// The Redis the ledger lives in (standalone or cluster).
    redis: Option<boxoffice::redis_client::Conn>,
}

impl Subject {
    async fn lose_everything(&mut self) {
        match &self.ledger {
            AnyCouponLedger::Memory(_) => {
                self.ledger = AnyCouponLedger::Memory(MemoryCouponLedger::default());
            }
            AnyCouponLedger::Redis(ledger) => {
                let mut conn = self.redis.clone().expect("a Redis ledger has its Redis");
                let keys: Vec<String> = ledger.keys(COUPON).to_vec();
                let _: () = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                assert!(keys.iter().all(|k| k.starts_with(&self.prefix)));
            }
        }
    }
}

async fn memory_ledger() -> Subject {
    Subject {
        ledger: AnyCouponLedger::Memory(MemoryCouponLedger::default()),
        prefix: String::new(),
        redis: None,
    }
}

async fn redis_ledger() -> Subject {
    let prefix = format!("bo:test:{}", Uuid::new_v4().simple());
    let client = redis::Client::open(redis_url()).unwrap();
    let conn = boxoffice::redis_client::Conn::from(client.get_connection_manager().await.unwrap());
    Subject {
        ledger: AnyCouponLedger::Redis(RedisCouponLedger::new(conn.clone(), &prefix)),
        prefix,
        redis: Some(conn),
    }
}

/// The same ledger on a Redis Cluster: a campaign's keys share one slot.
async fn cluster_ledger() -> Subject {
    let prefix = format!("bo:test:{}", Uuid::new_v4().simple());
    let (_, conn) = redis_cluster().await;
    Subject {
        ledger: AnyCouponLedger::Redis(RedisCouponLedger::new(conn.clone(), &prefix)),
        prefix,
        redis: Some(conn),
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
        .unwrap()
        .to_utc()
}

/// A campaign of `quantity` coupons (the ledger's quantity is the loaded one).
fn campaign(id: CouponId, quantity: u32) -> Campaign {
    Campaign {
        id,
        name: "Coffee".into(),
        discount: 500,
        quantity,
        valid_from: t0(),
        valid_until: t0() + TimeDelta::hours(1),
        vendor: VendorId(1),
    }
}

async fn issue_in(ledger: &AnyCouponLedger, coupon: CouponId, user: i64) -> LedgerStep {
    let campaign = campaign(coupon, 1);
    let request = IssueRequest {
        campaign: &campaign,
        user: UserId(user),
        key: None,
        now: t0(),
    };
    ledger.issue(request).await.unwrap()
}

async fn issue(ledger: &AnyCouponLedger, user: i64) -> LedgerStep {
    issue_in(ledger, COUPON, user).await
}

async fn revoke(ledger: &AnyCouponLedger, user: i64, number: u32, free_number: bool) -> bool {
    let winner = Winner {
        coupon: COUPON,
        user: UserId(user),
        number,
    };
    ledger.revoke(&winner, free_number).await.unwrap()
}

async fn an_unknown_campaign_is_missing(subject: Subject) {
    let ledger = &subject.ledger;
    assert_eq!(issue(ledger, 1).await, LedgerStep::Missing);
    assert_eq!(ledger.snapshot(COUPON).await.unwrap(), None);
    assert_eq!(ledger.issued(COUPON).await.unwrap(), None);
}

async fn numbers_run_from_one_to_quantity_then_sold_out(subject: Subject) {
    let ledger = &subject.ledger;
    assert!(ledger.load(&campaign(COUPON, 3), &[]).await.unwrap());
    assert!(
        !ledger.load(&campaign(COUPON, 3), &[]).await.unwrap(),
        "loading twice is a no-op"
    );
    assert_eq!(issue(ledger, 10).await, LedgerStep::Issued(1));
    assert_eq!(issue(ledger, 11).await, LedgerStep::Issued(2));
    assert_eq!(issue(ledger, 10).await, LedgerStep::AlreadyIssued);
    assert_eq!(issue(ledger, 12).await, LedgerStep::Issued(3));
    assert_eq!(issue(ledger, 13).await, LedgerStep::SoldOut);
    // A holder asking again after the sell-out is still a duplicate.
    assert_eq!(issue(ledger, 11).await, LedgerStep::AlreadyIssued);
    assert_eq!(ledger.issued(COUPON).await.unwrap(), Some(3));
    let snapshot = ledger.snapshot(COUPON).await.unwrap().unwrap();
    assert_eq!(snapshot.quantity, 3);
    let entries: Vec<_> = snapshot
        .entries
        .iter()
        .map(|e| (e.user.0, e.number))
        .collect();
    assert_eq!(entries, vec![(10, 1), (11, 2), (12, 3)]);
    assert!(snapshot.entries.iter().all(|e| e.issued_at == Some(t0())));
}

async fn concurrent_requests_never_exceed_the_quantity(subject: Subject) {
    let ledger = subject.ledger;
    ledger.load(&campaign(COUPON, 100), &[]).await.unwrap();
    let tasks: Vec<_> = (0..1_000)
        .map(|i| {
            let ledger = ledger.clone();
            // 500 users, each asking twice.
            tokio::spawn(async move { issue(&ledger, 1 + i % 500).await })
        })
        .collect();
    let mut numbers = HashSet::new();
    let (mut sold_out, mut duplicate) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            LedgerStep::Issued(n) => assert!(numbers.insert(n), "number {n} given twice"),
            LedgerStep::SoldOut => sold_out += 1,
            LedgerStep::AlreadyIssued => duplicate += 1,
            LedgerStep::Missing | LedgerStep::Stale => panic!("the ledger was loaded"),
        }
    }
    assert_eq!(numbers, (1..=100).collect());
    assert_eq!(sold_out + duplicate, 900);
    assert_eq!(ledger.issued(COUPON).await.unwrap(), Some(100));
}

async fn a_revoked_number_is_handed_out_again_unless_burned(subject: Subject) {
    let ledger = &subject.ledger;
    ledger.load(&campaign(COUPON, 3), &[]).await.unwrap();
    assert_eq!(issue(ledger, 1).await, LedgerStep::Issued(1));
    assert_eq!(issue(ledger, 2).await, LedgerStep::Issued(2));
    assert!(!revoke(ledger, 2, 1, true).await, "wrong number");
    assert!(revoke(ledger, 2, 2, true).await);
    assert!(!revoke(ledger, 2, 2, true).await, "already gone");
    assert_eq!(ledger.issued(COUPON).await.unwrap(), Some(1));
    // The revoked user may try again; the freed number comes first.
    assert_eq!(issue(ledger, 2).await, LedgerStep::Issued(2));
    assert_eq!(issue(ledger, 3).await, LedgerStep::Issued(3));
    // A burned number is not handed out again: 3 is sold out with 2 holders.
    assert!(revoke(ledger, 3, 3, false).await);
    assert_eq!(issue(ledger, 4).await, LedgerStep::SoldOut);
}

async fn a_lost_ledger_is_rebuilt_from_the_holders(mut subject: Subject) {
    subject
        .ledger
        .load(&campaign(COUPON, 5), &[])
        .await
        .unwrap();
    for user in 1..=3 {
        issue(&subject.ledger, user).await;
    }
    subject.lose_everything().await;
    let ledger = &subject.ledger;
    assert_eq!(issue(ledger, 4).await, LedgerStep::Missing);
    // The database knows users 1 and 3 (user 2's write had failed).
    let holders = [(UserId(1), 1), (UserId(3), 3)];
    assert!(ledger.load(&campaign(COUPON, 5), &holders).await.unwrap());
    assert_eq!(issue(ledger, 1).await, LedgerStep::AlreadyIssued);
    assert_eq!(
        issue(ledger, 4).await,
        LedgerStep::Issued(2),
        "the gap first"
    );
    assert_eq!(issue(ledger, 5).await, LedgerStep::Issued(4));
    assert_eq!(issue(ledger, 6).await, LedgerStep::Issued(5));
    assert_eq!(issue(ledger, 7).await, LedgerStep::SoldOut);
    let snapshot = ledger.snapshot(COUPON).await.unwrap().unwrap();
    let loaded: Vec<_> = snapshot
        .entries
        .iter()
        .filter(|e| e.issued_at.is_none())
        .map(|e| e.user.0)
        .collect();
    assert_eq!(loaded, vec![1, 3]);
}

async fn repair_adds_lost_holders_and_drops_only_unchanged_orphans(subject: Subject) {
    let ledger = &subject.ledger;
    ledger.load(&campaign(COUPON, 10), &[]).await.unwrap();
    assert_eq!(issue(ledger, 1).await, LedgerStep::Issued(1));
    assert_eq!(issue(ledger, 2).await, LedgerStep::Issued(2));
    let orphan = LedgerEntry {
        user: UserId(2),
        number: 2,
        issued_at: Some(t0()),
    };
    let changed = LedgerEntry {
        user: UserId(1),
        number: 1,
        issued_at: Some(t0() - TimeDelta::seconds(1)),
    };
    // User 9 holds number 6 in the database; the ledger never saw them.
    ledger
        .repair(
            COUPON,
            &LedgerDrift {
                add: vec![(UserId(9), 6)],
                remove: vec![orphan, changed],
            },
        )
        .await
        .unwrap();
    let snapshot = ledger.snapshot(COUPON).await.unwrap().unwrap();
    let entries: Vec<_> = snapshot
        .entries
        .iter()
        .map(|e| (e.user.0, e.number))
        .collect();
    assert_eq!(
        entries,
        vec![(1, 1), (9, 6)],
        "user 1 did not match and stays"
    );
    // Free now: 2 (dropped orphan), then 3, 4, 5 (skipped by the high mark 6).
    let mut next = Vec::new();
    for user in 20..26 {
        match issue(ledger, user).await {
            LedgerStep::Issued(n) => next.push(n),
            other => panic!("{other:?}"),
        }
    }
    next.sort_unstable();
    assert_eq!(next, vec![2, 3, 4, 5, 7, 8]);
}

/// The campaign list reads every campaign's count of a page at once.
async fn issued_many_answers_like_issued_in_the_order_asked(subject: Subject) {
    const OTHER: CouponId = CouponId(43);
    const UNKNOWN: CouponId = CouponId(44);
    let ledger = &subject.ledger;
    ledger.load(&campaign(COUPON, 5), &[]).await.unwrap();
    ledger.load(&campaign(OTHER, 5), &[]).await.unwrap();
    assert_eq!(issue(ledger, 1).await, LedgerStep::Issued(1));
    assert_eq!(issue(ledger, 2).await, LedgerStep::Issued(2));
    assert_eq!(issue_in(ledger, OTHER, 3).await, LedgerStep::Issued(1));
    assert_eq!(
        ledger.issued_many(&[OTHER, UNKNOWN, COUPON]).await.unwrap(),
        vec![Some(1), None, Some(2)]
    );
    for coupon in [OTHER, UNKNOWN, COUPON] {
        assert_eq!(
            ledger.issued_many(&[coupon]).await.unwrap(),
            vec![ledger.issued(coupon).await.unwrap()]
        );
    }
    assert_eq!(
        ledger.issued_many(&[]).await.unwrap(),
        Vec::<Option<u64>>::new()
    );
}

/// A Redis ledger is stamped with the replication id of the primary that
/// holds it; one stamped under another id (written before a failover, whose
/// last writes the promoted replica may lack) is dropped on its next issue,
/// which answers `Stale` so the caller rebuilds it from the database.
async fn a_ledger_from_another_replication_history_is_dropped_as_stale(subject: Subject) {
    let ledger = &subject.ledger;
    let AnyCouponLedger::Redis(redis_ledger) = ledger else {
        unreachable!("Redis only");
    };
    let [meta, _, _] = redis_ledger.keys(COUPON);
    let mut conn = subject.redis.clone().unwrap();
    ledger
        .load(&campaign(COUPON, 3), &[(UserId(7), 2)])
        .await
        .unwrap();
    assert_eq!(issue(ledger, 1).await, LedgerStep::Issued(1));
    // The primary's own replication id, read on the node that owns the key.
    let replid: String = redis::cmd("EVAL")
        .arg("return string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')")
        .arg(1)
        .arg(&meta)
        .query_async(&mut conn)
        .await
        .unwrap();
    let stamped: String = redis::cmd("HGET")
        .arg(&meta)
        .arg("epoch")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stamped, replid, "stamped with its primary's replication id");

    // As after a failover: the ledger carries the old primary's id.
    let _: () = redis::cmd("HSET")
        .arg(&meta)
        .arg("epoch")
        .arg("0123456789abcdef0123456789abcdef01234567")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(issue(ledger, 2).await, LedgerStep::Stale);
    assert_eq!(ledger.issued(COUPON).await.unwrap(), None, "dropped");
    assert_eq!(issue(ledger, 2).await, LedgerStep::Missing);
    // Rebuilt from the database's holders, it answers from them again.
    assert!(
        ledger
            .load(&campaign(COUPON, 3), &[(UserId(7), 2), (UserId(1), 1)])
            .await
            .unwrap()
    );
    assert_eq!(issue(ledger, 1).await, LedgerStep::AlreadyIssued);
    assert_eq!(issue(ledger, 2).await, LedgerStep::Issued(3));
}

mod epoch {
    #[tokio::test]
    async fn a_redis_ledger_from_another_replication_history_is_dropped_as_stale() {
        super::a_ledger_from_another_replication_history_is_dropped_as_stale(
            super::redis_ledger().await,
        )
        .await;
    }

    #[tokio::test]
    async fn a_cluster_ledger_from_another_replication_history_is_dropped_as_stale() {
        super::a_ledger_from_another_replication_history_is_dropped_as_stale(
            super::cluster_ledger().await,
        )
        .await;
    }
}

macro_rules! contract {
    ($adapter:ident) => {
        mod $adapter {
            #[tokio::test]
            async fn an_unknown_campaign_is_missing() {
                super::an_unknown_campaign_is_missing(super::$adapter().await).await;
            }

            #[tokio::test]
            async fn numbers_run_from_one_to_quantity_then_sold_out() {
                super::numbers_run_from_one_to_quantity_then_sold_out(super::$adapter().await)
                    .await;
            }

            #[tokio::test]
            async fn concurrent_requests_never_exceed_the_quantity() {
                super::concurrent_requests_never_exceed_the_quantity(super::$adapter().await).await;
            }

            #[tokio::test]
            async fn a_revoked_number_is_handed_out_again_unless_burned() {
                super::a_revoked_number_is_handed_out_again_unless_burned(super::$adapter().await)
                    .await;
            }

            #[tokio::test]
            async fn a_lost_ledger_is_rebuilt_from_the_holders() {
                super::a_lost_ledger_is_rebuilt_from_the_holders(super::$adapter().await).await;
            }

            #[tokio::test]
            async fn issued_many_answers_like_issued_in_the_order_asked() {
                super::issued_many_answers_like_issued_in_the_order_asked(super::$adapter().await)
                    .await;
            }

            #[tokio::test]
            async fn repair_adds_lost_holders_and_drops_only_unchanged_orphans() {
                super::repair_adds_lost_holders_and_drops_only_unchanged_orphans(
                    super::$adapter().await,
                )
                .await;
            }
        }
    };
}

contract!(memory_ledger);
contract!(redis_ledger);
contract!(cluster_ledger);
