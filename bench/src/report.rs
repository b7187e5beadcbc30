//! The benchmark report: one JSON document and the same as a markdown table.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioResult {
    pub name: String,
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub checks: BTreeMap<String, bool>,
    pub notes: Vec<String>,
}

impl ScenarioResult {
    /// Fills the latency fields from a histogram of microseconds.
    pub fn new(
        name: &str,
        requests: u64,
        elapsed: Duration,
        latencies_us: &Histogram<u64>,
    ) -> Self {
        let ms = |q: f64| latencies_us.value_at_quantile(q) as f64 / 1000.0;
        Self {
            name: name.to_owned(),
            requests,
            rps: requests as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            max_ms: latencies_us.max() as f64 / 1000.0,
            errors: 0,
            checks: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    /// A scenario measured by the load generator, with its error count.
    pub fn from_load(name: &str, load: &crate::load::LoadResult) -> Self {
        Self {
            errors: load.errors,
            ..Self::new(name, load.requests, load.elapsed, &load.latencies_us)
        }
    }

    pub fn check(&mut self, name: &str, ok: bool) -> &mut Self {
        self.checks.insert(name.to_owned(), ok);
        self
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub os: String,
}

impl Machine {
    fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|v| v.split(':').nth(1))
            })
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            os: std::env::consts::OS.to_owned(),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub generated_at: String,
    pub smoke: bool,
    pub machine: Machine,
    /// Which Redis the servers ran on.
    pub redis: String,
    /// The PostgreSQL server and whether its commits were durable.
    pub postgres: String,
    pub scenarios: Vec<ScenarioResult>,
    pub ratios: BTreeMap<String, f64>,
}

impl Report {
    pub fn new(smoke: bool) -> Self {
        Self {
            generated_at: chrono::Utc::now().to_rfc3339(),
            smoke,
            machine: Machine::read(),
            redis: String::new(),
            postgres: String::new(),
            scenarios: Vec::new(),
            ratios: BTreeMap::new(),
        }
    }

    pub fn all_checks_pass(&self) -> bool {
        self.scenarios
            .iter()
            .all(|s| s.checks.values().all(|ok| *ok))
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "# boxoffice benchmark report\n");
        let _ = writeln!(
            md,
            "Generated {} on {} ({} cores, {} GiB, {}); {}; {}{}.\n",
            self.generated_at,
            m.cpu,
            m.cores,
            m.memory_gib,
            m.os,
            self.redis,
            self.postgres,
            if self.smoke {
                " — SMOKE RUN, numbers are meaningless"
            } else {
                ""
            }
        );
        let _ = writeln!(
            md,
            "| scenario | count | per second | p50 ms | p90 ms | p99 ms | max ms | errors | checks |"
        );
        let _ = writeln!(
            md,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
        );
        for s in &self.scenarios {
            let checks: Vec<String> = s
                .checks
                .iter()
                .map(|(name, ok)| format!("{} {name}", if *ok { "✔" } else { "✘" }))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
                s.name,
                s.requests,
                s.rps,
                s.p50_ms,
                s.p90_ms,
                s.p99_ms,
                s.max_ms,
                s.errors,
                checks.join("<br>")
            );
        }
        if !self.ratios.is_empty() {
            let _ = writeln!(md, "\n| ratio | value |\n| --- | ---: |");
            for (name, value) in &self.ratios {
                let _ = writeln!(md, "| {name} | {value:.2} |");
            }
        }
        for s in self.scenarios.iter().filter(|s| !s.notes.is_empty()) {
            let _ = writeln!(md, "\n**{}**\n", s.name);
            for note in &s.notes {
                let _ = writeln!(md, "- {note}");
            }
        }
        md
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let md = dir.join("latest.md");
        let json = dir.join("latest.json");
        std::fs::write(&md, self.markdown())?;
        std::fs::write(&json, serde_json::to_string_pretty(self)? + "\n")?;
        Ok((md, json))
    }
}
