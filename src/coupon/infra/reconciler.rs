//! Runs the ledger reconciler on every live campaign now and then, and
//! tells the operators when it had to repair something.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    coupon::{domain::CouponError, ports::CouponPorts, usecase::CouponService},
    kernel::alerts::{AlertSink, NewAlert, Severity},
    worker::{Pass, periodically},
};

pub async fn run<P: CouponPorts>(
    service: CouponService<P>,
    alerts: Arc<dyn AlertSink>,
    every: Duration,
    cancel: CancellationToken,
) {
    let (service, alerts) = (&service, &alerts);
    periodically("coupon reconciler", every, cancel, || async move {
        let reports = service.reconcile_all().await?;
        for report in reports {
            let coupon = report.coupon.map(|coupon| coupon.value()).unwrap_or_default();
            let message = if report.rebuilt {
                format!(
                    "coupon {coupon}: the issue ledger was missing and was rebuilt from the database"
                )
            } else {
                format!(
                    "coupon {coupon}: ledger drift repaired ({} holder(s) added from the database, {} orphan entr(ies) removed)",
                    report.added.len(),
                    report.removed.len()
                )
            };
            tracing::warn!(coupon, "{message}");
            alerts
                .raise(NewAlert {
                    severity: Severity::Warning,
                    source: "coupons".into(),
                    message,
                })
                .await;
        }
        Ok::<_, CouponError>(Pass::Idle)
    })
    .await;
}
