//! When to hedge an executor call: after the configured delay, or (`auto`) after the
//! executor's recent 95th-percentile answer time, the call's fragments are sent to their
//! next replica too and the first answer wins ("The Tail at Scale", Dean and Barroso).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lancefleet_common::config::HedgeAfter;

/// Answer times kept per executor.
const WINDOW: usize = 64;
/// Answers an executor must have given before `auto` hedges its calls.
const MIN_SAMPLES: usize = 16;
/// The shortest `auto` hedge delay (a loopback call under a millisecond is not slow).
const MIN_DELAY: Duration = Duration::from_millis(5);

/// Recent answer times by executor, and the hedging policy.
#[derive(Debug)]
pub struct Hedging {
    policy: HedgeAfter,
    latencies: Mutex<HashMap<Arc<str>, VecDeque<Duration>>>,
}

impl Hedging {
    /// Hedging as `policy` says.
    pub fn new(policy: HedgeAfter) -> Self {
        Self { policy, latencies: Mutex::default() }
    }

    /// Records that `node` answered a call in `elapsed`.
    pub fn observe(&self, node: &Arc<str>, elapsed: Duration) {
        if self.policy != HedgeAfter::Auto {
            return;
        }
        if let Ok(mut latencies) = self.latencies.lock() {
            let window = latencies.entry(node.clone()).or_default();
            if window.len() == WINDOW {
                window.pop_front();
            }
            window.push_back(elapsed);
        }
    }

    /// How long a call to `node` may go unanswered before it is hedged; `None`: never.
    pub fn delay(&self, node: &Arc<str>) -> Option<Duration> {
        match self.policy {
            HedgeAfter::Off => None,
            HedgeAfter::After(delay) => Some(delay),
            HedgeAfter::Auto => {
                let latencies = self.latencies.lock().ok()?;
                let window = latencies.get(node).filter(|window| window.len() >= MIN_SAMPLES)?;
                let mut sorted = window.iter().copied().collect::<Vec<_>>();
                sorted.sort_unstable();
                let p95 = sorted[(sorted.len() * 95 / 100).min(sorted.len() - 1)];
                Some(p95.max(MIN_DELAY))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_hedges_after_the_executors_95th_percentile_once_it_has_answered_enough() {
        let hedging = Hedging::new(HedgeAfter::Auto);
        let node: Arc<str> = Arc::from("pe-0");
        for _ in 0..MIN_SAMPLES - 1 {
            hedging.observe(&node, Duration::from_millis(10));
        }
        assert_eq!(hedging.delay(&node), None, "too few answers to know what slow is");
        for millis in 0..100 {
            hedging.observe(&node, Duration::from_millis(10 + millis % 20));
        }
        let delay = hedging.delay(&node).expect("hedged");
        assert!(delay >= Duration::from_millis(25) && delay <= Duration::from_millis(29), "{delay:?}");
        hedging.observe(&Arc::from("fast"), Duration::from_micros(50));
        assert_eq!(Hedging::new(HedgeAfter::Off).delay(&node), None);
        let fixed = Hedging::new(HedgeAfter::After(Duration::from_millis(40)));
        assert_eq!(fixed.delay(&node), Some(Duration::from_millis(40)));
    }
}
