//! Identity: bearer JWTs carrying a user (our id, or an identity
//! provider's subject mapped to one) and a role.

pub mod api;
pub mod domain;
pub mod infra;
pub mod ports;
pub mod usecase;
