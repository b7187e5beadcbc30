use anyhow::Context;
use boxoffice::{
    app::{Application, openapi_spec},
    auth::{domain::Role, infra::jwt::JwtCodec, usecase::mint_token},
    config::{Cli, Command, Settings},
    db,
    kernel::{SystemClock, UserId},
    telemetry,
};
use chrono::TimeDelta;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A test build arms the failpoints named in `FAILPOINTS` (the crash
    // tests stop a request at a chosen step, then SIGKILL the process).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse();
    let settings = cli.settings;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Migrate => {
            telemetry::init(settings.log_format);
            let conn = db::connect(&settings.database_url).await?;
            db::migrate(&conn).await?;
            eprintln!("migrations applied to {}", redact(&settings.database_url));
            Ok(())
        }
        Command::Openapi => {
            println!("{}", openapi_spec());
            Ok(())
        }
        Command::Token(args) => {
            let codec = JwtCodec::new(settings.jwt_secret.as_bytes());
            let role = if args.admin { Role::Admin } else { Role::User };
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

async fn serve(settings: Settings) -> anyhow::Result<()> {
    telemetry::init(settings.log_format);
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
    if settings.uses_dev_secret() {
        tracing::warn!(
            "using the built-in development JWT secret; set BOXOFFICE_JWT_SECRET in production"
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
        eprintln!(
            "\n  boxoffice is running at {base}\n  API docs:    {base}/docs\n\n  user token (24h):  {user}\n  admin token (24h): {admin}\n\n  try:  curl {base}/v1/concerts\n        curl -H \"Authorization: Bearer {user}\" {base}/v1/schedules/1/seats\n"
        );
    }
    app.run_until_stopped(shutdown_signal()).await?;
    tracing::info!("boxoffice stopped");
    Ok(())
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
