//! Plumbing the background workers share (relay, consumers, sweepers,
//! schedulers, reconcilers): sleeping in a way a shutdown interrupts, and
//! the one loop every periodic worker runs.

use std::{fmt::Display, time::Duration};

use tokio_util::sync::CancellationToken;

/// Sleeps for `duration`; true when cancelled meanwhile (the worker stops).
pub async fn sleep_or_cancel(cancel: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        () = cancel.cancelled() => true,
        () = tokio::time::sleep(duration) => false,
    }
}

/// What one pass of a periodic worker found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Nothing more for now: wait for the next period.
    Idle,
    /// A full batch: there may be more, so run again at once (a backlog is
    /// worked off without waiting a period per batch).
    More,
}

impl Pass {
    /// `More` when a pass handled as many as it may (`done >= batch`).
    pub fn full(done: u64, batch: u64) -> Self {
        if done >= batch {
            Self::More
        } else {
            Self::Idle
        }
    }
}

/// Runs `pass` every `every` until `cancel`, at once again while a pass
/// answers [`Pass::More`]. A failed pass is logged under `name` and tried
/// again a period later: a periodic worker never stops on an error.
pub async fn periodically<F, Fut, E>(
    name: &'static str,
    every: Duration,
    cancel: CancellationToken,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Pass, E>>,
    E: Display,
{
    loop {
        match pass().await {
            Ok(Pass::More) if !cancel.is_cancelled() => continue,
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(
                    worker = name,
                    error = format!("{err:#}"),
                    "pass failed; retrying"
                );
            }
        }
        if sleep_or_cancel(&cancel, every).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_pass_runs_again_at_once_and_an_error_waits_a_period() {
        let passes = Arc::new(AtomicU32::new(0));
        let cancel = CancellationToken::new();
        let worker = tokio::spawn(periodically(
            "test",
            Duration::from_secs(10),
            cancel.clone(),
            {
                let passes = passes.clone();
                move || {
                    let n = passes.fetch_add(1, Ordering::SeqCst);
                    async move {
                        match n {
                            0 | 1 => Ok(Pass::More),
                            2 => Err("store down"),
                            _ => Ok(Pass::Idle),
                        }
                    }
                }
            },
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            passes.load(Ordering::SeqCst),
            3,
            "two full passes, then the failure"
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 4, "retried a period later");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 5);
        cancel.cancel();
        worker.await.unwrap();
    }

    #[test]
    fn a_pass_is_full_when_it_handled_a_whole_batch() {
        assert_eq!(Pass::full(500, 500), Pass::More);
        assert_eq!(Pass::full(499, 500), Pass::Idle);
    }
}
