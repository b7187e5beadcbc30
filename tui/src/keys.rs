//! Where a key press goes. The global keys (quit, tabs, selection,
//! refresh, help, details) change the app directly; every other key goes to
//! the open dialog or the current tab's component, and the app applies the
//! action it answers with.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::{
    app::{App, Command, Tab},
    components,
};

/// Applies a key press; the command it asks the runtime to run, if any.
pub fn on_key(app: &mut App, key: KeyEvent) -> Option<Command> {
    if key.kind != KeyEventKind::Press {
        return None;
    }
    if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
        app.quit = true;
        return None;
    }
    if let Some(overlay) = components::overlay(app) {
        return overlay
            .on_key(app, key.code)
            .and_then(|action| app.update(action));
    }
    match key.code {
        KeyCode::Char('q') => app.quit = true,
        KeyCode::Char('?') => app.show_help = true,
        KeyCode::Esc => app.notice = None,
        KeyCode::Tab | KeyCode::Right | KeyCode::Char('l') => app.tab = app.tab.step(1),
        KeyCode::BackTab | KeyCode::Left | KeyCode::Char('h') => app.tab = app.tab.step(-1),
        KeyCode::Char(c @ '1'..='7') => {
            app.tab = Tab::ALL[(c as usize) - ('1' as usize)];
        }
        KeyCode::Down | KeyCode::Char('j') => app.select(1),
        KeyCode::Up | KeyCode::Char('k') => app.select(-1),
        KeyCode::Char('g') | KeyCode::F(5) => return Some(Command::Refresh),
        KeyCode::Char('d') | KeyCode::Enter => app.show_detail = components::detail(app).is_some(),
        code => {
            return components::tab(app.tab)
                .on_key(app, code)
                .and_then(|action| app.update(action));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use crossterm::event::KeyEventState;

    use super::*;
    use crate::fixtures::{loaded, press};

    #[test]
    fn tabs_switch_by_number_and_wrap_around() {
        let mut app = loaded();
        press(&mut app, KeyCode::Char('4'));
        assert_eq!(app.tab, Tab::Events);
        for _ in 0..4 {
            press(&mut app, KeyCode::Tab);
        }
        assert_eq!(app.tab, Tab::Queue);
        press(&mut app, KeyCode::BackTab);
        assert_eq!(app.tab, Tab::Door);
    }

    #[test]
    fn only_key_presses_count() {
        let mut app = loaded();
        let mut release = KeyEvent::from(KeyCode::Char('q'));
        release.kind = KeyEventKind::Release;
        release.state = KeyEventState::NONE;
        on_key(&mut app, release);
        assert!(!app.quit);
        on_key(
            &mut app,
            KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
        );
        assert!(app.quit);
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
}
