//! The virtual waiting room: one queue per concert, signed queue tokens,
//! positions and heartbeats, admission at a safe rate, and the guard that
//! keeps everyone not yet admitted away from the seat map.

pub mod api;
pub mod domain;
pub mod infra;
pub mod ports;
pub mod usecase;
