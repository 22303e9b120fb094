//! Request paths whose segments callers cannot break out of.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986's unreserved characters is encoded, so `/`,
/// `?`, `#`, `%` and control characters inside a segment stay inside it.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A path relative to the upstream's base URL, built from segments.
///
/// `ApiPath::new().push("data").push(user_input)` always yields exactly two
/// segments: `../x` becomes `..%2Fx`, `a/b` becomes `a%2Fb`, `%2F` becomes
/// `%252F`, and a segment that is exactly `.` or `..` is encoded as
/// `%2E`/`%2E%2E` so no server normalises it away.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ApiPath {
    encoded: String,
}

impl ApiPath {
    /// The empty path (the base URL itself).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one segment, percent-encoded.
    pub fn push(mut self, segment: &str) -> Self {
        self.encoded.push('/');
        match segment {
            "." => self.encoded.push_str("%2E"),
            ".." => self.encoded.push_str("%2E%2E"),
            other => self.encoded.extend(utf8_percent_encode(other, SEGMENT)),
        }
        self
    }

    /// Segments from a literal path written in code (`"data/items"`):
    /// split on `/`, each encoded as with [`push`](Self::push).
    pub fn from_literal(path: &'static str) -> Self {
        path.split('/')
            .filter(|s| !s.is_empty())
            .fold(Self::new(), Self::push)
    }

    /// The encoded path, starting with `/` unless empty.
    pub fn as_str(&self) -> &str {
        &self.encoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_segments_stay_one_segment() {
        let cases = [
            ("../x", "/data/..%2Fx"),
            ("a/b", "/data/a%2Fb"),
            ("%2F", "/data/%252F"),
            ("..", "/data/%2E%2E"),
            (".", "/data/%2E"),
            ("a?b#c", "/data/a%3Fb%23c"),
            ("line\nbreak\u{0}", "/data/line%0Abreak%00"),
            ("ünï", "/data/%C3%BCn%C3%AF"),
            ("plain-id_1.2~3", "/data/plain-id_1.2~3"),
        ];
        for (input, expected) in cases {
            let path = ApiPath::new().push("data").push(input);
            assert_eq!(path.as_str(), expected, "{input:?}");
            assert_eq!(path.as_str().matches('/').count(), 2);
        }
    }

    #[test]
    fn literals_split_on_slashes() {
        assert_eq!(ApiPath::from_literal("v1/items/").as_str(), "/v1/items");
    }
}
