//! The circuit breaker's state machine. Pure: the time is passed in, so every
//! transition is testable without a clock.
//!
//! Closed: requests pass; `consecutive_failures` failures in a row open it. Open:
//! requests are answered at once (fallback or 503) without touching the app, for
//! `open_for`. Then half-open: exactly one probe goes through; success closes the
//! circuit, failure opens it again for twice as long, up to `max_open_for`.

use std::time::Duration;

use tokio::time::Instant;

pub use crate::policy::CircuitSettings;

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Requests pass.
    Closed,
    /// Requests are answered without the app.
    Open,
    /// One probe is allowed to find out whether the app is back.
    HalfOpen,
}

impl CircuitState {
    /// The stable name, for `/readyz` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }

    /// The value of the `sitegate_circuit_state` gauge.
    pub fn gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        }
    }
}

/// What the breaker says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Send it.
    Allow,
    /// Send it as the one probe of a half-open circuit.
    Probe,
    /// Do not send it: the circuit is open.
    Reject,
}

/// The breaker's memory.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: CircuitState,
    failures: u32,
    open_until: Instant,
    open_for: Duration,
    probe_out: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(now: Instant) -> Self {
        Breaker {
            state: CircuitState::Closed,
            failures: 0,
            open_until: now,
            open_for: Duration::ZERO,
            probe_out: false,
        }
    }

    /// The state as recorded: an open circuit stays `Open` here until a request
    /// comes to probe it.
    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// The state as an operator should see it at `now`: an open circuit whose time is
    /// up is half-open, since the next request will be its probe, whether or not one
    /// has come yet.
    pub fn state_at(&self, now: Instant) -> CircuitState {
        match self.state {
            CircuitState::Open if now >= self.open_until => CircuitState::HalfOpen,
            state => state,
        }
    }

    /// True when closed with no failure counted: nothing a success could change.
    pub fn is_clean(&self) -> bool {
        self.state == CircuitState::Closed && self.failures == 0
    }

    /// Decides whether a request may go to the app now.
    pub fn admit(&mut self, now: Instant, cfg: &CircuitSettings) -> Admit {
        if cfg.consecutive_failures == 0 {
            return Admit::Allow;
        }
        match self.state {
            CircuitState::Closed => Admit::Allow,
            CircuitState::Open if now >= self.open_until => {
                self.state = CircuitState::HalfOpen;
                self.probe_out = true;
                Admit::Probe
            }
            CircuitState::HalfOpen if !self.probe_out => {
                self.probe_out = true;
                Admit::Probe
            }
            CircuitState::Open | CircuitState::HalfOpen => Admit::Reject,
        }
    }

    /// Records how a request that was let through ended.
    pub fn record(&mut self, now: Instant, cfg: &CircuitSettings, probe: bool, success: bool) {
        if cfg.consecutive_failures == 0 {
            *self = Breaker::new(now);
            return;
        }
        match (success, probe) {
            (true, true) => *self = Breaker::new(now),
            (true, false) => {
                if self.state == CircuitState::Closed {
                    self.failures = 0;
                }
            }
            (false, true) => {
                self.open_for =
                    (self.open_for * 2).clamp(cfg.open_for, cfg.max_open_for.max(cfg.open_for));
                self.open(now);
            }
            (false, false) => {
                if self.state == CircuitState::Closed {
                    self.failures += 1;
                    if self.failures >= cfg.consecutive_failures {
                        self.open_for = cfg.open_for;
                        self.open(now);
                    }
                }
            }
        }
    }

    /// A probe that ended without an outcome (the client went away): let the next
    /// request probe instead.
    pub fn abandon_probe(&mut self) {
        if self.state == CircuitState::HalfOpen {
            self.probe_out = false;
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = CircuitState::Open;
        self.open_until = now + self.open_for;
        self.probe_out = false;
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: CircuitSettings = CircuitSettings {
        consecutive_failures: 3,
        open_for: Duration::from_secs(10),
        max_open_for: Duration::from_secs(35),
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t = Instant::now();
        let mut b = Breaker::new(t);
        b.record(t, &CFG, false, false);
        b.record(t, &CFG, false, false);
        b.record(t, &CFG, false, true); // a success resets the count
        b.record(t, &CFG, false, false);
        b.record(t, &CFG, false, false);
        assert_eq!(b.admit(t, &CFG), Admit::Allow);
        b.record(t, &CFG, false, false);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.admit(t + secs(9), &CFG), Admit::Reject);
    }

    #[test]
    fn one_probe_after_open_for_then_close_on_success() {
        let t = Instant::now();
        let mut b = Breaker::new(t);
        for _ in 0..3 {
            b.record(t, &CFG, false, false);
        }
        assert_eq!(b.admit(t + secs(10), &CFG), Admit::Probe);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        // Only one probe at a time.
        assert_eq!(b.admit(t + secs(10), &CFG), Admit::Reject);
        b.record(t + secs(11), &CFG, true, true);
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(b.is_clean());
        assert_eq!(b.admit(t + secs(11), &CFG), Admit::Allow);
    }

    #[test]
    fn failed_probes_double_the_open_time_up_to_the_cap() {
        let t = Instant::now();
        let mut b = Breaker::new(t);
        for _ in 0..3 {
            b.record(t, &CFG, false, false);
        }
        let mut now = t + secs(10);
        for expected in [20, 35, 35] {
            assert_eq!(b.admit(now, &CFG), Admit::Probe);
            b.record(now, &CFG, true, false);
            assert_eq!(
                b.admit(now + secs(expected) - Duration::from_millis(1), &CFG),
                Admit::Reject
            );
            now += secs(expected);
        }
        assert_eq!(b.admit(now, &CFG), Admit::Probe);
        b.record(now, &CFG, true, true);
        // After closing, the next opening starts from open_for again.
        for _ in 0..3 {
            b.record(now, &CFG, false, false);
        }
        assert_eq!(b.admit(now + secs(10), &CFG), Admit::Probe);
    }

    #[test]
    fn an_abandoned_probe_lets_another_request_probe() {
        let t = Instant::now();
        let mut b = Breaker::new(t);
        for _ in 0..3 {
            b.record(t, &CFG, false, false);
        }
        assert_eq!(b.admit(t + secs(10), &CFG), Admit::Probe);
        b.abandon_probe();
        assert_eq!(b.admit(t + secs(10), &CFG), Admit::Probe);
    }

    #[test]
    fn late_failures_of_requests_sent_before_opening_do_not_extend_it() {
        let t = Instant::now();
        let mut b = Breaker::new(t);
        for _ in 0..3 {
            b.record(t, &CFG, false, false);
        }
        b.record(t + secs(5), &CFG, false, false);
        assert_eq!(b.admit(t + secs(10), &CFG), Admit::Probe);
    }

    #[test]
    fn zero_threshold_disables_the_breaker() {
        let off = CircuitSettings {
            consecutive_failures: 0,
            ..CFG
        };
        let t = Instant::now();
        let mut b = Breaker::new(t);
        for _ in 0..100 {
            b.record(t, &off, false, false);
        }
        assert_eq!(b.admit(t, &off), Admit::Allow);
    }
}
