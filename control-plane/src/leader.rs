//! Leader election through etcd's election API, and what the leader does: probe every
//! registered executor over gRPC health and keep the health marks current.
//!
//! A candidate campaigns under a lease of its own. It leads until the lease is lost (etcd
//! unreachable for a whole TTL, so a standby may already lead) or shutdown; then it resigns
//! and campaigns again. Health marks live under the leader's lease, so a leader that dies
//! takes its marks with it and the next leader re-probes from scratch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ResignOptions};
use futures::future::join_all;
use lancefleet_common::Shutdown;
use lancefleet_common::cluster_state::{ClusterState, HealthMark, NodeRecord, Role};
use lancefleet_common::config::ControlConfig;
use lancefleet_common::etcd::{self, EtcdError, Keys, Lease};
use lancefleet_common::telemetry;
use lancefleet_common::tls;
use lancefleet_proto::v1::plan_executor_server::SERVICE_NAME;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument;

use crate::health::{HealthTracker, Transition};
use crate::metrics::METRICS;

/// How long to wait before campaigning again after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// One control-plane instance running for leadership.
pub struct Candidate {
    /// The etcd client.
    pub client: Client,
    /// The cluster's keys.
    pub keys: Keys,
    /// This instance's id: the value of the election key while it leads.
    pub node_id: String,
    /// Lease TTL and probe settings.
    pub config: ControlConfig,
    /// The cluster state, followed from etcd.
    pub state: watch::Receiver<Arc<ClusterState>>,
    /// Ends the campaign.
    pub shutdown: Shutdown,
    /// The client side of mutual TLS to `https://` executors.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Campaigns, leads, and campaigns again, until shutdown.
pub async fn campaign(candidate: Candidate) {
    while !candidate.shutdown.is_triggered() {
        if let Err(error) = candidate.term().await {
            tracing::warn!(%error, "campaign failed; trying again");
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY_AFTER) => {}
            () = candidate.shutdown.wait() => {}
        }
    }
}

impl Candidate {
    /// One term: wait to be elected, lead until the lease is lost or shutdown, resign.
    async fn term(&self) -> Result<(), EtcdError> {
        let lease = Lease::grant(&self.client, self.config.lease_ttl).await?;
        let mut election = self.client.clone();
        let elected = tokio::select! {
            elected = election.campaign(self.keys.election(), self.node_id.as_str(), lease.id()) => elected,
            () = lease.lost() => return Ok(()),
            () = self.shutdown.wait() => return lease.revoke(&self.client).await,
        };
        let leader_key = elected.map_err(EtcdError::from)?.leader().cloned();
        METRICS.leader.set(1);
        tracing::info!(node_id = self.node_id, "leading the control plane");
        tokio::select! {
            () = self.probe_executors(lease.id()) => {}
            () = lease.lost() => tracing::warn!(node_id = self.node_id, "lost the leader lease; stepping down"),
            () = self.shutdown.wait() => tracing::info!(node_id = self.node_id, "stepping down"),
        }
        METRICS.leader.set(0);
        METRICS.unhealthy.set(0);
        if let Some(key) = leader_key
            && let Err(error) = self.client.clone().resign(Some(ResignOptions::new().with_leader(key))).await
        {
            tracing::warn!(%error, "could not resign; the lease revocation ends the term");
        }
        lease.revoke(&self.client).await
    }

    /// Probes every registered executor that is not stopping, once per probe interval,
    /// and writes the mark changes. Runs until the term ends.
    async fn probe_executors(&self, lease: i64) {
        let mut tracker = HealthTracker::new(self.config.unhealthy_after_probes);
        let mut channels = HashMap::<String, Channel>::new();
        let timeout = self.config.probe_timeout;
        let mut ticks = tokio::time::interval(self.config.probe_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let state = self.state.borrow().clone();
            let executors = state.nodes_of(Role::PlanExecutor).filter(|node| !node.stopping).collect::<Vec<_>>();
            tracker.retain(|node_id| executors.iter().any(|node| node.node_id == node_id));
            // The marks in etcd are the truth, whoever wrote them: a passing probe clears any
            // of them, and the mark of an executor that left goes with it (else the same id
            // coming back would stay excluded).
            for node_id in state.unhealthy.keys() {
                if state.nodes_of(Role::PlanExecutor).all(|node| &node.node_id != node_id)
                    && let Err(error) = etcd::mark_healthy(&self.client, &self.keys, node_id).await
                {
                    tracing::warn!(node_id, %error, "could not drop the mark of a departed executor");
                }
            }
            tracker.adopt_marks(state.unhealthy.keys().map(String::as_str));
            METRICS.unhealthy.set(i64::try_from(state.unhealthy.len()).unwrap_or(i64::MAX));
            channels.retain(|address, _| executors.iter().any(|node| &node.address == address));
            let probes = executors.iter().map(|node| {
                let channel =
                    channels.entry(node.address.clone()).or_insert_with(|| lazy_channel(&node.address, &self.tls));
                probe(channel.clone(), timeout)
            });
            let count = telemetry::int(executors.len());
            let round = tracing::info_span!("probe_round", executors = count, failed = tracing::field::Empty);
            let results = join_all(probes.collect::<Vec<_>>()).instrument(round.clone()).await;
            round.record("failed", telemetry::int(results.iter().filter(|result| result.is_err()).count()));
            for (node, result) in executors.iter().zip(results) {
                METRICS.probes.with_label_values(&[if result.is_ok() { "passed" } else { "failed" }]).inc();
                let Some(transition) = tracker.record(&node.node_id, result.is_ok()) else { continue };
                self.apply(node, transition, result.err(), lease).instrument(round.clone()).await;
            }
            METRICS.unhealthy.set(telemetry::int(tracker.marked()));
        }
    }

    /// Writes one mark change to etcd.
    async fn apply(&self, node: &NodeRecord, transition: Transition, failure: Option<String>, lease: i64) {
        let written = match transition {
            Transition::MarkUnhealthy { failed_probes } => {
                let reason = failure.unwrap_or_default();
                tracing::warn!(node_id = node.node_id, failed_probes, reason, "marking executor unhealthy");
                let mark = HealthMark { node_id: node.node_id.clone(), reason, failed_probes };
                etcd::mark_unhealthy(&self.client, &self.keys, &mark, lease).await
            }
            Transition::MarkHealthy => {
                tracing::info!(node_id = node.node_id, "executor passes its probes again");
                etcd::mark_healthy(&self.client, &self.keys, &node.node_id).await
            }
        };
        if let Err(error) = written {
            tracing::warn!(node_id = node.node_id, %error, "could not write the health mark");
        }
    }
}

/// A channel to `address` that connects on first use, over mutual TLS to an `https://`
/// address (an unusable address fails every probe instead of the leader).
fn lazy_channel(address: &str, tls: &Option<Arc<rustls::ClientConfig>>) -> Channel {
    tls::channel(address, tls.clone()).unwrap_or_else(|error| {
        tracing::warn!(address, %error, "cannot reach this executor");
        Endpoint::from_static("http://invalid.invalid").connect_lazy()
    })
}

/// One gRPC health check of the plan executor service; `Err` says why it failed.
async fn probe(channel: Channel, timeout: Duration) -> Result<(), String> {
    let request = HealthCheckRequest { service: SERVICE_NAME.to_string() };
    let answer = tokio::time::timeout(timeout, HealthClient::new(channel).check(request)).await;
    match answer {
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        Ok(Err(status)) => Err(format!("health check failed: {}", status.message())),
        Ok(Ok(response)) if response.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
        Ok(Ok(_)) => Err("not serving".to_string()),
    }
}
