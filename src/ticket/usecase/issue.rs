//! The ticket's saga step: a seat sold (`ReservationConfirmed`) issues its
//! ticket with a signed code; a ticket cancelled (`TicketCancelled`) makes
//! it void. Both in the consumer's transaction, both idempotent, in
//! whichever order they arrive.

use chrono::{DateTime, Utc};

use crate::{
    kernel::{
        Clock, Fault, ReservationId,
        events::{ReservationChanged, types},
    },
    outbox::ports::{Delivered, OutboxWriter, Subscriber, Subscription},
    ticket::{
        domain::{
            NewTicket, OnCancelled, OnSold, TICKETS_CONSUMER, Ticket, TicketError, TicketStatus,
            on_cancelled, on_sold,
        },
        ports::{TicketCodes, TicketTx},
    },
};

/// What the step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuing {
    Issued,
    Voided,
    /// A redelivery, or a sale whose cancellation got here first.
    Unchanged,
}

/// Stores the ticket `new` with its signed code; `None` when the
/// reservation had one already.
async fn store<T: TicketTx>(
    tx: &mut T,
    codes: &impl TicketCodes,
    new: NewTicket,
    now: DateTime<Utc>,
) -> Result<Option<Ticket>, TicketError> {
    let Some(id) = tx.insert_ticket(&new, now).await? else {
        return Ok(None);
    };
    let code = codes.sign(&new.claims(id)).await?;
    tx.set_code(id, &code).await?;
    Ok(Some(new.stored(id, code, now)))
}

/// A sold seat's ticket: issued once, valid, with `TicketIssued`.
pub async fn issue_ticket<T: TicketTx + OutboxWriter>(
    tx: &mut T,
    codes: &impl TicketCodes,
    sold: &ReservationChanged,
    now: DateTime<Utc>,
) -> Result<Issuing, TicketError> {
    let existing = tx.ticket_of(ReservationId(sold.reservation_id)).await?;
    if on_sold(existing.as_ref()) == OnSold::AlreadyThere {
        return Ok(Issuing::Unchanged);
    }
    let new = NewTicket::of(sold, TicketStatus::Valid);
    let Some(ticket) = store(tx, codes, new, now).await? else {
        return Ok(Issuing::Unchanged);
    };
    metrics::counter!("tickets_issued_total").increment(1);
    tx.append(vec![ticket.event(types::TICKET_ISSUED)], now)
        .await?;
    Ok(Issuing::Issued)
}

/// A cancelled ticket becomes void, with `TicketVoided`; one not issued
/// yet is recorded void, so its sale, arriving later, issues nothing.
pub async fn void_ticket<T: TicketTx + OutboxWriter>(
    tx: &mut T,
    codes: &impl TicketCodes,
    cancelled: &ReservationChanged,
    now: DateTime<Utc>,
) -> Result<Issuing, TicketError> {
    let existing = tx
        .ticket_of(ReservationId(cancelled.reservation_id))
        .await?;
    let voided = match (on_cancelled(existing.as_ref()), existing) {
        (OnCancelled::AlreadyVoid, _) => return Ok(Issuing::Unchanged),
        (OnCancelled::Void(id), Some(ticket)) => {
            if !tx.void_ticket(id, now).await? {
                // Rolled back and redelivered: the next attempt sees why.
                return Err(Fault::conflict(format!(
                    "ticket {id} changed while it was being voided"
                ))
                .into());
            }
            Ticket {
                status: TicketStatus::Void,
                ..ticket
            }
        }
        _ => {
            let new = NewTicket::of(cancelled, TicketStatus::Void);
            store(tx, codes, new, now).await?.ok_or_else(|| {
                Fault::conflict(format!(
                    "reservation {} got a ticket while it was being voided",
                    cancelled.reservation_id
                ))
            })?
        }
    };
    metrics::counter!("tickets_voided_total").increment(1);
    tx.append(vec![voided.event(types::TICKET_VOIDED)], now)
        .await?;
    Ok(Issuing::Voided)
}

/// The `tickets` consumer group: issues on `ReservationConfirmed`, voids
/// on `TicketCancelled`.
pub struct IssueTickets<K, C> {
    codes: K,
    clock: C,
}

impl<K, C> IssueTickets<K, C> {
    pub fn new(codes: K, clock: C) -> Self {
        Self { codes, clock }
    }
}

impl<T, K, C> Subscriber<T> for IssueTickets<K, C>
where
    T: TicketTx + OutboxWriter,
    K: TicketCodes,
    C: Clock,
{
    const SUBSCRIPTION: Subscription = Subscription::of(
        TICKETS_CONSUMER,
        &[types::RESERVATION_CONFIRMED, types::TICKET_CANCELLED],
    );
    type Payload = ReservationChanged;
    type Error = TicketError;

    async fn on(
        &self,
        tx: &mut T,
        delivered: Delivered<'_, ReservationChanged>,
    ) -> Result<(), TicketError> {
        let now = self.clock.now();
        if delivered.event.event_type == types::TICKET_CANCELLED {
            void_ticket(tx, &self.codes, &delivered.payload, now).await?;
        } else {
            issue_ticket(tx, &self.codes, &delivered.payload, now).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        kernel::TicketId,
        ticket::{
            infra::codes::TicketSigner,
            usecase::fake::{FakeTx, sold, test_codes},
        },
    };

    #[tokio::test]
    async fn a_sold_seat_gets_one_valid_ticket_with_a_signed_code() {
        let codes = test_codes();
        let mut tx = FakeTx::default();
        let now = Utc::now();
        assert_eq!(
            issue_ticket(&mut tx, &codes, &sold(41), now).await.unwrap(),
            Issuing::Issued
        );
        let ticket = tx.tickets[0].clone();
        assert_eq!(ticket.status, TicketStatus::Valid);
        assert_eq!(ticket.version, 1);
        assert_eq!(ticket.reservation, ReservationId(41));
        let claims = codes.signer().read(&ticket.code.code).unwrap();
        assert_eq!(claims, ticket.claims());
        assert_eq!(ticket.code.kid, codes.signer().current_kid());
        let event = &tx.events[0];
        assert_eq!(event.event_type, types::TICKET_ISSUED);
        assert_eq!(event.payload["ticketId"], ticket.id.value());
        assert_eq!(event.payload["reservationId"], 41);
        assert_eq!(event.payload["kid"], ticket.code.kid.as_str());
        assert_eq!(event.payload["version"], 1);

        assert_eq!(
            issue_ticket(&mut tx, &codes, &sold(41), now).await.unwrap(),
            Issuing::Unchanged,
            "a redelivery"
        );
        assert_eq!((tx.tickets.len(), tx.events.len()), (1, 1));
        issue_ticket(&mut tx, &codes, &sold(42), now).await.unwrap();
        assert_eq!(tx.tickets.len(), 2, "one ticket per reservation");
    }

    #[tokio::test]
    async fn a_cancelled_ticket_becomes_void_once() {
        let codes = test_codes();
        let mut tx = FakeTx::default();
        let now = Utc::now();
        issue_ticket(&mut tx, &codes, &sold(41), now).await.unwrap();
        assert_eq!(
            void_ticket(&mut tx, &codes, &sold(41), now).await.unwrap(),
            Issuing::Voided
        );
        assert_eq!(tx.tickets[0].status, TicketStatus::Void);
        assert_eq!(tx.events[1].event_type, types::TICKET_VOIDED);
        assert_eq!(tx.events[1].payload["ticketId"], tx.tickets[0].id.value());
        assert_eq!(
            void_ticket(&mut tx, &codes, &sold(41), now).await.unwrap(),
            Issuing::Unchanged
        );
        assert_eq!(tx.events.len(), 2);
    }

    #[tokio::test]
    async fn a_cancellation_before_the_sale_leaves_the_ticket_void() {
        let codes = test_codes();
        let mut tx = FakeTx::default();
        let now = Utc::now();
        assert_eq!(
            void_ticket(&mut tx, &codes, &sold(41), now).await.unwrap(),
            Issuing::Voided
        );
        assert_eq!(
            issue_ticket(&mut tx, &codes, &sold(41), now).await.unwrap(),
            Issuing::Unchanged
        );
        assert_eq!(tx.tickets.len(), 1);
        assert_eq!(tx.tickets[0].status, TicketStatus::Void);
        let types: Vec<_> = tx.events.iter().map(|e| e.event_type).collect();
        assert_eq!(types, vec![types::TICKET_VOIDED]);
    }

    #[tokio::test]
    async fn a_ticket_voided_under_its_feet_is_retried() {
        let codes = test_codes();
        let mut tx = FakeTx::default();
        let now = Utc::now();
        issue_ticket(&mut tx, &codes, &sold(41), now).await.unwrap();
        tx.refuse_void = true;
        let err = void_ticket(&mut tx, &codes, &sold(41), now)
            .await
            .unwrap_err();
        assert!(matches!(err, TicketError::Fault(Fault::Conflict(_))));
        assert_eq!(tx.tickets[0].id, TicketId(1));
    }

    #[tokio::test]
    async fn codes_of_a_key_rotated_out_still_verify() {
        let old = test_codes();
        let mut tx = FakeTx::default();
        let now = Utc::now();
        issue_ticket(&mut tx, &old, &sold(41), now).await.unwrap();
        let rotated = old.rotated();
        issue_ticket(&mut tx, &rotated, &sold(42), now)
            .await
            .unwrap();
        let (first, second) = (&tx.tickets[0], &tx.tickets[1]);
        assert_ne!(first.code.kid, second.code.kid);
        let signer: &TicketSigner = rotated.signer();
        assert_eq!(signer.read(&first.code.code).unwrap(), first.claims());
        assert_eq!(signer.read(&second.code.code).unwrap(), second.claims());
        let kids: Vec<_> = rotated
            .public_keys()
            .await
            .unwrap()
            .into_iter()
            .map(|key| key.kid)
            .collect();
        assert_eq!(kids, vec![second.code.kid.clone(), first.code.kid.clone()]);
    }
}
