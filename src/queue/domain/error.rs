//! The waiting room's error.

use crate::kernel::ConcertId;
use crate::kernel::Fault;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{0}")]
    Invalid(String),
    #[error("concert {0} does not exist")]
    ConcertNotFound(ConcertId),
    #[error("the queue token is missing, malformed, forged or expired")]
    BadToken,
    #[error("the queue token belongs to another user")]
    NotYourToken,
    #[error("the queue token is for concert {token}, not concert {wanted}")]
    WrongConcert { token: ConcertId, wanted: ConcertId },
    #[error("the waiting room of concert {0} is closed to new arrivals")]
    Closed(ConcertId),
    #[error(
        "you have not been admitted from the waiting room of concert {0} (or your turn has ended)"
    )]
    NotAdmitted(ConcertId),
    /// The token polls far faster than it was told to; answered from this
    /// instance's memory, without asking the store.
    #[error("this queue token polls faster than told; poll again in {} ms", .0.as_millis())]
    PollingTooFast(std::time::Duration),
    #[error(transparent)]
    Fault(Fault),
}

crate::kernel::module_error!(QueueError);
