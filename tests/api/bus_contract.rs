//! One contract, two event buses: the in-process bus must behave like the
//! Redis Streams bus in everything the consumers rely on.

use std::time::Duration;

use boxoffice::{
    kernel::events::{BusMessage, EventEnvelope},
    outbox::{
        domain::partition_of,
        infra::{AnyBus, memory::MemoryBus, redis::RedisBus},
        ports::EventBus,
    },
};
use chrono::Utc;
use uuid::Uuid;

use crate::helpers::{redis_cluster, redis_url};

fn message(n: i64) -> BusMessage {
    BusMessage {
        // Events recorded outside the database carry no outbox id.
        outbox_id: (n != 4).then_some(n),
        target: (n == 3).then(|| "only-for-b".to_owned()),
        event: EventEnvelope {
            event_id: Uuid::new_v4(),
            event_type: "Tested".into(),
            aggregate_type: "test".into(),
            aggregate_id: "a".into(),
            occurred_at: Utc::now(),
            payload: serde_json::json!({ "n": n }),
            // Events written by a request carry its trace; others none.
            traceparent: (n % 2 == 0).then(|| format!("00-{n:032x}-{n:016x}-01")),
        },
    }
}

fn outbox_ids(deliveries: &[boxoffice::outbox::domain::Delivery]) -> Vec<i64> {
    deliveries
        .iter()
        .map(|d| {
            d.message.as_ref().expect("decodable").event.payload["n"]
                .as_i64()
                .expect("n")
        })
        .collect()
}

async fn memory_bus() -> AnyBus {
    AnyBus::Memory(MemoryBus::new().0)
}

async fn standalone_bus(partitions: u16) -> AnyBus {
    let client = redis::Client::open(redis_url()).unwrap();
    let conn = client
        .get_connection_manager()
        .await
        .expect("Redis is reachable");
    let stream = format!("bo:test:{}:contract", Uuid::new_v4().simple());
    AnyBus::Redis(RedisBus::new(client, conn, &stream, 100_000).partitioned(partitions))
}

async fn redis_bus() -> AnyBus {
    standalone_bus(1).await
}

/// The bus on a Redis Cluster: the stream is one key, so one slot.
async fn cluster_bus() -> AnyBus {
    let (target, conn) = redis_cluster().await;
    let stream = format!("bo:test:{}:contract", Uuid::new_v4().simple());
    AnyBus::Redis(RedisBus::new(target, conn, &stream, 100_000))
}

/// The bus over 4 partition streams, seen from the partition the
/// contract's aggregate ("test" "a") goes to: every contract holds there.
fn partition_of_a(bus: AnyBus) -> AnyBus {
    let p = partition_of("test", "a", bus.partitions());
    bus.partition(p)
}

async fn partitioned_redis_bus() -> AnyBus {
    partition_of_a(standalone_bus(4).await)
}

/// Four partitions on a Redis Cluster: four slots, spread over the primaries.
async fn partitioned_cluster_bus() -> AnyBus {
    let (target, conn) = redis_cluster().await;
    let stream = format!("bo:test:{}:contract", Uuid::new_v4().simple());
    partition_of_a(AnyBus::Redis(
        RedisBus::new(target, conn, &stream, 100_000).partitioned(4),
    ))
}

const NO_WAIT: Duration = Duration::from_millis(1);

async fn every_group_sees_every_entry_in_order(bus: AnyBus) {
    bus.ensure_group("a").await.unwrap();
    bus.ensure_group("b").await.unwrap();
    let published: Vec<BusMessage> = (1..=5).map(message).collect();
    bus.publish(&published).await.unwrap();
    let a = bus.fetch("a", "c1", 10, NO_WAIT).await.unwrap();
    let b = bus.fetch("b", "c1", 10, NO_WAIT).await.unwrap();
    let delivered: Vec<BusMessage> = a
        .iter()
        .map(|d| d.message.clone().expect("decodable"))
        .collect();
    assert_eq!(delivered, published, "entries arrive whole and in order");
    assert_eq!(outbox_ids(&b), vec![1, 2, 3, 4, 5]);
    assert!(a.iter().all(|d| d.deliveries == 1));
    assert!(
        bus.fetch("a", "c1", 10, NO_WAIT).await.unwrap().is_empty(),
        "nothing is delivered twice"
    );
}

async fn consumers_of_one_group_share_the_entries(bus: AnyBus) {
    bus.ensure_group("g").await.unwrap();
    bus.publish(&(1..=6).map(message).collect::<Vec<_>>())
        .await
        .unwrap();
    let first = bus.fetch("g", "c1", 4, NO_WAIT).await.unwrap();
    let second = bus.fetch("g", "c2", 4, NO_WAIT).await.unwrap();
    assert_eq!(outbox_ids(&first), vec![1, 2, 3, 4]);
    assert_eq!(outbox_ids(&second), vec![5, 6]);
}

async fn acknowledged_entries_leave_pending_and_lag_is_counted(bus: AnyBus) {
    bus.ensure_group("g").await.unwrap();
    bus.publish(&(1..=5).map(message).collect::<Vec<_>>())
        .await
        .unwrap();
    let got = bus.fetch("g", "c1", 3, NO_WAIT).await.unwrap();
    // Summed over the partitions: the other partitions have nothing.
    let status = |groups: Vec<boxoffice::outbox::domain::GroupStatus>| {
        let g: Vec<_> = groups.into_iter().filter(|g| g.name == "g").collect();
        assert_eq!(
            g.len(),
            usize::from(bus.partitions()),
            "one row per partition"
        );
        (
            g.iter().map(|g| g.pending).sum::<u64>(),
            g.iter().map(|g| g.lag).sum::<u64>(),
        )
    };
    assert_eq!(status(bus.groups().await.unwrap()), (3, 2));
    bus.ack("g", &[got[0].id.clone(), got[2].id.clone()])
        .await
        .unwrap();
    assert_eq!(status(bus.groups().await.unwrap()), (1, 2));
}

async fn an_idle_pending_entry_is_reclaimed_with_its_delivery_count(bus: AnyBus) {
    bus.ensure_group("g").await.unwrap();
    bus.publish(&[message(1), message(2)]).await.unwrap();
    let held = bus.fetch("g", "crashed", 10, NO_WAIT).await.unwrap();
    bus.ack("g", &[held[1].id.clone()]).await.unwrap();

    let too_soon = bus
        .reclaim("g", "rescuer", Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert!(
        too_soon.is_empty(),
        "entries are only taken over once idle long enough"
    );

    tokio::time::sleep(Duration::from_millis(150)).await;
    let taken = bus
        .reclaim("g", "rescuer", Duration::from_millis(100), 10)
        .await
        .unwrap();
    assert_eq!(outbox_ids(&taken), vec![1]);
    assert_eq!(taken[0].deliveries, 2);

    // Delivered twice, so due again only after twice the idle time.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let again = bus
        .reclaim("g", "another", Duration::from_millis(100), 10)
        .await
        .unwrap();
    assert_eq!(again[0].deliveries, 3);
    bus.ack("g", &[again[0].id.clone()]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        bus.reclaim("g", "rescuer", Duration::from_millis(100), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_failing_entry_waits_twice_as_long_before_each_retry(bus: AnyBus) {
    bus.ensure_group("g").await.unwrap();
    bus.publish(&[message(1)]).await.unwrap();
    let min_idle = Duration::from_millis(100);
    bus.fetch("g", "c1", 10, NO_WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(130)).await;
    assert!(
        bus.reclaim("g", "c1", min_idle, 10)
            .await
            .unwrap()
            .is_empty(),
        "a consumer never reclaims its own entries: it still holds them in order"
    );
    let second = bus.reclaim("g", "c2", min_idle, 10).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].deliveries, 2);
    tokio::time::sleep(Duration::from_millis(130)).await;
    assert!(
        bus.reclaim("g", "c2", min_idle, 10)
            .await
            .unwrap()
            .is_empty(),
        "delivered twice: due only after 200 ms idle"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = bus.reclaim("g", "c3", min_idle, 10).await.unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].deliveries, 3);
}

async fn fetch_waits_for_a_publish(bus: AnyBus) {
    bus.ensure_group("g").await.unwrap();
    let publisher = bus.clone();
    let publish = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        publisher.publish(&[message(7)]).await.unwrap();
    });
    let started = std::time::Instant::now();
    let got = bus
        .fetch("g", "c1", 10, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(outbox_ids(&got), vec![7]);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "woken by the publish, not the timeout"
    );
    publish.await.unwrap();
    let started = std::time::Instant::now();
    assert!(
        bus.fetch("g", "c1", 10, Duration::from_millis(200))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "an empty fetch waits out its block time"
    );
}

/// Events of many aggregates: each lands in its aggregate's partition,
/// once, and one aggregate's events come out in the order they went in.
async fn each_aggregate_keeps_its_partition_and_its_order(bus: AnyBus) {
    let partitions = bus.partitions();
    bus.ensure_group("g").await.unwrap();
    let events: Vec<BusMessage> = (0..200i64)
        .map(|n| {
            let mut m = message(n % 10 + 5);
            m.outbox_id = Some(n);
            m.target = None;
            m.event.aggregate_id = format!("agg-{}", n % 20);
            m.event.payload = serde_json::json!({ "n": n });
            m
        })
        .collect();
    for chunk in events.chunks(50) {
        bus.publish(chunk).await.unwrap();
    }
    let mut seen: Vec<i64> = Vec::new();
    let mut used = 0;
    for p in 0..partitions {
        let reader = bus.partition(p);
        let mut got = Vec::new();
        loop {
            let batch = reader.fetch("g", "c1", 64, NO_WAIT).await.unwrap();
            if batch.is_empty() {
                break;
            }
            got.extend(batch);
        }
        used += usize::from(!got.is_empty());
        let mut last: std::collections::HashMap<String, i64> = Default::default();
        for d in &got {
            let event = &d.message.as_ref().expect("decodable").event;
            assert_eq!(
                partition_of("test", &event.aggregate_id, partitions),
                p,
                "{} is in its own partition",
                event.aggregate_id
            );
            let n = event.payload["n"].as_i64().unwrap();
            if let Some(before) = last.insert(event.aggregate_id.clone(), n) {
                assert!(
                    before < n,
                    "{}: {before} came before {n}",
                    event.aggregate_id
                );
            }
            seen.push(n);
        }
        let ids: Vec<String> = got.iter().map(|d| d.id.clone()).collect();
        reader.ack("g", &ids).await.unwrap();
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..200).collect::<Vec<_>>(), "every event once");
    if partitions > 1 {
        assert_eq!(
            used,
            usize::from(partitions),
            "20 aggregates reach every partition"
        );
    }
    let rows: Vec<_> = bus
        .groups()
        .await
        .unwrap()
        .into_iter()
        .filter(|g| g.name == "g")
        .collect();
    assert_eq!(rows.len(), usize::from(partitions));
    assert!(
        rows.iter().all(|g| g.pending == 0 && g.lag == 0),
        "{rows:?}"
    );
    let mut numbers: Vec<u16> = rows.iter().map(|g| g.partition).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..partitions).collect::<Vec<_>>());
}

macro_rules! contract {
    ($adapter:ident) => {
        mod $adapter {
            use super::*;

            #[tokio::test]
            async fn every_group_sees_every_entry_in_order() {
                super::every_group_sees_every_entry_in_order($adapter().await).await;
            }

            #[tokio::test]
            async fn consumers_of_one_group_share_the_entries() {
                super::consumers_of_one_group_share_the_entries($adapter().await).await;
            }

            #[tokio::test]
            async fn acknowledged_entries_leave_pending_and_lag_is_counted() {
                super::acknowledged_entries_leave_pending_and_lag_is_counted($adapter().await)
                    .await;
            }

            #[tokio::test]
            async fn an_idle_pending_entry_is_reclaimed_with_its_delivery_count() {
                super::an_idle_pending_entry_is_reclaimed_with_its_delivery_count($adapter().await)
                    .await;
            }

            #[tokio::test]
            async fn a_failing_entry_waits_twice_as_long_before_each_retry() {
                super::a_failing_entry_waits_twice_as_long_before_each_retry($adapter().await)
                    .await;
            }

            #[tokio::test]
            async fn each_aggregate_keeps_its_partition_and_its_order() {
                super::each_aggregate_keeps_its_partition_and_its_order($adapter().await).await;
            }

            #[tokio::test]
            async fn fetch_waits_for_a_publish() {
                super::fetch_waits_for_a_publish($adapter().await).await;
            }
        }
    };
}

contract!(memory_bus);
contract!(redis_bus);
contract!(cluster_bus);
contract!(partitioned_redis_bus);
contract!(partitioned_cluster_bus);

/// The stream is trimmed only below what every group may still need (its
/// oldest pending entry, or past its last delivered one), and a stream at
/// its hard cap names the groups that had not read what is being dropped.
#[tokio::test]
async fn the_stream_is_trimmed_only_below_what_every_group_may_still_need() {
    let client = redis::Client::open(redis_url()).unwrap();
    let conn = client.get_connection_manager().await.unwrap();
    let stream = format!("bo:test:{}:trim", Uuid::new_v4().simple());
    let bus = RedisBus::new(client, conn.clone(), &stream, 50);
    let len = || {
        let mut conn = conn.clone();
        let stream = stream.clone();
        async move {
            redis::AsyncCommands::xlen::<_, usize>(&mut conn, &stream)
                .await
                .unwrap()
        }
    };
    for group in ["fast", "slow"] {
        bus.ensure_group(group).await.unwrap();
    }
    bus.publish(&(1..=20).map(message).collect::<Vec<_>>())
        .await
        .unwrap();
    let fast = bus.fetch("fast", "c", 15, Duration::ZERO).await.unwrap();
    bus.ack(
        "fast",
        &fast.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    // The slow group was handed five and finished the first three.
    let slow = bus.fetch("slow", "c", 5, Duration::ZERO).await.unwrap();
    bus.ack(
        "slow",
        &slow[..3].iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    assert_eq!(bus.trim().await.unwrap(), Vec::<String>::new());
    assert_eq!(
        len().await,
        17,
        "only what both groups finished: entries 1-3"
    );

    let rest = bus.fetch("slow", "c", 100, Duration::ZERO).await.unwrap();
    let mut ids: Vec<String> = slow[3..]
        .iter()
        .chain(&rest)
        .map(|d| d.id.clone())
        .collect();
    bus.ack("slow", &ids).await.unwrap();
    assert_eq!(bus.trim().await.unwrap(), Vec::<String>::new());
    assert_eq!(
        len().await,
        5,
        "the five the fast group has not been handed"
    );

    // Far more than the cap while the slow group reads nothing: the cap
    // drops entries it never read, and the trim says who is behind.
    bus.publish(&(21..=220).map(message).collect::<Vec<_>>())
        .await
        .unwrap();
    ids = bus
        .fetch("fast", "c", 1_000, Duration::ZERO)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    bus.ack("fast", &ids).await.unwrap();
    assert_eq!(bus.trim().await.unwrap(), vec!["slow".to_owned()]);
}
