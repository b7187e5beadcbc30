//! The ticket use cases' test fakes: the consumer's transaction, a ticket
//! store, and codes signed with a fixed key.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};

use super::{TicketService, issue_ticket};
use crate::{
    kernel::{
        Clock, Fault, ManualClock, PageRequest, ReservationId, ScheduleId, StoreError, TicketId,
        Transaction, UnitOfWork, UserId,
        events::{NewEvent, ReservationChanged},
    },
    outbox::ports::OutboxWriter,
    testing::Wakes,
    ticket::{
        domain::{
            CheckIn, DoorCounts, GateCount, NewTicket, Refusal, Scan, SignedCode, Ticket,
            TicketError, TicketStatus, Window,
        },
        infra::{
            codes::{SignerCodes, TicketKey, TicketSigner},
            qr::QrRenderer,
        },
        ports::{DoorLog, TicketAdapters, TicketRepository, TicketTx},
    },
};

pub const ALICE: UserId = UserId(1);
pub const BOB: UserId = UserId(2);

/// Codes signed with a key made from a fixed seed.
pub fn test_codes() -> SignerCodes {
    SignerCodes::new(TicketSigner::new(TicketKey::from_seed([7; 32]), vec![]))
}

impl SignerCodes {
    /// The codes after a rotation to a new key.
    pub fn rotated(&self) -> Self {
        Self::new(self.signer().rotate(TicketKey::from_seed([8; 32])))
    }
}

/// The `ReservationConfirmed` (or `TicketCancelled`) of reservation `id`.
pub fn sold(id: i64) -> ReservationChanged {
    ReservationChanged {
        reservation_id: id,
        user_id: ALICE.value(),
        concert_id: 1,
        schedule_id: 2,
        seat_id: 40 + id,
        payment_id: Some(99),
        order_id: None,
    }
}

/// What the ticket step stores in the consumer's transaction, with one
/// unique ticket per reservation like the table.
#[derive(Debug, Clone, Default)]
pub struct FakeTx {
    pub tickets: Vec<Ticket>,
    pub events: Vec<NewEvent>,
    /// Plays a ticket another transaction voided first.
    pub refuse_void: bool,
    /// When each ticket was last written, as `updated_at` keeps it.
    pub changed: HashMap<TicketId, DateTime<Utc>>,
}

/// Whether `ticket` is still as `seen` read it: same version and holder,
/// valid and not checked in.
fn still_as(ticket: &Ticket, seen: &Ticket) -> bool {
    ticket.id == seen.id
        && ticket.version == seen.version
        && ticket.holder == seen.holder
        && ticket.status == TicketStatus::Valid
        && ticket.checked_in.is_none()
}

impl TicketTx for FakeTx {
    async fn ticket(&mut self, id: TicketId) -> Result<Option<Ticket>, StoreError> {
        Ok(self.tickets.iter().find(|t| t.id == id).cloned())
    }

    async fn ticket_of(
        &mut self,
        reservation: ReservationId,
    ) -> Result<Option<Ticket>, StoreError> {
        Ok(self
            .tickets
            .iter()
            .find(|t| t.reservation == reservation)
            .cloned())
    }

    async fn insert_ticket(
        &mut self,
        new: &NewTicket,
        now: DateTime<Utc>,
    ) -> Result<Option<TicketId>, StoreError> {
        if self
            .tickets
            .iter()
            .any(|t| t.reservation == new.reservation)
        {
            return Ok(None);
        }
        let id = TicketId(self.tickets.len() as i64 + 1);
        let unsigned = SignedCode {
            code: String::new(),
            kid: String::new(),
        };
        self.tickets.push(new.clone().stored(id, unsigned, now));
        self.changed.insert(id, now);
        Ok(Some(id))
    }

    async fn set_code(&mut self, id: TicketId, code: &SignedCode) -> Result<(), StoreError> {
        if let Some(ticket) = self.tickets.iter_mut().find(|t| t.id == id) {
            ticket.code = code.clone();
        }
        Ok(())
    }

    async fn void_ticket(&mut self, id: TicketId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let ticket = self.tickets.iter_mut().find(|t| t.id == id);
        match ticket {
            Some(ticket) if ticket.status == TicketStatus::Valid && !self.refuse_void => {
                ticket.status = TicketStatus::Void;
                self.changed.insert(id, now);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn void_seen(&mut self, seen: &Ticket, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let ticket = self.tickets.iter_mut().find(|t| still_as(t, seen));
        let voided = ticket.map(|t| t.status = TicketStatus::Void).is_some();
        if voided {
            self.changed.insert(seen.id, now);
        }
        Ok(voided)
    }

    async fn transfer(
        &mut self,
        seen: &Ticket,
        next: &Ticket,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let ticket = self.tickets.iter_mut().find(|t| still_as(t, seen));
        let moved = ticket.map(|ticket| *ticket = next.clone()).is_some();
        if moved {
            self.changed.insert(seen.id, now);
        }
        Ok(moved)
    }

    async fn check_in(&mut self, scan: &CheckIn) -> Result<bool, StoreError> {
        Ok(self.first_scan(scan, scan.scan.at, |first| first.is_none()))
    }

    async fn check_in_earlier(
        &mut self,
        scan: &CheckIn,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(self.first_scan(scan, now, |first| {
            first.is_none_or(|first| first.at > scan.scan.at)
        }))
    }
}

impl FakeTx {
    /// Records `scan` as its ticket's first where the id and version
    /// match, it is valid and `replaces` its first scan so far.
    fn first_scan(
        &mut self,
        scan: &CheckIn,
        now: DateTime<Utc>,
        replaces: impl Fn(Option<&Scan>) -> bool,
    ) -> bool {
        let ticket = self.tickets.iter_mut().find(|t| {
            t.id == scan.ticket
                && t.version == scan.version
                && t.status == TicketStatus::Valid
                && replaces(t.checked_in.as_ref())
        });
        let Some(ticket) = ticket else {
            return false;
        };
        ticket.checked_in = Some(scan.scan.clone());
        self.changed.insert(scan.ticket, now);
        true
    }
}

impl OutboxWriter for FakeTx {
    async fn append(&mut self, events: Vec<NewEvent>, _: DateTime<Utc>) -> Result<(), StoreError> {
        self.events.extend(events);
        Ok(())
    }
}

#[derive(Default)]
struct Stored {
    tx: FakeTx,
    down: bool,
    /// Schedules without tickets that exist.
    schedules: Vec<ScheduleId>,
    /// Oldest first.
    refusals: Vec<Refusal>,
    refusals_fail: bool,
}

/// The tickets the step stored, read as the repository reads them.
#[derive(Clone, Default)]
pub struct FakeTickets(Arc<Mutex<Stored>>);

impl TicketRepository for FakeTickets {
    async fn get(&self, id: TicketId) -> Result<Option<Ticket>, TicketError> {
        let stored = Fault::unless_down(&self.0, |s| s.down)?;
        Ok(stored.tx.tickets.iter().find(|t| t.id == id).cloned())
    }

    async fn of_holder(
        &self,
        holder: UserId,
        page: PageRequest,
    ) -> Result<Vec<Ticket>, TicketError> {
        self.page(|t| t.holder == holder, Order::NewestFirst, page)
    }

    async fn of_schedule(
        &self,
        schedule: ScheduleId,
        page: PageRequest,
    ) -> Result<Vec<Ticket>, TicketError> {
        self.page(|t| t.schedule == schedule, Order::OldestFirst, page)
    }

    async fn changed_of_schedule(
        &self,
        schedule: ScheduleId,
        from: DateTime<Utc>,
        page: PageRequest,
    ) -> Result<Vec<Ticket>, TicketError> {
        let changed = self.0.lock().unwrap().tx.changed.clone();
        let since = |t: &Ticket| changed.get(&t.id).is_some_and(|at| *at >= from);
        self.page(
            |t| t.schedule == schedule && since(t),
            Order::OldestFirst,
            page,
        )
    }

    async fn many(&self, ids: &[TicketId]) -> Result<Vec<Ticket>, TicketError> {
        let stored = Fault::unless_down(&self.0, |s| s.down)?;
        let tickets = stored.tx.tickets.iter();
        Ok(tickets.filter(|t| ids.contains(&t.id)).cloned().collect())
    }
}

impl DoorLog for FakeTickets {
    async fn record(&self, refusal: &Refusal) -> Result<(), StoreError> {
        let mut stored = self.0.lock().unwrap();
        if stored.refusals_fail {
            return Err(StoreError::Unavailable(anyhow::anyhow!("refusals down")));
        }
        stored.refusals.push(refusal.clone());
        Ok(())
    }

    async fn counts(
        &self,
        schedule: ScheduleId,
        windows: &[Window],
    ) -> Result<Option<DoorCounts>, TicketError> {
        let stored = Fault::unless_down(&self.0, |s| s.down)?;
        let tickets: Vec<&Ticket> = (stored.tx.tickets.iter())
            .filter(|t| t.schedule == schedule)
            .collect();
        if tickets.is_empty() && !stored.schedules.contains(&schedule) {
            return Ok(None);
        }
        let mut gates: Vec<GateCount> = Vec::new();
        for scan in tickets.iter().filter_map(|t| t.checked_in.as_ref()) {
            let at = match gates.iter().position(|g| g.gate == scan.gate) {
                Some(at) => at,
                None => {
                    gates.push(GateCount {
                        gate: scan.gate.clone(),
                        checked_in: 0,
                        per_minute: vec![0; windows.len()],
                    });
                    gates.len() - 1
                }
            };
            let gate = &mut gates[at];
            gate.checked_in += 1;
            for (n, window) in gate.per_minute.iter_mut().zip(windows) {
                *n += u64::from(window.contains(scan.at));
            }
        }
        let sold = tickets
            .iter()
            .filter(|t| t.status == TicketStatus::Valid)
            .count();
        Ok(Some(DoorCounts {
            sold: sold as u64,
            gates,
        }))
    }

    async fn recent_refusals(
        &self,
        schedule: ScheduleId,
        limit: u64,
    ) -> Result<Vec<Refusal>, TicketError> {
        let stored = Fault::unless_down(&self.0, |s| s.down)?;
        Ok((stored.refusals.iter().rev())
            .filter(|r| r.schedule == Some(schedule))
            .take(limit as usize)
            .cloned()
            .collect())
    }
}

enum Order {
    NewestFirst,
    OldestFirst,
}

impl FakeTickets {
    /// A page of the stored tickets `keep` keeps, in `order` from the
    /// cursor on, as the table's paged reads answer it.
    fn page(
        &self,
        keep: impl Fn(&Ticket) -> bool,
        order: Order,
        page: PageRequest,
    ) -> Result<Vec<Ticket>, TicketError> {
        let stored = Fault::unless_down(&self.0, |s| s.down)?;
        let tickets = stored.tx.tickets.iter().filter(|t| keep(t));
        let rows: Vec<&Ticket> = match order {
            Order::NewestFirst => tickets
                .rev()
                .filter(|t| page.after.is_none_or(|after| t.id.value() < after))
                .collect(),
            Order::OldestFirst => tickets
                .filter(|t| page.after.is_none_or(|after| t.id.value() > after))
                .collect(),
        };
        Ok(rows
            .into_iter()
            .take(page.fetch() as usize)
            .cloned()
            .collect())
    }
}

/// A transaction over a copy of the stored tickets, written back on
/// commit (dropped, it leaves them as they were).
pub struct FakeTicketsTx {
    work: FakeTx,
    store: FakeTickets,
}

impl UnitOfWork for FakeTickets {
    type Tx = FakeTicketsTx;

    async fn begin(&self) -> Result<FakeTicketsTx, StoreError> {
        let stored = Fault::unless_down(&self.0, |s| s.down)
            .map_err(|_| StoreError::Unavailable(anyhow::anyhow!("database down")))?;
        Ok(FakeTicketsTx {
            work: stored.tx.clone(),
            store: self.clone(),
        })
    }
}

impl Transaction for FakeTicketsTx {
    async fn commit(self) -> Result<(), StoreError> {
        self.store.0.lock().unwrap().tx = self.work;
        Ok(())
    }
}

impl TicketTx for FakeTicketsTx {
    async fn ticket(&mut self, id: TicketId) -> Result<Option<Ticket>, StoreError> {
        self.work.ticket(id).await
    }

    async fn ticket_of(
        &mut self,
        reservation: ReservationId,
    ) -> Result<Option<Ticket>, StoreError> {
        self.work.ticket_of(reservation).await
    }

    async fn insert_ticket(
        &mut self,
        new: &NewTicket,
        now: DateTime<Utc>,
    ) -> Result<Option<TicketId>, StoreError> {
        self.work.insert_ticket(new, now).await
    }

    async fn set_code(&mut self, id: TicketId, code: &SignedCode) -> Result<(), StoreError> {
        self.work.set_code(id, code).await
    }

    async fn void_ticket(&mut self, id: TicketId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.work.void_ticket(id, now).await
    }

    async fn void_seen(&mut self, seen: &Ticket, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.work.void_seen(seen, now).await
    }

    async fn transfer(
        &mut self,
        seen: &Ticket,
        next: &Ticket,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.work.transfer(seen, next, now).await
    }

    async fn check_in(&mut self, scan: &CheckIn) -> Result<bool, StoreError> {
        self.work.check_in(scan).await
    }

    async fn check_in_earlier(
        &mut self,
        scan: &CheckIn,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.work.check_in_earlier(scan, now).await
    }
}

impl OutboxWriter for FakeTicketsTx {
    async fn append(
        &mut self,
        events: Vec<NewEvent>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.work.append(events, now).await
    }
}

pub type Fakes = TicketAdapters<
    FakeTickets,
    FakeTickets,
    SignerCodes,
    QrRenderer,
    ManualClock,
    Wakes,
    FakeTickets,
>;

/// When the fakes' clock starts.
pub fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

pub struct Harness {
    pub service: TicketService<Fakes>,
    pub tickets: FakeTickets,
    pub codes: SignerCodes,
    pub clock: ManualClock,
    pub wakes: Wakes,
    next_reservation: Mutex<i64>,
}

pub fn harness() -> Harness {
    let tickets = FakeTickets::default();
    let codes = test_codes();
    let clock = ManualClock::new(start());
    let wakes = Wakes::default();
    Harness {
        service: TicketService::new(
            tickets.clone(),
            tickets.clone(),
            codes.clone(),
            QrRenderer,
            clock.clone(),
            wakes.clone(),
            tickets.clone(),
        ),
        tickets,
        codes,
        clock,
        wakes,
        next_reservation: Mutex::new(0),
    }
}

impl Harness {
    /// Issues a ticket to `holder` for a reservation of their own, as the
    /// saga step does.
    pub async fn issue(&self, holder: UserId) -> TicketId {
        let reservation = {
            let mut next = self.next_reservation.lock().unwrap();
            *next += 1;
            *next
        };
        let sold = ReservationChanged {
            user_id: holder.value(),
            ..sold(reservation)
        };
        let mut stored = std::mem::take(&mut self.tickets.0.lock().unwrap().tx);
        issue_ticket(&mut stored, &self.codes, &sold, self.clock.now())
            .await
            .unwrap();
        let id = stored.tickets.last().unwrap().id;
        self.tickets.0.lock().unwrap().tx = stored;
        id
    }

    pub fn void(&self, id: TicketId) {
        let mut stored = self.tickets.0.lock().unwrap();
        let ticket = stored.tx.tickets.iter_mut().find(|t| t.id == id).unwrap();
        ticket.status = TicketStatus::Void;
        stored.tx.changed.insert(id, self.clock.now());
    }

    pub fn down(&self) {
        self.tickets.0.lock().unwrap().down = true;
    }

    /// A schedule that exists without tickets.
    pub fn add_schedule(&self, schedule: ScheduleId) {
        self.tickets.0.lock().unwrap().schedules.push(schedule);
    }

    /// Refused scans can no longer be recorded.
    pub fn refusals_fail(&self) {
        self.tickets.0.lock().unwrap().refusals_fail = true;
    }

    /// The refused scans recorded, oldest first.
    pub fn refusals(&self) -> Vec<Refusal> {
        self.tickets.0.lock().unwrap().refusals.clone()
    }

    /// The ticket as stored now.
    pub fn ticket(&self, id: TicketId) -> Ticket {
        let stored = self.tickets.0.lock().unwrap();
        stored
            .tx
            .tickets
            .iter()
            .find(|t| t.id == id)
            .unwrap()
            .clone()
    }

    /// Plays a transfer: the ticket is re-issued with the next version.
    pub fn reissue(&self, id: TicketId) {
        let mut stored = self.tickets.0.lock().unwrap();
        let ticket = stored.tx.tickets.iter_mut().find(|t| t.id == id).unwrap();
        ticket.version += 1;
        stored.tx.changed.insert(id, self.clock.now());
    }

    /// The events committed so far.
    pub fn events(&self) -> Vec<NewEvent> {
        self.tickets.0.lock().unwrap().tx.events.clone()
    }
}
