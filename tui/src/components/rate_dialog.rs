//! The editor of a room's settings on the Queue tab: what is typed into it,
//! and the checks it passes before it is sent.

use chrono::{DateTime, TimeDelta, Utc};
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
    api::SettingsChange,
    app::{Action, App, Command},
};

/// The admission rate the console lets an operator set.
const MAX_ADMIT_PER_SECOND: u32 = 100_000;
/// The most active buyers a room may allow.
const MAX_ACTIVE: u32 = 1_000_000;

/// What a room's editor changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `e`: admitted per second.
    AdmitRate,
    /// `m`: the cap on active buyers.
    MaxActive,
    /// `o`: when the room opens (RFC 3339, `+10m`, or empty for none).
    OpensAt,
}

impl Field {
    pub fn prompt(self) -> String {
        match self {
            Field::AdmitRate => format!("New admit rate (1-{MAX_ADMIT_PER_SECOND} per second):"),
            Field::MaxActive => format!("New cap on active buyers (1-{MAX_ACTIVE}):"),
            Field::OpensAt => "Opens at (RFC 3339, +30s/+10m/+2h, empty: none):".into(),
        }
    }
}

/// A room's setting being edited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateInput {
    pub concert: i64,
    pub field: Field,
    pub text: String,
    pub error: Option<String>,
}

impl RateInput {
    /// The same input with `text` typed so far and no error.
    fn typed(&self, text: String) -> RateInput {
        RateInput {
            text,
            error: None,
            ..self.clone()
        }
    }

    fn refused(&self, error: String) -> RateInput {
        RateInput {
            error: Some(error),
            ..self.clone()
        }
    }

    /// The room's current rules with what was typed applied, or why it
    /// cannot be sent.
    fn apply(&self, mut change: SettingsChange, now: DateTime<Utc>) -> Result<Command, String> {
        match self.field {
            Field::AdmitRate => match self.text.parse::<u32>() {
                Ok(rate) if (1..=MAX_ADMIT_PER_SECOND).contains(&rate) => {
                    change.admit_per_second = rate;
                }
                _ => {
                    return Err(format!(
                        "the rate must be between 1 and {MAX_ADMIT_PER_SECOND} per second"
                    ));
                }
            },
            Field::MaxActive => match self.text.parse::<u32>() {
                Ok(max) if (1..=MAX_ACTIVE).contains(&max) => change.max_active = max,
                _ => return Err(format!("the cap must be between 1 and {MAX_ACTIVE}")),
            },
            Field::OpensAt => change.opens_at = Some(parse_opens_at(&self.text, now)?),
        }
        Ok(Command::SetQueueSettings {
            concert: self.concert,
            change,
        })
    }
}

/// Reads an opening time typed by an operator: empty removes it, `+N`
/// with `s`, `m` or `h` is that long after `now`, anything else must be
/// RFC 3339. `Ok(None)` means "no opening time".
fn parse_opens_at(text: &str, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Some(relative) = text.strip_prefix('+') {
        let (number, unit) = relative.split_at(relative.len().saturating_sub(1));
        let amount: i64 = number
            .parse()
            .ok()
            .filter(|n| (1..=100_000).contains(n))
            .ok_or("after + give a number and s, m or h, e.g. +10m")?;
        let delta = match unit {
            "s" => TimeDelta::seconds(amount),
            "m" => TimeDelta::minutes(amount),
            "h" => TimeDelta::hours(amount),
            _ => return Err("after + give a number and s, m or h, e.g. +10m".into()),
        };
        return Ok(Some(now + delta));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|at| Some(at.to_utc()))
        .map_err(|_| "not an RFC 3339 time (e.g. 2026-12-24T10:00:00Z)".into())
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
                    Ok(command) => Action::Send(command),
                    Err(error) => Action::Edit(input.refused(error)),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
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

    #[test]
    fn an_opening_time_is_rfc_3339_or_a_delay() {
        let now = fixtures::now();
        assert_eq!(parse_opens_at("", now), Ok(None));
        assert_eq!(parse_opens_at("  ", now), Ok(None));
        assert_eq!(
            parse_opens_at("+30s", now),
            Ok(Some(now + TimeDelta::seconds(30)))
        );
        assert_eq!(
            parse_opens_at("+2h", now),
            Ok(Some(now + TimeDelta::hours(2)))
        );
        assert_eq!(
            parse_opens_at("2026-12-24T10:00:00+09:00", now),
            Ok(Some(
                DateTime::parse_from_rfc3339("2026-12-24T01:00:00Z")
                    .unwrap()
                    .to_utc()
            ))
        );
        for bad in [
            "+",
            "+m",
            "+10",
            "+10d",
            "+-5m",
            "+0m",
            "10:00",
            "2026-12-24",
        ] {
            assert!(parse_opens_at(bad, now).is_err(), "{bad}");
        }
    }
}
