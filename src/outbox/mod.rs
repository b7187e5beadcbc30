//! The event backbone: the transactional outbox, the relay that moves it to
//! the event bus (Redis Streams or in-process), the consumer runner with its
//! inbox and dead letters, and the admin views over all of it.

pub mod api;
pub mod domain;
pub mod infra;
pub mod ports;
pub mod usecase;
