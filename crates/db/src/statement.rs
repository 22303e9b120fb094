//! Placeholders: one SQL text for PostgreSQL and SQLite.
//!
//! Statements use `$1`, `$2`, … for positional parameters or `:name` for
//! named ones (not both in one statement). They are rewritten for the
//! dialect — `$n` for PostgreSQL, `?n` for SQLite — skipping string
//! literals, quoted identifiers, comments, PostgreSQL `::` casts and
//! dollar-quoted strings. Values are always bound, never spliced into text.

use std::borrow::Cow;

use sluice_pool::Kind;

use crate::error::{DbError, Result};
use crate::params::{Params, Value};

/// SQL text: `&'static str` literals convert directly; text built at run
/// time must be declared trusted with [`Sql::trusted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sql(Cow<'static, str>);

impl Sql {
    /// SQL assembled at run time. The caller asserts that no untrusted
    /// input was spliced into it (values go in [`Params`]).
    pub fn trusted(text: String) -> Self {
        Sql(Cow::Owned(text))
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&'static str> for Sql {
    fn from(text: &'static str) -> Self {
        Sql(Cow::Borrowed(text))
    }
}

/// A statement rewritten for one dialect, with its values in bind order.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) text: String,
    pub(crate) values: Vec<Value>,
}

enum Placeholder<'a> {
    Position(usize),
    Name(&'a str),
}

/// Rewrites `sql` for `kind` and orders `params` to match.
pub(crate) fn prepare(sql: &Sql, params: Params, kind: Kind) -> Result<Prepared> {
    let text = sql.as_str();
    let mut out = String::with_capacity(text.len() + 8);
    let mut names: Vec<&str> = Vec::new();
    let (mut positional, mut named, mut highest) = (false, false, 0usize);
    let marker = if kind == Kind::Postgres { '$' } else { '?' };
    scan(text, |piece| match piece {
        Piece::Text(t) => out.push_str(t),
        Piece::Param(Placeholder::Position(n)) => {
            positional = true;
            highest = highest.max(n);
            out.push(marker);
            out.push_str(&n.to_string());
        }
        Piece::Param(Placeholder::Name(name)) => {
            named = true;
            let index = match names.iter().position(|n| *n == name) {
                Some(i) => i + 1,
                None => {
                    names.push(name);
                    names.len()
                }
            };
            out.push(marker);
            out.push_str(&index.to_string());
        }
    })?;
    if positional && named {
        return Err(DbError::invalid(
            "a statement uses either $n or :name placeholders, not both",
        ));
    }
    let values = match params {
        Params::None => Vec::new(),
        Params::Positional(values) => values,
        Params::Named(pairs) => {
            if positional {
                return Err(DbError::invalid(
                    "named parameters given for a statement with $n placeholders",
                ));
            }
            let mut ordered = Vec::with_capacity(names.len());
            for name in &names {
                let value = pairs
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| DbError::invalid(format!("missing parameter :{name}")))?;
                ordered.push(value);
            }
            if let Some((extra, _)) = pairs.iter().find(|(n, _)| !names.contains(&n.as_str())) {
                return Err(DbError::invalid(format!(
                    "parameter :{extra} is not used by the statement"
                )));
            }
            ordered
        }
    };
    if named && values.len() != names.len() {
        return Err(DbError::invalid("named placeholders need named parameters"));
    }
    if !named && values.len() != highest {
        return Err(DbError::invalid(format!(
            "the statement has {highest} positional parameter(s), {} given",
            values.len()
        )));
    }
    Ok(Prepared { text: out, values })
}

enum Piece<'a> {
    Text(&'a str),
    Param(Placeholder<'a>),
}

fn scan<'a>(text: &'a str, mut emit: impl FnMut(Piece<'a>)) -> Result<()> {
    let bytes = text.as_bytes();
    let (mut i, mut start) = (0usize, 0usize);
    let skip_until = |from: usize, end: &[u8]| -> Result<usize> {
        bytes[from..]
            .windows(end.len())
            .position(|w| w == end)
            .map(|p| from + p + end.len())
            .ok_or_else(|| DbError::invalid("unterminated quote or comment in SQL"))
    };
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => i = skip_until(i + 1, b"'")?,
            b'"' => i = skip_until(i + 1, b"\"")?,
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = skip_until(i, b"\n").unwrap_or(bytes.len())
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = skip_until(i + 2, b"*/")?,
            b':' if bytes.get(i + 1) == Some(&b':') => i += 2,
            b':' if bytes
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_') =>
            {
                let end = ident_end(bytes, i + 1);
                emit(Piece::Text(&text[start..i]));
                emit(Piece::Param(Placeholder::Name(&text[i + 1..end])));
                (i, start) = (end, end);
            }
            b'$' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let end = i
                    + 1
                    + bytes[i + 1..]
                        .iter()
                        .take_while(|c| c.is_ascii_digit())
                        .count();
                let n: usize = text[i + 1..end]
                    .parse()
                    .map_err(|_| DbError::invalid("placeholder number too large"))?;
                if n == 0 {
                    return Err(DbError::invalid("placeholders start at $1"));
                }
                emit(Piece::Text(&text[start..i]));
                emit(Piece::Param(Placeholder::Position(n)));
                (i, start) = (end, end);
            }
            b'$' => {
                // A dollar-quoted string: $$…$$ or $tag$…$tag$.
                let tag_end = ident_end(bytes, i + 1);
                if bytes.get(tag_end) == Some(&b'$') {
                    let tag = &bytes[i..=tag_end];
                    i = skip_until(tag_end + 1, tag)?;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    emit(Piece::Text(&text[start..]));
    Ok(())
}

fn ident_end(bytes: &[u8], from: usize) -> usize {
    from + bytes[from..]
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params;

    fn rewrite(sql: &'static str, params: Params, kind: Kind) -> Result<(String, usize)> {
        prepare(&Sql::from(sql), params, kind).map(|p| (p.text, p.values.len()))
    }

    #[test]
    fn positional_placeholders_per_dialect() {
        let sql = "SELECT * FROM users WHERE id = $1 AND email = $2";
        assert_eq!(
            rewrite(sql, params![1i64, "a"], Kind::Postgres).unwrap().0,
            sql
        );
        assert_eq!(
            rewrite(sql, params![1i64, "a"], Kind::Sqlite).unwrap().0,
            "SELECT * FROM users WHERE id = ?1 AND email = ?2"
        );
    }

    #[test]
    fn named_placeholders_are_numbered_by_first_use() {
        let p = prepare(
            &Sql::from("UPDATE t SET a = :x, b = :y WHERE c = :x"),
            params! {"y" => 2i64, "x" => 1i64},
            Kind::Sqlite,
        )
        .unwrap();
        assert_eq!(p.text, "UPDATE t SET a = ?1, b = ?2 WHERE c = ?1");
        assert_eq!(p.values, vec![Value::Int(Some(1)), Value::Int(Some(2))]);
    }

    #[test]
    fn quotes_comments_casts_and_dollar_strings_are_left_alone() {
        let sql = "SELECT ':no', \"$1\", x::text, $$ :nope $1 $$, $t$ :no $t$ -- :c $9\n /* :d */ FROM t WHERE a = :a";
        let (text, n) = rewrite(sql, params! {"a" => 1i64}, Kind::Postgres).unwrap();
        assert_eq!(n, 1);
        assert!(text.ends_with("WHERE a = $1"), "{text}");
        assert!(
            text.contains("x::text") && text.contains("':no'") && text.contains("$$ :nope $1 $$"),
            "{text}"
        );
    }

    #[test]
    fn mistakes_are_invalid_input() {
        let cases: [(&'static str, Params); 6] = [
            ("SELECT $1, :a", params![1i64]),
            ("SELECT :a", params! {"b" => 1i64}),
            ("SELECT :a", params! {"a" => 1i64, "b" => 2i64}),
            ("SELECT $1, $2", params![1i64]),
            ("SELECT $0", params![1i64]),
            ("SELECT 'unterminated", Params::None),
        ];
        for (sql, params) in cases {
            let err = rewrite(sql, params, Kind::Postgres).unwrap_err();
            assert!(
                matches!(err, DbError::InvalidInput { .. }),
                "{sql}: {err:?}"
            );
        }
    }
}
