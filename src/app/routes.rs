//! Which HTTP operations are mounted, under which middleware, and the
//! OpenAPI document generated from the same wiring.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use poem::{
    EndpointExt, IntoEndpoint, Response, Route,
    endpoint::make_sync,
    get, handler,
    http::Method,
    middleware::Cors,
    web::{Data, Html},
};
use poem_openapi::OpenApiService;

use super::{adapters::Adapters, services::Services};
use crate::{
    admin::{api::AlertsApi, infra::db::DbAlerts},
    auth::api::AuthContext,
    catalog::api::{CatalogAdminApi, CatalogApi},
    config::Settings,
    coupon::api::{CouponAdminApi, CouponApi},
    kernel::SystemClock,
    listeners::{api::NotificationsApi, infra::notifications::DbNotifications},
    outbox::{
        api::EventsApi,
        infra::{AnyBus, db::DbOutbox, relay::RelayWaker},
    },
    payment::api::{PaymentAdminApi, PaymentApi},
    queue::api::{QueueAdminApi, QueueApi},
    reservation::api::ReservationApi,
    ticket::{api::TicketApi, domain::BATCH_BODY_LIMIT},
    wallet::api::WalletApi,
    web::{
        guarded::Guard,
        health::HealthApi,
        idempotency::refuse_unread_keys,
        limits::TrustedProxies,
        middleware::{BodyLimit, Edge},
        problem::Documented,
        traced::Traced,
    },
};

type Apis = (
    HealthApi,
    CatalogAdminApi<super::services::CatalogWiring>,
    CatalogApi<super::services::CatalogWiring>,
    QueueApi<super::services::QueueWiring>,
    QueueAdminApi<super::services::QueueWiring>,
    ReservationApi<super::services::ReservationWiring>,
    WalletApi<super::services::WalletWiring>,
    PaymentApi<super::services::PaymentWiring>,
    PaymentAdminApi<super::services::PaymentWiring>,
    NotificationsApi<DbNotifications>,
    AlertsApi<DbAlerts, SystemClock>,
    EventsApi<DbOutbox, AnyBus, RelayWaker, SystemClock>,
    CouponAdminApi<super::services::CouponWiring>,
    CouponApi<super::services::CouponWiring>,
    TicketApi<super::services::TicketWiring>,
);

/// Every operation, each over its use case.
fn apis(a: &Adapters, s: &Services) -> Apis {
    let db = &a.db;
    // The waiting room guards the seat map, holds and payments.
    let guard = Guard::new(Arc::new(s.queue.clone()), s.limits.clone());
    (
        HealthApi::new(db.clone(), a.redis.clone()),
        CatalogAdminApi::new(s.catalog.clone()),
        CatalogApi::new(s.catalog.clone(), guard.clone()),
        QueueApi::new(s.queue.clone(), guard.clone()),
        QueueAdminApi::new(s.queue.clone()),
        ReservationApi::new(s.reservations.clone(), guard.clone()),
        WalletApi::new(s.wallets.clone(), guard.clone()),
        PaymentApi::new(s.payments.clone(), guard.clone()),
        PaymentAdminApi::new(s.payments.clone()),
        NotificationsApi::new(s.notifications.clone()),
        AlertsApi::new(s.alerts.clone()),
        EventsApi::new(s.events.clone()),
        CouponAdminApi::new(s.coupons.clone()),
        CouponApi::new(s.coupons.clone(), guard),
        TicketApi::new(s.tickets.clone()),
    )
}

/// The OpenAPI document, generated from the code (no database needed).
pub fn openapi_spec() -> String {
    let adapters = Adapters::offline();
    let services = Services::new(&adapters, &Settings::defaults())
        .expect("the default settings build every service");
    document(&api_service(apis(&adapters, &services)))
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
/// one requirement. The 403 a user's operation answers a staff token, in
/// its security scheme's checker, is added to its refusals.
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
        crate::auth::api::document_role_refusals(operation);
    }
    serde_json::to_string_pretty(&doc).unwrap_or(spec)
}

pub(super) fn routes(
    a: &Adapters,
    s: &Services,
    settings: &Settings,
) -> anyhow::Result<poem::endpoint::BoxEndpoint<'static>> {
    let body_limit_bytes = settings.body_limit_bytes;
    let proxies = TrustedProxies::parse(&settings.trusted_proxies).map_err(anyhow::Error::msg)?;
    let api = api_service(apis(a, s));
    let auth = AuthContext {
        verifier: a.verifier(),
    };
    let spec = document(&api);
    // Debug builds (every test, schemathesis) refuse to answer a problem
    // the operation does not document.
    let edge = if cfg!(debug_assertions) {
        Edge::checking(Documented::from_spec(
            &serde_json::from_str(&spec).expect("the document is JSON"),
        ))
    } else {
        Edge::default()
    };
    // Swagger UI embeds the document it is given: give it the served one.
    let docs = api.swagger_ui_html().replace(&api.spec(), &spec);
    Ok(Route::new()
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
        .before(refuse_unread_keys)
        .with(proxies)
        .with(
            BodyLimit::new(
                body_limit_bytes,
                Duration::from_secs(settings.http_header_timeout_seconds),
            )
            .allowing("/v1/checkins/batch", BATCH_BODY_LIMIT),
        )
        .with_if(!settings.cors_allowed_origins.is_empty(), cors(settings))
        .with(edge)
        // Outermost: every answer, problems included, carries the id, and
        // every log line of the request, and every event it writes, is in
        // its trace.
        .with(Traced)
        .into_endpoint()
        .boxed())
}

/// Cross-origin calls from the configured origins (`*`: any): the methods
/// and headers the API uses, `Retry-After`, `Location` and `X-Request-Id`
/// readable, preflights cached for ten minutes.
fn cors(settings: &Settings) -> Cors {
    let cors = Cors::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            "authorization",
            "content-type",
            "x-queue-token",
            "idempotency-key",
            "x-request-id",
            "traceparent",
        ])
        .expose_headers(["retry-after", "location", "x-request-id"])
        .max_age(600);
    if settings.cors_allowed_origins.iter().any(|o| o == "*") {
        cors
    } else {
        cors.allow_origins(settings.cors_allowed_origins.iter().map(String::as_str))
    }
}

/// The "use coupon" web view (plain HTML and JS, no build step).
#[handler]
fn demo_coupon_page() -> poem::Response {
    poem::Response::builder()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("../web/demo_coupon.html"))
}

#[handler]
fn render_metrics(handle: Data<&PrometheusHandle>) -> poem::Response {
    poem::Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}

/// How often recorded histogram samples are folded into their buckets.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

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
        // A recorder built by hand has no upkeep of its own: histogram
        // samples would pile up until the next scrape, so a server nobody
        // scrapes grew by every request it answered (the soak showed about
        // 1 MiB a minute at 20 visits/s). Drain them every few seconds.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(METRICS_UPKEEP);
                    upkeep.run_upkeep();
                }
            })
            .expect("starting the metrics upkeep thread");
        handle
    })
}
