//! One contract, two waiting-room stores (Redis, in-process), driven with
//! explicit times so every rule is checked without sleeping.

use std::collections::HashSet;

use boxoffice::{
    kernel::{ConcertId, UserId},
    queue::{
        domain::{
            DRAW_RANGE, Lineup, Place, QueueEventKind, QueuePass, QueueSettings, QueueingMethod,
        },
        infra::{AnyQueueStore, memory::MemoryQueueStore, redis::RedisQueueStore},
        ports::QueueStore,
    },
};
use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::helpers::{redis_cluster, redis_url};

const CONCERT: ConcertId = ConcertId(7);

async fn memory_store() -> (AnyQueueStore, AnyQueueStore) {
    let store = MemoryQueueStore::default();
    (
        AnyQueueStore::Memory(store.clone()),
        AnyQueueStore::Memory(store),
    )
}

/// Two stores over one Redis, as two server instances would have.
async fn redis_store() -> (AnyQueueStore, AnyQueueStore) {
    let prefix = format!("bo:test:{}", Uuid::new_v4().simple());
    let connect = || async {
        let client = redis::Client::open(redis_url()).unwrap();
        AnyQueueStore::Redis(RedisQueueStore::new(
            client.get_connection_manager().await.unwrap(),
            &prefix,
        ))
    };
    (connect().await, connect().await)
}

/// Two stores over one Redis Cluster: every room's keys share a slot.
async fn cluster_store() -> (AnyQueueStore, AnyQueueStore) {
    let prefix = format!("bo:test:{}", Uuid::new_v4().simple());
    let connect =
        || async { AnyQueueStore::Redis(RedisQueueStore::new(redis_cluster().await.1, &prefix)) };
    (connect().await, connect().await)
}

fn settings(rate: i64, max_active: i64) -> QueueSettings {
    QueueSettings::parse(rate, max_active, 60, 30).unwrap()
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
        .unwrap()
        .to_utc()
}

fn pass(token_id: Uuid, user: i64) -> QueuePass {
    QueuePass {
        token_id,
        user: UserId(user),
        concert: CONCERT,
    }
}

async fn enter(store: &AnyQueueStore, user: i64, now: DateTime<Utc>) -> (QueuePass, Place) {
    line_up(store, user, Lineup::Fifo, now).await
}

async fn line_up(
    store: &AnyQueueStore,
    user: i64,
    lineup: Lineup,
    now: DateTime<Utc>,
) -> (QueuePass, Place) {
    let entry = store
        .enter(&pass(Uuid::new_v4(), user), lineup, now)
        .await
        .unwrap();
    (pass(entry.token_id, user), entry.place)
}

async fn position(store: &AnyQueueStore, p: &QueuePass, now: DateTime<Utc>) -> Place {
    store.status(p, now).await.unwrap().0
}

async fn concurrent_entries_get_unique_positions_and_reentry_keeps_the_place(store: AnyQueueStore) {
    let tasks: Vec<_> = (1..=1_000)
        .map(|user| {
            let store = store.clone();
            tokio::spawn(async move { enter(&store, user, t0()).await })
        })
        .collect();
    let mut positions = HashSet::new();
    let mut first = None;
    for task in tasks {
        let (p, place) = task.await.unwrap();
        let Place::Waiting { position } = place else {
            panic!("{place:?}")
        };
        assert!(
            positions.insert(position),
            "position {position} handed out twice"
        );
        if p.user == UserId(1) {
            first = Some((p, position));
        }
    }
    assert_eq!(positions, (1..=1_000).collect::<HashSet<u64>>());
    let (p, position) = first.unwrap();
    let again = store
        .enter(&pass(Uuid::new_v4(), 1), Lineup::Fifo, t0())
        .await
        .unwrap();
    assert_eq!(again.token_id, p.token_id, "one identity, one place");
    assert_eq!(again.place, Place::Waiting { position });
    assert_eq!(store.stats(CONCERT, t0()).await.unwrap().waiting, 1_000);
}

async fn dropouts_move_everyone_behind_up(store: AnyQueueStore) {
    let (a, _) = enter(&store, 1, t0()).await;
    let (b, _) = enter(&store, 2, t0()).await;
    let (c, _) = enter(&store, 3, t0()).await;
    // B and C keep polling; A goes quiet. The first tick only starts the
    // admission clock, so nobody is admitted yet.
    let s = settings(1, 1);
    store.tick(CONCERT, &s, t0()).await.unwrap();
    let later = t0() + TimeDelta::seconds(20);
    store.status(&b, later).await.unwrap();
    store.status(&c, later).await.unwrap();
    let outcome = store
        .tick(CONCERT, &s, t0() + TimeDelta::seconds(31))
        .await
        .unwrap();
    assert_eq!(outcome.dropped_waiting, 1, "{outcome:?}");
    assert_eq!(
        position(&store, &a, t0() + TimeDelta::seconds(31)).await,
        Place::Gone
    );
    // B was admitted by the rate (one slot); C moved up from 3 to 1.
    assert!(matches!(
        position(&store, &b, t0() + TimeDelta::seconds(31)).await,
        Place::Active { .. }
    ));
    assert_eq!(
        position(&store, &c, t0() + TimeDelta::seconds(31)).await,
        Place::Waiting { position: 1 }
    );
}

async fn admission_follows_the_rate_and_never_exceeds_max_active(store: AnyQueueStore) {
    for user in 1..=100 {
        enter(&store, user, t0()).await;
    }
    let s = settings(10, 25);
    let admitted_at = |secs: i64| {
        let store = store.clone();
        async move {
            let mut total = 0;
            // Ten ticks a second, as the scheduler does.
            for tenth in 0..10 {
                let now = t0() + TimeDelta::milliseconds(secs * 1000 + tenth * 100);
                total += store.tick(CONCERT, &s, now).await.unwrap().admitted;
            }
            total
        }
    };
    assert_eq!(
        admitted_at(0).await,
        9,
        "ten per second, the first tick only starts the clock"
    );
    assert_eq!(admitted_at(1).await, 10);
    assert_eq!(admitted_at(2).await, 6, "capped: 25 active at most");
    let stats = store
        .stats(CONCERT, t0() + TimeDelta::seconds(3))
        .await
        .unwrap();
    assert_eq!(
        (
            stats.active,
            stats.waiting,
            stats.admitted_last_minute,
            stats.admitted_total
        ),
        (25, 75, 25, 25)
    );
    let settings = QueueSettings::parse(10, 25, 60, 30).unwrap();
    assert_eq!(
        stats.tail_wait_seconds(&settings),
        180,
        "75 behind at 25 a minute"
    );
    assert_eq!(admitted_at(3).await, 0);
}

async fn a_left_or_expired_slot_is_refilled_on_the_next_tick(store: AnyQueueStore) {
    let s = QueueSettings::parse(1_000, 2, 10, 30).unwrap();
    let (a, _) = enter(&store, 1, t0()).await;
    let (b, _) = enter(&store, 2, t0()).await;
    let (c, _) = enter(&store, 3, t0()).await;
    let (d, _) = enter(&store, 4, t0()).await;
    store.tick(CONCERT, &s, t0()).await.unwrap();
    assert_eq!(
        store
            .tick(CONCERT, &s, t0() + TimeDelta::milliseconds(100))
            .await
            .unwrap()
            .admitted,
        2
    );
    let now = t0() + TimeDelta::milliseconds(200);
    assert!(store.is_active(&a, now).await.unwrap() && store.is_active(&b, now).await.unwrap());
    assert!(!store.is_active(&c, now).await.unwrap());

    assert!(store.leave(&a, now).await.unwrap());
    assert!(
        !store.leave(&a, now).await.unwrap(),
        "leaving twice finds nothing"
    );
    assert!(
        !store.is_active(&a, now).await.unwrap(),
        "a left slot is freed at once"
    );
    assert_eq!(store.tick(CONCERT, &s, now).await.unwrap().admitted, 1);
    assert!(store.is_active(&c, now).await.unwrap());

    // B's and C's time runs out (10 s); D gets in on the tick that expires them.
    let later = now + TimeDelta::seconds(10);
    store
        .status(&d, later - TimeDelta::seconds(1))
        .await
        .unwrap();
    let outcome = store.tick(CONCERT, &s, later).await.unwrap();
    assert_eq!((outcome.expired_active, outcome.admitted), (2, 1));
    assert!(store.is_active(&d, later).await.unwrap());
    assert!(matches!(
        position(&store, &d, later).await,
        Place::Active { .. }
    ));
    assert_eq!(position(&store, &b, later).await, Place::Gone);
}

async fn two_schedulers_at_once_never_over_admit(store: AnyQueueStore, other: AnyQueueStore) {
    for user in 1..=500 {
        enter(&store, user, t0()).await;
    }
    // Both instances tick every 10 ms, concurrently, from `from` s to `to` s.
    let run_both = |s: QueueSettings, from: i64, to: i64| {
        let run = |store: AnyQueueStore| {
            tokio::spawn(async move {
                let mut admitted = 0;
                for step in from * 100 + 1..=to * 100 {
                    let now = t0() + TimeDelta::milliseconds(step * 10);
                    admitted += store.tick(CONCERT, &s, now).await.unwrap().admitted;
                }
                admitted
            })
        };
        let (x, y) = (run(store.clone()), run(other.clone()));
        async move { x.await.unwrap() + y.await.unwrap() }
    };
    store
        .tick(CONCERT, &settings(100, 1_000), t0())
        .await
        .unwrap();
    assert_eq!(
        run_both(settings(100, 1_000), 0, 3).await,
        300,
        "100 per second between them, not each"
    );
    assert_eq!(
        run_both(settings(100, 320), 3, 6).await,
        20,
        "and never past max active"
    );
    let stats = store
        .stats(CONCERT, t0() + TimeDelta::seconds(6))
        .await
        .unwrap();
    assert_eq!((stats.active, stats.waiting), (320, 180));
}

async fn every_change_records_its_event(store: AnyQueueStore) {
    let s = settings(1_000, 1);
    let (a, _) = enter(&store, 1, t0()).await;
    let (b, _) = enter(&store, 2, t0()).await;
    store.tick(CONCERT, &s, t0()).await.unwrap();
    store
        .tick(CONCERT, &s, t0() + TimeDelta::milliseconds(100))
        .await
        .unwrap();
    store
        .leave(&b, t0() + TimeDelta::milliseconds(200))
        .await
        .unwrap();
    store
        .tick(CONCERT, &s, t0() + TimeDelta::seconds(61))
        .await
        .unwrap();
    let events = store.pending_events(CONCERT, 100).await.unwrap();
    let seen: Vec<(QueueEventKind, i64)> =
        events.iter().map(|e| (e.kind, e.user.value())).collect();
    assert_eq!(
        seen,
        vec![
            (QueueEventKind::Entered, 1),
            (QueueEventKind::Entered, 2),
            (QueueEventKind::Admitted, 1),
            (QueueEventKind::Left, 2),
            (QueueEventKind::Expired, 1),
        ]
    );
    assert_eq!(events[2].token_id, a.token_id);
    let ids: Vec<String> = events.iter().take(3).map(|e| e.id.clone()).collect();
    store.forwarded(CONCERT, &ids).await.unwrap();
    assert_eq!(store.pending_events(CONCERT, 100).await.unwrap().len(), 2);
    assert_eq!(store.concerts().await.unwrap(), vec![CONCERT]);
}

/// Forwards every recorded event of a room, as the scheduler does.
async fn forward_all(store: &AnyQueueStore, concert: ConcertId) {
    let ids: Vec<String> = store
        .pending_events(concert, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    store.forwarded(concert, &ids).await.unwrap();
}

async fn an_empty_room_left_alone_is_retired_and_reopens_on_the_next_entry(store: AnyQueueStore) {
    let s = settings(10, 10);
    let idle = TimeDelta::minutes(10);
    let (a, _) = enter(&store, 1, t0()).await;
    assert!(store.leave(&a, t0()).await.unwrap());
    // Events not yet forwarded keep the room.
    let late = t0() + idle + TimeDelta::minutes(1);
    assert!(!store.tick(CONCERT, &s, late).await.unwrap().retired);
    forward_all(&store, CONCERT).await;
    // Not idle long enough (the last change was the leave).
    let (b, _) = enter(&store, 2, t0() + TimeDelta::minutes(5)).await;
    assert!(store.leave(&b, t0() + TimeDelta::minutes(5)).await.unwrap());
    forward_all(&store, CONCERT).await;
    assert!(!store.tick(CONCERT, &s, late).await.unwrap().retired);
    assert_eq!(store.concerts().await.unwrap(), vec![CONCERT]);

    let later = t0() + TimeDelta::minutes(5) + idle;
    let outcome = store.tick(CONCERT, &s, later).await.unwrap();
    assert!(outcome.retired, "{outcome:?}");
    assert!(
        store.concerts().await.unwrap().is_empty(),
        "no longer listed"
    );
    assert_eq!(store.stats(CONCERT, later).await.unwrap().waiting, 0);

    // The next entry opens it afresh, at the head, and it is listed again;
    // its events are new events.
    let (c, place) = enter(&store, 3, later).await;
    assert_eq!(place, Place::Waiting { position: 1 });
    assert_eq!(store.concerts().await.unwrap(), vec![CONCERT]);
    let events = store.pending_events(CONCERT, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, QueueEventKind::Entered);
    assert_eq!(events[0].user, UserId(3));
    // Somebody waiting: never retired, however long.
    forward_all(&store, CONCERT).await;
    store.status(&c, later + idle * 2).await.unwrap();
    let outcome = store.tick(CONCERT, &s, later + idle * 2).await.unwrap();
    assert!(!outcome.retired);
}

/// 5,000 rooms opened and left, one still busy: once they are idle, the
/// scheduler's rounds cover the busy one only.
async fn thousands_of_abandoned_rooms_stop_being_ticked(store: AnyQueueStore) {
    let s = settings(10, 10);
    let rooms = 5_000;
    for concert in 1..=rooms {
        let concert = ConcertId(1_000 + concert);
        let newcomer = QueuePass {
            token_id: Uuid::new_v4(),
            user: UserId(1),
            concert,
        };
        let entry = store.enter(&newcomer, Lineup::Fifo, t0()).await.unwrap();
        let left = QueuePass {
            token_id: entry.token_id,
            ..newcomer
        };
        assert!(store.leave(&left, t0()).await.unwrap());
        forward_all(&store, concert).await;
    }
    let (_busy, _) = enter(&store, 9, t0()).await;
    assert_eq!(store.concerts().await.unwrap().len(), rooms as usize + 1);
    let later = t0() + TimeDelta::minutes(11);
    let mut retired = 0;
    for concert in store.concerts().await.unwrap() {
        let outcome = store.tick(concert, &s, later).await.unwrap();
        retired += u64::from(outcome.retired);
    }
    assert_eq!(retired, rooms as u64);
    assert_eq!(
        store.concerts().await.unwrap(),
        vec![CONCERT],
        "the live room only"
    );
}

/// Polls of two rooms at once, each at its own time: every answer is the
/// one a poll on its own would get, and every poll is its token's
/// heartbeat. Returns how many polls were made.
async fn concurrent_polls_answer_as_each_poll_alone_would(store: AnyQueueStore) -> u64 {
    const OTHER: ConcertId = ConcertId(8);
    let mut passes = Vec::new();
    for user in 1..=300 {
        passes.push(enter(&store, user, t0()).await.0);
    }
    for user in 301..=500 {
        let newcomer = QueuePass {
            concert: OTHER,
            ..pass(Uuid::new_v4(), user)
        };
        let entry = store.enter(&newcomer, Lineup::Fifo, t0()).await.unwrap();
        passes.push(QueuePass {
            token_id: entry.token_id,
            ..newcomer
        });
    }
    // Ten of the first room are admitted; the rest keep their order.
    let s = settings(10, 10);
    store.tick(CONCERT, &s, t0()).await.unwrap();
    store
        .tick(CONCERT, &s, t0() + TimeDelta::seconds(1))
        .await
        .unwrap();
    let polled = t0() + TimeDelta::seconds(20);
    let polls: Vec<_> = passes
        .iter()
        .chain(passes.iter())
        .enumerate()
        .map(|(i, p)| {
            let (store, p) = (store.clone(), *p);
            let at = polled + TimeDelta::milliseconds(i as i64 % 7);
            tokio::spawn(async move { (p, store.status(&p, at).await.unwrap()) })
        })
        .collect();
    let count = polls.len() as u64;
    for poll in polls {
        let (p, (place, admitted_last_minute)) = poll.await.unwrap();
        let user = p.user.value();
        if p.concert == OTHER {
            assert_eq!(
                place,
                Place::Waiting {
                    position: (user - 300) as u64
                }
            );
            assert_eq!(admitted_last_minute, 0);
        } else if user <= 10 {
            assert!(matches!(place, Place::Active { .. }), "{user}: {place:?}");
            assert_eq!(admitted_last_minute, 10);
        } else {
            assert_eq!(
                place,
                Place::Waiting {
                    position: (user - 10) as u64
                }
            );
            assert_eq!(admitted_last_minute, 10);
        }
    }
    // Every poll was a heartbeat: 31 s after the start (grace 30 s) but 11 s
    // after the polls, nobody waiting is dropped.
    for concert in [CONCERT, OTHER] {
        let outcome = store
            .tick(concert, &settings(1, 10), t0() + TimeDelta::seconds(31))
            .await
            .unwrap();
        assert_eq!(outcome.dropped_waiting, 0, "{concert:?}: {outcome:?}");
    }
    count
}

/// On Redis, concurrent polls share script calls.
async fn concurrent_redis_polls_share_round_trips(store: AnyQueueStore) {
    let polls = concurrent_polls_answer_as_each_poll_alone_would(store.clone()).await;
    let AnyQueueStore::Redis(redis) = &store else {
        unreachable!("a Redis store")
    };
    let (answered, calls) = redis.polls_and_calls();
    assert_eq!(answered, polls);
    assert!(
        calls * 10 <= polls,
        "{polls} concurrent polls took {calls} script calls"
    );
}

/// On Redis, concurrent arrivals share script calls, and still get exact,
/// unique positions.
async fn concurrent_redis_entries_share_round_trips(store: AnyQueueStore) {
    concurrent_entries_get_unique_positions_and_reentry_keeps_the_place(store.clone()).await;
    let AnyQueueStore::Redis(redis) = &store else {
        unreachable!("a Redis store")
    };
    let (placed, calls) = redis.enters_and_calls();
    assert_eq!(placed, 1_001, "a thousand arrivals and one re-entry");
    assert!(
        calls * 5 <= placed,
        "{placed} concurrent arrivals took {calls} script calls"
    );
}

async fn unknown_tokens_are_gone(store: AnyQueueStore) {
    let stranger = pass(Uuid::new_v4(), 9);
    assert_eq!(store.status(&stranger, t0()).await.unwrap().0, Place::Gone);
    assert!(!store.is_active(&stranger, t0()).await.unwrap());
    assert!(!store.leave(&stranger, t0()).await.unwrap());
}

/// A Redis room is stamped with its primary's replication id. After a
/// failover the promoted replica may hold an older `last_tick` and a credit
/// the old primary had already spent; the first tick under the new id says
/// so and admits from no credit at all, so the rate is never exceeded.
async fn a_room_after_a_failover_admits_from_no_credit(prefix: &str, store: AnyQueueStore) {
    let s = settings(5, 100);
    for user in 1..=20 {
        enter(&store, user, t0()).await;
    }
    store.tick(CONCERT, &s, t0()).await.unwrap();
    let second = t0() + TimeDelta::seconds(1);
    let ticked = store.tick(CONCERT, &s, second).await.unwrap();
    assert_eq!((ticked.admitted, ticked.failover), (5, false));

    // The replica that took over missed the last tick's writes.
    let AnyQueueStore::Redis(_) = &store else {
        unreachable!("Redis only")
    };
    let meta = format!("{prefix}:{{queue:{}}}:meta", CONCERT.value());
    let mut conn = redis_cluster_or_standalone(prefix).await;
    let _: () = redis::cmd("HSET")
        .arg(&meta)
        .arg("epoch")
        .arg("0123456789abcdef0123456789abcdef01234567")
        .arg("last_tick")
        .arg(t0().timestamp_millis())
        .arg("credit")
        .arg("5")
        .query_async(&mut conn)
        .await
        .unwrap();
    let after = store
        .tick(CONCERT, &s, second + TimeDelta::milliseconds(200))
        .await
        .unwrap();
    assert!(after.failover, "the new replication id is noticed");
    assert_eq!(after.admitted, 0, "no burst from credit already spent");
    let next = store
        .tick(CONCERT, &s, second + TimeDelta::milliseconds(1_200))
        .await
        .unwrap();
    assert_eq!(
        (next.admitted, next.failover),
        (5, false),
        "then the rate again"
    );
}

/// The connection a test uses to play the failed-over replica: the cluster
/// for cluster prefixes, the standalone Redis otherwise.
async fn redis_cluster_or_standalone(prefix: &str) -> boxoffice::redis_client::Conn {
    if prefix.contains(":cluster:") {
        redis_cluster().await.1
    } else {
        let client = redis::Client::open(redis_url()).unwrap();
        client.get_connection_manager().await.unwrap().into()
    }
}

mod epoch {
    use super::*;

    #[tokio::test]
    async fn a_redis_room_after_a_failover_admits_from_no_credit() {
        let prefix = format!("bo:test:{}", Uuid::new_v4().simple());
        let client = redis::Client::open(redis_url()).unwrap();
        let store = AnyQueueStore::Redis(RedisQueueStore::new(
            client.get_connection_manager().await.unwrap(),
            &prefix,
        ));
        a_room_after_a_failover_admits_from_no_credit(&prefix, store).await;
    }

    #[tokio::test]
    async fn a_cluster_room_after_a_failover_admits_from_no_credit() {
        let prefix = format!("bo:test:cluster:{}", Uuid::new_v4().simple());
        let store = AnyQueueStore::Redis(RedisQueueStore::new(redis_cluster().await.1, &prefix));
        a_room_after_a_failover_admits_from_no_credit(&prefix, store).await;
    }
}

/// A payment ends the visit it was made in: a place entered after the
/// payment (the buyer came back for more) is a later visit and stays.
async fn a_payment_ends_only_the_visit_it_was_made_in(store: AnyQueueStore) {
    let (first, _) = enter(&store, 1, t0()).await;
    let paid = t0() + TimeDelta::seconds(5);
    assert!(
        store.finish(CONCERT, UserId(1), paid, paid).await.unwrap(),
        "the visit the payment was made in ends"
    );
    assert_eq!(position(&store, &first, paid).await, Place::Gone);

    // Back a minute later; the old payment's event is handled only now.
    let later = t0() + TimeDelta::minutes(1);
    let (second, place) = enter(&store, 1, later).await;
    assert!(matches!(place, Place::Waiting { .. }), "{place:?}");
    assert!(
        !store
            .finish(CONCERT, UserId(1), paid, later + TimeDelta::seconds(1))
            .await
            .unwrap(),
        "a later visit is left alone"
    );
    assert_eq!(position(&store, &second, later).await, place);
    assert!(!store.finish(CONCERT, UserId(2), paid, later).await.unwrap());
}

/// The draw (pre-queue or lottery) is ordered by the numbers drawn; it
/// stands behind the FIFO arrivals before it and ahead of those after it,
/// and two instances see one order.
async fn the_draw_stands_between_the_fifo_arrivals_around_it(
    store: AnyQueueStore,
    other: AnyQueueStore,
) {
    let now = t0();
    let arrivals = [
        (1, Lineup::Fifo),
        (2, Lineup::Draw(300)),
        (3, Lineup::Draw(100)),
        (4, Lineup::Draw(DRAW_RANGE - 1)),
        (5, Lineup::Draw(200)),
        (6, Lineup::Fifo),
        (7, Lineup::Draw(0)),
        (8, Lineup::Fifo),
    ];
    let mut passes = Vec::new();
    for (i, (user, lineup)) in arrivals.into_iter().enumerate() {
        let via = if i % 2 == 0 { &store } else { &other };
        passes.push(line_up(via, user, lineup, now).await.0);
    }
    let expected = [1, 4, 2, 5, 3, 6, 7, 8];
    for (p, want) in passes.iter().zip(expected) {
        for via in [&store, &other] {
            assert_eq!(
                position(via, p, now).await,
                Place::Waiting { position: want },
                "user {}",
                p.user
            );
        }
    }
    // Admission takes the same order: the first tick starts the clock,
    // the next admits three at 100/s with room for three.
    let s = settings(100, 3);
    store.tick(CONCERT, &s, now).await.unwrap();
    let later = now + TimeDelta::seconds(1);
    assert_eq!(store.tick(CONCERT, &s, later).await.unwrap().admitted, 3);
    let active: Vec<i64> = {
        let mut users = Vec::new();
        for p in &passes {
            if store.is_active(p, later).await.unwrap() {
                users.push(p.user.value());
            }
        }
        users
    };
    assert_eq!(active, [1, 3, 5], "the line's head, then the lowest draws");
    assert_eq!(
        position(&other, &passes[1], later).await,
        Place::Waiting { position: 1 },
        "the next lowest draw is at the head"
    );
}

/// A room before its opening or paused admits nobody, and keeps every
/// place (with heartbeats); once it admits, the draw goes in order.
async fn nobody_is_admitted_before_the_opening_or_while_paused(store: AnyQueueStore) {
    let opens = t0() + TimeDelta::seconds(20);
    let s = settings(100, 10).with_opening(Some(opens), QueueingMethod::Fifo, false);
    let mut passes = Vec::new();
    for (user, draw) in [(1, 30), (2, 10), (3, 20)] {
        passes.push(line_up(&store, user, Lineup::Draw(draw), t0()).await.0);
    }
    for second in [0, 5, 10, 19] {
        let now = t0() + TimeDelta::seconds(second);
        for p in &passes {
            assert!(matches!(
                position(&store, p, now).await,
                Place::Waiting { .. }
            ));
        }
        assert_eq!(store.tick(CONCERT, &s, now).await.unwrap().admitted, 0);
    }
    let paused = s.with_opening(Some(opens), QueueingMethod::Fifo, true);
    assert_eq!(
        store.tick(CONCERT, &paused, opens).await.unwrap().admitted,
        0
    );
    assert_eq!(
        store
            .tick(CONCERT, &paused, opens + TimeDelta::seconds(1))
            .await
            .unwrap()
            .admitted,
        0,
        "paused after the opening"
    );
    assert_eq!(store.stats(CONCERT, opens).await.unwrap().waiting, 3);
    let resumed = opens + TimeDelta::milliseconds(1_020);
    assert_eq!(
        store.tick(CONCERT, &s, resumed).await.unwrap().admitted,
        2,
        "20 ms at 100/s: no burst banked while paused"
    );
    assert!(store.is_active(&passes[1], resumed).await.unwrap());
    assert!(store.is_active(&passes[2], resumed).await.unwrap());
    assert_eq!(
        position(&store, &passes[0], resumed).await,
        Place::Waiting { position: 1 }
    );
}

/// A closed room places nobody new; a place already held is answered.
async fn a_refused_arrival_gets_no_place(store: AnyQueueStore) {
    let refused = line_up(&store, 1, Lineup::Refuse, t0()).await.1;
    assert_eq!(refused, Place::Gone);
    assert!(
        !store.concerts().await.unwrap().contains(&CONCERT),
        "a refusal opens no room"
    );
    let (held, place) = enter(&store, 2, t0()).await;
    assert_eq!(
        line_up(&store, 3, Lineup::Refuse, t0()).await.1,
        Place::Gone
    );
    let again = store
        .enter(&pass(Uuid::new_v4(), 2), Lineup::Refuse, t0())
        .await
        .unwrap();
    assert_eq!((again.token_id, again.place), (held.token_id, place));
    assert_eq!(store.stats(CONCERT, t0()).await.unwrap().waiting, 1);
}

/// Fisher's chi-square of observed counts against equal expected ones.
fn chi_square(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

/// The shuffle is uniform: groups of four pre-queue with uniformly drawn
/// numbers, and each of the 24 orders of a group comes up equally often
/// (chi-square, 23 degrees of freedom; the bound is exceeded by chance
/// once in about a million runs). Also no place is favoured by arrival:
/// who arrived first in a group is first a quarter of the time.
async fn the_pre_queue_order_is_uniformly_random(store: AnyQueueStore, groups: usize) {
    let mut passes = Vec::new();
    for user in 0..(groups * 4) as i64 {
        let draw = Lineup::Draw(rand::random::<u64>() % DRAW_RANGE);
        passes.push(line_up(&store, user + 1, draw, t0()).await.0);
    }
    let mut orders = [0u64; 24];
    let mut first_arrival_first = 0u64;
    for group in passes.chunks(4) {
        let mut ranked = Vec::new();
        for (arrival, p) in group.iter().enumerate() {
            let Place::Waiting { position } = position(&store, p, t0()).await else {
                panic!("lost a place")
            };
            ranked.push((position, arrival));
        }
        ranked.sort();
        let order: Vec<usize> = ranked.iter().map(|(_, arrival)| *arrival).collect();
        first_arrival_first += u64::from(order[0] == 0);
        // The order's index among the 24 (Lehmer code).
        let mut index = 0;
        for i in 0..4 {
            let smaller_after = order[i + 1..].iter().filter(|&&o| o < order[i]).count();
            index = index * (4 - i) + smaller_after;
        }
        orders[index] += 1;
    }
    let chi = chi_square(&orders);
    eprintln!(
        "shuffle check: orders {orders:?} chi-square {chi:.1} (23 d.f., bound 72); first arrival first {first_arrival_first}/{groups}"
    );
    assert!(
        chi < 72.0,
        "orders {orders:?}: chi-square {chi:.1} over 23 d.f."
    );
    let share = first_arrival_first as f64 / groups as f64;
    let sd = (0.25 * 0.75 / groups as f64).sqrt();
    assert!(
        (share - 0.25).abs() < 5.0 * sd,
        "the first arrival led {share:.3} of the groups"
    );
}

macro_rules! contract {
    ($adapter:ident) => {
        mod $adapter {
            use super::*;

            #[tokio::test]
            async fn a_payment_ends_only_the_visit_it_was_made_in() {
                super::a_payment_ends_only_the_visit_it_was_made_in($adapter().await.0).await;
            }

            #[tokio::test]
            async fn concurrent_entries_get_unique_positions_and_reentry_keeps_the_place() {
                super::concurrent_entries_get_unique_positions_and_reentry_keeps_the_place(
                    $adapter().await.0,
                )
                .await;
            }

            #[tokio::test]
            async fn dropouts_move_everyone_behind_up() {
                super::dropouts_move_everyone_behind_up($adapter().await.0).await;
            }

            #[tokio::test]
            async fn admission_follows_the_rate_and_never_exceeds_max_active() {
                super::admission_follows_the_rate_and_never_exceeds_max_active($adapter().await.0)
                    .await;
            }

            #[tokio::test]
            async fn a_left_or_expired_slot_is_refilled_on_the_next_tick() {
                super::a_left_or_expired_slot_is_refilled_on_the_next_tick($adapter().await.0)
                    .await;
            }

            #[tokio::test]
            async fn two_schedulers_at_once_never_over_admit() {
                let (one, two) = $adapter().await;
                super::two_schedulers_at_once_never_over_admit(one, two).await;
            }

            #[tokio::test]
            async fn every_change_records_its_event() {
                super::every_change_records_its_event($adapter().await.0).await;
            }

            #[tokio::test]
            async fn an_empty_room_left_alone_is_retired_and_reopens_on_the_next_entry() {
                super::an_empty_room_left_alone_is_retired_and_reopens_on_the_next_entry(
                    $adapter().await.0,
                )
                .await;
            }

            #[tokio::test]
            async fn thousands_of_abandoned_rooms_stop_being_ticked() {
                super::thousands_of_abandoned_rooms_stop_being_ticked($adapter().await.0).await;
            }

            #[tokio::test]
            async fn the_draw_stands_between_the_fifo_arrivals_around_it() {
                let (one, two) = $adapter().await;
                super::the_draw_stands_between_the_fifo_arrivals_around_it(one, two).await;
            }

            #[tokio::test]
            async fn nobody_is_admitted_before_the_opening_or_while_paused() {
                super::nobody_is_admitted_before_the_opening_or_while_paused($adapter().await.0)
                    .await;
            }

            #[tokio::test]
            async fn a_refused_arrival_gets_no_place() {
                super::a_refused_arrival_gets_no_place($adapter().await.0).await;
            }

            #[tokio::test]
            async fn the_pre_queue_order_is_uniformly_random() {
                super::the_pre_queue_order_is_uniformly_random($adapter().await.0, 1_200).await;
            }

            #[tokio::test]
            async fn concurrent_polls_answer_as_each_poll_alone_would() {
                super::concurrent_polls_answer_as_each_poll_alone_would($adapter().await.0).await;
            }

            #[tokio::test]
            async fn unknown_tokens_are_gone() {
                super::unknown_tokens_are_gone($adapter().await.0).await;
            }
        }
    };
}

contract!(memory_store);
contract!(redis_store);
contract!(cluster_store);

#[tokio::test]
async fn concurrent_polls_on_redis_share_script_calls() {
    concurrent_redis_polls_share_round_trips(redis_store().await.0).await;
}

#[tokio::test]
async fn concurrent_polls_on_a_cluster_share_script_calls() {
    concurrent_redis_polls_share_round_trips(cluster_store().await.0).await;
}

#[tokio::test]
async fn concurrent_entries_on_redis_share_script_calls() {
    concurrent_redis_entries_share_round_trips(redis_store().await.0).await;
}

#[tokio::test]
async fn concurrent_entries_on_a_cluster_share_script_calls() {
    concurrent_redis_entries_share_round_trips(cluster_store().await.0).await;
}
