//! The catalog room's flows: concerts (created, seeded, listed, looked up),
//! their schedules with availability counts, and each schedule's seat map.

mod concerts;
#[cfg(test)]
mod fake;
mod schedules;
mod seat_map;

use std::time::Duration;

pub use seat_map::Renderings;
use seat_map::SeatMapKey;

use super::{domain::SeatListing, ports::CatalogPorts};
use crate::kernel::{ConcertId, ScheduleId, cache::Cache, keyed::KeyedLocks, snapshot::Snapshots};

/// How long a schedule's count of available seats is served before it is
/// counted again (unless told otherwise): the schedules list shows
/// availability at most this old, and costs the database one count per
/// schedule per this period, however many read it.
pub const AVAILABILITY_TTL: Duration = Duration::from_secs(1);

/// How many schedules' counts one process keeps.
const AVAILABILITY_KEPT: u64 = 100_000;

#[derive(Clone)]
pub struct CatalogService<P: CatalogPorts> {
    repo: P::Repo,
    clock: P::Clock,
    wake: P::Wake,
    /// Seat-map pages read lately (off until [`CatalogService::snapshotting`]).
    seat_maps: Snapshots<SeatMapKey, SeatListing>,
    /// How long snapshots live (zero: none), and the bytes the pages
    /// rendered from them may weigh ([`CatalogService::renderings`]).
    snapshot_ttl: Duration,
    rendering_budget: usize,
    /// Available seats per schedule, counted lately.
    availability: Cache<ScheduleId, u64>,
    /// One count at a time per concert: concurrent readers of a page whose
    /// counts expired wait for one query instead of each running it.
    counting: KeyedLocks<ConcertId>,
}

fn availability_cache(ttl: Duration) -> Cache<ScheduleId, u64> {
    Cache::new(AVAILABILITY_KEPT, ttl)
}

impl<P: CatalogPorts> CatalogService<P> {
    pub fn new(repo: P::Repo, clock: P::Clock, wake: P::Wake) -> Self {
        Self {
            repo,
            clock,
            wake,
            seat_maps: Snapshots::new(Duration::ZERO, 0),
            snapshot_ttl: Duration::ZERO,
            rendering_budget: 0,
            availability: availability_cache(AVAILABILITY_TTL),
            counting: KeyedLocks::default(),
        }
    }

    /// Keeps each schedule's count of available seats `ttl` (tests).
    pub fn counting_availability_every(self, ttl: Duration) -> Self {
        Self {
            availability: availability_cache(ttl),
            ..self
        }
    }

    /// Serves seat-map pages from snapshots up to `ttl` old (see
    /// `kernel::snapshot`): a hold, release, sale or expiry committed on
    /// this instance retires its schedule's pages at once; another
    /// instance's change shows within `ttl`. The snapshots and the pages
    /// rendered from them weigh `budget` bytes at most together (half
    /// each), however many distinct pages clients ask for; the least
    /// recently read go first.
    pub fn snapshotting(self, ttl: Duration, budget: usize) -> Self {
        Self {
            seat_maps: Snapshots::new(ttl, budget / 2),
            snapshot_ttl: ttl,
            rendering_budget: budget / 2,
            ..self
        }
    }
}
