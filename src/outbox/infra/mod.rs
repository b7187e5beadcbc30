pub mod audit;
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
    redis_or_memory::{RedisOrMemory, dispatch},
};

/// The bus the composition root picked: Redis in production, in-process in
/// the embedded shape.
pub type AnyBus = RedisOrMemory<redis::RedisBus, memory::MemoryBus>;

impl<R: EventBus, M: EventBus> EventBus for RedisOrMemory<R, M> {
    fn is_durable(&self) -> bool {
        dispatch!(self, bus => bus.is_durable())
    }

    fn partitions(&self) -> u16 {
        dispatch!(self, bus => bus.partitions())
    }

    fn partition(&self, p: u16) -> Self {
        match self {
            Self::Redis(bus) => Self::Redis(bus.partition(p)),
            Self::Memory(bus) => Self::Memory(bus.partition(p)),
        }
    }

    async fn publish(&self, messages: &[BusMessage]) -> anyhow::Result<Vec<Option<String>>> {
        dispatch!(self, bus => bus.publish(messages).await)
    }

    async fn ensure_group(&self, group: &str) -> anyhow::Result<()> {
        dispatch!(self, bus => bus.ensure_group(group).await)
    }

    async fn trim(&self) -> anyhow::Result<Vec<String>> {
        dispatch!(self, bus => bus.trim().await)
    }

    async fn fetch(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> anyhow::Result<Vec<Delivery>> {
        dispatch!(self, bus => bus.fetch(group, consumer, count, block).await)
    }

    async fn reclaim(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> anyhow::Result<Vec<Delivery>> {
        dispatch!(self, bus => bus.reclaim(group, consumer, min_idle, count).await)
    }

    async fn ack(&self, group: &str, ids: &[String]) -> anyhow::Result<()> {
        dispatch!(self, bus => bus.ack(group, ids).await)
    }

    async fn groups(&self) -> anyhow::Result<Vec<GroupStatus>> {
        dispatch!(self, bus => bus.groups().await)
    }

    async fn own(&self, group: &str, consumer: &str, ttl: Duration) -> anyhow::Result<bool> {
        dispatch!(self, bus => bus.own(group, consumer, ttl).await)
    }

    async fn disown(&self, group: &str, consumer: &str) -> anyhow::Result<()> {
        dispatch!(self, bus => bus.disown(group, consumer).await)
    }

    async fn take_over(&self, group: &str, consumer: &str) -> anyhow::Result<Vec<Delivery>> {
        dispatch!(self, bus => bus.take_over(group, consumer).await)
    }
}
