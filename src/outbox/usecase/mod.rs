mod audit;
#[cfg(test)]
mod fake_bus;
mod watch;

pub use audit::{AuditReport, DeliveryAuditor};
pub use watch::{GROUPS_PROBE, GroupWatch, group_stalls};

use super::{
    domain::{DeadLetter, EventPipelineStatus, OutboxError, by_consumer},
    ports::{EventBus, OutboxRepository, RelayWake},
};
use crate::kernel::Fault;
use crate::kernel::{Clock, Page, PageRequest, UserId};

/// Dead letter pages: 100 unless asked otherwise, at most 500.
pub const DEFAULT_DEAD_LETTER_PAGE: u64 = 100;
pub const MAX_DEAD_LETTER_PAGE: u64 = 500;

/// The operator's view of the event pipeline and the dead-letter replay.
#[derive(Clone)]
pub struct EventPipeline<R, B, W, C> {
    repo: R,
    bus: B,
    wake: W,
    clock: C,
}

impl<R: OutboxRepository, B: EventBus, W: RelayWake, C: Clock> EventPipeline<R, B, W, C> {
    pub fn new(repo: R, bus: B, wake: W, clock: C) -> Self {
        Self {
            repo,
            bus,
            wake,
            clock,
        }
    }

    pub async fn status(&self) -> Result<EventPipelineStatus, OutboxError> {
        let backlog = self.repo.backlog().await?;
        let dead_letters = self.repo.open_dead_letter_count().await?;
        let mut groups = by_consumer(
            self.bus
                .groups()
                .await
                .map_err(|cause| OutboxError::Fault(Fault::Unavailable(cause)))?,
        );
        let redelivered = self.repo.redelivered().await?;
        for group in &mut groups {
            group.redelivered = redelivered.get(&group.name).copied().unwrap_or(0);
        }
        Ok(EventPipelineStatus {
            backlog,
            groups,
            dead_letters,
        })
    }

    /// A page of dead letters, newest first; open ones only unless
    /// `include_replayed`.
    pub async fn dead_letters(
        &self,
        include_replayed: bool,
        asked: PageRequest,
    ) -> Result<Page<DeadLetter>, OutboxError> {
        let read = |page| self.repo.dead_letters(include_replayed, page);
        asked.read(MAX_DEAD_LETTER_PAGE, read, |d| d.id).await
    }

    /// Sends a dead letter's event back to the consumer that gave up on it.
    pub async fn replay(&self, dead_letter: i64, admin: UserId) -> Result<i64, OutboxError> {
        let outbox_id = self
            .repo
            .replay_dead_letter(dead_letter, admin, self.clock.now())
            .await?;
        self.wake.wake();
        Ok(outbox_id)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    };

    use chrono::{DateTime, TimeDelta, Utc};
    use uuid::Uuid;

    use super::{fake_bus::FakeBus, *};
    use crate::{
        kernel::{
            ManualClock,
            events::{NewEvent, types},
        },
        outbox::domain::{ConsumerStatus, GroupStatus, OutboxBacklog},
    };

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn dead_letter(id: i64, replayed_at: Option<DateTime<Utc>>) -> DeadLetter {
        DeadLetter {
            id,
            consumer: "receipts".into(),
            event_id: Uuid::from_u128(id as u128),
            event_type: "PaymentCompleted".into(),
            deliveries: 5,
            last_error: "provider down".into(),
            envelope: "{}".into(),
            created_at: t0(),
            replayed_at,
        }
    }

    #[derive(Default)]
    struct Outbox {
        dead_letters: Vec<DeadLetter>,
        list_calls: Vec<(bool, PageRequest)>,
        replays: Vec<(i64, DateTime<Utc>)>,
        audit: Vec<NewEvent>,
        next_outbox_id: i64,
        down: bool,
    }

    #[derive(Clone, Default)]
    struct FakeRepo(Arc<Mutex<Outbox>>);

    impl FakeRepo {
        /// The stored outbox, unless the database is down.
        fn open(&self) -> Result<MutexGuard<'_, Outbox>, OutboxError> {
            Ok(Fault::unless_down(&self.0, |outbox| outbox.down)?)
        }
    }

    impl OutboxRepository for FakeRepo {
        async fn backlog(&self) -> Result<OutboxBacklog, OutboxError> {
            drop(self.open()?);
            Ok(OutboxBacklog {
                pending: 3,
                oldest_pending: Some(t0()),
            })
        }

        async fn dead_letters(
            &self,
            include_replayed: bool,
            page: PageRequest,
        ) -> Result<Vec<DeadLetter>, OutboxError> {
            let mut outbox = self.open()?;
            outbox.list_calls.push((include_replayed, page));
            Ok(outbox
                .dead_letters
                .iter()
                .rev()
                .filter(|d| include_replayed || d.replayed_at.is_none())
                .filter(|d| page.after.is_none_or(|after| d.id < after))
                .take(page.fetch() as usize)
                .cloned()
                .collect())
        }

        async fn redelivered(&self) -> Result<std::collections::HashMap<String, u64>, OutboxError> {
            drop(self.open()?);
            Ok(std::collections::HashMap::from([
                ("receipts".to_owned(), 4),
                ("gone".to_owned(), 1),
            ]))
        }

        async fn open_dead_letter_count(&self) -> Result<u64, OutboxError> {
            let outbox = self.open()?;
            Ok(outbox
                .dead_letters
                .iter()
                .filter(|d| d.replayed_at.is_none())
                .count() as u64)
        }

        async fn replay_dead_letter(
            &self,
            id: i64,
            admin: UserId,
            now: DateTime<Utc>,
        ) -> Result<i64, OutboxError> {
            let mut outbox = self.open()?;
            let letter = outbox
                .dead_letters
                .iter_mut()
                .find(|d| d.id == id)
                .ok_or(OutboxError::DeadLetterNotFound(id))?;
            if letter.replayed_at.is_some() {
                return Err(OutboxError::AlreadyReplayed(id));
            }
            letter.replayed_at = Some(now);
            let event = letter.replayed(admin);
            outbox.replays.push((id, now));
            outbox.audit.push(event);
            outbox.next_outbox_id += 1;
            Ok(100 + outbox.next_outbox_id)
        }
    }

    /// `receipts` over two partitions: 7 behind on the first, 2 pending
    /// on the second.
    fn receipts_bus() -> FakeBus {
        let row = |partition: u16, pending: u64, lag: u64| GroupStatus {
            name: "receipts".into(),
            partition,
            stream: format!("bo:events:{{p{partition}}}"),
            pending,
            lag,
            horizon: None,
        };
        FakeBus::with(vec![row(1, 2, 0), row(0, 0, 7)])
    }

    #[derive(Clone, Default)]
    struct CountingWake(Arc<AtomicUsize>);

    impl RelayWake for CountingWake {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Harness {
        pipeline: EventPipeline<FakeRepo, FakeBus, CountingWake, ManualClock>,
        repo: FakeRepo,
        wake: CountingWake,
        clock: ManualClock,
    }

    fn harness_with_the_database_down() -> Harness {
        let h = harness(receipts_bus());
        h.repo.0.lock().unwrap().down = true;
        h
    }

    fn unavailable<T>(answer: Result<T, OutboxError>) -> bool {
        matches!(answer, Err(OutboxError::Fault(Fault::Unavailable(_))))
    }

    fn harness(bus: FakeBus) -> Harness {
        let repo = FakeRepo::default();
        repo.0.lock().unwrap().dead_letters = vec![
            dead_letter(1, None),
            dead_letter(2, Some(t0())),
            dead_letter(3, None),
        ];
        let wake = CountingWake::default();
        let clock = ManualClock::new(t0());
        Harness {
            pipeline: EventPipeline::new(repo.clone(), bus, wake.clone(), clock.clone()),
            repo,
            wake,
            clock,
        }
    }

    fn wakes(h: &Harness) -> usize {
        h.wake.0.load(Ordering::SeqCst)
    }

    impl Harness {
        async fn letters(&self, include_replayed: bool, asked: PageRequest) -> Page<DeadLetter> {
            self.pipeline
                .dead_letters(include_replayed, asked)
                .await
                .unwrap()
        }

        /// The pages the repository was asked for, with `include_replayed`.
        fn list_calls(&self) -> Vec<(bool, PageRequest)> {
            self.repo.0.lock().unwrap().list_calls.clone()
        }
    }

    // --- status ---

    #[tokio::test]
    async fn the_status_joins_the_backlog_the_groups_and_the_open_dead_letters() {
        let h = harness(receipts_bus());
        assert_eq!(
            h.pipeline.status().await.unwrap(),
            EventPipelineStatus {
                backlog: OutboxBacklog {
                    pending: 3,
                    oldest_pending: Some(t0()),
                },
                groups: vec![ConsumerStatus {
                    name: "receipts".into(),
                    pending: 2,
                    lag: 7,
                    redelivered: 4,
                    partitions: vec![
                        GroupStatus {
                            name: "receipts".into(),
                            partition: 0,
                            stream: "bo:events:{p0}".into(),
                            pending: 0,
                            lag: 7,
                            horizon: None,
                        },
                        GroupStatus {
                            name: "receipts".into(),
                            partition: 1,
                            stream: "bo:events:{p1}".into(),
                            pending: 2,
                            lag: 0,
                            horizon: None,
                        },
                    ],
                }],
                dead_letters: 2,
            }
        );
    }

    #[tokio::test]
    async fn a_bus_that_cannot_answer_makes_the_status_unavailable() {
        let h = harness(FakeBus {
            down: true,
            ..receipts_bus()
        });
        assert!(unavailable(h.pipeline.status().await));
    }

    #[tokio::test]
    async fn a_database_that_cannot_answer_fails_the_status() {
        let h = harness_with_the_database_down();
        assert!(unavailable(h.pipeline.status().await));
    }

    // --- dead_letters ---

    #[tokio::test]
    async fn dead_letters_are_listed_open_only_unless_replayed_ones_are_asked_for() {
        let h = harness(receipts_bus());
        let ids =
            |letters: Page<DeadLetter>| letters.items.iter().map(|d| d.id).collect::<Vec<_>>();
        assert_eq!(
            ids(h.letters(false, PageRequest::asked(None, 10)).await),
            vec![3, 1]
        );
        assert_eq!(
            ids(h.letters(true, PageRequest::asked(None, 10)).await),
            vec![3, 2, 1]
        );
        let newest = h.letters(true, PageRequest::asked(None, 2)).await;
        assert_eq!(newest.next_cursor, Some(2));
        assert_eq!(
            ids(h
                .letters(true, PageRequest::asked(newest.next_cursor, 2))
                .await),
            vec![1]
        );
        let calls: Vec<(bool, Option<i64>)> = (h.list_calls().iter())
            .map(|(replayed, page)| (*replayed, page.after))
            .collect();
        assert_eq!(
            calls,
            vec![(false, None), (true, None), (true, None), (true, Some(2))]
        );
    }

    #[tokio::test]
    async fn the_dead_letter_limit_is_kept_between_one_and_the_maximum() {
        let h = harness(receipts_bus());
        for limit in [
            0,
            2,
            MAX_DEAD_LETTER_PAGE,
            MAX_DEAD_LETTER_PAGE + 1,
            u64::MAX,
        ] {
            h.letters(true, PageRequest::asked(None, limit)).await;
        }
        let limits: Vec<u64> = h.list_calls().iter().map(|c| c.1.limit).collect();
        assert_eq!(
            limits,
            vec![
                1,
                2,
                MAX_DEAD_LETTER_PAGE,
                MAX_DEAD_LETTER_PAGE,
                MAX_DEAD_LETTER_PAGE
            ]
        );
    }

    #[tokio::test]
    async fn dead_letters_cannot_be_listed_while_the_database_is_down() {
        let h = harness_with_the_database_down();
        assert!(unavailable(
            h.pipeline
                .dead_letters(false, PageRequest::asked(None, 10))
                .await
        ));
    }

    const ADMIN: UserId = UserId(9_000);

    // --- replay ---

    #[tokio::test]
    async fn a_replay_is_recorded_at_the_clock_time_and_wakes_the_relay() {
        let h = harness(receipts_bus());
        h.clock.advance(TimeDelta::minutes(3));
        assert_eq!(h.pipeline.replay(3, ADMIN).await.unwrap(), 101);
        assert_eq!(
            h.repo.0.lock().unwrap().replays,
            vec![(3, t0() + TimeDelta::minutes(3))]
        );
        let audit = h.repo.0.lock().unwrap().audit.clone();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].event_type, types::DEAD_LETTER_REPLAYED);
        assert_eq!(audit[0].payload["adminId"], ADMIN.value());
        assert_eq!(audit[0].payload["deadLetterId"], 3);
        assert_eq!(wakes(&h), 1);
        assert_eq!(h.pipeline.status().await.unwrap().dead_letters, 1);
    }

    #[tokio::test]
    async fn replaying_an_unknown_dead_letter_is_not_found_and_wakes_nobody() {
        let h = harness(receipts_bus());
        assert!(matches!(
            h.pipeline.replay(9, ADMIN).await,
            Err(OutboxError::DeadLetterNotFound(9))
        ));
        assert_eq!(wakes(&h), 0);
    }

    #[tokio::test]
    async fn replaying_twice_is_refused_and_wakes_once() {
        let h = harness(receipts_bus());
        h.pipeline.replay(1, ADMIN).await.unwrap();
        assert!(matches!(
            h.pipeline.replay(1, ADMIN).await,
            Err(OutboxError::AlreadyReplayed(1))
        ));
        assert!(matches!(
            h.pipeline.replay(2, ADMIN).await,
            Err(OutboxError::AlreadyReplayed(2))
        ));
        assert_eq!(wakes(&h), 1);
        assert_eq!(h.repo.0.lock().unwrap().replays.len(), 1);
    }

    #[tokio::test]
    async fn a_replay_while_the_database_is_down_is_unavailable_and_wakes_nobody() {
        let h = harness_with_the_database_down();
        assert!(unavailable(h.pipeline.replay(1, ADMIN).await));
        assert_eq!(wakes(&h), 0);
    }
}
