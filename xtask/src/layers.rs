//! `cargo xtask layers`: dependencies point down the layers only.
//!
//! The layers, from ARCHITECTURE.md:
//! `metrics(0) → retry(1) → pool(2) → {db, api-client}(3) → io(4) →
//! http-server(5) → services(6)`.
//! A crate may depend on crates of lower layers only: never on its own layer
//! (db and api-client do not know each other) and never upwards. `tests`
//! and `xtask` sit outside the stack and may use anything.

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The layer of each workspace package; `None` for packages outside the
/// stack. A package missing from this table is an error, so a new crate
/// has to be placed deliberately.
fn layer(package: &str) -> Option<Option<u8>> {
    Some(match package {
        "sluice-metrics" => Some(0),
        "sluice-retry" => Some(1),
        "sluice-pool" => Some(2),
        "sluice-db" | "sluice-api-client" => Some(3),
        "sluice-io" => Some(4),
        "sluice-http-server" => Some(5),
        "sluice-server" => Some(6),
        "sluice-tests" | "xtask" => None,
        _ => return None,
    })
}

pub(crate) fn run() -> Result<()> {
    let out = crate::cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let metadata: Value = serde_json::from_slice(&out.stdout).context("cargo metadata output")?;
    let violations = check(&metadata)?;
    if !violations.is_empty() {
        bail!("layering violated:\n  {}", violations.join("\n  "));
    }
    eprintln!("layers: every dependency points down");
    only_what_they_use()
}

/// A crate compiles only the backends it uses: `sluice-api-client` pulls
/// in neither sqlx nor fred (sluice-pool's backends are features).
fn only_what_they_use() -> Result<()> {
    for (package, banned) in [
        ("sluice-api-client", &["sqlx", "fred"][..]),
        ("sluice-retry", &["sqlx", "fred", "hyper"][..]),
    ] {
        let out = crate::cargo()
            .args(["tree", "-p", package, "-e", "normal", "--prefix", "none"])
            .output()
            .context("cannot run cargo tree")?;
        if !out.status.success() {
            bail!("cargo tree -p {package} failed");
        }
        let tree = String::from_utf8_lossy(&out.stdout);
        for crate_name in banned {
            if tree
                .lines()
                .any(|l| l.split_whitespace().next() == Some(*crate_name))
            {
                bail!(
                    "{package} depends on {crate_name}: enable only the sluice-pool features it uses"
                );
            }
        }
    }
    eprintln!("layers: sluice-api-client builds without sqlx and fred");
    Ok(())
}

/// Every offending edge, as `from (layer a) -> to (layer b): why`.
fn check(metadata: &Value) -> Result<Vec<String>> {
    let packages = metadata["packages"]
        .as_array()
        .context("no packages in metadata")?;
    let members: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut violations = Vec::new();
    for package in packages {
        let name = package["name"].as_str().context("package without a name")?;
        let from = layer(name).with_context(|| {
            format!(
                "package `{name}` has no layer: add it to xtask/src/layers.rs and ARCHITECTURE.md"
            )
        })?;
        let Some(from) = from else { continue };
        let deps = package["dependencies"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for dep in deps {
            let Some(dep_name) = dep["name"].as_str() else {
                continue;
            };
            if !members.contains(&dep_name) {
                continue;
            }
            // A crate's own tests may use the shared test helpers.
            if dep["kind"].as_str() == Some("dev") && dep_name == "sluice-tests" {
                continue;
            }
            match layer(dep_name).flatten() {
                Some(to) if to < from => {}
                Some(to) => violations.push(format!(
                    "{name} (layer {from}) -> {dep_name} (layer {to}): {}",
                    if to == from { "sideways" } else { "upwards" }
                )),
                None => violations.push(format!(
                    "{name} (layer {from}) -> {dep_name}: library layers may not depend on test or tool packages"
                )),
            }
        }
    }
    Ok(violations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metadata(edges: &[(&str, &[&str])]) -> Value {
        let packages: Vec<Value> = edges
            .iter()
            .map(|(name, deps)| {
                json!({"name": name, "dependencies": deps.iter().map(|d| json!({"name": d})).collect::<Vec<_>>()})
            })
            .collect();
        json!({ "packages": packages })
    }

    #[test]
    fn downward_edges_pass() {
        let m = metadata(&[
            ("sluice-metrics", &["metrics"]),
            ("sluice-retry", &["sluice-metrics", "tokio"]),
        ]);
        assert!(check(&m).unwrap().is_empty());
    }

    #[test]
    fn sideways_and_upward_edges_are_named() {
        let m = metadata(&[
            ("sluice-metrics", &["sluice-retry"]),
            ("sluice-retry", &[]),
            ("sluice-db", &["sluice-api-client"]),
            ("sluice-api-client", &[]),
        ]);
        let v = check(&m).unwrap();
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("sluice-metrics (layer 0) -> sluice-retry (layer 1): upwards"));
        assert!(v[1].contains("sluice-db (layer 3) -> sluice-api-client (layer 3): sideways"));
    }

    #[test]
    fn tests_may_use_the_test_helpers_as_a_dev_dependency_only() {
        let m = json!({"packages": [
            {"name": "sluice-server", "dependencies": [{"name": "sluice-tests", "kind": "dev"}]},
            {"name": "sluice-db", "dependencies": [{"name": "sluice-tests", "kind": null}]},
            {"name": "sluice-tests", "dependencies": []},
        ]});
        let v = check(&m).unwrap();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].starts_with("sluice-db (layer 3) -> sluice-tests"));
    }

    #[test]
    fn unknown_package_is_an_error() {
        let m = metadata(&[("sluice-mystery", &[])]);
        assert!(check(&m).is_err());
    }
}
