//! Recording through a real Prometheus recorder and reading it back, as
//! text (checked by `promtool` when installed) and as a snapshot.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use sluice_metrics::{Backend, OpKind, Outcome, Registry};

fn recorded_exposition() -> (String, Registry) {
    let recorder = sluice_metrics::prometheus::build_recorder().expect("valid buckets");
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
        api.record_http(OpKind::Read, "GET", Some(200), Duration::from_millis(20));
        api.record_http(OpKind::Read, "get", Some(503), Duration::from_millis(21));
        api.record_http(OpKind::Read, "GET", None, Duration::from_millis(22));
        sluice_metrics::server::record_request(
            "/users/{user_id}",
            "GET",
            404,
            Duration::from_micros(700),
        );
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
    // 80 µs falls in the 100 µs bucket; the 50 µs bucket stays empty.
    let bucket = |le: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("db_client_operation_duration_seconds_bucket")
                    && l.contains("operation=\"query\",outcome=\"ok\"")
                    && l.contains(&format!("le=\"{le}\""))
            })
            .unwrap_or_else(|| panic!("no bucket le={le} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(bucket("0.00005"), "0");
    assert_eq!(bucket("0.0001"), "1");
    assert_eq!(bucket("0.001"), "4");
    assert_eq!(bucket("+Inf"), "5");
    assert!(text.contains("db_client_operation_errors_total{db_system=\"postgresql\",connection=\"primary\",operation=\"execute\",error_class=\"conflict\"} 1"), "{text}");
    assert!(
        text.contains("sluice_cache_misses_total{db_system=\"redis\",connection=\"cache\"} 2"),
        "{text}"
    );
    assert!(text.contains("status_class=\"5xx\""), "{text}");
    assert!(text.contains("route=\"/users/{user_id}\""), "{text}");
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
    assert!(
        out.status.success(),
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

#[test]
fn every_metric_name_has_help_text() {
    let recorder = sluice_metrics::prometheus::build_recorder().expect("valid buckets");
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        sluice_metrics::names::describe();
        // Register one series of each name, whatever its type.
        for name in sluice_metrics::names::ALL {
            if name.ends_with("_seconds") {
                metrics::histogram!(*name).record(0.001);
            } else if name.ends_with("_total") {
                metrics::counter!(*name).increment(1);
            } else {
                metrics::gauge!(*name).set(1.0);
            }
        }
    });
    handle.run_upkeep();
    let text = handle.render();
    for name in sluice_metrics::names::ALL {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP line:\n{text}"
        );
    }
}
