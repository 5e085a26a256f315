//! The one retry policy: exponential backoff with jitter, at least as long as a server's
//! `Retry-After`, and cut short by a stop request. Every retry in the client (a failed replica
//! write, an interrupted fetch, a 429/503, the cloud unreachable) waits through here, so there
//! is one place that decides how long, and one place that sleeps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Sleeps for `period`, waking early (within 100 ms) if `stop` is set.
pub fn sleep(period: Duration, stop: &AtomicBool) {
    let until = Instant::now() + period;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Backoff state for one kind of failure; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first`, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max, next: first }
    }

    /// For a call to the cloud that failed (a fetch, a token refresh): 0.5 s doubling to 60 s,
    /// short because the next long-poll is what the replica waits for.
    pub fn cloud() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(60))
    }

    /// For a replica write that failed for a passing reason (a lock, a restart): 0.25 s
    /// doubling to 30 s, the same batch written again each time.
    pub fn replica() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(30))
    }

    /// For a whole run that stopped (`sync` restarting, a partner's tenant list or one
    /// tenant's pass): 1 s doubling to 5 min, so a lasting problem costs little.
    pub fn run() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(300))
    }

    /// The next delay: between half and all of the current step (jitter, so many clients do
    /// not retry in lockstep), never less than `hint`; the step then doubles.
    pub fn delay(&mut self, hint: Option<Duration>) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let random = f64::from(u16::from_le_bytes(crate::secrets::random_bytes::<2>())) / f64::from(u16::MAX);
        let jittered = step.mul_f64(0.5 + 0.5 * random);
        jittered.max(hint.unwrap_or_default())
    }

    /// Sleeps for [`Backoff::delay`], waking early if `stop` is set; returns the delay.
    pub fn wait(&mut self, hint: Option<Duration>, stop: &AtomicBool) -> Duration {
        let delay = self.delay(hint);
        sleep(delay, stop);
        delay
    }

    /// After a success: the next failure starts from the first step again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_up_to_the_cap_and_honour_the_hint() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        for step in [100u64, 200, 400, 400] {
            let d = b.delay(None);
            assert!(d >= Duration::from_millis(step / 2) && d <= Duration::from_millis(step), "{d:?} for {step}");
        }
        assert!(b.delay(Some(Duration::from_secs(3))) >= Duration::from_secs(3));
        b.reset();
        assert!(b.delay(None) <= Duration::from_millis(100));
        let stop = AtomicBool::new(true);
        let started = Instant::now();
        b.wait(Some(Duration::from_secs(30)), &stop);
        assert!(started.elapsed() < Duration::from_secs(5), "a stop request cuts the wait short");
    }
}
