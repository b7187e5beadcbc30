//! The outbox in the world: events appended inside a transaction, and a
//! relay wake-up counter.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::MemTx;
use crate::{
    kernel::{
        StoreError,
        events::{NewEvent, RelayWake},
    },
    outbox::ports::OutboxWriter,
};

impl OutboxWriter for MemTx {
    async fn append(&mut self, events: Vec<NewEvent>, _: DateTime<Utc>) -> Result<(), StoreError> {
        self.check()?;
        self.work.outbox.extend(events);
        Ok(())
    }
}

/// Counts relay wake-ups.
#[derive(Clone, Default)]
pub struct Wakes(Arc<Mutex<u32>>);

impl Wakes {
    pub fn count(&self) -> u32 {
        *self.0.lock().expect("wakes")
    }
}

impl RelayWake for Wakes {
    fn wake(&self) {
        *self.0.lock().expect("wakes") += 1;
    }
}
