//! [`Secret`]: a value that never shows itself in formatted output.

use std::fmt;

/// A password, token or URL with credentials. `Debug` and `Display` print
/// `[redacted]`; the value is reachable only through [`Secret::expose`],
/// so every use is visible in review.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself. Never log or format it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret<String> {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret<String> {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// Whether a URL query parameter carries a credential: libpq's
/// `password`, `sslpassword`, `sslkey`; Redis' `sentinelPassword`; and any
/// name containing `password`, `passwd`, `secret`, `token` or `key`
/// (case-insensitive), so a driver's new spelling is covered too.
fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "secret", "token", "key", "auth", "credential"]
        .iter()
        .any(|word| name.contains(word))
}

/// A URL with its password and every credential-bearing query parameter
/// (see `is_secret_param`) replaced by `***`, safe to log. Anything that
/// does not parse as a URL is not shown at all.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            if parsed.query().is_some() {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if is_secret_param(&k) {
                            "***".to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        Err(_) => "[unparsable url]".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_format() {
        let s = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn urls_lose_their_password() {
        let r = redact_url("postgres://ada:hunter2@db:5432/app");
        assert_eq!(r, "postgres://ada:***@db:5432/app");
        assert!(!redact_url("not a url hunter2").contains("hunter2"));
    }

    #[test]
    fn credentials_in_query_parameters_are_masked() {
        for url in [
            "postgres://app@db/app?password=hunter2",
            "postgres://app@db/app?sslmode=require&sslpassword=hunter2",
            "redis-sentinel://s1:26379/mymaster?sentinelPassword=hunter2",
            "https://api.example.com/?api_key=hunter2&x=1",
            "https://api.example.com/?access_token=hunter2",
            "postgres://app@db/app?PASSWORD=hunter2",
        ] {
            let shown = redact_url(url);
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
        assert_eq!(
            redact_url("postgres://db/app?sslmode=require&application_name=x"),
            "postgres://db/app?sslmode=require&application_name=x"
        );
    }
}
