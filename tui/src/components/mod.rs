//! One component per tab and per overlay. Each draws itself from the
//! [`App`] state into the area it is given, and turns the keys handed to it
//! into an [`Action`] for the app to apply.

mod alerts;
mod compensations;
mod coupons;
mod door;
mod events;
mod overlays;
mod queue;
mod rate_dialog;
mod schedules;

pub use alerts::AlertsTab;
pub use compensations::CompensationsTab;
pub use coupons::CouponsTab;
pub use door::DoorTab;
pub use events::EventsTab;
pub use overlays::{ConfirmDialog, DetailPane, Help};
pub use queue::{QueueTab, describe_change};
pub use rate_dialog::RateDialog;
pub use schedules::SchedulesTab;

use crossterm::event::KeyCode;
use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    style::{Color, Modifier, Style},
    widgets::{Block, Borders, Paragraph, Row, Table, TableState},
};

use crate::app::{Action, App, Tab};

pub trait Component {
    fn draw(&self, app: &App, frame: &mut Frame, area: Rect);

    /// What a key pressed while this component has the keyboard asks for;
    /// `None` when the key means nothing here.
    fn on_key(&self, _app: &App, _key: KeyCode) -> Option<Action> {
        None
    }

    /// The selected row in full, for the detail pane: a title and its
    /// lines; `None` when the component has no such row.
    fn detail(&self, _app: &App) -> Option<(String, Vec<String>)> {
        None
    }
}

/// The component that draws a tab and takes the keys the app leaves to it.
pub fn tab(tab: Tab) -> &'static dyn Component {
    match tab {
        Tab::Queue => &QueueTab,
        Tab::Compensations => &CompensationsTab,
        Tab::Alerts => &AlertsTab,
        Tab::Events => &EventsTab,
        Tab::Coupons => &CouponsTab,
        Tab::Schedules => &SchedulesTab,
        Tab::Door => &DoorTab,
    }
}

/// The dialog or pane on top, which takes every key while it is open; the
/// one [`App::close_overlay`] closes.
pub fn overlay(app: &App) -> Option<&'static dyn Component> {
    if app.rate_input.is_some() {
        Some(&RateDialog)
    } else if app.confirm.is_some() {
        Some(&ConfirmDialog)
    } else if app.show_detail {
        Some(&DetailPane)
    } else if app.show_help {
        Some(&Help)
    } else {
        None
    }
}

/// The selected row of the current tab in full, for the detail pane: a
/// title and its lines.
pub fn detail(app: &App) -> Option<(String, Vec<String>)> {
    tab(app.tab).detail(app)
}

pub(crate) fn header_style() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

pub(crate) fn selected_style() -> Style {
    Style::default()
        .bg(Color::DarkGray)
        .add_modifier(Modifier::BOLD)
}

/// A bordered table with a highlighted selected row, or a line saying
/// there is nothing to show.
pub(crate) struct ListView<'a> {
    pub title: &'a str,
    pub header: Row<'a>,
    pub widths: &'a [Constraint],
    pub empty: &'a str,
}

impl<'a> ListView<'a> {
    pub fn render(
        self,
        frame: &mut Frame,
        area: Rect,
        rows: Vec<Row<'a>>,
        selected: Option<usize>,
    ) {
        let block = Block::default().borders(Borders::ALL).title(self.title);
        if rows.is_empty() {
            frame.render_widget(Paragraph::new(self.empty).block(block), area);
            return;
        }
        let table = Table::new(rows, self.widths.to_vec())
            .header(self.header.style(header_style()))
            .block(block)
            .row_highlight_style(selected_style())
            .highlight_symbol("▶ ");
        let mut state = TableState::default().with_selected(selected);
        frame.render_stateful_widget(table, area, &mut state);
    }
}

pub(crate) fn waiting_time(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, (seconds % 3600) / 60),
    }
}
