//! The delivery audit: the outbox's promise checked end to end, not
//! trusted to the bus. An event published to Redis may still be lost
//! there (a failover that drops acknowledged writes, a `FLUSHALL`, a
//! trimmed or deleted stream); the database knows which groups must handle
//! each event type and which have, so a pass sends every event a group is
//! owed but can no longer receive from the stream to that group again. The
//! inbox drops what a group has already seen.

use std::collections::HashMap;

use chrono::TimeDelta;
use uuid::Uuid;

use crate::{
    kernel::Clock,
    outbox::{
        domain::{GroupReach, GroupStatus, OutboxError, audit, partition_of},
        ports::{AuditPass, DeliveryLedger, EventBus},
    },
};

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// False when another instance was auditing: nothing was looked at.
    pub ran: bool,
    /// Rows looked at.
    pub checked: u64,
    /// Rows found delivered to every group owed them.
    pub delivered: u64,
    /// Events sent again, per group.
    pub resent: HashMap<String, u64>,
}

pub struct DeliveryAuditor<L, B, C> {
    ledger: L,
    bus: B,
    clock: C,
    /// How long after its publication an event may go unhandled before
    /// the audit looks at it.
    after: TimeDelta,
    /// Rows per pass.
    batch: u64,
    /// Where the next pass goes on from: each pass looks at the next page
    /// of undelivered rows, and after the last page starts over, so rows
    /// owed to a group that stays away (paused for days, say) never keep
    /// the audit from the newer rows behind them.
    cursor: std::sync::atomic::AtomicI64,
}

impl<L: DeliveryLedger, B: EventBus, C: Clock> DeliveryAuditor<L, B, C> {
    pub fn new(ledger: L, bus: B, clock: C, after: TimeDelta, batch: u64) -> Self {
        Self {
            ledger,
            bus,
            clock,
            after,
            batch,
            cursor: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// One pass over up to `batch` rows published more than `after` ago and
    /// not yet delivered to every group subscribed to their type: each
    /// group owed an event it can no longer receive from the stream is
    /// sent it again; a row every group finished is marked delivered (so
    /// its retention may start). A pass runs on one instance at a time.
    pub async fn pass(&self) -> Result<AuditReport, OutboxError> {
        let Some(mut pass) = self.ledger.begin().await? else {
            return Ok(AuditReport::default());
        };
        let now = self.clock.now();
        let before = now - self.after;
        let mut report = AuditReport {
            ran: true,
            ..AuditReport::default()
        };
        use std::sync::atomic::Ordering::Relaxed;
        let rows = (pass.undelivered(before, self.cursor.load(Relaxed), self.batch)).await?;
        // A full page: the next pass goes on after it; otherwise it starts
        // over from the oldest.
        let next = match rows.last() {
            Some(last) if rows.len() as u64 >= self.batch => last.outbox_id,
            _ => 0,
        };
        self.cursor.store(next, Relaxed);
        if rows.is_empty() {
            pass.commit().await?;
            return Ok(report);
        }
        let subscriptions = pass.subscriptions().await?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
        let finished = pass.finished(&ids).await?;
        let resending = pass.resending(&ids, before).await?;
        // A bus that cannot answer makes every group unknown: nothing is
        // sent again, finished rows are still marked.
        let groups = match self.bus.groups().await {
            Ok(groups) if self.bus.is_durable() => Some(groups),
            Ok(_) => None,
            Err(err) => {
                tracing::warn!(
                    error = format!("{err:#}"),
                    "delivery audit: the bus cannot say how far its groups read; re-sending nothing this pass"
                );
                None
            }
        };
        let partitions = self.bus.partitions();
        let mut delivered = Vec::new();
        for row in &rows {
            let partition = partition_of(&row.aggregate_type, &row.aggregate_id, partitions);
            let subscribed = subscriptions
                .get(&row.event_type)
                .map_or(&[][..], Vec::as_slice);
            let verdict = audit(
                row,
                subscribed,
                |group| finished.contains(&(group.to_owned(), row.event_id)),
                |group| resending.contains(&(group.to_owned(), row.event_id)),
                |group| reach(groups.as_deref(), group, partition),
            );
            if verdict.delivered {
                delivered.push(row.outbox_id);
            }
            for group in verdict.resend {
                pass.resend(row, &group).await?;
                tracing::info!(
                    group,
                    event_id = %row.event_id,
                    event_type = %row.event_type,
                    "delivery audit: the group never received this event and can no longer get it from the stream; sending it again"
                );
                *report.resent.entry(group).or_default() += 1;
            }
        }
        pass.mark_delivered(&delivered, now).await?;
        pass.commit().await?;
        report.checked = rows.len() as u64;
        report.delivered = delivered.len() as u64;
        for (group, n) in &report.resent {
            metrics::counter!("events_redelivered_total", "consumer" => group.clone())
                .increment(*n);
        }
        Ok(report)
    }
}

/// What the bus's groups say of `group` on `partition`: a durable bus
/// that answered and does not list the group there has lost it (the
/// stream was deleted or flushed); an in-process bus, or one that did not
/// answer (`None`), cannot say.
fn reach(groups: Option<&[GroupStatus]>, group: &str, partition: u16) -> GroupReach {
    let Some(groups) = groups else {
        return GroupReach::Unknown;
    };
    match groups
        .iter()
        .find(|g| g.name == group && g.partition == partition)
    {
        None => GroupReach::Gone,
        Some(GroupStatus {
            horizon: Some(horizon),
            ..
        }) => GroupReach::Reading(*horizon),
        Some(_) => GroupReach::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashSet,
        sync::{Arc, Mutex},
    };

    use chrono::{DateTime, Utc};

    use super::*;
    use crate::{
        kernel::{ManualClock, events::types},
        outbox::{
            domain::{EntryId, Published, ReadHorizon},
            usecase::fake_bus::FakeBus,
        },
    };

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    /// The outbox, inbox, dead letters and subscriptions in memory.
    #[derive(Default)]
    struct Tables {
        rows: Vec<(Published, Option<DateTime<Utc>>)>,
        subscriptions: HashMap<String, Vec<String>>,
        finished: HashSet<(String, Uuid)>,
        resent: Vec<(Uuid, String)>,
        busy: bool,
        commits: u32,
    }

    #[derive(Clone, Default)]
    struct FakeLedger(Arc<Mutex<Tables>>);

    struct FakePass {
        tables: Arc<Mutex<Tables>>,
        resent: Vec<(Uuid, String)>,
        delivered: Vec<(i64, DateTime<Utc>)>,
    }

    impl DeliveryLedger for FakeLedger {
        type Pass = FakePass;

        async fn begin(&self) -> Result<Option<FakePass>, OutboxError> {
            if self.0.lock().unwrap().busy {
                return Ok(None);
            }
            Ok(Some(FakePass {
                tables: self.0.clone(),
                resent: Vec::new(),
                delivered: Vec::new(),
            }))
        }
    }

    impl AuditPass for FakePass {
        async fn subscriptions(&mut self) -> Result<HashMap<String, Vec<String>>, OutboxError> {
            Ok(self.tables.lock().unwrap().subscriptions.clone())
        }

        async fn undelivered(
            &mut self,
            before: DateTime<Utc>,
            after: i64,
            max: u64,
        ) -> Result<Vec<Published>, OutboxError> {
            Ok(self
                .tables
                .lock()
                .unwrap()
                .rows
                .iter()
                .filter(|(row, delivered)| {
                    row.outbox_id > after && delivered.is_none() && row.published_at < before
                })
                .take(max as usize)
                .map(|(row, _)| row.clone())
                .collect())
        }

        async fn finished(
            &mut self,
            events: &[Uuid],
        ) -> Result<HashSet<(String, Uuid)>, OutboxError> {
            Ok(self
                .tables
                .lock()
                .unwrap()
                .finished
                .iter()
                .filter(|(_, e)| events.contains(e))
                .cloned()
                .collect())
        }

        async fn resending(
            &mut self,
            events: &[Uuid],
            _since: DateTime<Utc>,
        ) -> Result<HashSet<(String, Uuid)>, OutboxError> {
            Ok(self
                .tables
                .lock()
                .unwrap()
                .resent
                .iter()
                .filter(|(e, _)| events.contains(e))
                .map(|(e, g)| (g.clone(), *e))
                .collect())
        }

        async fn resend(&mut self, event: &Published, group: &str) -> Result<(), OutboxError> {
            self.resent.push((event.event_id, group.to_owned()));
            Ok(())
        }

        async fn mark_delivered(
            &mut self,
            rows: &[i64],
            now: DateTime<Utc>,
        ) -> Result<(), OutboxError> {
            self.delivered.extend(rows.iter().map(|id| (*id, now)));
            Ok(())
        }

        async fn commit(self) -> Result<(), OutboxError> {
            let mut tables = self.tables.lock().unwrap();
            tables.commits += 1;
            tables.resent.extend(self.resent);
            for (id, at) in self.delivered {
                if let Some(row) = tables.rows.iter_mut().find(|(r, _)| r.outbox_id == id) {
                    row.1 = Some(at);
                }
            }
            Ok(())
        }
    }

    fn group(name: &str, horizon: ReadHorizon) -> GroupStatus {
        GroupStatus {
            name: name.into(),
            partition: 0,
            stream: "bo:events".into(),
            pending: 0,
            lag: 0,
            horizon: Some(horizon),
        }
    }

    struct Harness {
        ledger: FakeLedger,
        bus: FakeBus,
        clock: ManualClock,
        auditor: DeliveryAuditor<FakeLedger, FakeBus, ManualClock>,
    }

    /// Payment 7 completed at t0 (its event published then); `receipts`,
    /// `reservations` and `data-platform` subscribe to it.
    fn harness() -> Harness {
        let ledger = FakeLedger::default();
        {
            let mut tables = ledger.0.lock().unwrap();
            tables.rows.push((
                Published {
                    outbox_id: 1,
                    event_id: Uuid::from_u128(7),
                    event_type: types::PAYMENT_COMPLETED.into(),
                    aggregate_type: "payment".into(),
                    aggregate_id: "7".into(),
                    target: None,
                    published_at: t0(),
                    stream_id: Some(entry(1_000)),
                },
                None,
            ));
            tables.subscriptions.insert(
                types::PAYMENT_COMPLETED.into(),
                vec![
                    "data-platform".into(),
                    "receipts".into(),
                    "reservations".into(),
                ],
            );
        }
        let bus = FakeBus::default();
        let clock = ManualClock::new(t0());
        let auditor = DeliveryAuditor::new(
            ledger.clone(),
            bus.clone(),
            clock.clone(),
            TimeDelta::seconds(60),
            100,
        );
        Harness {
            ledger,
            bus,
            clock,
            auditor,
        }
    }

    fn entry(ms: u64) -> EntryId {
        EntryId { ms, seq: 0 }
    }

    /// The stream holds entries 0 to 5,000 (payment 7's is 1,000); the
    /// group read up to `last`.
    fn read_past(last: u64) -> ReadHorizon {
        ReadHorizon {
            first_entry: Some(entry(0)),
            last_entry: Some(entry(5_000)),
            last_delivered: entry(last),
            oldest_pending: None,
            next_undelivered: None,
        }
    }

    /// Groups that each read past payment 7's entry.
    fn all_read_past(groups: &[&str]) -> Vec<GroupStatus> {
        (groups.iter())
            .map(|name| group(name, read_past(3_000)))
            .collect()
    }

    impl Harness {
        fn finish(&self, group: &str) {
            self.ledger
                .0
                .lock()
                .unwrap()
                .finished
                .insert((group.into(), Uuid::from_u128(7)));
        }

        fn resent(&self) -> Vec<(Uuid, String)> {
            self.ledger.0.lock().unwrap().resent.clone()
        }

        fn delivered_at(&self) -> Option<DateTime<Utc>> {
            self.ledger.0.lock().unwrap().rows[0].1
        }
    }

    #[tokio::test]
    async fn an_event_younger_than_the_delay_is_not_looked_at() {
        let h = harness();
        h.clock.advance(TimeDelta::seconds(59));
        let report = h.auditor.pass().await.unwrap();
        assert_eq!(report.checked, 0);
        assert!(h.resent().is_empty());
    }

    #[tokio::test]
    async fn an_event_lost_on_the_way_to_one_group_is_sent_to_that_group_alone_once() {
        let h = harness();
        h.finish("data-platform");
        h.finish("receipts");
        // The stream was deleted under `reservations`: its group is gone.
        *h.bus.groups.lock().unwrap() = all_read_past(&["data-platform", "receipts"]);
        h.clock.advance(TimeDelta::seconds(61));
        let report = h.auditor.pass().await.unwrap();
        assert_eq!(
            report.resent,
            HashMap::from([("reservations".to_owned(), 1)])
        );
        assert_eq!(
            h.resent(),
            vec![(Uuid::from_u128(7), "reservations".to_owned())]
        );
        assert_eq!(h.delivered_at(), None, "not delivered yet");

        // The next pass finds the re-send on its way: nothing more.
        h.clock.advance(TimeDelta::seconds(5));
        let again = h.auditor.pass().await.unwrap();
        assert!(again.resent.is_empty());
        assert_eq!(h.resent().len(), 1);

        // Once the group handled it, the row is delivered.
        h.finish("reservations");
        h.auditor.pass().await.unwrap();
        assert_eq!(h.delivered_at(), Some(h.clock.now()));
        let after = h.auditor.pass().await.unwrap();
        assert_eq!(after.checked, 0, "a delivered row is not looked at again");
    }

    #[tokio::test]
    async fn a_group_that_lags_or_retries_is_left_to_its_stream() {
        let h = harness();
        h.finish("data-platform");
        let lagging = read_past(900);
        let retrying = ReadHorizon {
            oldest_pending: Some(entry(999)),
            ..read_past(3_000)
        };
        *h.bus.groups.lock().unwrap() = vec![
            group("data-platform", read_past(3_000)),
            group("receipts", lagging),
            group("reservations", retrying),
        ];
        h.clock.advance(TimeDelta::minutes(5));
        let report = h.auditor.pass().await.unwrap();
        assert_eq!(report.checked, 1);
        assert!(report.resent.is_empty());
        assert_eq!(h.delivered_at(), None);
    }

    #[tokio::test]
    async fn a_group_that_read_past_an_event_it_never_handled_is_sent_it_again() {
        let h = harness();
        h.finish("data-platform");
        h.finish("reservations");
        // Read past it, nothing pending: the entry was lost with a failover
        // that dropped acknowledged writes (or acknowledged unhandled).
        *h.bus.groups.lock().unwrap() =
            all_read_past(&["data-platform", "receipts", "reservations"]);
        h.clock.advance(TimeDelta::seconds(61));
        let report = h.auditor.pass().await.unwrap();
        assert_eq!(report.resent, HashMap::from([("receipts".to_owned(), 1)]));
    }

    #[tokio::test]
    async fn when_the_bus_cannot_answer_nothing_is_sent_but_finished_rows_are_marked() {
        let mut h = harness();
        h.bus.down = true;
        h.auditor = DeliveryAuditor::new(
            h.ledger.clone(),
            h.bus.clone(),
            h.clock.clone(),
            TimeDelta::seconds(60),
            100,
        );
        h.clock.advance(TimeDelta::seconds(61));
        h.auditor.pass().await.unwrap();
        assert!(h.resent().is_empty());
        for group in ["data-platform", "receipts", "reservations"] {
            h.finish(group);
        }
        h.auditor.pass().await.unwrap();
        assert_eq!(h.delivered_at(), Some(h.clock.now()));
    }

    #[tokio::test]
    async fn only_one_instance_audits_at_a_time() {
        let h = harness();
        h.ledger.0.lock().unwrap().busy = true;
        h.clock.advance(TimeDelta::seconds(61));
        let report = h.auditor.pass().await.unwrap();
        assert_eq!(report, AuditReport::default());
        assert_eq!(h.ledger.0.lock().unwrap().commits, 0);
    }

    #[tokio::test]
    async fn rows_owed_to_a_group_that_stays_away_do_not_keep_the_audit_from_newer_ones() {
        let mut h = harness();
        // Three rows no group finished (a group paused for days), then
        // payment 7's lost one, behind them.
        {
            let mut tables = h.ledger.0.lock().unwrap();
            let lost = tables.rows.remove(0).0;
            for id in 1..=3 {
                tables.rows.push((
                    Published {
                        outbox_id: id,
                        event_id: Uuid::from_u128(100 + id as u128),
                        aggregate_id: format!("{}", 100 + id),
                        // Not yet read by anyone: it may still come.
                        stream_id: Some(entry(4_000)),
                        ..lost.clone()
                    },
                    None,
                ));
            }
            // Read past by `reservations` and not pending: lost.
            let lost = Published {
                outbox_id: 4,
                stream_id: Some(entry(400)),
                ..lost
            };
            tables.rows.push((lost, None));
        }
        h.finish("data-platform");
        h.finish("receipts");
        // The stream still holds the first three for every group (none
        // read them yet); payment 7's `reservations` read past and lost.
        let waiting = ReadHorizon {
            last_delivered: entry(500),
            ..read_past(0)
        };
        *h.bus.groups.lock().unwrap() = vec![
            group("data-platform", read_past(3_000)),
            group("receipts", read_past(3_000)),
            group("reservations", waiting),
        ];
        h.auditor = DeliveryAuditor::new(
            h.ledger.clone(),
            h.bus.clone(),
            h.clock.clone(),
            TimeDelta::seconds(60),
            2,
        );
        h.clock.advance(TimeDelta::seconds(61));
        // Rows 1 and 2 first (a full page), then 3 and 4: payment 7's event
        // is found and sent again though the older ones stay owed.
        assert_eq!(h.auditor.pass().await.unwrap().checked, 2);
        assert!(h.resent().is_empty());
        let report = h.auditor.pass().await.unwrap();
        assert_eq!(report.checked, 2);
        assert_eq!(
            h.resent(),
            vec![(Uuid::from_u128(7), "reservations".to_owned())]
        );
        // Past the end (the last page was full), then from the start again.
        assert_eq!(h.auditor.pass().await.unwrap().checked, 0);
        assert_eq!(h.auditor.pass().await.unwrap().checked, 2);
    }
}
