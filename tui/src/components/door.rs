use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    widgets::{Block, Borders, Paragraph, Row},
};

use super::{Component, ListView};
use crate::{
    api::Door,
    app::{App, Tab},
};

/// A schedule's door: pick the schedule on the left; on the right its
/// tickets sold and admitted, each gate with its last 15 minutes, and the
/// latest refused scans. Refreshed with everything else while it is open.
pub struct DoorTab;

/// Counts as one cell each, `·` for none, the highest a full block.
pub(crate) fn spark(counts: &[u64], highest: u64) -> String {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    counts
        .iter()
        .map(|&n| match n {
            0 => '·',
            n => LEVELS[((n * 8).div_ceil(highest.max(1)) as usize).clamp(1, 8) - 1],
        })
        .collect()
}

fn totals(door: &Door) -> String {
    let share = match door.tickets_sold {
        0 => 0,
        sold => door.checked_in * 100 / sold,
    };
    let now = door.checkins_per_minute.last().copied().unwrap_or(0);
    format!(
        " sold {} · checked in {} ({share}%) · {now}/min now · refusals listed {}\n {}  all gates, last 15 min",
        door.tickets_sold,
        door.checked_in,
        door.recent_refusals.len(),
        spark(
            &door.checkins_per_minute,
            door.checkins_per_minute.iter().copied().max().unwrap_or(0)
        ),
    )
}

fn draw_door(door: &Door, frame: &mut Frame, area: Rect) {
    let [head, gates, refusals] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Min(4),
        Constraint::Min(4),
    ])
    .areas(area);
    let title = format!("Door of schedule {}", door.schedule_id);
    frame.render_widget(
        Paragraph::new(totals(door)).block(Block::default().borders(Borders::ALL).title(title)),
        head,
    );
    let highest = door
        .gates
        .iter()
        .flat_map(|g| g.per_minute.iter().copied())
        .max()
        .unwrap_or(0);
    let rows = door
        .gates
        .iter()
        .map(|g| {
            Row::new(vec![
                g.gate.clone(),
                g.checked_in.to_string(),
                g.last_minute.to_string(),
                spark(&g.per_minute, highest),
            ])
        })
        .collect();
    ListView {
        title: "Gates",
        header: Row::new(vec!["gate", "in", "last min", "last 15 min"]),
        widths: &[
            Constraint::Length(12),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Min(15),
        ],
        empty: "Nobody checked in yet.",
    }
    .render(frame, gates, rows, None);
    let rows = door
        .recent_refusals
        .iter()
        .map(|r| {
            Row::new(vec![
                r.at.format("%H:%M:%S").to_string(),
                r.gate.clone(),
                r.reason.replace('_', " "),
                r.ticket_id.map(|t| t.to_string()).unwrap_or_default(),
            ])
        })
        .collect();
    ListView {
        title: "Recent refusals (newest first)",
        header: Row::new(vec!["at", "gate", "reason", "ticket"]),
        widths: &[
            Constraint::Length(9),
            Constraint::Length(12),
            Constraint::Length(19),
            Constraint::Min(6),
        ],
        empty: "No refused scans.",
    }
    .render(frame, refusals, rows, None);
}

impl Component for DoorTab {
    fn draw(&self, app: &App, frame: &mut Frame, area: Rect) {
        let [list, door] =
            Layout::horizontal([Constraint::Length(28), Constraint::Min(30)]).areas(area);
        let rows = app
            .schedules()
            .iter()
            .map(|s| {
                Row::new(vec![
                    s.id.to_string(),
                    s.status.replace('_', " "),
                    s.sold.to_string(),
                ])
            })
            .collect();
        ListView {
            title: "Schedule",
            header: Row::new(vec!["id", "status", "sold"]),
            widths: &[
                Constraint::Length(5),
                Constraint::Length(10),
                Constraint::Min(6),
            ],
            empty: "No schedules.",
        }
        .render(frame, list, rows, Some(app.selected(Tab::Door)));
        let waiting = match (app.door_schedule(), app.shown_door()) {
            (_, Some(shown)) => return draw_door(shown, frame, door),
            (Some(schedule), None) => format!(" Loading the door of schedule {schedule}…"),
            (None, None) => " No schedule to show.".to_owned(),
        };
        let block = Block::default().borders(Borders::ALL).title("Door");
        frame.render_widget(Paragraph::new(waiting).block(block), door);
    }
}

#[cfg(test)]
mod tests {
    use crossterm::event::KeyCode;

    use super::*;
    use crate::{
        app::{Action, Command},
        fixtures::{door, loaded, press, snapshot},
    };

    #[test]
    fn the_door_tab_fetches_the_selected_schedules_door_with_every_refresh() {
        let mut app = loaded();
        assert_eq!(
            app.update(Action::Data(Box::new(snapshot(110)))),
            None,
            "only while the tab is open"
        );
        press(&mut app, KeyCode::Char('7'));
        assert_eq!(app.tab, Tab::Door);
        assert_eq!(
            app.update(Action::Data(Box::new(snapshot(120)))),
            Some(Command::Door(6))
        );
        app.update(Action::DoorData(Box::new(door(6))));
        assert_eq!(app.shown_door().map(|d| d.schedule_id), Some(6));
        press(&mut app, KeyCode::Down);
        assert_eq!(
            app.shown_door(),
            None,
            "another schedule's door is not shown"
        );
        assert_eq!(
            app.update(Action::Data(Box::new(snapshot(130)))),
            Some(Command::Door(5))
        );
    }

    #[test]
    fn a_sparkline_scales_to_the_busiest_minute() {
        assert_eq!(spark(&[0, 1, 4, 8], 8), "·▁▄█");
        assert_eq!(spark(&[0, 0], 0), "··");
        assert_eq!(spark(&[3], 3), "█");
    }
}
