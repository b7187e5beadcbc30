use crossterm::event::KeyCode;
use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    widgets::Row,
};

use super::{Component, ListView};
use crate::app::{Action, App, Command, Tab};

/// Saga steps that failed or are still pending; `r` retries a failed one.
pub struct CompensationsTab;

impl Component for CompensationsTab {
    fn draw(&self, app: &App, frame: &mut Frame, area: Rect) {
        let rows = app
            .compensations()
            .into_iter()
            .map(|c| {
                Row::new(vec![
                    c.id.to_string(),
                    format!("{}/{}", c.saga, c.step),
                    c.payment_id.to_string(),
                    c.status.clone(),
                    c.attempts.to_string(),
                    c.last_error.clone().unwrap_or_default(),
                ])
            })
            .collect();
        ListView {
            title: "Compensations (failed first, then pending)",
            header: Row::new(vec![
                "id",
                "saga/step",
                "payment",
                "status",
                "tries",
                "last error",
            ]),
            widths: &[
                Constraint::Length(6),
                Constraint::Length(16),
                Constraint::Length(8),
                Constraint::Length(10),
                Constraint::Length(6),
                Constraint::Min(20),
            ],
            empty: "No failed or pending compensations.",
        }
        .render(frame, area, rows, Some(app.selected(Tab::Compensations)));
    }

    fn on_key(&self, app: &App, key: KeyCode) -> Option<Action> {
        if key != KeyCode::Char('r') {
            return None;
        }
        app.compensations()
            .get(app.selected(Tab::Compensations))
            .map(|step| Action::Send(Command::RetryCompensation(step.id)))
    }

    /// The step's attempts and last error.
    fn detail(&self, app: &App) -> Option<(String, Vec<String>)> {
        let open = app.compensations();
        let step = open.get(app.selected(Tab::Compensations))?;
        Some((
            format!("Compensation {}", step.id),
            vec![
                format!(
                    "saga/step: {}/{}   payment: {}",
                    step.saga, step.step, step.payment_id
                ),
                format!(
                    "status: {}   attempts so far: {}",
                    step.status, step.attempts
                ),
                String::new(),
                "last error:".into(),
                step.last_error.clone().unwrap_or_else(|| "(none)".into()),
            ],
        ))
    }
}
