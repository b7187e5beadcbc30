//! Command line and environment configuration. Every flag has a
//! `BOXOFFICE_*` environment fallback; no configuration at all means the
//! embedded default (SQLite file, in-process adapters, port 8080).

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

mod exposure;

pub use exposure::{DEV_JWT_SECRET, MIN_SECRET_BYTES};

#[derive(Debug, Parser)]
#[command(
    name = "boxoffice",
    version,
    about = "Flash-crowd ticketing and FCFS coupon backend"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the OpenAPI document.
    Openapi,
    /// Mint a JWT for development and tests; prints the token alone.
    Token(TokenArgs),
    /// Manage the keys that sign ticket codes.
    #[command(subcommand)]
    TicketKeys(TicketKeysCommand),
}

#[derive(Debug, Clone, Subcommand)]
pub enum TicketKeysCommand {
    /// Store a new signing key: every process signs new codes with it
    /// within 30 seconds, and codes signed before still verify. Prints its
    /// `kid`.
    Rotate,
    /// Retire a key by its `kid`: its codes no longer verify at any door
    /// and it is no longer published, within 30 seconds on every process.
    /// The key that signs now is refused: rotate first.
    Retire {
        /// The key's `kid`, as `rotate` printed it or `GET /v1/tickets/keys`
        /// lists it.
        kid: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Seconds in a day, for the retention defaults.
const DAY: u64 = 86_400;

// Every setting is global: it may stand before or after the subcommand.
#[derive(Debug, Clone, Args)]
#[command(mut_args(|arg| arg.global(true)))]
pub struct Settings {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "BOXOFFICE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// `sqlite://FILE` (created if missing) or `postgres://USER@HOST/DB`.
    #[arg(
        long,
        env = "BOXOFFICE_DATABASE_URL",
        default_value = "sqlite://boxoffice.db"
    )]
    pub database_url: String,

    /// SQLite only: how long a writer waits for the file's write lock
    /// before its request answers 503 (`Retry-After`). Longer rides out a
    /// slow backup; shorter frees requests sooner when something holds
    /// the file.
    #[arg(
        long,
        env = "BOXOFFICE_SQLITE_BUSY_TIMEOUT_SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=600)
    )]
    pub sqlite_busy_timeout_seconds: u64,

    /// Redis for the production shape, e.g. `redis://127.0.0.1:6379/`.
    /// Without it the in-process adapters are used.
    #[arg(
        long,
        env = "BOXOFFICE_REDIS_URL",
        conflicts_with = "redis_cluster_nodes"
    )]
    pub redis_url: Option<String>,

    /// A Redis Cluster instead of `--redis-url`: some of its nodes, e.g.
    /// `redis://10.0.0.1:7000,redis://10.0.0.2:7000` (it finds the others).
    #[arg(long, env = "BOXOFFICE_REDIS_CLUSTER_NODES", value_delimiter = ',')]
    pub redis_cluster_nodes: Vec<String>,

    /// HS256 secret identity tokens are signed with (at least 32 bytes).
    /// Required unless an identity provider's keys are given; only the
    /// embedded default on a loopback address may go without, on a
    /// built-in development secret.
    #[arg(long, env = "BOXOFFICE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// HS256 secret queue tokens are signed with (at least 32 bytes, not
    /// the identity secret); every instance of one deployment shares it.
    /// Only the embedded default on a loopback address may go without: it
    /// then signs with a random key made at start.
    #[arg(long, env = "BOXOFFICE_QUEUE_TOKEN_SECRET", hide_env_values = true)]
    pub queue_token_secret: Option<String>,

    /// A JSON Web Key Set (the file an identity provider publishes at its
    /// `jwks_uri`): identity tokens signed RS256 or ES256 by one of its keys
    /// (picked by `kid`) are accepted, and HS256 ones no longer are.
    #[arg(long, env = "BOXOFFICE_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<std::path::PathBuf>,

    /// One PEM public key (RSA → RS256, P-256 → ES256) instead of a key set.
    #[arg(
        long,
        env = "BOXOFFICE_JWT_PUBLIC_KEY_FILE",
        conflicts_with = "jwt_jwks_file"
    )]
    pub jwt_public_key_file: Option<std::path::PathBuf>,

    /// An Ed25519 private key in PKCS#8 PEM (`openssl genpkey -algorithm
    /// ed25519`) that signs ticket codes; the keys stored in the database
    /// still verify. Without it, the first process to start stores a fresh
    /// key in the database (`ticket_signing_keys`) and every process signs
    /// with the newest one.
    #[arg(long, env = "BOXOFFICE_TICKET_SIGNING_KEY_FILE")]
    pub ticket_signing_key_file: Option<std::path::PathBuf>,

    /// The identity provider's `jwks_uri`, e.g.
    /// `https://TENANT.auth0.com/.well-known/jwks.json`: the key set is
    /// fetched at start (the server does not start without it), again when
    /// a token names a key it does not have (at most once every 5 s), and
    /// every `--jwt-jwks-refresh-seconds`, so a rotated key is accepted
    /// without a restart.
    #[arg(
        long,
        env = "BOXOFFICE_JWT_JWKS_URL",
        conflicts_with_all = ["jwt_jwks_file", "jwt_public_key_file"]
    )]
    pub jwt_jwks_url: Option<String>,

    /// How often the key set at `--jwt-jwks-url` is fetched again.
    #[arg(
        long,
        env = "BOXOFFICE_JWT_JWKS_REFRESH_SECONDS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub jwt_jwks_refresh_seconds: u64,

    /// When set, identity tokens must carry this `iss`.
    #[arg(long, env = "BOXOFFICE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// When set, identity tokens must carry this `aud`.
    #[arg(long, env = "BOXOFFICE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Log format on stderr.
    #[arg(long, env = "BOXOFFICE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Export spans (requests, event handling, compensation attempts) over
    /// OTLP/HTTP (JSON) to this collector, e.g. `http://localhost:4318`
    /// (`/v1/traces` is added unless given). Off when unset.
    #[arg(long, env = "BOXOFFICE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Largest accepted request body, in bytes, whatever its framing
    /// (refused with 413 as soon as it streams past this).
    #[arg(long, env = "BOXOFFICE_BODY_LIMIT_BYTES", default_value_t = 64 * 1024)]
    pub body_limit_bytes: usize,

    /// A request head (a new connection's first one included) must arrive
    /// within this many seconds of its first byte, and its body within as
    /// many again; a slower client is cut off (the body: 408).
    #[arg(long, env = "BOXOFFICE_HTTP_HEADER_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub http_header_timeout_seconds: u64,

    /// A connection with no request in flight and nothing sent either way
    /// for this many seconds is closed. Keep it above the idle timeout of
    /// a load balancer in front (60 s on most), so the balancer closes
    /// first.
    #[arg(long, env = "BOXOFFICE_HTTP_IDLE_TIMEOUT_SECONDS", default_value_t = 75, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub http_idle_timeout_seconds: u64,

    /// Open connections this instance serves at once; more wait in the
    /// listen backlog until one closes. Keep it under the process's open
    /// file limit (`ulimit -n`), which also covers database and Redis
    /// connections.
    #[arg(long, env = "BOXOFFICE_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Create a demo concert when the catalog is empty. Defaults to on for
    /// the embedded default (SQLite, no Redis) only, never on a production
    /// database.
    #[arg(long, env = "BOXOFFICE_SEED_DEMO", action = ArgAction::Set)]
    pub seed_demo: Option<bool>,

    /// Where the data-platform exporter writes: `file:DIR` (one NDJSON file
    /// per UTC day) or an `http(s)://` collector.
    #[arg(
        long,
        env = "BOXOFFICE_DATA_PLATFORM_SINK",
        default_value = "file:./data-platform"
    )]
    pub data_platform_sink: String,

    /// Slack/Notion-style webhook that receives every admin alert, from a
    /// stored queue: retried with backoff until it answers 2xx.
    #[arg(long, env = "BOXOFFICE_ALERT_WEBHOOK_URL")]
    pub alert_webhook_url: Option<String>,

    /// Signs every webhook POST: `X-Boxoffice-Signature: sha256=<hex>`, the
    /// HMAC-SHA256 of the body with this secret. Unsigned without it.
    #[arg(long, env = "BOXOFFICE_ALERT_WEBHOOK_SECRET", hide_env_values = true)]
    pub alert_webhook_secret: Option<String>,

    /// Run the outbox relay and the event consumers in this process. Turn
    /// off for API-only instances.
    #[arg(long, env = "BOXOFFICE_WORKERS", default_value_t = true, action = ArgAction::Set)]
    pub workers: bool,

    /// Requests per second one user may send to the operations a crowd
    /// hammers (entering a waiting room, coupon issue, holds, wallet
    /// charges, payments, ticket cancellations, waitlist joins, coupon
    /// redemptions), with a burst of the same size; shared by every instance
    /// through Redis when it is configured. Off when unset.
    #[arg(long, env = "BOXOFFICE_RATE_LIMIT_PER_USER")]
    pub rate_limit_per_user: Option<std::num::NonZeroU32>,

    /// The same per client IP address (each instance counts its own). Off
    /// when unset.
    #[arg(long, env = "BOXOFFICE_RATE_LIMIT_PER_IP")]
    pub rate_limit_per_ip: Option<std::num::NonZeroU32>,

    /// Load balancers and proxies in front of this server, as addresses or
    /// CIDRs, comma-separated (e.g. `10.0.0.0/8`): only a request from one
    /// of them has its `X-Forwarded-For` read, and the client it names is
    /// the address the per-IP limit counts. None when unset: the TCP peer.
    #[arg(long, env = "BOXOFFICE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// Origins a browser may call the API from (CORS), comma-separated,
    /// e.g. `https://shop.example.com`; `*` allows any. None when unset.
    #[arg(long, env = "BOXOFFICE_CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,

    /// Consumer groups this instance registers but does not run (e.g. to
    /// hold back one listener during maintenance), comma-separated.
    #[arg(long, env = "BOXOFFICE_PAUSED_CONSUMERS", value_delimiter = ',')]
    pub paused_consumers: Vec<String>,

    /// The Redis stream events are published to.
    #[arg(long, env = "BOXOFFICE_EVENT_STREAM", default_value = "bo:events")]
    pub event_stream: String,

    /// Streams the events are spread over, by aggregate (Redis only): 1
    /// keeps the single `--event-stream`; N > 1 writes to N streams
    /// hash-tagged to spread over a Redis Cluster's primaries, each read by
    /// every consumer group.
    #[arg(
        long,
        env = "BOXOFFICE_EVENT_STREAM_PARTITIONS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=256)
    )]
    pub event_stream_partitions: u16,

    /// The event stream's hard cap (XADD MAXLEN ~), a last resort: the
    /// relay trims each stream every minute below what every consumer
    /// group may still need (XTRIM MINID), and alerts when a stream
    /// reaches this length with a group behind.
    #[arg(long, env = "BOXOFFICE_STREAM_MAX_LEN", default_value_t = 1_000_000)]
    pub stream_max_len: usize,

    /// Outbox rows the relay publishes per batch.
    #[arg(long, env = "BOXOFFICE_RELAY_BATCH_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub relay_batch_size: u64,

    /// A queue token may poll its status once per this many ms on average,
    /// after a burst of ten; faster polls are answered 429 `rate_limited`
    /// with `Retry-After` from this instance's memory, without a Redis
    /// round trip, so a flood of pollers cannot slow the honest ones (who
    /// poll at their `pollAfterSeconds`, a second or more). 0 turns it off.
    #[arg(
        long,
        env = "BOXOFFICE_QUEUE_POLL_PACE_MS",
        default_value_t = 100,
        value_parser = clap::value_parser!(u64).range(0..=60_000)
    )]
    pub queue_poll_pace_ms: u64,

    /// Seat-map pages are served from snapshots up to this old (0: every
    /// read goes to the database). A change committed on this instance
    /// retires its schedule's pages at once; another instance's change
    /// shows within this time.
    #[arg(
        long,
        env = "BOXOFFICE_SEAT_MAP_SNAPSHOT_MS",
        default_value_t = 250,
        value_parser = clap::value_parser!(u64).range(0..=10_000)
    )]
    pub seat_map_snapshot_ms: u64,

    /// Memory the seat-map snapshots and their rendered pages may take
    /// together, in MiB: past it the least recently read pages go, however
    /// many distinct pages clients ask for. The hot pages of an on-sale (a
    /// 20,000-seat hall is 40 pages of 500) take a few MiB.
    #[arg(long, env = "BOXOFFICE_SEAT_MAP_CACHE_MB", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub seat_map_cache_mb: u64,

    /// How often the relay looks for rows when nothing woke it.
    #[arg(long, env = "BOXOFFICE_RELAY_POLL_MS", default_value_t = 250)]
    pub relay_poll_ms: u64,

    /// Outbox rows are deleted this many hours after every consumer group
    /// subscribed to their type handled (or dead-lettered) them.
    #[arg(long, env = "BOXOFFICE_OUTBOX_RETENTION_HOURS", default_value_t = 24)]
    pub outbox_retention_hours: u64,

    /// The delivery audit sends an event again to a consumer group that
    /// has neither handled nor dead-lettered it this long after it was
    /// published and can no longer receive it from the stream (lost in a
    /// failover, flushed, trimmed). It looks every half of this (1–30 s).
    #[arg(
        long,
        env = "BOXOFFICE_DELIVERY_AUDIT_AFTER_SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub delivery_audit_after_seconds: u64,

    /// Watchdogs raise an admin alert (resolved when it clears) when the
    /// oldest unpublished outbox row, a consumer group's lag or its oldest
    /// pending entry, a payment left `paid`, a schedule left `cancelling`
    /// or a compensation left open is older than this. Checked every tenth
    /// of it (1–30 s).
    #[arg(
        long,
        env = "BOXOFFICE_WATCHDOG_AFTER_SECONDS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub watchdog_after_seconds: u64,

    /// Processed inbox rows are kept this many seconds (at least as long as
    /// their event can still be redelivered; see docs/operations.md).
    #[arg(long, env = "BOXOFFICE_INBOX_RETENTION_SECONDS", default_value_t = 7 * DAY, value_parser = clap::value_parser!(u64).range(1..))]
    pub inbox_retention_seconds: u64,

    /// Idempotency keys (and their stored answers) are kept this many seconds.
    #[arg(long, env = "BOXOFFICE_IDEMPOTENCY_RETENTION_SECONDS", default_value_t = DAY, value_parser = clap::value_parser!(u64).range(1..))]
    pub idempotency_retention_seconds: u64,

    /// User notifications are kept this many seconds.
    #[arg(long, env = "BOXOFFICE_NOTIFICATION_RETENTION_SECONDS", default_value_t = 30 * DAY, value_parser = clap::value_parser!(u64).range(1..))]
    pub notification_retention_seconds: u64,

    /// Finished coupon redemption jobs are kept this many seconds.
    #[arg(long, env = "BOXOFFICE_COUPON_JOB_RETENTION_SECONDS", default_value_t = 7 * DAY, value_parser = clap::value_parser!(u64).range(1..))]
    pub coupon_job_retention_seconds: u64,

    /// Replayed dead letters are kept this many seconds.
    #[arg(long, env = "BOXOFFICE_DEAD_LETTER_RETENTION_SECONDS", default_value_t = 30 * DAY, value_parser = clap::value_parser!(u64).range(1..))]
    pub dead_letter_retention_seconds: u64,

    /// Acknowledged admin alerts are kept this many seconds.
    #[arg(long, env = "BOXOFFICE_ALERT_RETENTION_SECONDS", default_value_t = 30 * DAY, value_parser = clap::value_parser!(u64).range(1..))]
    pub alert_retention_seconds: u64,

    /// How often the retention sweeper runs.
    #[arg(long, env = "BOXOFFICE_RETENTION_SWEEP_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub retention_sweep_seconds: u64,

    /// Aggregates a consumer handles at once from one fetched batch (each
    /// aggregate's events still in their stream order, each event in its
    /// own transaction). On SQLite, one writer at a time, it is always 1.
    #[arg(long, env = "BOXOFFICE_CONSUMER_LANES", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=32))]
    pub consumer_lanes: u64,

    /// Deliveries of a failing event before it is dead-lettered.
    #[arg(long, env = "BOXOFFICE_CONSUMER_MAX_DELIVERIES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub consumer_max_deliveries: u32,

    /// The first retry of a failing event comes this long after it failed
    /// (later ones twice, four times… as late); its aggregate's later
    /// events wait meanwhile.
    #[arg(
        long,
        env = "BOXOFFICE_CONSUMER_CLAIM_IDLE_MS",
        default_value_t = 30_000
    )]
    pub consumer_claim_idle_ms: u64,

    /// One consumer at a time reads each partition of a group (so an
    /// aggregate's events are handled in order across instances); its hold
    /// lasts this long unless renewed (every third of it). Another
    /// instance takes the partition over this long after its reader died.
    #[arg(
        long,
        env = "BOXOFFICE_CONSUMER_HOLD_MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(100..=600_000)
    )]
    pub consumer_hold_ms: u64,

    /// How long a seat hold lasts.
    #[arg(long, env = "BOXOFFICE_HOLD_MINUTES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=120))]
    pub hold_minutes: u32,

    /// Sales of a schedule close this many minutes before its show starts:
    /// holds, payments, waitlist joins and waitlist offers are refused (409
    /// `sales_closed`) from then on. 0 sells until the show starts.
    #[arg(long, env = "BOXOFFICE_SALES_CLOSE_MINUTES_BEFORE_START", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=525_600))]
    pub sales_close_minutes_before_start: u32,

    /// Seats one user may hold at once.
    #[arg(long, env = "BOXOFFICE_HOLD_LIMIT", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub hold_limit: u32,

    /// How long before the show a buyer may still cancel a ticket
    /// (`POST /v1/payments/{id}/refunds`); 0 allows it until the show starts.
    #[arg(long, env = "BOXOFFICE_CANCEL_CUTOFF_MINUTES", default_value_t = 1_440, value_parser = clap::value_parser!(u32).range(0..=525_600))]
    pub cancel_cutoff_minutes: u32,

    /// First retry delay of a failed compensation step; each retry doubles it.
    #[arg(long, env = "BOXOFFICE_COMPENSATION_RETRY_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub compensation_retry_ms: u64,

    /// How often the coupon reconciler compares every live campaign's issue
    /// ledger with the database and repairs drift.
    #[arg(long, env = "BOXOFFICE_COUPON_RECONCILE_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub coupon_reconcile_seconds: u64,

    /// Bench-only build (`bench-strategies`): how coupon issues are decided.
    /// `ledger` is the production path; the others are the classic lock
    /// strategies the bench compares it with through the same route. They
    /// need PostgreSQL, and the Redis locks standalone Redis.
    #[cfg(feature = "bench-strategies")]
    #[arg(
        long,
        env = "BOXOFFICE_COUPON_LOCK_STRATEGY",
        value_enum,
        default_value = "ledger"
    )]
    pub coupon_lock_strategy: crate::coupon::infra::locks::LockStrategy,

    /// Bench-only build (`bench-strategies`): answer the refusals of a
    /// sold-out campaign from memory (as a release always does), or send
    /// every request to the strategy.
    #[cfg(feature = "bench-strategies")]
    #[arg(long, env = "BOXOFFICE_COUPON_SOLD_OUT_MEMORY", default_value_t = true, action = ArgAction::Set)]
    pub coupon_sold_out_memory: bool,

    /// A ledger entry with no database row is dropped by the reconciler only
    /// once it is this old (its winner may still be writing).
    #[arg(long, env = "BOXOFFICE_COUPON_RECONCILE_GRACE_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub coupon_reconcile_grace_seconds: u64,

    /// Prefix of every Redis key boxoffice owns (waiting rooms, ledgers).
    #[arg(long, env = "BOXOFFICE_REDIS_PREFIX", default_value = "bo")]
    pub redis_prefix: String,

    /// Default waiting-room admission rate (per concert, per second).
    #[arg(long, env = "BOXOFFICE_QUEUE_ADMIT_PER_SECOND", default_value_t = 50)]
    pub queue_admit_per_second: i64,

    /// Default cap on people admitted and not yet done, per concert.
    #[arg(long, env = "BOXOFFICE_QUEUE_MAX_ACTIVE", default_value_t = 1_000)]
    pub queue_max_active: i64,

    /// Default time an admitted person may take to reserve and pay.
    #[arg(
        long,
        env = "BOXOFFICE_QUEUE_ACTIVE_TTL_SECONDS",
        default_value_t = 600
    )]
    pub queue_active_ttl_seconds: i64,

    /// Default time a waiting person may go without polling before losing the place.
    #[arg(
        long,
        env = "BOXOFFICE_QUEUE_HEARTBEAT_GRACE_SECONDS",
        default_value_t = 60
    )]
    pub queue_heartbeat_grace_seconds: i64,

    /// How often the admission scheduler runs.
    #[arg(long, env = "BOXOFFICE_QUEUE_TICK_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub queue_tick_ms: u64,

    /// An empty waiting room (nobody waiting or admitted, its events
    /// forwarded) left alone this long is retired: no longer listed or
    /// ticked, until somebody enters it again.
    #[arg(long, env = "BOXOFFICE_QUEUE_IDLE_ROOM_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub queue_idle_room_seconds: u64,

    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM.
    #[arg(long, env = "BOXOFFICE_SHUTDOWN_GRACE_SECONDS", default_value_t = 10)]
    pub shutdown_grace_seconds: u64,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user id (the token's `sub`).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub user: i64,
    /// The token's role (default `user`).
    #[arg(long, value_enum)]
    pub role: Option<TokenRole>,
    /// Give the token the `admin` role: `--role admin`.
    #[arg(long)]
    pub admin: bool,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(i64).range(1..=31_536_000))]
    pub ttl: i64,
}
/// The role `boxoffice token` writes into the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenRole {
    /// Buys tickets: their own wallet, holds, payments and coupons.
    User,
    /// Scans tickets at the door and nothing else.
    Staff,
    /// Operates the service, and may do what users and staff may.
    Admin,
}

impl TokenArgs {
    /// The role asked for, by `--role` or `--admin`; a usage error when
    /// both are given and disagree.
    pub fn role(&self) -> Result<TokenRole, clap::Error> {
        match (self.role, self.admin) {
            (None, false) => Ok(TokenRole::User),
            (None, true) | (Some(TokenRole::Admin), true) => Ok(TokenRole::Admin),
            (Some(role), false) => Ok(role),
            (Some(role), true) => {
                let role = role.to_possible_value().map(|v| v.get_name().to_owned());
                Err(<Cli as clap::CommandFactory>::command().error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "`--admin` asks for the admin role but `--role {}` for another; give one of them",
                        role.unwrap_or_default()
                    ),
                ))
            }
        }
    }
}

impl Settings {
    /// The settings a bare `boxoffice` starts with, before flags and env.
    pub fn defaults() -> Self {
        Cli::parse_from(["boxoffice"]).settings
    }

    /// SQLite and no Redis: one process with in-process adapters.
    pub fn is_embedded_default(&self) -> bool {
        self.database_url.starts_with("sqlite:")
            && self.redis_url.is_none()
            && self.redis_cluster_nodes.is_empty()
    }

    /// Whether the demo concert is seeded into an empty catalog.
    pub fn seeds_demo(&self) -> bool {
        self.seed_demo.unwrap_or_else(|| self.is_embedded_default())
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_work_before_and_after_the_subcommand() {
        assert!(
            Cli::command()
                .get_arguments()
                .all(|arg| arg.is_global_set()),
            "every setting is global"
        );
        let cli = Cli::parse_from(["boxoffice", "serve", "--listen", "127.0.0.1:0"]);
        assert!(matches!(cli.command, Some(Command::Serve)));
        assert_eq!(cli.settings.listen, "127.0.0.1:0");

        let cli = Cli::parse_from([
            "boxoffice",
            "--database-url",
            "sqlite://x.db",
            "token",
            "--user",
            "42",
            "--admin",
        ]);
        assert_eq!(cli.settings.database_url, "sqlite://x.db");
        let Some(Command::Token(args)) = cli.command else {
            panic!("expected token")
        };
        assert_eq!((args.user, args.admin, args.ttl), (42, true, 86_400));
        assert_eq!(args.role().unwrap(), TokenRole::Admin);
    }

    #[test]
    fn token_takes_a_role_or_the_admin_shorthand_but_not_two_that_disagree() {
        let role = |args: &[&str]| {
            let mut argv = vec!["boxoffice", "token", "--user", "7"];
            argv.extend_from_slice(args);
            let Some(Command::Token(args)) = Cli::try_parse_from(argv)?.command else {
                panic!("expected token")
            };
            args.role()
        };
        assert_eq!(role(&[]).unwrap(), TokenRole::User);
        assert_eq!(role(&["--role", "user"]).unwrap(), TokenRole::User);
        assert_eq!(role(&["--role", "staff"]).unwrap(), TokenRole::Staff);
        assert_eq!(role(&["--role", "admin"]).unwrap(), TokenRole::Admin);
        assert_eq!(role(&["--admin"]).unwrap(), TokenRole::Admin);
        assert_eq!(
            role(&["--admin", "--role", "admin"]).unwrap(),
            TokenRole::Admin,
            "both, agreeing"
        );
        for disagreeing in [
            ["--admin", "--role", "staff"],
            ["--role", "user", "--admin"],
        ] {
            let err = role(&disagreeing).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
            assert!(err.to_string().contains("`--admin`"), "{err}");
        }
        let err = role(&["--role", "root"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
    }

    #[test]
    fn the_demo_is_seeded_on_the_embedded_default_only_unless_asked() {
        let settings = |args: &[&str]| {
            let mut argv = vec!["boxoffice"];
            argv.extend_from_slice(args);
            Cli::parse_from(argv).settings
        };
        assert!(settings(&[]).seeds_demo());
        assert!(!settings(&["--seed-demo", "false"]).seeds_demo());
        assert!(!settings(&["--database-url", "postgres://u@h/db"]).seeds_demo());
        assert!(!settings(&["--redis-url", "redis://127.0.0.1/"]).seeds_demo());
        assert!(
            settings(&["--database-url", "postgres://u@h/db", "--seed-demo", "true"]).seeds_demo()
        );
    }

    #[test]
    fn token_rejects_non_positive_users() {
        assert!(Cli::try_parse_from(["boxoffice", "token", "--user", "0"]).is_err());
    }
}
