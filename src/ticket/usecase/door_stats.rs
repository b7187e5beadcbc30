//! What operators see of the door: every refused scan is recorded after
//! its answer was decided, and a schedule's view counts tickets sold and
//! admitted, per gate and minute, with the latest refusals.

use std::time::Duration;

use chrono::SubsecRound;

use crate::{
    kernel::{Clock, ScheduleId},
    ticket::{
        domain::{DoorView, Gate, RECENT_REFUSALS, Refusal, TicketError, minute_windows},
        ports::{DoorLog, TicketCodes, TicketPorts},
        usecase::TicketService,
    },
};

/// How long a scan's answer waits for its refusal to be recorded at most:
/// the record is for operators, the answer is for the queue at the gate.
const RECORD_WITHIN: Duration = Duration::from_millis(250);

impl<P: TicketPorts> TicketService<P> {
    /// Records the refusal of a scan that was answered `refused`. A
    /// failure is logged, never answered: the scan's answer stands.
    pub(super) async fn record_refusal(
        &self,
        code: &str,
        gate: &Gate,
        scanning: Option<ScheduleId>,
        refused: &TicketError,
    ) {
        let record = async {
            // The ticket and show its code names, if it verifies.
            let claims = self.codes.verify(code).await.ok().flatten();
            // To the microsecond, as PostgreSQL keeps it.
            let at = self.clock.now().trunc_subsecs(6);
            match Refusal::of(refused, claims.as_ref(), gate, scanning, at) {
                Some(refusal) => self.door.record(&refusal).await,
                None => Ok(()),
            }
        };
        match tokio::time::timeout(RECORD_WITHIN, record).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "a refused scan was not recorded"),
            Err(_) => tracing::warn!("a refused scan was not recorded in time"),
        }
    }

    /// The schedule's door now (404 for a schedule that does not exist).
    pub async fn door(&self, schedule: ScheduleId) -> Result<DoorView, TicketError> {
        let windows = minute_windows(self.clock.now());
        let counts = (self.door.counts(schedule, &windows).await?)
            .ok_or(TicketError::ScheduleNotFound(schedule))?;
        let recent = self.door.recent_refusals(schedule, RECENT_REFUSALS).await?;
        Ok(DoorView::new(schedule, counts, recent))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::{
        kernel::TicketId,
        ticket::{
            domain::{DOOR_MINUTES, GateCount, RefusalReason, TicketClaims},
            usecase::fake::{ALICE, BOB, Harness, harness, start},
        },
    };

    fn gate(name: &str) -> Gate {
        Gate::parse(name).unwrap()
    }

    async fn scan(h: &Harness, id: TicketId, at: &str) -> Result<(), TicketError> {
        let code = h.ticket(id).code.code;
        h.service.check_in(&code, &gate(at), None).await.map(drop)
    }

    /// The counts of one gate: the total, and the minutes counted from the
    /// newest back, each `(minutes ago, check-ins)`.
    fn at_gate(name: &str, checked_in: u64, minutes: &[(usize, u64)]) -> GateCount {
        let mut per_minute = vec![0; DOOR_MINUTES];
        for &(ago, n) in minutes {
            per_minute[DOOR_MINUTES - 1 - ago] = n;
        }
        GateCount {
            gate: name.into(),
            checked_in,
            per_minute,
        }
    }

    #[tokio::test]
    async fn the_door_counts_sold_admitted_per_gate_and_minute() {
        let h = harness();
        let mut ids = Vec::new();
        for _ in 0..6 {
            ids.push(h.issue(ALICE).await);
        }
        let schedule = h.ticket(ids[0]).schedule;
        h.void(ids[5]);
        scan(&h, ids[0], "north").await.unwrap();
        h.clock.advance(TimeDelta::seconds(30));
        scan(&h, ids[1], "north").await.unwrap();
        h.clock.advance(TimeDelta::seconds(60));
        scan(&h, ids[2], "south").await.unwrap();
        h.clock.advance(TimeDelta::minutes(2));
        scan(&h, ids[3], "north").await.unwrap();

        let view = h.service.door(schedule).await.unwrap();
        assert_eq!(view.schedule, schedule);
        assert_eq!(view.sold, 5, "the void ticket admits nobody");
        assert_eq!(view.checked_in, 4);
        assert_eq!(
            view.gates,
            vec![
                at_gate("north", 3, &[(0, 1), (3, 2)]),
                at_gate("south", 1, &[(2, 1)]),
            ],
            "by gate name; 3½ minutes ago counts 3 whole minutes back"
        );
        assert_eq!(view.gates[0].last_minute(), 1);
        let mut all = vec![0; DOOR_MINUTES];
        all[DOOR_MINUTES - 1] = 1;
        all[DOOR_MINUTES - 3] = 1;
        all[DOOR_MINUTES - 4] = 2;
        assert_eq!(view.per_minute, all);

        h.clock.advance(TimeDelta::hours(1));
        let later = h.service.door(schedule).await.unwrap();
        assert_eq!(later.checked_in, 4);
        assert!(later.per_minute.iter().all(|&n| n == 0));
        assert_eq!(later.gates[0].last_minute(), 0);
    }

    #[tokio::test]
    async fn an_unknown_schedule_has_no_door_and_a_known_one_without_tickets_is_empty() {
        let h = harness();
        assert!(matches!(
            h.service.door(ScheduleId(404)).await,
            Err(TicketError::ScheduleNotFound(ScheduleId(404)))
        ));
        h.add_schedule(ScheduleId(9));
        let view = h.service.door(ScheduleId(9)).await.unwrap();
        assert_eq!((view.sold, view.checked_in), (0, 0));
        assert!(view.gates.is_empty() && view.recent_refusals.is_empty());
        assert_eq!(view.per_minute, vec![0; DOOR_MINUTES]);
    }

    #[tokio::test]
    async fn every_refused_scan_is_recorded_with_its_reason() {
        let h = harness();
        let admitted = h.issue(ALICE).await;
        let void = h.issue(ALICE).await;
        let superseded = h.issue(BOB).await;
        let schedule = h.ticket(admitted).schedule;
        let elsewhere = ScheduleId(schedule.value() + 1);
        h.add_schedule(elsewhere);
        h.void(void);
        let old_code = h.ticket(superseded).code.code;
        h.reissue(superseded);
        let unknown = h.codes.signer().sign(&TicketClaims {
            tid: 404,
            ..h.ticket(admitted).claims()
        });

        scan(&h, admitted, "north").await.unwrap();
        h.clock.advance(TimeDelta::seconds(1));
        scan(&h, admitted, "south").await.unwrap_err();
        scan(&h, void, "north").await.unwrap_err();
        let refuse = async |code: &str, gate_name: &str, at: Option<ScheduleId>| {
            h.service
                .check_in(code, &gate(gate_name), at)
                .await
                .unwrap_err()
        };
        refuse(&old_code, "north", None).await;
        refuse(&unknown.code, "east", None).await;
        refuse("forged", "east", Some(schedule)).await;
        refuse("forged", "east", None).await;
        let code = h.ticket(admitted).code.code;
        refuse(&code, "west", Some(elsewhere)).await;

        let at = start() + TimeDelta::seconds(1);
        let refusal = |gate: &str, reason, ticket: Option<TicketId>| Refusal {
            schedule: Some(schedule),
            gate: gate.into(),
            reason,
            ticket,
            at,
        };
        let view = h.service.door(schedule).await.unwrap();
        assert_eq!(
            view.recent_refusals,
            vec![
                refusal("east", RefusalReason::InvalidCode, None),
                refusal("east", RefusalReason::NotFound, Some(TicketId(404))),
                refusal("north", RefusalReason::TicketSuperseded, Some(superseded)),
                refusal("north", RefusalReason::TicketVoid, Some(void)),
                refusal("south", RefusalReason::AlreadyCheckedIn, Some(admitted)),
            ],
            "newest first; a forged code scanned without a schedule is nobody's"
        );
        let other = h.service.door(elsewhere).await.unwrap();
        assert_eq!(
            other.recent_refusals,
            vec![Refusal {
                schedule: Some(elsewhere),
                ..refusal("west", RefusalReason::WrongSchedule, Some(admitted))
            }],
            "a code of another show is refused at the door that scanned it"
        );
        assert_eq!(h.refusals().len(), 7);
        assert_eq!(h.refusals()[5].schedule, None);
    }

    #[tokio::test]
    async fn the_door_view_lists_the_last_twenty_refusals() {
        let h = harness();
        let id = h.issue(ALICE).await;
        let schedule = h.ticket(id).schedule;
        for n in 0..25 {
            let name = format!("g{n}");
            h.service
                .check_in("forged", &gate(&name), Some(schedule))
                .await
                .unwrap_err();
        }
        let view = h.service.door(schedule).await.unwrap();
        let gates: Vec<_> = view
            .recent_refusals
            .iter()
            .map(|r| r.gate.as_str())
            .collect();
        let newest: Vec<_> = (5..25).rev().map(|n| format!("g{n}")).collect();
        assert_eq!(gates, newest);
    }

    #[tokio::test]
    async fn a_refusal_that_cannot_be_recorded_still_answers_the_scan() {
        let h = harness();
        let id = h.issue(ALICE).await;
        scan(&h, id, "north").await.unwrap();
        h.refusals_fail();
        assert!(matches!(
            scan(&h, id, "south").await,
            Err(TicketError::AlreadyCheckedIn(first)) if first.gate == "north"
        ));
        assert!(h.refusals().is_empty());
    }
}
