//! Tickets: each seat the payment saga sells gets a ticket whose code is a
//! compact JWS signed with Ed25519, verifiable offline with the public keys
//! of `GET /v1/tickets/keys`; a cancelled ticket becomes void.

pub mod api;
pub mod domain;
pub mod infra;
pub mod ports;
pub mod usecase;
