pub mod compensation;
pub mod db;
