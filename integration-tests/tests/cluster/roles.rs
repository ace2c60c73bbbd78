//! The roles' own wiring, as `lancefleet` runs it: refusing a configuration at start, the
//! embedded indexer on the in-process event bus, and executors registering, announcing
//! that they stop, and leaving through a real etcd (where one is installed).

use std::time::{Duration, Instant};

use lancefleet_common::config::{NodeConfig, Service};
use lancefleet_common::test_support::EtcdServer;
use lancefleet_common::{NodeContext, Shutdown};
use lancefleet_integration_tests::data::{Numbers, ids_and_distances, lance_nearest, vector_table};
use lancefleet_integration_tests::{Sandbox, catalog_at};
use serde_json::json;

#[tokio::test]
async fn a_role_refuses_a_configuration_it_cannot_run_with() {
    let mut config = NodeConfig::default();
    config.cluster.replicas = 0;
    let context = NodeContext::in_process(Shutdown::new());
    let error = lancefleet_plan_executor::start(config.clone(), &context).await.expect_err("refused");
    assert!(error.to_string().contains("cluster.replicas: must be between 1 and 16"), "{error}");
    config.cluster.replicas = 2;
    let error = lancefleet_query_node::start(config, &context, Service::QueryNode).await.expect_err("no executors");
    assert!(error.to_string().contains("a query node needs plan executors"), "{error}");
}

#[tokio::test]
async fn the_embedded_indexer_builds_requested_indexes_from_the_in_process_bus() {
    let sandbox = Sandbox::builder().executors(2).with_indexer().start().await;
    vector_table(&sandbox.catalog(), "t", 4, 50).await;
    sandbox
        .post("/v1/table/t/create_index/", &json!({ "column": "category", "index_type": "BTREE" }))
        .await
        .expect("requested");
    let started = Instant::now();
    loop {
        let listed = sandbox.post("/v1/table/t/index/list/", &json!({})).await.expect("listed");
        let listed = listed.json::<serde_json::Value>().await.expect("json");
        if listed.to_string().contains("category_idx") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the indexer did not build the index: {listed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sandbox.stop().await;
}

/// A node's configuration on loopback over `root`, in the etcd cluster at `endpoint`.
fn etcd_config(root: &std::path::Path, endpoint: &str) -> NodeConfig {
    let loopback = "127.0.0.1:0".parse().expect("an address");
    let mut config = NodeConfig::default();
    config.storage.root = root.to_str().expect("utf-8").to_string();
    config.control.etcd_endpoints = vec![endpoint.to_string()];
    config.control.lease_ttl = Duration::from_secs(2);
    config.control.stopping_propagation = Duration::from_millis(300);
    config.rest.listen = loopback;
    config.flight.listen = loopback;
    config.executor.listen = loopback;
    config.executor.metrics_listen = loopback;
    config.cache.memory = lancefleet_common::config::ByteSize(0);
    config
}

/// Asks the query node at `rest` for the 10 nearest rows to `query`: ids and distances.
async fn nearest(rest: String, query: Vec<f32>) -> Vec<(i64, f32)> {
    let body = json!({ "vector": query, "k": 10, "columns": ["id"] });
    let response = reqwest::Client::new().post(format!("{rest}/v1/table/t/query/")).json(&body).send().await;
    let bytes = response.expect("answers").error_for_status().expect("a success").bytes().await.expect("a body");
    let reader = arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None).expect("arrow");
    reader.flat_map(|batch| ids_and_distances(&batch.expect("a batch"))).collect()
}

#[tokio::test]
async fn executors_register_in_etcd_and_a_stopping_one_hands_its_fragments_over() {
    let Some(etcd) = EtcdServer::start().await else { return };
    let root = tempfile::tempdir().expect("tempdir");
    let dataset = vector_table(&catalog_at(root.path()), "t", 8, 40).await;
    let mut executors = Vec::new();
    for index in 0..2 {
        let mut config = etcd_config(root.path(), &etcd.endpoint());
        config.executor.node_id = Some(format!("etcd-pe-{index}"));
        let shutdown = Shutdown::new();
        let context = NodeContext::connect(&config, shutdown.clone()).await.expect("connects to etcd");
        executors.push((shutdown, lancefleet_plan_executor::start(config, &context).await.expect("starts")));
    }
    let config = etcd_config(root.path(), &etcd.endpoint());
    let query_shutdown = Shutdown::new();
    let context = NodeContext::connect(&config, query_shutdown.clone()).await.expect("connects to etcd");
    let node = lancefleet_query_node::start(config, &context, Service::QueryNode).await.expect("starts");
    let rest = format!("http://{}", node.rest_address());
    let query = Numbers::new(21).vector();
    let expected = lance_nearest(&dataset, &query, 10, None).await;
    assert_eq!(nearest(rest.clone(), query.clone()).await, expected, "both executors, found through etcd");

    let (shutdown, leaving) = executors.remove(0);
    shutdown.trigger();
    let asking = tokio::spawn({
        let (rest, query) = (rest.clone(), query.clone());
        async move {
            let mut answers = Vec::new();
            for _ in 0..5 {
                answers.push(nearest(rest.clone(), query.clone()).await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answers
        }
    });
    leaving.wait().await.expect("the executor stops in order");
    for answer in asking.await.expect("joined") {
        assert_eq!(answer, expected, "answered while an executor left");
    }
    assert_eq!(nearest(rest, query).await, expected, "the remaining executor serves every fragment");
    let (shutdown, remaining) = executors.remove(0);
    query_shutdown.trigger();
    node.wait().await.expect("the query node stops");
    shutdown.trigger();
    remaining.wait().await.expect("stops");
}
