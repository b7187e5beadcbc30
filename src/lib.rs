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
pub mod kv;
pub mod listeners;
pub mod outbox;
pub mod payment;
pub mod queue;
pub mod reservation;
pub mod switch;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod testing;
pub mod wallet;
pub mod web;
pub mod worker;
