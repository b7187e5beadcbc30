//! The real stores a scenario runs against: a fresh PostgreSQL database and
//! a Redis server (their URLs come from flags or from `bench/run`).

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, Statement};

pub struct Stores {
    pub postgres_server: String,
    /// The standalone Redis (scenarios that drive the stores directly).
    pub redis_url: String,
    /// A Redis Cluster the servers use instead, when given.
    pub redis_cluster_nodes: Option<String>,
}

impl Stores {
    pub async fn connect(
        database_url: Option<&str>,
        redis_url: Option<&str>,
    ) -> anyhow::Result<Self> {
        let postgres_server = database_url
            .context(
                "no PostgreSQL: pass --database-url or run through bench/run, which starts one",
            )?
            .to_owned();
        let redis_url = redis_url
            .context("no Redis: pass --redis-url or run through bench/run, which starts one")?
            .to_owned();
        let mut conn = redis::Client::open(redis_url.as_str())?
            .get_multiplexed_async_connection()
            .await
            .context("connecting to Redis")?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(Self {
            postgres_server,
            redis_url,
            redis_cluster_nodes: None,
        })
    }

    /// The servers' Redis flags: the cluster when one is given, else the
    /// standalone Redis.
    pub fn server_redis_args(&self) -> Vec<String> {
        match &self.redis_cluster_nodes {
            Some(nodes) => vec!["--redis-cluster-nodes".into(), nodes.clone()],
            None => vec!["--redis-url".into(), self.redis_url.clone()],
        }
    }

    /// The PostgreSQL server's version and durability, for the report:
    /// commits without `fsync` or `synchronous_commit` are much cheaper,
    /// and every number of a write path depends on it.
    pub async fn describe_postgres(&self) -> anyhow::Result<String> {
        let db = Database::connect(self.postgres_server.as_str())
            .await
            .context("connecting to PostgreSQL")?;
        let mut settings = Vec::new();
        for name in ["server_version", "fsync", "synchronous_commit"] {
            let row = db
                .query_one_raw(Statement::from_string(
                    DatabaseBackend::Postgres,
                    format!("SHOW {name}"),
                ))
                .await?
                .with_context(|| format!("SHOW {name}"))?;
            settings.push(row.try_get_by_index::<String>(0)?);
        }
        db.close().await.ok();
        let durable = settings[1] == "on" && settings[2] != "off";
        Ok(format!(
            "PostgreSQL {} with fsync {} and synchronous_commit {} ({})",
            settings[0],
            settings[1],
            settings[2],
            if durable {
                "durable commits"
            } else {
                "commits NOT durable: write paths look faster than on a real deployment"
            }
        ))
    }

    /// A new, migrated database on the PostgreSQL server.
    pub async fn fresh_database(&self) -> anyhow::Result<(String, DatabaseConnection)> {
        let name = format!("bo_bench_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(self.postgres_server.as_str())
            .await
            .context("connecting to PostgreSQL")?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await?;
        admin.close().await.ok();
        let (server, _) = self
            .postgres_server
            .rsplit_once('/')
            .context("the PostgreSQL URL names a database")?;
        let url = format!("{server}/{name}");
        let db = boxoffice::db::connect(&url).await?;
        boxoffice::db::migrate(&db).await?;
        Ok((url, db))
    }

    pub async fn redis(&self) -> anyhow::Result<(redis::Client, redis::aio::ConnectionManager)> {
        let client = redis::Client::open(self.redis_url.as_str())?;
        let conn = client.get_connection_manager().await?;
        Ok((client, conn))
    }
}
