pub mod consumer;
pub mod db;
pub mod memory;
pub mod redis;
pub mod relay;

use std::time::Duration;

use crate::{
    kernel::events::BusMessage,
    outbox::{
        domain::{Delivery, GroupStatus},
        ports::EventBus,
    },
};

/// The bus the composition root picked: Redis in production, in-process in
/// the embedded shape.
#[derive(Clone)]
pub enum AnyBus {
    Redis(redis::RedisBus),
    Memory(memory::MemoryBus),
}

macro_rules! delegate {
    ($self:ident, $bus:ident => $call:expr) => {
        match $self {
            AnyBus::Redis($bus) => $call,
            AnyBus::Memory($bus) => $call,
        }
    };
}

impl EventBus for AnyBus {
    fn is_durable(&self) -> bool {
        delegate!(self, bus => bus.is_durable())
    }

    async fn publish(&self, messages: &[BusMessage]) -> anyhow::Result<()> {
        delegate!(self, bus => bus.publish(messages).await)
    }

    async fn ensure_group(&self, group: &str) -> anyhow::Result<()> {
        delegate!(self, bus => bus.ensure_group(group).await)
    }

    async fn fetch(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> anyhow::Result<Vec<Delivery>> {
        delegate!(self, bus => bus.fetch(group, consumer, count, block).await)
    }

    async fn reclaim(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> anyhow::Result<Vec<Delivery>> {
        delegate!(self, bus => bus.reclaim(group, consumer, min_idle, count).await)
    }

    async fn ack(&self, group: &str, ids: &[String]) -> anyhow::Result<()> {
        delegate!(self, bus => bus.ack(group, ids).await)
    }

    async fn groups(&self) -> anyhow::Result<Vec<GroupStatus>> {
        delegate!(self, bus => bus.groups().await)
    }
}
