use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    widgets::Row,
};

use super::{Component, ListView};
use crate::app::{App, Tab};

/// Schedules, newest first: sale status, seats sold, and a cancellation's
/// refunds (done, still to do, given up).
pub struct SchedulesTab;

/// `done of total` as a ten-cell bar and a percentage.
fn progress(done: u64, total: u64) -> String {
    if total == 0 {
        return "-".into();
    }
    let filled = (done * 10 / total) as usize;
    format!(
        "{}{} {:>3}%",
        "█".repeat(filled),
        "░".repeat(10 - filled),
        done * 100 / total
    )
}

impl Component for SchedulesTab {
    fn draw(&self, app: &App, frame: &mut Frame, area: Rect) {
        let rows = app
            .schedules()
            .iter()
            .map(|s| {
                let refunds = s.refunds_done + s.refunds_pending;
                Row::new(vec![
                    s.id.to_string(),
                    s.status.replace('_', " "),
                    s.seats.to_string(),
                    s.sold.to_string(),
                    s.refunds_done.to_string(),
                    s.refunds_pending.to_string(),
                    s.refunds_failed.to_string(),
                    if s.status == "on_sale" {
                        String::new()
                    } else {
                        progress(s.refunds_done, refunds)
                    },
                ])
            })
            .collect();
        ListView {
            title: "Schedules (newest first)",
            header: Row::new(vec![
                "id",
                "status",
                "seats",
                "sold",
                "refunded",
                "to refund",
                "failed",
                "refunds",
            ]),
            widths: &[
                Constraint::Length(6),
                Constraint::Length(11),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Length(10),
                Constraint::Length(7),
                Constraint::Min(16),
            ],
            empty: "No schedules.",
        }
        .render(frame, area, rows, Some(app.selected(Tab::Schedules)));
    }
}
