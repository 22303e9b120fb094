//! Configuration through a map: every variable, every bad value, and the
//! docs rendered from the same tables.

use std::collections::HashMap;
use std::time::Duration;

use super::*;

fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let names: Vec<String> = map.keys().cloned().collect();
    Settings::from_lookup(&names, &move |k: &str| map.get(k).cloned(), 1000)
}

#[test]
fn further_groups_are_read_and_checked() {
    let s = settings(&[
        ("API_INTERNAL_BASE_URL", "http://10.0.0.1:9000"),
        ("API_BILLING_BASE_URL", "https://billing.example.com"),
        ("DB_ANALYTICS_PATH", "/tmp/analytics.db"),
        ("REDIS_SESSIONS_HOST", "sessions"),
    ])
    .unwrap();
    let names: Vec<&str> = s.io.apis.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["billing", "internal"]);
    let dbs: Vec<&str> = s.io.databases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(dbs, ["primary", "analytics"]);
    assert_eq!(s.io.redis[0].name, "sessions");
    assert_eq!(s.io.redis[0].host, "sessions");
    let err = settings(&[
        ("API_INTERNAL_BASE_URL", "http://x"),
        ("API_INTERNAL_TIMEOUT", "never"),
    ])
    .unwrap_err();
    assert_eq!(err.variable, "API_INTERNAL_TIMEOUT");
}

#[test]
fn nothing_configured_means_sqlite_on_localhost() {
    let s = settings(&[]).unwrap();
    assert_eq!(s.bind, SocketAddr::from(([127, 0, 0, 1], 8000)));
    assert_eq!(s.sqlite_path(), Some(PathBuf::from("sluice.db")));
    assert!(s.io.redis.is_empty() && s.io.apis.is_empty());
    assert_eq!(s.io.settings.max_concurrent_requests, 100);
}

#[test]
fn urls_win_and_passwords_stay_out_of_the_description() {
    let s = settings(&[
        ("DATABASE_URL", "postgres://ada:hunter2@db:5432/app"),
        ("DB_POSTGRES_URL", "postgres://other/ignored"),
        ("DB_POSTGRES_HOST", "ignored"),
        ("DB_POSTGRES_POOL_SIZE", "20"),
        ("REDIS_URL", "redis://:hunter2@cache:6379/0"),
        (
            "API_EXTERNAL_BASE_URL",
            "https://user:hunter2@api.example.com",
        ),
        ("SLUICE_AUTH_TOKENS", "a, b"),
    ])
    .unwrap();
    let primary = s.primary().unwrap();
    assert_eq!(primary.kind, Kind::Postgres);
    assert_eq!(primary.pool_size, 20);
    assert!(
        primary
            .url
            .as_ref()
            .unwrap()
            .expose()
            .contains("db:5432/app")
    );
    assert_eq!(s.server.auth_tokens.len(), 2);
    let line = s.describe();
    assert!(!line.contains("hunter2"), "{line}");
    assert!(
        line.contains("db:5432/app") && line.contains("auth on"),
        "{line}"
    );
    assert!(!format!("{s:?}").contains("hunter2"));
}

#[test]
fn upstream_deadlines_end_before_the_request() {
    let s = settings(&[
        ("API_EXTERNAL_BASE_URL", "http://127.0.0.1:1"),
        ("IO_REQUEST_TIMEOUT", "10"),
        ("API_EXTERNAL_TIMEOUT", "20"),
    ])
    .unwrap();
    let api = &s.io.apis[0];
    assert_eq!(api.deadline, Duration::from_secs(9));
    assert_eq!(api.timeout, Duration::from_secs(9));
}

#[test]
fn a_bad_read_replica_url_names_its_variable_without_quoting_it() {
    let err = settings(&[
        ("DATABASE_URL", "postgres://app@db/app"),
        (
            "DB_POSTGRES_READ_URL",
            "postgres://r:s3cret@r1,r2/db?sslmode=bogus",
        ),
    ])
    .unwrap_err();
    assert_eq!(err.variable, "DB_POSTGRES_READ_URL", "{err}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

#[test]
fn a_bad_value_names_its_variable() {
    for (key, value, named) in [
        ("SLUICE_BIND", "localhost", "SLUICE_BIND"),
        ("DATABASE_URL", "mysql://x/y", "DATABASE_URL"),
        ("DATABASE_URL", "sqlite://x.db", "DATABASE_URL"),
        (
            "DATABASE_URL",
            "postgres://u:pw@h1,h2/db?target_session_attrs=standby",
            "DATABASE_URL",
        ),
        (
            "DATABASE_URL",
            "postgres://u:pw@h1:99999,h2/db",
            "DATABASE_URL",
        ),
        ("DB_POSTGRES_HOST", "h1,,h2", "DB_POSTGRES_HOST"),
        ("DB_POSTGRES_HOST", "db", "none"),
        (
            "IO_MAX_CONCURRENT_REQUESTS",
            "lots",
            "IO_MAX_CONCURRENT_REQUESTS",
        ),
        ("IO_REQUEST_TIMEOUT", "-3", "IO_REQUEST_TIMEOUT"),
        ("SLUICE_MAX_BODY_BYTES", "1MB", "SLUICE_MAX_BODY_BYTES"),
        (
            "API_EXTERNAL_BASE_URL",
            "not a url",
            "API_EXTERNAL_BASE_URL",
        ),
        ("REDIS_PORT", "x", "none"),
        ("SLUICE_TLS_CERT", "cert.pem", "SLUICE_TLS_KEY"),
        ("SLUICE_AUTH_TOKENS", " , ", "SLUICE_AUTH_TOKENS"),
        ("API_EXTERNAL_CACHE_TTL", "-1", "API_EXTERNAL_CACHE_TTL"),
    ] {
        let mut pairs = vec![(key, value)];
        if named == "none" {
            // Valid alone; pair it with a broken companion.
            pairs.push(if key == "DB_POSTGRES_HOST" {
                ("DB_POSTGRES_PORT", "99999")
            } else {
                ("REDIS_HOST", "cache")
            });
            let err = settings(&pairs).unwrap_err();
            assert!(err.variable.ends_with("_PORT"), "{err}");
            continue;
        }
        let err = settings(&pairs).unwrap_err();
        assert_eq!(err.variable, named, "{err}");
        assert!(!err.to_string().contains(value) || value.len() < 3, "{err}");
    }
}

/// A value of the wrong shape for each type; `None` where any text goes.
fn bad_value(ty: ValueType) -> Option<&'static str> {
    Some(match ty {
        ValueType::Text | ValueType::List => return None,
        ValueType::Url => "mysql://nowhere",
        ValueType::Seconds | ValueType::SecondsOrZero => "-1",
        ValueType::Count | ValueType::CountOrZero => "many",
        ValueType::Port => "70000",
        ValueType::Bool => "maybe",
        ValueType::Fraction => "1.5",
        ValueType::Choice(_) => "bogus",
        ValueType::JsonObject => "[1]",
        ValueType::Nodes => "nohost",
        ValueType::Address => "localhost",
        _ => return None,
    })
}

/// The variable of `pattern` for a concrete group, and what else must be
/// set for that group to exist.
fn concrete(pattern: &str) -> (String, Vec<(String, String)>) {
    let name = pattern.replace("<NAME>", "EXTRA");
    let marker = if name.starts_with("DB_EXTRA_") {
        ("DB_EXTRA_HOST", "db")
    } else if name.starts_with("REDIS_EXTRA_") {
        ("REDIS_EXTRA_HOST", "cache")
    } else if name.starts_with("API_EXTRA_") {
        ("API_EXTRA_BASE_URL", "http://127.0.0.1:1")
    } else {
        return (name, Vec::new());
    };
    let mut companions = vec![(marker.0.to_owned(), marker.1.to_owned())];
    if name.ends_with("SENTINEL_SERVICE") {
        companions.push(("REDIS_EXTRA_SENTINEL_NODES".into(), "s:26379".into()));
    }
    if name == "REDIS_EXTRA_URL" {
        companions.clear();
    }
    (name, companions)
}

#[test]
fn every_bad_value_of_every_variable_is_rejected_naming_it() {
    let mut checked = 0;
    for v in TABLES.iter().flat_map(|t| t.iter()) {
        let Some(bad) = bad_value(v.ty) else { continue };
        let (name, companions) = concrete(v.name);
        let mut pairs: Vec<(String, String)> =
            companions.into_iter().filter(|(k, _)| *k != name).collect();
        pairs.push((name.clone(), bad.to_owned()));
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let err = settings(&refs).expect_err(&name);
        assert_eq!(err.variable, name, "{name}={bad}: {err}");
        checked += 1;
    }
    assert!(checked > 50, "{checked}");
}

#[test]
fn every_variable_of_the_table_is_read() {
    // A good value for each variable, set at once: any variable the
    // parser does not read through the table would fail the reader's own
    // check, and the values land where they should.
    let s = settings(&[
        ("DB_POSTGRES_HOST", "db"),
        ("DB_POSTGRES_PORT", "6432"),
        ("DB_POSTGRES_DATABASE", "app"),
        ("DB_POSTGRES_USERNAME", "ada"),
        ("DB_POSTGRES_PASSWORD", "hunter2"),
        ("DB_POSTGRES_POOL_SIZE", "20"),
        ("DB_POSTGRES_MAX_OVERFLOW", "5"),
        ("DB_POSTGRES_MIN_IDLE", "2"),
        ("DB_POSTGRES_TIMEOUT", "7"),
        ("DB_POSTGRES_CONNECT_TIMEOUT", "0.5"),
        ("DB_POSTGRES_COMMAND_TIMEOUT", "3"),
        ("DB_POSTGRES_IDLE_TIMEOUT", "30"),
        ("DB_POSTGRES_MAX_LIFETIME", "600"),
        ("DB_POSTGRES_LIFETIME_JITTER", "0.25"),
        ("DB_POSTGRES_SSL", "require"),
        ("DB_POSTGRES_SSL_VERIFY", "false"),
        ("DB_POSTGRES_SSL_CA", "/ca.pem"),
        ("DB_POSTGRES_SSL_CERT", "/c.pem"),
        ("DB_POSTGRES_SSL_KEY", "/k.pem"),
        ("DB_POSTGRES_RETRY_ATTEMPTS", "4"),
        ("DB_POSTGRES_RETRY_DELAY", "0.2"),
        ("DB_POSTGRES_PGBOUNCER", "true"),
        (
            "DB_POSTGRES_READ_URL",
            "postgres://ro:s3cret@db2:5432,db3/app",
        ),
        ("DB_LOCAL_KIND", "sqlite"),
        ("DB_LOCAL_PATH", ":memory:"),
        ("DB_REPORTS_URL", "postgres://r@h/reports"),
        ("REDIS_HOST", "cache"),
        ("REDIS_PORT", "6380"),
        ("REDIS_DATABASE", "2"),
        ("REDIS_USERNAME", "u"),
        ("REDIS_PASSWORD", "hunter2"),
        ("REDIS_POOL_SIZE", "4"),
        ("REDIS_TIMEOUT", "2"),
        ("REDIS_CONNECT_TIMEOUT", "3"),
        ("REDIS_COMMAND_TIMEOUT", "0.5"),
        ("REDIS_SSL", "verify-full"),
        ("REDIS_SSL_VERIFY", "true"),
        ("REDIS_SSL_CA", "/ca.pem"),
        ("REDIS_SSL_CERT", "/c.pem"),
        ("REDIS_SSL_KEY", "/k.pem"),
        ("REDIS_RETRY_ATTEMPTS", "2"),
        ("REDIS_RETRY_DELAY", "0.3"),
        ("REDIS_RING_CLUSTER_NODES", "a:7000,b:7001"),
        ("REDIS_HA_SENTINEL_SERVICE", "mymaster"),
        ("REDIS_HA_SENTINEL_NODES", "s1:26379"),
        ("REDIS_OTHER_URL", "redis://other:6379"),
        ("API_EXTERNAL_BASE_URL", "https://api.example.com"),
        ("API_EXTERNAL_TIMEOUT", "4"),
        ("API_EXTERNAL_DEADLINE", "12"),
        ("API_EXTERNAL_SSL_VERIFY", "false"),
        ("API_EXTERNAL_SSL_CA", "/ca.pem"),
        ("API_EXTERNAL_TOKEN", "t0ken"),
        ("API_EXTERNAL_HEADERS", r#"{"x-team":"io"}"#),
        ("API_EXTERNAL_MAX_CONNECTIONS", "7"),
        ("API_EXTERNAL_MAX_BODY_BYTES", "1000"),
        ("API_EXTERNAL_MAX_BATCH_BYTES", "2000"),
        ("API_EXTERNAL_RETRY_ATTEMPTS", "5"),
        ("API_EXTERNAL_RETRY_DELAY", "0.1"),
        ("API_EXTERNAL_CACHE_TTL", "9"),
        ("IO_RETRY_ATTEMPTS", "6"),
        ("IO_RETRY_DELAY", "0.4"),
        ("IO_MAX_CONCURRENT_REQUESTS", "50"),
        ("IO_REQUEST_TIMEOUT", "20"),
        ("IO_MAX_BATCH_SIZE", "300"),
        ("SLUICE_BIND", "127.0.0.1:9000"),
        ("SLUICE_MAX_BODY_BYTES", "4096"),
        ("SLUICE_MAX_CONCURRENCY", "64"),
        ("SLUICE_MAX_CONNECTIONS", "128"),
        ("SLUICE_AUTH_TOKENS", "tok"),
        ("SLUICE_USER_CACHE_TTL", "5"),
        ("SLUICE_SHUTDOWN_GRACE", "3"),
        ("SLUICE_SHUTDOWN_LINGER", "0"),
        ("SLUICE_HEADER_READ_TIMEOUT", "2"),
        ("SLUICE_IDLE_TIMEOUT", "6"),
        ("SLUICE_BODY_READ_TIMEOUT", "8"),
        ("SLUICE_TLS_CERT", "/cert.pem"),
        ("SLUICE_TLS_KEY", "/key.pem"),
        ("RUST_LOG", "debug"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
        ("OTEL_SERVICE_NAME", "edge-7"),
    ])
    .unwrap();
    let traces = s.traces.clone().unwrap();
    assert_eq!(traces.endpoint, "http://collector:4318/v1/traces");
    assert_eq!(traces.service_name, "edge-7");
    let p = s.primary().unwrap();
    assert_eq!(
        (p.host.as_str(), p.port, p.database.as_deref()),
        ("db", Some(6432), Some("app"))
    );
    assert_eq!(
        (
            p.username.as_deref(),
            p.password.as_ref().map(|x| x.expose().as_str())
        ),
        (Some("ada"), Some("hunter2"))
    );
    assert_eq!((p.pool_size, p.max_overflow, p.min_idle), (20, 5, 2));
    assert_eq!(p.acquire_timeout, Duration::from_secs(7));
    assert_eq!(p.connect_timeout, Duration::from_millis(500));
    assert_eq!(p.command_timeout, Some(Duration::from_secs(3)));
    assert_eq!(
        (p.idle_timeout, p.max_lifetime),
        (Duration::from_secs(30), Duration::from_secs(600))
    );
    assert_eq!(p.lifetime_jitter, 0.25);
    assert_eq!(p.tls.mode, sluice_pool::TlsMode::RequireNoVerify);
    assert_eq!(p.tls.ca_file, Some(PathBuf::from("/ca.pem")));
    assert_eq!(
        (p.tls.client_cert.clone(), p.tls.client_key.clone()),
        (Some("/c.pem".into()), Some("/k.pem".into()))
    );
    assert_eq!(
        (p.retry_attempts, p.retry_delay),
        (4, Duration::from_millis(200))
    );
    assert!(p.pgbouncer);
    assert_eq!(
        p.read_replica_url.as_ref().map(|u| u.expose().as_str()),
        Some("postgres://ro:s3cret@db2:5432,db3/app")
    );
    assert!(!format!("{p:?}").contains("s3cret"));
    let db = |n: &str| s.io.databases.iter().find(|c| c.name == n).unwrap();
    assert_eq!(db("local").kind, Kind::Sqlite);
    assert_eq!(db("local").database.as_deref(), Some(":memory:"));
    assert_eq!(db("local").retry_attempts, 6);
    assert!(db("reports").url.is_some());
    let redis = |n: &str| s.io.redis.iter().find(|c| c.name == n).unwrap();
    let r = redis("redis");
    assert_eq!(
        (
            r.host.as_str(),
            r.port,
            r.database.as_deref(),
            r.username.as_deref()
        ),
        ("cache", Some(6380), Some("2"), Some("u"))
    );
    assert_eq!(
        (r.pool_size, r.command_timeout),
        (4, Some(Duration::from_millis(500)))
    );
    assert_eq!(
        (r.acquire_timeout, r.connect_timeout),
        (Duration::from_secs(2), Duration::from_secs(3))
    );
    assert_eq!(r.tls.mode, sluice_pool::TlsMode::VerifyFull);
    assert_eq!(
        (r.retry_attempts, r.retry_delay),
        (2, Duration::from_millis(300))
    );
    assert!(r.tls.client_cert.is_some() && r.password.is_some());
    assert!(
        matches!(&redis("ring").redis_topology, sluice_pool::RedisTopology::Cluster { nodes } if nodes.len() == 2)
    );
    assert!(
        matches!(&redis("ha").redis_topology, sluice_pool::RedisTopology::Sentinel { service, .. } if service == "mymaster")
    );
    assert!(redis("other").url.is_some());
    let a = &s.io.apis[0];
    assert_eq!(
        (a.timeout, a.deadline),
        (Duration::from_secs(4), Duration::from_secs(12))
    );
    assert!(!a.ssl_verify && a.ca_file.is_some());
    assert_eq!(a.headers.len(), 2);
    assert_eq!(
        (a.max_connections, a.max_body_bytes, a.max_batch_bytes),
        (7, 1000, 2000)
    );
    assert_eq!(
        (a.retry_attempts, a.retry_delay),
        (5, Duration::from_millis(100))
    );
    let io = &s.io.settings;
    assert_eq!(
        (
            io.retry_attempts,
            io.max_concurrent_requests,
            io.max_batch_size
        ),
        (6, 50, 300)
    );
    assert_eq!(
        (io.retry_delay, io.request_timeout),
        (Duration::from_millis(400), Duration::from_secs(20))
    );
    let sv = &s.server;
    assert_eq!(s.bind, SocketAddr::from(([127, 0, 0, 1], 9000)));
    assert_eq!(
        (
            sv.max_body_bytes,
            sv.max_concurrency,
            sv.max_connections,
            sv.max_batch_size
        ),
        (4096, 64, 128, 300)
    );
    assert_eq!(sv.auth_tokens.len(), 1);
    assert_eq!(
        (sv.user_cache_ttl, sv.external_cache_ttl),
        (Duration::from_secs(5), Duration::from_secs(9))
    );
    assert_eq!(
        (sv.shutdown_grace, sv.shutdown_linger),
        (Duration::from_secs(3), Duration::ZERO)
    );
    assert_eq!(
        (
            sv.header_read_timeout,
            sv.idle_timeout,
            sv.body_read_timeout
        ),
        (
            Duration::from_secs(2),
            Duration::from_secs(6),
            Duration::from_secs(8)
        )
    );
    assert_eq!(sv.request_timeout, Duration::from_secs(20));
    assert!(s.tls.is_some());
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("t0ken"),
        "{shown}"
    );
}

#[test]
fn help_lists_every_variable_of_the_tables() {
    let help = help();
    for v in TABLES.iter().flat_map(|t| t.iter()) {
        let shown = server_group(v.name);
        assert!(
            help.contains(&format!("  {shown} ")),
            "--help lacks {shown}"
        );
    }
    // The ones the last --help forgot.
    for name in [
        "REDIS_PASSWORD",
        "DB_POSTGRES_MIN_IDLE",
        "API_EXTERNAL_DEADLINE",
        "API_EXTERNAL_SSL_CA",
    ] {
        assert!(help.contains(name), "{name}");
    }
}

/// README.md's configuration table is the one rendered from the tables.
/// `SLUICE_BLESS=1 cargo test -p sluice-server readme` rewrites it.
#[test]
fn readme_configuration_table_matches_the_tables() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let (begin, end) = ("<!-- config-table:begin -->\n", "<!-- config-table:end -->");
    let start = readme
        .find(begin)
        .expect("README.md has a config-table:begin marker")
        + begin.len();
    let stop = readme
        .find(end)
        .expect("README.md has a config-table:end marker");
    let expected = sluice_io::markdown(TABLES);
    if readme[start..stop] != expected {
        if std::env::var_os("SLUICE_BLESS").is_some() {
            let updated = format!("{}{expected}{}", &readme[..start], &readme[stop..]);
            std::fs::write(path, updated).expect("write README.md");
        } else {
            panic!(
                "README.md's configuration table differs from the tables: run SLUICE_BLESS=1 cargo test -p sluice-server readme"
            );
        }
    }
}
