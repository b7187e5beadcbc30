//! The console's state and how it changes: every input (a key, fresh data,
//! a failed refresh, a finished command) is an [`Action`]; `update` applies
//! it and may ask the runtime to run a [`Command`] against the server.

use std::collections::{HashMap, VecDeque};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use chrono::{DateTime, TimeDelta, Utc};

use crate::api::{
    Alert, ApiError, Compensation, DeadLetter, QueueRoom, ScheduleSale, SettingsChange, Snapshot,
};

/// Admission samples kept per concert (one per refresh, about a minute).
pub const HISTORY: usize = 60;
/// The admission rate the console lets an operator set.
pub const MAX_ADMIT_PER_SECOND: u32 = 100_000;
/// The most active buyers a room may allow.
pub const MAX_ACTIVE: u32 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Queue,
    Compensations,
    Alerts,
    Events,
    Coupons,
    Schedules,
}

impl Tab {
    pub const ALL: [Tab; 6] = [
        Tab::Queue,
        Tab::Compensations,
        Tab::Alerts,
        Tab::Events,
        Tab::Coupons,
        Tab::Schedules,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Queue => "Queue",
            Tab::Compensations => "Compensations",
            Tab::Alerts => "Alerts",
            Tab::Events => "Events",
            Tab::Coupons => "Coupons",
            Tab::Schedules => "Schedules",
        }
    }

    fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    fn step(self, by: isize) -> Tab {
        let n = Tab::ALL.len() as isize;
        Tab::ALL[((self.index() as isize + by).rem_euclid(n)) as usize]
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Key(KeyEvent),
    Data(Box<Snapshot>),
    FetchFailed(ApiError),
    /// A command finished: what to tell the operator.
    Done(Result<String, String>),
}

/// Work for the runtime: calls to the admin API.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Refresh,
    AckAlert(i64),
    RetryCompensation(i64),
    ReplayDeadLetter(i64),
    /// The four rates and only the opening rule being changed.
    SetQueueSettings {
        concert: i64,
        change: SettingsChange,
    },
    CancelSchedule(i64),
}

/// A step that asks for a yes before it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirm {
    CancelSchedule {
        schedule: i64,
        sold: u64,
    },
    /// Closing a room refuses every newcomer (those in it stay).
    CloseRoom {
        concert: i64,
        waiting: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// No answer yet.
    Connecting,
    Up,
    Unreachable(String),
    Rejected(String),
}

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

/// Reads an opening time typed by an operator: empty removes it, `+N`
/// with `s`, `m` or `h` is that long after `now`, anything else must be
/// RFC 3339. `Ok(None)` means "no opening time".
pub fn parse_opens_at(text: &str, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, String> {
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
        .map(|t| Some(t.to_utc()))
        .map_err(|_| "not an RFC 3339 time (e.g. 2026-12-24T10:00:00Z)".into())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Info(String),
    Error(String),
}

/// The on-sale numbers shown above every tab.
#[derive(Debug, Clone, PartialEq)]
pub struct Headline {
    /// Waiting and active across the rooms in use.
    pub waiting: u64,
    pub active: u64,
    /// Admitted in the last refresh interval (about a second), all rooms.
    pub admitted_per_second: u64,
    pub outbox_pending: u64,
    pub oldest_pending_seconds: f64,
    /// Entries not yet read plus read and not yet acknowledged, all groups.
    pub consumer_lag: u64,
    pub dead_letters: u64,
    pub unacknowledged_alerts: usize,
}

pub struct App {
    pub url: String,
    pub tab: Tab,
    pub snapshot: Option<Snapshot>,
    pub connection: Connection,
    /// Selected row per tab.
    pub selected: [usize; 6],
    /// Admissions per refresh interval, per concert, newest last.
    pub admissions: HashMap<i64, VecDeque<u64>>,
    last_totals: HashMap<i64, u64>,
    pub rate_input: Option<RateInput>,
    /// A step waiting for the operator's yes (`y`) or no (`n`, Esc).
    pub confirm: Option<Confirm>,
    /// The selected row's details are open (`d` or Enter).
    pub show_detail: bool,
    pub show_help: bool,
    pub notice: Option<Notice>,
    pub quit: bool,
    /// What "now" is (tests pin it).
    pub clock: fn() -> DateTime<Utc>,
}

impl App {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            tab: Tab::Queue,
            snapshot: None,
            connection: Connection::Connecting,
            selected: [0; 6],
            admissions: HashMap::new(),
            last_totals: HashMap::new(),
            rate_input: None,
            confirm: None,
            show_detail: false,
            show_help: false,
            notice: None,
            quit: false,
            clock: Utc::now,
        }
    }

    /// The selected waiting room.
    pub fn selected_room(&self) -> Option<&QueueRoom> {
        self.snapshot
            .as_ref()
            .and_then(|s| s.rooms.get(self.selected(Tab::Queue)))
    }

    /// Alerts as shown: unacknowledged first, newest first within each.
    pub fn alerts(&self) -> Vec<&Alert> {
        let mut alerts: Vec<&Alert> = self.snapshot.iter().flat_map(|s| s.alerts.iter()).collect();
        alerts.sort_by_key(|a| (a.acknowledged, std::cmp::Reverse(a.id)));
        alerts
    }

    /// Compensations that need attention: failed first, then pending.
    pub fn compensations(&self) -> Vec<&Compensation> {
        let mut open: Vec<&Compensation> = self
            .snapshot
            .iter()
            .flat_map(|s| s.compensations.iter())
            .filter(|c| c.status != "succeeded")
            .collect();
        open.sort_by_key(|c| (c.status != "failed", std::cmp::Reverse(c.id)));
        open
    }

    /// The numbers an operator watches during an on-sale, whatever the tab.
    pub fn headline(&self) -> Option<Headline> {
        let snapshot = self.snapshot.as_ref()?;
        let admitted_per_second = snapshot
            .rooms
            .iter()
            .map(|r| {
                self.admissions
                    .get(&r.concert_id)
                    .and_then(|h| h.back().copied())
                    .unwrap_or(r.admitted_last_minute / 60)
            })
            .sum();
        Some(Headline {
            waiting: snapshot.rooms.iter().map(|r| r.waiting).sum(),
            active: snapshot.rooms.iter().map(|r| r.active).sum(),
            admitted_per_second,
            outbox_pending: snapshot.events.outbox_pending,
            oldest_pending_seconds: snapshot.events.oldest_pending_seconds,
            consumer_lag: snapshot
                .events
                .consumers
                .iter()
                .map(|c| c.lag + c.pending)
                .sum(),
            dead_letters: snapshot.events.dead_letters,
            unacknowledged_alerts: self.alerts().iter().filter(|a| !a.acknowledged).count(),
        })
    }

    /// The selected row in full, for the detail pane: a title and its
    /// lines (an alert's whole message; a compensation's attempts and last
    /// error; a dead letter's error and the event it carried).
    pub fn detail(&self) -> Option<(String, Vec<String>)> {
        match self.tab {
            Tab::Alerts => {
                let alerts = self.alerts();
                let a = alerts.get(self.selected(Tab::Alerts))?;
                Some((
                    format!("Alert {}", a.id),
                    vec![
                        format!("severity: {}   source: {}", a.severity, a.source),
                        format!(
                            "raised: {}   acknowledged: {}",
                            a.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                            if a.acknowledged { "yes" } else { "no" }
                        ),
                        format!(
                            "webhook: {} ({} tries){}",
                            if a.webhook.is_empty() {
                                "none"
                            } else {
                                &a.webhook
                            },
                            a.webhook_attempts,
                            match (&a.condition, a.resolved_at) {
                                (Some(_), Some(at)) =>
                                    format!("   resolved: {}", at.format("%H:%M:%S UTC")),
                                (Some(_), None) => "   still stuck".to_owned(),
                                _ => String::new(),
                            }
                        ),
                        String::new(),
                        a.message.clone(),
                    ],
                ))
            }
            Tab::Compensations => {
                let open = self.compensations();
                let c = open.get(self.selected(Tab::Compensations))?;
                Some((
                    format!("Compensation {}", c.id),
                    vec![
                        format!(
                            "saga/step: {}/{}   payment: {}",
                            c.saga, c.step, c.payment_id
                        ),
                        format!("status: {}   attempts so far: {}", c.status, c.attempts),
                        String::new(),
                        "last error:".into(),
                        c.last_error.clone().unwrap_or_else(|| "(none)".into()),
                    ],
                ))
            }
            Tab::Events => {
                let letters = self.dead_letters();
                let d = letters.get(self.selected(Tab::Events))?;
                let envelope = serde_json::from_str::<serde_json::Value>(&d.envelope)
                    .ok()
                    .and_then(|v| serde_json::to_string_pretty(&v).ok())
                    .unwrap_or_else(|| d.envelope.clone());
                let mut lines = vec![
                    format!(
                        "consumer: {}   event: {}   deliveries: {}",
                        d.consumer, d.event_type, d.deliveries
                    ),
                    format!(
                        "set aside: {}",
                        d.created_at.format("%Y-%m-%d %H:%M:%S UTC")
                    ),
                    String::new(),
                    format!("last error: {}", d.last_error),
                    String::new(),
                    "event:".into(),
                ];
                lines.extend(envelope.lines().map(str::to_owned));
                Some((format!("Dead letter {}", d.id), lines))
            }
            _ => None,
        }
    }

    pub fn schedules(&self) -> &[ScheduleSale] {
        self.snapshot
            .as_ref()
            .map(|s| s.schedules.as_slice())
            .unwrap_or_default()
    }

    pub fn dead_letters(&self) -> Vec<&DeadLetter> {
        self.snapshot
            .iter()
            .flat_map(|s| s.dead_letters.iter())
            .collect()
    }

    fn rows(&self, tab: Tab) -> usize {
        let Some(snapshot) = &self.snapshot else {
            return 0;
        };
        match tab {
            Tab::Queue => snapshot.rooms.len(),
            Tab::Compensations => self.compensations().len(),
            Tab::Alerts => self.alerts().len(),
            Tab::Events => snapshot.dead_letters.len(),
            Tab::Coupons => snapshot.coupons.len(),
            Tab::Schedules => snapshot.schedules.len(),
        }
    }

    pub fn selected(&self, tab: Tab) -> usize {
        self.selected[tab.index()].min(self.rows(tab).saturating_sub(1))
    }

    fn select(&mut self, by: isize) {
        let rows = self.rows(self.tab);
        let current = self.selected(self.tab) as isize;
        self.selected[self.tab.index()] =
            (current + by).clamp(0, rows.saturating_sub(1) as isize) as usize;
    }

    pub fn update(&mut self, action: Action) -> Option<Command> {
        match action {
            Action::Key(key) => self.on_key(key),
            Action::Data(snapshot) => {
                self.record_admissions(&snapshot);
                self.snapshot = Some(*snapshot);
                self.connection = Connection::Up;
                None
            }
            Action::FetchFailed(err) => {
                self.connection = match err {
                    ApiError::Rejected(m) => Connection::Rejected(m),
                    ApiError::Unreachable(m) | ApiError::Refused(m) => Connection::Unreachable(m),
                };
                None
            }
            Action::Done(result) => {
                self.notice = Some(match result {
                    Ok(m) => Notice::Info(m),
                    Err(m) => Notice::Error(m),
                });
                Some(Command::Refresh)
            }
        }
    }

    fn record_admissions(&mut self, snapshot: &Snapshot) {
        for room in &snapshot.rooms {
            let last = self
                .last_totals
                .insert(room.concert_id, room.admitted_total);
            let history = self.admissions.entry(room.concert_id).or_default();
            if let Some(last) = last {
                history.push_back(room.admitted_total.saturating_sub(last));
                while history.len() > HISTORY {
                    history.pop_front();
                }
            }
        }
    }

    fn on_key(&mut self, key: KeyEvent) -> Option<Command> {
        if key.kind != KeyEventKind::Press {
            return None;
        }
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            self.quit = true;
            return None;
        }
        if self.rate_input.is_some() {
            return self.on_rate_key(key.code);
        }
        if let Some(confirm) = &self.confirm {
            let command = match (key.code, confirm) {
                (KeyCode::Char('y'), Confirm::CancelSchedule { schedule, .. }) => {
                    Some(Command::CancelSchedule(*schedule))
                }
                (KeyCode::Char('y'), Confirm::CloseRoom { concert, .. }) => {
                    let concert = *concert;
                    self.room_change(concert, |c| c.queueing_method = Some("closed".into()))
                }
                (KeyCode::Char('n') | KeyCode::Esc, _) => None,
                // Anything else leaves the question open.
                _ => return None,
            };
            self.confirm = None;
            return command;
        }
        if self.show_detail {
            if matches!(
                key.code,
                KeyCode::Esc | KeyCode::Enter | KeyCode::Char('d' | 'q')
            ) {
                self.show_detail = false;
            }
            return None;
        }
        if self.show_help {
            if matches!(key.code, KeyCode::Esc | KeyCode::Char('?' | 'q')) {
                self.show_help = false;
            }
            return None;
        }
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.show_help = true,
            KeyCode::Esc => self.notice = None,
            KeyCode::Tab | KeyCode::Right | KeyCode::Char('l') => self.tab = self.tab.step(1),
            KeyCode::BackTab | KeyCode::Left | KeyCode::Char('h') => self.tab = self.tab.step(-1),
            KeyCode::Char(c @ '1'..='6') => {
                self.tab = Tab::ALL[(c as usize) - ('1' as usize)];
            }
            KeyCode::Down | KeyCode::Char('j') => self.select(1),
            KeyCode::Up | KeyCode::Char('k') => self.select(-1),
            KeyCode::Char('g') | KeyCode::F(5) => return Some(Command::Refresh),
            KeyCode::Char('d') | KeyCode::Enter => self.show_detail = self.detail().is_some(),
            KeyCode::Char('a') if self.tab == Tab::Alerts => {
                let alert = self
                    .alerts()
                    .get(self.selected(Tab::Alerts))
                    .map(|a| (a.id, a.acknowledged));
                return match alert {
                    Some((id, false)) => Some(Command::AckAlert(id)),
                    Some((id, true)) => {
                        self.notice =
                            Some(Notice::Info(format!("alert {id} is already acknowledged")));
                        None
                    }
                    None => None,
                };
            }
            KeyCode::Char('r') if self.tab == Tab::Compensations => {
                let selected = self.selected(Tab::Compensations);
                return self
                    .compensations()
                    .get(selected)
                    .map(|c| Command::RetryCompensation(c.id));
            }
            KeyCode::Char('r') if self.tab == Tab::Events => {
                let selected = self.selected(Tab::Events);
                return self
                    .dead_letters()
                    .get(selected)
                    .map(|d| Command::ReplayDeadLetter(d.id));
            }
            KeyCode::Char('x') if self.tab == Tab::Schedules => {
                let selected = self.selected(Tab::Schedules);
                if let Some(schedule) = self.schedules().get(selected) {
                    if schedule.status == "on_sale" {
                        self.confirm = Some(Confirm::CancelSchedule {
                            schedule: schedule.id,
                            sold: schedule.sold,
                        });
                    } else {
                        self.notice = Some(Notice::Info(format!(
                            "schedule {} is already {}",
                            schedule.id, schedule.status
                        )));
                    }
                }
            }
            KeyCode::Char(key @ ('e' | 'm' | 'o')) if self.tab == Tab::Queue => {
                if let Some(room) = self.selected_room() {
                    let (field, text) = match key {
                        'e' => (Field::AdmitRate, room.settings.admit_per_second.to_string()),
                        'm' => (Field::MaxActive, room.settings.max_active.to_string()),
                        _ => (
                            Field::OpensAt,
                            room.settings
                                .opens_at
                                .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                                .unwrap_or_default(),
                        ),
                    };
                    self.rate_input = Some(RateInput {
                        concert: room.concert_id,
                        field,
                        text,
                        error: None,
                    });
                }
            }
            KeyCode::Char('p') if self.tab == Tab::Queue => {
                let (concert, paused) = self
                    .selected_room()
                    .map(|r| (r.concert_id, r.settings.paused))?;
                return self.room_change(concert, |c| c.paused = Some(!paused));
            }
            KeyCode::Char('c') if self.tab == Tab::Queue => {
                let room = self.selected_room()?;
                let (concert, waiting) = (room.concert_id, room.waiting);
                if room.settings.queueing_method == "closed" {
                    // Reopening lets people in again: no question.
                    return self.room_change(concert, |c| c.queueing_method = Some("fifo".into()));
                }
                self.confirm = Some(Confirm::CloseRoom { concert, waiting });
            }
            _ => {}
        }
        None
    }

    /// The room's current rates with one change applied.
    fn room_change(
        &self,
        concert: i64,
        apply: impl FnOnce(&mut SettingsChange),
    ) -> Option<Command> {
        let room = self
            .snapshot
            .as_ref()?
            .rooms
            .iter()
            .find(|r| r.concert_id == concert)?;
        let mut change = room.settings.change();
        apply(&mut change);
        Some(Command::SetQueueSettings { concert, change })
    }

    fn on_rate_key(&mut self, code: KeyCode) -> Option<Command> {
        let now = (self.clock)();
        // The room's current rates, before the input is borrowed to edit.
        let base = self.rate_input.as_ref().and_then(|input| {
            self.snapshot
                .as_ref()?
                .rooms
                .iter()
                .find(|r| r.concert_id == input.concert)
                .map(|r| r.settings.change())
        });
        let input = self.rate_input.as_mut()?;
        let numeric = input.field != Field::OpensAt;
        match code {
            KeyCode::Esc => self.rate_input = None,
            KeyCode::Backspace => {
                input.text.pop();
                input.error = None;
            }
            KeyCode::Char(c) if numeric && c.is_ascii_digit() && input.text.len() < 9 => {
                input.text.push(c);
                input.error = None;
            }
            KeyCode::Char(c) if !numeric && !c.is_control() && input.text.len() < 40 => {
                input.text.push(c);
                input.error = None;
            }
            KeyCode::Char(_) => {
                input.error = Some(if numeric {
                    "digits only".into()
                } else {
                    "too long".into()
                });
            }
            KeyCode::Enter => {
                let Some(mut change) = base else {
                    // The room is gone from the list.
                    self.rate_input = None;
                    return None;
                };
                let applied = match input.field {
                    Field::AdmitRate => match input.text.parse::<u32>() {
                        Ok(rate) if (1..=MAX_ADMIT_PER_SECOND).contains(&rate) => {
                            change.admit_per_second = rate;
                            Ok(())
                        }
                        _ => Err(format!(
                            "the rate must be between 1 and {MAX_ADMIT_PER_SECOND} per second"
                        )),
                    },
                    Field::MaxActive => match input.text.parse::<u32>() {
                        Ok(max) if (1..=MAX_ACTIVE).contains(&max) => {
                            change.max_active = max;
                            Ok(())
                        }
                        _ => Err(format!("the cap must be between 1 and {MAX_ACTIVE}")),
                    },
                    Field::OpensAt => parse_opens_at(&input.text, now).map(|at| {
                        change.opens_at = Some(at);
                    }),
                };
                match applied {
                    Ok(()) => {
                        let concert = input.concert;
                        self.rate_input = None;
                        return Some(Command::SetQueueSettings { concert, change });
                    }
                    Err(error) => input.error = Some(error),
                }
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crossterm::event::{KeyEventState, KeyModifiers};

    use super::*;
    use crate::{
        api::QueueSettings,
        fixtures::{self, opening_rooms, snapshot},
    };

    fn press(app: &mut App, code: KeyCode) -> Option<Command> {
        app.update(Action::Key(KeyEvent::from(code)))
    }

    fn loaded() -> App {
        let mut app = App::new("http://x");
        app.clock = fixtures::now;
        app.update(Action::Data(Box::new(snapshot(100))));
        app
    }

    fn type_in(app: &mut App, text: &str) {
        for c in text.chars() {
            press(app, KeyCode::Char(c));
        }
    }

    fn rates() -> QueueSettings {
        snapshot(0).rooms[0].settings.clone()
    }

    #[test]
    fn tabs_switch_by_number_and_wrap_around() {
        let mut app = loaded();
        press(&mut app, KeyCode::Char('4'));
        assert_eq!(app.tab, Tab::Events);
        for _ in 0..3 {
            press(&mut app, KeyCode::Tab);
        }
        assert_eq!(app.tab, Tab::Queue);
        press(&mut app, KeyCode::BackTab);
        assert_eq!(app.tab, Tab::Schedules);
    }

    #[test]
    fn only_key_presses_count() {
        let mut app = loaded();
        let mut release = KeyEvent::from(KeyCode::Char('q'));
        release.kind = KeyEventKind::Release;
        release.state = KeyEventState::NONE;
        app.update(Action::Key(release));
        assert!(!app.quit);
        app.update(Action::Key(KeyEvent::new(
            KeyCode::Char('c'),
            KeyModifiers::CONTROL,
        )));
        assert!(app.quit);
    }

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

    #[test]
    fn retry_and_replay_name_the_selected_rows() {
        let mut app = loaded();
        press(&mut app, KeyCode::Char('2'));
        assert_eq!(
            app.compensations().len(),
            1,
            "succeeded steps are not listed"
        );
        assert_eq!(
            press(&mut app, KeyCode::Char('r')),
            Some(Command::RetryCompensation(4))
        );
        press(&mut app, KeyCode::Char('4'));
        assert_eq!(
            press(&mut app, KeyCode::Char('r')),
            Some(Command::ReplayDeadLetter(2))
        );
    }

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
    fn admissions_are_sampled_from_the_running_total() {
        let mut app = loaded();
        for total in [150, 210, 210] {
            app.update(Action::Data(Box::new(snapshot(total))));
        }
        assert_eq!(
            app.admissions[&1].iter().copied().collect::<Vec<_>>(),
            vec![50, 60, 0]
        );
    }

    #[test]
    fn the_connection_state_follows_refreshes_and_recovers() {
        let mut app = loaded();
        assert_eq!(app.connection, Connection::Up);
        app.update(Action::FetchFailed(ApiError::Unreachable("refused".into())));
        assert_eq!(app.connection, Connection::Unreachable("refused".into()));
        assert!(app.snapshot.is_some(), "the last data stays on screen");
        app.update(Action::FetchFailed(ApiError::Rejected("401".into())));
        assert_eq!(app.connection, Connection::Rejected("401".into()));
        app.update(Action::Data(Box::new(snapshot(120))));
        assert_eq!(app.connection, Connection::Up);
    }

    #[test]
    fn a_finished_command_is_reported_and_refreshes() {
        let mut app = loaded();
        let next = app.update(Action::Done(Err("409: not failed".into())));
        assert_eq!(next, Some(Command::Refresh));
        assert_eq!(app.notice, Some(Notice::Error("409: not failed".into())));
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.notice, None);
    }

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

    #[test]
    fn the_headline_sums_the_rooms_and_the_pipeline() {
        assert_eq!(App::new("http://x").headline(), None, "nothing before data");
        let mut app = loaded();
        app.update(Action::Data(Box::new(snapshot(160))));
        let headline = app.headline().unwrap();
        assert_eq!((headline.waiting, headline.active), (4_812 + 2_406, 1_900));
        // Room 1 admitted 60 since the last refresh; room 2 none.
        assert_eq!(headline.admitted_per_second, 60);
        assert_eq!(headline.unacknowledged_alerts, 1);
        assert_eq!(headline.dead_letters, 1);
    }

    #[test]
    fn details_open_on_rows_that_have_them_and_close_again() {
        let mut app = loaded();
        press(&mut app, KeyCode::Char('d'));
        assert!(!app.show_detail, "the Queue tab has no detail pane");
        press(&mut app, KeyCode::Char('4'));
        press(&mut app, KeyCode::Enter);
        assert!(app.show_detail);
        let (title, lines) = app.detail().unwrap();
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
            app.detail()
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

    #[test]
    fn a_rooms_state_reads_closed_paused_opening_random_or_open() {
        let now = fixtures::now();
        let rooms = opening_rooms(0).rooms;
        let states: Vec<String> = rooms.iter().map(|r| r.settings.state(now)).collect();
        assert_eq!(states, ["open", "paused", "closed", "opens 10:00:00"]);
        let mut random = rooms[0].settings.clone();
        random.queueing_method = "random".into();
        assert_eq!(random.state(now), "random");
        let mut opened = rooms[3].settings.clone();
        opened.opens_at = Some(now - TimeDelta::seconds(1));
        assert_eq!(opened.state(now), "open");
    }
}
