//! Sluice's own Prometheus histograms: fixed bucket counters, recorded
//! with two relaxed atomic adds and rendered in the text format.
//!
//! The exporter's histogram handle timestamps every sample and queues it
//! (a clock read and a push into a growing block list), and its upkeep
//! drains the queue into buckets later. For histograms whose buckets are
//! known up front — all of Sluice's — counting into the bucket directly
//! costs a fraction of that and needs no upkeep.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{HistogramFn, Key};

/// Cumulative-on-render bucket counts of one series.
#[derive(Debug)]
pub(crate) struct BucketHistogram {
    /// Upper bounds in seconds, ascending (`le`).
    bounds: &'static [f64],
    /// One counter per bound, then one for values above the last bound.
    counts: Box<[AtomicU64]>,
    /// The sum of recorded values, in nanoseconds (every Sluice histogram
    /// is in seconds; a u64 of nanoseconds holds 584 years of them).
    sum_ns: AtomicU64,
}

impl BucketHistogram {
    pub(crate) fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Per-bucket counts (not cumulative), the overflow last, and the sum
    /// in seconds. A recording that races the read may be in one and not
    /// yet in the other, which a statistic tolerates.
    fn read(&self) -> (Vec<u64>, f64) {
        let counts = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        (counts, sum)
    }
}

impl HistogramFn for BucketHistogram {
    fn record(&self, seconds: f64) {
        // `le` is inclusive; NaN compares false and so lands in +Inf.
        let index = self
            .bounds
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(self.bounds.len());
        self.counts[index].fetch_add(1, Ordering::Relaxed);
        // Negative and NaN values add nothing to the sum (`as` saturates).
        let ns = (seconds * 1e9) as u64;
        if ns > 0 {
            self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        }
    }
}

/// Writes the series of one metric name, `# HELP` and `# TYPE` first, in
/// the Prometheus text format (what the exporter writes for its own
/// histograms: `_bucket` lines with `le` last, `_sum`, `_count`).
pub(crate) fn render_family(
    out: &mut String,
    name: &str,
    help: &str,
    series: &[(&Key, &BucketHistogram)],
) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (key, histogram) in series {
        let labels = label_text(key);
        let sep = if labels.is_empty() { "" } else { "," };
        let (counts, sum) = histogram.read();
        let mut cumulative = 0u64;
        for (bound, count) in histogram.bounds.iter().zip(&counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += counts.last().copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(&labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(&labels));
    }
    out.push('\n');
}

/// `k="v",…` in the key's order, values escaped as the format requires.
fn label_text(key: &Key) -> String {
    let mut text = String::new();
    for (i, label) in key.labels().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(label.key());
        text.push_str("=\"");
        for c in label.value().chars() {
            match c {
                '\\' => text.push_str("\\\\"),
                '"' => text.push_str("\\\""),
                '\n' => text.push_str("\\n"),
                c => text.push(c),
            }
        }
        text.push('"');
    }
    text
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let h = BucketHistogram::new(&[0.001, 0.01]);
        for v in [0.0005, 0.001, 0.002, 0.01, 5.0, f64::NAN, -1.0] {
            h.record(v);
        }
        let (counts, sum) = h.read();
        // NaN goes above every bound; -1 is below the first.
        assert_eq!(counts, vec![3, 2, 2]);
        assert!((sum - 5.0135).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn renders_cumulative_buckets_sum_and_count() {
        let h = BucketHistogram::new(&[0.005, 1.0]);
        h.record(0.002);
        h.record(0.5);
        h.record(2.0);
        let key = Key::from_parts("x_seconds", vec![metrics::Label::new("a", "q\"uo\\te\n")]);
        let mut out = String::new();
        render_family(&mut out, "x_seconds", "Time.\nMore", &[(&key, &h)]);
        assert_eq!(
            out,
            "# HELP x_seconds Time.\\nMore\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{a=\"q\\\"uo\\\\te\\n\",le=\"0.005\"} 1\n\
             x_seconds_bucket{a=\"q\\\"uo\\\\te\\n\",le=\"1\"} 2\n\
             x_seconds_bucket{a=\"q\\\"uo\\\\te\\n\",le=\"+Inf\"} 3\n\
             x_seconds_sum{a=\"q\\\"uo\\\\te\\n\"} 2.502\n\
             x_seconds_count{a=\"q\\\"uo\\\\te\\n\"} 3\n\n"
        );
    }

    #[test]
    fn a_series_without_labels_has_no_braces_but_le() {
        let h = BucketHistogram::new(&[1.0]);
        h.record(0.25);
        let key = Key::from_name("y_seconds");
        let mut out = String::new();
        render_family(&mut out, "y_seconds", "Y.", &[(&key, &h)]);
        assert!(out.contains("y_seconds_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(
            out.contains("y_seconds_sum 0.25\ny_seconds_count 1\n"),
            "{out}"
        );
    }
}
