//! The waiting rooms of the embedded shape, in process memory. Same rules
//! as the Redis store (one lock makes each step atomic); lost on restart,
//! like a Redis without persistence.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use uuid::Uuid;

use crate::{
    kernel::{ConcertId, UserId},
    queue::{
        domain::{
            AdmissionCredit, DEFAULT_ROOM_IDLE, Entry, Lineup, Place, QueueError, QueueEvent,
            QueueEventKind, QueuePass, QueueSettings, QueueStats, RoomActivity, TickOutcome,
        },
        ports::QueueStore,
    },
};

const MINUTE_MS: i64 = 60_000;

#[derive(Clone)]
pub struct MemoryQueueStore {
    rooms: Arc<Mutex<HashMap<ConcertId, Room>>>,
    /// An empty room left alone this long is retired.
    idle_after: TimeDelta,
}

impl Default for MemoryQueueStore {
    fn default() -> Self {
        Self {
            rooms: Arc::default(),
            idle_after: DEFAULT_ROOM_IDLE,
        }
    }
}

impl MemoryQueueStore {
    /// Retires rooms left empty for `idle` instead of the default.
    pub fn retiring_after(mut self, idle: TimeDelta) -> Self {
        self.idle_after = idle;
        self
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ConcertId, Room>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts present sequence numbers up to a given one (a Fenwick tree), so a
/// position is O(log n) however long the queue.
#[derive(Default)]
struct Ranks {
    tree: Vec<i64>,
}

impl Ranks {
    fn add(&mut self, seq: u64, delta: i64) {
        let needed = seq as usize + 1;
        if needed > self.tree.len() {
            self.grow(needed.next_power_of_two().max(1024));
        }
        let mut i = seq as usize;
        while i < self.tree.len() {
            self.tree[i] += delta;
            i += i & i.wrapping_neg();
        }
    }

    fn prefix(&self, seq: u64) -> u64 {
        let last = self.tree.len().saturating_sub(1) as u64;
        self.prefix_signed(seq.min(last)).max(0) as u64
    }

    fn grow(&mut self, len: usize) {
        let points: Vec<i64> = (1..self.tree.len() as u64)
            .map(|i| self.prefix_signed(i) - self.prefix_signed(i - 1))
            .collect();
        self.tree = vec![0; len];
        for (i, v) in points.into_iter().enumerate() {
            if v != 0 {
                self.add(i as u64 + 1, v);
            }
        }
    }

    fn prefix_signed(&self, seq: u64) -> i64 {
        let mut i = seq as usize;
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }
}

#[derive(Default)]
struct Room {
    next_seq: u64,
    /// The line: places in arrival order (by sequence number).
    waiting: BTreeMap<u64, Uuid>,
    ranks: Ranks,
    /// The draw (the pre-queue, or a `random` room's lottery), behind the
    /// line, ordered by the number each drew. A FIFO arrival first moves
    /// the whole draw, in that order, to the line: it never overtakes it.
    /// (The Redis store keeps one sorted set and gets the same order from
    /// its band scores.)
    pool: BTreeSet<(u64, Uuid)>,
    /// (last heartbeat ms, token) of waiting tokens, oldest first.
    heartbeats: BTreeSet<(i64, Uuid)>,
    /// (active until ms, token), soonest first.
    active: BTreeSet<(i64, Uuid)>,
    tokens: HashMap<Uuid, Token>,
    users: HashMap<UserId, Uuid>,
    last_tick: Option<i64>,
    credit: f64,
    admits: VecDeque<i64>,
    admitted_total: u64,
    next_event: u64,
    events: VecDeque<QueueEvent>,
    /// The last change (ms): an entry, a leave, an admission, an expiry.
    touched_ms: i64,
}

struct Token {
    user: UserId,
    entered_ms: i64,
    seq: Option<u64>,
    /// The number drawn, while in the draw.
    draw: Option<u64>,
    heartbeat_ms: i64,
    active_until: Option<i64>,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl Room {
    fn record(
        &mut self,
        concert: ConcertId,
        kind: QueueEventKind,
        token_id: Uuid,
        user: UserId,
        now: i64,
    ) {
        self.next_event += 1;
        self.touched_ms = now;
        self.events.push_back(QueueEvent {
            // Unique across the room's lifetimes too: a room reopened after
            // it retired counts its events afresh, but later.
            id: format!("{now}-{}", self.next_event),
            kind,
            concert,
            token_id,
            user,
            at: at(now),
        });
    }

    fn position(&self, seq: u64) -> u64 {
        self.ranks.prefix(seq)
    }

    fn forget(&mut self, token_id: Uuid) -> Option<Token> {
        let token = self.tokens.remove(&token_id)?;
        if let Some(seq) = token.seq {
            self.waiting.remove(&seq);
            self.ranks.add(seq, -1);
        }
        if let Some(draw) = token.draw {
            self.pool.remove(&(draw, token_id));
        }
        if token.seq.is_some() || token.draw.is_some() {
            self.heartbeats.remove(&(token.heartbeat_ms, token_id));
        }
        if let Some(until) = token.active_until {
            self.active.remove(&(until, token_id));
        }
        if self.users.get(&token.user) == Some(&token_id) {
            self.users.remove(&token.user);
        }
        Some(token)
    }

    fn place(&self, token_id: Uuid, now: i64) -> Place {
        match self.tokens.get(&token_id) {
            Some(Token {
                active_until: Some(until),
                ..
            }) if *until > now => Place::Active { until: at(*until) },
            Some(Token { seq: Some(seq), .. }) => Place::Waiting {
                position: self.position(*seq),
            },
            // Counting the draw ahead is linear: fine for the embedded shape.
            Some(Token {
                draw: Some(draw), ..
            }) => Place::Waiting {
                position: self.waiting.len() as u64
                    + self.pool.range(..(*draw, token_id)).count() as u64
                    + 1,
            },
            _ => Place::Gone,
        }
    }

    fn waiting_count(&self) -> u64 {
        (self.waiting.len() + self.pool.len()) as u64
    }

    /// Appends somebody to the line.
    fn queue(&mut self, token_id: Uuid) -> u64 {
        self.next_seq += 1;
        let seq = self.next_seq;
        self.waiting.insert(seq, token_id);
        self.ranks.add(seq, 1);
        seq
    }

    /// Moves the whole draw, in drawn order, to the tail of the line.
    fn release_draw(&mut self) {
        while let Some((_, token_id)) = self.pool.pop_first() {
            let seq = self.queue(token_id);
            let token = self.tokens.get_mut(&token_id).expect("drawn token exists");
            token.draw = None;
            token.seq = Some(seq);
        }
    }

    /// The head: the line's first, else the draw's lowest.
    fn pop_head(&mut self) -> Option<Uuid> {
        if let Some((seq, token_id)) = self.waiting.pop_first() {
            self.ranks.add(seq, -1);
            self.tokens.get_mut(&token_id)?.seq = None;
            return Some(token_id);
        }
        let (_, token_id) = self.pool.pop_first()?;
        self.tokens.get_mut(&token_id)?.draw = None;
        Some(token_id)
    }

    fn active_until_at_most(&self, now: i64) -> Vec<Uuid> {
        let due = self.active.iter().take_while(|(until, _)| *until <= now);
        due.map(|(_, token_id)| *token_id).collect()
    }

    fn waiting_without_heartbeat_since(&self, cutoff: i64) -> Vec<Uuid> {
        let stale = self
            .heartbeats
            .iter()
            .take_while(|(beat, _)| *beat < cutoff);
        stale.map(|(_, token_id)| *token_id).collect()
    }

    /// Forgets the tokens, recording each one's expiry; answers how many
    /// there were.
    fn expire(&mut self, concert: ConcertId, token_ids: Vec<Uuid>, now: i64) -> u64 {
        let mut expired = 0;
        for token_id in token_ids {
            if let Some(token) = self.forget(token_id) {
                self.record(concert, QueueEventKind::Expired, token_id, token.user, now);
                expired += 1;
            }
        }
        expired
    }

    fn admitted_since(&self, since: i64) -> u64 {
        (self.admits.len() - self.admits.partition_point(|t| *t < since)) as u64
    }
}

impl QueueStore for MemoryQueueStore {
    async fn enter(
        &self,
        newcomer: &QueuePass,
        lineup: Lineup,
        now: DateTime<Utc>,
    ) -> Result<Entry, QueueError> {
        let (concert, user, new_token) = (newcomer.concert, newcomer.user, newcomer.token_id);
        let now = ms(now);
        let mut rooms = self.lock();
        if lineup == Lineup::Refuse && !rooms.contains_key(&concert) {
            return Ok(Entry {
                token_id: new_token,
                place: Place::Gone,
            });
        }
        let room = rooms.entry(concert).or_default();
        if let Some(&existing) = room.users.get(&user) {
            match room.place(existing, now) {
                Place::Waiting { position } => {
                    let token = room
                        .tokens
                        .get_mut(&existing)
                        .expect("indexed token exists");
                    room.heartbeats.remove(&(token.heartbeat_ms, existing));
                    token.heartbeat_ms = now;
                    room.heartbeats.insert((now, existing));
                    return Ok(Entry {
                        token_id: existing,
                        place: Place::Waiting { position },
                    });
                }
                place @ Place::Active { .. } => {
                    return Ok(Entry {
                        token_id: existing,
                        place,
                    });
                }
                Place::Gone => {
                    // Active time ran out before the scheduler noticed.
                    room.forget(existing);
                    room.record(concert, QueueEventKind::Expired, existing, user, now);
                }
            }
        }
        let (seq, draw) = match lineup {
            Lineup::Refuse => {
                return Ok(Entry {
                    token_id: new_token,
                    place: Place::Gone,
                });
            }
            Lineup::Fifo => {
                room.release_draw();
                (Some(room.queue(new_token)), None)
            }
            Lineup::Draw(draw) => {
                room.pool.insert((draw, new_token));
                (None, Some(draw))
            }
        };
        room.heartbeats.insert((now, new_token));
        room.tokens.insert(
            new_token,
            Token {
                user,
                entered_ms: now,
                seq,
                draw,
                heartbeat_ms: now,
                active_until: None,
            },
        );
        room.users.insert(user, new_token);
        room.record(concert, QueueEventKind::Entered, new_token, user, now);
        Ok(Entry {
            token_id: new_token,
            place: room.place(new_token, now),
        })
    }

    async fn status(
        &self,
        pass: &QueuePass,
        now: DateTime<Utc>,
    ) -> Result<(Place, u64), QueueError> {
        let now = ms(now);
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(&pass.concert) else {
            return Ok((Place::Gone, 0));
        };
        let place = room.place(pass.token_id, now);
        if matches!(place, Place::Waiting { .. })
            && let Some(token) = room.tokens.get_mut(&pass.token_id)
        {
            room.heartbeats.remove(&(token.heartbeat_ms, pass.token_id));
            token.heartbeat_ms = now;
            room.heartbeats.insert((now, pass.token_id));
        }
        Ok((place, room.admitted_since(now - MINUTE_MS)))
    }

    async fn is_active(&self, pass: &QueuePass, now: DateTime<Utc>) -> Result<bool, QueueError> {
        let rooms = self.lock();
        Ok(rooms
            .get(&pass.concert)
            .is_some_and(|room| matches!(room.place(pass.token_id, ms(now)), Place::Active { .. })))
    }

    async fn leave(&self, pass: &QueuePass, now: DateTime<Utc>) -> Result<bool, QueueError> {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(&pass.concert) else {
            return Ok(false);
        };
        match room.forget(pass.token_id) {
            Some(token) => {
                room.record(
                    pass.concert,
                    QueueEventKind::Left,
                    pass.token_id,
                    token.user,
                    ms(now),
                );
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn finish(
        &self,
        concert: ConcertId,
        user: UserId,
        paid_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, QueueError> {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(&concert) else {
            return Ok(false);
        };
        let Some(token_id) = room.users.get(&user).copied() else {
            return Ok(false);
        };
        if room
            .tokens
            .get(&token_id)
            .is_some_and(|t| t.entered_ms > ms(paid_at))
        {
            return Ok(false);
        }
        room.forget(token_id);
        room.record(concert, QueueEventKind::Expired, token_id, user, ms(now));
        Ok(true)
    }

    async fn tick(
        &self,
        concert: ConcertId,
        settings: &QueueSettings,
        now: DateTime<Utc>,
    ) -> Result<TickOutcome, QueueError> {
        let now = ms(now);
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(&concert) else {
            return Ok(TickOutcome::default());
        };
        let mut outcome = TickOutcome::default();

        let expired = room.active_until_at_most(now);
        outcome.expired_active = room.expire(concert, expired, now);
        let cutoff = settings.heartbeat_cutoff_ms(now);
        let stale = room.waiting_without_heartbeat_since(cutoff);
        outcome.dropped_waiting = room.expire(concert, stale, now);

        let plan = settings.admission(
            AdmissionCredit {
                credit: room.credit,
                last_tick_ms: room.last_tick,
            },
            now,
            room.active.len() as u64,
            if settings.admits(at(now)) {
                room.waiting_count()
            } else {
                0
            },
        );
        room.credit = plan.next.credit;
        room.last_tick = plan.next.last_tick_ms;
        let admit = plan.admit;
        let ttl = settings.active_until_ms(now) - now;
        for _ in 0..admit {
            let Some(token_id) = room.pop_head() else {
                break;
            };
            let token = room
                .tokens
                .get_mut(&token_id)
                .expect("waiting token exists");
            room.heartbeats.remove(&(token.heartbeat_ms, token_id));
            token.active_until = Some(now + ttl);
            let user = token.user;
            room.active.insert((now + ttl, token_id));
            room.admits.push_back(now);
            room.record(concert, QueueEventKind::Admitted, token_id, user, now);
        }
        outcome.admitted = admit;
        room.admitted_total += admit;
        while room.admits.front().is_some_and(|t| *t < now - MINUTE_MS) {
            room.admits.pop_front();
        }
        let activity = RoomActivity {
            waiting: room.waiting_count(),
            active: room.active.len() as u64,
            unforwarded: room.events.len() as u64,
            touched_ms: room.touched_ms,
        };
        if activity.retires(now, self.idle_after) {
            rooms.remove(&concert);
            outcome.retired = true;
        }
        Ok(outcome)
    }

    async fn concerts(&self) -> Result<Vec<ConcertId>, QueueError> {
        Ok(self.lock().keys().copied().collect())
    }

    async fn stats(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> Result<QueueStats, QueueError> {
        let now = ms(now);
        let rooms = self.lock();
        let Some(room) = rooms.get(&concert) else {
            return Ok(QueueStats {
                concert,
                waiting: 0,
                active: 0,
                admitted_last_minute: 0,
                admitted_total: 0,
                oldest_wait_seconds: 0,
            });
        };
        let head = room
            .waiting
            .first_key_value()
            .map(|(_, token_id)| token_id)
            .or_else(|| room.pool.first().map(|(_, token_id)| token_id));
        let oldest = head
            .and_then(|token_id| room.tokens.get(token_id))
            .map_or(0, |t| ((now - t.entered_ms).max(0) / 1000) as u64);
        Ok(QueueStats {
            concert,
            waiting: room.waiting_count(),
            active: room.active.iter().filter(|(until, _)| *until > now).count() as u64,
            admitted_last_minute: room.admitted_since(now - MINUTE_MS),
            admitted_total: room.admitted_total,
            oldest_wait_seconds: oldest,
        })
    }

    async fn pending_events(
        &self,
        concert: ConcertId,
        max: usize,
    ) -> Result<Vec<QueueEvent>, QueueError> {
        Ok(self
            .lock()
            .get(&concert)
            .map(|room| room.events.iter().take(max).cloned().collect())
            .unwrap_or_default())
    }

    async fn forwarded(&self, concert: ConcertId, ids: &[String]) -> Result<(), QueueError> {
        if let Some(room) = self.lock().get_mut(&concert) {
            let ids: std::collections::HashSet<&String> = ids.iter().collect();
            room.events.retain(|e| !ids.contains(&e.id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tick_counts_lapsed_turns_and_silent_waiters_apart() {
        let store = MemoryQueueStore::default();
        let hall = ConcertId(1);
        // One admitted a second, one at a time, 60 s turns, 30 s of silence allowed.
        let settings = QueueSettings::parse(1, 1, 60, 30).unwrap();
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        for user in [UserId(1), UserId(2)] {
            let newcomer = QueuePass {
                token_id: Uuid::new_v4(),
                user,
                concert: hall,
            };
            store.enter(&newcomer, Lineup::Fifo, t0).await.unwrap();
        }
        store.tick(hall, &settings, t0).await.unwrap();
        let second = t0 + TimeDelta::seconds(1);
        assert_eq!(
            store.tick(hall, &settings, second).await.unwrap().admitted,
            1
        );

        let outcome = store
            .tick(hall, &settings, t0 + TimeDelta::seconds(61))
            .await
            .unwrap();
        assert_eq!((outcome.expired_active, outcome.dropped_waiting), (1, 1));
        assert_eq!(store.stats(hall, t0).await.unwrap().waiting, 0);
    }

    #[test]
    fn ranks_count_present_sequence_numbers_across_growth() {
        let mut ranks = Ranks::default();
        for seq in 1..=3000u64 {
            ranks.add(seq, 1);
        }
        ranks.add(10, -1);
        ranks.add(2000, -1);
        assert_eq!(ranks.prefix(9), 9);
        assert_eq!(ranks.prefix(11), 10);
        assert_eq!(ranks.prefix(3000), 2998);
        ranks.add(5000, 1);
        assert_eq!(ranks.prefix(5000), 2999);
        assert_eq!(ranks.prefix(11), 10, "growth keeps earlier counts");
    }
}
