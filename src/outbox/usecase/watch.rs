//! The consumer groups' watchdog probe: a group handed nothing new, or
//! holding an entry unacknowledged, for too long.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::{FutureExt, future::BoxFuture};

use crate::{
    kernel::{
        StoreError,
        alerts::Severity,
        watch::{Look, Stall, StallProbe},
    },
    outbox::{
        domain::{EntryId, GroupStatus},
        ports::EventBus,
    },
};

pub const GROUPS_PROBE: &str = "watchdog:groups";

/// The time a stream entry id was written.
fn written_at(id: EntryId) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(i64::try_from(id.ms).ok()?)
}

/// Per group (over its partitions): behind since before `look.since` (its
/// oldest entry not yet handed to it), or holding an entry unacknowledged
/// since before `look.since`. Conditions `watchdog:groups:lag:<group>` and
/// `watchdog:groups:pending:<group>`.
pub fn group_stalls(groups: &[GroupStatus], look: Look) -> Vec<Stall> {
    // (group) → (oldest undelivered, its stream, lag) and (oldest pending, stream, pending)
    type Oldest = Option<(EntryId, String)>;
    let mut by_group: BTreeMap<&str, (Oldest, u64, Oldest, u64)> = BTreeMap::new();
    for g in groups {
        let Some(h) = g.horizon else { continue };
        let slot = by_group.entry(&g.name).or_default();
        slot.1 += g.lag;
        slot.3 += g.pending;
        if let Some(next) = h.next_undelivered
            && slot.0.as_ref().is_none_or(|(old, _)| next < *old)
        {
            slot.0 = Some((next, g.stream.clone()));
        }
        if let Some(pending) = h.oldest_pending
            && slot.2.as_ref().is_none_or(|(old, _)| pending < *old)
        {
            slot.2 = Some((pending, g.stream.clone()));
        }
    }
    let after = look.threshold().num_seconds();
    let mut stalls = Vec::new();
    for (group, (undelivered, lag, pending, pending_count)) in by_group {
        if let Some((id, stream)) = undelivered
            && let Some(at) = written_at(id).filter(|at| *at < look.since)
        {
            stalls.push(Stall {
                condition: format!("{GROUPS_PROBE}:lag:{group}"),
                severity: Severity::Critical,
                message: format!(
                    "consumer group {group} is behind for over {after} s: {lag} entr(ies) not yet handed to it, \
                     the oldest {id} on {stream}; are its consumers running?"
                ),
                age: look.now - at,
            });
        }
        if let Some((id, stream)) = pending
            && let Some(at) = written_at(id).filter(|at| *at < look.since)
        {
            stalls.push(Stall {
                condition: format!("{GROUPS_PROBE}:pending:{group}"),
                severity: Severity::Warning,
                message: format!(
                    "consumer group {group} holds entr(ies) unacknowledged for over {after} s: {pending_count} pending, \
                     the oldest {id} on {stream}"
                ),
                age: look.now - at,
            });
        }
    }
    stalls
}

/// [`group_stalls`] over what the bus says now.
pub struct GroupWatch<B>(pub B);

impl<B: EventBus> StallProbe for GroupWatch<B> {
    fn name(&self) -> &'static str {
        GROUPS_PROBE
    }

    fn stalls(&self, look: Look) -> BoxFuture<'_, Result<Vec<Stall>, StoreError>> {
        async move {
            let groups = self.0.groups().await.map_err(StoreError::Unavailable)?;
            Ok(group_stalls(&groups, look))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::outbox::domain::ReadHorizon;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    /// At 1 000 s, for what is stuck since before 700 s.
    fn look() -> Look {
        Look {
            since: at(700),
            now: at(1_000),
        }
    }

    fn entry(s: i64) -> EntryId {
        EntryId {
            ms: at(s).timestamp_millis() as u64,
            seq: 0,
        }
    }

    fn group(name: &str, partition: u16, next: Option<i64>, pending: Option<i64>) -> GroupStatus {
        GroupStatus {
            name: name.into(),
            partition,
            stream: format!("bo:events:{partition}"),
            pending: u64::from(pending.is_some()),
            lag: u64::from(next.is_some()),
            horizon: Some(ReadHorizon {
                first_entry: Some(entry(0)),
                last_entry: Some(entry(1_000)),
                last_delivered: entry(0),
                oldest_pending: pending.map(entry),
                next_undelivered: next.map(entry),
            }),
        }
    }

    #[test]
    fn a_group_behind_or_holding_an_entry_too_long_is_a_stall_naming_it_and_the_oldest_entry() {
        let groups = [
            group("receipts", 0, Some(100), None),
            group("receipts", 1, Some(50), None),
            group("reservations", 0, None, Some(20)),
            group("data-platform", 0, Some(900), Some(800)),
        ];
        let stalls = group_stalls(&groups, look());
        let conditions: Vec<&str> = stalls.iter().map(|s| s.condition.as_str()).collect();
        assert_eq!(
            conditions,
            vec![
                "watchdog:groups:lag:receipts",
                "watchdog:groups:pending:reservations"
            ]
        );
        assert_eq!(
            stalls[0].age,
            TimeDelta::seconds(950),
            "its oldest partition"
        );
        assert!(
            stalls[0].message.contains("2 entr(ies)"),
            "{}",
            stalls[0].message
        );
        assert!(stalls[0].message.contains("bo:events:1"));
        assert_eq!(stalls[1].severity, Severity::Warning);
    }

    #[test]
    fn a_bus_that_cannot_say_how_far_groups_read_reports_no_stall() {
        let mut blind = group("receipts", 0, Some(1), Some(1));
        blind.horizon = None;
        assert!(group_stalls(&[blind], look()).is_empty());
    }
}
