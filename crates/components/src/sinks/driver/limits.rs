//! How many requests a sink may have in flight, and how fast it may start them.
//!
//! [`Slots`] is the request-concurrency limit: fixed (`request.concurrency = N` or `"none"`)
//! or adaptive (`"adaptive"`, the default). Adaptive control is AIMD on observed round-trip
//! time and back-pressure, as Vector's adaptive request concurrency does:
//! - every response adds its RTT to the current window; a window closes after about one
//!   past RTT;
//! - when a window closes, if it saw back-pressure (429, 503, a timeout) or its mean RTT rose
//!   above the long-run mean by more than `rtt_deviation_scale` deviations, the limit is
//!   multiplied by `decrease_ratio`; otherwise, if the limit was reached during the window
//!   and its mean RTT was not above the long-run mean, it grows by one;
//! - the long-run mean and deviation are EWMAs (`ewma_alpha`) of the windows' mean RTTs.
//!
//! [`RateLimit`] is `request.rate_limit_num` requests per `rate_limit_duration_secs`; every
//! request counts, retries included.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::AdaptiveConcurrency;

/// What a response says about the destination's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Answered (delivered or rejected on its merits).
    Normal,
    /// Overloaded: 429, 503, a timeout.
    BackPressure,
}

#[derive(Debug, Clone, Copy)]
pub struct AdaptiveSettings {
    pub initial: usize,
    pub max: usize,
    pub decrease_ratio: f64,
    pub ewma_alpha: f64,
    pub rtt_deviation_scale: f64,
}

impl AdaptiveSettings {
    pub fn new(config: Option<&AdaptiveConcurrency>) -> Self {
        let c = config.cloned().unwrap_or_default();
        let max = c.max_concurrency_limit.unwrap_or(200).max(1);
        Self {
            initial: c.initial_concurrency.unwrap_or(1).clamp(1, max),
            max,
            decrease_ratio: c.decrease_ratio.unwrap_or(0.9).clamp(0.01, 1.0),
            ewma_alpha: c.ewma_alpha.unwrap_or(0.4).clamp(0.01, 1.0),
            rtt_deviation_scale: c.rtt_deviation_scale.unwrap_or(2.5).max(0.0),
        }
    }
}

#[derive(Debug)]
struct Window {
    start: Instant,
    rtt_sum: Duration,
    responses: u32,
    back_pressure: bool,
    reached_limit: bool,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self { start: now, rtt_sum: Duration::ZERO, responses: 0, back_pressure: false, reached_limit: false }
    }
}

#[derive(Debug)]
struct State {
    limit: usize,
    in_flight: usize,
    /// Adaptive control; `None` for a fixed limit.
    adaptive: Option<Control>,
}

#[derive(Debug)]
struct Control {
    settings: AdaptiveSettings,
    /// Long-run mean and mean absolute deviation of RTT, in seconds.
    mean: Option<f64>,
    deviation: f64,
    window: Window,
}

/// The request-concurrency limit of one sink.
#[derive(Debug)]
pub struct Slots {
    state: Mutex<State>,
    freed: Notify,
}

impl Slots {
    pub fn fixed(limit: usize) -> Self {
        Self::with_state(State { limit: limit.max(1), in_flight: 0, adaptive: None })
    }

    pub fn adaptive(settings: AdaptiveSettings) -> Self {
        let control = Control { settings, mean: None, deviation: 0.0, window: Window::new(Instant::now()) };
        Self::with_state(State { limit: settings.initial, in_flight: 0, adaptive: Some(control) })
    }

    fn with_state(state: State) -> Self {
        Self { state: Mutex::new(state), freed: Notify::new() }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.state.lock().map(|s| s.limit).unwrap_or(1)
    }

    /// Waits for a free slot and takes it.
    ///
    /// # Cancel safety
    /// Cancel safe: a slot is taken only when the future completes.
    pub async fn acquire(&self) {
        loop {
            let notified = self.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Ok(mut state) = self.state.lock()
                && state.in_flight < state.limit
            {
                state.in_flight += 1;
                if state.in_flight >= state.limit
                    && let Some(control) = &mut state.adaptive
                {
                    control.window.reached_limit = true;
                }
                return;
            }
            notified.await;
        }
    }

    /// Records what one request observed (a slot may carry several: retries, split halves).
    pub fn observe(&self, rtt: Duration, signal: Signal) {
        if let Ok(mut state) = self.state.lock() {
            let limit = state.limit;
            if let Some(control) = &mut state.adaptive {
                state.limit = control.observe(limit, rtt, signal, Instant::now());
            }
        }
        self.freed.notify_waiters();
    }

    /// Gives a slot back.
    pub fn release(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        self.freed.notify_waiters();
    }
}

impl Control {
    /// Adds one response; closes the window when it is due. Returns the new limit.
    fn observe(&mut self, limit: usize, rtt: Duration, signal: Signal, now: Instant) -> usize {
        let w = &mut self.window;
        w.rtt_sum += rtt;
        w.responses += 1;
        w.back_pressure |= signal == Signal::BackPressure;
        let due = match self.mean {
            Some(mean) => now.duration_since(w.start).as_secs_f64() >= mean,
            None => true,
        };
        if !due {
            return limit;
        }
        let window_mean = w.rtt_sum.as_secs_f64() / f64::from(w.responses.max(1));
        let s = self.settings;
        let new_limit = match self.mean {
            _ if w.back_pressure => ((limit as f64 * s.decrease_ratio).floor() as usize).max(1),
            Some(mean) if window_mean > mean + s.rtt_deviation_scale * self.deviation => {
                ((limit as f64 * s.decrease_ratio).floor() as usize).max(1)
            }
            // Grow only on evidence: the limit was reached and RTT did not rise.
            Some(mean) if w.reached_limit && window_mean <= mean => (limit + 1).min(s.max),
            None if w.reached_limit => (limit + 1).min(s.max),
            _ => limit,
        };
        match self.mean {
            Some(mean) => {
                self.deviation = (1.0 - s.ewma_alpha) * self.deviation + s.ewma_alpha * (window_mean - mean).abs();
                self.mean = Some((1.0 - s.ewma_alpha) * mean + s.ewma_alpha * window_mean);
            }
            None => self.mean = Some(window_mean),
        }
        self.window = Window::new(now);
        new_limit
    }
}

/// `rate_limit_num` requests per `rate_limit_duration_secs`.
#[derive(Debug)]
pub struct RateLimit {
    num: u64,
    per: Duration,
    window: tokio::sync::Mutex<(Instant, u64)>,
}

impl RateLimit {
    pub fn new(num: Option<u64>, duration_secs: Option<f64>) -> Option<Self> {
        let num = num?;
        let per = Duration::from_secs_f64(duration_secs.unwrap_or(1.0).max(0.001));
        Some(Self { num: num.max(1), per, window: tokio::sync::Mutex::new((Instant::now(), 0)) })
    }

    /// Waits until one more request may start.
    pub async fn acquire(&self) {
        let mut window = self.window.lock().await;
        let now = Instant::now();
        if now >= window.0 + self.per {
            *window = (now, 0);
        }
        if window.1 >= self.num {
            let next = window.0 + self.per;
            tokio::time::sleep_until(next).await;
            *window = (next, 0);
        }
        window.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A destination that answers in `base` while at most `capacity` requests are in flight
    /// and slower beyond (queueing), with back-pressure past twice its capacity.
    async fn drive(slots: Arc<Slots>, capacity: usize, requests: usize) -> (usize, usize) {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..requests {
            slots.acquire().await;
            let (slots, in_flight, peak) = (slots.clone(), in_flight.clone(), peak.clone());
            tasks.spawn(async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let base = Duration::from_millis(50);
                let rtt = if now <= capacity { base } else { base * (now as u32) / (capacity as u32) };
                tokio::time::sleep(rtt).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let signal = if now > 2 * capacity { Signal::BackPressure } else { Signal::Normal };
                slots.observe(rtt, signal);
                slots.release();
            });
        }
        while tasks.join_next().await.is_some() {}
        (slots.limit(), peak.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn adaptive_limit_grows_to_the_destinations_capacity_and_no_further() {
        let settings = AdaptiveSettings::new(None);
        let slots = Arc::new(Slots::adaptive(settings));
        let (limit, peak) = drive(slots, 10, 3000).await;
        assert!((8..=14).contains(&limit), "limit {limit} should settle near the capacity of 10");
        assert!(peak <= 20, "never far past capacity: peak {peak}");
    }

    #[tokio::test(start_paused = true)]
    async fn back_pressure_cuts_the_limit() {
        let settings = AdaptiveSettings { initial: 40, ..AdaptiveSettings::new(None) };
        let slots = Arc::new(Slots::adaptive(settings));
        // Back-pressure starts past 8 in flight (twice the capacity of 4).
        let (limit, _) = drive(slots, 4, 2000).await;
        assert!(limit <= 9, "limit {limit} should fall from 40 to where back-pressure starts");
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_limit_is_respected() {
        let slots = Arc::new(Slots::fixed(3));
        let (limit, peak) = drive(slots, 100, 100).await;
        assert_eq!((limit, peak), (3, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_spaces_requests() {
        let limit = RateLimit::new(Some(10), Some(1.0)).unwrap_or_else(|| panic!("configured"));
        let start = Instant::now();
        for _ in 0..35 {
            limit.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(3), "35 requests at 10 per second start within 3 s");
    }
}
