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

/// Writes each async method, given its signature on one line, as the same
/// call on whichever adapter is inside: the port's signatures are written
/// once more here, not once more with a body each.
macro_rules! forward_to_the_adapter {
    ($(async fn $method:ident(&self $(, $arg:ident: $ty:ty)*) -> $answer:ty;)*) => {
        $(
            async fn $method(&self $(, $arg: $ty)*) -> $answer {
                dispatch!(self, bus => bus.$method($($arg),*).await)
            }
        )*
    };
}

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

    forward_to_the_adapter! {
        async fn publish(&self, messages: &[BusMessage]) -> anyhow::Result<Vec<Option<String>>>;
        async fn ensure_group(&self, group: &str) -> anyhow::Result<()>;
        async fn trim(&self) -> anyhow::Result<Vec<String>>;
        async fn fetch(&self, group: &str, consumer: &str, count: usize, block: Duration) -> anyhow::Result<Vec<Delivery>>;
        async fn reclaim(&self, group: &str, consumer: &str, min_idle: Duration, count: usize) -> anyhow::Result<Vec<Delivery>>;
        async fn ack(&self, group: &str, ids: &[String]) -> anyhow::Result<()>;
        async fn groups(&self) -> anyhow::Result<Vec<GroupStatus>>;
        async fn own(&self, group: &str, consumer: &str, ttl: Duration) -> anyhow::Result<bool>;
        async fn disown(&self, group: &str, consumer: &str) -> anyhow::Result<()>;
        async fn take_over(&self, group: &str, consumer: &str) -> anyhow::Result<Vec<Delivery>>;
    }
}
