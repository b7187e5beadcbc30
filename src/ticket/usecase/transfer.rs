//! A holder hands a ticket on to another user: in one transaction the
//! ticket gets the next version, the new holder and a code signed over
//! both, with `TicketTransferred`. The old code is superseded at the door
//! (check-in compares versions) and the check-in list shows the new
//! version.

use crate::{
    kernel::{
        Clock, TicketId, Transaction, UnitOfWork, UserId, events::RelayWake, retry_on_conflict,
    },
    outbox::ports::OutboxWriter,
    ticket::{
        domain::{Ticket, TicketError, may_transfer, transferable},
        ports::{TicketCodes, TicketPorts, TicketRepository, TicketTx},
        usecase::TicketService,
    },
};

impl<P: TicketPorts> TicketService<P> {
    /// `holder` hands their ticket `id` on to `to`: answered with the
    /// ticket as it is now (new holder, version and code). Someone else's
    /// ticket is not found; a void or admitted one, or one that changed
    /// under the request (a concurrent transfer won), is refused.
    pub async fn transfer(
        &self,
        id: TicketId,
        holder: UserId,
        to: UserId,
    ) -> Result<Ticket, TicketError> {
        let seen = self.get(id, holder).await?;
        let moved = self.transfer_seen(&seen, to).await?;
        self.wake.wake();
        metrics::counter!("tickets_transferred_total").increment(1);
        Ok(moved)
    }

    /// Hands on the ticket as `seen` read it: a compare-and-set on that
    /// version, so of two transfers from one version one wins and the
    /// other is refused with what changed.
    pub(super) async fn transfer_seen(
        &self,
        seen: &Ticket,
        to: UserId,
    ) -> Result<Ticket, TicketError> {
        may_transfer(seen, to)?;
        let mut next = seen.handed_to(to);
        next.code = self.codes.sign(&next.claims()).await?;
        retry_on_conflict(|| async {
            let now = self.clock.now();
            let mut tx = self.uow.begin().await?;
            if !tx.transfer(seen, &next, now).await? {
                drop(tx);
                return Err(self.why_not_transferred(seen).await);
            }
            tx.append(vec![next.transferred_from(seen.holder)], now)
                .await?;
            tx.commit().await?;
            Ok(next.clone())
        })
        .await
    }

    /// Why the compare-and-set of a transfer of `seen` changed nothing,
    /// from the ticket as it is now: cancelled or admitted meanwhile, or
    /// handed on by a concurrent request.
    async fn why_not_transferred(&self, seen: &Ticket) -> TicketError {
        match self.tickets.get(seen.id).await {
            Ok(Some(now)) if now.version == seen.version => transferable(&now)
                .err()
                .unwrap_or(TicketError::Changed(seen.id)),
            Ok(_) => TicketError::Changed(seen.id),
            Err(err) => err,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        kernel::{Fault, PageRequest, events::types},
        ticket::{
            domain::{Gate, TicketStatus},
            usecase::fake::{ALICE, BOB, harness},
        },
    };

    const CAROL: UserId = UserId(3);

    fn gate() -> Gate {
        Gate::parse("north").unwrap()
    }

    #[tokio::test]
    async fn a_transfer_bumps_the_version_re_signs_and_supersedes_the_old_code() {
        let h = harness();
        let id = h.issue(ALICE).await;
        let before = h.ticket(id);

        let moved = h.service.transfer(id, ALICE, BOB).await.unwrap();
        assert_eq!((moved.holder, moved.version), (BOB, 2));
        assert_ne!(moved.code.code, before.code.code, "a new code");
        let claims = h.codes.signer().read(&moved.code.code).unwrap();
        assert_eq!((claims.sub, claims.ver), (BOB.value(), 2));
        assert_eq!(claims, moved.claims());
        assert_eq!(h.ticket(id), moved, "stored as answered");
        assert_eq!(h.wakes.count(), 1);

        let events = h.events();
        let transferred: Vec<_> = events
            .iter()
            .filter(|e| e.event_type == types::TICKET_TRANSFERRED)
            .collect();
        assert_eq!(transferred.len(), 1);
        assert_eq!(transferred[0].payload["fromUserId"], ALICE.value());
        assert_eq!(transferred[0].payload["toUserId"], BOB.value());
        assert_eq!(transferred[0].payload["version"], 2);

        // The new holder lists it; the old one does not.
        let mine = async |user| {
            let page = h.service.mine(user, PageRequest::asked(None, 10)).await;
            page.unwrap()
                .items
                .into_iter()
                .map(|t| t.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(mine(BOB).await, vec![id]);
        assert!(mine(ALICE).await.is_empty());
        assert!(matches!(
            h.service.get(id, ALICE).await,
            Err(TicketError::NotFound(_))
        ));

        // The door: the old code is superseded, the new one admits.
        assert!(matches!(
            h.service.check_in(&before.code.code, &gate(), None).await,
            Err(TicketError::Superseded(t)) if t == id
        ));
        let admitted = h
            .service
            .check_in(&moved.code.code, &gate(), None)
            .await
            .unwrap();
        assert_eq!((admitted.holder, admitted.version), (BOB, 2));
    }

    #[tokio::test]
    async fn only_the_holder_transfers_a_valid_unscanned_ticket_to_someone_else() {
        let h = harness();
        let id = h.issue(ALICE).await;
        assert!(matches!(
            h.service.transfer(id, BOB, CAROL).await,
            Err(TicketError::NotFound(_))
        ));
        assert!(matches!(
            h.service.transfer(TicketId(404), ALICE, BOB).await,
            Err(TicketError::NotFound(_))
        ));
        for to in [ALICE, UserId(0)] {
            assert!(matches!(
                h.service.transfer(id, ALICE, to).await,
                Err(TicketError::Invalid(_))
            ));
        }
        let code = h.ticket(id).code.code;
        h.service.check_in(&code, &gate(), None).await.unwrap();
        assert!(matches!(
            h.service.transfer(id, ALICE, BOB).await,
            Err(TicketError::AlreadyCheckedIn(_))
        ));
        let void = h.issue(ALICE).await;
        h.void(void);
        assert!(matches!(
            h.service.transfer(void, ALICE, BOB).await,
            Err(TicketError::VoidCode(_))
        ));
        assert_eq!(h.ticket(id).version, 1, "nothing changed");
        assert_eq!(h.ticket(void).status, TicketStatus::Void);
        assert!(
            h.events()
                .iter()
                .all(|e| e.event_type != types::TICKET_TRANSFERRED)
        );
    }

    #[tokio::test]
    async fn of_two_transfers_from_one_version_exactly_one_wins() {
        let h = harness();
        let id = h.issue(ALICE).await;
        // Both requests read version 1 before either wrote.
        let seen = h.ticket(id);
        let won = h.service.transfer_seen(&seen, BOB).await.unwrap();
        assert_eq!(won.version, 2);
        assert!(matches!(
            h.service.transfer_seen(&seen, CAROL).await,
            Err(TicketError::Changed(t)) if t == id
        ));
        assert_eq!(h.ticket(id).holder, BOB, "the winner's transfer stands");
        let transferred = h
            .events()
            .iter()
            .filter(|e| e.event_type == types::TICKET_TRANSFERRED)
            .count();
        assert_eq!(transferred, 1);

        // A version scanned between the read and the write tells so.
        let other = h.issue(ALICE).await;
        let seen = h.ticket(other);
        h.service
            .check_in(&seen.code.code, &gate(), None)
            .await
            .unwrap();
        assert!(matches!(
            h.service.transfer_seen(&seen, BOB).await,
            Err(TicketError::AlreadyCheckedIn(_))
        ));
    }

    #[tokio::test]
    async fn a_store_outage_is_a_fault_and_moves_nothing() {
        let h = harness();
        let id = h.issue(ALICE).await;
        let seen = h.ticket(id);
        h.down();
        assert!(matches!(
            h.service.transfer_seen(&seen, BOB).await,
            Err(TicketError::Fault(Fault::Unavailable(_)))
        ));
    }
}
