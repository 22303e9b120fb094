//! What a policy returns when it gives up, and configuration errors.

use std::fmt;
use std::time::Duration;

use crate::classify::{Class, Classify};

/// A configuration value was rejected at construction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid retry configuration: {reason}")]
pub struct InvalidConfig {
    reason: &'static str,
}

impl InvalidConfig {
    pub(crate) fn new(reason: &'static str) -> Self {
        Self { reason }
    }

    /// Why the value was rejected.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// Why a policy stopped trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GiveUp {
    /// The error was permanent: retrying could not help.
    Permanent,
    /// Every allowed attempt failed.
    AttemptsExhausted,
    /// The overall deadline passed, or the next retry could not fit in
    /// what was left of it.
    Deadline,
    /// The circuit breaker is open (or its half-open probes are taken).
    CircuitOpen,
    /// The retry budget had no retry to spare.
    Budget,
}

impl GiveUp {
    /// A fixed word for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUp::Permanent => "permanent",
            GiveUp::AttemptsExhausted => "attempts_exhausted",
            GiveUp::Deadline => "deadline",
            GiveUp::CircuitOpen => "circuit_open",
            GiveUp::Budget => "budget",
        }
    }
}

/// How one attempt failed.
#[derive(Debug)]
pub enum Failure<E> {
    /// The operation returned an error.
    Error(E),
    /// The attempt ran out of time (per-attempt timeout or the deadline).
    Timeout(Duration),
}

impl<E: fmt::Display> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Error(e) => e.fmt(f),
            Failure::Timeout(after) => write!(f, "timed out after {after:?}"),
        }
    }
}

/// A call that did not succeed: why the policy gave up, how many attempts
/// it made, and how each failed.
#[derive(Debug)]
pub struct RetryError<E> {
    pub(crate) reason: GiveUp,
    pub(crate) attempts: u32,
    pub(crate) failures: Vec<Failure<E>>,
    pub(crate) retry_after: Option<Duration>,
}

impl<E> RetryError<E> {
    /// Why the policy stopped.
    pub fn reason(&self) -> GiveUp {
        self.reason
    }

    /// Attempts actually started (0 when the breaker rejected the call).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Each attempt's failure, in order.
    pub fn failures(&self) -> &[Failure<E>] {
        &self.failures
    }

    /// The last attempt's failure, if an attempt was made.
    pub fn last(&self) -> Option<&Failure<E>> {
        self.failures.last()
    }

    /// The last attempt's error, if it returned one (rather than timing out).
    pub fn into_last_error(mut self) -> Option<E> {
        match self.failures.pop() {
            Some(Failure::Error(e)) => Some(e),
            _ => None,
        }
    }

    /// When to come back: the time until the breaker half-opens, or the
    /// server's last `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether the last failure was a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self.last(), Some(Failure::Timeout(_)))
    }
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            GiveUp::CircuitOpen if self.attempts == 0 => {
                write!(f, "circuit open")?;
                if let Some(after) = self.retry_after {
                    write!(f, ", retry in {after:?}")?;
                }
                return Ok(());
            }
            GiveUp::Permanent => write!(f, "permanent failure")?,
            GiveUp::AttemptsExhausted => write!(f, "all attempts failed")?,
            GiveUp::Deadline => write!(f, "deadline exceeded")?,
            GiveUp::CircuitOpen => write!(f, "circuit opened")?,
            GiveUp::Budget => write!(f, "retry budget exhausted")?,
        }
        write!(
            f,
            " after {} attempt{}",
            self.attempts,
            if self.attempts == 1 { "" } else { "s" }
        )?;
        for (i, failure) in self.failures.iter().enumerate() {
            write!(
                f,
                "{} attempt {}: {failure}",
                if i == 0 { ":" } else { ";" },
                i + 1
            )?;
        }
        Ok(())
    }
}

impl<E: std::error::Error + 'static> std::error::Error for RetryError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.last() {
            Some(Failure::Error(e)) => Some(e),
            _ => None,
        }
    }
}

/// A gave-up call is itself transient unless its cause was permanent, so
/// policies can be nested (an outer policy does not retry a permanent error).
impl<E> Classify for RetryError<E> {
    fn class(&self) -> Class {
        match self.reason {
            GiveUp::Permanent => Class::Permanent,
            _ => Class::Transient,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}
