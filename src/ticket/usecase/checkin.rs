//! The door: a scanner sends a code and its gate; the code is verified
//! against the server's keys, then one conditional update admits the
//! ticket the first time and nobody after. Offline scanners read a
//! schedule's tickets as a list instead.

use chrono::SubsecRound;

use crate::{
    kernel::{
        Clock, Page, PageRequest, ScheduleId, Transaction, UnitOfWork, events::RelayWake,
        retry_on_conflict,
    },
    outbox::ports::OutboxWriter,
    ticket::{
        domain::{ChangeCursor, CheckIn, Gate, MAX_DOOR_PAGE, Scan, Ticket, TicketError, refusal},
        ports::{TicketCodes, TicketPorts, TicketRepository, TicketTx},
        usecase::TicketService,
    },
};

impl<P: TicketPorts> TicketService<P> {
    /// Admits the ticket of `code` at `gate`: the first scan wins and
    /// writes `TicketCheckedIn`; every later one is refused with the
    /// reason (already checked in, with the first scan; void; superseded;
    /// not found). With `schedule`, a code of another show is refused
    /// before anything is written. A refusal is recorded for operators.
    pub async fn check_in(
        &self,
        code: &str,
        gate: &Gate,
        schedule: Option<ScheduleId>,
    ) -> Result<CheckIn, TicketError> {
        let answer = self.admit(code, gate, schedule).await;
        if let Err(refused) = &answer {
            self.record_refusal(code, gate, schedule, refused).await;
        }
        answer
    }

    async fn admit(
        &self,
        code: &str,
        gate: &Gate,
        schedule: Option<ScheduleId>,
    ) -> Result<CheckIn, TicketError> {
        let claims = self.codes.verify(code).await?.ok_or(TicketError::Forged)?;
        if let Some(scanning) = schedule
            && scanning.value() != claims.sch
        {
            return Err(TicketError::WrongSchedule {
                code: claims.sch,
                scanning: scanning.value(),
            });
        }
        let admitted = retry_on_conflict(|| async {
            // To the microsecond, as PostgreSQL keeps it: a later refusal
            // reports the first scan's time exactly as its 200 did.
            let scan = Scan {
                gate: gate.as_str().to_owned(),
                at: self.clock.now().trunc_subsecs(6),
            };
            let check_in = CheckIn::of(&claims, scan);
            let mut tx = self.uow.begin().await?;
            if !tx.check_in(&check_in).await? {
                drop(tx);
                let now = self.tickets.get(check_in.ticket).await?;
                return Err(refusal(&claims, now.as_ref()));
            }
            tx.append(vec![check_in.event()], check_in.scan.at).await?;
            tx.commit().await?;
            Ok(check_in)
        })
        .await?;
        self.wake.wake();
        Ok(admitted)
    }

    /// A page of the schedule's tickets, oldest first, for a scanner that
    /// checks codes offline (a schedule without tickets, or none at all,
    /// has an empty list); with `since`, only those changed since that
    /// cursor (and a little before: see [`ChangeCursor`]). The first page
    /// of a pass (no `asked.after`) also answers the cursor to poll the
    /// changes with once every page is read: taken before the read, so a
    /// change the pass missed is after it.
    pub async fn checkin_list(
        &self,
        schedule: ScheduleId,
        since: Option<ChangeCursor>,
        asked: PageRequest,
    ) -> Result<(Page<Ticket>, Option<ChangeCursor>), TicketError> {
        let next = asked
            .after
            .is_none()
            .then(|| ChangeCursor::at(self.clock.now()));
        let id = |t: &Ticket| t.id.value();
        let page = match since {
            None => {
                let read = |page| self.tickets.of_schedule(schedule, page);
                asked.read(MAX_DOOR_PAGE, read, id).await?
            }
            Some(cursor) => {
                let from = cursor.changed_from()?;
                let read = |page| self.tickets.changed_of_schedule(schedule, from, page);
                asked.read(MAX_DOOR_PAGE, read, id).await?
            }
        };
        Ok((page, next))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::{
        kernel::{Fault, TicketId, events::types},
        ticket::{
            domain::{AtTheDoor, TicketClaims},
            infra::codes::{TicketKey, TicketSigner},
            usecase::fake::{ALICE, Harness, harness, start},
        },
    };

    fn gate(name: &str) -> Gate {
        Gate::parse(name).unwrap()
    }

    async fn code_of(h: &Harness, id: TicketId) -> String {
        h.ticket(id).code.code
    }

    #[tokio::test]
    async fn the_first_scan_admits_and_a_second_is_told_the_first_gate_and_time() {
        let h = harness();
        let id = h.issue(ALICE).await;
        let code = code_of(&h, id).await;
        let ticket = h.ticket(id);

        let admitted = h
            .service
            .check_in(&code, &gate("north"), None)
            .await
            .unwrap();
        assert_eq!(admitted.ticket, id);
        assert_eq!(admitted.holder, ALICE);
        assert_eq!(admitted.seat, ticket.seat);
        assert_eq!(admitted.schedule, ticket.schedule);
        assert_eq!(admitted.scan.gate, "north");
        assert_eq!(admitted.scan.at, start());
        assert_eq!(h.wakes.count(), 1);
        let events = h.events();
        let checked_in: Vec<_> = events
            .iter()
            .filter(|e| e.event_type == types::TICKET_CHECKED_IN)
            .collect();
        assert_eq!(checked_in.len(), 1);
        assert_eq!(checked_in[0].payload["gate"], "north");
        assert_eq!(checked_in[0].payload["ticketId"], id.value());

        h.clock.advance(TimeDelta::seconds(5));
        let again = h.service.check_in(&code, &gate("south"), None).await;
        match again {
            Err(TicketError::AlreadyCheckedIn(first)) => {
                assert_eq!(first.gate, "north");
                assert_eq!(first.at, start());
            }
            other => panic!("expected already checked in, got {other:?}"),
        }
        assert_eq!(
            h.ticket(id).checked_in.unwrap().gate,
            "north",
            "the first scan stays"
        );
        let checked_in = h
            .events()
            .iter()
            .filter(|e| e.event_type == types::TICKET_CHECKED_IN)
            .count();
        assert_eq!(checked_in, 1, "one event, for the first scan");
    }

    #[tokio::test]
    async fn a_forged_altered_or_foreign_code_is_refused() {
        let h = harness();
        let id = h.issue(ALICE).await;
        let code = code_of(&h, id).await;
        let mut parts: Vec<&str> = code.split('.').collect();
        let other = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"tid":1,"sch":2,"seat":99,"sub":1,"ver":1}"#,
        );
        parts[1] = &other;
        let altered = parts.join(".");
        let foreign = TicketSigner::new(TicketKey::from_seed([3; 32]), vec![])
            .sign(&h.ticket(id).claims())
            .code;
        for code in [altered.as_str(), foreign.as_str(), "nonsense", ""] {
            assert!(
                matches!(
                    h.service.check_in(code, &gate("g"), None).await,
                    Err(TicketError::Forged)
                ),
                "{code:?}"
            );
        }
        assert!(h.ticket(id).checked_in.is_none());
    }

    #[tokio::test]
    async fn a_void_ticket_is_refused() {
        let h = harness();
        let id = h.issue(ALICE).await;
        let code = code_of(&h, id).await;
        h.void(id);
        assert!(matches!(
            h.service.check_in(&code, &gate("g"), None).await,
            Err(TicketError::VoidCode(t)) if t == id
        ));
        assert!(
            h.events()
                .iter()
                .all(|e| e.event_type != types::TICKET_CHECKED_IN)
        );
    }

    #[tokio::test]
    async fn an_older_versions_code_is_superseded() {
        let h = harness();
        let id = h.issue(ALICE).await;
        let code = code_of(&h, id).await;
        h.reissue(id);
        assert!(matches!(
            h.service.check_in(&code, &gate("g"), None).await,
            Err(TicketError::Superseded(t)) if t == id
        ));
        assert!(h.ticket(id).checked_in.is_none());
    }

    #[tokio::test]
    async fn a_code_of_another_schedule_is_refused_before_anything_is_written() {
        let h = harness();
        let id = h.issue(ALICE).await;
        let code = code_of(&h, id).await;
        let schedule = h.ticket(id).schedule;
        let elsewhere = ScheduleId(schedule.value() + 1);
        assert!(matches!(
            h.service.check_in(&code, &gate("g"), Some(elsewhere)).await,
            Err(TicketError::WrongSchedule { code, scanning })
                if code == schedule.value() && scanning == elsewhere.value()
        ));
        assert!(h.ticket(id).checked_in.is_none());
        h.service
            .check_in(&code, &gate("g"), Some(schedule))
            .await
            .expect("its own schedule admits it");
    }

    #[tokio::test]
    async fn a_signed_code_of_no_stored_ticket_is_not_found() {
        let h = harness();
        let claims = TicketClaims {
            tid: 404,
            sch: 2,
            seat: 1,
            sub: 1,
            ver: 1,
        };
        let code = h.codes.signer().sign(&claims).code;
        assert!(matches!(
            h.service.check_in(&code, &gate("g"), None).await,
            Err(TicketError::NotFound(TicketId(404)))
        ));
    }

    #[tokio::test]
    async fn a_store_outage_is_a_fault_and_admits_nobody() {
        let h = harness();
        let id = h.issue(ALICE).await;
        let code = code_of(&h, id).await;
        h.down();
        assert!(matches!(
            h.service.check_in(&code, &gate("g"), None).await,
            Err(TicketError::Fault(Fault::Unavailable(_)))
        ));
    }

    #[tokio::test]
    async fn the_checkin_list_pages_a_schedules_tickets_with_their_door_status() {
        let h = harness();
        let ids = [
            h.issue(ALICE).await,
            h.issue(ALICE).await,
            h.issue(ALICE).await,
        ];
        let schedule = h.ticket(ids[0]).schedule;
        h.void(ids[1]);
        let code = code_of(&h, ids[2]).await;
        h.service.check_in(&code, &gate("g"), None).await.unwrap();

        let (first, _) = h
            .service
            .checkin_list(schedule, None, PageRequest::asked(None, 2))
            .await
            .unwrap();
        let seen: Vec<_> = first
            .items
            .iter()
            .map(|t| (t.id, t.at_the_door()))
            .collect();
        assert_eq!(
            seen,
            vec![(ids[0], AtTheDoor::Valid), (ids[1], AtTheDoor::Void)],
            "oldest first"
        );
        let (rest, no_cursor) = h
            .service
            .checkin_list(schedule, None, PageRequest::asked(first.next_cursor, 2))
            .await
            .unwrap();
        assert_eq!(rest.items[0].at_the_door(), AtTheDoor::CheckedIn);
        assert_eq!(rest.next_cursor, None);
        assert_eq!(
            no_cursor, None,
            "the change cursor comes with a pass's first page"
        );
        let (elsewhere, _) = h
            .service
            .checkin_list(
                ScheduleId(schedule.value() + 1),
                None,
                PageRequest::asked(None, 10),
            )
            .await
            .unwrap();
        assert!(elsewhere.items.is_empty());
    }

    #[test]
    fn a_gate_has_1_to_64_characters() {
        assert!(Gate::parse("").is_err());
        assert!(Gate::parse(&"é".repeat(64)).is_ok());
        assert!(Gate::parse(&"g".repeat(65)).is_err());
    }
}
