//! The table of every variable the I/O layer reads: name, type, default,
//! meaning, and whether its value is a secret. Parsing goes through this
//! table ([`crate::Reader`] refuses a name it does not list), and the
//! server's `--help` and README's configuration table are rendered from it,
//! so the three cannot drift apart.

/// What a variable's value must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueType {
    /// Free text (a host, a name, a path).
    Text,
    /// A URL.
    Url,
    /// A decimal number of seconds greater than 0 (`0.25`, `30`).
    Seconds,
    /// A decimal number of seconds, where 0 means "off".
    SecondsOrZero,
    /// A whole number from 1 up.
    Count,
    /// A whole number from 0 up.
    CountOrZero,
    /// A TCP port, 1 to 65535.
    Port,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Bool,
    /// A fraction from 0 to 1.
    Fraction,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// A JSON object of strings.
    JsonObject,
    /// `host:port,host:port`.
    Nodes,
    /// A socket address, `ip:port`.
    Address,
    /// A comma-separated list.
    List,
}

impl ValueType {
    /// A short description for `--help` and the docs.
    pub fn describe(self) -> String {
        match self {
            ValueType::Text => "text".into(),
            ValueType::Url => "URL".into(),
            ValueType::Seconds => "seconds".into(),
            ValueType::SecondsOrZero => "seconds, 0 = off".into(),
            ValueType::Count => "count".into(),
            ValueType::CountOrZero => "count, may be 0".into(),
            ValueType::Port => "port".into(),
            ValueType::Bool => "bool".into(),
            ValueType::Fraction => "0..1".into(),
            ValueType::Choice(words) => words.join("|"),
            ValueType::JsonObject => "JSON object".into(),
            ValueType::Nodes => "host:port,…".into(),
            ValueType::Address => "ip:port".into(),
            ValueType::List => "a,b,…".into(),
        }
    }
}

/// One variable. `<NAME>` in a name stands for a group's name: any number
/// of groups may be configured (`DB_POSTGRES_*`, `DB_ANALYTICS_*`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variable {
    /// The name, with `<NAME>` for a group.
    pub name: &'static str,
    /// What its value must look like.
    pub ty: ValueType,
    /// The default, as text; empty when there is none.
    pub default: &'static str,
    /// What it does.
    pub meaning: &'static str,
    /// Its value is never logged, echoed in errors or shown by `Debug`.
    pub secret: bool,
}

impl Variable {
    /// A variable whose value may be shown.
    pub const fn new(
        name: &'static str,
        ty: ValueType,
        default: &'static str,
        meaning: &'static str,
    ) -> Self {
        Self {
            name,
            ty,
            default,
            meaning,
            secret: false,
        }
    }

    /// A variable whose value is a secret (it has no default).
    pub const fn secret(name: &'static str, ty: ValueType, meaning: &'static str) -> Self {
        Self {
            name,
            ty,
            default: "",
            meaning,
            secret: true,
        }
    }
}

const fn var(
    name: &'static str,
    ty: ValueType,
    default: &'static str,
    meaning: &'static str,
) -> Variable {
    Variable::new(name, ty, default, meaning)
}

const fn secret(name: &'static str, ty: ValueType, meaning: &'static str) -> Variable {
    Variable::secret(name, ty, meaning)
}

const SSL_MODES: &[&str] = &["disable", "prefer", "require", "verify-full"];

/// Every variable of the I/O layer, in the order the docs show them.
pub const VARIABLES: &[Variable] = &[
    // Named SQL databases.
    secret(
        "DB_<NAME>_URL",
        ValueType::Url,
        "connection URL (postgres://… or sqlite://…); wins over the parts; several PostgreSQL hosts as h1:5432,h2:5432 with ?target_session_attrs=read-write for failover (docs/SCALING.md); configures the group",
    ),
    var(
        "DB_<NAME>_HOST",
        ValueType::Text,
        "127.0.0.1",
        "PostgreSQL host, or several (h1,h2:5433) tried in order; configures the group",
    ),
    var(
        "DB_<NAME>_PATH",
        ValueType::Text,
        "",
        "SQLite file (:memory: for memory); configures the group as SQLite",
    ),
    var(
        "DB_<NAME>_KIND",
        ValueType::Choice(&["postgresql", "sqlite"]),
        "postgresql",
        "backend of a group configured by parts",
    ),
    var("DB_<NAME>_PORT", ValueType::Port, "5432", "PostgreSQL port"),
    var("DB_<NAME>_DATABASE", ValueType::Text, "", "database name"),
    var("DB_<NAME>_USERNAME", ValueType::Text, "", "user"),
    secret("DB_<NAME>_PASSWORD", ValueType::Text, "password"),
    var(
        "DB_<NAME>_POOL_SIZE",
        ValueType::Count,
        "10",
        "connections kept for the pool (warm under load)",
    ),
    var(
        "DB_<NAME>_MAX_OVERFLOW",
        ValueType::CountOrZero,
        "0",
        "further connections opened under load, closed after DB_<NAME>_IDLE_TIMEOUT idle",
    ),
    var(
        "DB_<NAME>_MIN_IDLE",
        ValueType::CountOrZero,
        "1",
        "connections opened at start and kept when idle",
    ),
    var(
        "DB_<NAME>_TIMEOUT",
        ValueType::Seconds,
        "5",
        "wait for a free connection, and connect unless set below",
    ),
    var(
        "DB_<NAME>_CONNECT_TIMEOUT",
        ValueType::Seconds,
        "2",
        "open one connection; a server that never answers is found down after it",
    ),
    var(
        "DB_<NAME>_COMMAND_TIMEOUT",
        ValueType::Seconds,
        "",
        "PostgreSQL statement_timeout",
    ),
    var(
        "DB_<NAME>_IDLE_TIMEOUT",
        ValueType::Seconds,
        "600",
        "an idle connection beyond MIN_IDLE closes after this",
    ),
    var(
        "DB_<NAME>_MAX_LIFETIME",
        ValueType::Seconds,
        "1800",
        "a connection is replaced after this long",
    ),
    var(
        "DB_<NAME>_LIFETIME_JITTER",
        ValueType::Fraction,
        "0.1",
        "each connection's lifetime is shortened by up to this fraction, so they do not all expire at once",
    ),
    var(
        "DB_<NAME>_SSL",
        ValueType::Choice(SSL_MODES),
        "disable",
        "TLS: require and verify-full verify the certificate",
    ),
    var(
        "DB_<NAME>_SSL_VERIFY",
        ValueType::Bool,
        "true",
        "false: TLS without certificate checks (test rigs only)",
    ),
    var(
        "DB_<NAME>_SSL_CA",
        ValueType::Text,
        "",
        "PEM file of CA certificates to trust",
    ),
    var(
        "DB_<NAME>_SSL_CERT",
        ValueType::Text,
        "",
        "PEM client certificate (with DB_<NAME>_SSL_KEY)",
    ),
    var(
        "DB_<NAME>_SSL_KEY",
        ValueType::Text,
        "",
        "PEM client private key",
    ),
    var(
        "DB_<NAME>_RETRY_ATTEMPTS",
        ValueType::Count,
        "IO_RETRY_ATTEMPTS",
        "connect attempts at start",
    ),
    var(
        "DB_<NAME>_RETRY_DELAY",
        ValueType::Seconds,
        "IO_RETRY_DELAY",
        "delay between connect attempts and outage probes",
    ),
    var(
        "DB_<NAME>_PGBOUNCER",
        ValueType::Bool,
        "false",
        "behind PgBouncer in transaction pooling: unnamed statements, each in a transaction of its own; migrations without sqlx's lock",
    ),
    secret(
        "DB_<NAME>_READ_URL",
        ValueType::Url,
        "a PostgreSQL read replica (postgres://…, several hosts allowed) for reads that tolerate lag: a user looked up after a cache miss; a replica that is down or lacks the row sends the read to the primary",
    ),
    // Redis: REDIS_* is the group named `redis`; REDIS_<NAME>_* further ones.
    secret(
        "REDIS_<NAME>_URL",
        ValueType::Url,
        "redis://, rediss://, redis-cluster://, redis-sentinel://; configures the group",
    ),
    var(
        "REDIS_<NAME>_HOST",
        ValueType::Text,
        "127.0.0.1",
        "Redis host; configures the group",
    ),
    var("REDIS_<NAME>_PORT", ValueType::Port, "6379", "port"),
    var(
        "REDIS_<NAME>_DATABASE",
        ValueType::Text,
        "",
        "database number",
    ),
    var("REDIS_<NAME>_USERNAME", ValueType::Text, "", "ACL user"),
    secret("REDIS_<NAME>_PASSWORD", ValueType::Text, "password"),
    var(
        "REDIS_<NAME>_POOL_SIZE",
        ValueType::Count,
        "1",
        "clients, each multiplexed (one pipelines best)",
    ),
    var(
        "REDIS_<NAME>_TIMEOUT",
        ValueType::Seconds,
        "1",
        "per command, and to connect unless set below",
    ),
    var(
        "REDIS_<NAME>_CONNECT_TIMEOUT",
        ValueType::Seconds,
        "2",
        "open one connection",
    ),
    var(
        "REDIS_<NAME>_COMMAND_TIMEOUT",
        ValueType::Seconds,
        "1",
        "per command, overriding REDIS_<NAME>_TIMEOUT",
    ),
    var(
        "REDIS_<NAME>_SSL",
        ValueType::Choice(SSL_MODES),
        "disable",
        "TLS: require and verify-full verify the certificate",
    ),
    var(
        "REDIS_<NAME>_SSL_VERIFY",
        ValueType::Bool,
        "true",
        "false: TLS without certificate checks (test rigs only)",
    ),
    var(
        "REDIS_<NAME>_SSL_CA",
        ValueType::Text,
        "",
        "PEM file of CA certificates to trust",
    ),
    var(
        "REDIS_<NAME>_SSL_CERT",
        ValueType::Text,
        "",
        "PEM client certificate (with REDIS_<NAME>_SSL_KEY)",
    ),
    var(
        "REDIS_<NAME>_SSL_KEY",
        ValueType::Text,
        "",
        "PEM client private key",
    ),
    var(
        "REDIS_<NAME>_RETRY_ATTEMPTS",
        ValueType::Count,
        "IO_RETRY_ATTEMPTS",
        "connect attempts at start",
    ),
    var(
        "REDIS_<NAME>_RETRY_DELAY",
        ValueType::Seconds,
        "IO_RETRY_DELAY",
        "first reconnect delay",
    ),
    var(
        "REDIS_<NAME>_CLUSTER_NODES",
        ValueType::Nodes,
        "",
        "seeds of a Redis Cluster; configures the group",
    ),
    var(
        "REDIS_<NAME>_SENTINEL_SERVICE",
        ValueType::Text,
        "",
        "primary found through Sentinel (with SENTINEL_NODES); configures the group",
    ),
    var(
        "REDIS_<NAME>_SENTINEL_NODES",
        ValueType::Nodes,
        "",
        "the sentinels",
    ),
    // Upstream APIs.
    var(
        "API_<NAME>_BASE_URL",
        ValueType::Url,
        "",
        "http:// or https:// base URL; configures the group",
    ),
    var(
        "API_<NAME>_TIMEOUT",
        ValueType::Seconds,
        "10",
        "per attempt: leaves room for retries within the deadline",
    ),
    var(
        "API_<NAME>_DEADLINE",
        ValueType::Seconds,
        "IO_REQUEST_TIMEOUT",
        "per call, retries included",
    ),
    var(
        "API_<NAME>_SSL_VERIFY",
        ValueType::Bool,
        "true",
        "false: skip certificate checks",
    ),
    var(
        "API_<NAME>_SSL_CA",
        ValueType::Text,
        "",
        "PEM file of CA certificates to trust",
    ),
    secret(
        "API_<NAME>_TOKEN",
        ValueType::Text,
        "sent as Authorization: Bearer",
    ),
    secret(
        "API_<NAME>_HEADERS",
        ValueType::JsonObject,
        "headers sent with every request",
    ),
    var(
        "API_<NAME>_MAX_CONNECTIONS",
        ValueType::Count,
        "100",
        "requests in flight to this upstream",
    ),
    var(
        "API_<NAME>_MAX_BODY_BYTES",
        ValueType::Count,
        "10485760",
        "largest answer read",
    ),
    var(
        "API_<NAME>_MAX_BATCH_BYTES",
        ValueType::Count,
        "33554432",
        "answer bytes one batch may hold; later items fail",
    ),
    var(
        "API_<NAME>_RETRY_ATTEMPTS",
        ValueType::Count,
        "IO_RETRY_ATTEMPTS",
        "attempts of idempotent requests",
    ),
    var(
        "API_<NAME>_RETRY_DELAY",
        ValueType::Seconds,
        "IO_RETRY_DELAY",
        "base retry delay",
    ),
    // The whole manager.
    var(
        "IO_RETRY_ATTEMPTS",
        ValueType::Count,
        "3",
        "default attempts for retried I/O",
    ),
    var(
        "IO_RETRY_DELAY",
        ValueType::SecondsOrZero,
        "1",
        "default base retry delay",
    ),
    var(
        "IO_MAX_CONCURRENT_REQUESTS",
        ValueType::Count,
        "100",
        "upstream requests in flight, all upstreams of the manager together; batches take turns for them",
    ),
    var(
        "IO_REQUEST_TIMEOUT",
        ValueType::Seconds,
        "30",
        "default deadline of a call",
    ),
    var(
        "IO_MAX_BATCH_SIZE",
        ValueType::Count,
        "1000",
        "items in one batch",
    ),
];

/// The variable `name` stands for in `tables` (`DB_ANALYTICS_HOST` →
/// `DB_<NAME>_HOST`), if any.
pub fn find<'t>(tables: &[&'t [Variable]], name: &str) -> Option<&'t Variable> {
    // The most specific pattern wins: `DB_X_CONNECT_TIMEOUT` is
    // `DB_<NAME>_CONNECT_TIMEOUT` of group X, not `DB_<NAME>_TIMEOUT` of
    // group X_CONNECT.
    tables
        .iter()
        .flat_map(|t| t.iter())
        .filter(|v| v.name == name || matches_pattern(v.name, name))
        .max_by_key(|v| (v.name == name, v.name.len()))
}

/// The group a variable set under `pattern` belongs to (`DB_ANALYTICS_URL`
/// under `DB_<NAME>_URL` → `ANALYTICS`; `REDIS_URL` → the empty name).
pub fn group_of(pattern: &str, name: &str) -> Option<String> {
    let (head, tail) = pattern.split_once("<NAME>")?;
    let tail = tail.strip_prefix('_').unwrap_or(tail);
    if head == "REDIS_" && name.strip_prefix(head) == Some(tail) {
        return Some(String::new());
    }
    name.strip_prefix(head)?
        .strip_suffix(tail)?
        .strip_suffix('_')
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
}

fn matches_pattern(pattern: &str, name: &str) -> bool {
    let Some((head, tail)) = pattern.split_once("<NAME>") else {
        return false;
    };
    let tail = tail.strip_prefix('_').unwrap_or(tail);
    // REDIS_<NAME>_X also stands for the unnamed group REDIS_X.
    if head == "REDIS_" && name.strip_prefix(head) == Some(tail) {
        return true;
    }
    name.strip_prefix(head)
        .and_then(|rest| rest.strip_suffix(tail))
        .and_then(|group| group.strip_suffix('_'))
        .is_some_and(|group| !group.is_empty())
}

/// Whether `name` is one of the I/O layer's variables, so that a value
/// that is not valid UTF-8 stops start-up instead of being ignored.
pub fn is_io_variable(name: &str) -> bool {
    ["DB_", "API_", "REDIS_", "IO_"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// `--help` text for `tables`: one line per variable.
pub fn help(tables: &[&[Variable]]) -> String {
    help_with(tables, &|name| name.to_owned())
}

/// `--help` text for `tables`, each name shown as `show` renders it (a
/// service names its groups: `DB_<NAME>_HOST` → `DB_POSTGRES_HOST`).
pub fn help_with(tables: &[&[Variable]], show: &dyn Fn(&str) -> String) -> String {
    let mut out = String::new();
    for v in tables.iter().flat_map(|t| t.iter()) {
        let default = if v.default.is_empty() {
            String::new()
        } else {
            format!("; default {}", v.default)
        };
        let secret = if v.secret {
            "; secret, never logged"
        } else {
            ""
        };
        out.push_str(&format!(
            "  {:<32} {} ({}{default}{secret})\n",
            show(v.name),
            v.meaning,
            v.ty.describe()
        ));
    }
    out
}

/// The Markdown table for `tables`, as README.md shows it.
pub fn markdown(tables: &[&[Variable]]) -> String {
    let mut out =
        String::from("| variable | type | default | meaning |\n| --- | --- | --- | --- |\n");
    for v in tables.iter().flat_map(|t| t.iter()) {
        let default = if v.default.is_empty() {
            "—".to_owned()
        } else {
            format!("`{}`", v.default)
        };
        let secret = if v.secret {
            " (secret: never logged)"
        } else {
            ""
        };
        out.push_str(&format!(
            "| `{}` | {} | {default} | {}{secret} |\n",
            v.name,
            v.ty.describe().replace('|', "\\|"),
            v.meaning.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_named_groups_only_where_they_should() {
        let t = [VARIABLES];
        assert_eq!(
            find(&t, "DB_ANALYTICS_HOST").map(|v| v.name),
            Some("DB_<NAME>_HOST")
        );
        assert_eq!(
            find(&t, "DB_MY_APP_POOL_SIZE").map(|v| v.name),
            Some("DB_<NAME>_POOL_SIZE")
        );
        assert_eq!(
            find(&t, "REDIS_HOST").map(|v| v.name),
            Some("REDIS_<NAME>_HOST")
        );
        assert_eq!(
            find(&t, "REDIS_SESSIONS_HOST").map(|v| v.name),
            Some("REDIS_<NAME>_HOST")
        );
        assert_eq!(
            find(&t, "IO_RETRY_DELAY").map(|v| v.name),
            Some("IO_RETRY_DELAY")
        );
        assert!(find(&t, "DB_HOST").is_none());
        assert!(find(&t, "API__BASE_URL").is_none());
    }

    #[test]
    fn names_are_unique_and_documented() {
        for (i, v) in VARIABLES.iter().enumerate() {
            assert!(!v.meaning.is_empty(), "{}", v.name);
            assert!(
                VARIABLES[..i].iter().all(|w| w.name != v.name),
                "{} twice",
                v.name
            );
            assert!(!v.secret || v.default.is_empty(), "{}", v.name);
        }
    }
}
