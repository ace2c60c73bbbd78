//! SQL with the search functions, on runtimes that cannot block: nothing in planning waits
//! on the distributed search (tables are resolved before planning, the search runs in the
//! plan), so a single-threaded runtime answers, and `EXPLAIN` searches nothing.

use arrow_array::{Float32Array, Int64Array, RecordBatch, StringArray};
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use lancefleet_integration_tests::Sandbox;
use lancefleet_integration_tests::data::{Numbers, column, lance_nearest, vector_table};
use tonic::transport::Channel;

/// Runs `sql` through Flight SQL: every batch of every endpoint.
async fn sql(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Result<Vec<RecordBatch>, String> {
    let info = client.execute(sql.to_string(), None).await.map_err(|error| error.to_string())?;
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.ok_or("an endpoint without a ticket")?;
        let stream = client.do_get(ticket).await.map_err(|error| error.to_string())?;
        batches.extend(stream.try_collect::<Vec<_>>().await.map_err(|error| error.to_string())?);
    }
    Ok(batches)
}

async fn client(sandbox: &Sandbox) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(sandbox.flight_url()).expect("a URL").connect().await.expect("connects");
    FlightSqlServiceClient::new(channel)
}

/// The vector search of `query` from SQL equals lance's in one process, `EXPLAIN` of it
/// sends no executor a fragment, and a bad search is refused at planning.
async fn search_from_sql() {
    let sandbox = Sandbox::builder().executors(1).faulty(1).start().await;
    let dataset = vector_table(&sandbox.catalog(), "t", 12, 30).await;
    let query = Numbers::new(11).vector();
    let vector = format!("[{}]", query.iter().map(|value| format!("{value:?}")).collect::<Vec<_>>().join(", "));
    let mut client = client(&sandbox).await;

    let statement = format!("SELECT id, _distance FROM vector_search('t', {vector}, 7) ORDER BY _distance, id");
    let batches = sql(&mut client, &statement).await.expect("answered");
    let rows = batches
        .iter()
        .flat_map(|batch| {
            let ids = column::<Int64Array>(batch, "id");
            let distances = column::<Float32Array>(batch, "_distance");
            (0..batch.num_rows()).map(|row| (ids.value(row), distances.value(row))).collect::<Vec<_>>()
        })
        .collect::<Vec<_>>();
    assert_eq!(rows, lance_nearest(&dataset, &query, 7, None).await);
    assert!(!sandbox.faulty(0).calls().is_empty(), "the search reached the executors");

    sandbox.faulty(0).clear_calls();
    let plan = sql(&mut client, &format!("EXPLAIN {statement}")).await.expect("explained");
    let text = plan
        .iter()
        .flat_map(|batch| column::<StringArray>(batch, "plan").iter().flatten().map(str::to_string))
        .collect::<String>();
    assert!(text.contains("LanceFleetSearch: vector_search, table=t"), "{text}");
    assert!(sandbox.faulty(0).calls().is_empty(), "EXPLAIN ran no search");

    let wrong = sql(&mut client, "SELECT * FROM vector_search('t', [1.0, 2.0], 3)").await.expect_err("wrong size");
    assert!(wrong.contains("invalid argument") && wrong.contains("dimension 2"), "{wrong}");
    let missing = sql(&mut client, "SELECT * FROM vector_search('nope', [1.0], 3)").await.expect_err("no table");
    assert!(missing.contains("was not found"), "{missing}");
    let joined =
        format!("SELECT s.id, t.category FROM vector_search('t', {vector}, 5, 'category = 2') s JOIN t ON s.id = t.id");
    let batches = sql(&mut client, &joined).await.expect("a search joined back onto its table");
    assert!(
        batches
            .iter()
            .flat_map(|batch| column::<Int64Array>(batch, "category").values().to_vec())
            .all(|category| category == 2)
    );
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 5);
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn vector_search_runs_on_one_worker_thread() {
    search_from_sql().await;
}

#[tokio::test(flavor = "current_thread")]
async fn vector_search_runs_on_a_current_thread_runtime() {
    search_from_sql().await;
}
