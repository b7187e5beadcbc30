//! The listeners: the data-platform export, receipts and user
//! notifications, each a consumer of the event stream.

mod export;
#[cfg(test)]
mod fake;
mod listening;
mod notifications;
mod receipts;

pub use export::{DataPlatformExporter, export_event};
pub use listening::{Listener, Listening};
pub use notifications::{
    MAX_NOTIFICATION_PAGE, NotificationPage, NotificationService, Notifier, notify,
};
pub use receipts::{ReceiptIssuer, cancel_receipt, issue_receipt, record_receipt};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        kernel::SystemClock,
        listeners::{
            domain::RECEIPTS_CONSUMER,
            usecase::fake::{FakeProvider, FakeSink, FakeTx},
        },
        outbox::ports::EventHandler,
    };

    /// The three consumer groups side by side: which events each one takes.
    #[test]
    fn each_listener_takes_the_events_it_is_for() {
        let exporter = DataPlatformExporter::new(FakeSink::default());
        let receipts = ReceiptIssuer::new(FakeProvider::default(), SystemClock);
        let notifier = Notifier::new(SystemClock);
        assert!(EventHandler::<FakeTx>::handles(&exporter, "AnythingAtAll"));
        assert!(EventHandler::<FakeTx>::handles(
            &receipts,
            "PaymentCompleted"
        ));
        assert!(
            EventHandler::<FakeTx>::handles(&receipts, "PaymentRefunded"),
            "a refund voids the receipt"
        );
        assert!(!EventHandler::<FakeTx>::handles(
            &receipts,
            "PaymentConfirmed"
        ));
        assert!(EventHandler::<FakeTx>::handles(
            &notifier,
            "ReservationExpired"
        ));
        assert!(!EventHandler::<FakeTx>::handles(
            &notifier,
            "PaymentCompleted"
        ));
        assert_eq!(EventHandler::<FakeTx>::name(&receipts), RECEIPTS_CONSUMER);
    }
}
