//! Throw-away Redis Cluster (3 masters, 3 replicas) and Sentinel groups
//! (one master, one replica, three sentinels) on 127.0.0.1, from Debian's
//! `redis-server`/`redis-cli`: the engines of the scale-out tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{ProvisionError, any_port, failed, spawn_error, unique_dir, wait_for_port};

/// One `redis-server` (or sentinel) process with a directory of its own.
#[derive(Debug)]
struct Node {
    port: u16,
    child: Option<Child>,
}

impl Node {
    fn spawn(dir: &Path, port: u16, args: &[String]) -> Result<Self, ProvisionError> {
        std::fs::create_dir_all(dir).map_err(|e| failed(format!("node dir: {e}")))?;
        let child = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            // Replicas sync at once (Redis 7 waits 5 s for more of them
            // before a diskless transfer): a replica that has never synced
            // does not stand for election when its master dies.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| spawn_error(e, "redis-server", "apt-get install -y redis-server"))?;
        let node = Self {
            port,
            child: Some(child),
        };
        if wait_for_port(port, Duration::from_secs(10)) {
            Ok(node)
        } else {
            Err(failed(format!(
                "redis on {port} did not listen within 10 s"
            )))
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-cli -p port args…`, its output.
fn cli(port: u16, args: &[&str]) -> Result<String, ProvisionError> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(format!("redis-cli: {e}")))?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The number after `name:` in `INFO` output (`master_repl_offset`, …).
fn info_number(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

fn wait_until(
    what: &str,
    within: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<Duration, ProvisionError> {
    let started = Instant::now();
    while started.elapsed() < within {
        if done() {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(failed(format!("{what}: not within {within:?}")))
}

/// A Redis Cluster of three masters with one replica each, node timeout
/// 1 s; all processes are killed and their files removed on drop.
#[derive(Debug)]
pub struct TempRedisCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

impl TempRedisCluster {
    /// Starts six nodes and joins them (`redis-cli --cluster create
    /// --cluster-replicas 1`), then waits for `cluster_state:ok`.
    pub fn start() -> Result<Self, ProvisionError> {
        let dir = unique_dir("sluice-redis-cluster").map_err(|e| failed(format!("dir: {e}")))?;
        let mut cluster = Self {
            dir,
            nodes: Vec::new(),
        };
        for i in 0..6 {
            let node_dir = cluster.dir.join(format!("n{i}"));
            let port = any_port()?;
            // The bus port is usually port + 10000, which may be taken or
            // beyond 65535 for an ephemeral port: pick one.
            let bus = any_port()?;
            let args = vec![
                "--cluster-enabled".to_owned(),
                "yes".to_owned(),
                "--cluster-port".to_owned(),
                bus.to_string(),
                "--cluster-config-file".to_owned(),
                node_dir.join("nodes.conf").display().to_string(),
                "--cluster-node-timeout".to_owned(),
                "1000".to_owned(),
            ];
            cluster.nodes.push(Node::spawn(&node_dir, port, &args)?);
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| failed(format!("redis-cli --cluster create: {e}")))?;
        if !output.status.success() {
            return Err(failed(format!(
                "redis-cli --cluster create: {}",
                String::from_utf8_lossy(&output.stdout)
            )));
        }
        cluster.wait_ok(Duration::from_secs(20))?;
        wait_until("every replica synced", Duration::from_secs(20), || {
            cluster.nodes.iter().all(|n| {
                cli(n.port, &["info", "replication"])
                    .is_ok_and(|i| i.contains("role:master") || i.contains("master_link_status:up"))
            })
        })?;
        Ok(cluster)
    }

    /// Waits until every live node reports `cluster_state:ok` and knows
    /// three masters; how long that took.
    pub fn wait_ok(&self, within: Duration) -> Result<Duration, ProvisionError> {
        wait_until("cluster_state:ok", within, || {
            self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                cli(n.port, &["cluster", "info"]).is_ok_and(|i| i.contains("cluster_state:ok"))
            }) && self.masters().len() == 3
        })
    }

    /// Waits until a replica has taken over from the killed master on
    /// `victim` and the cluster is whole again; how long that took.
    pub fn wait_failed_over(
        &self,
        victim: u16,
        within: Duration,
    ) -> Result<Duration, ProvisionError> {
        wait_until("a replica took over", within, || {
            let masters = self.masters();
            masters.len() == 3 && !masters.contains(&victim)
        })
        .map_err(|e| {
            let nodes = self
                .nodes
                .iter()
                .find(|n| n.child.is_some())
                .and_then(|n| cli(n.port, &["cluster", "nodes"]).ok())
                .unwrap_or_default();
            failed(format!("{e}; cluster nodes:\n{nodes}"))
        })?;
        self.wait_ok(within)
    }

    /// Waits until every replica of the master on `port` is online and
    /// has every write the master has (the master's `INFO replication`:
    /// each `slaveN` line's offset against `master_repl_offset`; replicas
    /// report theirs about once a second). Replication is asynchronous: a
    /// master killed before this holds may take writes with it.
    pub fn wait_replicated(&self, port: u16, within: Duration) -> Result<Duration, ProvisionError> {
        wait_until("the master's replicas caught up", within, || {
            let Ok(info) = cli(port, &["info", "replication"]) else {
                return false;
            };
            let Some(written) = info_number(&info, "master_repl_offset") else {
                return false;
            };
            let replicas: Vec<&str> = info
                .lines()
                .filter(|l| l.starts_with("slave") && l.contains("state="))
                .collect();
            !replicas.is_empty()
                && replicas.iter().all(|l| {
                    l.contains("state=online")
                        && l.split(',')
                            .find_map(|f| f.strip_prefix("offset="))
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .is_some_and(|offset| offset >= written)
                })
        })
    }

    /// Ports of the live masters, as the first live node sees them.
    pub fn masters(&self) -> Vec<u16> {
        let Some(node) = self.nodes.iter().find(|n| n.child.is_some()) else {
            return Vec::new();
        };
        let nodes = cli(node.port, &["cluster", "nodes"]).unwrap_or_default();
        nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .filter_map(|l| {
                let address = l.split_whitespace().nth(1)?;
                address.split(['@', ':']).nth(1)?.parse().ok()
            })
            .collect()
    }

    /// Kills the master on `port` (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            node.kill();
        }
    }

    /// Every node's port.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// A `redis-cluster://` URL naming every node as a seed (fred's form:
    /// the first in the authority, the others as `node=` parameters).
    pub fn url(&self) -> String {
        let mut ports = self.nodes.iter().map(|n| n.port);
        let first = ports.next().unwrap_or(0);
        let others: Vec<String> = ports.map(|p| format!("node=127.0.0.1:{p}")).collect();
        format!("redis-cluster://127.0.0.1:{first}?{}", others.join("&"))
    }
}

impl Drop for TempRedisCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The service name the sentinels monitor.
pub const SENTINEL_SERVICE: &str = "sluice";

/// One master, one replica and three sentinels (quorum 2, master down
/// after 1 s); killed and removed on drop.
#[derive(Debug)]
pub struct TempRedisSentinel {
    dir: PathBuf,
    servers: Vec<Node>,
    sentinels: Vec<Node>,
}

impl TempRedisSentinel {
    /// Starts the group and waits until every sentinel knows the master
    /// and its replica.
    pub fn start() -> Result<Self, ProvisionError> {
        let dir = unique_dir("sluice-redis-sentinel").map_err(|e| failed(format!("dir: {e}")))?;
        let mut group = Self {
            dir,
            servers: Vec::new(),
            sentinels: Vec::new(),
        };
        let master_port = any_port()?;
        group
            .servers
            .push(Node::spawn(&group.dir.join("master"), master_port, &[])?);
        let replica_port = any_port()?;
        let replica_of = vec![
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            master_port.to_string(),
        ];
        group.servers.push(Node::spawn(
            &group.dir.join("replica"),
            replica_port,
            &replica_of,
        )?);
        for i in 0..3 {
            let sentinel_dir = group.dir.join(format!("sentinel{i}"));
            std::fs::create_dir_all(&sentinel_dir).map_err(|e| failed(format!("dir: {e}")))?;
            let port = any_port()?;
            // Sentinels rewrite their configuration file: one each.
            let config = sentinel_dir.join("sentinel.conf");
            std::fs::write(
                &config,
                format!(
                    "sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
                     sentinel failover-timeout {SENTINEL_SERVICE} 5000\n\
                     sentinel parallel-syncs {SENTINEL_SERVICE} 1\n"
                ),
            )
            .map_err(|e| failed(format!("sentinel.conf: {e}")))?;
            let args = vec![config.display().to_string(), "--sentinel".to_owned()];
            group
                .sentinels
                .push(Node::spawn(&sentinel_dir, port, &args)?);
        }
        wait_until("sentinels see the replica", Duration::from_secs(20), || {
            group.sentinels.iter().all(|s| {
                cli(s.port, &["sentinel", "replicas", SENTINEL_SERVICE])
                    .is_ok_and(|r| r.contains(&replica_port.to_string()))
            })
        })?;
        group.wait_replicated(Duration::from_secs(20))?;
        Ok(group)
    }

    /// Waits until the replica is linked to the master and has every
    /// write the master has (`INFO replication` offsets), at most `within`.
    pub fn wait_replicated(&self, within: Duration) -> Result<Duration, ProvisionError> {
        let field = |port: u16, name: &str| -> Option<u64> {
            info_number(&cli(port, &["info", "replication"]).ok()?, name)
        };
        let master = self.master_port();
        let replica = self
            .servers
            .iter()
            .map(|n| n.port)
            .find(|p| Some(*p) != master);
        wait_until("the replica caught up", within, || {
            let (Some(master), Some(replica)) = (master, replica) else {
                return false;
            };
            let linked = cli(replica, &["info", "replication"])
                .is_ok_and(|i| i.contains("master_link_status:up"));
            linked
                && matches!(
                    (field(master, "master_repl_offset"), field(replica, "slave_repl_offset")),
                    (Some(m), Some(r)) if r >= m
                )
        })
    }

    /// The port of the master the sentinels name now.
    pub fn master_port(&self) -> Option<u16> {
        let sentinel = self.sentinels.first()?;
        let reply = cli(
            sentinel.port,
            &["sentinel", "get-master-addr-by-name", SENTINEL_SERVICE],
        )
        .ok()?;
        reply.lines().nth(1)?.trim().parse().ok()
    }

    /// Kills the current master (SIGKILL).
    pub fn kill_master(&mut self) -> Option<u16> {
        let port = self.master_port()?;
        let node = self.servers.iter_mut().find(|n| n.port == port)?;
        node.kill();
        Some(port)
    }

    /// A `redis-sentinel://` URL naming the three sentinels.
    pub fn url(&self) -> String {
        let mut ports = self.sentinels.iter().map(|n| n.port);
        let first = ports.next().unwrap_or(0);
        let others: String = ports.map(|p| format!("&node=127.0.0.1:{p}")).collect();
        format!(
            "redis-sentinel://127.0.0.1:{first}/0?sentinelServiceName={SENTINEL_SERVICE}{others}"
        )
    }
}

impl Drop for TempRedisSentinel {
    fn drop(&mut self) {
        self.sentinels.clear();
        self.servers.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
