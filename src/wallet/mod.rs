//! The points wallet: a balance that never goes negative, and a ledger row
//! for every change.

pub mod api;
pub mod domain;
pub mod infra;
pub mod ports;
pub mod usecase;
