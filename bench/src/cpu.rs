//! CPU time spent by each process of the sale during a phase, read from
//! `/proc`: the server, PostgreSQL (every `postgres` process, with the
//! backends it has reaped), Redis (`redis-server`) and the load generator
//! itself. Divided by what the phase did (seats sold, refunds made), it is
//! the capacity model's unit: CPU milliseconds per seat on each tier, so
//! seats per second per core.

use std::{fs, path::Path};

use crate::stores::Stores;

/// CPU seconds used so far, per process group.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    pub server: f64,
    pub postgres: f64,
    pub redis: f64,
    pub generator: f64,
}

impl CpuUse {
    /// Now, for the server process `server` and the Redis the stores
    /// name (its standalone one by port; every `redis-server` when the
    /// server uses a cluster).
    pub fn now(server: u32, stores: &Stores) -> Self {
        let ticks = clock_ticks();
        let redis_port = match &stores.redis_cluster_nodes {
            Some(_) => None,
            None => stores
                .redis_url
                .trim_end_matches('/')
                .rsplit(':')
                .next()
                .map(|port| port.split('/').next().unwrap_or(port).to_owned()),
        };
        Self {
            server: own(&format!("/proc/{server}/stat"), ticks),
            postgres: by_name("postgres", None, ticks),
            redis: by_name("redis-server", redis_port.as_deref(), ticks),
            generator: own("/proc/self/stat", ticks),
        }
    }

    /// What was used between `self` and `later`.
    pub fn until(&self, later: &Self) -> Self {
        Self {
            server: later.server - self.server,
            postgres: later.postgres - self.postgres,
            redis: later.redis - self.redis,
            generator: later.generator - self.generator,
        }
    }

    /// Milliseconds of CPU per unit of work on each tier, as a sentence.
    pub fn per(&self, units: f64, unit: &str, wall: f64) -> String {
        let ms = |s: f64| s * 1_000.0 / units.max(1.0);
        format!(
            "CPU per {unit} (from /proc, over {wall:.1} s): server {:.2} ms, PostgreSQL {:.2} ms, Redis {:.2} ms, load generator {:.2} ms; the machine's 2 cores gave {:.1} of {:.1} core-seconds to them",
            ms(self.server),
            ms(self.postgres),
            ms(self.redis),
            ms(self.generator),
            self.server + self.postgres + self.redis + self.generator,
            2.0 * wall,
        )
    }
}

/// `utime + stime` (and, with `children`, the reaped children's) of one
/// `/proc/<pid>/stat`, in seconds.
fn stat_seconds(path: &Path, ticks: f64, children: bool) -> Option<f64> {
    let stat = fs::read_to_string(path).ok()?;
    // The command name may hold spaces; the fields follow its ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // After the name: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    let mut total = field(14)? + field(15)?;
    if children {
        total += field(16)? + field(17)?;
    }
    Some(total / ticks)
}

fn own(path: &str, ticks: f64) -> f64 {
    stat_seconds(Path::new(path), ticks, false).unwrap_or(0.0)
}

/// Every process named `name` (and, with `port`, listening on it: its
/// command line names `:port`), with its reaped children (PostgreSQL's
/// backends that ended are counted in the postmaster's).
fn by_name(name: &str, port: Option<&str>, ticks: f64) -> f64 {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| fs::read_to_string(e.path().join("comm")).is_ok_and(|comm| comm.trim() == name))
        .filter(|e| {
            port.is_none_or(|port| {
                fs::read(e.path().join("cmdline")).is_ok_and(|cmdline| {
                    String::from_utf8_lossy(&cmdline).contains(&format!(":{port}"))
                })
            })
        })
        .filter_map(|e| stat_seconds(&e.path().join("stat"), ticks, true))
        .sum()
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
