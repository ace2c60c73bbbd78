//! Strong reads from recorded versions: with etcd, a write through any query node records
//! its version before it is acknowledged, and a read on any other query node learns the
//! latest version from etcd instead of listing the store — and lists after all when etcd
//! cannot be reached (writes are then refused), or when the table was not listed within
//! the external-writer check interval (a writer outside the cluster). A table dropped and
//! created again is never read as the table it replaced.

use std::time::Duration;

use lancefleet_common::config::{NodeConfig, Service};
use lancefleet_common::test_support::EtcdServer;
use lancefleet_common::{NodeContext, Shutdown};
use lancefleet_engine::{InsertMode, TableId};
use lancefleet_integration_tests::catalog_at;
use lancefleet_integration_tests::data::{Numbers, arrow_stream, rows, schema};

/// A node's configuration on loopback over `root`, in the etcd cluster at `endpoint`.
fn config(root: &std::path::Path, endpoint: &str, node_id: &str) -> NodeConfig {
    let loopback = "127.0.0.1:0".parse().expect("an address");
    let mut config = NodeConfig::default();
    config.storage.root = root.to_str().expect("utf-8").to_string();
    config.control.etcd_endpoints = vec![endpoint.to_string()];
    config.control.lease_ttl = Duration::from_secs(2);
    config.control.stopping_propagation = Duration::ZERO;
    config.control.node_id = Some(node_id.to_string());
    config.executor.node_id = Some(node_id.to_string());
    config.rest.listen = loopback;
    config.rest.external_writer_check = Duration::from_secs(2);
    config.flight.enabled = false;
    config.executor.listen = loopback;
    config.executor.metrics_listen = loopback;
    config.cache.memory = lancefleet_common::config::ByteSize(0);
    config
}

/// `lancefleet_catalog_latest_version_lookups_total{source}` of this process.
fn lookups(source: &str) -> u64 {
    prometheus::gather()
        .iter()
        .filter(|family| family.name() == "lancefleet_catalog_latest_version_lookups_total")
        .flat_map(|family| family.get_metric().iter())
        .filter(|metric| metric.get_label().iter().any(|label| label.value() == source))
        .map(|metric| metric.get_counter().get_value() as u64)
        .sum()
}

async fn post(http: &reqwest::Client, url: &str, body: Vec<u8>, content_type: &str) -> reqwest::Response {
    http.post(url).header("content-type", content_type).body(body).send().await.expect("the query node answers")
}

async fn count(http: &reqwest::Client, rest: &str) -> u64 {
    let response = post(http, &format!("{rest}/v1/table/t/count_rows/"), b"{}".to_vec(), "application/json").await;
    response.error_for_status().expect("counted").json::<u64>().await.expect("a count")
}

#[tokio::test]
async fn a_write_through_one_query_node_is_read_at_once_through_another_without_listing() {
    let Some(mut etcd) = EtcdServer::start().await else { return };
    let root = tempfile::tempdir().expect("tempdir");
    let shutdown = Shutdown::new();
    let executor_config = config(root.path(), &etcd.endpoint(), "pe-0");
    let context = NodeContext::connect(&executor_config, shutdown.clone()).await.expect("etcd");
    let executor = lancefleet_plan_executor::start(executor_config, &context).await.expect("an executor");
    let mut nodes = Vec::new();
    for name in ["qn-1", "qn-2"] {
        let node_config = config(root.path(), &etcd.endpoint(), name);
        let context = NodeContext::connect(&node_config, shutdown.clone()).await.expect("etcd");
        nodes
            .push(lancefleet_query_node::start(node_config, &context, Service::QueryNode).await.expect("a query node"));
    }
    let [writer, reader] = [0, 1].map(|index| format!("http://{}", nodes[index].rest_address()));
    let http = reqwest::Client::new();
    let arrow = "application/vnd.apache.arrow.stream";
    let mut numbers = Numbers::new(3);
    let created =
        post(&http, &format!("{writer}/v1/table/t/create/"), arrow_stream(&rows(0, 10, &mut numbers)), arrow).await;
    assert!(created.status().is_success(), "{:?}", created.text().await);
    assert_eq!(count(&http, &reader).await, 10, "the first read lists and records");

    let (recorded, listed) = (lookups("recorded"), lookups("store"));
    for round in 1..=8u64 {
        let body = arrow_stream(&rows(round as i64 * 100, 5, &mut numbers));
        let inserted = post(&http, &format!("{writer}/v1/table/t/insert/"), body, arrow).await;
        assert!(inserted.status().is_success(), "{:?}", inserted.text().await);
        assert_eq!(count(&http, &reader).await, 10 + 5 * round, "round {round}: the other node sees the write at once");
    }
    assert!(lookups("recorded") >= recorded + 6, "reads learnt the version from etcd");
    assert!(lookups("store") <= listed + 2, "and listed the store at most once per check interval");

    // A writer outside the cluster is seen within the check interval.
    let outside = catalog_at(root.path());
    let id = TableId::parse("t").expect("a name");
    outside
        .insert(&id, schema(), vec![rows(9_000, 7, &mut numbers)], InsertMode::Append)
        .await
        .expect("written outside");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(count(&http, &reader).await, 10 + 40 + 7, "an outside write, after the check interval");
    assert_eq!(count(&http, &writer).await, 57, "and recorded for every node");

    // Without etcd, reads list the store and stay strong; writes are refused.
    etcd.stop();
    let body = arrow_stream(&rows(10_000, 5, &mut numbers));
    let refused = post(&http, &format!("{writer}/v1/table/t/insert/"), body, arrow).await;
    assert_eq!(refused.status().as_u16(), 503, "a write that cannot be announced is refused");
    assert_eq!(count(&http, &reader).await, 57, "nothing was written; reads list the store");
    etcd.spawn().await;
    let body = arrow_stream(&rows(11_000, 5, &mut numbers));
    let inserted = post(&http, &format!("{writer}/v1/table/t/insert/"), body, arrow).await;
    assert!(inserted.status().is_success(), "writes resume with etcd: {:?}", inserted.text().await);
    assert_eq!(count(&http, &reader).await, 62);

    // A table dropped and created again counts its versions from 1 again, as another
    // record in etcd: the reader, which keeps the versions it opened, and the executor,
    // which keeps pinned versions, never serve the old table's version 1 for the new one.
    let json = "application/json";
    for (made, rows_made) in [("first", 4), ("second", 6)] {
        let dropped = post(&http, &format!("{writer}/v1/table/t/drop/"), b"{}".to_vec(), json).await;
        assert!(dropped.status().is_success(), "{:?}", dropped.text().await);
        let body = arrow_stream(&rows(20_000, rows_made, &mut numbers));
        let created = post(&http, &format!("{writer}/v1/table/t/create/"), body, arrow).await;
        assert!(created.status().is_success(), "{:?}", created.text().await);
        for read in 0..2 {
            assert_eq!(count(&http, &reader).await, rows_made as u64, "the {made} new table, read {read}");
        }
    }

    shutdown.trigger();
    for node in nodes {
        node.wait().await.expect("a query node stops");
    }
    executor.wait().await.expect("the executor stops");
}
