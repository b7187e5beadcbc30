pub mod handlers;
pub mod receipts;
pub mod sink;
