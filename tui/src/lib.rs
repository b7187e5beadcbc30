//! boxoffice-tui: the operator console over boxoffice's admin API.
//!
//! `App` holds the state and turns [`app::Action`]s into [`app::Command`]s;
//! components draw it and turn the keys of their tab or dialog into actions;
//! `keys` routes each key press to the app or the component that takes it;
//! `run` is the main loop, generic over the backend so tests draw to a
//! `TestBackend`.

pub mod api;
pub mod app;
pub mod components;
#[cfg(test)]
mod fixtures;
pub mod keys;
pub mod rate_input;
pub mod run;
pub mod ui;
