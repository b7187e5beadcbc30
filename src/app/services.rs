//! Which use cases exist, over which adapters. The server and the OpenAPI
//! document both build them here.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use chrono::TimeDelta;

use super::adapters::Adapters;
use crate::{
    admin::{infra::db::DbAlerts, usecase::AlertService},
    catalog::{infra::db::DbCatalog, ports::CatalogAdapters, usecase::CatalogService},
    config::Settings,
    coupon::{
        infra::{
            AnyCouponLedger,
            db::DbCoupons,
            winner_queue::{WinnerSender, winner_queue},
        },
        ports::CouponAdapterTypes,
        usecase::{CouponAdapters, CouponService, LedgerIssuer},
    },
    db::DbUnitOfWork,
    kernel::SystemClock,
    listeners::{infra::notifications::DbNotifications, usecase::NotificationService},
    outbox::{
        infra::{AnyBus, db::DbOutbox, relay::RelayWaker},
        usecase::EventPipeline,
    },
    payment::{
        infra::db::DbPayments,
        ports::PaymentAdapters,
        usecase::{Compensations, PaymentService},
    },
    queue::{
        domain::{PollPacing, QueueSettings},
        infra::{
            AnyQueueStore,
            catalog::CachedDirectory,
            db::{CachedSettings, DbQueueSettings},
            tokens::JwtQueueTokens,
        },
        ports::QueueAdapters,
        usecase::QueueService,
    },
    reservation::{
        domain::HoldPolicy, infra::db::DbReservations, ports::ReservationAdapters,
        usecase::ReservationService,
    },
    ticket::{
        infra::{
            codes::TicketKey,
            db::{DbTicketKeys, DbTickets},
            door::DbDoor,
            keys::DbTicketCodes,
            qr::QrRenderer,
        },
        ports::TicketAdapters,
        usecase::TicketService,
    },
    wallet::{infra::db::DbWallets, ports::WalletAdapters, usecase::WalletService},
    web::limits::RateLimits,
};

pub type Alerts = AlertService<DbAlerts, SystemClock>;
pub type Catalog = CatalogService<CatalogWiring>;
/// The catalog over its tables, waking the relay.
pub type CatalogWiring = CatalogAdapters<DbCatalog, SystemClock, RelayWaker>;
pub type Queue = QueueService<QueueWiring>;
/// The waiting room's adapters: the Redis-or-memory store, and settings and
/// concerts read through short caches.
pub type QueueWiring = QueueAdapters<
    AnyQueueStore,
    CachedSettings<DbQueueSettings>,
    CachedDirectory<Catalog>,
    SystemClock,
>;
pub type Reservations = ReservationService<ReservationWiring>;
/// The reservation use cases over the database, waking the relay.
pub type ReservationWiring =
    ReservationAdapters<DbUnitOfWork, DbReservations, DbCatalog, SystemClock, RelayWaker>;
pub type Wallets = WalletService<WalletWiring>;
/// The wallet over the database, waking the relay.
pub type WalletWiring = WalletAdapters<DbUnitOfWork, DbWallets, SystemClock, RelayWaker>;
pub type Payments = PaymentService<PaymentWiring>;
pub type CompensationRunner = Compensations<PaymentWiring>;
/// The payment use cases' and the compensation runner's adapters: the
/// payment module's tables, with schedules read through the catalog's
/// ports.
pub type PaymentWiring =
    PaymentAdapters<DbUnitOfWork, DbPayments<DbCatalog>, DbReservations, SystemClock, RelayWaker>;
pub type Coupons = CouponService<CouponWiring>;
/// The coupon room's adapters.
pub type CouponWiring = CouponAdapterTypes<
    DbUnitOfWork,
    DbCoupons,
    AnyCouponLedger,
    SystemClock,
    RelayWaker,
    WinnerSender,
>;
pub type Events = EventPipeline<DbOutbox, AnyBus, RelayWaker, SystemClock>;
pub type Tickets = TicketService<TicketWiring>;
/// Tickets over their table, signed with the stored keys (or the key file).
pub type TicketWiring = TicketAdapters<
    DbUnitOfWork,
    DbTickets,
    DbTicketCodes,
    QrRenderer,
    SystemClock,
    RelayWaker,
    DbDoor,
>;

#[derive(Clone)]
pub struct Services {
    pub alerts: Alerts,
    pub catalog: Catalog,
    pub queue: Queue,
    pub reservations: Reservations,
    pub wallets: Wallets,
    pub payments: Payments,
    pub compensations: CompensationRunner,
    pub coupons: Coupons,
    pub events: Events,
    pub notifications: NotificationService<DbNotifications>,
    pub tickets: Tickets,
    /// Abuse limits on the operations a crowd hammers.
    pub limits: RateLimits,
}

impl Services {
    pub fn new(a: &Adapters, settings: &Settings) -> anyhow::Result<Self> {
        let db = &a.db;
        let (per_user, per_ip) = (settings.rate_limit_per_user, settings.rate_limit_per_ip);
        let limits = match &a.redis {
            Some(conn) => {
                RateLimits::shared(conn.clone(), &settings.redis_prefix, per_user, per_ip)
            }
            None => RateLimits::local(per_user, per_ip),
        };
        let alerts = AlertService::new(
            DbAlerts::new(db.clone()),
            SystemClock,
            settings.alert_webhook_url.is_some(),
        );
        let catalog = Catalog::new(DbCatalog::new(db.clone()), SystemClock, a.waker.clone())
            .snapshotting(
                Duration::from_millis(settings.seat_map_snapshot_ms),
                usize::try_from(settings.seat_map_cache_mb << 20).unwrap_or(usize::MAX),
            );
        let queue = Queue::new(
            a.queue_store.clone(),
            CachedSettings::new(DbQueueSettings::new(db.clone()), Duration::from_secs(1)),
            CachedDirectory::new(catalog.clone()),
            SystemClock,
            Arc::new(JwtQueueTokens::new(&settings.queue_token_key())),
            queue_defaults(settings)?,
        )
        .pacing_polls(PollPacing::every(Duration::from_millis(
            settings.queue_poll_pace_ms,
        )));
        let reservations = ReservationService::new(
            a.uow.clone(),
            DbReservations::new(db.clone()),
            DbCatalog::new(db.clone()),
            SystemClock,
            a.waker.clone(),
            HoldPolicy {
                hold_minutes: settings.hold_minutes,
                per_user_limit: settings.hold_limit,
                sales_close_before_minutes: settings.sales_close_minutes_before_start,
            },
        );
        let wallets = Wallets::new(
            a.uow.clone(),
            DbWallets::new(db.clone()),
            SystemClock,
            a.waker.clone(),
        );
        let payments = PaymentService::new(
            a.uow.clone(),
            DbPayments::new(db.clone(), DbCatalog::new(db.clone())),
            DbReservations::new(db.clone()),
            SystemClock,
            a.waker.clone(),
        )
        .with_cancel_cutoff(chrono::TimeDelta::minutes(
            settings.cancel_cutoff_minutes.into(),
        ))
        .with_sales_close(chrono::TimeDelta::minutes(
            settings.sales_close_minutes_before_start.into(),
        ));
        let compensations = payments.compensation_runner(
            Arc::new(alerts.clone()),
            Duration::from_millis(settings.compensation_retry_ms),
        );
        let coupon_adapters = CouponAdapters::<CouponWiring> {
            uow: a.uow.clone(),
            repo: DbCoupons::new(db.clone()),
            ledger: a.coupon_ledger.clone(),
            clock: SystemClock,
        };
        let issuer = Arc::new(LedgerIssuer::new(coupon_adapters.clone(), winner_queue()));
        #[cfg(feature = "bench-strategies")]
        let issuer = bench_issuer(issuer, a, settings)?;
        let coupons = Coupons::new(
            coupon_adapters,
            a.waker.clone(),
            TimeDelta::seconds(settings.coupon_reconcile_grace_seconds as i64),
            issuer,
        );
        let events = EventPipeline::new(
            DbOutbox::new(db.clone()),
            a.bus.clone(),
            a.waker.clone(),
            SystemClock,
        );
        Ok(Self {
            alerts,
            catalog,
            queue,
            reservations,
            wallets,
            payments,
            compensations,
            coupons,
            events,
            notifications: NotificationService::new(DbNotifications::new(db.clone())),
            tickets: Tickets::new(
                a.uow.clone(),
                DbTickets::new(db.clone()),
                DbTicketCodes::new(DbTicketKeys::new(db.clone()), ticket_key_file(settings)?),
                QrRenderer,
                SystemClock,
                a.waker.clone(),
                DbDoor::new(db.clone()),
            ),
            limits,
        })
    }
}

/// The bench build's coupon lock strategy and sold-out memory
/// (`--coupon-lock-strategy`, `--coupon-sold-out-memory`) around the
/// ledger's issuer.
#[cfg(feature = "bench-strategies")]
fn bench_issuer(
    ledger: Arc<dyn crate::coupon::ports::CouponIssuer>,
    a: &Adapters,
    settings: &Settings,
) -> anyhow::Result<Arc<dyn crate::coupon::ports::CouponIssuer>> {
    use crate::coupon::infra::locks;
    let strategy = settings.coupon_lock_strategy;
    let locked = locks::issuer(
        strategy,
        Arc::new(crate::coupon::usecase::RecordWinner),
        &a.uow,
        &a.db,
        a.redis.as_ref(),
        settings.redis_url.as_deref(),
        &settings.redis_prefix,
    )?;
    let issuer = match locked {
        Some(locked) => {
            tracing::warn!(
                ?strategy,
                "bench build: coupon issues are decided by a lock strategy, not the ledger"
            );
            locked
        }
        None => ledger,
    };
    Ok(if settings.coupon_sold_out_memory {
        issuer
    } else {
        locks::without_sold_out_memory(issuer)
    })
}

/// The key of `--ticket-signing-key-file`, if given.
fn ticket_key_file(settings: &Settings) -> anyhow::Result<Option<TicketKey>> {
    let Some(path) = &settings.ticket_signing_key_file else {
        return Ok(None);
    };
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("reading the ticket signing key {}", path.display()))?;
    let key = TicketKey::from_pem(&pem)
        .with_context(|| format!("the ticket signing key {}", path.display()))?;
    Ok(Some(key))
}

fn queue_defaults(settings: &Settings) -> anyhow::Result<QueueSettings> {
    QueueSettings::parse(
        settings.queue_admit_per_second,
        settings.queue_max_active,
        settings.queue_active_ttl_seconds,
        settings.queue_heartbeat_grace_seconds,
    )
    .map_err(|err| anyhow::anyhow!("invalid default waiting-room settings: {err}"))
}
