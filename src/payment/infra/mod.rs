pub mod compensation;
pub mod consumer;
pub mod db;
