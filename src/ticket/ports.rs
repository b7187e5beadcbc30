use std::future::Future;

use chrono::{DateTime, Utc};

use super::domain::{
    CheckIn, DoorCounts, NewTicket, PublicKey, QrFormat, Refusal, SignedCode, Ticket, TicketClaims,
    TicketError, Window,
};
use crate::{
    kernel::{
        Clock, PageRequest, ReservationId, ScheduleId, StoreError, TicketId, UnitOfWork, UserId,
        events::RelayWake,
    },
    outbox::ports::OutboxWriter,
};

crate::kernel::ports::ports_bundle! {
    /// The adapters the ticket use cases run over: the composition root
    /// picks them (`app::services`), tests pick fakes.
    pub trait TicketPorts for TicketAdapters<U, R, K, Q, C, W, D> {
        /// A check-in and its event commit together.
        type Uow: UnitOfWork<Tx: TicketTx + OutboxWriter>;
        type Tickets: TicketRepository;
        type Codes: TicketCodes;
        type Qr: QrImages;
        type Clock: Clock;
        type Wake: RelayWake;
        type Door: DoorLog;
    }
}

/// Reads of tickets, outside any transaction.
pub trait TicketRepository: Clone + Send + Sync + 'static {
    fn get(&self, id: TicketId)
    -> impl Future<Output = Result<Option<Ticket>, TicketError>> + Send;

    /// Up to `page.fetch()` of the holder's tickets, newest first, older
    /// than the ticket `page.after`.
    fn of_holder(
        &self,
        holder: UserId,
        page: PageRequest,
    ) -> impl Future<Output = Result<Vec<Ticket>, TicketError>> + Send;

    /// Up to `page.fetch()` of the schedule's tickets, oldest first, after
    /// the ticket `page.after`.
    fn of_schedule(
        &self,
        schedule: ScheduleId,
        page: PageRequest,
    ) -> impl Future<Output = Result<Vec<Ticket>, TicketError>> + Send;

    /// The same, of the tickets written (issued, voided, checked in,
    /// re-issued) at or after `from` by the server's clock.
    fn changed_of_schedule(
        &self,
        schedule: ScheduleId,
        from: DateTime<Utc>,
        page: PageRequest,
    ) -> impl Future<Output = Result<Vec<Ticket>, TicketError>> + Send;

    /// The tickets of `ids` that exist, in any order.
    fn many(
        &self,
        ids: &[TicketId],
    ) -> impl Future<Output = Result<Vec<Ticket>, TicketError>> + Send;
}

/// Tickets inside the consumer's transaction.
pub trait TicketTx: Send {
    /// The ticket `id`, as this transaction sees it.
    fn ticket(
        &mut self,
        id: TicketId,
    ) -> impl Future<Output = Result<Option<Ticket>, StoreError>> + Send;

    /// The reservation's ticket (there is at most one).
    fn ticket_of(
        &mut self,
        reservation: ReservationId,
    ) -> impl Future<Output = Result<Option<Ticket>, StoreError>> + Send;

    /// Stores the ticket without a code yet and answers its id; `None`
    /// when the reservation has one already (the unique reservation id is
    /// the last guard behind the inbox).
    fn insert_ticket(
        &mut self,
        new: &NewTicket,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<TicketId>, StoreError>> + Send;

    /// Stores the ticket's signed code.
    fn set_code(
        &mut self,
        id: TicketId,
        code: &SignedCode,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Makes a valid ticket void (a compare-and-set); true if it did.
    fn void_ticket(
        &mut self,
        id: TicketId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Voids the ticket as `seen` read it, its holder's cancellation: a
    /// compare-and-set on the id, version and holder `seen` has, valid and
    /// not checked in; true if it did. A concurrent transfer or scan of
    /// that version either lands first (and this sees false) or fails.
    fn void_seen(
        &mut self,
        seen: &Ticket,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Hands the ticket `seen` on as `next` (its new holder, version and
    /// code): a compare-and-set on the id, version and holder `seen` has,
    /// valid and not checked in; true if this one did. Of two concurrent
    /// transfers of one version, one sees true.
    fn transfer(
        &mut self,
        seen: &Ticket,
        next: &Ticket,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records the first scan of the ticket (a compare-and-set on its id
    /// and version, valid and not checked in yet); true if this one was
    /// it. Of any number of concurrent scans, one sees true.
    fn check_in(&mut self, scan: &CheckIn)
    -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records a scan made offline as the ticket's first if it is (a
    /// compare-and-set on its id and version, valid, and not checked in
    /// yet or checked in later than this scan), stamping the change at
    /// `now`; true if it did.
    fn check_in_earlier(
        &mut self,
        scan: &CheckIn,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// The server's ticket-signing keys: the current one signs, every key
/// still trusted is published for scanners.
pub trait TicketCodes: Clone + Send + Sync + 'static {
    fn sign(
        &self,
        claims: &TicketClaims,
    ) -> impl Future<Output = Result<SignedCode, StoreError>> + Send;

    /// Every key a code may be signed with, the signing one first.
    fn public_keys(&self) -> impl Future<Output = Result<Vec<PublicKey>, StoreError>> + Send;

    /// The claims of a code signed with one of those keys (found by the
    /// `kid` of its header); `None` for any other string.
    fn verify(
        &self,
        code: &str,
    ) -> impl Future<Output = Result<Option<TicketClaims>, StoreError>> + Send;
}

/// Draws a code as a QR image.
pub trait QrImages: Clone + Send + Sync + 'static {
    fn draw(&self, code: &str, format: QrFormat) -> anyhow::Result<Vec<u8>>;
}

/// The door as operators see it: the scans it refused, and a schedule's
/// counts.
pub trait DoorLog: Clone + Send + Sync + 'static {
    /// Keeps a refused scan (for a while: the retention sweeper prunes).
    fn record(&self, refusal: &Refusal) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The schedule's tickets sold and admitted, per gate, with each
    /// gate's check-ins in each of `windows`; `None` for a schedule that
    /// does not exist.
    fn counts(
        &self,
        schedule: ScheduleId,
        windows: &[Window],
    ) -> impl Future<Output = Result<Option<DoorCounts>, TicketError>> + Send;

    /// The schedule's last `limit` refusals, newest first.
    fn recent_refusals(
        &self,
        schedule: ScheduleId,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<Refusal>, TicketError>> + Send;
}
