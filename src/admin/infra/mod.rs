pub mod db;
pub mod webhook;
