//! The one integration test binary: real HTTP against a real server on a
//! fresh database (SQLite, or PostgreSQL when `BOXOFFICE_TEST_DATABASE=postgres`).

mod auth;
mod catalog;
mod cli;
mod errors;
mod health;
mod helpers;
mod openapi;
