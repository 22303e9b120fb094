//! Throw-away PostgreSQL and Redis servers started from the locally
//! installed binaries. Standard library only, so `xtask` can use it too.
//!
//! PostgreSQL refuses to run as root; when this process is root the server
//! runs as the `postgres` user through `runuser`. Every server listens on a
//! free port on 127.0.0.1 only, keeps its files in a temporary directory and
//! is stopped and removed when its handle is dropped.

use std::fmt;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod haproxy;
mod pgbouncer;
mod redis_ha;
mod replica;
pub use haproxy::{TempHaproxy, haproxy_config};
pub use pgbouncer::TempPgBouncer;
pub use redis_ha::{SENTINEL_SERVICE, TempRedisCluster, TempRedisSentinel};

/// Why a server could not be started.
#[derive(Debug)]
pub enum ProvisionError {
    /// A binary is missing; the string says how to install it.
    Missing {
        /// The binary that was looked for.
        binary: &'static str,
        /// The command that installs it.
        install: &'static str,
    },
    /// A command failed or the server did not become ready.
    Failed(String),
}

impl fmt::Display for ProvisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProvisionError::Missing { binary, install } => {
                write!(f, "`{binary}` not found; install it with `{install}`")
            }
            ProvisionError::Failed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ProvisionError {}

fn failed(what: impl Into<String>) -> ProvisionError {
    ProvisionError::Failed(what.into())
}

/// A free TCP port on 127.0.0.1 (free when asked; bind it soon).
///
/// The port is drawn from below the kernel's ephemeral range, so that no
/// outgoing connection (of this or a concurrent test) can take it as its
/// source port while a server that owns it is stopped for a drill and then
/// restarted on it. Falls back to an ephemeral port when that range is full.
pub fn free_port() -> io::Result<u16> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000u16;
    if ephemeral_start > low + 1_000 {
        let span = u64::from(ephemeral_start - low);
        let mut seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ (u64::from(std::process::id()) << 32);
        for _ in 0..64 {
            // xorshift: cheap, and good enough to spread concurrent callers.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let port = low + (seed % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn unique_dir(prefix: &str) -> io::Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
pub fn postgres_bindir() -> Result<PathBuf, ProvisionError> {
    let missing = ProvisionError::Missing {
        binary: "initdb",
        install: "apt-get install -y postgresql",
    };
    // Debian keeps the server binaries off PATH, one directory per version.
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|dir| dir.join("initdb").exists());
    versions.sort_by_key(|dir| {
        dir.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(dir) = versions.pop() {
        return Ok(dir);
    }
    let path = std::env::var_os("PATH").ok_or(missing)?;
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
        .ok_or(ProvisionError::Missing {
            binary: "initdb",
            install: "apt-get install -y postgresql",
        })
}

/// A PostgreSQL server of its own, stopped and deleted on drop.
#[derive(Debug)]
pub struct TempPostgres {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres_user: bool,
    durable: bool,
    frozen: bool,
    child: Option<Child>,
}

impl TempPostgres {
    /// Creates a cluster in a temporary directory and starts it on a free
    /// port, with durability off (it is thrown away) and trust auth for the
    /// `postgres` user.
    pub fn start() -> Result<Self, ProvisionError> {
        Self::start_with(false)
    }

    /// As [`start`](Self::start), but a commit is acknowledged only once
    /// its WAL is written (`synchronous_commit=on`), so a killed server
    /// loses no acknowledged commit. `fsync` stays off: that protects only
    /// against the machine crashing, which no drill does.
    pub fn start_durable() -> Result<Self, ProvisionError> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Result<Self, ProvisionError> {
        let bindir = postgres_bindir()?;
        let dir = unique_dir("sluice-pg").map_err(|e| failed(format!("temp dir: {e}")))?;
        let as_postgres_user = is_root();
        if as_postgres_user {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir))?;
        }
        let mut pg = Self {
            bindir,
            dir,
            port: any_port()?,
            as_postgres_user,
            durable,
            frozen: false,
            child: None,
        };
        let data = pg.data_dir();
        run(pg
            .command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data))?;
        pg.launch()?;
        Ok(pg)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, binary: &str) -> Command {
        let path = self.bindir.join(binary);
        let mut cmd = if self.as_postgres_user {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        };
        cmd.stdin(Stdio::null());
        cmd
    }

    fn launch(&mut self) -> Result<(), ProvisionError> {
        let log = std::fs::File::create(self.dir.join("postgres.log"))
            .map_err(|e| failed(format!("log file: {e}")))?;
        let log_err = log
            .try_clone()
            .map_err(|e| failed(format!("log file: {e}")))?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                if self.durable {
                    "synchronous_commit=on"
                } else {
                    "synchronous_commit=off"
                },
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ])
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| failed(format!("spawn postgres: {e}")))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), ProvisionError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ready = Command::new(self.bindir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(failed(format!(
                    "postgres exited with {status}; log: {}",
                    std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(failed("postgres did not become ready within 30 s"))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for the `postgres` superuser and database, allowed to
    /// `CREATE DATABASE` (what tests expect of `DATABASE_URL`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast shutdown: sessions are cut) and keeps its data.
    pub fn stop(&mut self) -> Result<(), ProvisionError> {
        let result = run(self
            .command("pg_ctl")
            .args(["stop", "-m", "fast", "-w", "-D"])
            .arg(self.data_dir()));
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        result
    }

    /// Kills the server as a crash would: SIGKILL to every backend and to
    /// the postmaster, no shutdown checkpoint. [`restart`](Self::restart)
    /// then runs crash recovery.
    pub fn crash(&mut self) -> Result<(), ProvisionError> {
        self.thaw()?;
        let pids = self.cluster_pids()?;
        let victims: Vec<&str> = pids.iter().map(String::as_str).collect();
        // A backend may exit between pgrep and kill; kill then reports
        // it as missing, which is fine: it is gone either way.
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(&victims)
            .stderr(Stdio::null())
            .status();
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        // A restart fails while any old backend still holds the shared
        // memory; they are gone within moments of SIGKILL.
        let deadline = Instant::now() + Duration::from_secs(10);
        while victims.iter().any(|p| alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Turns TLS on with this certificate and key (copied into the data
    /// directory) and restarts the server; plain connections still work,
    /// as on a server with `ssl = on` and no `hostssl` rule.
    pub fn enable_tls(&mut self, cert: &Path, key: &Path) -> Result<(), ProvisionError> {
        let data = self.data_dir();
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            std::fs::copy(from, data.join(to)).map_err(|e| failed(format!("{to}: {e}")))?;
        }
        run(Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key")))?;
        if self.as_postgres_user {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(data.join("server.crt"))
                .arg(data.join("server.key")))?;
        }
        let conf = data.join("postgresql.conf");
        let mut text =
            std::fs::read_to_string(&conf).map_err(|e| failed(format!("postgresql.conf: {e}")))?;
        text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).map_err(|e| failed(format!("postgresql.conf: {e}")))?;
        self.restart()
    }

    /// Requires a client certificate signed by `ca` on TCP connections
    /// (`hostssl … cert`; plain TCP is rejected), with TLS on as
    /// [`enable_tls`](Self::enable_tls) sets it, and restarts the server.
    pub fn require_client_certs(
        &mut self,
        cert: &Path,
        key: &Path,
        ca: &Path,
    ) -> Result<(), ProvisionError> {
        let data = self.data_dir();
        std::fs::copy(ca, data.join("root.crt")).map_err(|e| failed(format!("root.crt: {e}")))?;
        if self.as_postgres_user {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(data.join("root.crt")))?;
        }
        let conf = data.join("postgresql.conf");
        let mut text =
            std::fs::read_to_string(&conf).map_err(|e| failed(format!("postgresql.conf: {e}")))?;
        text.push_str("\nssl_ca_file = 'root.crt'\n");
        std::fs::write(&conf, text).map_err(|e| failed(format!("postgresql.conf: {e}")))?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 cert\nhost all all 127.0.0.1/32 reject\n",
        )
        .map_err(|e| failed(format!("pg_hba.conf: {e}")))?;
        self.enable_tls(cert, key)
    }

    /// The postmaster's pid and its children's (backends, checkpointer…).
    fn cluster_pids(&self) -> Result<Vec<String>, ProvisionError> {
        let pid_file = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .map_err(|e| failed(format!("postmaster.pid: {e}")))?;
        let pid = pid_file
            .lines()
            .next()
            .map(str::trim)
            .filter(|p| p.parse::<u32>().is_ok())
            .ok_or_else(|| failed("postmaster.pid holds no pid"))?
            .to_owned();
        let children = Command::new("pgrep")
            .args(["-P", &pid])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut pids: Vec<String> = children.split_whitespace().map(str::to_owned).collect();
        pids.push(pid);
        Ok(pids)
    }

    /// Freezes the whole server with SIGSTOP, as a host that stopped
    /// answering would look: the kernel still completes TCP handshakes
    /// (into the listen backlog), but nothing accepts, answers a start-up
    /// message or a query. [`thaw`](Self::thaw) (or drop) resumes it.
    pub fn freeze(&mut self) -> Result<(), ProvisionError> {
        let pids = self.cluster_pids()?;
        let status = Command::new("kill")
            .arg("-STOP")
            .args(&pids)
            .stderr(Stdio::null())
            .status()
            .map_err(|e| failed(format!("kill -STOP: {e}")))?;
        self.frozen = true;
        if !status.success() {
            return Err(failed("kill -STOP failed"));
        }
        Ok(())
    }

    /// Resumes a server frozen by [`freeze`](Self::freeze).
    pub fn thaw(&mut self) -> Result<(), ProvisionError> {
        if !self.frozen {
            return Ok(());
        }
        let mut pids = self.cluster_pids()?;
        // Run as root, the server is a child of `runuser`, which stops
        // itself when its child stops (as `su` does) and would then never
        // reap it: resume it too.
        if let Some(child) = &self.child {
            pids.push(child.id().to_string());
        }
        let _ = Command::new("kill")
            .arg("-CONT")
            .args(&pids)
            .stderr(Stdio::null())
            .status();
        self.frozen = false;
        Ok(())
    }

    /// Starts the server again on the same port with the same data.
    pub fn restart(&mut self) -> Result<(), ProvisionError> {
        if self.child.is_some() {
            self.stop()?;
        }
        self.launch()
    }

    /// Where its files live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let _ = self.thaw();
        if self.child.is_some() {
            let _ = run(self
                .command("pg_ctl")
                .args(["stop", "-m", "immediate", "-w", "-D"])
                .arg(self.data_dir()));
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis server of its own with persistence off, killed on drop.
#[derive(Debug)]
pub struct TempRedis {
    port: u16,
    dir: PathBuf,
    /// Certificate and key when it serves TLS only.
    tls: Option<(PathBuf, PathBuf)>,
    /// The CA client certificates must be signed by (mutual TLS).
    client_ca: Option<PathBuf>,
    child: Option<Child>,
}

impl TempRedis {
    /// Starts `redis-server` on a free port on 127.0.0.1.
    pub fn start() -> Result<Self, ProvisionError> {
        Self::start_with(None, None)
    }

    /// Starts `redis-server` serving TLS only (`rediss://`), with this
    /// certificate and key; clients need no certificate of their own.
    pub fn start_tls(cert: &Path, key: &Path) -> Result<Self, ProvisionError> {
        Self::start_with(Some((cert.to_path_buf(), key.to_path_buf())), None)
    }

    /// As [`start_tls`](Self::start_tls), and every client must present a
    /// certificate signed by `ca` (`--tls-auth-clients yes`).
    pub fn start_mutual_tls(cert: &Path, key: &Path, ca: &Path) -> Result<Self, ProvisionError> {
        Self::start_with(
            Some((cert.to_path_buf(), key.to_path_buf())),
            Some(ca.to_path_buf()),
        )
    }

    fn start_with(
        tls: Option<(PathBuf, PathBuf)>,
        client_ca: Option<PathBuf>,
    ) -> Result<Self, ProvisionError> {
        let dir = unique_dir("sluice-redis").map_err(|e| failed(format!("temp dir: {e}")))?;
        let mut redis = Self {
            port: any_port()?,
            dir,
            tls,
            client_ca,
            child: None,
        };
        redis.launch()?;
        Ok(redis)
    }

    fn launch(&mut self) -> Result<(), ProvisionError> {
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1"]);
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some((cert, key)) => {
                command
                    .args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(cert)
                    .arg("--tls-key-file")
                    .arg(key)
                    .args(match &self.client_ca {
                        Some(_) => ["--tls-auth-clients", "yes"],
                        None => ["--tls-auth-clients", "no"],
                    })
                    .args(self.client_ca.iter().flat_map(|ca| {
                        [std::ffi::OsStr::new("--tls-ca-cert-file"), ca.as_os_str()]
                    }))
            }
        };
        let child = command
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| spawn_error(e, "redis-server", "apt-get install -y redis-server"))?;
        self.child = Some(child);
        if wait_for_port(self.port, Duration::from_secs(10)) {
            Ok(())
        } else {
            Err(failed("redis-server did not listen within 10 s"))
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/0`, or `rediss://` when it serves TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (its data is gone: persistence is off).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server with SIGSTOP: connections stay open, nothing
    /// is answered (a hung host). [`thaw`](Self::thaw) resumes it; so does
    /// [`stop`](Self::stop), which kills it.
    pub fn freeze(&mut self) {
        self.signal("-STOP");
    }

    /// Resumes a server frozen by [`freeze`](Self::freeze).
    pub fn thaw(&mut self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) -> Result<(), ProvisionError> {
        self.stop();
        self.launch()
    }
}

impl Drop for TempRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether process `pid` still runs (a zombie holds nothing and counts
/// as gone).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// [`free_port`] as a provisioning error.
fn any_port() -> Result<u16, ProvisionError> {
    free_port().map_err(|e| failed(format!("free port: {e}")))
}

/// A failed spawn of a service's `binary`: when it is not installed, the
/// error names the package that provides it.
fn spawn_error(e: io::Error, binary: &'static str, install: &'static str) -> ProvisionError {
    match e.kind() {
        io::ErrorKind::NotFound => ProvisionError::Missing { binary, install },
        _ => failed(format!("spawn {binary}: {e}")),
    }
}

fn run(cmd: &mut Command) -> Result<(), ProvisionError> {
    let out = cmd.output().map_err(|e| failed(format!("{cmd:?}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(format!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
