use anyhow::Context;
use boxoffice::{
    app::{Application, openapi_spec},
    auth::{domain::Role, infra::jwt::JwtCodec, usecase::mint_token},
    config::{Cli, Command, Settings, TicketKeysCommand, TokenRole},
    db,
    kernel::{SystemClock, UserId},
    telemetry,
    ticket::{
        domain::may_retire,
        infra::{
            codes::{TicketKey, records},
            db::DbTicketKeys,
        },
    },
};
use chrono::TimeDelta;
use clap::Parser;
use std::time::Duration;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // One line, causes joined, whatever RUST_BACKTRACE says: an operator
    // reads why the server would not start, not a stack.
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    // A test build arms the failpoints named in `FAILPOINTS` (the crash
    // tests stop a request at a chosen step, then SIGKILL the process).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    // The bench's lock strategies are for the bench's own binary: a
    // `boxoffice` built with them by mistake refuses to start.
    #[cfg(feature = "bench-strategies")]
    anyhow::ensure!(
        env!("CARGO_BIN_NAME") == "boxoffice-strategies",
        "this `{}` was built with the bench-only `bench-strategies` feature; \
         build the server without it (only `boxoffice-strategies` may have it)",
        env!("CARGO_BIN_NAME")
    );
    let cli = Cli::parse();
    let settings = cli.settings;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Migrate => {
            let _telemetry = telemetry::init(settings.log_format, None)?;
            migrated(&settings).await?;
            eprintln!("migrations applied to {}", redact(&settings.database_url));
            Ok(())
        }
        Command::TicketKeys(TicketKeysCommand::Rotate) => {
            let _telemetry = telemetry::init(settings.log_format, None)?;
            let key = TicketKey::generate();
            let stored = DbTicketKeys::new(migrated(&settings).await?)
                .insert_next(&key)
                .await
                .map_err(|err| anyhow::anyhow!("storing the new ticket signing key: {err}"))?;
            anyhow::ensure!(
                stored,
                "another rotation stored a key at the same moment; run it again if one more is wanted"
            );
            println!("{}", key.public().kid());
            Ok(())
        }
        Command::TicketKeys(TicketKeysCommand::Retire { kid }) => {
            let _telemetry = telemetry::init(settings.log_format, None)?;
            let keys = DbTicketKeys::new(migrated(&settings).await?);
            let stored = keys.stored().await?;
            let generation = may_retire(&records(&stored), keys.generation_of(&kid).await?)?;
            anyhow::ensure!(
                keys.retire(generation, chrono::Utc::now()).await?,
                "another command retired that key at the same moment"
            );
            eprintln!("retired ticket key {kid}: every process stops trusting it within 30 s");
            Ok(())
        }
        Command::Openapi => {
            println!("{}", openapi_spec());
            Ok(())
        }
        Command::Token(args) => {
            let codec = JwtCodec::new(settings.identity_secret().as_bytes());
            let role = match args.role().unwrap_or_else(|err| err.exit()) {
                TokenRole::User => Role::User,
                TokenRole::Staff => Role::Staff,
                TokenRole::Admin => Role::Admin,
            };
            let token = mint_token(
                &codec,
                &SystemClock,
                UserId(args.user),
                role,
                TimeDelta::seconds(args.ttl),
            )
            .context("minting the token")?;
            println!("{token}");
            Ok(())
        }
    }
}

/// The database, its schema brought up to date.
async fn migrated(settings: &Settings) -> anyhow::Result<sea_orm::DatabaseConnection> {
    let conn = db::connect_with(
        &settings.database_url,
        Duration::from_secs(settings.sqlite_busy_timeout_seconds),
    )
    .await?;
    db::while_starting(&conn, db::migrate(&conn)).await?;
    Ok(conn)
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(settings.log_format, settings.otlp_endpoint.as_deref())
        .context("setting up the OTLP trace export")?;
    let app = Application::build(&settings).await?;
    let base = format!("http://{}", app.addr());
    tracing::info!(url = %base, database = %redact(&settings.database_url), redis = settings.redis_url.is_some(), redis_cluster = !settings.redis_cluster_nodes.is_empty(), "boxoffice is listening");
    if let Some(demo) = &app.seeded {
        tracing::info!(
            concert = demo.id.value(),
            schedules = demo.schedules.len(),
            "seeded the demo concert"
        );
    }
    // `Application::build` refused the development secret anywhere else.
    if settings.uses_dev_secret() && settings.is_local_development() {
        tracing::warn!(
            "using the built-in development JWT secret (embedded default on loopback only); set BOXOFFICE_JWT_SECRET anywhere else"
        );
        let mint = |user, role| {
            mint_token(
                app.codec.as_ref(),
                &SystemClock,
                UserId(user),
                role,
                TimeDelta::hours(24),
            )
        };
        let user = mint(1, Role::User)?;
        let admin = mint(1000, Role::Admin)?;
        eprintln!("{}", startup_hint(&base, &user, &admin));
    }
    app.run_until_stopped(shutdown_signal()).await?;
    tracing::info!("boxoffice stopped");
    Ok(())
}

/// What a developer sees on start: where it runs, two tokens, and a
/// walk-through that works as pasted into bash (the seat map needs an
/// admitted queue token; `cli::the_startup_hint_runs_as_printed` runs it).
fn startup_hint(base: &str, user: &str, admin: &str) -> String {
    format!(
        r#"
  boxoffice is running at {base}
  API docs:    {base}/docs

  user token (24h):  {user}
  admin token (24h): {admin}

  try it (paste into bash):
    B={base}; USER_TOKEN={user}
    curl -s $B/v1/concerts; echo
    Q=$(curl -s -X POST $B/v1/queue/tokens -H "Authorization: Bearer $USER_TOKEN" -H 'content-type: application/json' -d '{{"concertId":1}}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
    until curl -s -H "X-Queue-Token: $Q" $B/v1/queue/status | grep -q '"active"'; do sleep 0.2; done
    curl -s -H "Authorization: Bearer $USER_TOKEN" -H "X-Queue-Token: $Q" "$B/v1/schedules/1/seats?limit=3"; echo
"#
    )
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Hides the password of a database URL for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
