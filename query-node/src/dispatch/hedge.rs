//! When to hedge an executor call: after the configured delay, or (`auto`) after the
//! executor's recent 95th-percentile answer time for calls of the same class, the call's
//! fragments are sent to their next replica too and the first answer wins ("The Tail at
//! Scale", Dean and Barroso). Classes keep heavy calls (a vector search of a whole index
//! segment group) from being judged by light ones (a scan of one fragment), which would
//! hedge every heavy call to a replica that reads it cold.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lancefleet_common::config::HedgeAfter;
use lancefleet_proto::v1::PlanFragment;

/// Answer times kept per executor.
const WINDOW: usize = 64;
/// Answers an executor must have given before `auto` hedges its calls.
const MIN_SAMPLES: usize = 16;
/// The shortest `auto` hedge delay (a loopback call under a millisecond is not slow).
const MIN_DELAY: Duration = Duration::from_millis(5);

/// What kind of work an executor call is, for its answer-time statistics: the search it
/// runs (vector, full-text, scan, or a whole-table part) and its number of fragments,
/// rounded to a power of two. Few classes, so the statistics stay small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallClass {
    kind: u8,
    fragments_log2: u8,
}

impl CallClass {
    /// The class of `fragment`.
    pub fn of(fragment: &PlanFragment) -> Self {
        let query = fragment.query.as_ref();
        let kind = match query {
            _ if fragment.whole_table => 3,
            Some(query) if query.nearest.is_some() => 2,
            Some(query) if query.full_text.is_some() => 1,
            _ => 0,
        };
        let fragments = fragment.fragment_ids.len();
        Self { kind, fragments_log2: (usize::BITS - fragments.leading_zeros()) as u8 }
    }
}

/// The recent answer times of one executor's calls of one class.
type Window = VecDeque<Duration>;

/// Recent answer times by executor and call class, and the hedging policy.
#[derive(Debug)]
pub struct Hedging {
    policy: HedgeAfter,
    latencies: Mutex<HashMap<(Arc<str>, CallClass), Window>>,
}

impl Hedging {
    /// Hedging as `policy` says.
    pub fn new(policy: HedgeAfter) -> Self {
        Self { policy, latencies: Mutex::default() }
    }

    /// Records that `node` answered a call of `class` in `elapsed`.
    pub fn observe(&self, node: &Arc<str>, class: CallClass, elapsed: Duration) {
        if self.policy != HedgeAfter::Auto {
            return;
        }
        if let Ok(mut latencies) = self.latencies.lock() {
            let window = latencies.entry((node.clone(), class)).or_default();
            if window.len() == WINDOW {
                window.pop_front();
            }
            window.push_back(elapsed);
        }
    }

    /// How long a call of `class` to `node` may go unanswered before it is hedged;
    /// `None`: never (or not before `node` has answered enough calls of the class).
    pub fn delay(&self, node: &Arc<str>, class: CallClass) -> Option<Duration> {
        match self.policy {
            HedgeAfter::Off => None,
            HedgeAfter::After(delay) => Some(delay),
            HedgeAfter::Auto => {
                let latencies = self.latencies.lock().ok()?;
                let window = latencies.get(&(node.clone(), class)).filter(|window| window.len() >= MIN_SAMPLES)?;
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
    use lancefleet_proto::v1::{FragmentQuery, NearestQuery};

    use super::*;

    #[test]
    fn auto_hedges_after_the_executors_95th_percentile_once_it_has_answered_enough() {
        let hedging = Hedging::new(HedgeAfter::Auto);
        let node: Arc<str> = Arc::from("pe-0");
        let scan = CallClass::of(&PlanFragment { fragment_ids: vec![1], ..PlanFragment::default() });
        for _ in 0..MIN_SAMPLES - 1 {
            hedging.observe(&node, scan, Duration::from_millis(10));
        }
        assert_eq!(hedging.delay(&node, scan), None, "too few answers to know what slow is");
        for millis in 0..100 {
            hedging.observe(&node, scan, Duration::from_millis(10 + millis % 20));
        }
        let delay = hedging.delay(&node, scan).expect("hedged");
        assert!(delay >= Duration::from_millis(25) && delay <= Duration::from_millis(29), "{delay:?}");
        hedging.observe(&Arc::from("fast"), scan, Duration::from_micros(50));
        assert_eq!(Hedging::new(HedgeAfter::Off).delay(&node, scan), None);
        let fixed = Hedging::new(HedgeAfter::After(Duration::from_millis(40)));
        assert_eq!(fixed.delay(&node, scan), Some(Duration::from_millis(40)));
    }

    #[test]
    fn heavy_calls_are_judged_by_their_own_class() {
        let hedging = Hedging::new(HedgeAfter::Auto);
        let node: Arc<str> = Arc::from("pe-0");
        let scan = CallClass::of(&PlanFragment { fragment_ids: vec![1], ..PlanFragment::default() });
        let search = PlanFragment {
            fragment_ids: (0..24).collect(),
            query: Some(FragmentQuery { nearest: Some(NearestQuery::default()), ..FragmentQuery::default() }),
            ..PlanFragment::default()
        };
        let search = CallClass::of(&search);
        assert_ne!(scan, search);
        for _ in 0..100 {
            hedging.observe(&node, scan, Duration::from_millis(2));
        }
        assert_eq!(hedging.delay(&node, search), None, "no answers of its class yet");
        for _ in 0..MIN_SAMPLES {
            hedging.observe(&node, search, Duration::from_millis(80));
        }
        assert_eq!(hedging.delay(&node, search), Some(Duration::from_millis(80)));
        assert_eq!(hedging.delay(&node, scan), Some(MIN_DELAY));
        let sized = |fragments: u64| {
            CallClass::of(&PlanFragment { fragment_ids: (0..fragments).collect(), ..PlanFragment::default() })
        };
        assert_eq!(sized(17), sized(24), "sizes within a power of two share a class");
        assert_ne!(sized(2), sized(24));
    }
}
