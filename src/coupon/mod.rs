//! First-come-first-served coupons: a Redis ledger answers the flood, only
//! winners touch the database, and redemption runs as a polled job.

pub mod api;
pub mod domain;
pub mod infra;
pub mod ports;
pub mod usecase;
