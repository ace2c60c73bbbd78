//! When to hedge an executor call: after the configured delay, or (`auto`) after the
//! fleet's recent 95th-percentile answer time for calls of the same class, the call's
//! fragments are sent to their next replica too and the first answer wins ("The Tail at
//! Scale", Dean and Barroso). Classes keep heavy calls (a vector search of a whole index
//! segment group) from being judged by light ones (a scan of one fragment), which would
//! hedge every heavy call to a replica that reads it cold.
//!
//! The delay is the lower median of the executors' own 95th percentiles, not the called
//! executor's: a stalled executor's late answers would otherwise raise its own threshold
//! until its calls were no longer hedged at all, exactly when hedging is needed. A median
//! holds while fewer than half the executors are slow.
//!
//! History lags a change of load: after a burst of concurrent queries the recent answers
//! are slow ones and the delay stays long until they are displaced. So `auto` also hedges
//! a straggler by its [`Siblings`], the other calls of the same round (the same query, on
//! other executors), much as speculative execution does in MapReduce and Spark: once three
//! quarters of them have answered, a call still running after 1.5 times the slowest of
//! their answer times is hedged, whatever the history says. The slowest, not Spark's
//! median: a round has a few calls, not thousands of tasks, and the median of two answers
//! is the faster one, which in the 1M-row benchmark hedged a quarter of all calls, nine in
//! ten of them lost to their primary (a hedge costs a replica a whole search). A call that
//! carries more fragments than any of its siblings is given proportionally longer, so a
//! round that gives one executor twice the fragments of the others does not hedge it
//! every time.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use lancefleet_common::config::HedgeAfter;
use lancefleet_proto::v1::PlanFragment;

/// Answer times kept per executor.
const WINDOW: usize = 64;
/// Answers an executor must have given before its 95th percentile counts.
const MIN_SAMPLES: usize = 16;
/// The shortest `auto` hedge delay (a loopback call under a millisecond is not slow).
const MIN_DELAY: Duration = Duration::from_millis(5);

/// How much slower than the slowest of its siblings that answered a call may be before it
/// is a straggler (as Spark's `spark.speculation.multiplier`), as a fraction.
const STRAGGLER_MULTIPLIER: (u32, u32) = (3, 2);
/// The share of a call's siblings that must have answered before it can be a straggler
/// (Spark's `spark.speculation.quantile`), as a fraction.
const STRAGGLER_QUANTILE: (usize, usize) = (3, 4);

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

/// The recent answer times of one executor's calls of one class, and their 95th
/// percentile once there are enough of them.
#[derive(Debug, Default)]
struct Window {
    answers: VecDeque<Duration>,
    p95: Option<Duration>,
}

impl Window {
    fn push(&mut self, elapsed: Duration) {
        if self.answers.len() == WINDOW {
            self.answers.pop_front();
        }
        self.answers.push_back(elapsed);
        self.p95 = (self.answers.len() >= MIN_SAMPLES).then(|| {
            let mut sorted = self.answers.iter().copied().collect::<Vec<_>>();
            let rank = (sorted.len() * 95 / 100).min(sorted.len() - 1);
            *sorted.select_nth_unstable(rank).1
        });
    }
}

/// Recent answer times by call class and executor, and the hedging policy.
#[derive(Debug)]
pub struct Hedging {
    policy: HedgeAfter,
    latencies: Mutex<HashMap<CallClass, HashMap<Arc<str>, Window>>>,
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
            latencies.entry(class).or_default().entry(node.clone()).or_default().push(elapsed);
        }
    }

    /// Keeps the answer times of the executors `member` says are still in the cluster, so
    /// those of one that left no longer count in its peers' hedge delays.
    pub fn retain(&self, member: impl Fn(&str) -> bool) {
        if let Ok(mut latencies) = self.latencies.lock() {
            latencies.values_mut().for_each(|by_node| by_node.retain(|node, _| member(node)));
        }
    }

    /// Whether a call is also hedged when it straggles behind its [`Siblings`] (`auto`).
    pub fn hedges_stragglers(&self) -> bool {
        self.policy == HedgeAfter::Auto
    }

    /// How long a call of `class` may go unanswered before it is hedged: the lower
    /// median of the executors' 95th percentiles for the class; `None`: never (or not
    /// before some executor has answered enough calls of the class).
    pub fn delay(&self, class: CallClass) -> Option<Duration> {
        match self.policy {
            HedgeAfter::Off => None,
            HedgeAfter::After(delay) => Some(delay),
            HedgeAfter::Auto => {
                let latencies = self.latencies.lock().ok()?;
                let mut p95s = latencies.get(&class)?.values().filter_map(|window| window.p95).collect::<Vec<_>>();
                if p95s.is_empty() {
                    return None;
                }
                let lower_median = (p95s.len() - 1) / 2;
                Some((*p95s.select_nth_unstable(lower_median).1).max(MIN_DELAY))
            }
        }
    }
}

/// One answered call of a round: when it answered, from the round's start, and how many
/// fragments it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// When the call answered, from the round's start.
    pub elapsed: Duration,
    /// The fragments it carried.
    pub fragments: usize,
}

/// The calls of one round (one per executor, started together) and the answers of those
/// that have answered, for the straggler rule.
#[derive(Debug)]
pub struct Siblings {
    calls: usize,
    started: Instant,
    answered: watch::Sender<Vec<Answer>>,
}

impl Siblings {
    /// A round of `calls` calls starting now.
    pub fn new(calls: usize) -> Self {
        Self { calls, started: Instant::now(), answered: watch::Sender::new(Vec::new()) }
    }

    /// Records that one call of the round, of `fragments` fragments, answered
    /// (successfully) now.
    pub fn answered(&self, fragments: usize) {
        let answer = Answer { elapsed: self.started.elapsed(), fragments };
        self.answered.send_modify(|answered| answered.push(answer));
    }

    /// Completes when a call of the round of `fragments` fragments that has not answered
    /// becomes a straggler: [`straggler_after`] its siblings' answers, measured from the
    /// round's start; never while too few of them have answered.
    pub async fn straggling(&self, fragments: usize) {
        let mut answered = self.answered.subscribe();
        loop {
            let after = straggler_after(self.calls, &answered.borrow_and_update(), fragments);
            let changed = async {
                if answered.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            match after {
                Some(after) => tokio::select! {
                    () = tokio::time::sleep_until(self.started + after) => return,
                    () = changed => {}
                },
                None => changed.await,
            }
        }
    }
}

/// Completes when a call of `fragments` fragments is due to be hedged: after `delay`, or
/// when it becomes a straggler among `siblings`, whichever comes first (neither: never).
/// Answers which.
pub async fn due(delay: Option<Duration>, siblings: Option<&Siblings>, fragments: usize) -> HedgeReason {
    let after_delay = async {
        match delay {
            Some(delay) => tokio::time::sleep(delay).await,
            None => std::future::pending().await,
        }
    };
    let straggling = async {
        match siblings {
            Some(siblings) => siblings.straggling(fragments).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = after_delay => HedgeReason::Delay,
        () = straggling => HedgeReason::Straggler,
    }
}

/// Why a call was hedged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeReason {
    /// It had not answered after the hedge delay.
    Delay,
    /// It straggled behind its siblings.
    Straggler,
}

impl HedgeReason {
    /// The reason as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delay => "delay",
            Self::Straggler => "straggler",
        }
    }
}

/// When a call of `fragments` fragments in a round of `calls` calls is a straggler, given
/// the answers of its siblings that have answered: once [`STRAGGLER_QUANTILE`] of its
/// `calls - 1` siblings (at least one) have answered, at [`STRAGGLER_MULTIPLIER`] times
/// the slowest of their answer times — scaled up by its fragments over the most any of
/// them carried when it carries more, never down — and not before [`MIN_DELAY`]. `None`:
/// not (yet) judged.
pub fn straggler_after(calls: usize, answered: &[Answer], fragments: usize) -> Option<Duration> {
    let siblings = calls.checked_sub(1)?;
    let (part, whole) = STRAGGLER_QUANTILE;
    let needed = (siblings * part).div_ceil(whole).max(1);
    if answered.len() < needed || answered.len() > siblings {
        return None;
    }
    let slowest = answered.iter().map(|answer| answer.elapsed).max()?;
    let most = answered.iter().map(|answer| answer.fragments).max()?.max(1);
    let (times, per) = STRAGGLER_MULTIPLIER;
    let scale = f64::from(times) * fragments.max(most) as f64 / (f64::from(per) * most as f64);
    Some(slowest.mul_f64(scale).max(MIN_DELAY))
}

#[cfg(test)]
mod tests {
    use lancefleet_proto::v1::{FragmentQuery, NearestQuery};

    use super::*;

    fn scan() -> CallClass {
        CallClass::of(&PlanFragment { fragment_ids: vec![1], ..PlanFragment::default() })
    }

    #[test]
    fn auto_hedges_after_the_95th_percentile_once_enough_answers_are_known() {
        let hedging = Hedging::new(HedgeAfter::Auto);
        let node: Arc<str> = Arc::from("pe-0");
        for _ in 0..MIN_SAMPLES - 1 {
            hedging.observe(&node, scan(), Duration::from_millis(10));
        }
        assert_eq!(hedging.delay(scan()), None, "too few answers to know what slow is");
        for millis in 0..100 {
            hedging.observe(&node, scan(), Duration::from_millis(10 + millis % 20));
        }
        let delay = hedging.delay(scan()).expect("hedged");
        assert!(delay >= Duration::from_millis(25) && delay <= Duration::from_millis(29), "{delay:?}");
        assert_eq!(Hedging::new(HedgeAfter::Off).delay(scan()), None);
        let fixed = Hedging::new(HedgeAfter::After(Duration::from_millis(40)));
        assert_eq!(fixed.delay(scan()), Some(Duration::from_millis(40)));
    }

    #[test]
    fn a_stalled_executor_does_not_raise_the_delay_that_hedges_it() {
        let hedging = Hedging::new(HedgeAfter::Auto);
        let (fast, also_fast, stalled) = (Arc::from("pe-0"), Arc::from("pe-1"), Arc::from("pe-2"));
        for i in 0..WINDOW as u64 {
            hedging.observe(&fast, scan(), Duration::from_millis(10));
            hedging.observe(&also_fast, scan(), Duration::from_millis(12));
            // A third of its answers come after a 300 ms stall.
            hedging.observe(&stalled, scan(), Duration::from_millis(if i % 3 == 0 { 310 } else { 10 }));
        }
        assert_eq!(hedging.delay(scan()), Some(Duration::from_millis(12)), "the slower healthy executor's p95");
        hedging.retain(|node| node != "pe-1");
        assert_eq!(hedging.delay(scan()), Some(Duration::from_millis(10)), "two left: the lower of their p95s");
        hedging.retain(|node| node == "pe-2");
        assert_eq!(hedging.delay(scan()), Some(Duration::from_millis(310)), "only the stalled one is known");
    }

    #[test]
    fn heavy_calls_are_judged_by_their_own_class() {
        let hedging = Hedging::new(HedgeAfter::Auto);
        let node: Arc<str> = Arc::from("pe-0");
        let search = PlanFragment {
            fragment_ids: (0..24).collect(),
            query: Some(FragmentQuery { nearest: Some(NearestQuery::default()), ..FragmentQuery::default() }),
            ..PlanFragment::default()
        };
        let search = CallClass::of(&search);
        assert_ne!(scan(), search);
        for _ in 0..100 {
            hedging.observe(&node, scan(), Duration::from_millis(2));
        }
        assert_eq!(hedging.delay(search), None, "no answers of its class yet");
        for _ in 0..MIN_SAMPLES {
            hedging.observe(&node, search, Duration::from_millis(80));
        }
        assert_eq!(hedging.delay(search), Some(Duration::from_millis(80)));
        assert_eq!(hedging.delay(scan()), Some(MIN_DELAY));
        let sized = |fragments: u64| {
            CallClass::of(&PlanFragment { fragment_ids: (0..fragments).collect(), ..PlanFragment::default() })
        };
        assert_eq!(sized(17), sized(24), "sizes within a power of two share a class");
        assert_ne!(sized(2), sized(24));
    }

    #[test]
    fn a_straggler_is_judged_by_most_of_its_siblings() {
        let ms = Duration::from_millis;
        let one = |elapsed: Vec<u64>| {
            elapsed.into_iter().map(|millis| Answer { elapsed: ms(millis), fragments: 1 }).collect::<Vec<_>>()
        };
        assert_eq!(straggler_after(1, &[], 1), None, "a lone call has no siblings");
        assert_eq!(straggler_after(2, &[], 1), None);
        assert_eq!(straggler_after(2, &one(vec![20]), 1), Some(ms(30)), "one of one sibling answered");
        assert_eq!(straggler_after(3, &one(vec![20]), 1), None, "one of two siblings is not three quarters");
        assert_eq!(straggler_after(3, &one(vec![20, 40]), 1), Some(ms(60)), "1.5 times the slowest sibling");
        assert_eq!(straggler_after(5, &one(vec![10, 90]), 1), None, "two of four");
        assert_eq!(straggler_after(5, &one(vec![10, 12, 30]), 1), Some(ms(45)), "three of four: 1.5 × 30 ms");
        assert_eq!(straggler_after(5, &one(vec![10, 12, 30, 11]), 1), Some(ms(45)));
        assert_eq!(straggler_after(3, &one(vec![1, 1]), 1), Some(MIN_DELAY), "no hedge faster than the floor");
        assert_eq!(straggler_after(2, &one(vec![1, 1]), 1), None, "more answers than siblings: not this round's");
    }

    #[test]
    fn a_call_with_more_fragments_than_any_sibling_is_given_longer_never_less() {
        let ms = Duration::from_millis;
        let answers = |fragments: usize| vec![Answer { elapsed: ms(20), fragments }; 2];
        assert_eq!(straggler_after(3, &answers(1), 2), Some(ms(60)), "twice the fragments: twice the time");
        assert_eq!(straggler_after(3, &answers(4), 1), Some(ms(30)), "fewer fragments: not less time");
        assert_eq!(straggler_after(3, &answers(0), 3), Some(ms(90)), "siblings without fragments count as one");
    }

    #[tokio::test]
    async fn the_last_call_of_a_round_is_hedged_once_its_siblings_are_well_ahead() {
        let ms = Duration::from_millis;
        let siblings = Siblings::new(3);
        let straggling = siblings.straggling(1);
        tokio::pin!(straggling);
        tokio::time::sleep(ms(20)).await;
        siblings.answered(1);
        let not_yet = tokio::time::timeout(ms(100), &mut straggling).await;
        assert!(not_yet.is_err(), "one of two siblings answered: not yet judged");
        // The second answers at 120 ms or a little later: the straggler is due at 1.5 times that.
        siblings.answered(1);
        straggling.await;
        let elapsed = siblings.started.elapsed();
        assert!(elapsed >= ms(180) && elapsed < ms(1000), "1.5 times the slowest sibling's 120 ms: {elapsed:?}");

        let siblings = Siblings::new(2);
        let straggling = siblings.straggling(1);
        tokio::time::sleep(ms(40)).await;
        siblings.answered(1);
        straggling.await;
        let elapsed = siblings.started.elapsed();
        assert!(elapsed >= ms(60) && elapsed < ms(1000), "1.5 times the sibling's 40 ms: {elapsed:?}");
    }
}
