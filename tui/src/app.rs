//! The console's state and how it changes: every input (a key, fresh data,
//! a failed refresh, a finished command) is an [`Action`]; `update` applies
//! it and may ask the runtime to run a [`Command`] against the server.
//! Keys are the exception: `keys::on_key` routes them, since only it knows
//! the components that take them, and hands their answers to `update`.

use std::collections::{HashMap, VecDeque};

use crossterm::event::KeyEvent;

use chrono::{DateTime, Utc};

use crate::{
    api::{
        Alert, ApiError, Compensation, DeadLetter, Door, QueueRoom, ScheduleSale, SettingsChange,
        Snapshot,
    },
    rate_input::RateInput,
};

/// Admission samples kept per concert (one per refresh, about a minute).
pub const HISTORY: usize = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Queue,
    Compensations,
    Alerts,
    Events,
    Coupons,
    Schedules,
    Door,
}

impl Tab {
    pub const ALL: [Tab; 7] = [
        Tab::Queue,
        Tab::Compensations,
        Tab::Alerts,
        Tab::Events,
        Tab::Coupons,
        Tab::Schedules,
        Tab::Door,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Queue => "Queue",
            Tab::Compensations => "Compensations",
            Tab::Alerts => "Alerts",
            Tab::Events => "Events",
            Tab::Coupons => "Coupons",
            Tab::Schedules => "Schedules",
            Tab::Door => "Door",
        }
    }

    fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    /// The tab `by` places on, wrapping around.
    pub fn step(self, by: isize) -> Tab {
        let n = Tab::ALL.len() as isize;
        Tab::ALL[((self.index() as isize + by).rem_euclid(n)) as usize]
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A key press from the terminal; `keys::on_key` routes it, `update`
    /// leaves it alone.
    Key(KeyEvent),
    Data(Box<Snapshot>),
    /// A fresh door of the schedule the Door tab shows.
    DoorData(Box<Door>),
    FetchFailed(ApiError),
    /// A command finished: what to tell the operator.
    Done(Result<String, String>),
    /// Run a command; the dialog that asked for it, if any, closes.
    Send(Command),
    /// Ask the operator before a step.
    Ask(Confirm),
    /// Open a room's setting editor, or show what was typed into it.
    Edit(RateInput),
    /// Close the open dialog or pane without sending anything.
    Close,
    /// Tell the operator something on the message line.
    Notify(Notice),
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
    /// Fetch the door of a schedule.
    Door(i64),
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
    pub selected: [usize; 7],
    /// The last door fetched (the Door tab's selected schedule's, once
    /// its first refresh answered).
    pub door: Option<Door>,
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
            selected: [0; 7],
            door: None,
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

    /// The room of a concert, when it is listed.
    pub fn room(&self, concert: i64) -> Option<&QueueRoom> {
        self.snapshot
            .as_ref()?
            .rooms
            .iter()
            .find(|r| r.concert_id == concert)
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

    pub fn schedules(&self) -> &[ScheduleSale] {
        self.snapshot
            .as_ref()
            .map(|s| s.schedules.as_slice())
            .unwrap_or_default()
    }

    /// The schedule selected on the Door tab.
    pub fn door_schedule(&self) -> Option<i64> {
        self.schedules().get(self.selected(Tab::Door)).map(|s| s.id)
    }

    /// The door of the schedule selected on the Door tab, once fetched.
    pub fn shown_door(&self) -> Option<&Door> {
        let schedule = self.door_schedule()?;
        self.door.as_ref().filter(|d| d.schedule_id == schedule)
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
            Tab::Schedules | Tab::Door => snapshot.schedules.len(),
        }
    }

    pub fn selected(&self, tab: Tab) -> usize {
        self.selected[tab.index()].min(self.rows(tab).saturating_sub(1))
    }

    /// Moves the current tab's selection `by` rows, staying on the list.
    pub fn select(&mut self, by: isize) {
        let rows = self.rows(self.tab);
        let current = self.selected(self.tab) as isize;
        self.selected[self.tab.index()] =
            (current + by).clamp(0, rows.saturating_sub(1) as isize) as usize;
    }

    pub fn update(&mut self, action: Action) -> Option<Command> {
        match action {
            Action::Key(_) => None,
            Action::Data(snapshot) => {
                self.record_admissions(&snapshot);
                self.snapshot = Some(*snapshot);
                self.connection = Connection::Up;
                // The Door tab refreshes with everything else.
                self.door_schedule()
                    .filter(|_| self.tab == Tab::Door)
                    .map(Command::Door)
            }
            Action::DoorData(door) => {
                self.door = Some(*door);
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
            Action::Send(command) => {
                self.close_overlay();
                Some(command)
            }
            Action::Ask(confirm) => {
                self.confirm = Some(confirm);
                None
            }
            Action::Edit(input) => {
                self.rate_input = Some(input);
                None
            }
            Action::Close => {
                self.close_overlay();
                None
            }
            Action::Notify(notice) => {
                self.notice = Some(notice);
                None
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

    /// Closes the dialog or pane on top, the one that takes the keys while
    /// it is open (`components::overlay` names it).
    pub fn close_overlay(&mut self) {
        if self.rate_input.is_some() {
            self.rate_input = None;
        } else if self.confirm.is_some() {
            self.confirm = None;
        } else if self.show_detail {
            self.show_detail = false;
        } else {
            self.show_help = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use crossterm::event::KeyCode;

    use super::*;
    use crate::fixtures::{loaded, press, snapshot};

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
}
