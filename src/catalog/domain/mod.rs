mod best_available;

pub use best_available::{SeatSpot, best_available};

use chrono::{DateTime, TimeDelta, Utc};

use crate::kernel::Fault;
use crate::kernel::{
    ConcertId, Points, ScheduleId, SeatId, UserId,
    events::{ConcertCreated, NewEvent, types},
};

pub const MAX_TEXT_CHARS: usize = 200;
pub const MAX_GRADE_CHARS: usize = 32;
pub const MAX_SECTION_CHARS: usize = 32;
pub const MAX_ROW_CHARS: usize = 16;
pub const MAX_SCHEDULES: usize = 100;
/// A block per row and grade: 500 rows fit the request body limit.
pub const MAX_SEAT_BLOCKS: usize = 500;
pub const MAX_SEATS_PER_SCHEDULE: u32 = 20_000;
/// Seat map pages: 500 seats unless asked otherwise, never more than 1,000.
pub const DEFAULT_SEAT_PAGE: u64 = 500;
pub const MAX_SEAT_PAGE: u64 = 1_000;
/// Concert list pages.
pub const DEFAULT_CONCERT_PAGE: u64 = 50;
pub const MAX_CONCERT_PAGE: u64 = 200;
/// A concert has at most [`MAX_SCHEDULES`] schedules, so by default they
/// come in one page.
pub const MAX_SCHEDULE_PAGE: u64 = MAX_SCHEDULES as u64;

/// A concert as the admin described it, already checked: every value in it
/// is valid, so the repository only has to store it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewConcert {
    pub title: String,
    pub venue: String,
    pub schedules: Vec<NewSchedule>,
    /// The admin creating it (`None`: the server itself, seeding the demo).
    pub created_by: Option<UserId>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewSchedule {
    pub starts_at: DateTime<Utc>,
    /// Seats are numbered 1..n in block order.
    pub seat_blocks: Vec<SeatBlock>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeatBlock {
    pub grade: String,
    pub price: Points,
    pub count: u32,
    pub place: SeatPlace,
}

/// Where a seat stands in the hall, as far as the admin said: its section
/// and its row. Seats of one row are next to each other when their numbers
/// follow on; a jump in numbering is an aisle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SeatPlace {
    pub section: Option<String>,
    pub row: Option<String>,
}

impl SeatPlace {
    fn weight(&self) -> usize {
        [&self.section, &self.row]
            .into_iter()
            .flatten()
            .map(String::capacity)
            .sum()
    }
}

impl NewSchedule {
    pub fn seat_count(&self) -> u32 {
        self.seat_blocks.iter().map(|b| b.count).sum()
    }

    /// Every seat of the schedule as its number (from 1) and its block.
    pub fn seats(&self) -> impl Iterator<Item = (u32, &SeatBlock)> {
        self.seat_blocks
            .iter()
            .flat_map(|block| (0..block.count).map(move |_| block))
            .zip(1..)
            .map(|(block, number)| (number, block))
    }
}

/// The admin's input before validation.
#[derive(Debug, Clone)]
pub struct ConcertDraft {
    pub title: String,
    pub venue: String,
    pub schedules: Vec<ScheduleDraft>,
}

#[derive(Debug, Clone)]
pub struct ScheduleDraft {
    pub starts_at: DateTime<Utc>,
    pub seat_blocks: Vec<SeatBlockDraft>,
}

#[derive(Debug, Clone)]
pub struct SeatBlockDraft {
    pub grade: String,
    pub price: i64,
    pub count: i64,
    /// As the admin gave it; [`NewConcert::parse`] trims and checks it.
    pub place: SeatPlace,
}

impl NewConcert {
    /// Validates a draft; `now` rules out schedules in the past.
    pub fn parse(draft: ConcertDraft, now: DateTime<Utc>) -> Result<Self, CatalogError> {
        let title = text("title", &draft.title, MAX_TEXT_CHARS)?;
        let venue = text("venue", &draft.venue, MAX_TEXT_CHARS)?;
        if draft.schedules.is_empty() || draft.schedules.len() > MAX_SCHEDULES {
            return Err(invalid(format!(
                "schedules: between 1 and {MAX_SCHEDULES} schedules are required"
            )));
        }
        let mut schedules = Vec::with_capacity(draft.schedules.len());
        for (i, schedule) in draft.schedules.into_iter().enumerate() {
            if schedule.starts_at <= now {
                return Err(invalid(format!(
                    "schedules[{i}].startsAt must be in the future"
                )));
            }
            if schedules
                .iter()
                .any(|s: &NewSchedule| s.starts_at == schedule.starts_at)
            {
                return Err(invalid(format!(
                    "schedules[{i}].startsAt repeats an earlier schedule of this concert"
                )));
            }
            if schedule.seat_blocks.is_empty() || schedule.seat_blocks.len() > MAX_SEAT_BLOCKS {
                return Err(invalid(format!(
                    "schedules[{i}].seats: between 1 and {MAX_SEAT_BLOCKS} seat blocks are required"
                )));
            }
            let mut blocks = Vec::with_capacity(schedule.seat_blocks.len());
            let mut total: u64 = 0;
            for (j, block) in schedule.seat_blocks.into_iter().enumerate() {
                let at = format!("schedules[{i}].seats[{j}]");
                let grade = text(&format!("{at}.grade"), &block.grade, MAX_GRADE_CHARS)?;
                let price = Points::new(block.price)
                    .map_err(|err| invalid(format!("{at}.price: {err}")))?;
                let count = u32::try_from(block.count)
                    .ok()
                    .filter(|c| (1..=MAX_SEATS_PER_SCHEDULE).contains(c))
                    .ok_or_else(|| {
                        invalid(format!(
                            "{at}.count must be between 1 and {MAX_SEATS_PER_SCHEDULE}"
                        ))
                    })?;
                let optional = |name: &str, value: &Option<String>, max_chars| {
                    value
                        .as_deref()
                        .map(|value| text(&format!("{at}.{name}"), value, max_chars))
                        .transpose()
                };
                let place = SeatPlace {
                    section: optional("section", &block.place.section, MAX_SECTION_CHARS)?,
                    row: optional("row", &block.place.row, MAX_ROW_CHARS)?,
                };
                total += u64::from(count);
                blocks.push(SeatBlock {
                    grade,
                    price,
                    count,
                    place,
                });
            }
            if total > u64::from(MAX_SEATS_PER_SCHEDULE) {
                return Err(invalid(format!(
                    "schedules[{i}] has {total} seats; at most {MAX_SEATS_PER_SCHEDULE} are allowed"
                )));
            }
            schedules.push(NewSchedule {
                starts_at: schedule.starts_at,
                seat_blocks: blocks,
            });
        }
        Ok(Self {
            title,
            venue,
            schedules,
            created_by: None,
        })
    }
}

fn text(field: &str, value: &str, max_chars: usize) -> Result<String, CatalogError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(invalid(format!("{field} must not be blank")));
    }
    if trimmed.chars().count() > max_chars {
        return Err(invalid(format!(
            "{field} must be at most {max_chars} characters"
        )));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(trimmed.to_owned())
}

fn invalid(detail: String) -> CatalogError {
    CatalogError::Invalid(detail)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concert {
    pub id: ConcertId,
    pub title: String,
    pub venue: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedConcert {
    pub id: ConcertId,
    pub schedules: Vec<CreatedSchedule>,
}

impl CreatedConcert {
    /// The `ConcertCreated` event, written in the same transaction.
    pub fn event(&self, concert: &NewConcert) -> NewEvent {
        NewEvent::new(
            types::CONCERT_CREATED,
            "concert",
            self.id,
            &ConcertCreated {
                concert_id: self.id.value(),
                title: concert.title.clone(),
                venue: concert.venue.clone(),
                schedule_ids: self.schedules.iter().map(|s| s.id.value()).collect(),
                seat_count: self.schedules.iter().map(|s| u64::from(s.seat_count)).sum(),
                admin_id: concert.created_by.map(UserId::value),
            },
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSchedule {
    pub id: ScheduleId,
    pub starts_at: DateTime<Utc>,
    pub seat_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSummary {
    pub id: ScheduleId,
    pub concert_id: ConcertId,
    pub starts_at: DateTime<Utc>,
    pub available_seats: u64,
    pub status: ScheduleStatus,
}

impl ScheduleSummary {
    /// As a buyer sees it: a schedule that is not on sale has no seat to
    /// offer, whatever its seat rows say.
    pub fn as_offered(self) -> Self {
        if self.status == ScheduleStatus::OnSale {
            self
        } else {
            Self {
                available_seats: 0,
                ..self
            }
        }
    }
}

/// Whether a schedule is sold: `on_sale` until an admin cancels it, then
/// `cancelling` (no new holds; holds released and tickets refunded in
/// batches) and finally `cancelled`. The database column holds these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum ScheduleStatus {
    OnSale,
    Cancelling,
    Cancelled,
}

crate::kernel::stored_name!(ScheduleStatus);

/// A seat's stored status; the database column holds these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum SeatStatus {
    Available,
    Held,
    Sold,
}

crate::kernel::stored_name!(SeatStatus);

/// A seat as stored. A hold whose `until` has passed is not yet cleaned up
/// but no longer counts: see [`Seat::availability`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatState {
    Available,
    Held {
        holder: UserId,
        until: DateTime<Utc>,
    },
    Sold {
        owner: UserId,
    },
}

/// What the seat map's read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeatListing {
    /// No such schedule.
    NoSchedule,
    /// The schedule is not on sale (being cancelled or cancelled): its
    /// seats are not offered.
    OffSale(ScheduleStatus),
    /// The page of seats of a schedule on sale.
    Seats(Vec<Seat>),
}

/// A page of seats weighs its seats, their grades and places (what keeps the
/// snapshots of distinct pages within their budget).
impl crate::kernel::cache::Weighed for SeatListing {
    fn weight(&self) -> usize {
        match self {
            SeatListing::Seats(seats) => seats
                .iter()
                .map(|seat| {
                    std::mem::size_of::<Seat>() + seat.grade.capacity() + seat.place.weight()
                })
                .sum(),
            SeatListing::NoSchedule | SeatListing::OffSale(_) => 0,
        }
    }
}

/// A schedule's sale as an operator follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleSale {
    pub status: ScheduleStatus,
    pub seats: u64,
    pub sold: u64,
}

/// A hold asked of a seat: for `user` until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatHold {
    pub schedule: ScheduleId,
    pub seat: SeatId,
    pub user: UserId,
    pub until: DateTime<Utc>,
}

/// What a hold learned about the seat it won.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldSeat {
    pub price: Points,
    pub concert: ConcertId,
    /// When the schedule's show starts (sales close by it).
    pub starts_at: DateTime<Utc>,
    /// The seat as the hold left it (its number, grade and place).
    pub seat: Seat,
}

/// Whether a schedule starting at `starts_at` has stopped selling at `now`:
/// holds, payments, waitlist joins and offers end `close_before` its start
/// (`--sales-close-minutes-before-start`), like a box office closing its
/// window when the doors open.
pub fn sales_closed(starts_at: DateTime<Utc>, close_before: TimeDelta, now: DateTime<Utc>) -> bool {
    now >= starts_at - close_before
}

/// What a buyer sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Availability {
    Available,
    Held,
    Sold,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    pub id: SeatId,
    pub schedule_id: ScheduleId,
    pub number: u32,
    pub grade: String,
    pub price: Points,
    pub place: SeatPlace,
    pub state: SeatState,
}

impl Seat {
    /// When this seat's availability changes by time alone (a hold
    /// lapsing), if it will.
    pub fn changes_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.state {
            SeatState::Held { until, .. } if until > now => Some(until),
            _ => None,
        }
    }

    pub fn availability(&self, now: DateTime<Utc>) -> Availability {
        match self.state {
            SeatState::Available => Availability::Available,
            SeatState::Held { until, .. } if until <= now => Availability::Available,
            SeatState::Held { .. } => Availability::Held,
            SeatState::Sold { .. } => Availability::Sold,
        }
    }
}

/// Which seats of a schedule the seat map shows: those with this
/// availability as of now (see [`Seat::availability`]) and of this grade.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SeatFilter {
    pub status: Option<Availability>,
    pub grade: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{0}")]
    Invalid(String),
    #[error("concert {0} does not exist")]
    ConcertNotFound(ConcertId),
    #[error("schedule {0} does not exist")]
    ScheduleNotFound(ScheduleId),
    #[error("schedule {0} is not on sale: it was cancelled")]
    NotOnSale(ScheduleId),
    #[error(transparent)]
    Fault(Fault),
}

crate::kernel::module_error!(CatalogError);

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn block(grade: &str, price: i64, count: i64) -> SeatBlockDraft {
        SeatBlockDraft {
            grade: grade.into(),
            price,
            count,
            place: SeatPlace::default(),
        }
    }

    fn draft(now: DateTime<Utc>, blocks: Vec<SeatBlockDraft>) -> ConcertDraft {
        ConcertDraft {
            title: "  Night Show ".into(),
            venue: "Hall A".into(),
            schedules: vec![ScheduleDraft {
                starts_at: now + TimeDelta::days(30),
                seat_blocks: blocks,
            }],
        }
    }

    fn invalid_detail(result: Result<NewConcert, CatalogError>) -> String {
        match result {
            Err(CatalogError::Invalid(detail)) => detail,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_draft_is_trimmed_and_numbers_seats_across_blocks() {
        let now = Utc::now();
        let concert = NewConcert::parse(
            draft(now, vec![block("VIP", 150_000, 2), block("R", 90_000, 3)]),
            now,
        )
        .unwrap();
        assert_eq!(concert.title, "Night Show");
        let schedule = &concert.schedules[0];
        assert_eq!(schedule.seat_count(), 5);
        let seats: Vec<_> = schedule
            .seats()
            .map(|(number, block)| (number, block.grade.clone(), block.price.value()))
            .collect();
        assert_eq!(
            seats,
            vec![
                (1, "VIP".into(), 150_000),
                (2, "VIP".into(), 150_000),
                (3, "R".into(), 90_000),
                (4, "R".into(), 90_000),
                (5, "R".into(), 90_000),
            ]
        );
    }

    #[test]
    fn seats_stand_where_their_block_says_and_a_bad_place_is_refused() {
        let now = Utc::now();
        let row = |label: &str, count| SeatBlockDraft {
            place: SeatPlace {
                section: Some(" Floor ".into()),
                row: Some(label.into()),
            },
            ..block("R", 90_000, count)
        };
        let concert = NewConcert::parse(draft(now, vec![row("A", 2), row("B", 1)]), now).unwrap();
        let places: Vec<_> = concert.schedules[0]
            .seats()
            .map(|(number, block)| (number, block.place.clone()))
            .collect();
        let at = |label: &str| SeatPlace {
            section: Some("Floor".into()),
            row: Some(label.into()),
        };
        assert_eq!(places, vec![(1, at("A")), (2, at("A")), (3, at("B"))]);

        let unplaced = NewConcert::parse(draft(now, vec![block("R", 1, 1)]), now).unwrap();
        assert_eq!(
            unplaced.schedules[0].seat_blocks[0].place,
            SeatPlace::default()
        );

        let mut too_long = block("R", 1, 1);
        too_long.place.row = Some("R".repeat(MAX_ROW_CHARS + 1));
        let detail = invalid_detail(NewConcert::parse(draft(now, vec![too_long]), now));
        assert!(detail.contains("schedules[0].seats[0].row"), "{detail}");
        let mut blank = block("R", 1, 1);
        blank.place.section = Some("  ".into());
        let detail = invalid_detail(NewConcert::parse(draft(now, vec![blank]), now));
        assert!(detail.contains("schedules[0].seats[0].section"), "{detail}");
    }

    #[test]
    fn rejects_blank_text_bad_numbers_and_past_schedules() {
        let now = Utc::now();
        let mut d = draft(now, vec![block("VIP", 1, 1)]);
        d.title = "   ".into();
        assert!(invalid_detail(NewConcert::parse(d, now)).contains("title"));

        assert!(
            invalid_detail(NewConcert::parse(
                draft(now, vec![block("VIP", -5, 1)]),
                now
            ))
            .contains("price")
        );
        assert!(
            invalid_detail(NewConcert::parse(draft(now, vec![block("VIP", 1, 0)]), now))
                .contains("count")
        );
        assert!(
            invalid_detail(NewConcert::parse(
                draft(now, vec![block("VIP", 1, -3)]),
                now
            ))
            .contains("count")
        );
        assert!(invalid_detail(NewConcert::parse(draft(now, vec![]), now)).contains("seat blocks"));
        assert!(
            invalid_detail(NewConcert::parse(
                draft(now, vec![block("A", 1, 15_000), block("B", 1, 15_000)]),
                now
            ))
            .contains("at most")
        );

        let mut past = draft(now, vec![block("VIP", 1, 1)]);
        past.schedules[0].starts_at = now - TimeDelta::minutes(1);
        assert!(invalid_detail(NewConcert::parse(past, now)).contains("future"));

        let mut twice = draft(now, vec![block("VIP", 1, 1)]);
        twice.schedules.push(twice.schedules[0].clone());
        assert!(invalid_detail(NewConcert::parse(twice, now)).contains("repeats"));

        let mut none = draft(now, vec![block("VIP", 1, 1)]);
        none.schedules.clear();
        assert!(invalid_detail(NewConcert::parse(none, now)).contains("schedules"));
    }

    #[test]
    fn an_expired_hold_counts_as_available() {
        let now = Utc::now();
        let mut seat = Seat {
            id: SeatId(1),
            schedule_id: ScheduleId(1),
            number: 1,
            grade: "R".into(),
            price: Points::new(10).unwrap(),
            place: SeatPlace::default(),
            state: SeatState::Held {
                holder: UserId(3),
                until: now + TimeDelta::seconds(1),
            },
        };
        assert_eq!(seat.availability(now), Availability::Held);
        assert_eq!(
            seat.availability(now + TimeDelta::seconds(1)),
            Availability::Available
        );
        seat.state = SeatState::Sold { owner: UserId(3) };
        assert_eq!(
            seat.availability(now + TimeDelta::days(1)),
            Availability::Sold
        );
    }
}
