//! Which executors are unhealthy: consecutive failed probes past a threshold mark one, a
//! passed probe clears the mark. Pure bookkeeping; the prober does the I/O.

use std::collections::HashMap;

/// What a probe result changes about an executor's mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// It just reached the threshold: mark it unhealthy.
    MarkUnhealthy {
        /// Consecutive failed probes.
        failed_probes: u32,
    },
    /// It was marked and passed a probe: clear the mark.
    MarkHealthy,
}

/// Consecutive probe failures per executor, and which are marked.
#[derive(Debug, Default)]
pub struct HealthTracker {
    threshold: u32,
    failures: HashMap<String, u32>,
    marked: HashMap<String, bool>,
}

impl HealthTracker {
    /// A tracker that marks an executor after `threshold` consecutive failures (at least 1).
    pub fn new(threshold: u32) -> Self {
        Self { threshold: threshold.max(1), ..Self::default() }
    }

    /// Records one probe of `node_id`; returns the mark change it causes, if any.
    pub fn record(&mut self, node_id: &str, passed: bool) -> Option<Transition> {
        let marked = self.marked.get(node_id).copied().unwrap_or(false);
        if passed {
            self.failures.remove(node_id);
            return marked.then(|| {
                self.marked.insert(node_id.to_string(), false);
                Transition::MarkHealthy
            });
        }
        let failures = self.failures.entry(node_id.to_string()).or_default();
        *failures += 1;
        (*failures >= self.threshold && !marked).then(|| {
            let failed_probes = *failures;
            self.marked.insert(node_id.to_string(), true);
            Transition::MarkUnhealthy { failed_probes }
        })
    }

    /// Learns which executors carry a mark in etcd (written by this leader, an earlier
    /// one, or before the executor restarted), so that a passing probe clears it.
    pub fn adopt_marks<'a>(&mut self, marked: impl IntoIterator<Item = &'a str>) {
        for node_id in marked {
            self.marked.insert(node_id.to_string(), true);
        }
    }

    /// How many executors are marked unhealthy now.
    pub fn marked(&self) -> usize {
        self.marked.values().filter(|marked| **marked).count()
    }

    /// Forgets executors that are no longer registered.
    pub fn retain(&mut self, registered: impl Fn(&str) -> bool) {
        self.failures.retain(|node_id, _| registered(node_id));
        self.marked.retain(|node_id, _| registered(node_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_after_the_threshold_once_and_clears_on_a_pass() {
        let mut tracker = HealthTracker::new(2);
        assert_eq!(tracker.record("pe-0", false), None);
        assert_eq!(tracker.record("pe-0", false), Some(Transition::MarkUnhealthy { failed_probes: 2 }));
        assert_eq!(tracker.record("pe-0", false), None, "marked once");
        assert_eq!(tracker.record("pe-1", true), None, "a healthy executor changes nothing");
        assert_eq!(tracker.record("pe-0", true), Some(Transition::MarkHealthy));
        assert_eq!(tracker.record("pe-0", true), None);
        assert_eq!(tracker.record("pe-0", false), None, "the failure count started over");
    }

    #[test]
    fn a_new_leader_clears_marks_it_inherited() {
        let mut tracker = HealthTracker::new(3);
        tracker.adopt_marks(["pe-2"]);
        assert_eq!(tracker.record("pe-2", true), Some(Transition::MarkHealthy));
        tracker.adopt_marks(["pe-3"]);
        tracker.retain(|node_id| node_id != "pe-3");
        assert_eq!(tracker.record("pe-3", true), None, "forgotten once deregistered");
    }
}
