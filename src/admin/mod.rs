//! Operator tooling: admin alerts (stored, listed, acknowledged, forwarded
//! to a webhook).

pub mod api;
pub mod domain;
pub mod infra;
pub mod ports;
pub mod usecase;
