//! PostgreSQL host lists as libpq takes them: several hosts in a URL
//! (`postgres://u@db1:5432,db2:5432/app`) or in the host field, and
//! `target_session_attrs`. Parsing only; `servers.rs` uses them.

use crate::error::{Error, Result};

/// Which servers a pool accepts (libpq's `target_session_attrs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum TargetSession {
    /// Any server that accepts the connection (libpq's default).
    #[default]
    Any,
    /// Only a server that takes writes (`transaction_read_only = off`).
    ReadWrite,
}

impl TargetSession {
    fn parse(value: &str) -> Result<Self> {
        match value {
            "any" => Ok(Self::Any),
            "read-write" | "primary" => Ok(Self::ReadWrite),
            // Named as the URL, the setting it comes in.
            _ => Err(Error::config(
                "url",
                "target_session_attrs must be any, read-write or primary",
            )),
        }
    }
}

/// A host and its port, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPort {
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
}

#[cfg(test)]
impl HostPort {
    pub(crate) fn new(host: &str, port: Option<u16>) -> Self {
        Self {
            host: host.to_owned(),
            port,
        }
    }
}

/// A PostgreSQL URL taken apart: the URL sqlx can parse (first host only,
/// `target_session_attrs` removed), every host, and the target.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SplitUrl {
    pub(crate) url: String,
    pub(crate) hosts: Vec<HostPort>,
    pub(crate) target: TargetSession,
}

/// Splits a `postgres://` URL with one or several hosts. Errors never
/// quote the URL (it may hold a password).
pub(crate) fn split_url(url: &str) -> Result<SplitUrl> {
    let invalid = || Error::config("url", "not a valid PostgreSQL URL");
    let scheme_end = url.find("://").ok_or_else(invalid)? + 3;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // The last `@` ends the user info (a password may hold an `@`).
    let (userinfo, host_list) = match authority.rsplit_once('@') {
        Some((user, hosts)) => (Some(user), hosts),
        None => (None, authority),
    };
    let hosts = if host_list.is_empty() {
        Vec::new()
    } else {
        split_hosts(host_list, "url")?
    };
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    let mut target = TargetSession::Any;
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        match pair.split_once('=') {
            Some(("target_session_attrs", value)) => target = TargetSession::parse(value)?,
            _ => kept.push(pair),
        }
    }
    let mut first = String::with_capacity(url.len());
    first.push_str(&url[..scheme_end]);
    if let Some(user) = userinfo {
        first.push_str(user);
        first.push('@');
    }
    if let Some(host) = host_list.split(',').next() {
        first.push_str(host);
    }
    first.push_str(path);
    if !kept.is_empty() {
        first.push('?');
        first.push_str(&kept.join("&"));
    }
    Ok(SplitUrl {
        url: first,
        hosts,
        target,
    })
}

/// `db1:5432,db2,[::1]:5433`: hosts with optional ports. `field` names
/// the setting in errors.
pub(crate) fn split_hosts(list: &str, field: &'static str) -> Result<Vec<HostPort>> {
    list.split(',')
        .map(|item| {
            let bad_port = || Error::config(field, "a host's port is not a number from 1 to 65535");
            let (host, port) = if let Some(v6) = item.strip_prefix('[') {
                let (host, after) = v6
                    .split_once(']')
                    .ok_or_else(|| Error::config(field, "an IPv6 host lacks its closing `]`"))?;
                (host, after.strip_prefix(':'))
            } else {
                match item.rsplit_once(':') {
                    Some((host, port)) => (host, Some(port)),
                    None => (item, None),
                }
            };
            if host.is_empty() {
                return Err(Error::config(field, "an empty host in the host list"));
            }
            let port = match port {
                Some(p) => Some(
                    p.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(bad_port)?,
                ),
                None => None,
            };
            Ok(HostPort {
                host: host.to_owned(),
                port,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_hosts_and_the_target_are_taken_out_of_the_url() {
        let s = split_url(
            "postgres://app:p@ss@db1:5432,db2,[::1]:6432/shop?sslmode=disable&target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(s.url, "postgres://app:p@ss@db1:5432/shop?sslmode=disable");
        assert_eq!(
            s.hosts,
            vec![
                HostPort::new("db1", Some(5432)),
                HostPort::new("db2", None),
                HostPort::new("::1", Some(6432))
            ]
        );
        assert_eq!(s.target, TargetSession::ReadWrite);
    }

    #[test]
    fn a_plain_url_is_left_as_it_is() {
        let s = split_url("postgres://u@localhost/db").unwrap();
        assert_eq!(s.url, "postgres://u@localhost/db");
        assert_eq!(s.hosts, vec![HostPort::new("localhost", None)]);
        assert_eq!(s.target, TargetSession::Any);
        let s = split_url("postgres:///db?host=/run/pg").unwrap();
        assert_eq!(s.url, "postgres:///db?host=/run/pg");
        assert!(s.hosts.is_empty());
    }

    #[test]
    fn bad_lists_are_named_without_quoting_the_url() {
        for url in [
            "postgres://u:secret@db1:x,db2/db",
            "postgres://u:secret@db1,,db2/db",
            "postgres://u:secret@db1/db?target_session_attrs=standby",
            "postgres://u:secret@[::1/db",
        ] {
            let e = split_url(url).unwrap_err().to_string();
            assert!(!e.contains("secret"), "{e}");
            assert!(
                e.contains("url") || e.contains("target_session_attrs"),
                "{e}"
            );
        }
    }
}
