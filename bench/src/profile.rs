//! `perf` profiles of the server during one phase of a scenario
//! (`--perf-dir DIR`): `perf record` with DWARF call graphs on the server's
//! process while the phase runs, then a text summary next to the data —
//! where the server's own CPU went, by function (self) and by caller
//! (inclusive). Needs `perf` and permission to attach to the server.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::Context;

pub struct Profile {
    perf: Child,
    data: PathBuf,
    summary: PathBuf,
    phase: String,
}

impl Profile {
    /// Starts recording `pid` for `phase` when `dir` is set.
    pub fn start(
        dir: Option<&Path>,
        pid: u32,
        name: &str,
        phase: &str,
    ) -> anyhow::Result<Option<Self>> {
        let Some(dir) = dir else {
            return Ok(None);
        };
        std::fs::create_dir_all(dir)?;
        let data = std::env::temp_dir().join(format!("bo-perf-{name}-{}.data", std::process::id()));
        let perf = Command::new("perf")
            .args([
                "record",
                "-q",
                "-F",
                "499",
                "--call-graph",
                "dwarf,16384",
                "-p",
            ])
            .arg(pid.to_string())
            .arg("-o")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf record (is perf installed?)")?;
        // perf needs a moment to attach before the phase starts.
        std::thread::sleep(std::time::Duration::from_millis(500));
        Ok(Some(Self {
            perf,
            data,
            summary: dir.join(format!("{name}.txt")),
            phase: phase.to_owned(),
        }))
    }

    /// Stops recording and writes the summary.
    pub fn finish(mut self) -> anyhow::Result<PathBuf> {
        let stopped = Command::new("kill")
            .arg("-INT")
            .arg(self.perf.id().to_string())
            .status()?;
        anyhow::ensure!(stopped.success(), "stopping perf record");
        self.perf.wait()?;
        let report = |args: &[&str]| -> anyhow::Result<String> {
            let out = Command::new("perf")
                .args(["report", "--stdio", "--percentage", "relative", "-i"])
                .arg(&self.data)
                .args(args)
                .stderr(Stdio::null())
                .output()
                .context("perf report")?;
            let text = String::from_utf8_lossy(&out.stdout);
            Ok(text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .map(|l| l.chars().take(160).collect::<String>())
                .take(45)
                .collect::<Vec<_>>()
                .join("\n"))
        };
        let by_dso = report(&["--no-children", "--sort", "dso", "-g", "none"])?;
        let by_self = report(&["--no-children", "--sort", "sym", "-g", "none"])?;
        let by_caller = report(&["--children", "--sort", "sym", "-g", "none"])?;
        let text = format!(
            "# perf profile of the server: {}\n\n\
             Recorded with `perf record -F 499 --call-graph dwarf -p <server>` while the phase ran\n\
             (the load generator, PostgreSQL and Redis share the machine and are not in it).\n\
             Percentages are of the server's own samples.\n\n\
             ## By object\n\n{by_dso}\n\n\
             ## By function, self time\n\n{by_self}\n\n\
             ## By function, including callees\n\n{by_caller}\n",
            self.phase
        );
        std::fs::write(&self.summary, text)?;
        let _ = std::fs::remove_file(&self.data);
        Ok(self.summary.clone())
    }
}
