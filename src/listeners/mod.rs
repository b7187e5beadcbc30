//! Listeners on the event stream: the data-platform exporter (every event as
//! one NDJSON line), the receipt issuer (one receipt per payment) and the
//! user notifications, polled through `api.rs`.

pub mod api;
pub mod domain;
pub mod infra;
pub mod ports;
pub mod usecase;
