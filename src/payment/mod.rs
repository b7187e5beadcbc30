//! Payments and their saga: pay for a hold in one transaction; the
//! reservation module confirms it asynchronously; if it cannot, the payment
//! is refunded through a retried compensation.

pub mod api;
pub mod domain;
pub mod infra;
pub mod ports;
pub mod usecase;
