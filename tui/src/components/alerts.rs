use crossterm::event::KeyCode;
use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    style::{Color, Style},
    widgets::{Cell, Row},
};

use super::{Component, ListView};
use crate::app::{Action, App, Command, Notice, Tab};

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

    fn on_key(&self, app: &App, key: KeyCode) -> Option<Action> {
        if key != KeyCode::Char('a') {
            return None;
        }
        let alerts = app.alerts();
        let alert = alerts.get(app.selected(Tab::Alerts))?;
        Some(if alert.acknowledged {
            Action::Notify(Notice::Info(format!(
                "alert {} is already acknowledged",
                alert.id
            )))
        } else {
            Action::Send(Command::AckAlert(alert.id))
        })
    }

    /// The alert's whole message, its webhook and whether its condition
    /// cleared.
    fn detail(&self, app: &App) -> Option<(String, Vec<String>)> {
        let alerts = app.alerts();
        let alert = alerts.get(app.selected(Tab::Alerts))?;
        Some((
            format!("Alert {}", alert.id),
            vec![
                format!("severity: {}   source: {}", alert.severity, alert.source),
                format!(
                    "raised: {}   acknowledged: {}",
                    alert.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    if alert.acknowledged { "yes" } else { "no" }
                ),
                format!(
                    "webhook: {} ({} tries){}",
                    if alert.webhook.is_empty() {
                        "none"
                    } else {
                        &alert.webhook
                    },
                    alert.webhook_attempts,
                    match (&alert.condition, alert.resolved_at) {
                        (Some(_), Some(at)) =>
                            format!("   resolved: {}", at.format("%H:%M:%S UTC")),
                        (Some(_), None) => "   still stuck".to_owned(),
                        _ => String::new(),
                    }
                ),
                String::new(),
                alert.message.clone(),
            ],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{loaded, press};

    #[test]
    fn acknowledging_takes_the_selected_unacknowledged_alert() {
        let mut app = loaded();
        press(&mut app, KeyCode::Char('3'));
        // Unacknowledged first: alert 9, then 7.
        assert_eq!(
            press(&mut app, KeyCode::Char('a')),
            Some(Command::AckAlert(9))
        );
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Down);
        assert_eq!(
            app.selected(Tab::Alerts),
            1,
            "the selection stops at the last row"
        );
        assert_eq!(press(&mut app, KeyCode::Char('a')), None);
        assert!(matches!(app.notice, Some(Notice::Info(_))));
        // `a` means nothing on other tabs.
        press(&mut app, KeyCode::Char('1'));
        assert_eq!(press(&mut app, KeyCode::Char('a')), None);
    }
}
