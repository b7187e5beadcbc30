//! The main loop, generic over the terminal backend, and the background
//! tasks that feed it: key presses, a refresh once a second, and commands.

use std::time::Duration;

use futures::StreamExt;
use ratatui::{Terminal, backend::Backend};
use tokio::sync::mpsc;

use crate::{
    api::{AdminClient, ApiError},
    app::{Action, App, Command, Notice},
    keys, ui,
};

/// Draws, waits for the next action, applies it, until the operator quits.
/// Never blocks on the network: fetching and commands run in other tasks.
pub async fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    actions: &mut mpsc::Receiver<Action>,
    commands: &mpsc::Sender<Command>,
) -> anyhow::Result<()>
where
    B::Error: Send + Sync + 'static,
{
    while !app.quit {
        terminal.draw(|frame| ui::draw(frame, app))?;
        let Some(action) = actions.recv().await else {
            break;
        };
        let command = match action {
            Action::Key(key) => keys::on_key(app, key),
            action => app.update(action),
        };
        if let Some(command) = command {
            // A full queue means the runtime is busy; the operator can retry.
            let _ = commands.try_send(command);
        }
    }
    Ok(())
}

/// Forwards key presses from the terminal.
pub fn spawn_input(actions: mpsc::Sender<Action>) {
    tokio::spawn(async move {
        let mut events = crossterm::event::EventStream::new();
        while let Some(Ok(event)) = events.next().await {
            if let crossterm::event::Event::Key(key) = event
                && actions.send(Action::Key(key)).await.is_err()
            {
                return;
            }
        }
    });
}

/// Fetches a snapshot every `every`, and at once when asked to.
pub fn spawn_refresher(
    client: AdminClient,
    actions: mpsc::Sender<Action>,
    mut refresh_now: mpsc::Receiver<()>,
    every: Duration,
) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                asked = refresh_now.recv() => if asked.is_none() { return },
            }
            let action = match client.snapshot().await {
                Ok(snapshot) => Action::Data(Box::new(snapshot)),
                Err(err) => Action::FetchFailed(err),
            };
            if actions.send(action).await.is_err() {
                return;
            }
        }
    });
}

/// Runs the operator's commands against the server and reports the outcome.
pub fn spawn_commands(
    client: AdminClient,
    actions: mpsc::Sender<Action>,
    refresh_now: mpsc::Sender<()>,
    mut commands: mpsc::Receiver<Command>,
) {
    tokio::spawn(async move {
        while let Some(command) = commands.recv().await {
            let outcome = match command {
                Command::Refresh => {
                    let _ = refresh_now.try_send(());
                    continue;
                }
                // Fetched like a refresh: a failure is the banner's, and
                // nothing is reported to the operator when it works.
                Command::Door(id) => {
                    let action = match client.door(id).await {
                        Ok(door) => Action::DoorData(Box::new(door)),
                        Err(err @ ApiError::Refused(_)) => {
                            Action::Notify(Notice::Error(format!("door of schedule {id}: {err}")))
                        }
                        Err(err) => Action::FetchFailed(err),
                    };
                    if actions.send(action).await.is_err() {
                        return;
                    }
                    continue;
                }
                Command::AckAlert(id) => client
                    .ack_alert(id)
                    .await
                    .map(|()| format!("alert {id} acknowledged")),
                Command::RetryCompensation(id) => client
                    .retry_compensation(id)
                    .await
                    .map(|()| format!("compensation {id} will be retried")),
                Command::ReplayDeadLetter(id) => client
                    .replay_dead_letter(id)
                    .await
                    .map(|()| format!("dead letter {id} replayed")),
                Command::CancelSchedule(id) => client.cancel_schedule(id).await.map(|()| {
                    format!("schedule {id} is being cancelled: holds released, tickets refunded")
                }),
                Command::SetQueueSettings { concert, change } => client
                    .update_queue_settings(concert, &change)
                    .await
                    .map(|()| crate::components::describe_change(concert, &change)),
            };
            let done = Action::Done(outcome.map_err(|err| err.to_string()));
            if actions.send(done).await.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use crossterm::event::{KeyCode, KeyEvent};
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::{app::Tab, fixtures::snapshot};

    #[tokio::test]
    async fn the_loop_applies_actions_sends_commands_and_stops_on_quit() {
        let mut terminal = Terminal::new(TestBackend::new(100, 24)).unwrap();
        let mut app = App::new("http://x");
        let (action_tx, mut actions) = mpsc::channel(8);
        let (command_tx, mut commands) = mpsc::channel(8);
        for action in [
            Action::Data(Box::new(snapshot(10))),
            Action::Key(KeyEvent::from(KeyCode::Char('3'))),
            Action::Key(KeyEvent::from(KeyCode::Char('a'))),
            Action::Key(KeyEvent::from(KeyCode::Char('q'))),
        ] {
            action_tx.send(action).await.unwrap();
        }
        run(&mut terminal, &mut app, &mut actions, &command_tx)
            .await
            .unwrap();
        assert!(app.quit);
        assert_eq!(app.tab, Tab::Alerts);
        assert_eq!(commands.try_recv(), Ok(Command::AckAlert(9)));
        assert!(
            terminal
                .backend()
                .to_string()
                .contains("Alerts (unacknowledged first)")
        );
    }
}
