pub mod db;
pub mod sweeper;
