//! The HTTP edge against hostile clients, on the real binary: a huge body
//! in every framing (HTTP/1 with a length, chunked, HTTP/2 with and
//! without a length) is refused while it streams in, without the server's
//! memory growing by it; a client trickling its header is cut after the
//! header timeout while a kept-alive connection lives to its idle
//! timeout; thousands of idle connections keep no request waiting; past
//! the connection cap new clients wait for a free slot.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use boxoffice::auth::domain::Role;
use futures::StreamExt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::crash::{Server, Shopper, crash_database};

/// The body the hostile client sends: 50 MB against a 64 KiB limit.
const HUGE: usize = 50 * 1024 * 1024;

async fn started(dir: &Path, args: &[&str]) -> Server {
    let database_url = crash_database(dir).await;
    let mut server = Server::new(dir, &database_url).with_args(args);
    server.start().await;
    server
}

/// The largest resident set the process has had (`VmHWM`), in kB.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .expect("VmHWM in /proc status")
}

static CHUNK: [u8; 64 * 1024] = [b' '; 64 * 1024];

/// Streams `HUGE` bytes of body over HTTP/1.1 through curl (which reads
/// an early answer while it still sends; hyper's client reports the broken
/// pipe instead), chunked or with the length announced; the status.
fn send_huge_http1(url: &str, token: &str, announce_length: bool) -> u16 {
    let framing: &[&str] = if announce_length {
        // curl reads stdin whole to learn the length of `--data-binary @-`.
        &["--data-binary", "@-"]
    } else {
        &["-H", "transfer-encoding: chunked", "-T", "-"]
    };
    let mut curl = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", &format!("authorization: Bearer {token}")])
        .args(["-H", "content-type: application/json", "--max-time", "60"])
        // No `Expect: 100-continue`: the body comes at once, as an
        // attacker sends it.
        .args(["-H", "expect:"])
        .args(framing)
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl runs");
    let mut stdin = curl.stdin.take().expect("curl's stdin");
    let feeder = std::thread::spawn(move || {
        // The server may refuse and hang up long before the end.
        for _ in 0..HUGE / CHUNK.len() {
            if stdin.write_all(&CHUNK).is_err() {
                break;
            }
        }
    });
    let out = curl.wait_with_output().expect("curl finishes");
    feeder.join().expect("the feeder thread");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

/// Streams `HUGE` bytes of body over HTTP/2 with prior knowledge, with or
/// without a length (curl 7.88 drops an answer that comes with a reset of
/// the stream it is still sending on; hyper's client keeps it); the status.
async fn send_huge_http2(url: &str, token: &str, announce_length: bool) -> u16 {
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let chunks = futures::stream::iter(
        (0..HUGE / CHUNK.len()).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from_static(&CHUNK))),
    );
    let mut req = client
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks));
    if announce_length {
        req = req.header("content-length", HUGE.to_string());
    }
    match req.send().await {
        Ok(resp) => resp.status().as_u16(),
        Err(err) => panic!("HTTP/2, length {announce_length}: {err:?}"),
    }
}

#[tokio::test]
async fn a_huge_body_is_refused_while_it_streams_in_whatever_its_framing() {
    let dir = tempfile::tempdir().unwrap();
    let server = started(dir.path(), &[]).await;
    let shopper = Shopper::of(&server);
    let token = shopper.token(7, Role::User);
    let url = format!("{}/v1/wallet/charges", server.base);
    let before = peak_rss_kb(server.pid());
    assert_eq!(
        send_huge_http1(&url, &token, true),
        413,
        "HTTP/1.1 with a length"
    );
    assert_eq!(
        send_huge_http1(&url, &token, false),
        413,
        "HTTP/1.1 chunked"
    );
    assert_eq!(
        send_huge_http2(&url, &token, false).await,
        413,
        "HTTP/2 without a length"
    );
    assert_eq!(
        send_huge_http2(&url, &token, true).await,
        413,
        "HTTP/2 with a length"
    );
    let after = peak_rss_kb(server.pid());
    eprintln!("server peak RSS: {before} kB before, {after} kB after four 50 MB bodies");
    assert!(
        after.saturating_sub(before) < 32 * 1024,
        "the bodies were buffered: peak RSS {before} kB -> {after} kB"
    );
    // The server still answers, and the refused charges changed nothing.
    let (status, wallet) = shopper
        .send(reqwest::Method::GET, "/v1/wallet", 7, None, None)
        .await
        .expect("the server answers");
    assert_eq!(
        (status, wallet["balance"].as_i64()),
        (200, Some(0)),
        "{wallet}"
    );
}

/// Reads until the peer closes (or the read fails); false if `within`
/// passed first.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// One HTTP/1.1 request on `stream`, and the head of its answer.
async fn exchange(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nhost: edge\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_trickled_header_is_cut_at_the_header_timeout_and_a_kept_alive_connection_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = started(dir.path(), &["--http-header-timeout-seconds", "2"]).await;
    let addr = server.base.trim_start_matches("http://").to_owned();

    // One header byte every 400 ms: 200 bytes would take 80 s.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    let request = format!(
        "GET /health/live HTTP/1.1\r\nx-pad: {}\r\n\r\n",
        "a".repeat(160)
    );
    let mut cut = false;
    for byte in request.bytes() {
        if slow.write_all(&[byte]).await.is_err()
            || closed_within(&mut slow, Duration::from_millis(400)).await
        {
            cut = true;
            break;
        }
    }
    let elapsed = started.elapsed();
    eprintln!("the trickling client was cut after {elapsed:?}");
    assert!(cut, "the trickling client was never cut");
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(8),
        "cut after {elapsed:?}, the header timeout is 2 s"
    );

    // A kept-alive connection idle longer than the header timeout stays
    // open: between requests it is idle, not slow.
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    assert!(exchange(&mut kept).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = exchange(&mut kept).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
}

#[tokio::test]
async fn five_thousand_idle_connections_keep_no_request_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let server = started(dir.path(), &[]).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut idle = Vec::with_capacity(5_000);
    for _ in 0..5_000 {
        idle.push(TcpStream::connect(&addr).await.expect("a connection"));
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for _ in 0..3 {
        let asked = Instant::now();
        let resp = client
            .get(format!("{}/v1/concerts", server.base))
            .send()
            .await
            .expect("answered beside 5,000 idle connections");
        assert_eq!(resp.status(), 200);
        eprintln!(
            "answered in {:?} beside 5,000 idle connections",
            asked.elapsed()
        );
    }
    drop(idle);
}

#[tokio::test]
async fn past_the_connection_cap_a_new_client_waits_for_a_free_slot() {
    let dir = tempfile::tempdir().unwrap();
    let server = started(
        dir.path(),
        &[
            "--max-connections",
            "20",
            "--http-header-timeout-seconds",
            "2",
        ],
    )
    .await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    // Every slot is taken: the next client is not served until the idle
    // ones are cut at the header timeout.
    let mut next = TcpStream::connect(&addr).await.unwrap();
    next.write_all(b"GET /health/live HTTP/1.1\r\nhost: edge\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let early = tokio::time::timeout(Duration::from_millis(1_000), next.read(&mut buf)).await;
    assert!(early.is_err(), "served past the cap");
    let n = tokio::time::timeout(Duration::from_secs(10), next.read(&mut buf))
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    for mut conn in idle {
        assert!(
            closed_within(&mut conn, Duration::from_secs(5)).await,
            "idle one cut"
        );
    }
}

/// One admitted buyer reading many distinct seat-map cursors of 1,000
/// seats each (every one a new snapshot and a new rendered page), with
/// snapshots living long enough (10 s) that all of them would be kept: the
/// server's memory stays within the cache budget instead of growing by
/// every page (the issue measured 2.2 GB for 10,000 cursors), with the
/// default budget (16 MiB). 1,500 cursors here; `BOXOFFICE_TEST_CURSORS`
/// reads more (the 10,000).
#[tokio::test]
async fn distinct_seat_map_cursors_stay_within_the_cache_budget() {
    let cursors: i64 = std::env::var("BOXOFFICE_TEST_CURSORS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_500);
    let dir = tempfile::tempdir().unwrap();
    let server = started(dir.path(), &["--seat-map-snapshot-ms", "10000"]).await;
    let shopper = Shopper::of(&server);
    let (created, _) = shopper.sale(cursors + 1_000).await;
    let (concert, schedule) = (&created["id"], &created["schedules"][0]["id"]);
    let (status, ticket) = shopper
        .post(
            "/v1/queue/tokens",
            7,
            None,
            Some(serde_json::json!({"concertId": concert})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{ticket}");
    let queue = ticket["token"].as_str().unwrap().to_owned();
    crate::helpers::eventually("admission", Duration::from_secs(30), || async {
        let (_, body) = shopper.get("/v1/queue/status", 7, Some(&queue)).await?;
        (body["status"] == "active").then_some(())
    })
    .await;
    let first_seat: i64 = {
        let (_, page) = shopper
            .get(
                &format!("/v1/schedules/{schedule}/seats?limit=1"),
                7,
                Some(&queue),
            )
            .await
            .unwrap();
        page["items"][0]["id"].as_i64().expect("a seat")
    };
    let before = peak_rss_kb(server.pid());
    let reads = futures::stream::iter(0..cursors)
        .map(|n| {
            let (shopper, queue) = (&shopper, &queue);
            async move {
                let path = format!(
                    "/v1/schedules/{schedule}/seats?after={}&limit=1000",
                    first_seat + n
                );
                let (status, page) = shopper.get(&path, 7, Some(queue)).await.unwrap();
                assert_eq!(status, 200, "{page}");
                page["items"].as_array().map_or(0, Vec::len)
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    assert!(reads.iter().all(|seats| *seats == 1_000), "every page full");
    let after = peak_rss_kb(server.pid());
    eprintln!("server peak RSS: {before} kB before, {after} kB after {cursors} distinct cursors");
    assert!(
        after.saturating_sub(before) < 64 * 1024,
        "peak RSS {before} kB -> {after} kB"
    );
}
