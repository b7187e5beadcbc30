use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    widgets::{Block, Borders, Paragraph, Row, Sparkline},
};

use super::{Component, ListView, waiting_time};
use crate::app::{App, Tab};

/// Every concert's waiting room, and the admissions of the selected one.
pub struct QueueTab;

impl Component for QueueTab {
    fn draw(&self, app: &App, frame: &mut Frame, area: Rect) {
        let rooms = app
            .snapshot
            .as_ref()
            .map(|s| s.rooms.as_slice())
            .unwrap_or_default();
        let [list, chart] =
            Layout::vertical([Constraint::Min(5), Constraint::Length(7)]).areas(area);
        let now = (app.clock)();
        let rows = rooms
            .iter()
            .map(|r| {
                Row::new(vec![
                    r.concert_id.to_string(),
                    r.settings.state(now),
                    r.waiting.to_string(),
                    format!("{}/{}", r.active, r.settings.max_active),
                    format!("{}/s", r.settings.admit_per_second),
                    r.admitted_last_minute.to_string(),
                    waiting_time(r.oldest_wait_seconds),
                    waiting_time(r.tail_wait_seconds),
                ])
            })
            .collect();
        ListView {
            title: "Waiting rooms",
            header: Row::new(vec![
                "concert",
                "state",
                "waiting",
                "active/max",
                "admit rate",
                "admitted 1m",
                "oldest wait",
                "tail wait",
            ]),
            widths: &[
                Constraint::Length(9),
                Constraint::Length(15),
                Constraint::Length(9),
                Constraint::Length(12),
                Constraint::Length(11),
                Constraint::Length(12),
                Constraint::Length(12),
                Constraint::Length(10),
            ],
            empty: "No waiting room has been entered yet.",
        }
        .render(frame, list, rows, Some(app.selected(Tab::Queue)));
        let Some(room) = rooms.get(app.selected(Tab::Queue)) else {
            frame.render_widget(
                Paragraph::new("")
                    .block(Block::default().borders(Borders::ALL).title("Admissions")),
                chart,
            );
            return;
        };
        let history: Vec<u64> = app
            .admissions
            .get(&room.concert_id)
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default();
        let title = format!(
            "Admissions per refresh, concert {} (last {}: {})",
            room.concert_id,
            history.len(),
            history.iter().sum::<u64>()
        );
        frame.render_widget(
            Sparkline::default()
                .block(Block::default().borders(Borders::ALL).title(title))
                .data(&history),
            chart,
        );
    }
}
