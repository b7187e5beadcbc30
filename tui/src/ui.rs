//! The whole screen: tabs, a status banner, the current tab, key hints, and
//! the overlays on top.

use ratatui::{
    Frame,
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Paragraph, Tabs},
};

use crate::{
    app::{App, Connection, Notice, Tab},
    components::{self, Component, ConfirmDialog, DetailPane, Help, RateDialog},
};

pub fn draw(frame: &mut Frame, app: &App) {
    let [tabs, headline, banner, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    let titles = Tab::ALL.iter().enumerate().map(|(i, t)| {
        let unacked = if *t == Tab::Alerts {
            app.alerts().iter().filter(|a| !a.acknowledged).count()
        } else {
            0
        };
        if unacked > 0 {
            format!("{} {} ({unacked})", i + 1, t.title())
        } else {
            format!("{} {}", i + 1, t.title())
        }
    });
    let selected = Tab::ALL.iter().position(|t| *t == app.tab).unwrap_or(0);
    frame.render_widget(
        Tabs::new(titles)
            .select(selected)
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED))
            .divider("|"),
        tabs,
    );
    frame.render_widget(headline_line(app), headline);
    frame.render_widget(status_line(app), banner);

    components::tab(app.tab).draw(app, frame, body);

    let hint = match app.tab {
        Tab::Queue => "e rate  m max  o opens  p pause  c close",
        Tab::Compensations => "r retry  d details",
        Tab::Alerts => "a acknowledge  d details",
        Tab::Events => "r replay dead letter  d details",
        Tab::Coupons => "",
        Tab::Schedules => "x cancel schedule",
        Tab::Door => "",
    };
    frame.render_widget(
        Paragraph::new(format!(
            " q quit  ? help  ←/→ tabs  ↑/↓ select  {hint}   {}",
            app.url
        ))
        .style(Style::default().fg(Color::DarkGray)),
        footer,
    );

    if app.rate_input.is_some() {
        RateDialog.draw(app, frame, body);
    }
    if app.confirm.is_some() {
        ConfirmDialog.draw(app, frame, body);
    }
    if app.show_detail {
        DetailPane.draw(app, frame, body);
    }
    if app.show_help {
        Help.draw(app, frame, body);
    }
}

/// The on-sale numbers, on every tab; the worrying ones in colour.
fn headline_line(app: &App) -> Paragraph<'static> {
    let Some(h) = app.headline() else {
        return Paragraph::new("");
    };
    let plain = Style::default();
    let warn = |bad: bool| {
        if bad {
            Style::default()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD)
        } else {
            plain
        }
    };
    let spans = vec![
        Span::raw(format!(
            " waiting {} · active {} · {}/s in · ",
            h.waiting, h.active, h.admitted_per_second
        )),
        Span::styled(
            format!(
                "outbox {} ({:.1}s)",
                h.outbox_pending, h.oldest_pending_seconds
            ),
            warn(h.oldest_pending_seconds >= 5.0),
        ),
        Span::raw(" · "),
        Span::styled(
            format!("lag {}", h.consumer_lag),
            warn(h.consumer_lag >= 1_000),
        ),
        Span::raw(" · "),
        Span::styled(
            format!("dead letters {}", h.dead_letters),
            warn(h.dead_letters > 0),
        ),
        Span::raw(" · "),
        Span::styled(
            format!("alerts {}", h.unacknowledged_alerts),
            warn(h.unacknowledged_alerts > 0),
        ),
    ];
    Paragraph::new(Line::from(spans))
}

/// The connection banner when something is wrong, else the last notice.
fn status_line(app: &App) -> Paragraph<'static> {
    let alarm = Style::default()
        .fg(Color::White)
        .bg(Color::Red)
        .add_modifier(Modifier::BOLD);
    let line = match &app.connection {
        Connection::Unreachable(why) => Line::from(Span::styled(
            format!(" SERVER UNREACHABLE: {why} — retrying every second; showing the last data "),
            alarm,
        )),
        Connection::Rejected(why) => Line::from(Span::styled(
            format!(" TOKEN REJECTED: {why} — start the console with an admin token (--token) "),
            alarm,
        )),
        Connection::Connecting => Line::from(format!(" connecting to {}…", app.url)),
        Connection::Up => match &app.notice {
            Some(Notice::Info(m)) => Line::from(Span::styled(
                format!(" {m}"),
                Style::default().fg(Color::Green),
            )),
            Some(Notice::Error(m)) => Line::from(Span::styled(
                format!(" {m}"),
                Style::default().fg(Color::Red),
            )),
            None => Line::from(" live"),
        },
    };
    Paragraph::new(line)
}

#[cfg(test)]
mod tests {
    use crossterm::event::KeyCode;
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::{
        api::ApiError,
        app::Action,
        fixtures::{self, opening_rooms, press, snapshot},
    };

    fn app_with_data() -> App {
        let mut app = App::new("http://127.0.0.1:8080");
        app.clock = fixtures::now;
        // Two refreshes: the second gives the sparkline its first sample.
        for total in [100, 150, 210, 260] {
            app.update(Action::Data(Box::new(snapshot(total))));
        }
        app
    }

    fn render(app: &App) -> String {
        let mut terminal = Terminal::new(TestBackend::new(100, 24)).unwrap();
        terminal.draw(|frame| draw(frame, app)).unwrap();
        terminal.backend().to_string()
    }

    #[test]
    fn queue_tab() {
        insta::assert_snapshot!(render(&app_with_data()));
    }

    #[test]
    fn compensations_tab() {
        let mut app = app_with_data();
        press(&mut app, KeyCode::Char('2'));
        insta::assert_snapshot!(render(&app));
    }

    #[test]
    fn alerts_tab() {
        let mut app = app_with_data();
        press(&mut app, KeyCode::Char('3'));
        insta::assert_snapshot!(render(&app));
    }

    #[test]
    fn events_tab() {
        let mut app = app_with_data();
        press(&mut app, KeyCode::Char('4'));
        insta::assert_snapshot!(render(&app));
    }

    #[test]
    fn coupons_tab() {
        let mut app = app_with_data();
        press(&mut app, KeyCode::Char('5'));
        insta::assert_snapshot!(render(&app));
    }

    #[test]
    fn schedules_tab() {
        let mut app = app_with_data();
        press(&mut app, KeyCode::Char('6'));
        insta::assert_snapshot!(render(&app));
    }

    #[test]
    fn cancel_schedule_confirmation() {
        let mut app = app_with_data();
        press(&mut app, KeyCode::Char('6'));
        press(&mut app, KeyCode::Char('x'));
        insta::assert_snapshot!(render(&app));
    }

    #[test]
    fn dead_letter_detail() {
        let mut app = app_with_data();
        press(&mut app, KeyCode::Char('4'));
        press(&mut app, KeyCode::Char('d'));
        insta::assert_snapshot!(render(&app));
    }

    #[test]
    fn alert_detail() {
        let mut app = app_with_data();
        press(&mut app, KeyCode::Char('3'));
        press(&mut app, KeyCode::Enter);
        insta::assert_snapshot!(render(&app));
    }

    #[test]
    fn compensation_detail() {
        let mut app = app_with_data();
        press(&mut app, KeyCode::Char('2'));
        press(&mut app, KeyCode::Char('d'));
        insta::assert_snapshot!(render(&app));
    }

    #[test]
    fn help_overlay() {
        let mut app = app_with_data();
        press(&mut app, KeyCode::Char('?'));
        insta::assert_snapshot!(render(&app));
    }

    #[test]
    fn rate_dialog_with_a_validation_error() {
        let mut app = app_with_data();
        press(&mut app, KeyCode::Char('e'));
        press(&mut app, KeyCode::Backspace);
        press(&mut app, KeyCode::Backspace);
        press(&mut app, KeyCode::Char('0'));
        press(&mut app, KeyCode::Enter);
        assert!(app.rate_input.is_some(), "zero is refused");
        insta::assert_snapshot!(render(&app));
    }

    fn app_with_opening_rules() -> App {
        let mut app = App::new("http://127.0.0.1:8080");
        app.clock = fixtures::now;
        app.update(Action::Data(Box::new(opening_rooms(100))));
        app
    }

    #[test]
    fn queue_tab_with_rooms_paused_closed_and_not_yet_open() {
        insta::assert_snapshot!(render(&app_with_opening_rules()));
    }

    #[test]
    fn close_room_confirmation() {
        let mut app = app_with_opening_rules();
        press(&mut app, KeyCode::Char('c'));
        assert!(app.confirm.is_some());
        insta::assert_snapshot!(render(&app));
    }

    #[test]
    fn opens_at_editor_with_a_validation_error() {
        let mut app = app_with_opening_rules();
        press(&mut app, KeyCode::Char('o'));
        for c in "+10x".chars() {
            press(&mut app, KeyCode::Char(c));
        }
        press(&mut app, KeyCode::Enter);
        assert!(app.rate_input.as_ref().unwrap().error.is_some());
        insta::assert_snapshot!(render(&app));
    }

    #[test]
    fn max_active_editor() {
        let mut app = app_with_opening_rules();
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Char('m'));
        insta::assert_snapshot!(render(&app));
    }

    #[test]
    fn door_tab() {
        let mut app = app_with_data();
        press(&mut app, KeyCode::Char('7'));
        app.update(Action::DoorData(Box::new(fixtures::door(6))));
        insta::assert_snapshot!(render(&app));
    }

    #[test]
    fn door_tab_before_its_first_answer() {
        let mut app = app_with_data();
        press(&mut app, KeyCode::Char('7'));
        insta::assert_snapshot!(render(&app));
    }

    #[test]
    fn door_tab_when_the_server_is_unreachable() {
        let mut app = app_with_data();
        press(&mut app, KeyCode::Char('7'));
        app.update(Action::DoorData(Box::new(fixtures::door(6))));
        app.update(Action::FetchFailed(ApiError::Unreachable(
            "cannot reach http://127.0.0.1:8080: Connection refused (os error 111)".into(),
        )));
        insta::assert_snapshot!(render(&app));
    }

    #[test]
    fn unreachable_banner_keeps_the_last_data() {
        let mut app = app_with_data();
        app.update(Action::FetchFailed(ApiError::Unreachable(
            "cannot reach http://127.0.0.1:8080: Connection refused (os error 111)".into(),
        )));
        insta::assert_snapshot!(render(&app));
    }

    #[test]
    fn rejected_token_banner() {
        let mut app = App::new("http://127.0.0.1:8080");
        app.update(Action::FetchFailed(ApiError::Rejected(
            "the server rejected the token (401): the token has expired".into(),
        )));
        insta::assert_snapshot!(render(&app));
    }
}
