use chrono::{DateTime, Utc};

use crate::kernel::Fault;
use crate::kernel::{PaymentId, Points, PointsError, UserId};

/// The most one charge may add.
pub const MAX_CHARGE: i64 = 10_000_000;
pub const MAX_PAGE: u64 = 100;

/// The kind of a ledger row; the database column holds these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum EntryKind {
    Charge,
    Payment,
    Refund,
}

crate::kernel::stored_name!(EntryKind);

/// One change of a user's balance, as its ledger row names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    pub user: UserId,
    pub kind: EntryKind,
    pub amount: Points,
    pub payment: Option<PaymentId>,
}

impl Posting {
    pub fn charge(user: UserId, amount: Points) -> Self {
        Self {
            user,
            kind: EntryKind::Charge,
            amount,
            payment: None,
        }
    }

    pub fn payment(user: UserId, amount: Points, payment: PaymentId) -> Self {
        Self {
            user,
            kind: EntryKind::Payment,
            amount,
            payment: Some(payment),
        }
    }

    pub fn refund(user: UserId, amount: Points, payment: PaymentId) -> Self {
        Self {
            kind: EntryKind::Refund,
            ..Self::payment(user, amount, payment)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: i64,
    pub kind: EntryKind,
    /// Positive for charges and refunds, negative for payments.
    pub amount: i64,
    pub balance_after: Points,
    pub created_at: DateTime<Utc>,
}

/// A charge amount: positive and at most [`MAX_CHARGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargeAmount(Points);

impl ChargeAmount {
    pub fn parse(amount: i64) -> Result<Self, WalletError> {
        if !(1..=MAX_CHARGE).contains(&amount) {
            return Err(WalletError::InvalidAmount(format!(
                "amount must be between 1 and {MAX_CHARGE}"
            )));
        }
        Points::new(amount)
            .map(Self)
            .map_err(|e: PointsError| WalletError::InvalidAmount(e.to_string()))
    }

    pub fn points(self) -> Points {
        self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("{0}")]
    InvalidAmount(String),
    #[error("the balance may not exceed {} points", Points::MAX)]
    BalanceLimit,
    #[error(transparent)]
    Fault(Fault),
}

crate::kernel::module_error!(WalletError);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_must_be_positive_and_bounded() {
        assert!(ChargeAmount::parse(0).is_err());
        assert!(ChargeAmount::parse(-5).is_err());
        assert!(ChargeAmount::parse(MAX_CHARGE + 1).is_err());
        assert_eq!(ChargeAmount::parse(1_000).unwrap().points().value(), 1_000);
    }
}
