//! What can go wrong in any module besides its own business rules: one
//! type every module's error enum wraps (`PaymentError::Fault(..)`), so
//! the tail of every enum, its conversions and its HTTP answer are written
//! once.

use super::{Retryable, StoreError, idempotency::KeyError};

#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// The `Idempotency-Key` was used for a different request: 409
    /// `idempotency_conflict`.
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
    /// A store could not be reached: 503 with `Retry-After`; the service
    /// heals by itself.
    #[error(transparent)]
    Unavailable(anyhow::Error),
    /// A concurrent transaction kept getting in the way, even after
    /// retries: 503 as well.
    #[error(transparent)]
    Conflict(anyhow::Error),
    /// A bug or a failure nobody planned for: 500, logged with its cause.
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

impl Fault {
    /// A failure nobody planned for, told by `message` (an event naming a
    /// row that does not exist, say): 500, or a consumer's retry.
    pub fn unexpected(message: impl Into<String>) -> Self {
        Self::Unexpected(anyhow::Error::msg(message.into()))
    }

    /// A concurrent change got in the way after all: retried like a
    /// database conflict.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(anyhow::Error::msg(message.into()))
    }

    /// A test fake's stored state, or while it plays `down` the outage a
    /// real store answers when it cannot be reached.
    #[cfg(test)]
    pub fn unless_down<S>(
        state: &std::sync::Mutex<S>,
        down: impl FnOnce(&S) -> bool,
    ) -> Result<std::sync::MutexGuard<'_, S>, Self> {
        let state = state.lock().unwrap();
        if down(&state) {
            return Err(Self::Unavailable(anyhow::anyhow!("database down")));
        }
        Ok(state)
    }
}

impl From<StoreError> for Fault {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(cause) => Self::Unavailable(cause),
            StoreError::Conflict(cause) => Self::Conflict(cause),
            StoreError::Unexpected(cause) => Self::Unexpected(cause),
        }
    }
}

impl From<KeyError> for Fault {
    fn from(err: KeyError) -> Self {
        match err {
            KeyError::Reused => Self::KeyReused,
            KeyError::Store(err) => err.into(),
        }
    }
}

impl From<anyhow::Error> for Fault {
    fn from(cause: anyhow::Error) -> Self {
        Self::Unexpected(cause)
    }
}

impl Retryable for Fault {
    fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict(_))
    }
}

/// Gives a module's error enum, which has a `Fault(Fault)` variant, the
/// conversions every use case relies on: a store error, an idempotency key
/// error and an adapter's `anyhow::Error` become its fault, and a conflict
/// is retried ([`Retryable`]).
macro_rules! module_error {
    ($error:ty) => {
        impl From<$crate::kernel::Fault> for $error {
            fn from(fault: $crate::kernel::Fault) -> Self {
                Self::Fault(fault)
            }
        }

        impl From<$crate::kernel::StoreError> for $error {
            fn from(err: $crate::kernel::StoreError) -> Self {
                Self::Fault(err.into())
            }
        }

        impl From<$crate::kernel::idempotency::KeyError> for $error {
            fn from(err: $crate::kernel::idempotency::KeyError) -> Self {
                Self::Fault(err.into())
            }
        }

        impl From<anyhow::Error> for $error {
            fn from(cause: anyhow::Error) -> Self {
                Self::Fault($crate::kernel::Fault::Unexpected(cause))
            }
        }

        impl $crate::kernel::Retryable for $error {
            fn is_conflict(&self) -> bool {
                matches!(self, Self::Fault($crate::kernel::Fault::Conflict(_)))
            }
        }
    };
}
pub(crate) use module_error;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum ShopError {
        #[error("sold out")]
        SoldOut,
        #[error(transparent)]
        Fault(Fault),
    }

    module_error!(ShopError);

    #[test]
    fn every_failure_outside_the_rules_becomes_the_modules_fault() {
        let store: ShopError = StoreError::Conflict(anyhow::anyhow!("deadlock")).into();
        assert!(store.is_conflict());
        let key: ShopError = KeyError::Reused.into();
        assert!(matches!(key, ShopError::Fault(Fault::KeyReused)));
        let adapter: ShopError = anyhow::anyhow!("bad row").into();
        assert!(matches!(adapter, ShopError::Fault(Fault::Unexpected(_))));
        assert_eq!(adapter.to_string(), "bad row", "the cause reads through");
        assert!(!ShopError::SoldOut.is_conflict());
    }
}
