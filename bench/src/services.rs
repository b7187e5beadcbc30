//! Throwaway PostgreSQL and Redis for a benchmark run when no URLs are
//! given: each on a free loopback port, in a temp directory, stopped and
//! removed when dropped. PostgreSQL refuses to run as root, so as root it
//! runs as the `postgres` OS user.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

pub struct Services {
    dir: PathBuf,
    pg_ctl: PathBuf,
    as_postgres: bool,
    redis: Option<Child>,
    pub postgres_url: String,
    pub redis_url: String,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The newest PostgreSQL's server binaries (Debian keeps them off PATH).
fn postgres_bin() -> anyhow::Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(Result::ok)
                .map(|d| d.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort_by_key(|p| {
        p.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    candidates
        .into_iter()
        .rev()
        .find(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .context("no PostgreSQL server binaries under /usr/lib/postgresql: install postgresql, or use bench/run, which installs what is missing")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

impl Services {
    pub fn start() -> anyhow::Result<Self> {
        let bin = postgres_bin()?;
        let as_postgres = is_root();
        let dir =
            std::env::temp_dir().join(format!("boxoffice-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let (pg_port, redis_port) = (free_port()?, free_port()?);
        // From here on, dropping `services` cleans up whatever was started.
        let mut services = Services {
            dir: dir.clone(),
            pg_ctl: bin.join("pg_ctl"),
            as_postgres,
            redis: None,
            postgres_url: format!("postgres://postgres@127.0.0.1:{pg_port}/postgres"),
            redis_url: format!("redis://127.0.0.1:{redis_port}/"),
        };
        if as_postgres {
            run(
                Command::new("chown").arg("postgres:postgres").arg(&dir),
                "chown the temp dir",
            )?;
        }
        let data = dir.join("pg");
        run(
            services
                .pg(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["--auth=trust", "-U", "postgres", "--encoding=UTF8"])
                .args(["--no-locale", "--no-sync"]),
            "initdb",
        )?;
        let options = format!(
            // Durable commits, as in production: the strategies that hold
            // a lock across a commit pay for it here as they would there.
            "-c listen_addresses=127.0.0.1 -p {pg_port} -k {} -c max_connections=300",
            dir.display()
        );
        run(
            services
                .pg(&services.pg_ctl)
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.join("postgres.log"))
                .args(["-w", "-t", "60", "-o", &options, "start"]),
            "starting PostgreSQL",
        )?;
        services.redis = Some(
            Command::new("redis-server")
                .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting redis-server (install redis-server, or use bench/run)")?,
        );
        wait_for_port(pg_port, "PostgreSQL")?;
        wait_for_port(redis_port, "Redis")?;
        eprintln!(
            "started throwaway PostgreSQL on 127.0.0.1:{pg_port} and Redis on 127.0.0.1:{redis_port}"
        );
        Ok(services)
    }

    /// A PostgreSQL tool, run as the `postgres` user when we are root.
    fn pg(&self, tool: &Path) -> Command {
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(tool);
            cmd
        } else {
            Command::new(tool)
        };
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    }
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: cannot run"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn wait_for_port(port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what} is not accepting connections on 127.0.0.1:{port}")
}

impl Drop for Services {
    fn drop(&mut self) {
        if let Some(redis) = &mut self.redis {
            let _ = redis.kill();
            let _ = redis.wait();
        }
        let data = self.dir.join("pg");
        if data.join("postmaster.pid").exists() {
            let _ = self
                .pg(&self.pg_ctl)
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "stop"])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
