//! The composition root: the only place that picks adapters, wires use cases
//! and mounts routes.

use std::{future::Future, net::SocketAddr, sync::Arc, sync::OnceLock, time::Duration};

use anyhow::Context;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use poem::{
    EndpointExt, IntoEndpoint, Route, Server, get, handler,
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
    web::Data,
};
use poem_openapi::OpenApiService;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sea_orm::DatabaseConnection;

use crate::{
    auth::{api::AuthContext, infra::jwt::JwtCodec, ports::TokenCodec},
    catalog::{
        api::CatalogApi,
        domain::{ConcertDraft, CreatedConcert, ScheduleDraft, SeatBlockDraft},
        infra::db::DbCatalog,
        usecase::CatalogService,
    },
    config::Settings,
    db,
    kernel::SystemClock,
    web::{
        health::HealthApi,
        middleware::{BodyLimit, Edge},
    },
};

type Apis = (HealthApi, CatalogApi<DbCatalog, SystemClock>);

/// A built server, bound to its port but not yet serving.
pub struct Application {
    acceptor: TcpAcceptor,
    addr: SocketAddr,
    routes: poem::endpoint::BoxEndpoint<'static>,
    shutdown_grace: Duration,
    pub db: DatabaseConnection,
    pub codec: Arc<dyn TokenCodec>,
    /// The demo concert, when this start seeded one.
    pub seeded: Option<CreatedConcert>,
}

impl Application {
    /// Connects the stores, runs migrations, seeds the demo catalog when
    /// asked, and binds the listener (port 0 picks a free port).
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let db = db::connect(&settings.database_url).await?;
        db::migrate(&db).await?;
        let redis = match &settings.redis_url {
            Some(url) => Some(connect_redis(url).await?),
            None => None,
        };
        let codec: Arc<dyn TokenCodec> = Arc::new(JwtCodec::new(settings.jwt_secret.as_bytes()));

        let catalog = CatalogService::new(DbCatalog::new(db.clone()), SystemClock);
        let seeded = if settings.seed_demo {
            catalog
                .seed_if_empty(demo_concert(Utc::now()))
                .await
                .map_err(|err| anyhow::anyhow!("seeding the demo concert: {err}"))?
        } else {
            None
        };

        let apis: Apis = (HealthApi::new(db.clone(), redis), CatalogApi::new(catalog));
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
            db,
            codec,
            seeded,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish
    /// for the configured grace period.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(self.routes, shutdown, Some(self.shutdown_grace))
            .await
    }
}

fn api_service(apis: Apis) -> OpenApiService<Apis, ()> {
    OpenApiService::new(apis, "boxoffice", env!("CARGO_PKG_VERSION")).description(
        "Flash-crowd ticket sales and first-come-first-served coupons. \
         Errors are application/problem+json with a stable `code`.",
    )
}

/// The OpenAPI document, generated from the code (no database needed).
pub fn openapi_spec() -> String {
    let offline = DatabaseConnection::default();
    api_service((
        HealthApi::new(offline.clone(), None),
        CatalogApi::new(CatalogService::new(DbCatalog::new(offline), SystemClock)),
    ))
    .spec()
}

fn routes(
    api: OpenApiService<Apis, ()>,
    auth: AuthContext,
    body_limit_bytes: usize,
) -> poem::endpoint::BoxEndpoint<'static> {
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    Route::new()
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .at("/metrics", get(render_metrics))
        .nest("/", api)
        .data(auth)
        .data(prometheus().clone())
        .with(BodyLimit::new(body_limit_bytes))
        .with(Edge)
        .into_endpoint()
        .boxed()
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
                Matcher::Full("http_request_duration_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
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

async fn connect_redis(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).with_context(|| format!("parsing Redis URL {url}"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    client
        .get_connection_manager_with_config(config)
        .await
        .context("connecting to Redis")
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
