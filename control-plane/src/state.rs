//! `GET /v1/cluster`: the cluster as operators see it — nodes by role, their health, the
//! current leader, and how the placement ring shares fragments among the executors.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use etcd_client::Client;
use lancefleet_common::cluster_state::{ClusterState, Role};
use lancefleet_common::config::ClusterConfig;
use lancefleet_common::etcd::Keys;
use lancefleet_common::placement::first_choice_shares;
use serde::Serialize;
use tokio::sync::watch;

/// What the state endpoint reads.
pub struct StateService {
    /// The etcd client (for the leader).
    pub client: Client,
    /// The cluster's keys.
    pub keys: Keys,
    /// This instance.
    pub node_id: String,
    /// Placement settings, as query nodes use them.
    pub cluster: ClusterConfig,
    /// The cluster state, followed from etcd.
    pub state: watch::Receiver<Arc<ClusterState>>,
}

/// One node in the answer.
#[derive(Debug, Serialize)]
struct NodeView {
    node_id: String,
    role: Role,
    address: String,
    stopping: bool,
    healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    unhealthy_reason: Option<String>,
    /// Whether query nodes currently send it fragments (executors only).
    #[serde(skip_serializing_if = "Option::is_none")]
    serving_fragments: Option<bool>,
    cores: u32,
    cache_bytes: u64,
    version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_address: Option<String>,
}

/// How the placement ring shares fragments.
#[derive(Debug, Serialize)]
struct PlacementView {
    replicas: usize,
    virtual_nodes: u32,
    /// Fraction of fragments whose first choice is each executor.
    first_choice_share: BTreeMap<String, f64>,
}

/// The whole answer.
#[derive(Debug, Serialize)]
struct ClusterView {
    cluster: String,
    answered_by: String,
    leader: Option<String>,
    nodes: Vec<NodeView>,
    placement: PlacementView,
}

/// `GET /v1/cluster`.
pub async fn cluster(State(service): State<Arc<StateService>>) -> Json<serde_json::Value> {
    let state = service.state.borrow().clone();
    let leader = match service.client.clone().leader(service.keys.election()).await {
        Ok(response) => response.kv().and_then(|kv| kv.value_str().ok()).map(str::to_string),
        Err(error) => {
            tracing::debug!(%error, "no control-plane leader");
            None
        }
    };
    let view = ClusterView {
        cluster: service.keys.root().trim_matches('/').to_string(),
        answered_by: service.node_id.clone(),
        leader,
        nodes: nodes(&state),
        placement: placement(&state, &service.cluster),
    };
    Json(serde_json::to_value(view).unwrap_or_default())
}

fn nodes(state: &ClusterState) -> Vec<NodeView> {
    let serving = state.executors();
    let mut nodes = state
        .nodes
        .values()
        .map(|record| {
            let mark = state.unhealthy.get(&record.node_id).filter(|_| record.role == Role::PlanExecutor);
            NodeView {
                node_id: record.node_id.clone(),
                role: record.role,
                address: record.address.clone(),
                stopping: record.stopping,
                healthy: mark.is_none(),
                unhealthy_reason: mark.map(|mark| mark.reason.clone()),
                serving_fragments: (record.role == Role::PlanExecutor)
                    .then(|| serving.iter().any(|executor| executor.id == record.node_id)),
                cores: record.cores,
                cache_bytes: record.cache_bytes,
                version: record.version.clone(),
                metrics_address: record.metrics_address.clone(),
            }
        })
        .collect::<Vec<_>>();
    nodes.sort_by(|a, b| (a.role, &a.node_id).cmp(&(b.role, &b.node_id)));
    nodes
}

fn placement(state: &ClusterState, config: &ClusterConfig) -> PlacementView {
    let executors = state.executors();
    PlacementView {
        replicas: config.replicas,
        virtual_nodes: config.virtual_nodes,
        first_choice_share: first_choice_shares(
            executors.iter().map(|executor| executor.id.as_str()),
            config.virtual_nodes,
            config.replicas,
        ),
    }
}
