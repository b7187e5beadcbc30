//! Identity: bearer JWTs (HS256) carrying a user id and a role.

pub mod api;
pub mod domain;
pub mod infra;
pub mod ports;
pub mod usecase;
