//! Scans made offline, uploaded later: each code is verified once, the
//! earliest scan of each ticket becomes its first whatever the order of
//! the uploads (one conditional update per code, in a few transactions),
//! and every scan is answered on its own.

use std::collections::HashMap;

use chrono::SubsecRound;

use crate::{
    kernel::{
        Clock, ScheduleId, TicketId, Transaction, UnitOfWork, events::RelayWake, retry_on_conflict,
    },
    outbox::ports::OutboxWriter,
    ticket::{
        domain::{
            CheckIn, MAX_BATCH, OfflineScan, Scan, ScanResult, TicketClaims, TicketError,
            earliest_per_code, scan_outcome, screen_scan,
        },
        ports::{TicketCodes, TicketPorts, TicketRepository, TicketTx},
        usecase::TicketService,
    },
};

/// How many check-ins one transaction writes: row locks are held for a
/// few milliseconds, and an upload of 500 commits five times.
const PER_TRANSACTION: usize = 100;

impl<P: TicketPorts> TicketService<P> {
    /// Records an upload of 1 to [`MAX_BATCH`] offline scans and answers
    /// each, in upload order. A scan is refused on its own (a code not
    /// signed here, a time in the future, a code of another show than
    /// `schedule`); of the others, the earliest scan of a ticket is its
    /// first, even over a later one recorded before (online, or in an
    /// earlier upload), and `TicketCheckedIn` (offline) is written when it
    /// becomes so. Uploading the same scans again answers the same.
    pub async fn check_in_batch(
        &self,
        scans: &[OfflineScan],
        schedule: Option<ScheduleId>,
    ) -> Result<Vec<ScanResult>, TicketError> {
        if scans.is_empty() || scans.len() > MAX_BATCH {
            return Err(TicketError::Invalid(format!(
                "scans: 1 to {MAX_BATCH}, got {}",
                scans.len()
            )));
        }
        let now = self.clock.now().trunc_subsecs(6);
        let mut verified: HashMap<&str, Option<TicketClaims>> = HashMap::new();
        for scan in scans {
            if !verified.contains_key(scan.code.as_str()) {
                let claims = self.codes.verify(&scan.code).await?;
                verified.insert(&scan.code, claims);
            }
        }
        // Each scan kept: its claims and the scan as it would be stored.
        let screened: Vec<Result<(&TicketClaims, Scan), _>> = scans
            .iter()
            .map(|scan| {
                let claims = verified[scan.code.as_str()].as_ref();
                let at = scan.at.trunc_subsecs(6);
                let claims = screen_scan(claims, at, now, schedule)?;
                let stored = Scan {
                    gate: scan.gate.as_str().to_owned(),
                    at,
                };
                Ok((claims, stored))
            })
            .collect();
        let kept = screened.iter().enumerate().filter_map(|(index, kept)| {
            let (_, scan) = kept.as_ref().ok()?;
            Some((index, scans[index].code.as_str(), scan.at))
        });
        let earliest = earliest_per_code(kept);
        let mut firsts: Vec<CheckIn> = earliest
            .iter()
            .filter_map(|&index| {
                let (claims, scan) = screened[index].as_ref().ok()?;
                Some(CheckIn::of(claims, scan.clone()))
            })
            .collect();
        // In ticket order, so two uploads that lock the same tickets lock
        // them in the same order and never deadlock.
        firsts.sort_by_key(|first| first.ticket.value());
        let mut written = false;
        for chunk in firsts.chunks(PER_TRANSACTION) {
            written |= self.record_firsts(chunk, now).await?;
        }
        if written {
            self.wake.wake();
        }

        let mut ids: Vec<TicketId> = firsts.iter().map(|first| first.ticket).collect();
        ids.dedup();
        let tickets: HashMap<TicketId, _> = (self.tickets.many(&ids).await?)
            .into_iter()
            .map(|ticket| (ticket.id, ticket))
            .collect();
        screened
            .into_iter()
            .enumerate()
            .map(|(index, screened)| {
                let (claims, scan) = match screened {
                    Ok(kept) => kept,
                    Err(outcome) => {
                        let ticket = verified[scans[index].code.as_str()]
                            .as_ref()
                            .map(|claims| TicketId(claims.tid));
                        return Ok(ScanResult { ticket, outcome });
                    }
                };
                let ticket = TicketId(claims.tid);
                let first = earliest.binary_search(&index).is_ok();
                let outcome = scan_outcome(claims, &scan, first, tickets.get(&ticket))?;
                Ok(ScanResult {
                    ticket: Some(ticket),
                    outcome,
                })
            })
            .collect()
    }

    /// Writes each scan as its ticket's first where it is earlier than
    /// the one recorded, and its event, in one transaction; true if any
    /// was written.
    async fn record_firsts(
        &self,
        firsts: &[CheckIn],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, TicketError> {
        retry_on_conflict(|| async {
            let mut tx = self.uow.begin().await?;
            let mut events = Vec::new();
            for first in firsts {
                if tx.check_in_earlier(first, now).await? {
                    events.push(first.event_of(true));
                }
            }
            if events.is_empty() {
                return Ok(false);
            }
            tx.append(events, now).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeDelta, Utc};

    use super::*;
    use crate::{
        kernel::{PageRequest, events::types},
        ticket::{
            domain::{ChangeCursor, Gate, ScanOutcome, TicketClaims},
            usecase::fake::{ALICE, BOB, Harness, harness, start},
        },
    };

    fn minutes(n: i64) -> DateTime<Utc> {
        start() + TimeDelta::minutes(n)
    }

    fn scan(code: &str, gate: &str, at: DateTime<Utc>) -> OfflineScan {
        OfflineScan {
            code: code.to_owned(),
            gate: Gate::parse(gate).unwrap(),
            at,
        }
    }

    fn first(gate: &str, at: DateTime<Utc>) -> Scan {
        Scan {
            gate: gate.to_owned(),
            at,
        }
    }

    async fn upload(h: &Harness, scans: &[OfflineScan]) -> Vec<ScanOutcome> {
        let results = h.service.check_in_batch(scans, None).await.unwrap();
        results.into_iter().map(|r| r.outcome).collect()
    }

    /// The `TicketCheckedIn` events written: (gate, offline).
    fn check_ins(h: &Harness) -> Vec<(String, bool)> {
        (h.events().iter())
            .filter(|e| e.event_type == types::TICKET_CHECKED_IN)
            .map(|e| {
                let gate = e.payload["gate"].as_str().unwrap().to_owned();
                (gate, e.payload["offline"].as_bool().unwrap())
            })
            .collect()
    }

    #[tokio::test]
    async fn the_earliest_scan_wins_whatever_the_upload_order() {
        let h = harness();
        let id = h.issue(ALICE).await;
        let code = h.ticket(id).code.code;

        let later = [scan(&code, "south", minutes(-5))];
        let answered = upload(&h, &later).await;
        assert_eq!(
            answered,
            [ScanOutcome::Admitted(first("south", minutes(-5)))]
        );
        let earlier = [scan(&code, "north", minutes(-8))];
        let answered = upload(&h, &earlier).await;
        assert_eq!(
            answered,
            [ScanOutcome::Admitted(first("north", minutes(-8)))]
        );
        assert_eq!(h.ticket(id).checked_in, Some(first("north", minutes(-8))));

        let again = upload(&h, &later).await;
        assert_eq!(
            again,
            [ScanOutcome::AlreadyCheckedIn(first("north", minutes(-8)))],
            "the later scan, uploaded again, lost"
        );
        assert_eq!(
            upload(&h, &earlier).await,
            [ScanOutcome::Admitted(first("north", minutes(-8)))],
            "uploading the same scan again answers the same"
        );
        assert_eq!(
            check_ins(&h),
            [("south".into(), true), ("north".into(), true)],
            "one event each time a scan became the first"
        );
        assert_eq!(h.wakes.count(), 2, "the relay is woken for writes only");
    }

    #[tokio::test]
    async fn an_online_scan_loses_to_an_earlier_offline_one_uploaded_after_it() {
        let h = harness();
        let id = h.issue(ALICE).await;
        let code = h.ticket(id).code.code;
        let gate = Gate::parse("online").unwrap();
        let online = h.service.check_in(&code, &gate, None).await.unwrap();
        assert_eq!(online.scan, first("online", start()));

        let offline = [scan(&code, "offline", minutes(-3))];
        let answered = upload(&h, &offline).await;
        assert_eq!(
            answered,
            [ScanOutcome::Admitted(first("offline", minutes(-3)))]
        );

        h.clock.advance(TimeDelta::minutes(1));
        match h.service.check_in(&code, &gate, None).await {
            Err(TicketError::AlreadyCheckedIn(winner)) => {
                assert_eq!(*winner, first("offline", minutes(-3)));
            }
            other => panic!("expected already checked in, got {other:?}"),
        }
        let late = [scan(&code, "online", start())];
        assert_eq!(
            upload(&h, &late).await,
            [ScanOutcome::AlreadyCheckedIn(first("offline", minutes(-3)))]
        );
        assert_eq!(
            check_ins(&h),
            [("online".into(), false), ("offline".into(), true)]
        );
    }

    #[tokio::test]
    async fn of_two_scans_of_one_code_in_an_upload_the_earlier_wins() {
        let h = harness();
        let id = h.issue(ALICE).await;
        let code = h.ticket(id).code.code;
        let scans = [
            scan(&code, "late", minutes(-1)),
            scan(&code, "early", minutes(-2)),
            scan(&code, "early", minutes(-2)),
        ];
        let winner = first("early", minutes(-2));
        assert_eq!(
            upload(&h, &scans).await,
            [
                ScanOutcome::AlreadyCheckedIn(winner.clone()),
                ScanOutcome::Admitted(winner.clone()),
                ScanOutcome::AlreadyCheckedIn(winner.clone()),
            ],
            "the earliest, and of two at once the first uploaded"
        );
        assert_eq!(check_ins(&h).len(), 1);
    }

    #[tokio::test]
    async fn a_scan_time_in_the_future_is_refused_for_that_scan_only() {
        let h = harness();
        let ahead = h.issue(ALICE).await;
        let skewed = h.issue(ALICE).await;
        let scans = [
            scan(&h.ticket(ahead).code.code, "g", minutes(6)),
            scan(&h.ticket(skewed).code.code, "g", minutes(4)),
        ];
        let results = h.service.check_in_batch(&scans, None).await.unwrap();
        assert_eq!(results[0].outcome, ScanOutcome::InvalidScanTime);
        assert_eq!(results[0].ticket, Some(ahead));
        assert_eq!(
            results[1].outcome,
            ScanOutcome::Admitted(first("g", minutes(4))),
            "a scanner's clock may run a little ahead"
        );
        assert!(h.ticket(ahead).checked_in.is_none());
    }

    #[tokio::test]
    async fn each_scan_of_an_upload_is_answered_on_its_own_in_order() {
        let h = harness();
        let valid = h.issue(ALICE).await;
        let void = h.issue(ALICE).await;
        let transferred = h.issue(BOB).await;
        let (valid_code, void_code) = (h.ticket(valid).code.code, h.ticket(void).code.code);
        let old_code = h.ticket(transferred).code.code;
        h.void(void);
        h.reissue(transferred);
        let schedule = h.ticket(valid).schedule;
        let ghost = TicketClaims {
            tid: 404,
            sch: schedule.value(),
            seat: 1,
            sub: 1,
            ver: 1,
        };
        let ghost = h.codes.signer().sign(&ghost).code;
        let other_show = TicketClaims {
            sch: schedule.value() + 1,
            ..h.ticket(valid).claims()
        };
        let other_show = h.codes.signer().sign(&other_show).code;
        let scans = [
            scan("forged", "g", minutes(-1)),
            scan(&void_code, "g", minutes(-1)),
            scan(&valid_code, "g", minutes(-1)),
            scan(&old_code, "g", minutes(-1)),
            scan(&ghost, "g", minutes(-1)),
            scan(&other_show, "g", minutes(-1)),
        ];
        let results = (h.service)
            .check_in_batch(&scans, Some(schedule))
            .await
            .unwrap();
        let answered: Vec<_> = results.iter().map(|r| (r.ticket, &r.outcome)).collect();
        assert_eq!(
            answered,
            [
                (None, &ScanOutcome::InvalidCode),
                (Some(void), &ScanOutcome::Void),
                (Some(valid), &ScanOutcome::Admitted(first("g", minutes(-1)))),
                (Some(transferred), &ScanOutcome::Superseded),
                (Some(TicketId(404)), &ScanOutcome::NotFound),
                (Some(valid), &ScanOutcome::WrongSchedule),
            ]
        );
        assert!(h.ticket(void).checked_in.is_none());
        assert!(h.ticket(transferred).checked_in.is_none());
        assert_eq!(check_ins(&h), [("g".into(), true)]);
    }

    #[tokio::test]
    async fn an_empty_or_oversized_upload_is_refused_whole() {
        let h = harness();
        let id = h.issue(ALICE).await;
        let code = h.ticket(id).code.code;
        let too_many = vec![scan(&code, "g", minutes(-1)); MAX_BATCH + 1];
        for scans in [&[][..], &too_many[..]] {
            assert!(matches!(
                h.service.check_in_batch(scans, None).await,
                Err(TicketError::Invalid(_))
            ));
        }
        assert!(h.ticket(id).checked_in.is_none());
        let most = vec![scan(&code, "g", minutes(-1)); MAX_BATCH];
        let results = h.service.check_in_batch(&most, None).await.unwrap();
        assert_eq!(results.len(), MAX_BATCH);
    }

    #[tokio::test]
    async fn an_upload_over_several_transactions_admits_every_ticket() {
        let h = harness();
        let mut codes = Vec::new();
        for _ in 0..(PER_TRANSACTION * 2 + 5) {
            let id = h.issue(ALICE).await;
            codes.push(h.ticket(id).code.code);
        }
        let scans: Vec<_> = codes.iter().map(|c| scan(c, "g", minutes(-1))).collect();
        let answered = upload(&h, &scans).await;
        let admitted = first("g", minutes(-1));
        assert!(
            answered
                .iter()
                .all(|o| *o == ScanOutcome::Admitted(admitted.clone()))
        );
        assert_eq!(check_ins(&h).len(), scans.len());
    }

    #[tokio::test]
    async fn a_store_outage_fails_the_upload_and_admits_nobody() {
        let h = harness();
        let id = h.issue(ALICE).await;
        let code = h.ticket(id).code.code;
        h.down();
        assert!(matches!(
            h.service
                .check_in_batch(&[scan(&code, "g", minutes(-1))], None)
                .await,
            Err(TicketError::Fault(_))
        ));
        assert!(check_ins(&h).is_empty());
    }

    /// The ids a poll of the check-in list answers, and its cursor.
    async fn poll(
        h: &Harness,
        schedule: crate::kernel::ScheduleId,
        since: Option<ChangeCursor>,
    ) -> (Vec<TicketId>, ChangeCursor) {
        let (page, next) = (h.service)
            .checkin_list(schedule, since, PageRequest::asked(None, 100))
            .await
            .unwrap();
        (page.items.iter().map(|t| t.id).collect(), next.unwrap())
    }

    #[tokio::test]
    async fn the_change_cursor_lists_what_changed_since_and_never_a_late_commit_less() {
        let h = harness();
        let ids = [
            h.issue(ALICE).await,
            h.issue(ALICE).await,
            h.issue(ALICE).await,
        ];
        let schedule = h.ticket(ids[0]).schedule;
        let (all, cursor) = poll(&h, schedule, None).await;
        assert_eq!(all, ids);

        h.clock.advance(TimeDelta::minutes(10));
        let (relisted, cursor) = poll(&h, schedule, Some(cursor)).await;
        assert_eq!(relisted, ids, "issued within the overlap before the cursor");
        h.clock.advance(TimeDelta::minutes(10));
        let (unchanged, cursor) = poll(&h, schedule, Some(cursor)).await;
        assert!(unchanged.is_empty(), "{unchanged:?}");

        h.clock.advance(TimeDelta::minutes(10));
        let code = h.ticket(ids[1]).code.code;
        upload(&h, &[scan(&code, "g", minutes(-30))]).await;
        h.void(ids[2]);
        let issued = h.issue(ALICE).await;
        let (changed, next) = poll(&h, schedule, Some(cursor)).await;
        assert_eq!(changed, [ids[1], ids[2], issued]);

        // A change stamped just before that poll that committed after it.
        h.clock.advance(TimeDelta::seconds(-1));
        h.reissue(ids[0]);
        h.clock.advance(TimeDelta::seconds(1));
        let (late, _) = poll(&h, schedule, Some(next)).await;
        assert!(late.contains(&ids[0]), "{late:?}");
    }

    #[test]
    fn a_cursor_reaches_back_by_the_overlap_and_a_negative_one_is_refused() {
        let cursor = ChangeCursor::at(start());
        assert_eq!(
            cursor.changed_from().unwrap(),
            start() - crate::ticket::domain::CHANGE_OVERLAP
        );
        assert!(ChangeCursor(-1).changed_from().is_err());
    }
}
