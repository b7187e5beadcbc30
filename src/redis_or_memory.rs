//! The one shape of "either adapter" the composition root picks at start-up
//! for the Redis-backed ports (waiting room, coupon ledger, event bus):
//! Redis in production, in-process in the embedded shape. Each port
//! implements itself for `RedisOrMemory` once, delegating with
//! [`forward!`] (or [`dispatch!`] for a body of its own).

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

/// Writes the port methods of an `impl Port for RedisOrMemory<R, M>` from
/// their signatures, one a line: each passes its arguments on to the same
/// method of whichever adapter is inside (awaiting it when `async`).
///
/// ```ignore
/// impl<R: Port, M: Port> Port for RedisOrMemory<R, M> {
///     forward! {
///         async fn get(&self, id: Id) -> Result<Thing, Error>;
///         fn is_durable(&self) -> bool;
///     }
/// }
/// ```
macro_rules! forward {
    () => {};
    (async fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; $($rest:tt)*) => {
        async fn $name(&self $(, $arg: $ty)*) -> $ret {
            $crate::redis_or_memory::dispatch!(self, adapter => adapter.$name($($arg),*).await)
        }
        $crate::redis_or_memory::forward!($($rest)*);
    };
    (fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; $($rest:tt)*) => {
        fn $name(&self $(, $arg: $ty)*) -> $ret {
            $crate::redis_or_memory::dispatch!(self, adapter => adapter.$name($($arg),*))
        }
        $crate::redis_or_memory::forward!($($rest)*);
    };
}
pub(crate) use forward;

#[cfg(test)]
mod tests {
    use super::*;

    trait Named {
        fn name(&self) -> &'static str;
        async fn greet(&self, whom: &str, times: usize) -> String;
    }

    struct Loud;
    struct Quiet;

    impl Named for Loud {
        fn name(&self) -> &'static str {
            "loud"
        }
        async fn greet(&self, whom: &str, times: usize) -> String {
            format!("HELLO {whom}").repeat(times)
        }
    }

    impl Named for Quiet {
        fn name(&self) -> &'static str {
            "quiet"
        }
        async fn greet(&self, whom: &str, times: usize) -> String {
            format!("hello {whom}").repeat(times)
        }
    }

    impl<R: Named, M: Named> Named for RedisOrMemory<R, M> {
        forward! {
            fn name(&self) -> &'static str;
            async fn greet(&self, whom: &str, times: usize) -> String;
        }
    }

    #[test]
    fn a_plain_method_is_answered_by_the_adapter_inside() {
        assert_eq!(RedisOrMemory::<Loud, Quiet>::Redis(Loud).name(), "loud");
        assert_eq!(RedisOrMemory::<Loud, Quiet>::Memory(Quiet).name(), "quiet");
    }

    #[tokio::test]
    async fn an_async_method_gets_every_argument_and_is_awaited() {
        let redis = RedisOrMemory::<Loud, Quiet>::Redis(Loud);
        assert_eq!(redis.greet("ann", 2).await, "HELLO annHELLO ann");
        let memory = RedisOrMemory::<Loud, Quiet>::Memory(Quiet);
        assert_eq!(memory.greet("bo", 1).await, "hello bo");
    }
}
