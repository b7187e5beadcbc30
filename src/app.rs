//! The composition root: the only place that picks adapters, wires use cases
//! and mounts routes.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, OnceLock},
    time::Duration,
};

use anyhow::Context;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use poem::{
    EndpointExt, IntoEndpoint, Response, Route, Server,
    endpoint::make_sync,
    get, handler,
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
    web::{Data, Html},
};
use poem_openapi::OpenApiService;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use crate::{
    admin::{
        api::AlertsApi,
        infra::{db::DbAlerts, webhook::Webhook},
        usecase::AlertService,
    },
    auth::{api::AuthContext, infra::jwt::JwtCodec, ports::TokenCodec},
    catalog::{
        api::CatalogApi,
        domain::{ConcertDraft, CreatedConcert, ScheduleDraft, SeatBlockDraft},
        infra::db::DbCatalog,
        usecase::CatalogService,
    },
    config::Settings,
    coupon::{
        self,
        api::CouponApi,
        infra::{
            AnyCouponLedger, consumer::CouponRedeemer, db::DbCoupons, memory::MemoryCouponLedger,
            redis::RedisCouponLedger,
        },
        usecase::CouponService,
    },
    db,
    kernel::{SystemClock, alerts::AlertSink},
    listeners::{
        api::NotificationsApi,
        infra::{
            handlers::{DataPlatformExporter, ReceiptIssuer},
            notifications::Notifier,
            receipts::LocalReceiptProvider,
            sink::Sink,
        },
    },
    outbox::{
        api::EventsApi,
        infra::{
            AnyBus,
            consumer::{ConsumerRunner, ConsumerSettings, EventHandler},
            db::DbOutbox,
            memory::MemoryBus,
            redis::RedisBus,
            relay::{Relay, RelaySettings, RelayWaker, mark_finished},
        },
        ports::EventBus,
        usecase::EventPipeline,
    },
    payment::{
        api::PaymentApi,
        infra::{compensation::CompensationRunner, consumer::PaymentSaga, db::DbPayments},
        usecase::PaymentService,
    },
    queue::{
        api::QueueApi,
        domain::QueueSettings,
        infra::{
            AnyQueueStore,
            catalog::CachedDirectory,
            consumer::FinishOnPayment,
            db::{CachedSettings, DbQueueSettings},
            memory::MemoryQueueStore,
            redis::RedisQueueStore,
            scheduler::QueueScheduler,
            tokens::JwtQueueTokens,
        },
        usecase::QueueService,
    },
    reservation::{
        self,
        api::ReservationApi,
        domain::HoldPolicy,
        infra::{consumer::ConfirmOnPayment, db::DbReservations},
        usecase::ReservationService,
    },
    wallet::{api::WalletApi, infra::db::DbWallets, usecase::WalletService},
    web::{
        health::HealthApi,
        idempotency::{Idempotency, KeyGuard},
        middleware::{BodyLimit, Edge},
    },
};

type Alerts = AlertService<DbAlerts, Webhook, SystemClock>;
type Catalog = CatalogService<DbCatalog, SystemClock, RelayWaker>;
type Queue = QueueService<
    AnyQueueStore,
    CachedSettings<DbQueueSettings>,
    CachedDirectory<Catalog>,
    SystemClock,
>;
type Coupons = CouponService<DbCoupons, AnyCouponLedger, SystemClock, RelayWaker>;
type Apis = (
    HealthApi,
    CatalogApi<DbCatalog, SystemClock, RelayWaker>,
    QueueApi<AnyQueueStore, CachedSettings<DbQueueSettings>, CachedDirectory<Catalog>, SystemClock>,
    ReservationApi<DbReservations, SystemClock, RelayWaker>,
    WalletApi<DbWallets, SystemClock, RelayWaker>,
    PaymentApi<DbPayments, SystemClock, RelayWaker>,
    NotificationsApi,
    AlertsApi<DbAlerts, Webhook, SystemClock>,
    EventsApi<DbOutbox, AnyBus, RelayWaker, SystemClock>,
    CouponApi<DbCoupons, AnyCouponLedger, SystemClock, RelayWaker>,
);

type Worker = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A built server, bound to its port but not yet serving.
pub struct Application {
    acceptor: TcpAcceptor,
    addr: SocketAddr,
    routes: poem::endpoint::BoxEndpoint<'static>,
    shutdown_grace: Duration,
    workers: Vec<Worker>,
    cancel: CancellationToken,
    pub db: DatabaseConnection,
    pub bus: AnyBus,
    pub codec: Arc<dyn TokenCodec>,
    /// The demo concert, when this start seeded one.
    pub seeded: Option<CreatedConcert>,
}

impl Application {
    /// Connects the stores, runs migrations, seeds the demo catalog when
    /// asked, prepares the background workers and binds the listener (port
    /// 0 picks a free port).
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let db = db::connect(&settings.database_url).await?;
        db::migrate(&db).await?;
        let redis = match &settings.redis_url {
            Some(url) => Some(connect_redis(url).await?),
            None => None,
        };
        let codec: Arc<dyn TokenCodec> = Arc::new(JwtCodec::new(settings.jwt_secret.as_bytes()));
        let waker = RelayWaker::default();
        let cancel = CancellationToken::new();
        let mut workers: Vec<Worker> = Vec::new();

        let bus = match &redis {
            Some((client, conn)) => AnyBus::Redis(RedisBus::new(
                client.clone(),
                conn.clone(),
                &settings.event_stream,
                settings.stream_max_len,
            )),
            None => {
                let (bus, finished) = MemoryBus::new();
                if settings.workers {
                    workers.push(Box::pin(mark_finished(
                        db.clone(),
                        finished,
                        cancel.clone(),
                    )));
                }
                AnyBus::Memory(bus)
            }
        };

        let alerts: Alerts = AlertService::new(
            DbAlerts::new(db.clone()),
            Webhook::new(settings.alert_webhook_url.clone())?,
            SystemClock,
        );
        let catalog: Catalog =
            CatalogService::new(DbCatalog::new(db.clone()), SystemClock, waker.clone());
        let queue_store = match &redis {
            Some((_, conn)) => {
                AnyQueueStore::Redis(RedisQueueStore::new(conn.clone(), &settings.redis_prefix))
            }
            None => AnyQueueStore::Memory(MemoryQueueStore::default()),
        };
        let queue: Queue = QueueService::new(
            queue_store,
            CachedSettings::new(DbQueueSettings::new(db.clone()), Duration::from_secs(1)),
            CachedDirectory::new(catalog.clone()),
            SystemClock,
            Arc::new(JwtQueueTokens::new(settings.jwt_secret.as_bytes())),
            queue_defaults(settings)?,
        );
        let seeded = if settings.seed_demo {
            catalog
                .seed_if_empty(demo_concert(Utc::now()))
                .await
                .map_err(|err| anyhow::anyhow!("seeding the demo concert: {err}"))?
        } else {
            None
        };

        let reservations = ReservationService::new(
            DbReservations::new(db.clone()),
            SystemClock,
            waker.clone(),
            HoldPolicy {
                hold_minutes: settings.hold_minutes,
                per_user_limit: settings.hold_limit,
            },
        );
        let wallets = WalletService::new(DbWallets::new(db.clone()), SystemClock, waker.clone());
        let payments = PaymentService::new(DbPayments::new(db.clone()), SystemClock, waker.clone());
        let coupon_ledger = match &redis {
            Some((_, conn)) => {
                AnyCouponLedger::Redis(RedisCouponLedger::new(conn.clone(), &settings.redis_prefix))
            }
            None => AnyCouponLedger::Memory(MemoryCouponLedger::default()),
        };
        let coupons: Coupons = CouponService::new(
            DbCoupons::new(db.clone()),
            coupon_ledger,
            SystemClock,
            waker.clone(),
            TimeDelta::seconds(settings.coupon_reconcile_grace_seconds as i64),
        );

        if settings.workers {
            let relay = Relay::new(
                db.clone(),
                bus.clone(),
                waker.clone(),
                RelaySettings {
                    batch_size: settings.relay_batch_size,
                    poll_interval: Duration::from_millis(settings.relay_poll_ms),
                    retention: Duration::from_secs(settings.outbox_retention_hours * 3600),
                },
            );
            workers.push(Box::pin(relay.run(cancel.clone())));
            let scheduler = QueueScheduler::new(
                queue.clone(),
                bus.clone(),
                Duration::from_millis(settings.queue_tick_ms),
            );
            workers.push(Box::pin(scheduler.run(cancel.clone())));
            workers.push(Box::pin(reservation::infra::sweeper::run(
                reservations.clone(),
                Duration::from_secs(1),
                cancel.clone(),
            )));
            let compensations = CompensationRunner::new(
                db.clone(),
                Arc::new(alerts.clone()),
                waker.clone(),
                Duration::from_millis(250),
                Duration::from_millis(settings.compensation_retry_ms),
            );
            workers.push(Box::pin(compensations.run(cancel.clone())));
            workers.push(Box::pin(coupon::infra::reconciler::run(
                coupons.clone(),
                Arc::new(alerts.clone()),
                Duration::from_secs(settings.coupon_reconcile_seconds),
                cancel.clone(),
            )));
            let handlers: Vec<Arc<dyn EventHandler>> = vec![
                Arc::new(DataPlatformExporter::new(Sink::parse(
                    &settings.data_platform_sink,
                )?)),
                Arc::new(ReceiptIssuer::new(LocalReceiptProvider)),
                Arc::new(ConfirmOnPayment),
                Arc::new(PaymentSaga),
                Arc::new(Notifier),
                Arc::new(FinishOnPayment::new(queue.store().clone())),
                Arc::new(CouponRedeemer),
            ];
            let consumer_settings = ConsumerSettings {
                batch_size: 64,
                block: Duration::from_secs(1),
                claim_idle: Duration::from_millis(settings.consumer_claim_idle_ms),
                max_deliveries: settings.consumer_max_deliveries,
            };
            let instance = instance_name();
            let alert_sink: Arc<dyn AlertSink> = Arc::new(alerts.clone());
            for handler in handlers {
                if settings
                    .paused_consumers
                    .iter()
                    .any(|p| p == handler.name())
                {
                    // Registered, so the bus keeps its entries, but not run.
                    let (bus, group, cancel) = (bus.clone(), handler.name(), cancel.clone());
                    workers.push(Box::pin(async move {
                        if let Err(err) = bus.ensure_group(group).await {
                            tracing::warn!(group, error = %err, "cannot register the paused consumer group");
                        }
                        cancel.cancelled().await;
                    }));
                    continue;
                }
                let runner = ConsumerRunner::new(
                    db.clone(),
                    bus.clone(),
                    handler,
                    instance.clone(),
                    consumer_settings.clone(),
                    alert_sink.clone(),
                );
                workers.push(Box::pin(runner.run(cancel.clone())));
            }
        }

        let apis: Apis = (
            HealthApi::new(db.clone(), redis.map(|(_, conn)| conn)),
            CatalogApi::new(catalog, Arc::new(queue.clone())),
            QueueApi::new(queue.clone()),
            ReservationApi::new(reservations, Arc::new(queue.clone())),
            WalletApi::new(wallets, Idempotency::new(db.clone())),
            PaymentApi::new(payments, Arc::new(queue), Idempotency::new(db.clone())),
            NotificationsApi::new(db.clone()),
            AlertsApi::new(alerts),
            EventsApi::new(EventPipeline::new(
                DbOutbox::new(db.clone()),
                bus.clone(),
                waker,
                SystemClock,
            )),
            CouponApi::new(coupons, Idempotency::new(db.clone())),
        );
        let routes = routes(
            api_service(apis),
            AuthContext {
                codec: codec.clone(),
            },
            settings.body_limit_bytes,
        );

        let acceptor = TcpListener::bind(settings.listen.as_str())
            .into_acceptor()
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().copied())
            .context("the listener has no socket address")?;
        Ok(Self {
            acceptor,
            addr,
            routes,
            shutdown_grace: Duration::from_secs(settings.shutdown_grace_seconds),
            workers,
            cancel,
            db,
            bus,
            codec,
            seeded,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts the background workers and serves until `shutdown` resolves;
    /// then stops taking requests, lets in-flight ones finish for the grace
    /// period, and stops the workers.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let tasks: Vec<_> = self.workers.into_iter().map(tokio::spawn).collect();
        // Workers stop when this future is dropped too (e.g. a test ends).
        let _stop_workers = self.cancel.clone().drop_guard();
        let served = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(self.routes, shutdown, Some(self.shutdown_grace))
            .await;
        self.cancel.cancel();
        let drained =
            tokio::time::timeout(self.shutdown_grace, futures::future::join_all(tasks)).await;
        if drained.is_err() {
            tracing::warn!("background workers did not stop within the grace period");
        }
        served
    }
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

fn instance_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "boxoffice".into());
    let tag = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &tag[..8])
}

fn api_service(apis: Apis) -> OpenApiService<Apis, ()> {
    OpenApiService::new(apis, "boxoffice", env!("CARGO_PKG_VERSION")).description(
        "Flash-crowd ticket sales and first-come-first-served coupons. \
         Errors are application/problem+json with a stable `code`.",
    )
}

/// The OpenAPI document as served and committed. poem-openapi lists the
/// security schemes of one operation as alternatives, but every scheme an
/// operation of ours names is required (the seat map, holds and payments
/// take the user's JWT *and* their queue token), so they are merged into
/// one requirement.
fn document(api: &OpenApiService<Apis, ()>) -> String {
    let spec = api.spec();
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(&spec) else {
        return spec;
    };
    let operations = doc
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|methods| methods.values_mut());
    for operation in operations {
        if let Some(security) = operation
            .get_mut("security")
            .and_then(serde_json::Value::as_array_mut)
            && security.len() > 1
        {
            let every: serde_json::Map<String, serde_json::Value> = security
                .iter()
                .filter_map(serde_json::Value::as_object)
                .flat_map(|scheme| scheme.clone())
                .collect();
            *security = vec![serde_json::Value::Object(every)];
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or(spec)
}

/// The OpenAPI document, generated from the code (no database needed).
pub fn openapi_spec() -> String {
    let offline = DatabaseConnection::default();
    let waker = RelayWaker::default();
    let (bus, _) = MemoryBus::new();
    let catalog = CatalogService::new(DbCatalog::new(offline.clone()), SystemClock, waker.clone());
    let queue = QueueService::new(
        AnyQueueStore::Memory(MemoryQueueStore::default()),
        CachedSettings::new(
            DbQueueSettings::new(offline.clone()),
            Duration::from_secs(1),
        ),
        CachedDirectory::new(catalog.clone()),
        SystemClock,
        Arc::new(JwtQueueTokens::new(b"offline")),
        QueueSettings::parse(1, 1, 60, 60).expect("valid settings"),
    );
    let api = api_service((
        HealthApi::new(offline.clone(), None),
        CatalogApi::new(catalog, Arc::new(queue.clone())),
        QueueApi::new(queue.clone()),
        ReservationApi::new(
            ReservationService::new(
                DbReservations::new(offline.clone()),
                SystemClock,
                waker.clone(),
                HoldPolicy {
                    hold_minutes: 5,
                    per_user_limit: 4,
                },
            ),
            Arc::new(queue.clone()),
        ),
        WalletApi::new(
            WalletService::new(DbWallets::new(offline.clone()), SystemClock, waker.clone()),
            Idempotency::new(offline.clone()),
        ),
        PaymentApi::new(
            PaymentService::new(DbPayments::new(offline.clone()), SystemClock, waker.clone()),
            Arc::new(queue),
            Idempotency::new(offline.clone()),
        ),
        NotificationsApi::new(offline.clone()),
        AlertsApi::new(AlertService::new(
            DbAlerts::new(offline.clone()),
            Webhook::Disabled,
            SystemClock,
        )),
        EventsApi::new(EventPipeline::new(
            DbOutbox::new(offline.clone()),
            AnyBus::Memory(bus),
            waker.clone(),
            SystemClock,
        )),
        CouponApi::new(
            CouponService::new(
                DbCoupons::new(offline.clone()),
                AnyCouponLedger::Memory(MemoryCouponLedger::default()),
                SystemClock,
                waker,
                TimeDelta::seconds(30),
            ),
            Idempotency::new(offline),
        ),
    ));
    document(&api)
}

fn routes(
    api: OpenApiService<Apis, ()>,
    auth: AuthContext,
    body_limit_bytes: usize,
) -> poem::endpoint::BoxEndpoint<'static> {
    let spec = document(&api);
    // Swagger UI embeds the document it is given: give it the served one.
    let docs = api.swagger_ui_html().replace(&api.spec(), &spec);
    Route::new()
        .at(
            "/openapi.json",
            make_sync(move |_| {
                Response::builder()
                    .content_type("application/json")
                    .body(spec.clone())
            }),
        )
        .nest(
            "/docs",
            Route::new().at("/", make_sync(move |_| Html(docs.clone()))),
        )
        .at("/metrics", get(render_metrics))
        .at("/demo/coupon", get(demo_coupon_page))
        .nest("/", api)
        .data(auth)
        .data(prometheus().clone())
        .with(KeyGuard)
        .with(BodyLimit::new(body_limit_bytes))
        .with(Edge)
        .into_endpoint()
        .boxed()
}

/// The "use coupon" web view (plain HTML and JS, no build step).
#[handler]
fn demo_coupon_page() -> poem::Response {
    poem::Response::builder()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("web/demo_coupon.html"))
}

#[handler]
fn render_metrics(handle: Data<&PrometheusHandle>) -> poem::Response {
    poem::Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}

/// The process-wide Prometheus recorder (installed once, shared by every
/// application built in this process, e.g. by tests).
fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                ],
            )
            .expect("bucket list is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (e.g. by a test
        // harness); ours still renders what it records through `handle`.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed");
        }
        handle
    })
}

async fn connect_redis(url: &str) -> anyhow::Result<(redis::Client, ConnectionManager)> {
    let client = redis::Client::open(url).with_context(|| format!("parsing Redis URL {url}"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let conn = client
        .get_connection_manager_with_config(config)
        .await
        .context("connecting to Redis")?;
    Ok((client, conn))
}

/// The concert an empty embedded install starts with, so every endpoint has
/// something to show.
pub fn demo_concert(now: DateTime<Utc>) -> ConcertDraft {
    let day = now.duration_trunc(TimeDelta::days(1)).unwrap_or(now);
    let block = |grade: &str, price, count| SeatBlockDraft {
        grade: grade.into(),
        price,
        count,
    };
    ConcertDraft {
        title: "boxoffice Demo Night".into(),
        venue: "Embedded Hall".into(),
        schedules: [7, 8]
            .into_iter()
            .map(|days| ScheduleDraft {
                starts_at: day + TimeDelta::days(days) + TimeDelta::hours(19),
                seat_blocks: vec![block("VIP", 150_000, 20), block("R", 90_000, 80)],
            })
            .collect(),
    }
}
