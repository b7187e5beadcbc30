//! Idle waiting rooms: what a scheduler round costs when thousands of rooms
//! were opened and left, before and after they retire.
//!
//! 1. Ten live rooms (100 waiting each): the cost of a round over them.
//! 2. 5,000 more rooms entered and left (their events forwarded), not yet
//!    idle: every round ticks all of them.
//! 3. Past the idle time: the first round retires the abandoned rooms; the
//!    rounds after it cost what the live rooms cost.
//!
//! Against Redis, through the same store and script the server uses, with
//! explicit times (no waiting for the idle period).

use std::time::Instant;

use boxoffice::{
    kernel::{ConcertId, UserId},
    queue::{
        domain::{Lineup, QueuePass, QueueSettings},
        infra::redis::RedisQueueStore,
        ports::QueueStore,
    },
};
use chrono::{DateTime, TimeDelta, Utc};
use hdrhistogram::Histogram;
use uuid::Uuid;

use crate::{
    report::{Report, ScenarioResult},
    stores::Stores,
};

const LIVE_ROOMS: i64 = 10;
const WAITING_PER_LIVE_ROOM: i64 = 100;

/// One scheduler round: every listed room ticked once. Its duration (µs)
/// and how many rooms it ticked.
async fn round(
    store: &RedisQueueStore,
    settings: &QueueSettings,
    now: DateTime<Utc>,
) -> anyhow::Result<(u64, usize, u64)> {
    let started = Instant::now();
    let rooms = store.concerts().await?;
    let mut retired = 0;
    for concert in &rooms {
        retired += u64::from(store.tick(*concert, settings, now).await?.retired);
    }
    Ok((started.elapsed().as_micros() as u64, rooms.len(), retired))
}

async fn forward_all(store: &RedisQueueStore, concert: ConcertId) -> anyhow::Result<()> {
    let ids: Vec<String> = store
        .pending_events(concert, 10_000)
        .await?
        .into_iter()
        .map(|e| e.id)
        .collect();
    store.forwarded(concert, &ids).await?;
    Ok(())
}

struct Phase {
    rounds: Histogram<u64>,
    rooms: usize,
    elapsed: std::time::Duration,
}

async fn measure(
    store: &RedisQueueStore,
    settings: &QueueSettings,
    now: DateTime<Utc>,
    rounds: u64,
) -> anyhow::Result<Phase> {
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut rooms = 0;
    let started = Instant::now();
    for i in 0..rounds {
        // A few ms apart, as the scheduler's rounds are.
        let at = now + TimeDelta::milliseconds(100 * i as i64);
        let (us, listed, _) = round(store, settings, at).await?;
        histogram.record(us.max(1))?;
        rooms = listed;
    }
    Ok(Phase {
        rounds: histogram,
        rooms,
        elapsed: started.elapsed(),
    })
}

pub async fn run(stores: &Stores, smoke: bool, report: &mut Report) -> anyhow::Result<()> {
    let (abandoned, rounds) = if smoke { (300, 5) } else { (5_000, 50) };
    let (_, conn) = stores.redis().await?;
    let prefix = format!("bo:bench:{}", Uuid::new_v4().simple());
    let idle = TimeDelta::minutes(10);
    let store = RedisQueueStore::new(conn, &prefix).retiring_after(idle);
    // Nobody is admitted during the measurement: the cost is the rooms'.
    let settings = QueueSettings::parse(1, 1, 600, 3_600)?;
    let t0 = Utc::now();

    for room in 1..=LIVE_ROOMS {
        for user in 1..=WAITING_PER_LIVE_ROOM {
            let newcomer = QueuePass {
                token_id: Uuid::new_v4(),
                user: UserId(user),
                concert: ConcertId(room),
            };
            store.enter(&newcomer, Lineup::Fifo, t0).await?;
        }
        forward_all(&store, ConcertId(room)).await?;
    }
    let live = measure(&store, &settings, t0, rounds).await?;

    for room in 1..=abandoned {
        let concert = ConcertId(1_000_000 + room);
        let newcomer = QueuePass {
            token_id: Uuid::new_v4(),
            user: UserId(1),
            concert,
        };
        let entry = store.enter(&newcomer, Lineup::Fifo, t0).await?;
        let pass = QueuePass {
            token_id: entry.token_id,
            ..newcomer
        };
        store.leave(&pass, t0).await?;
        forward_all(&store, concert).await?;
    }
    let crowded = measure(&store, &settings, t0 + TimeDelta::minutes(1), rounds).await?;

    let idle_at = t0 + idle + TimeDelta::minutes(1);
    let (retiring_us, _, retired) = round(&store, &settings, idle_at).await?;
    // The live rooms keep their waiting users (heartbeats renewed).
    let after = measure(&store, &settings, idle_at + TimeDelta::seconds(1), rounds).await?;

    let p50 = |phase: &Phase| phase.rounds.value_at_quantile(0.5) as f64 / 1000.0;
    for (name, phase) in [
        (format!("scheduler round: {LIVE_ROOMS} live rooms"), &live),
        (
            format!("scheduler round: {LIVE_ROOMS} live + {abandoned} abandoned rooms"),
            &crowded,
        ),
        (
            format!("scheduler round: after the {abandoned} abandoned rooms retired"),
            &after,
        ),
    ] {
        let mut result = ScenarioResult::new(&name, rounds, phase.elapsed, &phase.rounds);
        result.notes.push(format!(
            "{} rooms listed and ticked per round (one Lua tick script each, over one Redis connection)",
            phase.rooms
        ));
        if std::ptr::eq(phase, &after) {
            result
                .check(
                    "every abandoned room retired in one round",
                    retired == abandoned as u64,
                )
                .check(
                    "only the live rooms are listed afterwards",
                    after.rooms == LIVE_ROOMS as usize,
                );
            result.notes.push(format!(
                "the retiring round took {:.1} ms; p50 round {:.2} ms before the abandoned rooms, {:.2} ms with them, {:.2} ms after they retired",
                retiring_us as f64 / 1000.0,
                p50(&live),
                p50(&crowded),
                p50(&after)
            ));
        }
        report.scenarios.push(result);
    }
    Ok(())
}
