//! Orders: buyers race for overlapping orders of four seats on a schedule
//! laid out in rows. Half name their seats (windows of four that overlap
//! their neighbours'), half ask for four of the grade (best-available);
//! each winner pays for its order at once. Measured: holds and payments
//! (p50/p99), orders won per second, and the saga's drain from the last
//! payment to every paid order confirmed. Then, from the database: no order
//! held in part, no seat in two live orders, every paid order confirmed
//! whole, the wallet ledger adds up, and best-available parties seated
//! together in one row whenever a row still had room for them.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use boxoffice::auth::domain::Role;
use futures::StreamExt;
use indicatif::ProgressBar;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement};
use serde_json::{Value, json};

use crate::{
    full_flow::{Failures, Step, count, describe, drain},
    load,
    report::Report,
    server::Server,
    stores::Stores,
};

const SEAT_PRICE: i64 = 1_000;
const ORDER_SIZE: usize = 4;
const GRADE: &str = "R";
/// User ids start here (the admin is user 1).
const FIRST_USER: i64 = 30_001;
/// Buyers charged and admitted at once during the set-up.
const SETUP_CONCURRENCY: usize = 64;
/// How long the saga may take to confirm every paid order.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(60);

/// How a buyer asks for its four seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    SeatIds,
    BestAvailable,
}

/// An order a buyer won: how it was asked for and its seats as (row,
/// number).
struct Won {
    id: i64,
    ask: Ask,
    places: Vec<(String, i64)>,
    paid: bool,
}

impl Won {
    /// Not four seats next to each other in one row.
    fn split(&self) -> bool {
        let mut numbers: Vec<i64> = self.places.iter().map(|(_, n)| *n).collect();
        numbers.sort_unstable();
        self.places.iter().any(|(row, _)| *row != self.places[0].0)
            || numbers.windows(2).any(|w| w[0] + 1 != w[1])
    }
}

/// Everything the race needs; shared by the buyers' tasks.
struct Race {
    client: reqwest::Client,
    /// Each buyer's user token and admitted queue token.
    buyers: Vec<(String, String)>,
    schedule_id: i64,
    /// The seat ids of each row, front row first, by number.
    rows: Vec<Vec<i64>>,
    order_url: String,
    pay_url: String,
    hold: Step,
    pay: Step,
    won: Mutex<Vec<Won>>,
    /// 409 `seat_unavailable` answers (lost races, expected).
    lost: AtomicU64,
    last_hold: Mutex<Option<Instant>>,
    last_payment: Mutex<Option<Instant>>,
    failures: Failures,
}

/// Moves `latest` forward to now.
fn stamp(latest: &Mutex<Option<Instant>>) {
    *latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
}

fn read(latest: &Mutex<Option<Instant>>) -> Option<Instant> {
    *latest.lock().unwrap_or_else(|e| e.into_inner())
}

impl Race {
    fn fail(&self, buyer: usize, what: String) -> bool {
        self.failures
            .note(format!("user {}: {what}", FIRST_USER + buyer as i64))
    }

    /// The `j`th seat-id buyer's four seats: rows taken in turn, the start
    /// moving by three, so each window overlaps others in its row.
    fn window(&self, j: usize) -> Vec<i64> {
        let row = &self.rows[(j * 7) % self.rows.len()];
        let start = (j * 3) % (row.len() - ORDER_SIZE + 1);
        row[start..start + ORDER_SIZE].to_vec()
    }

    /// One buyer: asks for four seats and, having won them, pays; false on
    /// anything but a won-and-paid order or a lost race.
    async fn buyer(&self, i: usize) -> bool {
        let (token, queue) = &self.buyers[i];
        let (ask, body) = if i.is_multiple_of(2) {
            let seats = self.window(i / 2);
            let body = json!({"scheduleId": self.schedule_id, "seatIds": seats});
            (Ask::SeatIds, body)
        } else {
            let body =
                json!({"scheduleId": self.schedule_id, "grade": GRADE, "quantity": ORDER_SIZE});
            (Ask::BestAvailable, body)
        };
        let t = Instant::now();
        let answer = self
            .client
            .post(&self.order_url)
            .bearer_auth(token)
            .header("x-queue-token", queue)
            .json(&body)
            .send()
            .await;
        let placed = match answer {
            Ok(r) if r.status().as_u16() == 201 => r.json::<Value>().await.ok(),
            Ok(r) if r.status().as_u16() == 409 => {
                let code = r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|b| b["code"].as_str().map(str::to_owned));
                let lost = code.as_deref() == Some("seat_unavailable");
                self.hold.record(t, lost);
                stamp(&self.last_hold);
                if !lost {
                    return self.fail(i, format!("order: 409 {code:?}"));
                }
                self.lost.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            other => {
                self.hold.record(t, false);
                return self.fail(i, format!("order: {}", describe(other).await));
            }
        };
        let order = placed.and_then(|o| {
            let places = (o["seats"].as_array()?.iter())
                .map(|s| Some((s["row"].as_str()?.to_owned(), s["number"].as_i64()?)))
                .collect::<Option<Vec<_>>>()?;
            Some((o["id"].as_i64()?, places))
        });
        stamp(&self.last_hold);
        let Some((id, places)) = order.filter(|(_, p)| p.len() == ORDER_SIZE) else {
            self.hold.record(t, false);
            return self.fail(i, "order: 201 without an order of four".into());
        };
        self.hold.record(t, true);

        let t = Instant::now();
        let answer = self
            .client
            .post(&self.pay_url)
            .bearer_auth(token)
            .header("x-queue-token", queue)
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .json(&json!({"orderId": id}))
            .send()
            .await;
        let paid = match answer {
            Ok(r) if r.status().as_u16() == 201 => r
                .json::<Value>()
                .await
                .is_ok_and(|b| b["status"] == "paid" && b["orderId"] == id),
            other => {
                self.pay.record(t, false);
                self.won_order(id, ask, places, false);
                return self.fail(i, format!("pay: {}", describe(other).await));
            }
        };
        self.pay.record(t, paid);
        if paid {
            stamp(&self.last_payment);
        }
        self.won_order(id, ask, places, paid);
        paid || self.fail(i, "pay: no paid payment of the order".into())
    }

    fn won_order(&self, id: i64, ask: Ask, places: Vec<(String, i64)>, paid: bool) {
        self.won
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Won {
                id,
                ask,
                places,
                paid,
            });
    }
}

pub async fn run(stores: &Stores, smoke: bool, report: &mut Report) -> anyhow::Result<()> {
    let (buyers, rows, per_row): (usize, usize, u64) =
        if smoke { (40, 5, 8) } else { (2_000, 50, 20) };
    let (database_url, db) = stores.fresh_database().await?;
    let server = Server::start(&database_url, &stores.server_redis_args(), &[])?;
    // Every buyer is in flight at once: a connection each.
    let client = load::client(buyers as u64);
    let admin = server.token(1, Role::Admin);

    // Set-up: one schedule of `rows` rows, every buyer charged with the
    // price of four seats and admitted.
    let blocks: Vec<Value> = (1..=rows)
        .map(|row| json!({"grade": GRADE, "price": SEAT_PRICE, "count": per_row, "row": row.to_string()}))
        .collect();
    let concert = server
        .create_concert_with_seats(&client, "Orders", json!(blocks))
        .await?;
    let (concert_id, schedule_id) = Server::concert_and_schedule(&concert)?;
    server.open_room(&client, concert_id).await?;
    let seat_rows = seat_rows(&db, schedule_id).await?;
    anyhow::ensure!(
        seat_rows.len() == rows && seat_rows.iter().all(|r| r.len() == per_row as usize),
        "the schedule's seats are not {rows} rows of {per_row}"
    );
    let tokens: Vec<String> = (0..buyers)
        .map(|u| server.token(FIRST_USER + u as i64, Role::User))
        .collect();
    let setup = ProgressBar::new(buyers as u64).with_message("orders: charge and admit");
    let admitted: Vec<anyhow::Result<String>> = futures::stream::iter(&tokens)
        .map(|token| {
            let (client, server, setup) = (&client, &server, &setup);
            async move {
                client
                    .post(server.url("/v1/wallet/charges"))
                    .bearer_auth(token)
                    .header("idempotency-key", uuid::Uuid::new_v4().to_string())
                    .json(&json!({"amount": SEAT_PRICE * ORDER_SIZE as i64}))
                    .send()
                    .await?
                    .error_for_status()?;
                let queue = server.admitted(client, token, concert_id).await;
                setup.inc(1);
                queue
            }
        })
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    setup.finish();
    let queues = admitted.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    load::warm(&client, &server.url("/health/live"), buyers as u64).await?;

    let race = Arc::new(Race {
        client: client.clone(),
        buyers: tokens.into_iter().zip(queues).collect(),
        schedule_id,
        rows: seat_rows,
        order_url: server.url("/v1/orders"),
        pay_url: server.url("/v1/payments"),
        hold: Step::new(),
        pay: Step::new(),
        won: Mutex::default(),
        lost: AtomicU64::new(0),
        last_hold: Mutex::default(),
        last_payment: Mutex::default(),
        failures: Failures::default(),
    });
    // The race: every buyer sends its order at the same moment.
    let bar = ProgressBar::new(buyers as u64).with_message("orders");
    let started = Instant::now() + Duration::from_millis(200);
    let tasks: Vec<_> = (0..buyers)
        .map(|i| {
            let (race, bar) = (race.clone(), bar.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until(started.into()).await;
                let ok = race.buyer(i).await;
                bar.inc(1);
                ok
            })
        })
        .collect();
    let mut errors = 0;
    for task in tasks {
        errors += u64::from(!matches!(task.await, Ok(true)));
    }
    bar.finish();
    let elapsed = started.elapsed();
    let holds_took = read(&race.last_hold).map_or(elapsed, |t| t.duration_since(started));
    let won = std::mem::take(&mut *race.won.lock().unwrap_or_else(|e| e.into_inner()));
    let paid = won.iter().filter(|w| w.paid).count() as i64;

    // The saga's drain: from the last payment until every paid order's
    // seats are confirmed.
    let confirmed_sql = format!(
        "SELECT COUNT(*) FROM reservations WHERE schedule_id = {schedule_id} AND status = 'confirmed'"
    );
    let waited = Instant::now();
    let mut saga_drain = None;
    while waited.elapsed() < CONFIRM_TIMEOUT {
        if count(&db, &confirmed_sql).await? >= paid * ORDER_SIZE as i64 {
            saga_drain = Some(read(&race.last_payment).map_or(Duration::ZERO, |t| t.elapsed()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The rest of the pipeline (receipts, data platform) before the checks.
    let drained = drain(&client, &server, &admin, &db).await?;
    let checks = Checks::read(&db, schedule_id).await?;
    let best: Vec<&Won> = won.iter().filter(|w| w.ask == Ask::BestAvailable).collect();
    let split: Vec<&&Won> = best.iter().filter(|w| w.split()).collect();
    let room = RoomAtPick::read(&db, schedule_id).await?;
    let split_with_room = split.iter().filter(|w| room.had_room(w.id)).count();

    let mut scenario = race.hold.row(
        &format!("orders: hold (POST /v1/orders, {buyers} buyers at once, 4 seats each)"),
        holds_took,
    );
    scenario.errors = errors;
    let orders_per_second = won.len() as f64 / holds_took.as_secs_f64().max(f64::EPSILON);
    let lost = race.lost.load(Ordering::Relaxed);
    let four = ORDER_SIZE as i64;
    scenario
        .check(
            &format!("every buyer won and paid or lost with 409 seat_unavailable ({errors} errors)"),
            errors == 0 && won.len() as u64 + lost == buyers as u64,
        )
        .check(
            &format!(
                "no partial order (every order has exactly 4 reservations, none outside an order: {} partial, {} outside)",
                checks.partial_orders, checks.orderless
            ),
            checks.partial_orders == 0 && checks.orderless == 0,
        )
        .check(
            &format!(
                "every order in the database was answered 201 ({} in the database, {} answered)",
                checks.orders,
                won.len()
            ),
            checks.orders == won.len() as i64,
        )
        .check(
            "no seat in two live orders",
            checks.seats_in_two_live == 0,
        )
        .check(
            &format!("every paid order confirmed whole ({paid} orders)"),
            saga_drain.is_some()
                && checks.payments == paid
                && checks.payments_not_whole == 0
                && checks.sold_seats == four * paid
                && checks.confirmed_reservations == four * paid,
        )
        .check(
            "Σcharged − Σpaid + Σrefunded = Σbalances, each balance its last ledger row",
            checks.ledger == checks.balances && checks.balances_off_ledger == 0,
        )
        .check(
            "ledger matches payments (Σpaid = Σ payment amounts, each 4 seats' price)",
            -checks.paid_ledger == checks.payment_amounts
                && checks.payments_of_other_amounts == 0,
        )
        .check(
            "every sold seat belongs to its confirmed reservation",
            checks.sold_wrongly == 0,
        )
        .check(
            &format!(
                "best-available seated together in one row when a row had room ({} of {} split, {split_with_room} while a row had room)",
                split.len(),
                best.len()
            ),
            split_with_room == 0,
        )
        .check(
            "event pipeline drained (outbox, consumers, payments in flight)",
            drained,
        );
    scenario.notes.push(format!(
        "{buyers} admitted buyers (ids {FIRST_USER}..), each charged {} points, send one order at the same moment over {buyers} connections: even ones name 4 seats (a window in a row, overlapping its neighbours'), odd ones ask for {{grade, quantity: 4}}; {rows} rows × {per_row} seats at {SEAT_PRICE}. A winner pays by orderId at once.",
        SEAT_PRICE * four
    ));
    scenario.notes.push(format!(
        "{} orders won ({} by seat ids, {} best-available), {lost} × 409 seat_unavailable; {orders_per_second:.0} orders/s, the last hold answered {:.2} s after the start; {} seats sold and {} held unpaid, of {}.",
        won.len(),
        won.len() - best.len(),
        best.len(),
        holds_took.as_secs_f64(),
        checks.sold_seats,
        checks.held_reservations,
        rows as u64 * per_row
    ));
    scenario.notes.push(match saga_drain {
        Some(took) => format!(
            "saga drain: every paid order confirmed {:.3} s after the last payment.",
            took.as_secs_f64()
        ),
        None => format!(
            "saga drain: NOT every paid order confirmed within {} s ({} of {} seats).",
            CONFIRM_TIMEOUT.as_secs(),
            checks.confirmed_reservations,
            four * paid
        ),
    });
    scenario.notes.push(format!(
        "best-available: {} of {} orders split over rows or gaps; a split counts against the picker only when 4 seats next to each other in one row were still free when it picked (free then: unsold at the end, or held by an order placed later).",
        split.len(),
        best.len()
    ));
    scenario.notes.push(format!(
        "wallet: Σledger {}, Σbalances {}, Σpaid {}, Σ payment amounts {}; payments {} ({} not confirmed whole); dead letters {}.",
        checks.ledger,
        checks.balances,
        -checks.paid_ledger,
        checks.payment_amounts,
        checks.payments,
        checks.payments_not_whole,
        checks.dead_letters
    ));
    scenario.notes.extend(race.failures.notes());
    let pay = race
        .pay
        .row("orders: pay (POST /v1/payments {orderId})", elapsed);
    report
        .ratios
        .insert("ordersPerSecond".into(), orders_per_second);
    report
        .ratios
        .insert("ordersHoldP99Ms".into(), scenario.p99_ms);
    report.ratios.insert("ordersPayP99Ms".into(), pay.p99_ms);
    report
        .ratios
        .insert("ordersBestAvailableSplit".into(), split.len() as f64);
    if let Some(took) = saga_drain {
        report
            .ratios
            .insert("ordersSagaDrainSeconds".into(), took.as_secs_f64());
    }
    report.scenarios.push(scenario);
    report.scenarios.push(pay);
    drop(server);
    Ok(())
}

/// The schedule's seat ids, row by row (front row first), each row by number.
async fn seat_rows(db: &DatabaseConnection, schedule: i64) -> anyhow::Result<Vec<Vec<i64>>> {
    let seats = db
        .query_all_raw(Statement::from_string(
            DatabaseBackend::Postgres,
            format!(
                "SELECT id, row_label FROM seats WHERE schedule_id = {schedule} \
                 ORDER BY row_label::int, number"
            ),
        ))
        .await?;
    let mut rows: Vec<(String, Vec<i64>)> = Vec::new();
    for seat in seats {
        let (id, row): (i64, String) = (seat.try_get_by_index(0)?, seat.try_get_by_index(1)?);
        match rows.last_mut() {
            Some((label, ids)) if *label == row => ids.push(id),
            _ => rows.push((row, vec![id])),
        }
    }
    Ok(rows.into_iter().map(|(_, ids)| ids).collect())
}

/// What the database says after the run.
struct Checks {
    orders: i64,
    partial_orders: i64,
    /// Reservations of the schedule that belong to no order.
    orderless: i64,
    seats_in_two_live: i64,
    payments: i64,
    /// Payments not confirmed, or whose order has not exactly 4 confirmed
    /// reservations.
    payments_not_whole: i64,
    payments_of_other_amounts: i64,
    payment_amounts: i64,
    sold_seats: i64,
    /// Reservations of the schedule still held (won but not paid).
    held_reservations: i64,
    confirmed_reservations: i64,
    /// Σ of every ledger row (charges − payments + refunds).
    ledger: i64,
    /// Negative: payment rows are stored as negative amounts.
    paid_ledger: i64,
    balances: i64,
    balances_off_ledger: i64,
    sold_wrongly: i64,
    dead_letters: i64,
}

impl Checks {
    async fn read(db: &DatabaseConnection, schedule: i64) -> anyhow::Result<Self> {
        let four = ORDER_SIZE;
        let order_price = SEAT_PRICE * ORDER_SIZE as i64;
        Ok(Self {
            orders: count(
                db,
                &format!("SELECT COUNT(*) FROM orders WHERE schedule_id = {schedule}"),
            )
            .await?,
            partial_orders: count(
                db,
                &format!(
                    "SELECT COUNT(*) FROM orders o WHERE o.schedule_id = {schedule} \
                     AND (SELECT COUNT(*) FROM reservations r WHERE r.order_id = o.id) <> {four}"
                ),
            )
            .await?,
            orderless: count(
                db,
                &format!(
                    "SELECT COUNT(*) FROM reservations WHERE schedule_id = {schedule} AND order_id IS NULL"
                ),
            )
            .await?,
            seats_in_two_live: count(
                db,
                "SELECT COUNT(*) FROM (SELECT seat_id FROM reservations \
                 WHERE status IN ('held', 'confirmed') GROUP BY seat_id HAVING COUNT(*) > 1) twice",
            )
            .await?,
            payments: count(db, "SELECT COUNT(*) FROM payments").await?,
            payments_not_whole: count(
                db,
                &format!(
                    "SELECT COUNT(*) FROM payments p WHERE p.order_id IS NULL OR p.status <> 'confirmed' \
                     OR (SELECT COUNT(*) FROM reservations r WHERE r.order_id = p.order_id \
                         AND r.status = 'confirmed') <> {four}"
                ),
            )
            .await?,
            payments_of_other_amounts: count(
                db,
                &format!("SELECT COUNT(*) FROM payments WHERE amount <> {order_price}"),
            )
            .await?,
            payment_amounts: count(db, "SELECT COALESCE(SUM(amount), 0)::bigint FROM payments")
                .await?,
            sold_seats: count(
                db,
                &format!(
                    "SELECT COUNT(*) FROM seats WHERE schedule_id = {schedule} AND status = 'sold'"
                ),
            )
            .await?,
            held_reservations: count(
                db,
                &format!(
                    "SELECT COUNT(*) FROM reservations WHERE schedule_id = {schedule} AND status = 'held'"
                ),
            )
            .await?,
            confirmed_reservations: count(
                db,
                &format!(
                    "SELECT COUNT(*) FROM reservations WHERE schedule_id = {schedule} AND status = 'confirmed'"
                ),
            )
            .await?,
            ledger: count(
                db,
                "SELECT COALESCE(SUM(amount), 0)::bigint FROM wallet_transactions",
            )
            .await?,
            paid_ledger: count(
                db,
                "SELECT COALESCE(SUM(amount), 0)::bigint FROM wallet_transactions WHERE kind = 'payment'",
            )
            .await?,
            balances: count(db, "SELECT COALESCE(SUM(balance), 0)::bigint FROM wallets").await?,
            balances_off_ledger: count(
                db,
                "SELECT COUNT(*) FROM wallets w WHERE w.balance <> COALESCE((SELECT t.balance_after \
                 FROM wallet_transactions t WHERE t.user_id = w.user_id ORDER BY t.id DESC LIMIT 1), 0)",
            )
            .await?,
            sold_wrongly: count(
                db,
                "SELECT COUNT(*) FROM seats s WHERE s.status = 'sold' AND NOT EXISTS (SELECT 1 \
                 FROM reservations r WHERE r.seat_id = s.id AND r.status = 'confirmed' \
                 AND r.id = s.reservation_id)",
            )
            .await?,
            dead_letters: count(db, "SELECT COUNT(*) FROM dead_letters").await?,
        })
    }
}

/// Which seats were surely free when each order was picked. An order's
/// `created_at` is taken after best-available read the hall, and a seat is
/// only ever taken during the run (no hold expires, nothing is refunded):
/// a seat unsold at the end, or held by an order placed strictly later,
/// was free when the earlier order picked.
struct RoomAtPick {
    /// Each row's seats (by number): when the order holding it was placed
    /// (µs since the epoch), or `None` when no live order holds it.
    rows: Vec<Vec<Option<i64>>>,
    placed: HashMap<i64, i64>,
}

impl RoomAtPick {
    async fn read(db: &DatabaseConnection, schedule: i64) -> anyhow::Result<Self> {
        let micros = "(EXTRACT(EPOCH FROM o.created_at) * 1000000)::bigint";
        let seats = db
            .query_all_raw(Statement::from_string(
                DatabaseBackend::Postgres,
                format!(
                    "SELECT s.row_label, (SELECT {micros} FROM reservations r \
                     JOIN orders o ON o.id = r.order_id \
                     WHERE r.seat_id = s.id AND r.status IN ('held', 'confirmed') LIMIT 1) \
                     FROM seats s WHERE s.schedule_id = {schedule} ORDER BY s.row_label::int, s.number"
                ),
            ))
            .await?;
        let mut rows: Vec<(String, Vec<Option<i64>>)> = Vec::new();
        for seat in seats {
            let row: String = seat.try_get_by_index(0)?;
            let holder: Option<i64> = seat.try_get_by_index(1)?;
            match rows.last_mut() {
                Some((label, seats)) if *label == row => seats.push(holder),
                _ => rows.push((row, vec![holder])),
            }
        }
        let placed = db
            .query_all_raw(Statement::from_string(
                DatabaseBackend::Postgres,
                format!("SELECT o.id, {micros} FROM orders o WHERE o.schedule_id = {schedule}"),
            ))
            .await?
            .iter()
            .map(|o| Ok((o.try_get_by_index(0)?, o.try_get_by_index(1)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            rows: rows.into_iter().map(|(_, seats)| seats).collect(),
            placed,
        })
    }

    /// Whether some row had 4 seats next to each other free when `order`
    /// was picked.
    fn had_room(&self, order: i64) -> bool {
        let Some(&at) = self.placed.get(&order) else {
            return false;
        };
        self.rows.iter().any(|row| {
            row.windows(ORDER_SIZE)
                .any(|seats| seats.iter().all(|holder| holder.is_none_or(|t| t > at)))
        })
    }
}
