pub mod codes;
pub mod db;
pub mod door;
pub mod keys;
pub mod qr;
