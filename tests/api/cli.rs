//! The `boxoffice` binary itself: token minting, spec printing, migrations,
//! the embedded default start-up and graceful shutdown.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use boxoffice::{
    auth::{
        domain::{Role, Subject},
        infra::jwt::JwtCodec,
        ports::TokenCodec,
    },
    kernel::UserId,
};

use crate::helpers::{Backend, backend, redis_url};

const BIN: &str = env!("CARGO_BIN_EXE_boxoffice");

#[test]
fn token_prints_a_verifiable_jwt_alone() {
    let out = Command::new(BIN)
        .args(["token", "--user", "42", "--admin", "--ttl", "60"])
        .env("BOXOFFICE_JWT_SECRET", "cli-secret")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.trim_end_matches('\n');
    assert!(
        !token.contains(char::is_whitespace),
        "stdout must be the token alone: {stdout:?}"
    );
    let identity = JwtCodec::new(b"cli-secret")
        .verify(token, chrono::Utc::now())
        .unwrap();
    assert_eq!(identity.subject, Subject::User(UserId(42)));
    assert_eq!(identity.role, Role::Admin);
}

#[test]
fn token_mints_a_staff_token_and_refuses_a_role_the_admin_flag_contradicts() {
    let mint = |args: &[&str]| {
        Command::new(BIN)
            .args(["token", "--user", "8"])
            .args(args)
            .env("BOXOFFICE_JWT_SECRET", "cli-secret")
            .output()
            .unwrap()
    };
    let out = mint(&["--role", "staff"]);
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    let claimed = JwtCodec::new(b"cli-secret")
        .verify(token.trim_end_matches('\n'), chrono::Utc::now())
        .unwrap();
    assert_eq!(claimed.subject, Subject::User(UserId(8)));
    assert_eq!(claimed.role, Role::Staff);

    let out = mint(&["--admin", "--role", "staff"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(out.stdout.is_empty(), "no token printed");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("`--admin`") && stderr.contains("`--role staff`"),
        "{stderr}"
    );
}

#[test]
fn openapi_prints_the_generated_spec() {
    let out = Command::new(BIN).arg("openapi").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim_end(),
        boxoffice::app::openapi_spec().trim_end()
    );
}

/// The server binary as a developer first runs it, on the embedded default
/// (whichever database this run of the suite is for): starts with no
/// configuration, seeds the demo concert, prints development tokens and a
/// walk-through that works, and exits cleanly on SIGTERM.
#[tokio::test]
async fn serve_seeds_the_demo_and_shuts_down_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("BOXOFFICE_DATABASE_URL")
        .env_remove("BOXOFFICE_JWT_SECRET")
        .env_remove("BOXOFFICE_QUEUE_TOKEN_SECRET")
        .env_remove("BOXOFFICE_SEED_DEMO")
        .env("BOXOFFICE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (hint_tx, hint_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut hint: Option<Vec<String>> = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("url=http://") {
                let url = line[at + 4..]
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let _ = tx.send(url);
            }
            // The walk-through the server prints: the lines after "try it".
            match &mut hint {
                None if line.contains("try it (paste into bash)") => hint = Some(Vec::new()),
                Some(lines) if line.trim().is_empty() => {
                    let _ = hint_tx.send(std::mem::take(lines).join("\n"));
                    hint = Some(Vec::new());
                }
                Some(lines) => lines.push(line),
                None => {}
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server announces its URL");

    // The startup hint works as printed: pasted into bash it enters the
    // waiting room, waits to be admitted and reads the seat map.
    let hint = hint_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the server prints a walk-through");
    let ran = Command::new("timeout")
        .args(["30", "bash", "-euo", "pipefail", "-c", &hint])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "the hint failed: {hint}\n{out}\n{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let seats = out.lines().last().unwrap_or_default();
    let page: serde_json::Value =
        serde_json::from_str(seats).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(page["items"].as_array().map(Vec::len), Some(3), "{out}");

    let concerts: serde_json::Value = reqwest::get(format!("{base}/v1/concerts"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        concerts["items"].as_array().map(Vec::len),
        Some(1),
        "the demo concert is seeded: {concerts}"
    );
    assert!(concerts.get("nextCursor").is_none(), "{concerts}");
    assert!(
        dir.path().join("boxoffice.db").exists(),
        "the default SQLite file is created"
    );
    assert!(
        dir.path().join("boxoffice.db-wal").exists(),
        "SQLite runs in WAL mode"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the server did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
}

/// Anything but the embedded default on loopback (here: this run's
/// production shape, or SQLite listening on every address) refuses to
/// start on the public development secret, or without a queue-token key
/// of its own, in one line naming the variable, and prints no token.
#[tokio::test]
async fn serve_refuses_public_secrets_outside_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let target: Vec<String> = match backend() {
        Backend::Postgres => vec![
            "--database-url".into(),
            crate::helpers::fresh_database_url().await,
            "--redis-url".into(),
            redis_url(),
        ],
        Backend::Sqlite => vec![
            "--database-url".into(),
            format!("sqlite://{}", dir.path().join("x.db").display()),
            "--listen".into(),
            "0.0.0.0:0".into(),
        ],
    };
    let strong = "a-secret-of-thirty-two-bytes-or-more-0123";
    let cases: [(&[&str], &str); 4] = [
        (&[], "BOXOFFICE_JWT_SECRET"),
        (&["--jwt-secret", "short-secret"], "BOXOFFICE_JWT_SECRET"),
        (&["--jwt-secret", strong], "BOXOFFICE_QUEUE_TOKEN_SECRET"),
        (
            &["--jwt-secret", strong, "--queue-token-secret", strong],
            "BOXOFFICE_QUEUE_TOKEN_SECRET",
        ),
    ];
    for (secrets, named) in cases {
        let out = Command::new("timeout")
            .args(["30", BIN, "serve"])
            .args(&target)
            .args(secrets)
            .current_dir(dir.path())
            .env_remove("BOXOFFICE_JWT_SECRET")
            .env_remove("BOXOFFICE_QUEUE_TOKEN_SECRET")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{secrets:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(lines[0].contains(named), "{secrets:?}: {stderr}");
        assert!(
            !stderr.contains("token (24h)"),
            "no token printed: {stderr}"
        );
    }
}

#[tokio::test]
async fn migrate_applies_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend() {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("m.db").display()),
        Backend::Postgres => crate::helpers::fresh_database_url().await,
    };
    let out = Command::new(BIN)
        .args(["migrate", "--database-url", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = boxoffice::db::connect(&url).await.unwrap();
    use sea_orm::ConnectionTrait;
    db.execute_unprepared("SELECT id, schedule_id, status, held_until FROM seats")
        .await
        .unwrap();
}
