pub mod notifications;
pub mod receipts;
pub mod sink;
