//! The one integration test binary: real HTTP against a real server on a
//! fresh database (SQLite, or PostgreSQL when `BOXOFFICE_TEST_DATABASE=postgres`).

mod alerts;
mod auth;
mod bus_contract;
mod catalog;
mod cli;
mod cluster;
mod coupon_ledger_contract;
mod coupons;
mod crash;
mod delivery;
mod demo_page;
mod door;
mod edge;
mod errors;
mod events;
mod failover;
// Needs `--features failpoints`; scripts/test runs it on its own.
#[cfg(feature = "failpoints")]
mod failpoints;
mod health;
mod helpers;
mod identity;
mod instances;
mod limits;
mod openapi;
mod orders;
mod outage;
mod processes;
mod queue;
mod queue_contract;
mod retention;
mod sales;
mod security;
mod tickets;
mod traces;
mod transfers;
mod waitlist;
