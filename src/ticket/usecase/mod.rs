//! The ticket use cases, one file per flow: issuing and voiding tickets as
//! a saga step (`issue.rs`), and what a holder reads (`holder.rs`).

#[cfg(test)]
mod fake;
mod holder;
mod issue;

pub use issue::{IssueTickets, Issuing, issue_ticket, void_ticket};

use super::ports::TicketPorts;

#[derive(Clone)]
pub struct TicketService<P: TicketPorts> {
    tickets: P::Tickets,
    codes: P::Codes,
    qr: P::Qr,
}

impl<P: TicketPorts> TicketService<P> {
    pub fn new(tickets: P::Tickets, codes: P::Codes, qr: P::Qr) -> Self {
        Self { tickets, codes, qr }
    }

    /// The signing keys, for what issues tickets in the consumer.
    pub fn codes(&self) -> &P::Codes {
        &self.codes
    }
}
