//! The ticket use cases, one file per flow: issuing and voiding tickets as
//! a saga step (`issue.rs`), what a holder reads (`holder.rs`), handing a
//! ticket on (`transfer.rs`), the door (`checkin.rs`), and the scans made
//! offline (`batch.rs`).

mod batch;
mod checkin;
#[cfg(test)]
pub(crate) mod fake;
mod holder;
mod issue;
mod transfer;

pub use issue::{IssueTickets, Issuing, issue_ticket, void_ticket};

use super::ports::TicketPorts;

#[derive(Clone)]
pub struct TicketService<P: TicketPorts> {
    uow: P::Uow,
    tickets: P::Tickets,
    codes: P::Codes,
    qr: P::Qr,
    clock: P::Clock,
    wake: P::Wake,
}

impl<P: TicketPorts> TicketService<P> {
    pub fn new(
        uow: P::Uow,
        tickets: P::Tickets,
        codes: P::Codes,
        qr: P::Qr,
        clock: P::Clock,
        wake: P::Wake,
    ) -> Self {
        Self {
            uow,
            tickets,
            codes,
            qr,
            clock,
            wake,
        }
    }

    /// The signing keys, for what issues tickets in the consumer.
    pub fn codes(&self) -> &P::Codes {
        &self.codes
    }
}
