use ratatui::{
    Frame,
    layout::{Constraint, Flex, Layout, Rect},
    style::{Color, Style},
    text::Line,
    widgets::{Block, Borders, Clear, Paragraph},
};

use super::Component;
use crate::app::{App, Confirm};

fn centered(area: Rect, width: u16, height: u16) -> Rect {
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
            "1-6, Tab/Shift-Tab, ←/→   switch tabs",
            "↑/↓ or j/k                select a row",
            "a        Alerts: acknowledge the selected alert",
            "r        Compensations: retry the selected step",
            "r        Events: replay the selected dead letter",
            "e / m    Queue: the selected room's admit rate / max active",
            "o        Queue: set when the room opens (+10m, RFC 3339, empty)",
            "p        Queue: pause or resume admission",
            "c        Queue: close the room to newcomers (asks) or reopen it",
            "x        Schedules: cancel the selected schedule (asks first)",
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
}

/// A room's setting editor: `e` admit rate, `m` max active, `o` opens at.
pub struct RateDialog;

impl Component for RateDialog {
    fn draw(&self, app: &App, frame: &mut Frame, area: Rect) {
        let Some(input) = &app.rate_input else {
            return;
        };
        let popup = centered(area, 60, 6);
        frame.render_widget(Clear, popup);
        let mut lines = vec![
            Line::from(input.field.prompt()),
            Line::from(format!("> {}_", input.text)),
        ];
        match &input.error {
            Some(error) => lines.push(Line::styled(error.clone(), Style::default().fg(Color::Red))),
            None => lines.push(Line::from("Enter to apply, Esc to cancel.")),
        }
        frame.render_widget(
            Paragraph::new(lines).block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(format!("Concert {}", input.concert)),
            ),
            popup,
        );
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
}

/// The selected row in full (`d` or Enter).
pub struct DetailPane;

impl Component for DetailPane {
    fn draw(&self, app: &App, frame: &mut Frame, area: Rect) {
        let Some((title, lines)) = app.detail() else {
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
}
