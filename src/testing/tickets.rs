//! Tickets in the world: the ticket transaction port, played by the
//! ticket module's own fake so both keep one rule per compare-and-set.

use chrono::{DateTime, Utc};

use super::MemTx;
use crate::{
    kernel::{ReservationId, StoreError, TicketId},
    ticket::{
        domain::{CheckIn, NewTicket, SignedCode, Ticket},
        ports::TicketTx,
    },
};

impl TicketTx for MemTx {
    async fn ticket(&mut self, id: TicketId) -> Result<Option<Ticket>, StoreError> {
        self.check()?;
        self.work.tickets.ticket(id).await
    }

    async fn ticket_of(
        &mut self,
        reservation: ReservationId,
    ) -> Result<Option<Ticket>, StoreError> {
        self.check()?;
        self.work.tickets.ticket_of(reservation).await
    }

    async fn insert_ticket(
        &mut self,
        new: &NewTicket,
        now: DateTime<Utc>,
    ) -> Result<Option<TicketId>, StoreError> {
        self.check()?;
        self.work.tickets.insert_ticket(new, now).await
    }

    async fn set_code(&mut self, id: TicketId, code: &SignedCode) -> Result<(), StoreError> {
        self.check()?;
        self.work.tickets.set_code(id, code).await
    }

    async fn void_ticket(&mut self, id: TicketId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.check()?;
        self.work.tickets.void_ticket(id, now).await
    }

    async fn void_seen(&mut self, seen: &Ticket, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.check()?;
        self.work.tickets.void_seen(seen, now).await
    }

    async fn transfer(
        &mut self,
        seen: &Ticket,
        next: &Ticket,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.work.tickets.transfer(seen, next, now).await
    }

    async fn check_in(&mut self, scan: &CheckIn) -> Result<bool, StoreError> {
        self.check()?;
        self.work.tickets.check_in(scan).await
    }

    async fn check_in_earlier(
        &mut self,
        scan: &CheckIn,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.work.tickets.check_in_earlier(scan, now).await
    }
}
