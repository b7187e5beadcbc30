//! Seat holds: one conditional UPDATE decides who holds a seat; holds
//! expire (lazily, and by a sweeper); a paid hold is confirmed by the
//! payment saga.

pub mod api;
pub mod domain;
pub mod infra;
pub mod ports;
pub mod usecase;
