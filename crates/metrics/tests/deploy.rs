//! The shipped dashboard and rules (`deploy/`) and the docs
//! (`docs/OBSERVABILITY.md`) agree with the metric table: every metric a
//! query names is exported (or recorded by a rule), every panel is
//! described in the docs, and the docs' metric table is the table's.

use std::collections::BTreeSet;
use std::path::PathBuf;

use sluice_metrics::names::{METRICS, MetricType};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The metric names a PromQL expression mentions: identifiers of the
/// families Sluice exports, and `sluice:` recording rules.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            current.push(c);
            continue;
        }
        let word = std::mem::take(&mut current);
        let ours = [
            "sluice_",
            "sluice:",
            "db_client_",
            "http_server_",
            "http_client_",
        ];
        // Label names (in matchers and `by (…)`) share the prefixes.
        let label = METRICS.iter().any(|m| m.labels.contains(&word.as_str()));
        if ours.iter().any(|p| word.starts_with(p)) && !label {
            names.push(word);
        }
    }
    names
}

fn known(recorded: &BTreeSet<String>, name: &str) -> bool {
    recorded.contains(name)
        || METRICS.iter().any(|m| {
            m.name == name
                || (m.kind == MetricType::Histogram
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name == format!("{}{s}", m.name)))
        })
}

fn recording_rules(rules: &str) -> BTreeSet<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_query_of_the_rules_names_exported_metrics() {
    let rules = read("deploy/prometheus/rules.yml");
    let recorded = recording_rules(&rules);
    let mut checked = 0;
    for expr in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
    {
        for name in metric_names(expr) {
            assert!(
                known(&recorded, &name),
                "rules.yml: {name} is not exported: {expr}"
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} names found");
}

#[test]
fn every_panel_names_exported_metrics_and_is_described() {
    let rules = read("deploy/prometheus/rules.yml");
    let recorded = recording_rules(&rules);
    let docs = read("docs/OBSERVABILITY.md");
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/sluice.json")).expect("valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut graphs = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().expect("title");
        assert!(
            docs.contains(&format!("**{title}**")),
            "panel {title:?} is not described in docs/OBSERVABILITY.md"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            assert!(
                docs.contains(&format!("`{expr}`")),
                "{title}: {expr} not in the docs"
            );
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: {expr}");
            for name in names {
                assert!(known(&recorded, &name), "{title}: {name} is not exported");
            }
        }
        graphs += 1;
    }
    assert!(graphs >= 15, "{graphs} panels");
}

/// `docs/OBSERVABILITY.md` holds `names::markdown()` between markers;
/// `SLUICE_BLESS=1` rewrites it.
#[test]
fn the_docs_metric_table_is_the_table() {
    const BEGIN: &str = "<!-- metrics-table:begin -->\n";
    const END: &str = "<!-- metrics-table:end -->";
    let path = root().join("docs/OBSERVABILITY.md");
    let docs = read("docs/OBSERVABILITY.md");
    let start = docs.find(BEGIN).expect("begin marker") + BEGIN.len();
    let end = docs.find(END).expect("end marker");
    let table = sluice_metrics::names::markdown();
    if docs[start..end] != table {
        if std::env::var_os("SLUICE_BLESS").is_some() {
            let updated = format!("{}{table}{}", &docs[..start], &docs[end..]);
            std::fs::write(&path, updated).expect("write docs");
            return;
        }
        panic!("docs/OBSERVABILITY.md's metric table is stale: run with SLUICE_BLESS=1");
    }
}
