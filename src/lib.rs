//! boxoffice: a backend for flash-crowd ticket sales and first-come-first-
//! served coupons. One folder per business module (domain, ports, use cases,
//! HTTP controllers, adapters); `app` wires them together.

pub mod admin;
pub mod app;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod coupon;
pub mod db;
pub mod kernel;
pub mod listeners;
pub mod outbox;
pub mod payment;
pub mod queue;
pub mod redis_client;
pub mod redis_or_memory;
pub mod reservation;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod testing;
pub mod ticket;
pub mod wallet;
pub mod web;
pub mod worker;
