//! The listeners as consumer-runner handlers.

use futures::{FutureExt, future::BoxFuture};
use sea_orm::DatabaseTransaction;

use super::receipts::store_receipt;
use crate::{
    kernel::events::{EventEnvelope, types},
    listeners::{
        domain::{DATA_PLATFORM_CONSUMER, RECEIPTS_CONSUMER},
        ports::{DataPlatformSink, ReceiptProvider},
        usecase,
    },
    outbox::infra::consumer::EventHandler,
};

pub struct DataPlatformExporter<S> {
    sink: S,
}

impl<S> DataPlatformExporter<S> {
    pub fn new(sink: S) -> Self {
        Self { sink }
    }
}

impl<S: DataPlatformSink> EventHandler for DataPlatformExporter<S> {
    fn name(&self) -> &'static str {
        DATA_PLATFORM_CONSUMER
    }

    fn handles(&self, _event_type: &str) -> bool {
        true
    }

    fn handle<'a>(
        &'a self,
        _txn: &'a DatabaseTransaction,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        usecase::export_event(&self.sink, event).boxed()
    }
}

pub struct ReceiptIssuer<P> {
    provider: P,
}

impl<P> ReceiptIssuer<P> {
    pub fn new(provider: P) -> Self {
        Self { provider }
    }
}

impl<P: ReceiptProvider> EventHandler for ReceiptIssuer<P> {
    fn name(&self) -> &'static str {
        RECEIPTS_CONSUMER
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == types::PAYMENT_COMPLETED
    }

    fn handle<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let receipt = usecase::issue_receipt(&self.provider, event).await?;
            store_receipt(txn, &receipt, event.event_id, chrono::Utc::now()).await?;
            metrics::counter!("receipts_issued_total").increment(1);
            Ok(())
        }
        .boxed()
    }
}
