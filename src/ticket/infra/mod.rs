pub mod codes;
pub mod db;
pub mod keys;
pub mod qr;
