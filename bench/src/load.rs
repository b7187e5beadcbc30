//! A bounded closed-loop load generator: `concurrency` workers send
//! requests back to back until `total` have been sent.

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
