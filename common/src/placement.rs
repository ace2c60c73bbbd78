//! Which plan executors read which table fragments: consistent hashing with virtual nodes
//! over stable node ids (never addresses), so a fragment keeps its executor, and that
//! executor's warm cache, for as long as membership allows.
//!
//! The ring is `hashring`'s: it places the virtual nodes and answers the first choice of
//! every key with `HashRing::get`. It is *wrapped* for the rest of the preference list:
//! `HashRing::get_with_replicas` walks ring entries, not nodes (so with virtual nodes it
//! returns the same executor several times, and one entry too many), and clones the whole
//! ring on every call. [`Placement`] instead keeps the sorted ring points once per
//! membership and walks them clockwise from the key's point, skipping executors already
//! chosen. The hash is hashring's (SipHash-2-4 with fixed keys from the `siphasher`
//! crate), so every node of a cluster computes the same placement.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use hashring::{DefaultHashBuilder, HashRing};

/// Virtual nodes per executor unless configured: enough for ±10 % balance with few nodes.
pub const DEFAULT_VIRTUAL_NODES: u32 = 256;
/// Executors in each fragment's preference list unless configured ("mirrored caches").
pub const DEFAULT_REPLICAS: usize = 2;

/// Synthetic fragments placed to estimate each executor's share of the ring.
const SHARE_SAMPLE: u64 = 4096;

/// The share of fragments whose first choice is each of `executors`, estimated by placing
/// a sample of fragments on their ring (what operators see as "placement shares").
pub fn first_choice_shares<'a>(
    executors: impl IntoIterator<Item = &'a str>,
    virtual_nodes: u32,
    replicas: usize,
) -> std::collections::BTreeMap<String, f64> {
    let ring = Placement::new(executors, virtual_nodes, replicas);
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for fragment in 0..SHARE_SAMPLE {
        if let Some(first) = ring.preference_list("placement-summary", fragment).first() {
            *counts.entry(first.to_string()).or_default() += 1;
        }
    }
    counts.into_iter().map(|(id, count)| (id, count as f64 / SHARE_SAMPLE as f64)).collect()
}

/// One point of the ring: the `index`-th virtual node of executor `node`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct VirtualNode {
    node: Arc<str>,
    index: u32,
}

/// What is placed: one fragment of one table.
#[derive(Debug, Hash)]
struct FragmentKey<'a> {
    table: &'a str,
    fragment: u64,
}

/// Fragment placement for one membership. Build a new one when membership changes.
#[derive(Debug, Clone)]
pub struct Placement {
    ring: HashRing<VirtualNode>,
    /// Ring points sorted by hash, as `(hash, index into nodes)`.
    points: Vec<(u64, usize)>,
    nodes: Vec<Arc<str>>,
    replicas: usize,
}

impl Placement {
    /// Places fragments on `node_ids` (duplicates ignored), `virtual_nodes` ring points per
    /// node (at least 1), with preference lists of `replicas` distinct nodes (at least 1,
    /// at most the number of nodes).
    pub fn new<I, S>(node_ids: I, virtual_nodes: u32, replicas: usize) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut nodes = node_ids.into_iter().map(|id| Arc::<str>::from(id.as_ref())).collect::<Vec<_>>();
        nodes.sort();
        nodes.dedup();
        let virtual_nodes = virtual_nodes.max(1);
        let mut virtual_points = Vec::with_capacity(nodes.len() * virtual_nodes as usize);
        let mut points = Vec::with_capacity(virtual_points.capacity());
        for (position, node) in nodes.iter().enumerate() {
            for index in 0..virtual_nodes {
                let point = VirtualNode { node: node.clone(), index };
                points.push((DefaultHashBuilder.hash_one(&point), position));
                virtual_points.push(point);
            }
        }
        points.sort_unstable();
        let mut ring = HashRing::new();
        ring.batch_add(virtual_points);
        let replicas = replicas.clamp(1, nodes.len().max(1));
        Self { ring, points, nodes, replicas }
    }

    /// The executors, sorted by id.
    pub fn nodes(&self) -> &[Arc<str>] {
        &self.nodes
    }

    /// How many executors each preference list holds.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The executors that should read `fragment` of `table`, best first: `replicas`
    /// distinct nodes (fewer only when there are fewer nodes), empty without nodes.
    pub fn preference_list(&self, table: &str, fragment: u64) -> Vec<Arc<str>> {
        let key = FragmentKey { table, fragment };
        let Some(first) = self.ring.get(&key) else { return Vec::new() };
        let hash = DefaultHashBuilder.hash_one(&key);
        let start = self.points.partition_point(|(point, _)| *point < hash);
        let mut chosen: Vec<Arc<str>> = vec![first.node.clone()];
        let walk = self.points[start..].iter().chain(&self.points[..start]);
        for (_, position) in walk {
            if chosen.len() == self.replicas {
                break;
            }
            let node = &self.nodes[*position];
            if !chosen.contains(node) {
                chosen.push(node.clone());
            }
        }
        chosen
    }
}

/// Evens out the first choices of one query's units (fragments, or colocated groups by
/// their anchor), in the order of `lists`' keys: a unit whose first choice already has its share of them
/// goes first to the next executor of its list that has less (consistent hashing with
/// bounded loads, over the list's replicas). The share is the units ÷ `executors` rounded
/// up, or 25 % above the mean when that is more, so that many units keep the ring's
/// choices. Consistent hashing alone balances many units but not a few (6 fragments over
/// 3 executors leave one executor without any about one time in four); with the second
/// choice of each list that is rare, and a unit only moves between its replicas, whose
/// caches prewarm it. Every query node computes the same lists from the same units.
pub fn balance(lists: &mut BTreeMap<u64, Vec<Arc<str>>>, executors: usize) {
    let executors = executors.max(1);
    let share = lists.len().div_ceil(executors).max(lists.len() * 5 / (4 * executors));
    let mut taken = HashMap::<Arc<str>, usize>::new();
    for list in lists.values_mut() {
        let count = |node: &Arc<str>| taken.get(node).copied().unwrap_or(0);
        let Some(first) = list.first() else { continue };
        if count(first) >= share
            && let Some(position) = list.iter().position(|node| count(node) < share)
        {
            let node = list.remove(position);
            list.insert(0, node);
        }
        *taken.entry(list[0].clone()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: u64 = 20_000;

    fn nodes(count: usize) -> Vec<String> {
        (0..count).map(|index| format!("executor-{index}")).collect()
    }

    fn owners(placement: &Placement) -> Vec<Arc<str>> {
        (0..KEYS).map(|fragment| placement.preference_list("s3://bucket/db/t.lance", fragment)[0].clone()).collect()
    }

    #[test]
    fn preference_lists_hold_distinct_nodes_and_start_with_the_rings_choice() {
        let placement = Placement::new(nodes(4), DEFAULT_VIRTUAL_NODES, 3);
        for fragment in 0..2_000 {
            let list = placement.preference_list("t", fragment);
            assert_eq!(list.len(), 3);
            assert_eq!(list.iter().collect::<std::collections::HashSet<_>>().len(), 3, "{list:?}");
            let key = FragmentKey { table: "t", fragment };
            assert_eq!(placement.ring.get(&key).map(|point| &point.node), Some(&list[0]));
        }
    }

    #[test]
    fn replicas_are_capped_by_membership_and_empty_membership_places_nothing() {
        let placement = Placement::new(nodes(2), 8, 5);
        assert_eq!(placement.replicas(), 2);
        assert_eq!(placement.preference_list("t", 1).len(), 2);
        let empty = Placement::new(Vec::<String>::new(), 8, 2);
        assert!(empty.preference_list("t", 1).is_empty());
    }

    #[test]
    fn placement_depends_on_membership_only() {
        let mut shuffled = nodes(5);
        shuffled.reverse();
        shuffled.push("executor-2".to_string());
        let first = Placement::new(nodes(5), 64, 2);
        let second = Placement::new(shuffled, 64, 2);
        for fragment in 0..1_000 {
            assert_eq!(first.preference_list("t", fragment), second.preference_list("t", fragment));
        }
        assert_eq!(second.nodes().len(), 5);
    }

    #[test]
    fn load_is_balanced_within_twenty_percent() {
        for count in [3, 5, 8] {
            let placement = Placement::new(nodes(count), DEFAULT_VIRTUAL_NODES, 2);
            let mut load: HashMap<Arc<str>, u64> = HashMap::new();
            for owner in owners(&placement) {
                *load.entry(owner).or_default() += 1;
            }
            let mean = KEYS as f64 / count as f64;
            assert_eq!(load.len(), count);
            for (node, fragments) in load {
                let deviation = (fragments as f64 - mean).abs() / mean;
                assert!(deviation <= 0.20, "{count} nodes: {node} owns {fragments} of {KEYS} ({deviation:.2} off)");
            }
        }
    }

    #[test]
    fn adding_or_removing_one_node_moves_about_one_nth_of_the_fragments() {
        for count in [3, 4, 6] {
            let before = owners(&Placement::new(nodes(count), DEFAULT_VIRTUAL_NODES, 2));
            let grown = owners(&Placement::new(nodes(count + 1), DEFAULT_VIRTUAL_NODES, 2));
            let moved = before.iter().zip(&grown).filter(|(a, b)| a != b).count() as f64 / KEYS as f64;
            let bound = 1.25 / (count + 1) as f64;
            assert!(moved <= bound, "adding to {count}: moved {moved:.3} > {bound:.3}");
            // Every moved fragment went to the new node.
            assert!(before.iter().zip(&grown).all(|(a, b)| a == b || b.as_ref() == format!("executor-{count}")));

            let shrunk = owners(&Placement::new(nodes(count - 1), DEFAULT_VIRTUAL_NODES, 2));
            let moved = before.iter().zip(&shrunk).filter(|(a, b)| a != b).count() as f64 / KEYS as f64;
            let bound = 1.25 / count as f64;
            assert!(moved <= bound, "removing from {count}: moved {moved:.3} > {bound:.3}");
        }
    }

    #[test]
    fn a_removed_nodes_fragments_go_to_their_second_choice() {
        let all = Placement::new(nodes(4), DEFAULT_VIRTUAL_NODES, 2);
        let without = Placement::new(nodes(4).into_iter().filter(|id| id != "executor-1"), DEFAULT_VIRTUAL_NODES, 2);
        for fragment in 0..2_000 {
            let list = all.preference_list("t", fragment);
            if list[0].as_ref() == "executor-1" {
                assert_eq!(without.preference_list("t", fragment)[0], list[1]);
            }
        }
    }

    #[test]
    fn a_few_units_are_spread_over_their_replicas() {
        let list = |ids: [&str; 2]| ids.map(Arc::<str>::from).to_vec();
        let mut lists = BTreeMap::from([
            (0, list(["a", "b"])),
            (1, list(["a", "c"])),
            (2, list(["a", "b"])),
            (3, list(["b", "a"])),
            (4, list(["a", "c"])),
            (5, list(["b", "c"])),
        ]);
        balance(&mut lists, 3);
        let firsts = lists.values().map(|list| list[0].to_string()).collect::<Vec<_>>();
        assert_eq!(firsts, ["a", "a", "b", "b", "c", "c"]);
        assert_eq!(lists[&4], list(["c", "a"]), "moved to its replica, the ring's choice next");
    }
}
