//! Checks a Prometheus exposition against [`METRICS`]: every
//! series is in the table, with its kind, and with exactly the table's
//! labels (optional ones may be absent). The crate's own tests and the
//! server's check the live `/metrics` with it.

use std::collections::BTreeSet;

use crate::names::{METRICS, MetricSpec, MetricType, OPTIONAL_LABELS};

/// The metrics of the table that `text` (Prometheus text format) holds,
/// or the first line that does not match the table, and why.
pub fn check_exposition(text: &str) -> Result<BTreeSet<&'static str>, String> {
    let mut seen = BTreeSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| format!("{line}: no kind"))?;
            let spec = find(name, false).ok_or_else(|| format!("{name} is not in the table"))?;
            if spec.kind.as_str() != kind {
                return Err(format!(
                    "{name} is a {kind}, the table says {}",
                    spec.kind.as_str()
                ));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        let spec = find(name, true).ok_or_else(|| format!("{name} is not in the table"))?;
        seen.insert(spec.name);
        let names: Vec<&str> = labels
            .trim_end_matches('}')
            .split("\",")
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .filter(|l| *l != "le")
            .collect();
        if let Some(extra) = names.iter().find(|l| !spec.labels.contains(l)) {
            return Err(format!("{line}: label {extra} is not in the table"));
        }
        if let Some(missing) = spec
            .labels
            .iter()
            .find(|l| !names.contains(l) && !OPTIONAL_LABELS.contains(l))
        {
            return Err(format!("{line}: label {missing} is missing"));
        }
    }
    Ok(seen)
}

/// The table's entry for `name`; with `series`, also a histogram's
/// `_bucket`, `_sum` and `_count` series.
fn find(name: &str, series: bool) -> Option<&'static MetricSpec> {
    METRICS.iter().find(|m| {
        name == m.name
            || (series
                && m.kind == MetricType::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_prefix(m.name) == Some(s)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_off_the_table_are_named() {
        assert!(
            check_exposition("nope_total 1\n")
                .unwrap_err()
                .contains("nope_total")
        );
        let wrong_label = "sluice_cache_hits_total{db_system_name=\"redis\",db_client_connection_pool_name=\"c\",x=\"1\"} 3\n";
        assert!(
            check_exposition(wrong_label)
                .unwrap_err()
                .contains("label x")
        );
        let ok = "sluice_cache_hits_total{db_system_name=\"redis\",db_client_connection_pool_name=\"c\"} 3\n";
        assert_eq!(
            check_exposition(ok)
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["sluice_cache_hits_total"]
        );
    }
}
