//! The console's state and how it changes: every input (a key, fresh data,
//! a failed refresh, a finished command) is an [`Action`]; `update` applies
//! it and may ask the runtime to run a [`Command`] against the server.

use std::collections::{HashMap, VecDeque};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::api::{
    Alert, ApiError, Compensation, DeadLetter, QueueSettings, ScheduleSale, Snapshot,
};

/// Admission samples kept per concert (one per refresh, about a minute).
pub const HISTORY: usize = 60;
/// The admission rate the console lets an operator set.
pub const MAX_ADMIT_PER_SECOND: u32 = 100_000;

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
    SetQueueSettings {
        concert: i64,
        settings: QueueSettings,
    },
    CancelSchedule(i64),
}

/// A step that asks for a yes before it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirm {
    CancelSchedule { schedule: i64, sold: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// No answer yet.
    Connecting,
    Up,
    Unreachable(String),
    Rejected(String),
}

/// The admit-rate editor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateInput {
    pub concert: i64,
    pub text: String,
    pub error: Option<String>,
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
        }
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
            KeyCode::Char('e') if self.tab == Tab::Queue => {
                let selected = self.selected(Tab::Queue);
                if let Some(room) = self.snapshot.as_ref().and_then(|s| s.rooms.get(selected)) {
                    self.rate_input = Some(RateInput {
                        concert: room.concert_id,
                        text: room.settings.admit_per_second.to_string(),
                        error: None,
                    });
                }
            }
            _ => {}
        }
        None
    }

    fn on_rate_key(&mut self, code: KeyCode) -> Option<Command> {
        let input = self.rate_input.as_mut()?;
        match code {
            KeyCode::Esc => self.rate_input = None,
            KeyCode::Backspace => {
                input.text.pop();
                input.error = None;
            }
            KeyCode::Char(c) if c.is_ascii_digit() && input.text.len() < 9 => {
                input.text.push(c);
                input.error = None;
            }
            KeyCode::Char(_) => {
                input.error = Some("digits only".into());
            }
            KeyCode::Enter => match input.text.parse::<u32>() {
                Ok(rate) if (1..=MAX_ADMIT_PER_SECOND).contains(&rate) => {
                    let concert = input.concert;
                    let settings = self
                        .snapshot
                        .as_ref()
                        .and_then(|s| s.rooms.iter().find(|r| r.concert_id == concert))
                        .map(|r| QueueSettings {
                            admit_per_second: rate,
                            ..r.settings.clone()
                        })?;
                    self.rate_input = None;
                    return Some(Command::SetQueueSettings { concert, settings });
                }
                _ => {
                    input.error = Some(format!(
                        "the rate must be between 1 and {MAX_ADMIT_PER_SECOND} per second"
                    ));
                }
            },
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crossterm::event::{KeyEventState, KeyModifiers};

    use super::*;
    use crate::fixtures::snapshot;

    fn press(app: &mut App, code: KeyCode) -> Option<Command> {
        app.update(Action::Key(KeyEvent::from(code)))
    }

    fn loaded() -> App {
        let mut app = App::new("http://x");
        app.update(Action::Data(Box::new(snapshot(100))));
        app
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
                settings: QueueSettings {
                    admit_per_second: 120,
                    max_active: 1_000,
                    active_ttl_seconds: 600,
                    heartbeat_grace_seconds: 60,
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
}
