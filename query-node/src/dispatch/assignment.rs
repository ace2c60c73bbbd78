//! Which executor reads which fragment of one scatter: pure functions over preference
//! lists (the placement ring's), unit-tested without executors.
//!
//! A fragment goes to the first executor of its list that is not under suspicion, or to
//! the second when the first has many more calls in flight (two choices, so hot fragments
//! spread over their replicas while a quiet cluster keeps every fragment on its first
//! choice and its warm cache). A failed executor's fragments move to their next executor.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use lancefleet_common::placement::{Placement, balance};

use super::Spread;

/// One executor's share of a scatter: its fragments, and for each the position of this
/// executor in the fragment's preference list.
pub type Assignment = BTreeMap<Arc<str>, Vec<(u64, usize)>>;

/// Calls in flight to each executor, from this query node.
pub type Load = HashMap<Arc<str>, usize>;

/// The second replica takes a fragment when the first has this many more calls in flight.
const BALANCE_SLACK: usize = 2;

/// Sends each fragment to the first executor of its preference list that is not under
/// suspicion (to its first choice when all are).
pub fn assign(
    fragments: &[u64],
    lists: &HashMap<u64, Vec<Arc<str>>>,
    suspects: &HashSet<Arc<str>>,
    load: &Load,
) -> Assignment {
    let mut assignment = Assignment::new();
    for fragment in fragments {
        let Some(list) = lists.get(fragment).filter(|list| !list.is_empty()) else { continue };
        let mut healthy = list.iter().enumerate().filter(|(_, node)| !suspects.contains(*node));
        let position = match (healthy.next(), healthy.next()) {
            (Some((first, first_node)), Some((second, second_node))) => {
                let busy = |node: &Arc<str>| load.get(node).copied().unwrap_or(0);
                if busy(first_node) >= busy(second_node) + BALANCE_SLACK { second } else { first }
            }
            (Some((first, _)), None) => first,
            (None, _) => 0,
        };
        assignment.entry(list[position].clone()).or_default().push((*fragment, position));
    }
    assignment
}

/// Where `fragments` (all sent to `node`) would be hedged: the executor that comes after
/// `node` in most of their preference lists and is not suspected; `None` when they have no
/// other replica.
pub fn hedge_target(
    node: &Arc<str>,
    fragments: &[(u64, usize)],
    lists: &HashMap<u64, Vec<Arc<str>>>,
    suspects: &HashSet<Arc<str>>,
) -> Option<Arc<str>> {
    let mut votes = BTreeMap::<Arc<str>, usize>::new();
    for (fragment, _) in fragments {
        let list = lists.get(fragment).map(Vec::as_slice).unwrap_or_default();
        if let Some(other) = list.iter().find(|candidate| *candidate != node && !suspects.contains(*candidate)) {
            *votes.entry(other.clone()).or_default() += 1;
        }
    }
    votes.into_iter().max_by_key(|(candidate, count)| (*count, std::cmp::Reverse(candidate.clone()))).map(|(c, _)| c)
}

/// The preference list of every fragment `spread` places; the fragments of a group to
/// colocate all take its first one's, so they go to one executor (and move together on
/// a retry). The lists' first choices are evened out ([`balance`]), in id order.
pub fn preference_lists(placement: &Placement, uri: &str, spread: Spread<'_>) -> HashMap<u64, Vec<Arc<str>>> {
    let anchors = spread
        .colocate
        .iter()
        .filter_map(|group| group.first().map(|anchor| (anchor, group)))
        .flat_map(|(anchor, group)| group.iter().map(move |fragment| (*fragment, *anchor)))
        .collect::<HashMap<u64, u64>>();
    let placed = spread.placed();
    let anchor_of = |fragment: &u64| anchors.get(fragment).copied().unwrap_or(*fragment);
    let mut lists =
        placed.iter().map(|fragment| (anchor_of(fragment), Vec::new())).collect::<BTreeMap<u64, Vec<Arc<str>>>>();
    for (anchor, list) in &mut lists {
        *list = placement.preference_list(uri, *anchor);
    }
    balance(&mut lists, placement.nodes().len());
    placed.iter().filter_map(|fragment| Some((*fragment, lists.get(&anchor_of(fragment))?.clone()))).collect()
}

/// Moves the fragments of `failed` executors to the next executor of each fragment's
/// preference list that has not failed, wrapping around: a fragment first sent to its
/// second replica (balanced, or its first passed over as a suspect) goes back to its first.
/// Fails with the executor whose fragment has no other executor left.
pub fn reassign(
    assignment: &Assignment,
    failed: &HashSet<Arc<str>>,
    lists: &HashMap<u64, Vec<Arc<str>>>,
) -> Result<Assignment, Arc<str>> {
    let mut retry = Assignment::new();
    for (node, fragments) in assignment.iter().filter(|(node, _)| failed.contains(*node)) {
        for (fragment, position) in fragments {
            let list = lists.get(fragment).map(Vec::as_slice).unwrap_or_default();
            let next = list
                .iter()
                .enumerate()
                .cycle()
                .skip(position + 1)
                .take(list.len().saturating_sub(1))
                .find(|(_, candidate)| !failed.contains(*candidate));
            let Some((next_position, next)) = next else { return Err(node.clone()) };
            retry.entry(next.clone()).or_default().push((*fragment, next_position));
        }
    }
    Ok(retry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Spread;

    fn node(id: &str) -> Arc<str> {
        Arc::from(id)
    }

    fn lists() -> HashMap<u64, Vec<Arc<str>>> {
        HashMap::from([
            (1, vec![node("a"), node("b")]),
            (2, vec![node("b"), node("c")]),
            (3, vec![node("a"), node("c")]),
        ])
    }

    #[test]
    fn fragments_go_to_their_first_choice_unless_it_is_suspected() {
        let assignment = assign(&[1, 2, 3], &lists(), &HashSet::new(), &Load::new());
        assert_eq!(assignment[&node("a")], vec![(1, 0), (3, 0)]);
        assert_eq!(assignment[&node("b")], vec![(2, 0)]);

        let assignment = assign(&[1, 2, 3], &lists(), &HashSet::from([node("a")]), &Load::new());
        assert_eq!(assignment[&node("b")], vec![(1, 1), (2, 0)]);
        assert_eq!(assignment[&node("c")], vec![(3, 1)]);
        assert!(!assignment.contains_key(&node("a")));

        let everyone = HashSet::from([node("a"), node("b"), node("c")]);
        assert_eq!(
            assign(&[2], &lists(), &everyone, &Load::new())[&node("b")],
            vec![(2, 0)],
            "first choice when all are suspected"
        );
    }

    #[test]
    fn a_busy_first_choice_hands_fragments_to_its_second_replica() {
        let quiet = assign(&[1, 2, 3], &lists(), &HashSet::new(), &Load::from([(node("a"), 1), (node("b"), 0)]));
        assert_eq!(quiet[&node("a")], vec![(1, 0), (3, 0)], "a little more load keeps the warm first choice");
        let busy = Load::from([(node("a"), 5), (node("b"), 1), (node("c"), 0)]);
        let assignment = assign(&[1, 2, 3], &lists(), &HashSet::new(), &busy);
        assert_eq!(assignment[&node("b")], vec![(1, 1), (2, 0)]);
        assert_eq!(assignment[&node("c")], vec![(3, 1)]);
        assert!(!assignment.contains_key(&node("a")));
        let only = assign(&[1], &lists(), &HashSet::from([node("b")]), &busy);
        assert_eq!(only[&node("a")], vec![(1, 0)], "a busy executor without a healthy replica keeps its fragment");
    }

    #[test]
    fn hedges_go_to_the_replica_most_of_an_executors_fragments_share() {
        let lists = lists();
        let hedge = hedge_target(&node("a"), &[(1, 0), (3, 0)], &lists, &HashSet::new());
        assert_eq!(hedge, Some(node("b")), "a tie goes to the smallest id");
        let lists = HashMap::from([
            (1, vec![node("a"), node("c")]),
            (3, vec![node("a"), node("c")]),
            (4, vec![node("a"), node("b")]),
        ]);
        assert_eq!(hedge_target(&node("a"), &[(1, 0), (3, 0), (4, 0)], &lists, &HashSet::new()), Some(node("c")));
        assert_eq!(hedge_target(&node("a"), &[(1, 0)], &lists, &HashSet::from([node("c")])), None);
    }

    #[test]
    fn colocated_fragments_share_one_preference_list() {
        let placement = Placement::new(["a", "b", "c"], 64, 2);
        let fragments = (0..40).collect::<Vec<u64>>();
        let colocate = [vec![7, 11, 23, 31], vec![2, 3]];
        let lists = preference_lists(
            &placement,
            "t",
            Spread { fragments: &fragments, whole_table: false, colocate: &colocate },
        );
        assert_eq!(lists.len(), 40);
        for (group, anchor) in colocate.iter().zip([7, 2]) {
            for fragment in group {
                assert_eq!(lists[fragment], lists[&anchor], "fragment {fragment}");
            }
        }
        let same_replicas = |fragment: u64| {
            let mut balanced = lists[&fragment].clone();
            let mut ring = placement.preference_list("t", fragment);
            balanced.sort();
            ring.sort();
            balanced == ring
        };
        assert!((0..40).filter(|f| !colocate[0][1..].contains(f) && *f != 3).all(same_replicas), "only reordered");
        let spread_out =
            (0..40).map(|fragment| placement.preference_list("t", fragment)[0].clone()).collect::<HashSet<_>>();
        assert!(spread_out.len() > 1, "the ring spreads the other fragments");
        let whole =
            preference_lists(&placement, "t", Spread { fragments: &fragments, whole_table: true, colocate: &[] });
        assert_eq!(
            whole.keys().copied().collect::<Vec<_>>(),
            vec![0],
            "a whole-table part is placed by its first fragment"
        );
    }

    #[test]
    fn many_fragments_mostly_keep_the_rings_choice_within_a_bounded_share() {
        let placement = Placement::new(["a", "b", "c", "d"], 64, 2);
        let fragments = (0..1000).collect::<Vec<u64>>();
        let lists =
            preference_lists(&placement, "t", Spread { fragments: &fragments, whole_table: false, colocate: &[] });
        let moved = fragments.iter().filter(|f| lists[f][0] != placement.preference_list("t", **f)[0]).count();
        let mut shares = HashMap::<Arc<str>, usize>::new();
        fragments.iter().for_each(|f| *shares.entry(lists[f][0].clone()).or_default() += 1);
        assert!(shares.values().all(|share| *share <= 312), "at most 25 % over the mean: {shares:?}");
        assert!(moved < 100, "many units mostly keep the ring's choice: {moved} moved");
    }

    #[test]
    fn a_failed_executors_fragments_move_to_their_next_choice_once() {
        let assignment = assign(&[1, 2, 3], &lists(), &HashSet::new(), &Load::new());
        let retry = reassign(&assignment, &HashSet::from([node("a")]), &lists()).expect("replicas left");
        assert_eq!(retry[&node("b")], vec![(1, 1)]);
        assert_eq!(retry[&node("c")], vec![(3, 1)]);
        assert_eq!(retry.len(), 2, "fragments of healthy executors are not resent");

        // Sent to its second replica, a fragment goes back to its first.
        let second = Assignment::from([(node("b"), vec![(1, 1)])]);
        let back = reassign(&second, &HashSet::from([node("b")]), &lists()).expect("the first replica is left");
        assert_eq!(back, Assignment::from([(node("a"), vec![(1, 0)])]));

        let both = HashSet::from([node("a"), node("b")]);
        assert_eq!(reassign(&assignment, &both, &lists()).expect_err("fragment 1 has no replica left"), node("a"));
    }
}
