//! The waiting room's rules, free of any store: settings and opening
//! rules, places and poll answers, the scheduler's step, room stats, the
//! events a room records, poll pacing and the module's error.

mod error;
mod events;
#[cfg(test)]
mod fixtures;
mod opening;
mod pacing;
mod place;
mod settings;
mod stats;
mod tick;

pub use error::QueueError;
pub use events::{QueueEvent, QueueEventKind};
pub use opening::{DRAW_RANGE, Lineup, QueueingMethod};
pub use pacing::{POLL_BURST, PollPacing};
pub use place::{Entry, MAX_POLL_AFTER_SECONDS, Place, QueuePass, QueueStatus};
pub use settings::{
    ACTIVE_TTL_RANGE, HEARTBEAT_GRACE_RANGE, MAX_ACTIVE, MAX_ADMIT_PER_SECOND, QueueSettings,
    SettingsChange,
};
pub use stats::{DEFAULT_ROOM_PAGE, MAX_ROOM_PAGE, QueueStats};
pub use tick::{AdmissionCredit, AdmissionPlan, DEFAULT_ROOM_IDLE, RoomActivity, TickOutcome};
