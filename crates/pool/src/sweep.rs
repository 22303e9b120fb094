//! [`every`]: a background task that does some upkeep on a pool at a fixed
//! period for as long as the pool lives.

use std::sync::Weak;
use std::time::Duration;

/// Spawns a task that calls `upkeep` on `target` every `period` (the first
/// call one period from now; late ticks are not made up) and ends once
/// `target` has been dropped. It holds only a weak reference between
/// ticks, so it never keeps the pool alive.
pub(crate) fn every<T, F>(period: Duration, target: Weak<T>, upkeep: F)
where
    T: Send + Sync + 'static,
    F: Fn(&T) + Send + 'static,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(target) = target.upgrade() else {
                break;
            };
            upkeep(&target);
        }
    });
}
