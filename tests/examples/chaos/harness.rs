//! What every drill shares: the services, the server process, the
//! workloads, a counting TCP proxy, and the checks a drill reports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use sluice_tests::load::{self, Call, Load, Sample};
use sluice_tests::provision::{TempPostgres, TempRedis, free_port};
use sluice_tests::services::scratch_dir;
use sluice_tests::upstream::Upstream;
use sqlx::Connection;

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Result<T> = std::result::Result<T, Error>;

/// Connections every drill's load uses.
pub(crate) const CONNECTIONS: usize = 32;
/// Users seeded for W1/W2.
const USERS: u64 = 10_000;

/// One goal of one drill, and what was measured against it.
#[derive(Debug)]
pub(crate) struct Check {
    pub(crate) drill: &'static str,
    pub(crate) goal: String,
    pub(crate) measured: String,
    pub(crate) pass: bool,
}

impl Check {
    pub(crate) fn new(
        drill: &'static str,
        goal: impl Into<String>,
        measured: impl Into<String>,
        pass: bool,
    ) -> Self {
        Self {
            drill,
            goal: goal.into(),
            measured: measured.into(),
            pass,
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.pass { "pass" } else { "FAIL" };
        write!(f, "  [{verdict}] {}: {}", self.goal, self.measured)
    }
}

/// The services the drills break, and the release server binary.
pub(crate) struct Harness {
    pub(crate) server_bin: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) pg: TempPostgres,
    pub(crate) redis: TempRedis,
    pub(crate) upstream: Upstream,
    /// The drills' database on `pg`, seeded with users and profiles.
    pub(crate) db_url: String,
}

impl Harness {
    pub(crate) async fn start(server_bin: PathBuf) -> Result<Self> {
        if !server_bin.exists() {
            return Err(format!("no server binary at {}", server_bin.display()).into());
        }
        let (pg, redis) = tokio::task::spawn_blocking(|| -> Result<_> {
            Ok((TempPostgres::start_durable()?, TempRedis::start()?))
        })
        .await??;
        let mut admin = sqlx::PgConnection::connect(&pg.url()).await?;
        sqlx::query("CREATE DATABASE sluice_chaos")
            .execute(&mut admin)
            .await?;
        let db_url = format!("postgres://postgres@127.0.0.1:{}/sluice_chaos", pg.port());
        let harness = Self {
            server_bin,
            dir: scratch_dir("chaos"),
            pg,
            redis,
            upstream: Upstream::start().await?,
            db_url,
        };
        // The server's migrations create the tables; seed them after.
        let server = harness.server(&[]).await?;
        let mut conn = sqlx::PgConnection::connect(&harness.db_url).await?;
        sqlx::query(
            "INSERT INTO users (name, email) SELECT 'user ' || g, 'u' || g || '@chaos.local' \
             FROM generate_series(1, $1::int) g",
        )
        .bind(USERS as i32)
        .execute(&mut conn)
        .await?;
        sqlx::query("INSERT INTO profiles (user_id, bio) SELECT id, 'bio' FROM users")
            .execute(&mut conn)
            .await?;
        drop(server);
        Ok(harness)
    }

    /// Starts the server against the drills' database, Redis off, the
    /// upstream on, plus `extra` variables (which win).
    pub(crate) async fn server(&self, extra: &[(&str, String)]) -> Result<Server> {
        let port = free_port()?;
        let log = self.dir.join(format!("server-{port}.log"));
        let mut command = Command::new(&self.server_bin);
        command
            .env_clear()
            .env("SLUICE_BIND", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", &self.db_url)
            .env("DB_POSTGRES_POOL_SIZE", "10")
            .env("API_EXTERNAL_BASE_URL", self.upstream.base_url())
            .env(
                "RUST_LOG",
                std::env::var("SLUICE_CHAOS_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        for (k, v) in extra {
            command.env(k, v);
        }
        let mut server = Server {
            child: command.spawn()?,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((200, _)) = load::fetch(server.addr, "/readyz").await {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(&server.log).unwrap_or_default();
                return Err(format!("the server exited with {status}: {log}").into());
            }
            if Instant::now() > deadline {
                return Err("the server was not ready within 20 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The release server as a child process, killed on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    /// The sum of the Prometheus samples whose line starts with `series`
    /// (a name, optionally with the start of its labels).
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let Some((200, body)) = load::fetch(self.addr, "/metrics").await else {
            return f64::NAN;
        };
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The sum of the Prometheus samples of `name` whose labels include
    /// every one of `labels` (`key="value"`), in any order.
    pub(crate) async fn metric_with(&self, name: &str, labels: &[&str]) -> f64 {
        let Some((200, body)) = load::fetch(self.addr, "/metrics").await else {
            return f64::NAN;
        };
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| labels.iter().all(|label| l.contains(label)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Whether the process is still the one started (it never exited).
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A load of `duration` against this server.
    pub(crate) fn load(&self, duration: Duration) -> Load {
        Load {
            addr: self.addr,
            connections: CONNECTIONS,
            duration,
            stop_when_refused: false,
        }
    }
}

/// A load running in the background, with the clock its samples use.
pub(crate) struct Running {
    pub(crate) epoch: Instant,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Running {
    pub(crate) fn start(
        load: Load,
        next: impl Fn(usize, u64) -> Call + Send + Sync + 'static,
    ) -> Result<Self> {
        if !load.addr.ip().is_loopback() {
            return Err("loads target loopback addresses only".into());
        }
        let epoch = Instant::now();
        let never = Arc::new(AtomicBool::new(false));
        let task =
            tokio::spawn(async move { load.run(epoch, next, never).await.unwrap_or_default() });
        Ok(Self { epoch, task })
    }

    /// Time since the load started.
    pub(crate) fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub(crate) async fn finish(self) -> Result<Vec<Sample>> {
        Ok(self.task.await?)
    }
}

/// A spread of ids from a worker and its request number (splitmix64).
fn spread(worker: usize, n: u64) -> u64 {
    let mut z = ((worker as u64) << 40 ^ n).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// W1/W2: `GET /users/{id}` over the seeded users.
pub(crate) fn get_user(worker: usize, n: u64) -> Call {
    Call::get(format!("/users/{}", spread(worker, n) % USERS + 1))
}

/// W3: `POST /users`, keyed by the email it creates.
pub(crate) fn post_user(tag: &'static str) -> impl Fn(usize, u64) -> Call + Send + Sync {
    move |worker, n| {
        let email = format!("{tag}-{worker}-{n}@chaos.local");
        let mut call =
            Call::post_json("/users", format!(r#"{{"name":"chaos","email":"{email}"}}"#));
        call.key = Some(email);
        call
    }
}

/// W4: `GET /external-data/{id}`, a new id each time.
pub(crate) fn get_external(worker: usize, n: u64) -> Call {
    Call::get(format!("/external-data/{}", spread(worker, n)))
}

/// Samples that started in `[from, to)`.
pub(crate) fn between(samples: &[Sample], from: Duration, to: Duration) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| s.start >= from && s.start < to)
        .collect()
}

/// The `p`th percentile latency of `samples`, in ms.
pub(crate) fn p_ms<'a>(samples: impl IntoIterator<Item = &'a Sample>, p: f64) -> f64 {
    let mut latencies: Vec<Duration> = samples.into_iter().map(|s| s.latency).collect();
    load::percentile(&mut latencies, p).as_secs_f64() * 1000.0
}
