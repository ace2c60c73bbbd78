//! An in-process LanceFleet cluster for tests, on loopback in the test's own runtime:
//! plan executors started by their role's own `start` (the wiring the binary runs), faulty
//! executors ([`faults`]) beside them, a query node following a membership the test
//! changes at will, and optionally the indexer on the same in-process event bus. Models:
//! GreptimeDB's `tests-integration` cluster, Quickwit's `ClusterSandbox`.
//!
//! Every node stops on the sandbox's shutdown signal, in its role's order.

#![allow(clippy::expect_used, clippy::panic, reason = "test support: a broken fixture fails the test")]

pub mod data;
pub mod faults;

use std::sync::{Arc, Once};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_ipc::reader::FileReader;
use arrow_select::concat::concat_batches;
use lancefleet_common::config::{ByteSize, ExecutorEndpoint, HedgeAfter, NodeConfig, Service};
use lancefleet_common::membership::StaticMembership;
use lancefleet_common::storage::StorageRoot;
use lancefleet_common::{NodeContext, Shutdown};
use lancefleet_engine::Catalog;
use lancefleet_plan_executor::RunningExecutor;
use lancefleet_query_node::RunningQueryNode;
use tokio::task::JoinHandle;

use crate::faults::FaultyExecutor;

/// What a sandbox starts.
#[derive(Debug, Clone)]
pub struct SandboxBuilder {
    executors: usize,
    faulty: usize,
    replicas: usize,
    fragment_timeout: Duration,
    hedge_after: HedgeAfter,
    indexer: bool,
}

impl SandboxBuilder {
    /// `count` healthy plan executors, `pe-0`, `pe-1`, ….
    pub fn executors(mut self, count: usize) -> Self {
        self.executors = count;
        self
    }

    /// `count` faulty executors beside them, `faulty-0`, `faulty-1`, … (healthy until set).
    pub fn faulty(mut self, count: usize) -> Self {
        self.faulty = count;
        self
    }

    /// Executors in each fragment's preference list.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// How long an executor may take before its fragments move on.
    pub fn fragment_timeout(mut self, timeout: Duration) -> Self {
        self.fragment_timeout = timeout;
        self
    }

    /// When the query node hedges a slow executor call (default: `off`, so call counts are
    /// exact).
    pub fn hedge_after(mut self, hedge_after: HedgeAfter) -> Self {
        self.hedge_after = hedge_after;
        self
    }

    /// Runs the query node as `standalone` does, with the indexer embedded on its
    /// in-process event bus (no etcd).
    pub fn with_indexer(mut self) -> Self {
        self.indexer = true;
        self
    }

    /// Starts the cluster over a fresh temporary storage root.
    pub async fn start(self) -> Sandbox {
        init_logging();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_str().expect("utf-8 path").to_string();
        let shutdown = Shutdown::new();
        let context = NodeContext::in_process(shutdown.clone());
        let mut executors = Vec::new();
        for index in 0..self.executors {
            let mut config = node_config(&root);
            config.executor.node_id = Some(format!("pe-{index}"));
            executors.push(lancefleet_plan_executor::start(config, &context).await.expect("executor starts"));
        }
        let catalog = sandbox_catalog(&root);
        let mut faulty = Vec::new();
        for index in 0..self.faulty {
            faulty.push(FaultyExecutor::start(&format!("faulty-{index}"), catalog.clone()).await);
        }
        let members = executors
            .iter()
            .map(|executor| ExecutorEndpoint {
                id: executor.node_id().to_string(),
                address: executor.advertised().to_string(),
            })
            .chain(faulty.iter().map(FaultyExecutor::endpoint))
            .collect::<Vec<_>>();
        let membership = Arc::new(StaticMembership::new(members.clone()));
        let mut config = node_config(&root);
        config.cluster.executors = members.clone();
        config.cluster.replicas = self.replicas;
        config.cluster.fragment_timeout = self.fragment_timeout;
        config.cluster.hedge_after = self.hedge_after;
        config.indexer.retry_after = Duration::from_millis(200);
        let context = context.with_membership(membership.clone());
        let service = if self.indexer { Service::Standalone } else { Service::QueryNode };
        config.indexer.embedded = self.indexer;
        let indexer = lancefleet_indexer::start_embedded(&config, &context, service).await.expect("indexer starts");
        let query_node = lancefleet_query_node::start(config, &context, service).await.expect("query node starts");
        Sandbox {
            dir,
            root,
            shutdown,
            executors,
            faulty,
            members,
            membership,
            query_node,
            indexer,
            http: reqwest::Client::new(),
        }
    }
}

/// A running in-process cluster.
#[derive(Debug)]
pub struct Sandbox {
    dir: tempfile::TempDir,
    root: String,
    shutdown: Shutdown,
    executors: Vec<RunningExecutor>,
    faulty: Vec<FaultyExecutor>,
    members: Vec<ExecutorEndpoint>,
    membership: Arc<StaticMembership>,
    query_node: RunningQueryNode,
    indexer: Option<JoinHandle<()>>,
    http: reqwest::Client,
}

/// A REST call that did not succeed: its HTTP status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The HTTP status.
    pub status: u16,
    /// The body (the error message).
    pub body: String,
}

impl Sandbox {
    /// A sandbox with three healthy executors, two replicas per fragment, a 2 s timeout, no
    /// hedging.
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder {
            executors: 3,
            faulty: 0,
            replicas: 2,
            fragment_timeout: Duration::from_secs(2),
            hedge_after: HedgeAfter::Off,
            indexer: false,
        }
    }

    /// A catalog over the sandbox's storage root, in the test's process: to write tables
    /// and to read them with lance directly, as the baseline.
    pub fn catalog(&self) -> Catalog {
        sandbox_catalog(&self.root)
    }

    /// The storage root.
    pub fn root(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The query node's REST base URL.
    pub fn rest_url(&self) -> String {
        format!("http://{}", self.query_node.rest_address())
    }

    /// The query node's Arrow Flight / Flight SQL URL.
    pub fn flight_url(&self) -> String {
        format!("http://{}", self.query_node.flight_address().expect("flight is on"))
    }

    /// The faulty executor `faulty-{index}`.
    pub fn faulty(&self, index: usize) -> &FaultyExecutor {
        &self.faulty[index]
    }

    /// Ids of every executor started, healthy and faulty.
    pub fn executor_ids(&self) -> Vec<String> {
        self.members.iter().map(|member| member.id.clone()).collect()
    }

    /// Changes the membership the query node follows to the executors named `ids`.
    pub fn set_members(&self, ids: &[&str]) {
        let members = self.members.iter().filter(|member| ids.contains(&member.id.as_str())).cloned().collect();
        self.membership.replace(members);
    }

    /// POSTs `body` (JSON) to `path` of the REST API.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Result<reqwest::Response, Refused> {
        let response = self
            .http
            .post(format!("{}{path}", self.rest_url()))
            .json(body)
            .send()
            .await
            .expect("the query node answers");
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        Err(Refused { status, body: response.text().await.unwrap_or_default() })
    }

    /// Runs a REST `query` against `table`: the answer's rows in one batch.
    pub async fn query(&self, table: &str, body: serde_json::Value) -> Result<RecordBatch, Refused> {
        let response = self.post(&format!("/v1/table/{table}/query/"), &body).await?;
        let bytes = response.bytes().await.expect("a body");
        let reader = FileReader::try_new(std::io::Cursor::new(bytes), None).expect("an Arrow IPC file");
        let schema = reader.schema();
        let batches = reader.collect::<Result<Vec<_>, _>>().expect("batches decode");
        Ok(concat_batches(&schema, &batches).expect("batches of one schema"))
    }

    /// Counts the rows of `table` matching `filter` through the REST API.
    pub async fn count_rows(&self, table: &str, filter: Option<&str>) -> Result<u64, Refused> {
        let body = serde_json::json!({ "predicate": filter });
        let response = self.post(&format!("/v1/table/{table}/count_rows/"), &body).await?;
        Ok(response.json::<u64>().await.expect("a count"))
    }

    /// Triggers the shutdown signal and waits for every node to stop in order.
    pub async fn stop(self) {
        self.shutdown.trigger();
        self.query_node.wait().await.expect("the query node stops cleanly");
        for executor in self.executors {
            executor.wait().await.expect("an executor stops cleanly");
        }
        for faulty in self.faulty {
            faulty.stop().await;
        }
        if let Some(indexer) = self.indexer {
            indexer.await.expect("the indexer stops cleanly");
        }
    }
}

/// A node's configuration over `root`, every listener on a free loopback port, the object
/// cache off (lance reads local files directly), no Flight limit surprises.
fn node_config(root: &str) -> NodeConfig {
    let loopback = "127.0.0.1:0".parse().expect("an address");
    let mut config = NodeConfig::default();
    config.storage.root = root.to_string();
    config.rest.listen = loopback;
    config.rest.shutdown_grace = Duration::from_secs(5);
    config.flight.listen = loopback;
    config.executor.listen = loopback;
    config.executor.metrics_listen = loopback;
    config.executor.shutdown_grace = Duration::from_secs(5);
    config.indexer.listen = loopback;
    config.cache.memory = ByteSize(0);
    config.control.stopping_propagation = Duration::ZERO;
    config
}

/// A catalog over the storage root `root`, in the test's process.
pub fn catalog_at(root: &std::path::Path) -> Catalog {
    sandbox_catalog(root.to_str().expect("utf-8 path"))
}

fn sandbox_catalog(root: &str) -> Catalog {
    let root = StorageRoot::resolve(root).expect("a storage root");
    Catalog::new(root, &Default::default(), None)
}

/// Logs to the test's output when `RUST_LOG` asks for it.
fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}
