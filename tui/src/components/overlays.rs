use crossterm::event::KeyCode;
use ratatui::{
    Frame,
    layout::{Constraint, Flex, Layout, Rect},
    style::{Color, Style},
    text::Line,
    widgets::{Block, Borders, Clear, Paragraph},
};

use super::{Component, detail, queue::room_change};
use crate::app::{Action, App, Command, Confirm};

pub(super) fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height)])
        .flex(Flex::Center)
        .areas(area);
    let [cell] = Layout::horizontal([Constraint::Length(width)])
        .flex(Flex::Center)
        .areas(row);
    cell
}

/// The keyboard help, on `?`.
pub struct Help;

impl Component for Help {
    fn draw(&self, _app: &App, frame: &mut Frame, area: Rect) {
        let lines = [
            "1-7, Tab/Shift-Tab, ←/→   switch tabs",
            "↑/↓ or j/k                select a row",
            "a        Alerts: acknowledge the selected alert",
            "r        Compensations: retry the selected step",
            "r        Events: replay the selected dead letter",
            "e / m    Queue: the selected room's admit rate / max active",
            "o        Queue: set when the room opens (+10m, RFC 3339, empty)",
            "p        Queue: pause or resume admission",
            "c        Queue: close the room to newcomers (asks) or reopen it",
            "x        Schedules: cancel the selected schedule (asks first)",
            "↑/↓      Door: the schedule whose door is shown, live",
            "d/Enter  Alerts, Compensations, Events: the selected row in full",
            "g or F5  refresh now (it refreshes every second anyway)",
            "Esc      dismiss the message line",
            "q        quit",
            "",
            "Press ? or Esc to close.",
        ];
        let popup = centered(area, 72, lines.len() as u16 + 2);
        frame.render_widget(Clear, popup);
        frame.render_widget(
            Paragraph::new(lines.iter().map(|l| Line::from(*l)).collect::<Vec<_>>())
                .block(Block::default().borders(Borders::ALL).title("Keys")),
            popup,
        );
    }

    fn on_key(&self, _app: &App, key: KeyCode) -> Option<Action> {
        matches!(key, KeyCode::Esc | KeyCode::Char('?' | 'q')).then_some(Action::Close)
    }
}

/// The yes-or-no question before a step that cannot be undone.
pub struct ConfirmDialog;

impl Component for ConfirmDialog {
    fn draw(&self, app: &App, frame: &mut Frame, area: Rect) {
        let Some(confirm) = &app.confirm else {
            return;
        };
        let (title, lines) = match confirm {
            Confirm::CancelSchedule { schedule, sold } => (
                format!("Cancel schedule {schedule}?"),
                vec![
                    Line::from("The sale stops at once; every hold is released"),
                    Line::from(format!("and all {sold} sold tickets are refunded.")),
                    Line::from("This cannot be undone."),
                    Line::styled(
                        "y cancel the schedule   n or Esc keep it",
                        Style::default().fg(Color::Yellow),
                    ),
                ],
            ),
            Confirm::CloseRoom { concert, waiting } => (
                format!("Close the room of concert {concert}?"),
                vec![
                    Line::from("Newcomers are refused (409 queue_closed);"),
                    Line::from(format!("the {waiting} waiting and the active keep")),
                    Line::from("their places. c again reopens it."),
                    Line::styled(
                        "y close the room   n or Esc keep it open",
                        Style::default().fg(Color::Yellow),
                    ),
                ],
            ),
        };
        let popup = centered(area, 52, lines.len() as u16 + 2);
        frame.render_widget(Clear, popup);
        frame.render_widget(
            Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
            popup,
        );
    }

    /// `y` sends the step, `n` or Esc drops it; any other key leaves the
    /// question open.
    fn on_key(&self, app: &App, key: KeyCode) -> Option<Action> {
        match (key, app.confirm.as_ref()?) {
            (KeyCode::Char('y'), Confirm::CancelSchedule { schedule, .. }) => {
                Some(Action::Send(Command::CancelSchedule(*schedule)))
            }
            (KeyCode::Char('y'), Confirm::CloseRoom { concert, .. }) => Some(
                room_change(app, *concert, |change| {
                    change.queueing_method = Some("closed".into())
                })
                .map_or(Action::Close, Action::Send),
            ),
            (KeyCode::Char('n') | KeyCode::Esc, _) => Some(Action::Close),
            _ => None,
        }
    }
}

/// The selected row in full (`d` or Enter).
pub struct DetailPane;

impl Component for DetailPane {
    fn draw(&self, app: &App, frame: &mut Frame, area: Rect) {
        let Some((title, lines)) = detail(app) else {
            return;
        };
        let width = area.width.saturating_sub(8).max(20);
        let height = area.height.saturating_sub(2).max(5);
        let popup = centered(area, width, height);
        frame.render_widget(Clear, popup);
        let mut text: Vec<Line> = lines.into_iter().map(Line::from).collect();
        text.push(Line::styled(
            "Esc, d or Enter to close",
            Style::default().fg(Color::DarkGray),
        ));
        frame.render_widget(
            Paragraph::new(text)
                .wrap(ratatui::widgets::Wrap { trim: false })
                .block(Block::default().borders(Borders::ALL).title(title)),
            popup,
        );
    }

    fn on_key(&self, _app: &App, key: KeyCode) -> Option<Action> {
        matches!(
            key,
            KeyCode::Esc | KeyCode::Enter | KeyCode::Char('d' | 'q')
        )
        .then_some(Action::Close)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{loaded, press};

    #[test]
    fn details_open_on_rows_that_have_them_and_close_again() {
        let mut app = loaded();
        press(&mut app, KeyCode::Char('d'));
        assert!(!app.show_detail, "the Queue tab has no detail pane");
        press(&mut app, KeyCode::Char('4'));
        press(&mut app, KeyCode::Enter);
        assert!(app.show_detail);
        let (title, lines) = detail(&app).unwrap();
        assert_eq!(title, "Dead letter 2");
        assert!(
            lines.iter().any(|l| l.contains("\"paymentId\": 41")),
            "{lines:?}"
        );
        assert_eq!(
            press(&mut app, KeyCode::Char('r')),
            None,
            "keys go to the pane"
        );
        press(&mut app, KeyCode::Esc);
        assert!(!app.show_detail);
        press(&mut app, KeyCode::Char('2'));
        press(&mut app, KeyCode::Char('d'));
        assert!(
            detail(&app)
                .unwrap()
                .1
                .iter()
                .any(|l| l.contains("attempts so far: 5"))
        );
        press(&mut app, KeyCode::Char('q'));
        assert!(!app.quit && !app.show_detail, "q closes the pane first");
    }

    #[test]
    fn help_opens_and_closes() {
        let mut app = loaded();
        press(&mut app, KeyCode::Char('?'));
        assert!(app.show_help);
        press(&mut app, KeyCode::Char('q'));
        assert!(!app.show_help && !app.quit, "q closes the help first");
    }
}
