//! [`Reader`]: typed reads of the variables a table lists, through a
//! lookup function. Libraries never read the process environment: the
//! binary passes `std::env::var`, tests pass a map.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::vars::{ValueType, Variable, find};

/// A variable that stops start-up: its name and what is wrong. Never its
/// value, which may be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration {variable}: {reason}")]
pub struct ConfigError {
    /// The variable (or, for a typed configuration, the field).
    pub variable: String,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    /// An error naming `variable`.
    pub fn new(variable: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            variable: variable.into(),
            reason: reason.into(),
        }
    }
}

/// The largest count any variable accepts (connections, sizes, caps): a
/// value past it is a typo, not a wish, and would overflow a semaphore.
pub const MAX_COUNT: u64 = 1 << 30;

/// Reads variables listed in a set of tables.
pub struct Reader<'a> {
    tables: &'a [&'a [Variable]],
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl std::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

impl<'a> Reader<'a> {
    /// A reader of the variables in `tables`, each read through `lookup`.
    pub fn new(tables: &'a [&'a [Variable]], lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { tables, lookup }
    }

    /// The table entry of `name`; a name no table lists is a bug in the
    /// caller, reported as a configuration error rather than a panic.
    fn entry(&self, name: &str, accepted: &[ValueType]) -> Result<&'a Variable, ConfigError> {
        let v = find(self.tables, name)
            .ok_or_else(|| ConfigError::new(name, "is not in the configuration table"))?;
        if !accepted.contains(&v.ty) && !matches!(v.ty, ValueType::Choice(_)) {
            return Err(ConfigError::new(name, "is read as the wrong type"));
        }
        Ok(v)
    }

    /// The trimmed value of `name`; empty counts as unset.
    pub fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// Whether `name` is set (to anything but blanks).
    pub fn is_set(&self, name: &str) -> bool {
        self.raw(name).is_some()
    }

    /// Free text, a URL or a path.
    pub fn text(&self, name: &str) -> Result<Option<String>, ConfigError> {
        self.entry(name, &[ValueType::Text, ValueType::Url, ValueType::List])?;
        Ok(self.raw(name))
    }

    /// Seconds: greater than 0 and at most a day; 0 too where the table
    /// says it means "off".
    pub fn seconds(&self, name: &str) -> Result<Option<Duration>, ConfigError> {
        let v = self.entry(name, &[ValueType::Seconds, ValueType::SecondsOrZero])?;
        let Some(raw) = self.raw(name) else {
            return Ok(None);
        };
        let zero_ok = v.ty == ValueType::SecondsOrZero;
        match raw.parse::<f64>() {
            Ok(s) if zero_ok && s == 0.0 => Ok(Some(Duration::ZERO)),
            Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => {
                Ok(Some(Duration::from_secs_f64(s)))
            }
            _ => Err(ConfigError::new(
                name,
                if zero_ok {
                    "expected a number of seconds from 0 to 86400"
                } else {
                    "expected a number of seconds greater than 0 and at most 86400"
                },
            )),
        }
    }

    /// A whole number from 1 (or 0, where the table allows it) to
    /// [`MAX_COUNT`].
    pub fn count(&self, name: &str) -> Result<Option<u64>, ConfigError> {
        let v = self.entry(name, &[ValueType::Count, ValueType::CountOrZero])?;
        let Some(raw) = self.raw(name) else {
            return Ok(None);
        };
        let low = u64::from(v.ty == ValueType::Count);
        raw.parse::<u64>()
            .ok()
            .filter(|n| (low..=MAX_COUNT).contains(n))
            .map(Some)
            .ok_or_else(|| {
                ConfigError::new(
                    name,
                    format!("expected a whole number from {low} to {MAX_COUNT}"),
                )
            })
    }

    /// A count that fits a `u32`.
    pub fn count_u32(&self, name: &str) -> Result<Option<u32>, ConfigError> {
        // MAX_COUNT < u32::MAX, so this never truncates.
        Ok(self
            .count(name)?
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
    }

    /// A count that fits a `usize`.
    pub fn count_usize(&self, name: &str) -> Result<Option<usize>, ConfigError> {
        Ok(self
            .count(name)?
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
    }

    /// A TCP port, 1 to 65535.
    pub fn port(&self, name: &str) -> Result<Option<u16>, ConfigError> {
        self.entry(name, &[ValueType::Port])?;
        let Some(raw) = self.raw(name) else {
            return Ok(None);
        };
        raw.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .map(Some)
            .ok_or_else(|| ConfigError::new(name, "expected a port number between 1 and 65535"))
    }

    /// `true`/`false` and the usual spellings.
    pub fn boolean(&self, name: &str) -> Result<Option<bool>, ConfigError> {
        self.entry(name, &[ValueType::Bool])?;
        let Some(raw) = self.raw(name) else {
            return Ok(None);
        };
        match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" => Ok(Some(false)),
            _ => Err(ConfigError::new(name, "expected true or false")),
        }
    }

    /// A fraction from 0 to 1.
    pub fn fraction(&self, name: &str) -> Result<Option<f64>, ConfigError> {
        self.entry(name, &[ValueType::Fraction])?;
        let Some(raw) = self.raw(name) else {
            return Ok(None);
        };
        raw.parse::<f64>()
            .ok()
            .filter(|f| (0.0..=1.0).contains(f))
            .map(Some)
            .ok_or_else(|| ConfigError::new(name, "expected a fraction from 0 to 1"))
    }

    /// One of the words the table lists for `name` (compared without case),
    /// as the table spells it.
    pub fn choice(&self, name: &str) -> Result<Option<&'static str>, ConfigError> {
        let v = self.entry(name, &[])?;
        let ValueType::Choice(words) = v.ty else {
            return Err(ConfigError::new(name, "is read as the wrong type"));
        };
        let Some(raw) = self.raw(name) else {
            return Ok(None);
        };
        words
            .iter()
            .find(|w| w.eq_ignore_ascii_case(&raw))
            .copied()
            .map(Some)
            .ok_or_else(|| ConfigError::new(name, format!("expected {}", words.join(", "))))
    }

    /// `host:port,host:port`.
    pub fn nodes(&self, name: &str) -> Result<Option<Vec<(String, u16)>>, ConfigError> {
        self.entry(name, &[ValueType::Nodes])?;
        let Some(raw) = self.raw(name) else {
            return Ok(None);
        };
        raw.split(',')
            .map(|node| {
                node.trim()
                    .rsplit_once(':')
                    .and_then(|(host, port)| {
                        let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
                        (!host.is_empty()).then(|| (host.to_owned(), port))
                    })
                    .ok_or_else(|| ConfigError::new(name, "expected host:port,host:port"))
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// A JSON object whose values are strings.
    pub fn json_object(&self, name: &str) -> Result<Option<Vec<(String, String)>>, ConfigError> {
        self.entry(name, &[ValueType::JsonObject])?;
        let Some(raw) = self.raw(name) else {
            return Ok(None);
        };
        let map: HashMap<String, serde_json::Value> = serde_json::from_str(&raw).map_err(|_| {
            ConfigError::new(name, "expected a JSON object of names to string values")
        })?;
        let mut pairs = map
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Ok((k, s)),
                _ => Err(ConfigError::new(name, "values must be strings")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        pairs.sort();
        Ok(Some(pairs))
    }

    /// A socket address such as `127.0.0.1:8000`.
    pub fn address(&self, name: &str) -> Result<Option<SocketAddr>, ConfigError> {
        self.entry(name, &[ValueType::Address])?;
        let Some(raw) = self.raw(name) else {
            return Ok(None);
        };
        raw.parse()
            .map(Some)
            .map_err(|_| ConfigError::new(name, "expected an address such as 127.0.0.1:8000"))
    }
}
