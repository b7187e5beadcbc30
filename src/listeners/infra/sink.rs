//! Data-platform sinks: NDJSON files in a directory (one per UTC day), or
//! an HTTP collector.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use tokio::{fs::OpenOptions, io::AsyncWriteExt, sync::Mutex};

use crate::{
    kernel::events::EventEnvelope,
    listeners::{domain::data_platform_line, ports::DataPlatformSink},
};

#[derive(Clone)]
pub enum Sink {
    File(FileSink),
    Http(HttpSink),
}

impl Sink {
    /// `file:DIR` or `http(s)://URL`.
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        if let Some(dir) = spec.strip_prefix("file:") {
            if dir.is_empty() {
                bail!("the data-platform sink `file:` needs a directory");
            }
            Ok(Sink::File(FileSink::new(dir)))
        } else if spec.starts_with("http://") || spec.starts_with("https://") {
            Ok(Sink::Http(HttpSink::new(spec)?))
        } else {
            bail!("the data-platform sink must be file:DIR or an http(s) URL, not {spec:?}")
        }
    }
}

impl DataPlatformSink for Sink {
    async fn write(&self, event: &EventEnvelope) -> anyhow::Result<()> {
        match self {
            Sink::File(sink) => sink.write(event).await,
            Sink::Http(sink) => sink.write(event).await,
        }
    }
}

#[derive(Clone)]
pub struct FileSink {
    dir: PathBuf,
    /// One line is one `write` on an append-only file; the lock keeps lines
    /// of concurrent writers in this process whole.
    lock: Arc<Mutex<()>>,
}

impl FileSink {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            lock: Arc::default(),
        }
    }

    pub fn file_for(&self, day: chrono::NaiveDate) -> PathBuf {
        self.dir.join(format!("events-{day}.ndjson"))
    }
}

impl DataPlatformSink for FileSink {
    async fn write(&self, event: &EventEnvelope) -> anyhow::Result<()> {
        let line = data_platform_line(event);
        let path = self.file_for(chrono::Utc::now().date_naive());
        let _guard = self.lock.lock().await;
        tokio::fs::create_dir_all(&self.dir)
            .await
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        file.write_all(line.as_bytes()).await?;
        file.flush().await?;
        Ok(())
    }
}

#[derive(Clone)]
pub struct HttpSink {
    client: reqwest::Client,
    url: String,
}

impl HttpSink {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .context("building the data-platform HTTP client")?,
            url: url.to_owned(),
        })
    }
}

impl DataPlatformSink for HttpSink {
    async fn write(&self, event: &EventEnvelope) -> anyhow::Result<()> {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/x-ndjson")
            .header("idempotency-key", event.event_id.to_string());
        // The handler's span continues the event's trace; the data
        // platform's side of the post joins it.
        if let Some(traceparent) =
            crate::kernel::trace::current_traceparent().or_else(|| event.traceparent.clone())
        {
            request = request.header("traceparent", traceparent);
        }
        request
            .body(data_platform_line(event))
            .send()
            .await
            .context("sending the event to the data platform")?
            .error_for_status()
            .context("the data platform refused the event")?;
        Ok(())
    }
}
