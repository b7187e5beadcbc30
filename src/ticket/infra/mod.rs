pub mod codes;
pub mod db;
pub mod qr;
