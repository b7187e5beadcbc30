//! Listeners on the event stream: the data-platform exporter (every event as
//! one NDJSON line) and the receipt issuer (one receipt per payment).
//! They have no HTTP endpoints of their own, so no `api.rs`.

pub mod domain;
pub mod infra;
pub mod ports;
pub mod usecase;
