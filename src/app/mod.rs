//! The composition root, the only place that picks adapters and wires use
//! cases: `adapters` (which store serves which port), `services` (which use
//! cases exist), `workers` (what runs in the background) and `routes`
//! (which HTTP operations are mounted, and the OpenAPI document built from
//! the same wiring).

mod adapters;
mod routes;
mod services;
mod workers;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::workers::Worker;
pub use self::{adapters::Adapters, routes::openapi_spec, services::Services};
use crate::{
    auth::ports::TokenCodec,
    catalog::domain::{ConcertDraft, CreatedConcert, ScheduleDraft, SeatBlockDraft, SeatPlace},
    config::Settings,
    db,
    outbox::infra::AnyBus,
    web::server::{self, EdgeLimits},
};

/// A built server, bound to its port but not yet serving.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    edge: EdgeLimits,
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
        settings
            .check_exposure()
            .map_err(|why| anyhow::anyhow!("refusing to start: {why}"))?;
        workers::check_inbox_retention(settings)?;
        let mut adapters = Adapters::connect(settings).await?;
        let services = Services::new(&adapters, settings)?;
        // Processes started together take turns: one creates the schema
        // and (when asked) the demo, the others find them there.
        let seeded = db::while_starting(&adapters.db, async {
            db::migrate(&adapters.db).await?;
            // Before any ticket is issued: the first process stores a key.
            services.tickets.codes().prepare().await?;
            if !settings.seeds_demo() {
                return Ok(None);
            }
            services
                .catalog
                .seed_if_empty(demo_concert(Utc::now()))
                .await
                .map_err(|err| anyhow::anyhow!("seeding the demo concert: {err}"))
        })
        .await?;
        let cancel = CancellationToken::new();
        let workers = workers::workers(&mut adapters, &services, settings, &cancel)?;
        let routes = routes::routes(&adapters, &services, settings)?;

        let listener = TcpListener::bind(settings.listen.as_str())
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let addr = listener
            .local_addr()
            .context("the listener has no socket address")?;
        Ok(Self {
            listener,
            addr,
            edge: EdgeLimits {
                header_timeout: Duration::from_secs(settings.http_header_timeout_seconds),
                idle_timeout: Duration::from_secs(settings.http_idle_timeout_seconds),
                max_connections: usize::try_from(settings.max_connections).unwrap_or(usize::MAX),
            },
            routes,
            shutdown_grace: Duration::from_secs(settings.shutdown_grace_seconds),
            workers,
            cancel,
            db: adapters.db,
            bus: adapters.bus,
            codec: adapters.codec,
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
        let served = server::serve(
            self.listener,
            self.routes,
            self.edge,
            shutdown,
            self.shutdown_grace,
        )
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

/// The concert an empty embedded install starts with, so every endpoint has
/// something to show.
pub fn demo_concert(now: DateTime<Utc>) -> ConcertDraft {
    let day = now.duration_trunc(TimeDelta::days(1)).unwrap_or(now);
    let block = |grade: &str, price, count| SeatBlockDraft {
        grade: grade.into(),
        price,
        count,
        place: SeatPlace::default(),
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
