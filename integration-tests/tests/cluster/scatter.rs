//! The scatter of a query over plan executors: exact merge, the retry of a failed
//! executor's fragments where its error says, timeouts, the suspect list, and membership
//! changing under a running query.

use std::time::{Duration, Instant};

use lance::Dataset;
use lancefleet_common::config::HedgeAfter;
use lancefleet_integration_tests::Sandbox;
use lancefleet_integration_tests::data::{Numbers, ids, ids_and_distances, lance_count, lance_nearest, vector_table};
use lancefleet_integration_tests::faults::{Fault, FaultyExecutor};
use lancefleet_proto::v1::plan_executor_client::PlanExecutorClient;
use lancefleet_proto::v1::{FragmentQuery, PlanFragment};
use lancefleet_proto::{ErrorCode, ErrorStatus, RetryTarget, WIRE_VERSION};
use serde_json::json;

/// Fragments of the test table: enough that every executor is some fragment's first choice.
const FRAGMENTS: usize = 16;

async fn table(sandbox: &Sandbox) -> Dataset {
    vector_table(&sandbox.catalog(), "t", FRAGMENTS, 40).await
}

/// The search for `query` through the slow `faulty` executor is answered exactly by a hedge
/// within `within` (`what` names the case), after the faulty executor got its call, and
/// that losing call is cancelled.
async fn assert_hedged(
    sandbox: &Sandbox,
    dataset: &Dataset,
    faulty: &FaultyExecutor,
    query: &[f32],
    within: Duration,
    what: &str,
) {
    faulty.clear_calls();
    let cancelled = faulty.cancelled();
    let started = Instant::now();
    assert_exact(sandbox, dataset, query).await;
    assert!(started.elapsed() < within, "{what}: answered by the hedge in {:?}", started.elapsed());
    assert!(!faulty.calls().is_empty(), "{what}: the slow executor got its fragments first");
    let deadline = Instant::now() + Duration::from_secs(5);
    while faulty.cancelled() == cancelled && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(faulty.cancelled() > cancelled, "{what}: the losing call was cancelled");
}

/// A prefiltered vector search of the `k` nearest rows, returning ids and distances.
fn search(query: &[f32], k: usize, filter: Option<&str>) -> serde_json::Value {
    json!({ "vector": query, "k": k, "filter": filter, "prefilter": true, "columns": ["id"] })
}

/// The sandbox's answer to `search(query, 10)` equals lance's own in one process.
async fn assert_exact(sandbox: &Sandbox, dataset: &Dataset, query: &[f32]) {
    let answer = sandbox.query("t", search(query, 10, None)).await.expect("the search is answered");
    assert_eq!(ids_and_distances(&answer), lance_nearest(dataset, query, 10, None).await);
}

#[tokio::test]
async fn a_search_over_executors_equals_lance_in_one_process_row_for_row() {
    let sandbox = Sandbox::builder().executors(3).start().await;
    let dataset = table(&sandbox).await;
    let mut numbers = Numbers::new(42);
    for filter in [None, Some("category = 1"), Some("id >= 300 AND category != 2")] {
        for _ in 0..3 {
            let query = numbers.vector();
            let answer = sandbox.query("t", search(&query, 10, filter)).await.expect("answered");
            assert_eq!(ids_and_distances(&answer), lance_nearest(&dataset, &query, 10, filter).await, "{filter:?}");
        }
        let counted = sandbox.count_rows("t", filter).await.expect("counted");
        assert_eq!(counted, lance_count(&dataset, filter).await, "{filter:?}");
    }
    let query = numbers.vector();
    let page = sandbox.query("t", json!({ "vector": query, "k": 5, "offset": 3, "columns": ["id"] })).await;
    let whole = lance_nearest(&dataset, &query, 8, None).await;
    assert_eq!(ids_and_distances(&page.expect("answered")), whole[3..].to_vec(), "offset after the merge");
    let scan = sandbox.query("t", json!({ "filter": "category = 3", "columns": ["id"], "k": 1000 })).await;
    let expected = (0..(FRAGMENTS * 40) as i64).filter(|id| id % 4 == 3).collect::<Vec<_>>();
    assert_eq!(ids(&scan.expect("answered")), expected, "a scan merges in manifest order");
    sandbox.stop().await;
}

#[tokio::test]
async fn a_failed_executors_fragments_go_to_their_next_replica_and_it_is_passed_over_meanwhile() {
    let sandbox = Sandbox::builder().executors(1).faulty(1).start().await;
    let dataset = table(&sandbox).await;
    let faulty = sandbox.faulty(0);
    faulty.set(Fault::Error(ErrorCode::Unavailable, RetryTarget::AnotherNode));
    let query = Numbers::new(1).vector();
    assert_exact(&sandbox, &dataset, &query).await;
    let calls = faulty.calls();
    assert_eq!(calls.len(), 1, "one call to the faulty executor, then its fragments moved: {calls:?}");
    assert!(!calls[0].fragments.is_empty());

    // Suspected: the next queries and counts do not try it first.
    assert_exact(&sandbox, &dataset, &Numbers::new(2).vector()).await;
    assert_eq!(
        sandbox.count_rows("t", Some("category = 0")).await.expect("counted"),
        lance_count(&dataset, Some("category = 0")).await
    );
    assert_eq!(faulty.calls().len(), 1, "passed over while suspected");
    sandbox.stop().await;
}

#[tokio::test]
async fn an_error_without_a_retry_target_fails_the_query_without_a_retry() {
    let sandbox = Sandbox::builder().executors(1).faulty(1).start().await;
    table(&sandbox).await;
    let faulty = sandbox.faulty(0);
    faulty.set(Fault::Error(ErrorCode::InvalidArgument, RetryTarget::None));
    let refused = sandbox.query("t", search(&Numbers::new(3).vector(), 10, None)).await.expect_err("refused");
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("injected fault"), "{}", refused.body);
    assert_eq!(faulty.calls().len(), 1);
    faulty.set(Fault::None);
    faulty.clear_calls();
    table_answers_again(&sandbox).await;
    assert!(!faulty.calls().is_empty(), "not suspected: the request was at fault, not the executor");
    sandbox.stop().await;
}

async fn table_answers_again(sandbox: &Sandbox) {
    sandbox.query("t", search(&Numbers::new(4).vector(), 10, None)).await.expect("answered");
}

#[tokio::test]
async fn a_same_node_retry_goes_back_to_the_same_executor() {
    let sandbox = Sandbox::builder().executors(1).faulty(1).start().await;
    let dataset = table(&sandbox).await;
    let faulty = sandbox.faulty(0);
    faulty.set_for(Fault::Error(ErrorCode::Conflict, RetryTarget::SameNode), 1);
    assert_exact(&sandbox, &dataset, &Numbers::new(5).vector()).await;
    let calls = faulty.calls();
    assert_eq!(calls.len(), 2, "refused once, then answered: {calls:?}");
    assert_eq!(calls[0], calls[1], "the same fragments, sent again");
    sandbox.stop().await;
}

#[tokio::test]
async fn a_stalled_executor_times_out_and_its_fragments_move_on() {
    let sandbox = Sandbox::builder().executors(1).faulty(1).fragment_timeout(Duration::from_millis(300)).start().await;
    let dataset = table(&sandbox).await;
    let faulty = sandbox.faulty(0);
    faulty.set(Fault::Stall);
    let started = Instant::now();
    assert_exact(&sandbox, &dataset, &Numbers::new(6).vector()).await;
    assert!(started.elapsed() < Duration::from_secs(5), "answered after the timeout: {:?}", started.elapsed());
    assert_eq!(faulty.calls().len(), 1);
    sandbox.stop().await;
}

#[tokio::test]
async fn a_stream_reset_after_its_first_message_is_retried_on_the_next_replica() {
    let sandbox = Sandbox::builder().executors(1).faulty(1).start().await;
    let dataset = table(&sandbox).await;
    let faulty = sandbox.faulty(0);
    faulty.set(Fault::ResetMidStream);
    assert_exact(&sandbox, &dataset, &Numbers::new(7).vector()).await;
    assert_eq!(faulty.calls().len(), 1);
    sandbox.stop().await;
}

#[tokio::test]
async fn a_slow_executors_fragments_are_hedged_to_their_next_replica_and_the_loser_cancelled() {
    let sandbox = Sandbox::builder()
        .executors(1)
        .faulty(1)
        .hedge_after(HedgeAfter::After(Duration::from_millis(300)))
        .fragment_timeout(Duration::from_secs(20))
        .start()
        .await;
    let dataset = table(&sandbox).await;
    let faulty = sandbox.faulty(0);
    assert_exact(&sandbox, &dataset, &Numbers::new(9).vector()).await; // both executors open the table
    for (fault, what) in [(Fault::Delay(Duration::from_secs(5)), "slow"), (Fault::Stall, "stalled")] {
        faulty.set(fault);
        assert_hedged(&sandbox, &dataset, faulty, &Numbers::new(10).vector(), Duration::from_secs(3), what).await;
    }
    sandbox.stop().await;
}

#[tokio::test]
async fn with_auto_hedging_a_straggler_is_hedged_before_any_history_is_known() {
    let sandbox = Sandbox::builder()
        .executors(2)
        .faulty(1)
        .hedge_after(HedgeAfter::Auto)
        .fragment_timeout(Duration::from_secs(20))
        .start()
        .await;
    let dataset = table(&sandbox).await;
    let faulty = sandbox.faulty(0);
    assert_exact(&sandbox, &dataset, &Numbers::new(11).vector()).await; // every executor opens the table
    // One answer per executor is far from the 16 a delay from history needs: only the
    // straggler rule can hedge the slow executor's call, once its two siblings answered.
    faulty.set(Fault::Delay(Duration::from_secs(10)));
    let query = Numbers::new(12).vector();
    assert_hedged(&sandbox, &dataset, faulty, &query, Duration::from_secs(5), "straggler").await;
    sandbox.stop().await;
}

#[tokio::test]
async fn when_every_replica_of_a_fragment_fails_the_query_is_unavailable() {
    let sandbox = Sandbox::builder().executors(0).faulty(2).start().await;
    table(&sandbox).await;
    for index in 0..2 {
        sandbox.faulty(index).set(Fault::Error(ErrorCode::Unavailable, RetryTarget::AnotherNode));
    }
    let refused = sandbox.query("t", search(&Numbers::new(8).vector(), 10, None)).await.expect_err("no replica left");
    assert_eq!(refused.status, 503, "{}", refused.body);
    sandbox.stop().await;
}

#[tokio::test]
async fn membership_changes_under_a_running_query_and_the_next_query_follows_them() {
    let sandbox = Sandbox::builder().executors(2).faulty(1).start().await;
    let dataset = table(&sandbox).await;
    let faulty = sandbox.faulty(0);
    faulty.set(Fault::Delay(Duration::from_millis(800)));
    let query = Numbers::new(9).vector();
    let expected = lance_nearest(&dataset, &query, 10, None).await;
    let running = {
        let body = search(&query, 10, None);
        let url = format!("{}/v1/table/t/query/", sandbox.rest_url());
        tokio::spawn(async move { reqwest::Client::new().post(url).json(&body).send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(faulty.calls().len(), 1, "the running query reached the slow executor");
    sandbox.set_members(&["pe-0", "pe-1"]);
    let response = running.await.expect("joined").expect("answered");
    assert!(response.status().is_success(), "the running query finishes on the membership it started with");

    faulty.clear_calls();
    assert_exact(&sandbox, &dataset, &query).await;
    assert!(faulty.calls().is_empty(), "a removed executor gets no fragments");
    faulty.set(Fault::None);
    sandbox.set_members(&["pe-0", "pe-1", "faulty-0"]);
    assert_exact(&sandbox, &dataset, &query).await;
    assert!(!faulty.calls().is_empty(), "a returning executor gets its fragments back");
    assert_eq!(ids_and_distances(&sandbox.query("t", search(&query, 10, None)).await.expect("answered")), expected);
    sandbox.stop().await;
}

#[tokio::test]
async fn an_executor_refuses_a_fragment_of_another_wire_version_for_another_executor_to_take() {
    let sandbox = Sandbox::builder().executors(0).faulty(1).start().await;
    let dataset = table(&sandbox).await;
    let address = sandbox.faulty(0).endpoint().address;
    let mut client = PlanExecutorClient::connect(address).await.expect("connects");
    let fragment = PlanFragment {
        wire_version: WIRE_VERSION - 1,
        table_uri: sandbox
            .catalog()
            .table_uri(&lancefleet_engine::TableId::parse("t").expect("a name"))
            .await
            .expect("a root table"),
        version: dataset.version().version,
        fragment_ids: vec![0],
        query: Some(FragmentQuery { prefilter: true, ..Default::default() }),
        ..Default::default()
    };
    let status = client.count(fragment.clone()).await.expect_err("refused");
    let error = ErrorStatus::from_grpc(&status);
    assert_eq!((error.error_code(), error.retry_target()), (ErrorCode::NotSupported, RetryTarget::AnotherNode));
    let counted = client.count(PlanFragment { wire_version: WIRE_VERSION, ..fragment }).await.expect("counted");
    assert_eq!(counted.into_inner().rows, 40);
    sandbox.stop().await;
}
