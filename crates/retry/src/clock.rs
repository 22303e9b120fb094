//! Clock arithmetic of the success path.

use tokio::time::Instant;

/// Nanoseconds from `origin` to `now` (0 if `now` is earlier), in u64
/// arithmetic: the u128 of `Duration::as_nanos` costs a library division
/// on every use, more than the rest of a budget deposit.
pub(crate) fn nanos_since(origin: Instant, now: Instant) -> u64 {
    let since = now.saturating_duration_since(origin);
    since
        .as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(since.subsec_nanos()))
}
