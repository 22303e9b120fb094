//! `cargo xtask bench server`: the release server under wrk against
//! throw-away PostgreSQL and Redis and local upstreams, each workload
//! beside the reference that bounds it. Prints one Markdown table.
//!
//! Everything runs on 127.0.0.1 and every load run is bounded in time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use sluice_tests::provision::free_port;

use crate::open_loop::median;

/// Load-run settings; `SLUICE_BENCH_SECONDS` shortens or lengthens runs.
struct Plan {
    seconds: u64,
    connections: u32,
}

/// One wrk run's figures.
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    errors: u64,
}

/// A child process killed on drop.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Peak resident memory (VmHWM) in MiB, from /proc.
    fn peak_rss_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }

    /// Current resident memory (VmRSS) in MiB.
    fn rss_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

/// Fails with the install command when `binary` is not on the PATH.
pub(crate) fn require(binary: &str, install: &str) -> Result<()> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .stdout(Stdio::null())
        .status()?
        .success();
    if !found {
        bail!("`{binary}` is needed; install it with `{install}`");
    }
    Ok(())
}

/// Waits until `GET path` on 127.0.0.1:port answers 200.
pub(crate) fn wait_ready(port: u16, path: &str, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut head = [0u8; 16];
                if stream.read(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200") {
                    return Ok(started.elapsed());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    bail!("nothing answered 200 on 127.0.0.1:{port}{path} within {timeout:?}")
}

/// A binary of the release build.
pub(crate) fn release_bin(name: &str) -> PathBuf {
    crate::project_root().join("target/release").join(name)
}

/// An example of the release build.
pub(crate) fn release_example(name: &str) -> PathBuf {
    crate::project_root()
        .join("target/release/examples")
        .join(name)
}

/// Builds the release server and every `sluice-tests` example (reference
/// server, upstream, drill runner) in one invocation, the same for `bench
/// server` and `chaos`: built apart, they would resolve features
/// differently and each would recompile sqlx, fred and rustls.
pub(crate) fn build_release() -> Result<()> {
    crate::run_step(
        "cargo build --release (server and the sluice-tests examples)",
        crate::cargo().args([
            "build",
            "--release",
            "-p",
            "sluice-server",
            "-p",
            "sluice-tests",
            "--bins",
            "--examples",
        ]),
    )
}

fn spawn(program: &Path, args: &[&str], env: &[(&str, String)], log: &Path) -> Result<Proc> {
    let log = std::fs::File::create(log)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(Proc(cmd.spawn().with_context(|| {
        format!("cannot start {}", program.display())
    })?))
}

/// Starts the release server on a free port with the environment `env`
/// builds for that port, and waits until it is ready.
fn start_server(
    dir: &Path,
    log: &str,
    env: impl Fn(u16) -> Vec<(&'static str, String)>,
) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let server = spawn(
        &release_bin("sluice-server"),
        &[],
        &env(port),
        &dir.join(log),
    )?;
    wait_ready(port, "/readyz", Duration::from_secs(20))?;
    Ok((server, port))
}

fn psql(url: &str, sql: &str) -> Result<()> {
    let status = Command::new("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("psql failed: {sql}");
    }
    Ok(())
}

/// Lua for wrk: a request generator plus a `done` hook printing the
/// figures in one parseable line (latencies in microseconds).
fn script(dir: &Path, name: &str, request: &str) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.lua"));
    let lua = format!(
        "local counter = 0\n\
         setup = function(thread) thread:set(\"tid\", tostring(math.random(1, 1000000000))) end\n\
         init = function(args) math.randomseed(os.time() + tonumber(tid)) end\n\
         request = function()\n  counter = counter + 1\n{request}\nend\n\
         done = function(summary, latency, requests)\n\
           local e = summary.errors\n\
           io.write(string.format(\"SLUICE_RESULT %d %d %d %d %d %d\\n\", summary.requests, summary.duration,\n\
             latency:percentile(50), latency:percentile(99), latency:percentile(99.9),\n\
             e.connect + e.read + e.write + e.status + e.timeout))\n\
         end\n"
    );
    std::fs::write(&path, lua)?;
    Ok(path)
}

fn wrk(port: u16, script: &Path, connections: u32, seconds: u64) -> Result<Run> {
    let threads = connections.clamp(1, 2).to_string();
    let out = Command::new("wrk")
        .args([
            "-t",
            &threads,
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--timeout",
            "10s",
            "-s",
        ])
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("SLUICE_RESULT"))
        .with_context(|| {
            format!(
                "wrk printed no result: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let n: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    if n.len() != 6 {
        bail!("unexpected wrk result line: {line}");
    }
    Ok(Run {
        rps: n[0] / (n[1] / 1e6),
        p50_ms: n[2] / 1e3,
        p99_ms: n[3] / 1e3,
        p999_ms: n[4] / 1e3,
        errors: n[5] as u64,
    })
}

fn row(name: &str, run: &Run, rss: f64, reference: &str, verdict: &str) -> String {
    format!(
        "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.1} | {reference} | {verdict} |",
        run.rps, run.p50_ms, run.p99_ms, run.p999_ms, run.errors, rss
    )
}

/// Three alternating rounds, ours first in each: the runs of each side.
fn alternate(
    mut ours: impl FnMut() -> Result<Run>,
    mut theirs: impl FnMut() -> Result<Run>,
) -> Result<(Vec<Run>, Vec<Run>)> {
    let mut sides = rounds(&mut [&mut ours, &mut theirs])?.into_iter();
    match (sides.next(), sides.next()) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => bail!("two sides ran, two sets of runs expected"),
    }
}

/// Three rounds of each runner in turn, in the order given: the runs of
/// each, in that order.
fn rounds(runners: &mut [&mut dyn FnMut() -> Result<Run>]) -> Result<Vec<Vec<Run>>> {
    let mut runs: Vec<Vec<Run>> = runners.iter().map(|_| Vec::new()).collect();
    for _ in 0..3 {
        for (run, side) in runners.iter_mut().zip(runs.iter_mut()) {
            side.push(run()?);
        }
    }
    Ok(runs)
}

/// The requests/s of each round, in order: "21559 / 23363 / 19191".
fn spread(runs: &[Run]) -> String {
    runs.iter()
        .map(|r| format!("{:.0}", r.rps))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The round whose requests/s is nearest the median: its latencies go in
/// the table's row.
fn middle(runs: &[Run]) -> Result<&Run> {
    let mid = median(runs, |r| r.rps);
    runs.iter()
        .min_by(|a, b| (a.rps - mid).abs().total_cmp(&(b.rps - mid).abs()))
        .context("no rounds")
}

pub(crate) fn check(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

pub(crate) fn run() -> Result<()> {
    for (binary, install) in [
        ("wrk", "apt-get install -y wrk"),
        ("psql", "apt-get install -y postgresql-client"),
        ("pgbench", "apt-get install -y postgresql-contrib"),
        ("redis-benchmark", "apt-get install -y redis-tools"),
    ] {
        require(binary, install)?;
    }
    crate::open_loop::require()?;
    let plan = Plan {
        seconds: std::env::var("SLUICE_BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
        connections: 64,
    };
    build_release()?;
    let services = crate::test::Services::provision()?;
    let dir = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let base = services
        .database_url
        .trim_end_matches("/postgres")
        .to_owned();
    for db in ["sluice_bench", "reference_bench"] {
        psql(
            &services.database_url,
            &format!("DROP DATABASE IF EXISTS {db}"),
        )?;
        psql(&services.database_url, &format!("CREATE DATABASE {db}"))?;
    }
    let (sluice_db, reference_db) = (
        format!("{base}/sluice_bench"),
        format!("{base}/reference_bench"),
    );
    let migration = std::fs::read_to_string(
        crate::project_root().join("crates/db/migrations/postgres/0001_users_profiles.sql"),
    )?;
    psql(&reference_db, &migration)?;

    // Upstreams: 0 ms and 20 ms.
    let (up0, up20) = (free_port()?, free_port()?);

    let _up0 = spawn(
        &release_example("bench_upstream"),
        &[&up0.to_string(), "0"],
        &[],
        &dir.join("up0.log"),
    )?;
    let _up20 = spawn(
        &release_example("bench_upstream"),
        &[&up20.to_string(), "20"],
        &[],
        &dir.join("up20.log"),
    )?;
    wait_ready(up0, "/data/ready", Duration::from_secs(10))?;
    wait_ready(up20, "/data/ready", Duration::from_secs(10))?;

    // Start-up to ready on SQLite, median of 5.
    let mut startups = Vec::new();
    for i in 0..5 {
        let port = free_port()?;
        let server = spawn(
            &release_bin("sluice-server"),
            &[],
            &[
                ("SLUICE_BIND", format!("127.0.0.1:{port}")),
                (
                    "SLUICE_DB_SQLITE_PATH",
                    dir.join(format!("start{i}.db")).display().to_string(),
                ),
            ],
            &dir.join("startup.log"),
        )?;
        startups.push(wait_ready(port, "/readyz", Duration::from_secs(10))?);
        drop(server);
    }
    startups.sort();
    let startup = startups[2];

    let server_env = |port: u16, redis: bool, upstream: u16| {
        let mut env = vec![
            ("SLUICE_BIND", format!("127.0.0.1:{port}")),
            ("DATABASE_URL", sluice_db.clone()),
            ("DB_POSTGRES_POOL_SIZE", "10".to_owned()),
            (
                "API_EXTERNAL_BASE_URL",
                format!("http://127.0.0.1:{upstream}"),
            ),
            ("RUST_LOG", "warn".to_owned()),
        ];
        if redis {
            env.push(("REDIS_URL", services.redis_url.clone()));
        }
        env
    };
    let seeds = "INSERT INTO users (name, email) SELECT 'user ' || g, 'u' || g || '@bench.local' FROM generate_series(1, 10000) g; \
                 INSERT INTO profiles (user_id, bio) SELECT id, 'bio' FROM users";
    let get_user = script(
        &dir,
        "get_user",
        "  return wrk.format(\"GET\", \"/users/\" .. math.random(1, 10000))",
    )?;
    let post_user = script(
        &dir,
        "post_user",
        // `tid` repeats from run to run (wrk's setup draws it unseeded):
        // the run's start time keeps emails new across rounds on one
        // database, where a repeat would be a fast 409.
        "  stamp = stamp or os.time()\n  return wrk.format(\"POST\", \"/users\", {[\"Content-Type\"] = \"application/json\"},\n    '{\"name\":\"b\",\"email\":\"w3-' .. tid .. '-' .. stamp .. '-' .. counter .. '@bench.local\"}')",
    )?;
    let get_external = script(
        &dir,
        "get_external",
        "  return wrk.format(\"GET\", \"/external-data/\" .. math.random(1, 100000000))",
    )?;
    let get_direct = script(
        &dir,
        "get_direct",
        "  return wrk.format(\"GET\", \"/data/\" .. math.random(1, 100000000))",
    )?;
    let batch = script(
        &dir,
        "batch",
        "  local ids = {}\n  for i = 1, 100 do ids[i] = '\"' .. tid .. '-' .. counter .. '-' .. i .. '\"' end\n  return wrk.format(\"POST\", \"/batch-external-data\", {[\"Content-Type\"] = \"application/json\"}, '[' .. table.concat(ids, ',') .. ']')",
    )?;

    let mut table = vec![
        "| workload | req/s | p50 ms | p99 ms | p99.9 ms | errors | peak RSS MiB | reference | goal |".to_owned(),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |".to_owned(),
    ];
    let (s, c) = (plan.seconds, plan.connections);

    // W1 and W3 against sluice (no cache) and the bare reference.
    let (server, port) = start_server(&dir, "w1.log", |port| server_env(port, false, up0))?;
    psql(&sluice_db, seeds)?;
    psql(&reference_db, seeds)?;
    // Two references: the same pool check as sluice-pool (ping only
    // connections idle ≥ 1 s), which the goals are judged against, and
    // sqlx's default (ping before every acquire), what bare sqlx gives.
    let (ref_port, default_port) = (free_port()?, free_port()?);
    let reference = spawn(
        &release_example("reference_server"),
        &[&ref_port.to_string(), "10", "sluice-pool"],
        &[("DATABASE_URL", reference_db.clone())],
        &dir.join("ref.log"),
    )?;
    let reference_default = spawn(
        &release_example("reference_server"),
        &[&default_port.to_string(), "10"],
        &[("DATABASE_URL", reference_db.clone())],
        &dir.join("ref-default.log"),
    )?;
    wait_ready(ref_port, "/users/1", Duration::from_secs(20))?;
    wait_ready(default_port, "/users/1", Duration::from_secs(20))?;
    let w1 = wrk(port, &get_user, c, s)?;
    let r1 = wrk(ref_port, &get_user, c, s)?;
    let d1 = wrk(default_port, &get_user, c, s)?;
    let pgbench_script = dir.join("point.sql");
    std::fs::write(
        &pgbench_script,
        "\\set id random(1, 10000)\nSELECT u.id, u.name, u.email, COALESCE(p.bio, '') AS bio, u.created_at FROM users u LEFT JOIN profiles p ON p.user_id = u.id WHERE u.id = :id;\n",
    )?;
    let pg = Command::new("pgbench")
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            "10",
            "-j",
            "2",
            "-T",
            &s.to_string(),
            "-f",
        ])
        .arg(&pgbench_script)
        .arg(&sluice_db)
        .output()?;
    let pg_tps = String::from_utf8_lossy(&pg.stdout)
        .lines()
        .find(|l| l.starts_with("tps ="))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    let w1_rss = server.peak_rss_mib();
    table.push(row(
        "W1 GET /users/{id}, cache off",
        &w1,
        w1_rss,
        &format!("bare hyper+sqlx {:.0} req/s, p99 {:.2} ms ({:.2}×, p99 {:.2}×); with sqlx's ping per acquire {:.0} req/s ({:.2}×); pgbench {pg_tps:.0} tps", r1.rps, r1.p99_ms, w1.rps / r1.rps, w1.p99_ms / r1.p99_ms, d1.rps, w1.rps / d1.rps),
        check(w1.rps >= 0.95 * r1.rps && w1.p99_ms <= 1.1 * r1.p99_ms),
    ));
    // Open loop, W1: fixed rates of 50% and 80% of the reference's maximum.
    let mut open_table = vec![
        "| workload at a share of the reference's maximum | sluice req/s | sluice p99 / p99.9 ms | reference p99 / p99.9 ms | ratio p99 / p99.9 | failed | goal ≤ 1.2× |".to_owned(),
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |".to_owned(),
    ];
    open_table.extend(crate::open_loop::compare(
        "W1 GET /users/{id}",
        &format!("http://127.0.0.1:{port}/users/[1-9][0-9]{{0,3}}"),
        (
            "bare hyper+sqlx",
            &format!("http://127.0.0.1:{ref_port}/users/[1-9][0-9]{{0,3}}"),
        ),
        r1.rps,
        s,
        c,
    )?);
    // Alternating rounds: a write's tail is a few stalls of the disk,
    // which hit whichever side runs at that moment.
    let (w3s, r3s) = alternate(
        || wrk(port, &post_user, c, s),
        || wrk(ref_port, &post_user, c, s),
    )?;
    let d3 = wrk(default_port, &post_user, c, s)?;
    let (rps3, ref_rps3) = (median(&w3s, |r| r.rps), median(&r3s, |r| r.rps));
    let (p99_3, ref_p99_3) = (median(&w3s, |r| r.p99_ms), median(&r3s, |r| r.p99_ms));
    table.push(row(
        "W3 POST /users (3 rounds, median)",
        middle(&w3s)?,
        server.peak_rss_mib(),
        &format!(
            "bare hyper+sqlx {} req/s, p99 {:.2} ms, sluice {} req/s, p99 {:.2} ms ({:.2}×, p99 {:.2}×); with sqlx's ping per acquire {:.0} req/s ({:.2}×)",
            spread(&r3s),
            ref_p99_3,
            spread(&w3s),
            p99_3,
            rps3 / ref_rps3,
            p99_3 / ref_p99_3,
            d3.rps,
            rps3 / d3.rps
        ),
        check(rps3 >= 0.95 * ref_rps3 && p99_3 <= 1.1 * ref_p99_3),
    ));
    drop(reference);
    drop(reference_default);
    drop(server);

    // W2 with the Redis cache, against redis-benchmark GET.
    let (server, port) = start_server(&dir, "w2.log", |port| server_env(port, true, up0))?;
    let _warm = wrk(port, &get_user, c, 2)?;
    let w2 = wrk(port, &get_user, c, s)?;
    let redis_port = services
        .redis_url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .unwrap_or("6379")
        .to_owned();
    let rb = Command::new("redis-benchmark")
        .args([
            "-p",
            &redis_port,
            "-t",
            "get",
            "-n",
            "200000",
            "-c",
            "64",
            "-q",
        ])
        .output()?;
    let rb_text = String::from_utf8_lossy(&rb.stdout).replace('\r', "\n");
    let redis_rps = rb_text
        .lines()
        .rev()
        .find(|l| l.starts_with("GET:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    table.push(row(
        "W2 GET /users/{id}, Redis cache on",
        &w2,
        server.peak_rss_mib(),
        &format!(
            "redis-benchmark GET {redis_rps:.0} req/s; W2/W1 = {:.2}×",
            w2.rps / w1.rps
        ),
        check(w2.rps >= 2.0 * w1.rps),
    ));
    drop(server);

    // W4 against nginx as a reverse proxy in front of the same 0 ms
    // upstream: three alternating rounds, medians and their spread.
    {
        let (server, port) =
            start_server(&dir, "w4-nginx.log", |port| server_env(port, false, up0))?;
        let (_nginx, nginx_port) = crate::nginx::start(&dir, up0)?;
        // Both open their upstream connections first (2 s each).
        wrk(port, &get_external, c, 2)?;
        wrk(nginx_port, &get_external, c, 2)?;
        let (ours, theirs) = alternate(
            || wrk(port, &get_external, c, s),
            || wrk(nginx_port, &get_external, c, s),
        )?;
        let ratio = median(&ours, |r| r.rps) / median(&theirs, |r| r.rps);
        let mid = middle(&ours)?;
        table.push(row(
            "W4 vs nginx reverse proxy, 0 ms upstream (3 rounds, median)",
            mid,
            server.peak_rss_mib(),
            &format!(
                "nginx proxy_pass + keepalive {} req/s (p99 {:.2} ms), sluice {}; {ratio:.2}×",
                spread(&theirs),
                median(&theirs, |r| r.p99_ms),
                spread(&ours)
            ),
            check(ratio >= 0.8),
        ));
        // Open loop, W4: fixed rates of 50% and 80% of nginx's maximum.
        open_table.extend(crate::open_loop::compare(
            "W4 GET /external-data/{id}, 0 ms upstream",
            &format!("http://127.0.0.1:{port}/external-data/[1-9][0-9]{{0,7}}"),
            (
                "nginx",
                &format!("http://127.0.0.1:{nginx_port}/external-data/[1-9][0-9]{{0,7}}"),
            ),
            median(&theirs, |r| r.rps),
            s,
            c,
        )?);
    }

    // W4 with 0 ms and 20 ms upstreams, against wrk straight at them:
    // three alternating rounds, medians and their spread. A 2 s run first
    // opens the server's upstream connections, as in a server that has
    // been running (the upstream served directly has nothing to open).
    // At 20 ms, nginx in front of the same upstream takes its turn too:
    // what a real proxy loses there (the test upstream's timer answers in
    // millisecond ticks, and 64 closed-loop clients bunch up on them).
    for (upstream, label) in [(up0, "0 ms"), (up20, "20 ms")] {
        let (server, port) =
            start_server(&dir, "w4.log", |port| server_env(port, false, upstream))?;
        wrk(port, &get_external, c, 2)?;
        let nginx = if upstream == up20 {
            let (nginx, nginx_port) = crate::nginx::start(&dir, up20)?;
            wrk(nginx_port, &get_external, c, 2)?;
            Some((nginx, nginx_port))
        } else {
            None
        };
        let mut sluice = || wrk(port, &get_external, c, s);
        let mut direct = || wrk(upstream, &get_direct, c, s);
        let mut sides = match &nginx {
            Some((_, nginx_port)) => rounds(&mut [&mut sluice, &mut direct, &mut || {
                wrk(*nginx_port, &get_external, c, s)
            }])?,
            None => rounds(&mut [&mut sluice, &mut direct])?,
        }
        .into_iter();
        let (Some(ours), Some(direct)) = (sides.next(), sides.next()) else {
            bail!("each side's runs expected");
        };
        let ratio = median(&ours, |r| r.rps) / median(&direct, |r| r.rps);
        // At 0 ms the nginx row above is the goal; at 20 ms the upstream's
        // own latency dominates, and the server should add almost nothing.
        let (goal, proxy) = match sides.next() {
            None => ("– (see the nginx row)", String::new()),
            Some(theirs) => (
                check(ratio >= 0.97),
                format!(
                    "; nginx proxy_pass + keepalive {} req/s (p99 {:.2} ms), {:.2}× direct",
                    spread(&theirs),
                    median(&theirs, |r| r.p99_ms),
                    median(&theirs, |r| r.rps) / median(&direct, |r| r.rps)
                ),
            ),
        };
        table.push(row(
            &format!("W4 GET /external-data/{{id}}, {label} upstream (3 rounds, median)"),
            middle(&ours)?,
            server.peak_rss_mib(),
            &format!(
                "upstream direct {} req/s (p99 {:.2} ms), sluice {}; {ratio:.2}×{proxy}",
                spread(&direct),
                median(&direct, |r| r.p99_ms),
                spread(&ours)
            ),
            goal,
        ));
    }

    // W5: batches of 100 ids against the 20 ms upstream.
    let (server, port) = start_server(&dir, "w5.log", |port| server_env(port, false, up20))?;
    let single = wrk(port, &batch, 1, s)?;
    table.push(row(
        "W5 batch of 100, one at a time",
        &single,
        server.peak_rss_mib(),
        "floor: one upstream latency, 20 ms",
        check(single.p50_ms <= 30.0 && single.p99_ms <= 45.0),
    ));
    // Eight batches at once, and beside them one client of single
    // requests: batches take turns for the in-flight cap, so a single
    // request should wait behind one request per batch, not behind
    // whole batches (about 140 ms first come, first served).
    let (eight, beside) = std::thread::scope(|scope| {
        let singles = scope.spawn(|| wrk(port, &get_external, 1, s));
        let eight = wrk(port, &batch, 8, s);
        let beside = singles
            .join()
            .map_err(|_| anyhow::anyhow!("the wrk thread panicked"))
            .and_then(|run| run);
        (eight, beside)
    });
    let (eight, beside) = (eight?, beside?);
    // The floor the cap sets: 100 requests in flight at a time, each
    // taking the upstream's own latency, which is measured (wrk straight
    // at it with 100 connections, the cap's concurrency) rather than
    // taken as the nominal 20 ms: its timer rounds each sleep up, and a
    // floor it cannot reach itself is no floor.
    let direct = wrk(up20, &get_direct, 100, s)?;
    let floor = direct.rps / 100.0;
    let nominal = 100.0 / (100.0 * 0.020);
    table.push(row(
        "W5 batch of 100, 8 concurrent",
        &eight,
        server.peak_rss_mib(),
        &format!(
            "floor {floor:.1} batches/s (the upstream straight at the cap of 100 connections, {:.0} req/s, ÷ 100 requests per batch); {:.2}× of it, {:.2}× of the nominal {nominal:.0} (20 ms)",
            direct.rps,
            eight.rps / floor,
            eight.rps / nominal
        ),
        check(eight.rps >= 0.9 * floor),
    ));
    table.push(row(
        "W5 single GET /external-data/{id} beside the 8 batches",
        &beside,
        server.peak_rss_mib(),
        "one upstream latency, 20 ms; behind whole batches ≈ 140 ms",
        check(beside.p99_ms <= 45.0),
    ));
    drop(server);

    // Memory over a steady run: RSS after the first minute vs at the end.
    let steady_secs: u64 = std::env::var("SLUICE_BENCH_STEADY_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let (server, port) = start_server(&dir, "steady.log", |port| server_env(port, false, up0))?;
    let first = steady_secs.min(60);
    wrk(port, &get_user, c, first)?;
    let after_first = server.rss_mib();
    if steady_secs > first {
        wrk(port, &get_user, c, steady_secs - first)?;
    }
    let at_end = server.rss_mib();
    drop(server);

    println!(
        "\n## Sluice server benchmark ({} s per run, {} connections, wrk; {} cores)\n",
        s,
        c,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for line in &table {
        println!("{line}");
    }
    println!(
        "\nOpen loop (oha at a fixed rate, latency corrected for coordinated omission; 3 alternating rounds, medians):\n"
    );
    for line in &open_table {
        println!("{line}");
    }
    println!();
    println!("| measure | value | goal |");
    println!("| --- | ---: | --- |");
    println!(
        "| start-up to ready on SQLite (median of 5) | {:.0} ms | ≤ 300 ms: {} |",
        startup.as_secs_f64() * 1000.0,
        check(startup <= Duration::from_millis(300))
    );
    println!(
        "| RSS after {first} s / after {steady_secs} s of W1 | {after_first:.1} / {at_end:.1} MiB ({:+.1}%) | within 5%: {} |",
        (at_end / after_first - 1.0) * 100.0,
        check((at_end / after_first - 1.0).abs() <= 0.05)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
