use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    style::{Color, Style},
    widgets::{Cell, Row},
};

use super::{Component, ListView};
use crate::app::{App, Tab};

/// Alerts, unacknowledged first; `a` acknowledges the selected one.
pub struct AlertsTab;

impl Component for AlertsTab {
    fn draw(&self, app: &App, frame: &mut Frame, area: Rect) {
        let rows = app
            .alerts()
            .into_iter()
            .map(|a| {
                let colour = match a.severity.as_str() {
                    "critical" => Color::Red,
                    "warning" => Color::Yellow,
                    _ => Color::Gray,
                };
                Row::new(vec![
                    Cell::from(a.id.to_string()),
                    Cell::from(a.severity.clone()).style(Style::default().fg(colour)),
                    Cell::from(a.source.clone()),
                    Cell::from(a.created_at.format("%m-%d %H:%M:%S").to_string()),
                    Cell::from(if a.acknowledged { "yes" } else { "NO" }),
                    Cell::from(a.message.clone()),
                ])
            })
            .collect();
        ListView {
            title: "Alerts (unacknowledged first)",
            header: Row::new(vec![
                "id", "severity", "source", "raised", "acked", "message",
            ]),
            widths: &[
                Constraint::Length(5),
                Constraint::Length(9),
                Constraint::Length(18),
                Constraint::Length(15),
                Constraint::Length(6),
                Constraint::Min(20),
            ],
            empty: "No alerts.",
        }
        .render(frame, area, rows, Some(app.selected(Tab::Alerts)));
    }
}
