//! Concerts, their schedules (performances) and the seats of each schedule.

pub mod api;
pub mod domain;
pub mod infra;
pub mod ports;
pub mod usecase;
