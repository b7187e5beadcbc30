//! An alert sink that keeps every alert raised, for tests to read.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use crate::kernel::alerts::{AlertSink, NewAlert};

/// Collects raised alerts.
#[derive(Clone, Default)]
pub struct RaisedAlerts(Arc<Mutex<Vec<NewAlert>>>);

impl RaisedAlerts {
    pub fn all(&self) -> Vec<NewAlert> {
        self.0.lock().expect("alerts").clone()
    }
}

impl AlertSink for RaisedAlerts {
    fn raise(&self, alert: NewAlert) -> BoxFuture<'_, ()> {
        self.0.lock().expect("alerts").push(alert);
        Box::pin(async {})
    }
}
