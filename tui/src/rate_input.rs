//! What is typed into a room's setting editor, and the checks it passes
//! before it is sent: plain state the app holds while the editor is open.

use chrono::{DateTime, TimeDelta, Utc};

use crate::api::SettingsChange;

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
    pub fn typed(&self, text: String) -> RateInput {
        RateInput {
            text,
            error: None,
            ..self.clone()
        }
    }

    pub fn refused(&self, error: String) -> RateInput {
        RateInput {
            error: Some(error),
            ..self.clone()
        }
    }

    /// The room's current rules with what was typed applied, or why it
    /// cannot be sent.
    pub fn apply(
        &self,
        mut change: SettingsChange,
        now: DateTime<Utc>,
    ) -> Result<SettingsChange, String> {
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
        Ok(change)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

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
