//! The unit-of-work port: a use case that changes several aggregates at
//! once (pay: claim the hold, debit the wallet, record the payment, append
//! the event) begins one transaction here and calls each module's
//! transaction-scoped repository trait on it. Infra implements it over a
//! database transaction; use-case tests over plain memory. Dropping a
//! transaction without committing it undoes everything done through it.

use std::future::Future;

use super::StoreError;

pub trait UnitOfWork: Clone + Send + Sync + 'static {
    type Tx: Transaction;

    fn begin(&self) -> impl Future<Output = Result<Self::Tx, StoreError>> + Send;
}

pub trait Transaction: Send + 'static {
    fn commit(self) -> impl Future<Output = Result<(), StoreError>> + Send;
}
