use std::time::Duration;

use boxoffice_tui::{api::AdminClient, app::App, run};
use clap::Parser;
use tokio::sync::mpsc;

/// boxoffice's operator console: waiting rooms, compensations, alerts, the
/// event pipeline and coupon campaigns, refreshed live.
#[derive(Debug, Parser)]
#[command(name = "boxoffice-tui", version)]
struct Cli {
    /// The server's base URL.
    #[arg(
        long,
        env = "BOXOFFICE_TUI_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// An admin JWT (`boxoffice token --user 1 --admin` mints one).
    #[arg(long, env = "BOXOFFICE_TUI_TOKEN", hide_env_values = true)]
    token: String,
    /// How often to refresh, in milliseconds.
    #[arg(long, env = "BOXOFFICE_TUI_REFRESH_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    refresh_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = AdminClient::new(&cli.url, &cli.token)?;
    let (action_tx, mut actions) = mpsc::channel(64);
    let (command_tx, commands) = mpsc::channel(16);
    let (refresh_tx, refresh_rx) = mpsc::channel(1);
    run::spawn_refresher(
        client.clone(),
        action_tx.clone(),
        refresh_rx,
        Duration::from_millis(cli.refresh_ms),
    );
    run::spawn_commands(client.clone(), action_tx.clone(), refresh_tx, commands);
    run::spawn_input(action_tx);

    // Raw mode and the alternate screen, with a panic hook that restores
    // the terminal before the panic message is printed.
    let mut terminal = ratatui::init();
    let mut app = App::new(client.base());
    let result = run::run(&mut terminal, &mut app, &mut actions, &command_tx).await;
    ratatui::restore();
    result
}
