use std::sync::Arc;

use chrono::TimeDelta;
use futures::{FutureExt, future::BoxFuture};
use uuid::Uuid;

use super::{
    domain::{Entry, QueueError, QueuePass, QueueSettings, QueueStats, QueueStatus, TickOutcome},
    ports::{ConcertDirectory, QueueSettingsRepository, QueueStore, QueueTokens},
};
use crate::{
    kernel::{
        Clock, ConcertId, ScheduleId, UserId,
        events::{EventEnvelope, PaymentCompleted, types},
    },
    outbox::ports::EventHandler,
};

/// How long a queue token's signature stays valid. Whether its holder may
/// buy is decided by the store (active, not expired), not by this.
pub const QUEUE_TOKEN_TTL: TimeDelta = TimeDelta::hours(12);

pub struct QueueService<S, R, D, C> {
    store: S,
    settings: R,
    directory: D,
    clock: C,
    tokens: Arc<dyn QueueTokens>,
    defaults: QueueSettings,
}

impl<S: Clone, R: Clone, D: Clone, C: Clone> Clone for QueueService<S, R, D, C> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            settings: self.settings.clone(),
            directory: self.directory.clone(),
            clock: self.clock.clone(),
            tokens: self.tokens.clone(),
            defaults: self.defaults,
        }
    }
}

/// What entering the room answers.
#[derive(Debug, Clone)]
pub struct Admission {
    pub token: String,
    pub token_id: Uuid,
    pub status: QueueStatus,
}

impl<S, R, D, C> QueueService<S, R, D, C>
where
    S: QueueStore,
    R: QueueSettingsRepository,
    D: ConcertDirectory,
    C: Clock,
{
    pub fn new(
        store: S,
        settings: R,
        directory: D,
        clock: C,
        tokens: Arc<dyn QueueTokens>,
        defaults: QueueSettings,
    ) -> Self {
        Self {
            store,
            settings,
            directory,
            clock,
            tokens,
            defaults,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Enters the concert's waiting room (or answers the place the user
    /// already holds) with a signed token for it.
    pub async fn enter(&self, user: UserId, concert: ConcertId) -> Result<Admission, QueueError> {
        if !self.directory.concert_exists(concert).await? {
            return Err(QueueError::ConcertNotFound(concert));
        }
        let now = self.clock.now();
        let Entry { token_id, place } =
            self.store.enter(concert, user, Uuid::new_v4(), now).await?;
        let settings = self.settings_for(concert).await?;
        let token = self.tokens.issue(
            &QueuePass {
                token_id,
                user,
                concert,
            },
            now,
            QUEUE_TOKEN_TTL,
        )?;
        Ok(Admission {
            token,
            token_id,
            status: QueueStatus::new(place, 0, &settings),
        })
    }

    /// The poll and the heartbeat in one.
    pub async fn status(&self, token: &str) -> Result<QueueStatus, QueueError> {
        let now = self.clock.now();
        let pass = self.tokens.verify(token, now)?;
        let (place, admitted_last_minute) = self.store.status(&pass, now).await?;
        let settings = self.settings_for(pass.concert).await?;
        Ok(QueueStatus::new(place, admitted_last_minute, &settings))
    }

    /// Leaves the room; an active slot goes to the next person at the next tick.
    pub async fn leave(&self, token: &str) -> Result<(), QueueError> {
        let now = self.clock.now();
        let pass = self.tokens.verify(token, now)?;
        self.store.leave(&pass, now).await?;
        Ok(())
    }

    /// Ok when `token` is the caller's own, for `concert`, and admitted.
    pub async fn check_admission(
        &self,
        token: &str,
        user: UserId,
        concert: ConcertId,
    ) -> Result<QueuePass, QueueError> {
        let now = self.clock.now();
        let pass = self.tokens.verify(token, now)?;
        if pass.user != user {
            return Err(QueueError::NotYourToken);
        }
        if pass.concert != concert {
            return Err(QueueError::WrongConcert {
                token: pass.concert,
                wanted: concert,
            });
        }
        if !self.store.is_active(&pass, now).await? {
            return Err(QueueError::NotAdmitted(concert));
        }
        Ok(pass)
    }

    pub async fn settings_for(&self, concert: ConcertId) -> Result<QueueSettings, QueueError> {
        Ok(self.settings.get(concert).await?.unwrap_or(self.defaults))
    }

    pub async fn update_settings(
        &self,
        concert: ConcertId,
        settings: QueueSettings,
    ) -> Result<QueueSettings, QueueError> {
        if !self.directory.concert_exists(concert).await? {
            return Err(QueueError::ConcertNotFound(concert));
        }
        self.settings.put(concert, &settings).await?;
        Ok(settings)
    }

    /// Every room that has been entered, with its settings.
    pub async fn stats(&self) -> Result<Vec<(QueueStats, QueueSettings)>, QueueError> {
        let now = self.clock.now();
        let mut concerts = self.store.concerts().await?;
        concerts.sort();
        let mut out = Vec::with_capacity(concerts.len());
        for concert in concerts {
            out.push((
                self.store.stats(concert, now).await?,
                self.settings_for(concert).await?,
            ));
        }
        Ok(out)
    }

    /// One scheduler step for every room.
    pub async fn tick_all(&self) -> Result<Vec<(ConcertId, TickOutcome)>, QueueError> {
        let now = self.clock.now();
        let mut outcomes = Vec::new();
        for concert in self.store.concerts().await? {
            let settings = self.settings_for(concert).await?;
            outcomes.push((concert, self.store.tick(concert, &settings, now).await?));
        }
        Ok(outcomes)
    }
}

/// The seat map, reservations and payments ask this before serving a
/// buyer. Object-safe so other modules' controllers can hold it as
/// `Arc<dyn AdmissionCheck>`.
pub trait AdmissionCheck: Send + Sync + 'static {
    /// Ok when the queue token admits `user` to the concert `schedule`
    /// belongs to. An unknown schedule passes: the caller answers 404.
    fn check_schedule(
        &self,
        token: &str,
        user: UserId,
        schedule: ScheduleId,
    ) -> BoxFuture<'_, Result<(), QueueError>>;
}

impl<S, R, D, C> AdmissionCheck for QueueService<S, R, D, C>
where
    S: QueueStore,
    R: QueueSettingsRepository,
    D: ConcertDirectory,
    C: Clock,
{
    fn check_schedule(
        &self,
        token: &str,
        user: UserId,
        schedule: ScheduleId,
    ) -> BoxFuture<'_, Result<(), QueueError>> {
        let token = token.to_owned();
        async move {
            // Verify the token before touching the catalog.
            self.tokens.verify(&token, self.clock.now())?;
            match self.directory.concert_of_schedule(schedule).await? {
                Some(concert) => self
                    .check_admission(&token, user, concert)
                    .await
                    .map(|_| ()),
                None => Ok(()),
            }
        }
        .boxed()
    }
}

/// The waiting room's listener on `PaymentCompleted`: a buyer who paid
/// leaves the room, so their slot goes to the next in line at once.
pub struct FinishOnPayment<S, C> {
    store: S,
    clock: C,
}

impl<S, C> FinishOnPayment<S, C> {
    pub fn new(store: S, clock: C) -> Self {
        Self { store, clock }
    }
}

impl<T: Send + 'static, S: QueueStore, C: Clock> EventHandler<T> for FinishOnPayment<S, C> {
    fn name(&self) -> &'static str {
        "queue"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == types::PAYMENT_COMPLETED
    }

    fn handle<'a>(
        &'a self,
        _tx: &'a mut T,
        event: &'a EventEnvelope,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let payment: PaymentCompleted = serde_json::from_value(event.payload.clone())?;
            self.store
                .finish(
                    ConcertId(payment.concert_id),
                    UserId(payment.user_id),
                    self.clock.now(),
                )
                .await?;
            Ok(())
        }
        .boxed()
    }
}
