//! The one shape of "either adapter" the composition root picks at start-up
//! for the Redis-backed ports (waiting room, coupon ledger, event bus):
//! Redis in production, in-process in the embedded shape. Each port
//! implements itself for `RedisOrMemory` once, delegating with
//! [`dispatch!`].

/// One of two adapters of a port.
#[derive(Clone)]
pub enum RedisOrMemory<R, M> {
    Redis(R),
    Memory(M),
}

/// Calls the same method on whichever adapter is inside.
macro_rules! dispatch {
    ($self:ident, $adapter:ident => $call:expr) => {
        match $self {
            $crate::redis_or_memory::RedisOrMemory::Redis($adapter) => $call,
            $crate::redis_or_memory::RedisOrMemory::Memory($adapter) => $call,
        }
    };
}
pub(crate) use dispatch;
