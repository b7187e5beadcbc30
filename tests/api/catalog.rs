use chrono::{TimeDelta, Utc};
use sea_orm::{
    ConnectionTrait,
    sea_query::{Alias, Expr, ExprTrait, Query},
};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_problem, concert_body, eventually, page_ids, spawn_app, spawn_app_with,
    spawn_sibling,
};

/// A page of the concert list; `query` is `""` or a query string.
async fn concerts(app: &TestApp, query: &str) -> Value {
    let resp = app
        .get(&format!("/v1/concerts{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "GET /v1/concerts{query}");
    resp.json().await.unwrap()
}

async fn seats(app: &TestApp, created: &Value) -> Vec<Value> {
    app.seat_map(1, &created["id"], &created["schedules"][0]["id"])
        .await
}

/// A page of the concert's schedules; `query` is `""` or a query string.
async fn schedule_page(app: &TestApp, concert: &Value, query: &str) -> Value {
    let resp = app
        .get(&format!("/v1/concerts/{concert}/schedules{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// All of the concert's schedules: one page, the last.
async fn schedules(app: &TestApp, concert: &Value) -> Vec<Value> {
    let page = schedule_page(app, concert, "").await;
    assert!(page.get("nextCursor").is_none(), "{page}");
    page["items"].as_array().unwrap().clone()
}

/// The seat numbers of a page of the seat map, in order.
fn numbers(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|seat| seat["number"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn admin_creates_a_concert_and_everyone_can_browse_it() {
    let app = spawn_app().await;
    let created = app.create_concert(&concert_body(2, 3)).await;
    let concert_id = &created["id"];
    assert_eq!(created["schedules"].as_array().unwrap().len(), 1);
    assert_eq!(created["schedules"][0]["seatCount"], 5);

    let listed = concerts(&app, "").await;
    assert_eq!(
        listed,
        json!({"items": [{"id": concert_id, "title": "Test Night", "venue": "Test Hall"}]})
    );

    let schedule_list = schedules(&app, concert_id).await;
    assert_eq!(schedule_list.len(), 1);
    assert_eq!(schedule_list[0]["id"], created["schedules"][0]["id"]);
    assert_eq!(schedule_list[0]["availableSeats"], 5);
    assert_eq!(
        schedule_list[0]["startsAt"],
        created["schedules"][0]["startsAt"]
    );

    let seat_map = seats(&app, &created).await;
    let summary: Vec<(i64, String, i64, String)> = seat_map
        .iter()
        .map(|s| {
            (
                s["number"].as_i64().unwrap(),
                s["grade"].as_str().unwrap().to_owned(),
                s["price"].as_i64().unwrap(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "VIP".into(), 150000, "available".into()),
            (2, "VIP".into(), 150000, "available".into()),
            (3, "R".into(), 90000, "available".into()),
            (4, "R".into(), 90000, "available".into()),
            (5, "R".into(), 90000, "available".into()),
        ]
    );
}

#[tokio::test]
async fn seats_carry_the_section_and_row_their_block_gave_them() {
    let app = spawn_app().await;
    let starts_at = (Utc::now() + TimeDelta::days(10)).to_rfc3339();
    let row = |label: &str, count| json!({"grade": "R", "price": 10, "count": count, "section": " Floor ", "row": label});
    let created = app
        .create_concert(&json!({
            "title": "Rows", "venue": "Hall",
            "schedules": [{"startsAt": starts_at, "seats": [
                row("A", 2), row("B", 2), {"grade": "S", "price": 5, "count": 1}
            ]}]
        }))
        .await;
    let places: Vec<(i64, Value, Value)> = seats(&app, &created)
        .await
        .iter()
        .map(|s| {
            (
                s["number"].as_i64().unwrap(),
                s["section"].clone(),
                s["row"].clone(),
            )
        })
        .collect();
    assert_eq!(
        places,
        vec![
            (1, json!("Floor"), json!("A")),
            (2, json!("Floor"), json!("A")),
            (3, json!("Floor"), json!("B")),
            (4, json!("Floor"), json!("B")),
            // A block without a place: its seats say none, as every seat
            // of a schedule created before places existed.
            (5, Value::Null, Value::Null),
        ]
    );
}

#[tokio::test]
async fn schedules_are_listed_in_time_order_with_their_own_counts() {
    let app = spawn_app().await;
    let later = (Utc::now() + TimeDelta::days(40)).to_rfc3339();
    let sooner = (Utc::now() + TimeDelta::days(20)).to_rfc3339();
    let created = app
        .create_concert(&json!({
            "title": "Two Nights", "venue": "Hall",
            "schedules": [
                {"startsAt": later, "seats": [{"grade": "R", "price": 1, "count": 3}]},
                {"startsAt": sooner, "seats": [{"grade": "R", "price": 1, "count": 7}]}
            ]
        }))
        .await;
    let listed = schedules(&app, &created["id"]).await;
    let counts: Vec<i64> = listed
        .iter()
        .map(|s| s["availableSeats"].as_i64().unwrap())
        .collect();
    assert_eq!(counts, vec![7, 3]);

    // A page at a time, still in time order; the cursor is a schedule id.
    let (sooner_id, later_id) = (&listed[0]["id"], &listed[1]["id"]);
    let first = schedule_page(&app, &created["id"], "?limit=1").await;
    assert_eq!(first["items"], json!([listed[0]]));
    assert_eq!(&first["nextCursor"], sooner_id);
    let second = schedule_page(&app, &created["id"], &format!("?limit=1&after={sooner_id}")).await;
    assert_eq!(second, json!({"items": [listed[1]]}), "the last page");
    let past_the_end = schedule_page(&app, &created["id"], &format!("?after={later_id}")).await;
    assert_eq!(past_the_end, json!({"items": []}));
    // A cursor must be a schedule of this concert.
    let other = app.create_concert(&concert_body(1, 1)).await;
    let others = format!("?after={}", other["schedules"][0]["id"]);
    for query in [others.as_str(), "?after=999999"] {
        let resp = app
            .get(&format!("/v1/concerts/{}/schedules{query}", created["id"]))
            .send()
            .await
            .unwrap();
        assert_problem(resp, 400, "validation_failed").await;
    }
}

#[tokio::test]
async fn concerts_come_in_pages_in_id_order() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(
            app.create_concert(&concert_body(1, 1)).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    // Every page through to the last, two at a time.
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = concerts(&app, &query).await;
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(!items.is_empty() && items.len() <= 2, "{page}");
        seen.extend(page_ids(&page));
        match page.get("nextCursor") {
            Some(cursor) => {
                assert_eq!(items.len(), 2, "only the last page is short: {page}");
                assert_eq!(cursor, &items[1]["id"], "the cursor is the last id");
                query = format!("?limit=2&after={cursor}");
            }
            None => break,
        }
        assert!(pages < 10, "paging never ends");
    }
    assert_eq!(pages, 2);
    let mut ascending = created.clone();
    ascending.sort_unstable();
    assert_eq!(seen, ascending, "each concert once, in id order");

    // An exactly full last page names no next page; past the end is empty.
    let all = concerts(&app, "?limit=3").await;
    assert_eq!(page_ids(&all), ascending);
    assert!(all.get("nextCursor").is_none(), "{all}");
    assert_eq!(
        concerts(&app, &format!("?after={}", ascending[0])).await,
        json!({"items": all["items"].as_array().unwrap()[1..]})
    );
    assert_eq!(
        concerts(&app, &format!("?after={}", ascending[2])).await,
        json!({"items": []})
    );
}

#[tokio::test]
async fn the_seat_map_comes_in_pages_and_filters_by_status_and_grade() {
    let app = spawn_app().await;
    // Seats 1–3 VIP, 4–7 R.
    let created = app.create_concert(&concert_body(3, 4)).await;
    let other = app.create_concert(&concert_body(1, 1)).await;
    let (concert, schedule) = (&created["id"], &created["schedules"][0]["id"]);
    let token = app.admitted_token(1, concert).await;

    // Three at a time, following the cursor to the last page.
    let mut seen: Vec<Value> = Vec::new();
    let mut query = "?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let page = app.seat_page(1, &token, schedule, &query).await;
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(!items.is_empty() && items.len() <= 3, "{page}");
        seen.extend(items.iter().cloned());
        match page.get("nextCursor") {
            Some(cursor) => {
                assert_eq!(items.len(), 3, "only the last page is short: {page}");
                assert_eq!(cursor, &items[2]["id"], "the cursor is the last seat's id");
                query = format!("?limit=3&after={cursor}");
            }
            None => break,
        }
        assert!(pages < 10, "paging never ends");
    }
    assert_eq!(pages, 3);
    let seen_numbers: Vec<i64> = seen.iter().map(|s| s["number"].as_i64().unwrap()).collect();
    assert_eq!(
        seen_numbers,
        (1..=7).collect::<Vec<_>>(),
        "in order, none twice, none missing"
    );
    let grades: Vec<&str> = seen.iter().map(|s| s["grade"].as_str().unwrap()).collect();
    assert_eq!(grades, ["VIP", "VIP", "VIP", "R", "R", "R", "R"]);
    assert!(seen.iter().all(|s| s["status"] == "available"));
    let whole = app.seat_page(1, &token, schedule, "").await;
    assert_eq!(
        whole,
        json!({ "items": seen }),
        "the pages make up the whole map"
    );
    // A page exactly full that is the last names no next page.
    let exact = app.seat_page(1, &token, schedule, "?limit=7").await;
    assert_eq!(exact, whole);

    // One seat held: the filters find it, and only it, or everything else.
    let sale = crate::sales::Sale {
        concert: concert.clone(),
        schedule: schedule.clone(),
        seats: seen.iter().map(|s| s["id"].as_i64().unwrap()).collect(),
    };
    let held = sale.seats[4];
    assert_eq!(
        crate::sales::hold(&app, 1, &token, &sale, held)
            .await
            .status(),
        201
    );
    let page = app.seat_page(1, &token, schedule, "?status=held").await;
    assert_eq!(page_ids(&page), vec![held]);
    assert_eq!(page["items"][0]["status"], "held");
    assert!(page.get("nextCursor").is_none(), "{page}");
    let page = app
        .seat_page(1, &token, schedule, "?status=available")
        .await;
    assert_eq!(numbers(&page), vec![1, 2, 3, 4, 6, 7]);
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "available")
    );
    assert_eq!(
        app.seat_page(1, &token, schedule, "?status=sold").await,
        json!({"items": []})
    );
    let page = app.seat_page(1, &token, schedule, "?grade=R").await;
    assert_eq!(numbers(&page), vec![4, 5, 6, 7]);
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["grade"] == "R")
    );
    assert_eq!(
        numbers(&app.seat_page(1, &token, schedule, "?grade=VIP").await),
        vec![1, 2, 3]
    );
    assert_eq!(
        app.seat_page(1, &token, schedule, "?grade=S").await,
        json!({"items": []})
    );
    // Filters and pages together: the cursor skips what the filters leave out.
    let first = app
        .seat_page(1, &token, schedule, "?grade=R&status=available&limit=2")
        .await;
    assert_eq!(numbers(&first), vec![4, 6]);
    assert_eq!(first["nextCursor"], sale.seats[5]);
    let rest = app
        .seat_page(
            1,
            &token,
            schedule,
            &format!(
                "?grade=R&status=available&limit=2&after={}",
                first["nextCursor"]
            ),
        )
        .await;
    assert_eq!(numbers(&rest), vec![7]);
    assert!(rest.get("nextCursor").is_none(), "{rest}");

    // A cursor must be a seat of this schedule.
    let other_seat = crate::sales::seat_ids(&app, &other["schedules"][0]["id"]).await[0];
    for after in [other_seat, 999_999] {
        let resp = app
            .get(&format!("/v1/schedules/{schedule}/seats?after={after}"))
            .bearer_auth(app.user_token(1))
            .header("x-queue-token", &token)
            .send()
            .await
            .unwrap();
        assert_problem(resp, 400, "validation_failed").await;
    }
}

/// Puts seat rows into held/sold states directly, as the reservation module
/// will, to check how the catalog reports them.
async fn set_seat(
    app: &TestApp,
    seat_id: i64,
    status: &str,
    held_until: Option<chrono::DateTime<Utc>>,
) {
    let update = Query::update()
        .table(Alias::new("seats"))
        .value(Alias::new("status"), status)
        .value(Alias::new("holder_id"), 77i64)
        .value(Alias::new("held_until"), held_until)
        .and_where(Expr::col(Alias::new("id")).eq(seat_id))
        .to_owned();
    app.db.execute(&update).await.unwrap();
}

#[tokio::test]
async fn held_seats_count_as_taken_until_their_hold_expires() {
    // Seats are changed behind the server's back (SQL), as another
    // instance would: read without snapshots so the change shows at once.
    let app = spawn_app_with(|s| s.seat_map_snapshot_ms = 0).await;
    let created = app.create_concert(&concert_body(1, 3)).await;
    let ids: Vec<i64> = seats(&app, &created)
        .await
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();

    set_seat(
        &app,
        ids[0],
        "held",
        Some(Utc::now() + TimeDelta::minutes(5)),
    )
    .await;
    set_seat(
        &app,
        ids[1],
        "held",
        Some(Utc::now() - TimeDelta::seconds(1)),
    )
    .await;
    set_seat(&app, ids[2], "sold", None).await;

    let statuses: Vec<String> = seats(&app, &created)
        .await
        .iter()
        .map(|s| s["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, vec!["held", "available", "sold", "available"]);
    assert_eq!(
        schedules(&app, &created["id"]).await[0]["availableSeats"],
        2
    );
}

#[tokio::test]
async fn unknown_and_malformed_ids() {
    let app = spawn_app().await;
    let user = app.user_token(1);
    assert_problem(
        app.get("/v1/concerts/999/schedules").send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get("/v1/concerts/-1/schedules").send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get("/v1/concerts/abc/schedules").send().await.unwrap(),
        400,
        "validation_failed",
    )
    .await;
    assert_problem(
        app.get("/v1/concerts/99999999999999999999999/schedules")
            .send()
            .await
            .unwrap(),
        400,
        "validation_failed",
    )
    .await;
    let created = app.create_concert(&concert_body(1, 1)).await;
    let queue_token = app.admitted_token(1, &created["id"]).await;
    let resp = app
        .get("/v1/schedules/999/seats")
        .bearer_auth(&user)
        .header("x-queue-token", &queue_token)
        .send()
        .await
        .unwrap();
    assert_problem(resp, 404, "not_found").await;
}

#[tokio::test]
async fn invalid_concerts_are_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    let admin = app.admin_token();
    let future = (Utc::now() + TimeDelta::days(3)).to_rfc3339();
    let past = (Utc::now() - TimeDelta::days(3)).to_rfc3339();
    let block = |grade: Value, price: Value, count: Value| json!({"grade": grade, "price": price, "count": count});
    let concert = |title: Value, starts_at: &str, seats: Value| json!({"title": title, "venue": "Hall", "schedules": [{"startsAt": starts_at, "seats": seats}]});
    let cases: Vec<(&str, Value)> = vec![
        ("missing title", json!({"venue": "Hall", "schedules": []})),
        (
            "blank title",
            concert(
                json!("   "),
                &future,
                json!([block(json!("R"), json!(1), json!(1))]),
            ),
        ),
        (
            "title too long",
            concert(
                json!("x".repeat(201)),
                &future,
                json!([block(json!("R"), json!(1), json!(1))]),
            ),
        ),
        (
            "title wrong type",
            concert(
                json!(42),
                &future,
                json!([block(json!("R"), json!(1), json!(1))]),
            ),
        ),
        (
            "no schedules",
            json!({"title": "T", "venue": "Hall", "schedules": []}),
        ),
        (
            "past schedule",
            concert(
                json!("T"),
                &past,
                json!([block(json!("R"), json!(1), json!(1))]),
            ),
        ),
        (
            "bad date",
            concert(
                json!("T"),
                "next friday",
                json!([block(json!("R"), json!(1), json!(1))]),
            ),
        ),
        ("no seats", concert(json!("T"), &future, json!([]))),
        (
            "negative price",
            concert(
                json!("T"),
                &future,
                json!([block(json!("R"), json!(-1), json!(1))]),
            ),
        ),
        (
            "huge price",
            concert(
                json!("T"),
                &future,
                json!([block(json!("R"), json!(1_000_000_000_001i64), json!(1))]),
            ),
        ),
        (
            "overflowing price",
            concert(
                json!("T"),
                &future,
                json!([block(json!("R"), json!(1e30), json!(1))]),
            ),
        ),
        (
            "fractional price",
            concert(
                json!("T"),
                &future,
                json!([block(json!("R"), json!(1.5), json!(1))]),
            ),
        ),
        (
            "zero count",
            concert(
                json!("T"),
                &future,
                json!([block(json!("R"), json!(1), json!(0))]),
            ),
        ),
        (
            "negative count",
            concert(
                json!("T"),
                &future,
                json!([block(json!("R"), json!(1), json!(-4))]),
            ),
        ),
        (
            "too many seats",
            concert(
                json!("T"),
                &future,
                json!([
                    block(json!("R"), json!(1), json!(15000)),
                    block(json!("S"), json!(1), json!(15000))
                ]),
            ),
        ),
        (
            "blank grade",
            concert(
                json!("T"),
                &future,
                json!([block(json!(""), json!(1), json!(1))]),
            ),
        ),
        (
            "blank row",
            concert(
                json!("T"),
                &future,
                json!([{"grade": "R", "price": 1, "count": 1, "row": "  "}]),
            ),
        ),
        (
            "section too long",
            concert(
                json!("T"),
                &future,
                json!([{"grade": "R", "price": 1, "count": 1, "section": "s".repeat(33)}]),
            ),
        ),
        (
            "row wrong type",
            concert(
                json!("T"),
                &future,
                json!([{"grade": "R", "price": 1, "count": 1, "row": 7}]),
            ),
        ),
        (
            "too many seat blocks",
            concert(
                json!("T"),
                &future,
                json!(vec![json!({"grade": "R", "price": 1, "count": 1}); 501]),
            ),
        ),
        ("body is an array", json!([1, 2, 3])),
    ];
    for (name, body) in cases {
        let resp = app
            .post("/v1/admin/concerts")
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        eprintln!("case: {name}");
        let problem = assert_problem(resp, 400, "validation_failed").await;
        assert!(
            !problem["detail"].as_str().unwrap().is_empty(),
            "{name}: empty detail"
        );
    }

    let malformed = app
        .post("/v1/admin/concerts")
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .unwrap();
    assert_problem(malformed, 400, "validation_failed").await;

    let wrong_type = app
        .post("/v1/admin/concerts")
        .bearer_auth(&admin)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_problem(wrong_type, 415, "unsupported_media_type").await;

    assert_eq!(
        concerts(&app, "").await,
        json!({"items": []}),
        "no refused request may write"
    );
}

#[tokio::test]
async fn a_large_but_valid_concert_is_created_in_one_call() {
    let app = spawn_app().await;
    let created = app.create_concert(&concert_body(5_000, 15_000)).await;
    assert_eq!(created["schedules"][0]["seatCount"], 20_000);
    let listed = schedules(&app, &created["id"]).await;
    assert_eq!(listed[0]["availableSeats"], 20_000);
}

/// One seat-map read: status, `ETag`, `Cache-Control` and the body.
async fn seat_read(
    app: &TestApp,
    user: i64,
    token: &str,
    schedule: &Value,
    if_none_match: Option<&str>,
) -> (u16, String, String, Value) {
    let mut req = app
        .get(&format!("/v1/schedules/{schedule}/seats"))
        .bearer_auth(app.user_token(user))
        .header("x-queue-token", token);
    if let Some(tag) = if_none_match {
        req = req.header("if-none-match", tag);
    }
    let resp = req.send().await.unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (status, etag, cache) = (
        resp.status().as_u16(),
        header("etag"),
        header("cache-control"),
    );
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, etag, cache, body)
}

/// The seat map carries an `ETag`; sent back in `If-None-Match` it gets
/// 304 while the page is unchanged. Pages come from short-lived snapshots:
/// a hold committed on this instance changes the page at once, and another
/// instance (its snapshots kept 300 ms) shows the change within that time.
#[tokio::test]
async fn a_seat_map_page_is_revalidated_by_etag_and_a_hold_changes_it_at_once() {
    let app = spawn_app().await;
    let created = app.create_concert(&concert_body(1, 3)).await;
    let (concert, schedule) = (created["id"].clone(), created["schedules"][0]["id"].clone());
    let token = app.admitted_token(7, &concert).await;

    let (status, tag, cache, first) = seat_read(&app, 7, &token, &schedule, None).await;
    assert_eq!(status, 200);
    assert!(tag.starts_with('"') && tag.len() > 2, "{tag:?}");
    assert_eq!(cache, "private, no-cache");
    let seat = first["items"][0]["id"].clone();
    assert_eq!(first["items"][0]["status"], "available");
    let (status, same, _, body) = seat_read(&app, 7, &token, &schedule, Some(&tag)).await;
    assert_eq!(
        (status, &same, &body),
        (304, &tag, &Value::Null),
        "unchanged: 304, no body"
    );
    let (status, ..) = seat_read(&app, 7, &token, &schedule, Some("\"stale\"")).await;
    assert_eq!(status, 200, "another tag gets the page");

    // A hold here changes the page at once, within the snapshot's life.
    let held = app
        .post("/v1/reservations")
        .bearer_auth(app.user_token(7))
        .header("x-queue-token", &token)
        .json(&json!({"scheduleId": schedule, "seatId": seat}))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 201);
    let (status, changed, _, page) = seat_read(&app, 7, &token, &schedule, Some(&tag)).await;
    assert_eq!(status, 200);
    assert_ne!(changed, tag);
    assert_eq!(page["items"][0]["status"], "held");

    // Another instance sees holds made here within its snapshots' life.
    let other = spawn_sibling(&app, |s| s.seat_map_snapshot_ms = 300).await;
    let other_token = other.admitted_token(8, &concert).await;
    let (_, _, _, seen) = seat_read(&other, 8, &other_token, &schedule, None).await;
    assert_eq!(seen["items"][0]["status"], "held");
    let second = first["items"][1]["id"].clone();
    let held = app
        .post("/v1/reservations")
        .bearer_auth(app.user_token(7))
        .header("x-queue-token", &token)
        .json(&json!({"scheduleId": schedule, "seatId": second}))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 201);
    eventually(
        "the other instance to show the hold",
        std::time::Duration::from_secs(3),
        || async {
            let (_, _, _, page) = seat_read(&other, 8, &other_token, &schedule, None).await;
            (page["items"][1]["status"] == "held").then_some(())
        },
    )
    .await;
}
