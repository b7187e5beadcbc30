use crossterm::event::KeyCode;
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    widgets::{Block, Borders, Paragraph, Row},
};

use super::{Component, ListView};
use crate::app::{Action, App, Command, Tab};

/// The outbox backlog, consumer-group lag (per stream partition when the
/// stream is partitioned) with the events the delivery audit re-sent each
/// group, and dead letters (`r` replays).
pub struct EventsTab;

impl Component for EventsTab {
    fn draw(&self, app: &App, frame: &mut Frame, area: Rect) {
        let Some(snapshot) = &app.snapshot else {
            return;
        };
        let events = &snapshot.events;
        let groups = events.consumers.len() as u16;
        let [summary, consumers, dead] = Layout::vertical([
            Constraint::Length(3),
            Constraint::Length(groups + 3),
            Constraint::Min(4),
        ])
        .areas(area);
        frame.render_widget(
            Paragraph::new(format!(
                "outbox pending: {}   oldest pending: {:.1}s   open dead letters: {}",
                events.outbox_pending, events.oldest_pending_seconds, events.dead_letters
            ))
            .block(Block::default().borders(Borders::ALL).title("Outbox")),
            summary,
        );
        let rows = events
            .consumers
            .iter()
            .map(|c| {
                // pending/lag of each partition, when the stream is partitioned.
                let by_partition = if c.partitions.len() > 1 {
                    c.partitions
                        .iter()
                        .map(|p| format!("p{} {}/{}", p.partition, p.pending, p.lag))
                        .collect::<Vec<_>>()
                        .join("  ")
                } else {
                    String::new()
                };
                Row::new(vec![
                    c.name.clone(),
                    c.pending.to_string(),
                    c.lag.to_string(),
                    c.redelivered.to_string(),
                    by_partition,
                ])
            })
            .collect();
        ListView {
            title: "Consumer groups",
            header: Row::new(vec![
                "group",
                "pending",
                "lag",
                "re-sent",
                "per partition: pending/lag",
            ]),
            widths: &[
                Constraint::Length(22),
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Min(20),
            ],
            empty: "No consumer groups yet.",
        }
        .render(frame, consumers, rows, None);
        let rows = snapshot
            .dead_letters
            .iter()
            .map(|d| {
                Row::new(vec![
                    d.id.to_string(),
                    d.consumer.clone(),
                    d.event_type.clone(),
                    d.deliveries.to_string(),
                    d.last_error.clone(),
                ])
            })
            .collect();
        ListView {
            title: "Dead letters",
            header: Row::new(vec!["id", "group", "event", "tries", "last error"]),
            widths: &[
                Constraint::Length(5),
                Constraint::Length(18),
                Constraint::Length(26),
                Constraint::Length(6),
                Constraint::Min(20),
            ],
            empty: "No dead letters.",
        }
        .render(frame, dead, rows, Some(app.selected(Tab::Events)));
    }

    fn on_key(&self, app: &App, key: KeyCode) -> Option<Action> {
        if key != KeyCode::Char('r') {
            return None;
        }
        app.dead_letters()
            .get(app.selected(Tab::Events))
            .map(|letter| Action::Send(Command::ReplayDeadLetter(letter.id)))
    }

    /// The dead letter's error and the event it carried, pretty-printed.
    fn detail(&self, app: &App) -> Option<(String, Vec<String>)> {
        let letters = app.dead_letters();
        let letter = letters.get(app.selected(Tab::Events))?;
        let envelope = serde_json::from_str::<serde_json::Value>(&letter.envelope)
            .ok()
            .and_then(|value| serde_json::to_string_pretty(&value).ok())
            .unwrap_or_else(|| letter.envelope.clone());
        let mut lines = vec![
            format!(
                "consumer: {}   event: {}   deliveries: {}",
                letter.consumer, letter.event_type, letter.deliveries
            ),
            format!(
                "set aside: {}",
                letter.created_at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            String::new(),
            format!("last error: {}", letter.last_error),
            String::new(),
            "event:".into(),
        ];
        lines.extend(envelope.lines().map(str::to_owned));
        Some((format!("Dead letter {}", letter.id), lines))
    }
}
