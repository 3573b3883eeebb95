//! Bounded retries: exponential backoff with full jitter, `Retry-After`, and a total deadline.
//!
//! Vector's fields keep their meaning: `retry_attempts` (retries after the first try),
//! `retry_initial_backoff_secs`, `retry_max_duration_secs` (the cap on one backoff),
//! `retry_jitter_mode`. sluice adds `retry_deadline_secs` (default 600): once a batch has been
//! failing that long it goes to the dead-letter queue as `retries_exhausted`. No default
//! retries forever.

use std::time::Duration;

use rand::Rng;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JitterMode {
    Full,
    None,
}

/// `retry_strategy`: which HTTP statuses are retried.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RetryStrategy {
    /// 408, 429 and 5xx except 501.
    #[default]
    Default,
    /// Every non-2xx status.
    All,
    /// Only these statuses.
    Custom { status_codes: Vec<u16> },
    /// Nothing, timeouts included.
    None,
}

impl RetryStrategy {
    pub fn retries_status(&self, status: u16) -> bool {
        match self {
            Self::Default => status == 408 || status == 429 || ((500..600).contains(&status) && status != 501),
            Self::All => !(200..300).contains(&status),
            Self::Custom { status_codes } => status_codes.contains(&status),
            Self::None => false,
        }
    }

    /// Whether transport failures (timeouts, refused connections) are retried.
    pub fn retries_transport(&self) -> bool {
        !matches!(self, Self::None)
    }
}

/// The retry settings of one sink.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u64,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub jitter: JitterMode,
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: u64::MAX,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            jitter: JitterMode::Full,
            deadline: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// The backoff before retry number `retry` (1-based), before jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1).min(30));
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }

    /// How long to wait before retry number `retry`, or `None` when the budget is spent.
    /// `elapsed` is how long the batch has been failing; `retry_after` is the server's hint.
    pub fn next_wait(&self, retry: u32, elapsed: Duration, retry_after: Option<Duration>) -> Option<Duration> {
        if u64::from(retry) > self.attempts {
            return None;
        }
        let wait = match retry_after {
            Some(hint) => hint,
            None => {
                let base = self.backoff(retry);
                match self.jitter {
                    JitterMode::Full => base.mul_f64(rand::rng().random_range(0.0..=1.0)),
                    JitterMode::None => base,
                }
            }
        };
        (elapsed + wait <= self.deadline).then_some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_strategy_classes() {
        let s = RetryStrategy::Default;
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(s.retries_status(status), "{status}");
        }
        for status in [400, 401, 403, 404, 413, 422, 501] {
            assert!(!s.retries_status(status), "{status}");
        }
        assert!(!RetryStrategy::None.retries_transport());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_respects_the_deadline() {
        let p = RetryPolicy { jitter: JitterMode::None, ..RetryPolicy::default() };
        assert_eq!(p.backoff(1), Duration::from_secs(1));
        assert_eq!(p.backoff(3), Duration::from_secs(4));
        assert_eq!(p.backoff(10), Duration::from_secs(30));
        assert_eq!(p.next_wait(1, Duration::from_millis(599_500), None), None);
        assert_eq!(p.next_wait(1, Duration::ZERO, Some(Duration::from_secs(7))), Some(Duration::from_secs(7)));
        let limited = RetryPolicy { attempts: 2, ..p };
        assert!(limited.next_wait(2, Duration::ZERO, None).is_some());
        assert_eq!(limited.next_wait(3, Duration::ZERO, None), None);
    }

    #[test]
    fn full_jitter_stays_within_the_backoff() {
        let p = RetryPolicy::default();
        for _ in 0..100 {
            let wait = p.next_wait(3, Duration::ZERO, None).unwrap_or(Duration::MAX);
            assert!(wait <= Duration::from_secs(4));
        }
    }
}
