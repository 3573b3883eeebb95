//! Rate-limited failure logs: at most one line per interval per place, carrying how many
//! occurrences were folded into it. Failures are always logged (warn or error), never only at
//! debug, but a failure storm must not flood the log.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One limiter per log site.
#[derive(Debug)]
pub struct LogLimit {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    folded: AtomicU64,
}

impl LogLimit {
    pub const fn new(interval: Duration) -> Self {
        Self { interval, last: Mutex::new(None), folded: AtomicU64::new(0) }
    }

    /// `Some(n)` when this occurrence should be logged, `n` being how many earlier ones were
    /// folded since the last line; `None` when it is folded into the next line.
    pub fn admit(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = match self.last.lock() {
            Ok(last) => last,
            Err(poisoned) => poisoned.into_inner(),
        };
        match *last {
            Some(at) if now.duration_since(at) < self.interval => {
                self.folded.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.folded.swap(0, Ordering::Relaxed))
            }
        }
    }
}

/// The usual interval: one line per 10 seconds per site.
pub const INTERVAL: Duration = Duration::from_secs(10);

impl Default for LogLimit {
    /// One line per 10 seconds.
    fn default() -> Self {
        Self::new(INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_occurrences_between_lines() {
        let limit = LogLimit::new(Duration::from_secs(3600));
        assert_eq!(limit.admit(), Some(0));
        assert_eq!(limit.admit(), None);
        assert_eq!(limit.admit(), None);
        let zero = LogLimit::new(Duration::ZERO);
        assert_eq!(zero.admit(), Some(0));
        assert_eq!(zero.admit(), Some(0));
    }
}
