//! Tickets over HTTP: a seat bought gets a ticket whose code a client that
//! is not boxoffice verifies offline with the served keys, drawn as a QR
//! image; a refunded ticket ends void.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use boxoffice::auth::domain::Role;
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, assert_problem, eventually, outbox_payloads, spawn_app, spawn_sibling},
    sales::{WAIT, confirmed_ticket_on, get_as, sale},
};

/// The Python that runs the verifier: `scripts/test`'s venv, else python3.
fn python() -> String {
    std::env::var("BOXOFFICE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether Python with `cryptography` is here. In CI it must be (a missing
/// one fails the test); elsewhere the offline check is skipped, said so.
fn verifier_available() -> bool {
    let ready = Command::new(python())
        .args(["-c", "import cryptography"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !ready {
        assert!(
            std::env::var("CI").unwrap_or_default().is_empty(),
            "{} with the `cryptography` package is needed for the offline ticket check \
             (scripts/test installs it)",
            python()
        );
        eprintln!("skipping the offline ticket check: no Python with `cryptography`");
    }
    ready
}

/// `scripts/verify_ticket_code.py`'s verdict on `code` with the key set:
/// the claims, or why it refused.
fn verify_offline(keys: &Value, code: &str) -> Result<Value, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/verify_ticket_code.py");
    let mut child = Command::new(python())
        .args([script, code])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the verifier starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(keys.to_string().as_bytes())
        .expect("the key set is written");
    let out = child.wait_with_output().expect("the verifier ends");
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(serde_json::from_str(&said).expect("the claims are JSON"))
    } else {
        Err(said)
    }
}

/// The key set anyone may read.
async fn keys(app: &TestApp) -> Value {
    let resp = app.get("/v1/tickets/keys").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "public, max-age=300");
    resp.json().await.unwrap()
}

/// `user`'s tickets, waiting until there are `n`.
pub(crate) async fn tickets_of(app: &TestApp, user: i64, n: usize) -> Vec<Value> {
    eventually("the tickets", WAIT, || async {
        let page = get_as(app, user, "/v1/users/me/tickets").await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        (items.len() == n).then_some(items)
    })
    .await
}

/// `user` refunds `payment`; waits until its ticket `id` is void.
pub(crate) async fn refund_until_void(app: &TestApp, user: i64, payment: &Value, id: &Value) {
    let refund = app
        .post(&format!("/v1/payments/{}/refunds", payment["id"]))
        .bearer_auth(app.user_token(user))
        .send()
        .await
        .unwrap();
    assert_eq!(refund.status(), 202);
    eventually("the ticket to be void", WAIT, || async {
        let ticket = get_as(app, user, &format!("/v1/tickets/{id}")).await;
        (ticket["status"] == "void").then_some(())
    })
    .await;
}

async fn qr(app: &TestApp, user: i64, id: &Value, accept: Option<&str>) -> reqwest::Response {
    let request = app
        .get(&format!("/v1/tickets/{id}/qr"))
        .bearer_auth(app.user_token(user));
    let request = match accept {
        Some(accept) => request.header("accept", accept),
        None => request,
    };
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_bought_seat_gets_a_ticket_that_verifies_offline_and_draws_as_a_qr() {
    let app = spawn_app().await;
    let sale = sale(&app, 2).await;
    let (_, reservation, _) = confirmed_ticket_on(&app, 41, &sale, sale.seats[1]).await;
    let ticket = tickets_of(&app, 41, 1).await.remove(0);
    assert_eq!(ticket["reservationId"], reservation["id"]);
    assert_eq!(ticket["scheduleId"], sale.schedule);
    assert_eq!(ticket["seatId"], sale.seats[1]);
    assert_eq!(ticket["version"], 1);
    assert_eq!(ticket["status"], "valid");
    let id = &ticket["id"];
    assert_eq!(get_as(&app, 41, &format!("/v1/tickets/{id}")).await, ticket);

    let keys = keys(&app).await;
    let key = &keys["keys"][0];
    assert_eq!(
        (&key["kty"], &key["crv"], &key["use"], &key["alg"]),
        (
            &json!("OKP"),
            &json!("Ed25519"),
            &json!("sig"),
            &json!("EdDSA")
        )
    );
    let code = ticket["code"].as_str().unwrap();
    if verifier_available() {
        let claims = verify_offline(&keys, code).expect("the code verifies");
        assert_eq!(
            claims,
            json!({"tid": id, "sch": sale.schedule, "seat": sale.seats[1], "sub": 41, "ver": 1})
        );
        // The verifier does verify: the same signature over another seat fails.
        let mut parts: Vec<String> = code.split('.').map(str::to_owned).collect();
        let other_seat =
            json!({"tid": id, "sch": sale.schedule, "seat": sale.seats[0], "sub": 41, "ver": 1});
        parts[1] = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            other_seat.to_string(),
        );
        let refused = verify_offline(&keys, &parts.join(".")).unwrap_err();
        assert!(refused.contains("does not verify"), "{refused}");
    }

    let svg = qr(&app, 41, id, None).await;
    assert_eq!(svg.status(), 200);
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    assert!(svg.text().await.unwrap().contains("<svg"));
    let png = qr(&app, 41, id, Some("image/png")).await;
    assert_eq!(png.status(), 200);
    assert_eq!(png.headers()["content-type"], "image/png");
    assert_eq!(&png.bytes().await.unwrap()[..8], b"\x89PNG\r\n\x1a\n");

    // Someone else's ticket is not there for them.
    let theirs = app
        .get(&format!("/v1/tickets/{id}"))
        .bearer_auth(app.user_token(42))
        .send()
        .await
        .unwrap();
    assert_problem(theirs, 404, "not_found").await;
    assert_problem(qr(&app, 42, id, None).await, 404, "not_found").await;
    let none = get_as(&app, 42, "/v1/users/me/tickets").await;
    assert_eq!(none["items"], json!([]));

    // A saga step like the others: its event reaches the data platform.
    let issued = outbox_payloads(&app.db, "TicketIssued").await;
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0]["ticketId"], *id);
    assert_eq!(issued[0]["kid"], key["kid"]);
    eventually("TicketIssued on the data platform", WAIT, || async {
        app.data_platform_lines()
            .iter()
            .any(|line| line["type"] == "TicketIssued")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_refunded_ticket_ends_void_and_draws_no_qr() {
    let app = spawn_app().await;
    let sale = sale(&app, 2).await;
    let (_, _, payment) = confirmed_ticket_on(&app, 43, &sale, sale.seats[0]).await;
    let id = tickets_of(&app, 43, 1).await[0]["id"].clone();
    refund_until_void(&app, 43, &payment, &id).await;
    assert_problem(qr(&app, 43, &id, None).await, 410, "ticket_void").await;
    let voided = outbox_payloads(&app.db, "TicketVoided").await;
    assert_eq!(voided.len(), 1);
    assert_eq!(voided[0]["ticketId"], id);
}

#[tokio::test]
async fn instances_share_one_key_and_a_rotated_out_key_verifies_until_retired() {
    let app = spawn_app().await;
    let sibling = spawn_sibling(&app, |_| {}).await;
    let first = keys(&app).await;
    assert_eq!(first["keys"].as_array().unwrap().len(), 1);
    assert_eq!(keys(&sibling).await, first, "both started on one key");

    let sale = sale(&app, 2).await;
    confirmed_ticket_on(&app, 44, &sale, sale.seats[0]).await;
    let old = tickets_of(&app, 44, 1).await.remove(0);

    // `boxoffice ticket-keys rotate` stores the next key and prints its
    // kid; an instance started after it signs with it and still publishes
    // the old one.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .args(["ticket-keys", "rotate", "--database-url"])
        .arg(&app.settings.database_url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let next = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let rotated = spawn_sibling(&app, |_| {}).await;
    let keys = keys(&rotated).await;
    let kids: Vec<_> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].clone())
        .collect();
    assert_eq!(kids, vec![json!(next), first["keys"][0]["kid"].clone()]);
    if verifier_available() {
        let claims = verify_offline(&keys, old["code"].as_str().unwrap()).unwrap();
        assert_eq!(claims["tid"], old["id"]);
    }

    // `ticket-keys retire` refuses the key that signs now, and retires the
    // old one: an instance started after it no longer publishes it, and
    // its codes fail at the door.
    let retire = |kid: String| {
        let url = app.settings.database_url.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_boxoffice"))
                .args(["ticket-keys", "retire", &kid, "--database-url", &url])
                .output()
                .await
                .unwrap()
        }
    };
    let refused = retire(next.clone()).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("rotate"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let old_kid = first["keys"][0]["kid"].as_str().unwrap().to_owned();
    let retired = retire(old_kid.clone()).await;
    assert!(
        retired.status.success(),
        "{}",
        String::from_utf8_lossy(&retired.stderr)
    );
    assert!(!retire(old_kid).await.status.success(), "retired already");
    let after = spawn_sibling(&app, |_| {}).await;
    let published = after.get("/v1/tickets/keys").send().await.unwrap();
    let published: Value = published.json().await.unwrap();
    assert_eq!(published["keys"].as_array().unwrap().len(), 1);
    assert_eq!(published["keys"][0]["kid"], json!(next));
    let scan = after
        .post("/v1/checkins")
        .bearer_auth(after.token(1, Role::Staff))
        .json(&json!({"code": old["code"], "gate": "A"}))
        .send()
        .await
        .unwrap();
    assert_problem(scan, 422, "invalid_code").await;
}
