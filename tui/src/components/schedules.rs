use crossterm::event::KeyCode;
use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    widgets::Row,
};

use super::{Component, ListView};
use crate::app::{Action, App, Confirm, Notice, Tab};

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

    /// `x` asks before cancelling a schedule that is on sale.
    fn on_key(&self, app: &App, key: KeyCode) -> Option<Action> {
        if key != KeyCode::Char('x') {
            return None;
        }
        let schedule = app.schedules().get(app.selected(Tab::Schedules))?;
        Some(if schedule.status == "on_sale" {
            Action::Ask(Confirm::CancelSchedule {
                schedule: schedule.id,
                sold: schedule.sold,
            })
        } else {
            Action::Notify(Notice::Info(format!(
                "schedule {} is already {}",
                schedule.id, schedule.status
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        app::Command,
        fixtures::{loaded, press},
    };

    #[test]
    fn cancelling_a_schedule_asks_first_and_only_for_one_on_sale() {
        let mut app = loaded();
        press(&mut app, KeyCode::Char('6'));
        assert_eq!(app.tab, Tab::Schedules);
        assert_eq!(press(&mut app, KeyCode::Char('x')), None, "asks first");
        assert_eq!(
            app.confirm,
            Some(Confirm::CancelSchedule {
                schedule: 6,
                sold: 18_250
            })
        );
        assert_eq!(press(&mut app, KeyCode::Char('q')), None);
        assert!(
            !app.quit && app.confirm.is_some(),
            "other keys leave the question open"
        );
        assert_eq!(press(&mut app, KeyCode::Char('n')), None);
        assert_eq!(app.confirm, None, "no sends nothing");
        press(&mut app, KeyCode::Char('x'));
        assert_eq!(press(&mut app, KeyCode::Esc), None);
        assert_eq!(app.confirm, None);
        press(&mut app, KeyCode::Char('x'));
        assert_eq!(
            press(&mut app, KeyCode::Char('y')),
            Some(Command::CancelSchedule(6))
        );
        assert_eq!(app.confirm, None);
        // A schedule already cancelling is not asked about again.
        press(&mut app, KeyCode::Down);
        assert_eq!(press(&mut app, KeyCode::Char('x')), None);
        assert_eq!(app.confirm, None);
        assert!(matches!(&app.notice, Some(Notice::Info(m)) if m.contains("cancelling")));
    }
}
