//! The bus as the outbox's use cases see it in their tests: only its
//! groups view.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    kernel::events::BusMessage,
    outbox::{
        domain::{Delivery, GroupStatus},
        ports::EventBus,
    },
};

/// Answers `groups`; `down` makes it fail. Nothing else is used.
#[derive(Clone, Default)]
pub struct FakeBus {
    pub groups: Arc<Mutex<Vec<GroupStatus>>>,
    pub down: bool,
}

impl FakeBus {
    pub fn with(groups: Vec<GroupStatus>) -> Self {
        Self {
            groups: Arc::new(Mutex::new(groups)),
            down: false,
        }
    }
}

impl EventBus for FakeBus {
    fn is_durable(&self) -> bool {
        true
    }

    async fn publish(&self, _: &[BusMessage]) -> anyhow::Result<Vec<Option<String>>> {
        unimplemented!("the use cases do not publish")
    }

    async fn ensure_group(&self, _: &str) -> anyhow::Result<()> {
        unimplemented!("the use cases do not create groups")
    }

    async fn fetch(
        &self,
        _: &str,
        _: &str,
        _: usize,
        _: Duration,
    ) -> anyhow::Result<Vec<Delivery>> {
        unimplemented!("the use cases do not consume")
    }

    async fn reclaim(
        &self,
        _: &str,
        _: &str,
        _: Duration,
        _: usize,
    ) -> anyhow::Result<Vec<Delivery>> {
        unimplemented!("the use cases do not consume")
    }

    async fn ack(&self, _: &str, _: &[String]) -> anyhow::Result<()> {
        unimplemented!("the use cases do not consume")
    }

    async fn groups(&self) -> anyhow::Result<Vec<GroupStatus>> {
        if self.down {
            anyhow::bail!("redis down");
        }
        Ok(self.groups.lock().unwrap().clone())
    }
}
