//! The ticket use cases, one file per flow: issuing and voiding tickets as
//! a saga step (`issue.rs`), what a holder reads (`holder.rs`), handing a
//! ticket on (`transfer.rs`), the door (`checkin.rs`), the scans made
//! offline (`batch.rs`), and what operators see of the door
//! (`door_stats.rs`).

mod batch;
mod checkin;
mod door_stats;
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
    door: P::Door,
}

impl<P: TicketPorts> TicketService<P> {
    pub fn new(
        uow: P::Uow,
        tickets: P::Tickets,
        codes: P::Codes,
        qr: P::Qr,
        clock: P::Clock,
        wake: P::Wake,
        door: P::Door,
    ) -> Self {
        Self {
            uow,
            tickets,
            codes,
            qr,
            clock,
            wake,
            door,
        }
    }

    /// The signing keys, for what issues tickets in the consumer.
    pub fn codes(&self) -> &P::Codes {
        &self.codes
    }
}
