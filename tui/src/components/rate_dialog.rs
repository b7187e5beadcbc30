//! The dialog of a room's setting editor on the Queue tab: it draws what is
//! typed and sends the change once it passes the editor's checks.

use crossterm::event::KeyCode;
use ratatui::{
    Frame,
    layout::Rect,
    style::{Color, Style},
    text::Line,
    widgets::{Block, Borders, Clear, Paragraph},
};

use super::{Component, overlays::centered};
use crate::{
    app::{Action, App, Command},
    rate_input::Field,
};

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

    fn on_key(&self, app: &App, key: KeyCode) -> Option<Action> {
        let input = app.rate_input.as_ref()?;
        let numeric = input.field != Field::OpensAt;
        match key {
            KeyCode::Esc => Some(Action::Close),
            KeyCode::Backspace => {
                let mut text = input.text.clone();
                text.pop();
                Some(Action::Edit(input.typed(text)))
            }
            KeyCode::Char(digit) if numeric && digit.is_ascii_digit() && input.text.len() < 9 => {
                Some(Action::Edit(input.typed(format!("{}{digit}", input.text))))
            }
            KeyCode::Char(typed) if !numeric && !typed.is_control() && input.text.len() < 40 => {
                Some(Action::Edit(input.typed(format!("{}{typed}", input.text))))
            }
            KeyCode::Char(_) => Some(Action::Edit(input.refused(if numeric {
                "digits only".into()
            } else {
                "too long".into()
            }))),
            KeyCode::Enter => {
                // The room may have gone from the list since the editor opened.
                let Some(room) = app.room(input.concert) else {
                    return Some(Action::Close);
                };
                Some(match input.apply(room.settings.change(), (app.clock)()) {
                    Ok(change) => Action::Send(Command::SetQueueSettings {
                        concert: input.concert,
                        change,
                    }),
                    Err(error) => Action::Edit(input.refused(error)),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::{
        api::SettingsChange,
        components::describe_change,
        fixtures::{self, loaded, press, rates, type_in},
    };

    #[test]
    fn the_admit_rate_is_validated_before_it_is_sent() {
        let mut app = loaded();
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Char('e'));
        assert_eq!(app.rate_input.as_ref().unwrap().concert, 2);
        assert_eq!(app.rate_input.as_ref().unwrap().text, "50");
        press(&mut app, KeyCode::Char('x'));
        assert!(app.rate_input.as_ref().unwrap().error.is_some());
        for _ in 0..2 {
            press(&mut app, KeyCode::Backspace);
        }
        press(&mut app, KeyCode::Char('0'));
        assert_eq!(press(&mut app, KeyCode::Enter), None, "zero is refused");
        assert!(app.rate_input.as_ref().unwrap().error.is_some());
        press(&mut app, KeyCode::Backspace);
        for c in "120".chars() {
            press(&mut app, KeyCode::Char(c));
        }
        let command = press(&mut app, KeyCode::Enter);
        assert_eq!(
            command,
            Some(Command::SetQueueSettings {
                concert: 2,
                change: SettingsChange {
                    admit_per_second: 120,
                    ..rates().change()
                },
            })
        );
        assert!(app.rate_input.is_none());
        // Esc cancels without sending anything.
        press(&mut app, KeyCode::Char('e'));
        assert_eq!(press(&mut app, KeyCode::Esc), None);
        assert!(app.rate_input.is_none());
    }

    #[test]
    fn max_active_is_validated_before_it_is_sent() {
        let mut app = loaded();
        press(&mut app, KeyCode::Char('m'));
        let input = app.rate_input.as_ref().unwrap();
        assert_eq!(
            (input.field, input.text.as_str()),
            (Field::MaxActive, "1000")
        );
        for _ in 0..4 {
            press(&mut app, KeyCode::Backspace);
        }
        type_in(&mut app, "2000000");
        assert_eq!(press(&mut app, KeyCode::Enter), None, "over the cap");
        assert!(app.rate_input.as_ref().unwrap().error.is_some());
        for _ in 0..7 {
            press(&mut app, KeyCode::Backspace);
        }
        type_in(&mut app, "250");
        assert_eq!(
            press(&mut app, KeyCode::Enter),
            Some(Command::SetQueueSettings {
                concert: 1,
                change: SettingsChange {
                    max_active: 250,
                    ..rates().change()
                },
            })
        );
    }

    #[test]
    fn opens_at_takes_a_time_a_delay_or_nothing() {
        let mut app = loaded();
        press(&mut app, KeyCode::Char('o'));
        assert_eq!(app.rate_input.as_ref().unwrap().field, Field::OpensAt);
        type_in(&mut app, "tomorrow");
        assert_eq!(press(&mut app, KeyCode::Enter), None);
        assert!(app.rate_input.as_ref().unwrap().error.is_some());
        for _ in 0.."tomorrow".len() {
            press(&mut app, KeyCode::Backspace);
        }
        type_in(&mut app, "+10m");
        let Some(Command::SetQueueSettings { change, .. }) = press(&mut app, KeyCode::Enter) else {
            panic!("a change")
        };
        assert_eq!(
            change.opens_at,
            Some(Some(fixtures::now() + TimeDelta::minutes(10)))
        );
        assert!(describe_change(1, &change).contains("opens at"));
        // Empty removes the opening time: sent as null.
        press(&mut app, KeyCode::Char('o'));
        let Some(Command::SetQueueSettings { change, .. }) = press(&mut app, KeyCode::Enter) else {
            panic!("a change")
        };
        assert_eq!(change.opens_at, Some(None));
        let body = serde_json::to_value(&change).unwrap();
        assert!(
            body["opensAt"].is_null() && body.get("opensAt").is_some(),
            "{body}"
        );
        assert!(
            body.get("paused").is_none(),
            "only the changed rule is sent"
        );
    }
}
