//! Redis plumbing shared by the Redis adapters: telling an outage (503,
//! heals by itself) from a bug.

/// True when Redis could not be reached or did not answer in time.
pub fn is_outage(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_refusal()
        || err.is_timeout()
        || err.is_connection_dropped()
}

/// Lets a module's error type be built from a `RedisError` with `?`.
macro_rules! module_error_from_redis_err {
    ($error:ty) => {
        impl From<redis::RedisError> for $error {
            fn from(err: redis::RedisError) -> Self {
                if $crate::kv::is_outage(&err) {
                    Self::Unavailable(err.into())
                } else {
                    Self::Unexpected(err.into())
                }
            }
        }
    };
}
pub(crate) use module_error_from_redis_err;
