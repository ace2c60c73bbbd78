//! What the control plane knows about the cluster: the registered nodes and the health
//! marks, and the executors queries may be sent to. Pure data, so the rules are unit
//! tested without etcd.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::ExecutorEndpoint;

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Answers clients and scatters plan fragments.
    QueryNode,
    /// Runs plan fragments over its share of the data.
    PlanExecutor,
    /// Probes health and serves the cluster state.
    ControlPlane,
    /// Compacts, indexes and cleans tables in the background.
    Indexer,
}

impl Role {
    /// The role's name in keys and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueryNode => "query-node",
            Self::PlanExecutor => "plan-executor",
            Self::ControlPlane => "control-plane",
            Self::Indexer => "indexer",
        }
    }
}

/// A node's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Stable node id (configured or the pod name), never an address.
    pub node_id: String,
    /// What the node does.
    pub role: Role,
    /// Where peers reach it: gRPC for plan executors, HTTP for the other roles.
    pub address: String,
    /// Its CPU cores (what it can take on).
    pub cores: u32,
    /// Its cache capacity in bytes (memory plus disk tier).
    pub cache_bytes: u64,
    /// Set while it drains before leaving: it gets no new work.
    pub stopping: bool,
    /// The `lancefleet` version it runs.
    pub version: String,
    /// Where its Prometheus `/metrics` are served, when not at `address` (plan executors:
    /// their metrics port). Absent from records of older nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<String>,
}

impl NodeRecord {
    /// The record of this process as a running (not stopping) `role` node reachable at
    /// `address`, with this machine's cores and this build's version.
    pub fn new(node_id: impl Into<String>, role: Role, address: impl Into<String>, cache_bytes: u64) -> Self {
        Self {
            node_id: node_id.into(),
            role,
            address: address.into(),
            cores: available_cores(),
            cache_bytes,
            stopping: false,
            version: env!("CARGO_PKG_VERSION").to_string(),
            metrics_address: None,
        }
    }
}

impl NodeRecord {
    /// This record with its metrics served at `address`.
    pub fn with_metrics_address(mut self, address: impl Into<String>) -> Self {
        self.metrics_address = Some(address.into());
        self
    }

    /// Where its `/metrics` are: `metrics_address`, else `address` (HTTP roles).
    pub fn metrics_url(&self) -> Option<String> {
        match (&self.metrics_address, self.role) {
            (Some(address), _) => Some(format!("{}/metrics", address.trim_end_matches('/'))),
            (None, Role::PlanExecutor) => None,
            (None, _) => Some(format!("{}/metrics", self.address.trim_end_matches('/'))),
        }
    }
}

/// The CPU cores this process may use.
fn available_cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |cores| u32::try_from(cores.get()).unwrap_or(u32::MAX))
}

/// The control-plane leader's verdict on an executor that fails its health probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthMark {
    /// The executor.
    pub node_id: String,
    /// Why it is considered unhealthy.
    pub reason: String,
    /// Consecutive failed probes.
    pub failed_probes: u32,
}

/// The cluster as the control-plane keys describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterState {
    /// Registered nodes by key (`nodes/{role}/{node_id}`).
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Health marks by executor id.
    pub unhealthy: BTreeMap<String, HealthMark>,
}

impl ClusterState {
    /// Applies a key written under the cluster root (`key` relative to it). Keys this
    /// version does not know, and values it cannot read, are ignored with a warning, so a
    /// newer node's records never break an older one.
    pub fn put(&mut self, key: &str, value: &[u8]) {
        let parsed = if key.starts_with("nodes/") {
            serde_json::from_slice(value).map(|record| {
                self.nodes.insert(key.to_string(), record);
            })
        } else if let Some(node_id) = key.strip_prefix("health/") {
            serde_json::from_slice(value).map(|mark| {
                self.unhealthy.insert(node_id.to_string(), mark);
            })
        } else {
            Ok(())
        };
        if let Err(error) = parsed {
            tracing::warn!(key, %error, "ignoring an unreadable cluster record");
        }
    }

    /// Applies the deletion (or lease expiry) of a key relative to the cluster root.
    pub fn delete(&mut self, key: &str) {
        if key.starts_with("nodes/") {
            self.nodes.remove(key);
        } else if let Some(node_id) = key.strip_prefix("health/") {
            self.unhealthy.remove(node_id);
        }
    }

    /// The registered nodes of one role.
    pub fn nodes_of(&self, role: Role) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values().filter(move |record| record.role == role)
    }

    /// The executors queries may use: registered, not stopping, not marked unhealthy;
    /// sorted by id.
    pub fn executors(&self) -> Vec<ExecutorEndpoint> {
        let mut executors = self
            .nodes_of(Role::PlanExecutor)
            .filter(|record| !record.stopping && !self.unhealthy.contains_key(&record.node_id))
            .map(|record| ExecutorEndpoint { id: record.node_id.clone(), address: record.address.clone() })
            .collect::<Vec<_>>();
        executors.sort_by(|a, b| a.id.cmp(&b.id));
        executors.dedup_by(|a, b| a.id == b.id);
        executors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executor(id: &str) -> NodeRecord {
        NodeRecord::new(id, Role::PlanExecutor, format!("http://{id}:7070"), 1 << 30)
    }

    fn put(state: &mut ClusterState, key: &str, record: &impl Serialize) {
        state.put(key, &serde_json::to_vec(record).expect("serializable"));
    }

    #[test]
    fn executors_are_the_registered_ones_not_stopping_and_not_unhealthy() {
        let mut state = ClusterState::default();
        for id in ["pe-2", "pe-0", "pe-1", "pe-3"] {
            put(&mut state, &format!("nodes/plan-executor/{id}"), &executor(id));
        }
        let query_node = NodeRecord { role: Role::QueryNode, ..executor("qn-0") };
        put(&mut state, "nodes/query-node/qn-0", &query_node);
        let ids = |state: &ClusterState| state.executors().into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(&state), ["pe-0", "pe-1", "pe-2", "pe-3"], "sorted, query nodes excluded");

        put(&mut state, "nodes/plan-executor/pe-1", &NodeRecord { stopping: true, ..executor("pe-1") });
        let mark = HealthMark { node_id: "pe-2".into(), reason: "probe timed out".into(), failed_probes: 3 };
        put(&mut state, "health/pe-2", &mark);
        assert_eq!(ids(&state), ["pe-0", "pe-3"]);

        state.delete("health/pe-2");
        state.delete("nodes/plan-executor/pe-3");
        assert_eq!(ids(&state), ["pe-0", "pe-2"]);
    }

    #[test]
    fn unreadable_and_unknown_keys_are_ignored() {
        let mut state = ClusterState::default();
        state.put("nodes/plan-executor/pe-0", b"not json");
        state.put("events/t/1", b"{}");
        state.delete("events/t/1");
        assert_eq!(state, ClusterState::default());
    }
}
