pub mod consumer;
pub mod db;
pub mod sweeper;
