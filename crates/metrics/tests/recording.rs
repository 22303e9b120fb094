//! Recording through a real Prometheus recorder and reading it back, as
//! text (checked by `promtool` when installed) and as a snapshot.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use sluice_metrics::names::{METRICS, MetricType};
use sluice_metrics::server::{ServedRequest, ServerMetrics};
use sluice_metrics::{Backend, OpKind, Outcome, Registry};

fn recorded_exposition() -> (String, Registry) {
    let recorder = sluice_metrics::prometheus::build_recorder();
    let handle = recorder.handle();
    let registry = Registry::new();
    metrics::with_local_recorder(&recorder, || {
        sluice_metrics::names::describe();
        let db = registry.connection(Backend::Postgresql, "primary");
        for us in [80, 120, 400, 900, 30_000] {
            db.record(OpKind::Query, Outcome::Ok, Duration::from_micros(us));
        }
        db.record(
            OpKind::Execute,
            Outcome::Error("conflict"),
            Duration::from_micros(200),
        );
        let cache = registry.connection(Backend::Redis, "cache");
        cache.record_hit();
        cache.record_miss();
        cache.record_miss();
        let api = registry.connection(Backend::Http, "external");
        api.set_server("127.0.0.1", 8080);
        api.record_http(OpKind::Read, "GET", Ok(200), Duration::from_millis(20));
        api.record_http(OpKind::Read, "get", Ok(503), Duration::from_millis(21));
        api.record_http(
            OpKind::Read,
            "GET",
            Err("timeout"),
            Duration::from_millis(22),
        );
        let server = ServerMetrics::new();
        let record_request = |request, elapsed| server.record(request, elapsed);
        let request = |route, status, error_type| ServedRequest {
            route,
            method: "GET",
            scheme: "http",
            status,
            error_type,
        };
        record_request(
            request(Some("/users/{user_id}"), 404, None),
            Duration::from_micros(700),
        );
        record_request(
            request(Some("/users/{user_id}"), 503, Some("overloaded")),
            Duration::from_micros(70),
        );
        record_request(request(None, 500, None), Duration::from_micros(90));
        // Again, through the kept handle.
        record_request(request(None, 500, None), Duration::from_micros(90));
        let pool = sluice_metrics::PoolMetrics::new("primary");
        pool.limits(10, 10, 2);
        pool.sizes(7, 3, 0);
        pool.created(Duration::from_millis(3));
        pool.waited(Duration::from_micros(20));
        pool.used_for(Duration::from_micros(900));
        pool.timed_out();
        let upstream = sluice_metrics::HttpPoolMetrics::new("127.0.0.1", 8080);
        upstream.sizes(2, 1, 0);
        upstream.waited(Duration::from_micros(10));
        let resilience = sluice_metrics::ResilienceMetrics::new(Backend::Http, "external");
        resilience.attempt(false);
        resilience.give_up("budget");
        resilience.transition(sluice_metrics::CircuitState::Open);
        sluice_metrics::dependency_up(Backend::Postgresql, "primary", false);
    });
    handle.run_upkeep();
    (handle.render(), registry)
}

#[test]
fn exposition_has_real_histograms_with_sub_millisecond_buckets() {
    let (text, _) = recorded_exposition();
    assert!(
        text.contains("# TYPE db_client_operation_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE http_client_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE http_server_request_duration_seconds histogram"),
        "{text}"
    );
    // OpenTelemetry's database buckets: 80 µs to 900 µs all fall in the
    // first (1 ms), 30 ms in the 50 ms one.
    let bucket = |le: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("db_client_operation_duration_seconds_bucket")
                    && l.contains("db_operation_name=\"query\"")
                    && l.contains(&format!("le=\"{le}\""))
            })
            .unwrap_or_else(|| panic!("no bucket le={le} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(bucket("0.001"), "4");
    assert_eq!(bucket("0.01"), "4");
    assert_eq!(bucket("0.05"), "5");
    assert_eq!(bucket("+Inf"), "5");
    assert!(text.contains("db_client_operation_duration_seconds_count{db_system_name=\"postgresql\",db_client_connection_pool_name=\"primary\",db_operation_name=\"execute\",error_type=\"conflict\"} 1"), "{text}");
    assert!(
        text.contains("sluice_cache_misses_total{db_system_name=\"redis\",db_client_connection_pool_name=\"cache\"} 2"),
        "{text}"
    );
    // The client conventions: the status when one came, error_type for
    // 4xx/5xx (the status) and for no response (the class).
    assert!(text.contains("http_client_request_duration_seconds_count{http_request_method=\"GET\",server_address=\"127.0.0.1\",server_port=\"8080\",http_response_status_code=\"503\",error_type=\"503\"} 1"), "{text}");
    assert!(text.contains("http_client_request_duration_seconds_count{http_request_method=\"GET\",server_address=\"127.0.0.1\",server_port=\"8080\",error_type=\"timeout\"} 1"), "{text}");
    // A success (the fixed handles of 200 to 204) carries its status only.
    assert!(text.contains("http_client_request_duration_seconds_count{http_request_method=\"GET\",server_address=\"127.0.0.1\",server_port=\"8080\",http_response_status_code=\"200\"} 1"), "{text}");
    // The server conventions: no error_type on a 4xx, the reason on a
    // 5xx, the status code when no reason is known, no route unmatched.
    assert!(text.contains("http_server_request_duration_seconds_count{http_request_method=\"GET\",url_scheme=\"http\",http_route=\"/users/{user_id}\",http_response_status_code=\"404\"} 1"), "{text}");
    assert!(
        text.contains("http_response_status_code=\"503\",error_type=\"overloaded\"} 1"),
        "{text}"
    );
    assert!(text.contains("http_server_request_duration_seconds_count{http_request_method=\"GET\",url_scheme=\"http\",http_response_status_code=\"500\",error_type=\"500\"} 2"), "{text}");
    // OpenTelemetry's HTTP buckets start at 5 ms.
    assert!(text.contains("http_server_request_duration_seconds_bucket{http_request_method=\"GET\",url_scheme=\"http\",http_route=\"/users/{user_id}\",http_response_status_code=\"404\",le=\"0.005\"} 1"), "{text}");
    assert!(text.contains("db_client_connection_count{db_client_connection_pool_name=\"primary\",db_client_connection_state=\"used\"} 3"), "{text}");
}

/// Every series of the exposition belongs to a metric of the table, with
/// the table's type, and carries exactly the table's labels (optional
/// ones aside): the docs' mapping table is what `/metrics` serves.
#[test]
fn exposition_matches_the_table() {
    let (text, _) = recorded_exposition();
    let seen = sluice_metrics::conformance::check_exposition(&text).unwrap();
    for m in METRICS {
        assert!(seen.contains(m.name), "{} was not exercised", m.name);
    }
}

#[test]
fn exposition_passes_promtool() {
    let (text, _) = recorded_exposition();
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!(
            "promtool is required for this test ({e}); install it with `apt-get install prometheus`"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let findings: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| *l != sluice_metrics::names::PROMTOOL_EXPECTED_FINDING)
        .collect();
    assert!(
        findings.is_empty(),
        "promtool rejected the exposition:\n{report}\n{text}"
    );
}

#[test]
fn snapshot_reports_counts_errors_and_percentiles() {
    let (_, registry) = recorded_exposition();
    let snapshot = registry.snapshot();
    let db = snapshot.connection(Backend::Postgresql, "primary").unwrap();
    let query = db.operations["query"];
    assert_eq!(query.count, 5);
    assert_eq!(query.errors, 0);
    assert_eq!(query.latency_ms.max, 30.0);
    // p50 of {0.08, 0.12, 0.4, 0.9, 30} ms is 0.4 ms, within 4%.
    assert!((query.latency_ms.p50 - 0.4).abs() < 0.016, "{query:?}");
    let execute = db.operations["execute"];
    assert_eq!(
        (execute.count, execute.errors, execute.success_rate),
        (1, 1, 0.0)
    );

    let api = snapshot.connection(Backend::Http, "external").unwrap();
    let read = api.operations["read"];
    assert_eq!(read.count, 3);
    assert_eq!(read.errors, 2, "503 and no response count as failures");
    assert!((read.success_rate - 1.0 / 3.0).abs() < 1e-9);

    let cache = snapshot.connection(Backend::Redis, "cache").unwrap();
    assert_eq!((cache.hits, cache.misses), (1, 2));
    assert!(cache.operations.is_empty());

    // Everything was recorded just now: the last minute holds it all.
    assert_eq!((query.recent.count, query.recent.errors), (5, 0));
    assert_eq!(query.recent.window_s, 60);
    assert_eq!(query.recent.latency_ms.max, 30.0);

    let json = serde_json::to_value(&snapshot).unwrap();
    assert_eq!(json["connections"][0]["backend"], "postgresql");
    assert_eq!(json["connections"][0]["operations"]["query"]["count"], 5);
}

#[test]
fn memory_does_not_grow_with_traffic() {
    let registry = Registry::new();
    let db = registry.connection(Backend::Sqlite, "primary");
    for i in 0..200_000u64 {
        db.record(OpKind::Query, Outcome::Ok, Duration::from_nanos(i * 37));
    }
    // Same handle, same figures: a registry lookup does not add state.
    let again = registry.connection(Backend::Sqlite, "primary");
    again.record(
        OpKind::Query,
        Outcome::Error("timeout"),
        Duration::from_millis(1),
    );
    let snapshot = registry.snapshot();
    assert_eq!(snapshot.connections.len(), 1);
    assert_eq!(snapshot.connections[0].operations["query"].count, 200_001);
}

#[tokio::test(start_paused = true)]
async fn timed_records_success_failure_and_cancellation() {
    let registry = Registry::new();
    let m = registry.connection(Backend::Redis, "cache");
    let ok: Result<(), std::io::Error> = m
        .timed(OpKind::Read, async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(())
        })
        .await;
    assert!(ok.is_ok());
    let err: Result<(), std::io::Error> = m
        .timed(OpKind::Write, async {
            Err(std::io::ErrorKind::TimedOut.into())
        })
        .await;
    assert!(err.is_err());
    // Dropped before completion: recorded as a cancelled failure.
    let slow = m.timed(OpKind::Write, async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<(), std::io::Error>(())
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(10), slow)
            .await
            .is_err()
    );

    let snapshot = registry.snapshot();
    let cache = snapshot.connection(Backend::Redis, "cache").unwrap();
    let read = cache.operations["read"];
    assert_eq!((read.count, read.errors), (1, 0));
    assert!((read.latency_ms.max - 5.0).abs() < 0.5, "{read:?}");
    let write = cache.operations["write"];
    assert_eq!((write.count, write.errors), (2, 2));
}

/// Sluice's histograms count into their own buckets; a program's own
/// histograms and counters still go through the exporter, and a series
/// registered twice is one series.
#[test]
fn other_metrics_still_go_through_the_exporter() {
    let recorder = sluice_metrics::prometheus::build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        metrics::describe_histogram!("app_job_seconds", "A job's time.");
        metrics::histogram!("app_job_seconds").record(0.25);
        metrics::counter!("app_jobs_total").increment(3);
        let labels = [("db_system_name", "sqlite")];
        metrics::histogram!("db_client_operation_duration_seconds", &labels).record(0.002);
        metrics::histogram!("db_client_operation_duration_seconds", &labels).record(0.003);
    });
    handle.run_upkeep();
    let text = handle.render();
    // The exporter renders histograms it has no buckets for as summaries.
    assert!(text.contains("# TYPE app_job_seconds summary"), "{text}");
    assert!(
        text.contains("# HELP app_job_seconds A job's time."),
        "{text}"
    );
    assert!(text.contains("app_job_seconds_count 1"), "{text}");
    assert!(text.contains("app_jobs_total 3"), "{text}");
    assert!(
        text.contains(
            "db_client_operation_duration_seconds_bucket{db_system_name=\"sqlite\",le=\"0.005\"} 2"
        ),
        "{text}"
    );
    assert!(
        text.contains("db_client_operation_duration_seconds_sum{db_system_name=\"sqlite\"} 0.005"),
        "{text}"
    );
    assert_eq!(
        text.matches("# TYPE db_client_operation_duration_seconds ")
            .count(),
        1,
        "{text}"
    );
}

#[test]
fn every_metric_name_has_help_text() {
    let recorder = sluice_metrics::prometheus::build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        sluice_metrics::names::describe();
        // Register one series of each name, whatever its type.
        for m in METRICS {
            match m.kind {
                MetricType::Histogram => metrics::histogram!(m.name).record(0.001),
                MetricType::Counter => metrics::counter!(m.name).increment(1),
                MetricType::Gauge => metrics::gauge!(m.name).set(1.0),
            }
        }
    });
    handle.run_upkeep();
    let text = handle.render();
    for m in METRICS {
        assert!(
            text.contains(&format!("# HELP {} ", m.name)),
            "{} has no HELP line:\n{text}",
            m.name
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_recent_figures_cover_the_last_minute_only() {
    let registry = Registry::new();
    let db = registry.connection(Backend::Sqlite, "primary");
    for _ in 0..10 {
        db.record(
            OpKind::Query,
            Outcome::Error("timeout"),
            Duration::from_millis(800),
        );
    }
    tokio::time::advance(Duration::from_secs(30)).await;
    for _ in 0..90 {
        db.record(OpKind::Query, Outcome::Ok, Duration::from_millis(1));
    }
    let recent = registry.snapshot().connections[0].operations["query"].recent;
    assert_eq!((recent.count, recent.errors), (100, 10));
    tokio::time::advance(Duration::from_secs(45)).await;
    // The failures are over a minute old now; the since-start figures keep them.
    let query = registry.snapshot().connections[0].operations["query"];
    assert_eq!((query.recent.count, query.recent.errors), (90, 0));
    assert_eq!(query.recent.success_rate, 1.0);
    assert!(query.recent.latency_ms.max < 1.1, "{query:?}");
    assert_eq!((query.count, query.errors), (100, 10));
    tokio::time::advance(Duration::from_secs(60)).await;
    let recent = registry.snapshot().connections[0].operations["query"].recent;
    assert_eq!(recent.count, 0);
}
