use crossterm::event::KeyCode;
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    widgets::{Block, Borders, Paragraph, Row, Sparkline},
};

use super::{Component, ListView, waiting_time};
use crate::{
    api::SettingsChange,
    app::{Action, App, Command, Confirm, Tab},
    rate_input::{Field, RateInput},
};

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

    /// `e`, `m` and `o` open the selected room's editor; `p` pauses or
    /// resumes it; `c` closes it (after a question) or reopens it.
    fn on_key(&self, app: &App, key: KeyCode) -> Option<Action> {
        let room = app.selected_room()?;
        let concert = room.concert_id;
        match key {
            KeyCode::Char(letter @ ('e' | 'm' | 'o')) => {
                let (field, text) = match letter {
                    'e' => (Field::AdmitRate, room.settings.admit_per_second.to_string()),
                    'm' => (Field::MaxActive, room.settings.max_active.to_string()),
                    _ => (
                        Field::OpensAt,
                        room.settings
                            .opens_at
                            .map(|at| at.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                            .unwrap_or_default(),
                    ),
                };
                Some(Action::Edit(RateInput {
                    concert,
                    field,
                    text,
                    error: None,
                }))
            }
            KeyCode::Char('p') => {
                let paused = room.settings.paused;
                room_change(app, concert, |change| change.paused = Some(!paused)).map(Action::Send)
            }
            // Reopening lets people in again: no question.
            KeyCode::Char('c') if room.settings.queueing_method == "closed" => {
                room_change(app, concert, |change| {
                    change.queueing_method = Some("fifo".into())
                })
                .map(Action::Send)
            }
            KeyCode::Char('c') => Some(Action::Ask(Confirm::CloseRoom {
                concert,
                waiting: room.waiting,
            })),
            _ => None,
        }
    }
}

/// The room's current rules, with one change applied, as the command that
/// sends them.
pub(super) fn room_change(
    app: &App,
    concert: i64,
    apply: impl FnOnce(&mut SettingsChange),
) -> Option<Command> {
    let mut change = app.room(concert)?.settings.change();
    apply(&mut change);
    Some(Command::SetQueueSettings { concert, change })
}

/// What a sent settings change did, for the message line.
pub fn describe_change(concert: i64, change: &SettingsChange) -> String {
    if let Some(paused) = change.paused {
        return if paused {
            format!("concert {concert}: admission paused (places are kept)")
        } else {
            format!("concert {concert}: admission resumed")
        };
    }
    match (&change.queueing_method, change.opens_at) {
        (Some(method), _) if method == "closed" => {
            format!("concert {concert}: the room is closed to newcomers")
        }
        (Some(method), _) => format!("concert {concert}: the room is open again ({method})"),
        (None, Some(Some(at))) => format!(
            "concert {concert}: opens at {} (pre-queue until then)",
            at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        (None, Some(None)) => format!("concert {concert}: no opening time"),
        (None, None) => format!(
            "concert {concert} now admits {} per second, at most {} active",
            change.admit_per_second, change.max_active
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, opening_rooms, press, rates};

    #[test]
    fn p_pauses_and_resumes_the_selected_room_at_once() {
        let mut app = App::new("http://x");
        app.clock = fixtures::now;
        app.update(Action::Data(Box::new(opening_rooms(100))));
        assert_eq!(
            press(&mut app, KeyCode::Char('p')),
            Some(Command::SetQueueSettings {
                concert: 1,
                change: SettingsChange {
                    paused: Some(true),
                    ..rates().change()
                },
            })
        );
        press(&mut app, KeyCode::Down);
        let Some(Command::SetQueueSettings { concert, change }) =
            press(&mut app, KeyCode::Char('p'))
        else {
            panic!("a change")
        };
        assert_eq!(
            (concert, change.paused),
            (2, Some(false)),
            "room 2 is paused"
        );
        assert_eq!(
            (change.opens_at, change.queueing_method.clone()),
            (None, None),
            "nothing else is sent"
        );
        assert!(describe_change(2, &change).contains("resumed"));
        // `p` means nothing on other tabs.
        press(&mut app, KeyCode::Char('3'));
        assert_eq!(press(&mut app, KeyCode::Char('p')), None);
    }

    #[test]
    fn c_asks_before_closing_a_room_and_reopens_a_closed_one_at_once() {
        let mut app = App::new("http://x");
        app.clock = fixtures::now;
        app.update(Action::Data(Box::new(opening_rooms(100))));
        assert_eq!(press(&mut app, KeyCode::Char('c')), None, "asks first");
        assert_eq!(
            app.confirm,
            Some(Confirm::CloseRoom {
                concert: 1,
                waiting: 4_812
            })
        );
        assert_eq!(press(&mut app, KeyCode::Char('n')), None);
        assert_eq!(app.confirm, None);
        press(&mut app, KeyCode::Char('c'));
        let Some(Command::SetQueueSettings { concert, change }) =
            press(&mut app, KeyCode::Char('y'))
        else {
            panic!("a change")
        };
        assert_eq!(
            (concert, change.queueing_method.as_deref()),
            (1, Some("closed"))
        );
        assert!(describe_change(1, &change).contains("closed"));
        // Room 3 is closed: c reopens it without a question.
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Down);
        let Some(Command::SetQueueSettings { concert, change }) =
            press(&mut app, KeyCode::Char('c'))
        else {
            panic!("a change")
        };
        assert_eq!(
            (concert, change.queueing_method.as_deref()),
            (3, Some("fifo"))
        );
        assert_eq!(app.confirm, None);
    }
}
