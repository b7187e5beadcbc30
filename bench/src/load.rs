//! Bounded load generators. Closed loop ([`run`]): `concurrency` workers
//! send requests back to back until `total` have been sent, so a slow
//! answer delays the requests behind it and hides its own cost (coordinated
//! omission). Open loop ([`open`]): requests go out on a fixed schedule
//! whatever the answers, and each latency is measured from the request's
//! intended send time, as wrk2 does.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;

pub struct LoadResult {
    pub elapsed: Duration,
    pub latencies_us: Histogram<u64>,
    pub errors: u64,
    pub requests: u64,
}

/// Calls `request(i)` for i in 0..total; a request "fails" when it returns false.
pub async fn run<F, Fut>(total: u64, concurrency: u64, bar: ProgressBar, request: F) -> LoadResult
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let request = request.clone();
            let next = next.clone();
            let bar = bar.clone();
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new(3).expect("histogram");
                let mut errors = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let t = Instant::now();
                    if !request(i).await {
                        errors += 1;
                    }
                    let _ = hist.record(t.elapsed().as_micros() as u64);
                    bar.inc(1);
                }
                (hist, errors)
            })
        })
        .collect();
    let mut latencies_us = Histogram::<u64>::new(3).expect("histogram");
    let mut errors = 0;
    for worker in workers {
        if let Ok((hist, e)) = worker.await {
            let _ = latencies_us.add(hist);
            errors += e;
        }
    }
    bar.finish();
    LoadResult {
        elapsed: started.elapsed(),
        latencies_us,
        errors,
        requests: total,
    }
}

/// How an open-loop run paces its requests.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Requests per second, evenly spaced.
    pub rate: f64,
    /// Requests in flight at most (the generator's connections): a request
    /// whose time has come waits for one, and that wait counts in its
    /// latency.
    pub connections: u64,
}

/// Sends `request(i)` for i in 0..total at `schedule.rate`, request i due at
/// `i / rate` seconds after the start; each latency runs from that due time
/// to the answer, so a stall is counted for every request it delays, not
/// once. A request "fails" when it returns false.
pub async fn open<F, Fut>(
    total: u64,
    schedule: Schedule,
    bar: ProgressBar,
    request: F,
) -> LoadResult
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let slots = Arc::new(tokio::sync::Semaphore::new(schedule.connections as usize));
    let interval = Duration::from_secs_f64(1.0 / schedule.rate.max(1.0));
    let started = Instant::now();
    let start = tokio::time::Instant::now();
    let mut sent = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let (request, slots, bar) = (request.clone(), slots.clone(), bar.clone());
        sent.push(tokio::spawn(async move {
            let _slot = slots
                .acquire_owned()
                .await
                .expect("the semaphore stays open");
            let ok = request(i).await;
            bar.inc(1);
            (due.elapsed(), ok)
        }));
    }
    let mut latencies_us = Histogram::<u64>::new(3).expect("histogram");
    let mut errors = 0;
    for answer in sent {
        match answer.await {
            Ok((latency, ok)) => {
                let _ = latencies_us.record(latency.as_micros() as u64);
                errors += u64::from(!ok);
            }
            Err(_) => errors += 1,
        }
    }
    bar.finish();
    LoadResult {
        elapsed: started.elapsed(),
        latencies_us,
        errors,
        requests: total,
    }
}

/// Closed loop at `concurrency`, or open loop on a schedule.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    Closed { concurrency: u64 },
    Open(Schedule),
}

impl Pace {
    pub async fn drive<F, Fut>(self, total: u64, bar: ProgressBar, request: F) -> LoadResult
    where
        F: Fn(u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send,
    {
        match self {
            Pace::Closed { concurrency } => run(total, concurrency, bar, request).await,
            Pace::Open(schedule) => open(total, schedule, bar, request).await,
        }
    }

    /// How the report names this pace.
    pub fn label(self) -> String {
        match self {
            Pace::Closed { concurrency } => format!("closed loop, {concurrency} connections"),
            Pace::Open(Schedule { rate, connections }) => format!(
                "open loop at {rate:.0} req/s (up to {connections} in flight), latency from the intended send time"
            ),
        }
    }
}

pub fn client(concurrency: u64) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency as usize)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// Opens `connections` keep-alive connections to `url` at once, so that a
/// race started next measures its requests, not TCP set-up.
pub async fn warm(client: &reqwest::Client, url: &str, connections: u64) -> anyhow::Result<()> {
    let warm = futures::future::join_all((0..connections).map(|_| client.get(url).send())).await;
    anyhow::ensure!(
        warm.iter().all(|r| r.is_ok()),
        "warming up the connections failed"
    );
    Ok(())
}
